//! The benchmark's external programs: Debian's `docker-registry`, `skopeo`
//! (to push the image, and as the baseline's download step), `umoci` (the
//! baseline's unpack step) and `mkfs.ext4 -d`.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

fn run(program: &str, args: &[&std::ffi::OsStr]) -> Result<Duration, String> {
    let started = Instant::now();
    let output = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .map_err(|error| format!("cannot run {program}: {error}"))?;
    let elapsed = started.elapsed();
    if !output.status.success() {
        return Err(format!(
            "{program} failed: {}",
            String::from_utf8_lossy(&output.stderr).trim()
        ));
    }
    Ok(elapsed)
}

/// A docker-registry on 127.0.0.1, stopped on drop.
pub(crate) struct Registry {
    child: Child,
    pub(crate) addr: String,
}

impl Registry {
    pub(crate) fn start(dir: &Path) -> Result<Self, String> {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|listener| listener.local_addr())
            .map_err(|error| format!("no free port: {error}"))?
            .port();
        let config = dir.join("registry.yml");
        std::fs::write(
            &config,
            format!(
                "version: 0.1\nlog:\n  level: warn\n  accesslog:\n    disabled: true\n\
                 storage:\n  filesystem:\n    rootdirectory: {}\n\
                 http:\n  addr: 127.0.0.1:{port}\n",
                dir.join("storage").display()
            ),
        )
        .map_err(|error| format!("cannot write {}: {error}", config.display()))?;
        let log =
            std::fs::File::create(dir.join("registry.log")).map_err(|error| error.to_string())?;
        let child = Command::new("docker-registry")
            .arg("serve")
            .arg(&config)
            .stdin(Stdio::null())
            .stdout(log.try_clone().map_err(|error| error.to_string())?)
            .stderr(log)
            .spawn()
            .map_err(|error| {
                format!("cannot start docker-registry (apt-get install docker-registry): {error}")
            })?;
        let registry = Self {
            child,
            addr: format!("127.0.0.1:{port}"),
        };
        let deadline = Instant::now() + Duration::from_secs(15);
        while Instant::now() < deadline {
            if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                return Ok(registry);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Err("docker-registry did not start".into())
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Pushes OCI layout `layout:tag` to `docker://dest`.
pub(crate) fn skopeo_push(layout: &Path, tag: &str, dest: &str) -> Result<Duration, String> {
    run(
        "skopeo",
        &[
            "--insecure-policy".as_ref(),
            "copy".as_ref(),
            "--quiet".as_ref(),
            "--dest-tls-verify=false".as_ref(),
            format!("oci:{}:{tag}", layout.display()).as_ref(),
            format!("docker://{dest}").as_ref(),
        ],
    )
}

/// Downloads `docker://source` into OCI layout `layout:tag`.
pub(crate) fn skopeo_pull(source: &str, layout: &Path, tag: &str) -> Result<Duration, String> {
    run(
        "skopeo",
        &[
            "--insecure-policy".as_ref(),
            "copy".as_ref(),
            "--quiet".as_ref(),
            "--src-tls-verify=false".as_ref(),
            format!("docker://{source}").as_ref(),
            format!("oci:{}:{tag}", layout.display()).as_ref(),
        ],
    )
}

/// `umoci unpack --image layout:tag bundle`; the rootfs is `bundle/rootfs`.
pub(crate) fn umoci_unpack(
    layout: &Path,
    tag: &str,
    bundle: &Path,
) -> Result<(Duration, PathBuf), String> {
    let elapsed = run(
        "umoci",
        &[
            "unpack".as_ref(),
            "--image".as_ref(),
            format!("{}:{tag}", layout.display()).as_ref(),
            bundle.as_os_str(),
        ],
    )?;
    Ok((elapsed, bundle.join("rootfs")))
}

/// `mkfs.ext4 -d dir image size`.
pub(crate) fn mkfs_ext4(dir: &Path, image: &Path, bytes: u64) -> Result<Duration, String> {
    let size = format!("{}k", bytes.div_ceil(4 * 1024 * 1024) * 4 * 1024);
    run(
        "mkfs.ext4",
        &[
            "-q".as_ref(),
            "-F".as_ref(),
            "-d".as_ref(),
            dir.as_os_str(),
            image.as_os_str(),
            size.as_ref(),
        ],
    )
}
