//! Images from a real registry, tarballs, catalogs and registered files.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use banger_testkit::{SimEnv, e2e_ready};
use serde_json::Value;

fn repo_root() -> PathBuf {
    banger_testkit::sim::repo_root()
}

fn fixture_tar() -> PathBuf {
    banger_testkit::sim::fixture_rootfs().with_file_name("rootfs.tar")
}

/// Debian's docker-registry on 127.0.0.1:5000 inside the test's namespace.
struct Registry<'a> {
    sim: &'a SimEnv,
    dir: PathBuf,
}

impl<'a> Registry<'a> {
    fn start(sim: &'a SimEnv) -> Self {
        let dir = sim.env.root().join("registry");
        let script = repo_root().join("tests/fixtures/registry.sh");
        let out = sim.exec(&script, ["start", &dir.to_string_lossy(), "5000"]);
        assert!(out.success(), "{out}");
        Self { sim, dir }
    }

    fn push(&self, tarball: &Path, reference: &str) -> String {
        let script = repo_root().join("tests/fixtures/oci-image.sh");
        let mut command = self.sim.in_netns(&script);
        command
            .args([&tarball.to_string_lossy(), "127.0.0.1:5000", reference])
            .env("OCI_GZIP_LEVEL", "1");
        let out = banger_testkit::env::run(command);
        assert!(out.success(), "{out}");
        out.stdout.lines().last().unwrap_or_default().to_owned()
    }

    /// Blob downloads the registry has served so far.
    fn blob_gets(&self) -> usize {
        let log = std::fs::read_to_string(self.dir.join("registry.log")).unwrap_or_default();
        log.lines()
            .filter(|line| line.contains("\"GET /v2/") && line.contains("/blobs/sha256:"))
            .count()
    }
}

impl Drop for Registry<'_> {
    fn drop(&mut self) {
        let script = repo_root().join("tests/fixtures/registry.sh");
        let _ = self
            .sim
            .exec(&script, ["stop", &self.dir.to_string_lossy()]);
    }
}

#[test]
fn a_pulled_image_boots_and_a_second_pull_downloads_nothing() {
    if !e2e_ready() {
        return;
    }
    let sim = SimEnv::new("");
    let registry = Registry::start(&sim);
    let digest = registry.push(&fixture_tar(), "banger/debian:bookworm");
    assert!(digest.starts_with("sha256:"), "{digest}");

    let out = sim.ok(["image", "pull", "127.0.0.1:5000/banger/debian:bookworm"]);
    assert!(out.stderr.contains("image debian-bookworm pulled"), "{out}");
    let image: Value = serde_json::from_str(
        &sim.ok(["image", "show", "debian-bookworm", "--json"])
            .stdout,
    )
    .unwrap();
    assert_eq!(image["source"]["kind"], "pull");
    assert_eq!(image["source"]["manifest_digest"], digest.as_str());
    assert_eq!(
        image["source"]["layer_digests"].as_array().unwrap().len(),
        1
    );
    let shown = sim.ok(["image", "show", "debian-bookworm"]);
    assert!(shown.stdout.contains("layer       sha256:"), "{shown}");

    sim.ok(["vm", "create", "--name", "pulled"]);
    let release = sim.ok(["vm", "ssh", "pulled", "--", "cat", "/etc/os-release"]);
    assert!(release.stdout.contains("bookworm"), "{release}");

    // The same reference again: up to date, nothing downloaded, same image.
    let before = registry.blob_gets();
    assert!(before >= 1, "the first pull should have fetched blobs");
    let out = sim.ok(["image", "pull", "127.0.0.1:5000/banger/debian:bookworm"]);
    assert!(
        out.stderr
            .contains(&format!("image debian-bookworm is up to date ({digest})")),
        "{out}"
    );
    assert_eq!(
        registry.blob_gets(),
        before,
        "an up-to-date pull downloaded blobs"
    );
    let again: Value = serde_json::from_str(
        &sim.ok(["image", "show", "debian-bookworm", "--json"])
            .stdout,
    )
    .unwrap();
    assert_eq!(again, image);

    // Same image under another name: every layer comes from the cache.
    sim.ok([
        "image",
        "pull",
        "127.0.0.1:5000/banger/debian:bookworm",
        "--name",
        "again",
    ]);
    assert_eq!(
        registry.blob_gets(),
        before,
        "a cached pull downloaded blobs again"
    );

    // A new version under the same tag replaces the image in place; the VM
    // made from the old one keeps its disk, across a restart too.
    sim.ok([
        "vm",
        "ssh",
        "pulled",
        "--",
        "echo mine > /etc/written-in-the-vm",
    ]);
    let v2 = sim.env.root().join("v2.tar");
    std::fs::copy(fixture_tar(), &v2).unwrap();
    let extra = sim.env.root().join("v2");
    std::fs::create_dir_all(extra.join("etc")).unwrap();
    std::fs::write(extra.join("etc/banger-v2"), "v2\n").unwrap();
    let mut append = Command::new("tar");
    append
        .args(["--numeric-owner", "--owner=0", "--group=0", "-rf"])
        .arg(&v2)
        .arg("-C")
        .arg(&extra)
        .arg("./etc/banger-v2");
    banger_testkit::env::run(append).assert_success();
    let digest2 = registry.push(&v2, "banger/debian:bookworm");
    assert_ne!(digest2, digest);
    let out = sim.ok(["image", "pull", "127.0.0.1:5000/banger/debian:bookworm"]);
    assert!(
        out.stderr.contains(&format!(
            "image debian-bookworm replaced in place: {digest} → {digest2}"
        )),
        "{out}"
    );
    assert!(out.stderr.contains("keep their disks: pulled"), "{out}");
    let replaced: Value = serde_json::from_str(
        &sim.ok(["image", "show", "debian-bookworm", "--json"])
            .stdout,
    )
    .unwrap();
    assert_eq!(replaced["id"], image["id"]);
    assert_eq!(replaced["is_default"], image["is_default"]);
    assert_eq!(replaced["source"]["manifest_digest"], digest2.as_str());
    let check = "cat /etc/written-in-the-vm; test -e /etc/banger-v2 && echo new || echo old";
    assert_eq!(
        sim.ok(["vm", "ssh", "pulled", "--", check]).stdout,
        "mine\nold\n"
    );
    sim.ok(["vm", "restart", "pulled"]);
    assert_eq!(
        sim.ok(["vm", "ssh", "pulled", "--", check]).stdout,
        "mine\nold\n"
    );
    let fresh = sim.ok(["vm", "run", "--rm", "--", "cat /etc/banger-v2"]);
    assert_eq!(fresh.stdout, "v2\n", "{fresh}");

    // An image in use cannot be deleted.
    let out = sim.banger(["image", "delete", "debian-bookworm"]);
    out.assert_code(1);
    assert!(out.stderr.contains("used by VMs: pulled"), "{out}");
    sim.ok(["vm", "delete", "pulled"]);
    sim.ok(["image", "delete", "debian-bookworm"]);
    sim.ok(["image", "delete", "again"]);
    let missing = sim.banger(["image", "pull", "127.0.0.1:5000/banger/nothing:here"]);
    missing.assert_code(1);
    assert!(missing.stderr.contains("nothing"), "{missing}");
    assert_eq!(sim.ok(["image", "list", "--json"]).stdout.trim(), "[]");
    sim.assert_clean();
}

/// A tar with an entry that climbs out of the root.
fn hostile_tarball(root: &Path) -> PathBuf {
    let path = root.join("hostile.tar");
    let script = format!(
        "import tarfile, io\n\
         t = tarfile.open('{}', 'w')\n\
         data = b'owned'\n\
         for name in ['bin/ok', '../escaped-by-banger-test']:\n\
         \x20   info = tarfile.TarInfo(name); info.size = len(data); t.addfile(info, io.BytesIO(data))\n\
         t.close()\n",
        path.display()
    );
    let out = Command::new("python3")
        .arg("-c")
        .arg(script)
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    path
}

#[test]
fn tarball_import_boots_and_hostile_tarballs_are_refused() {
    if !e2e_ready() {
        return;
    }
    let sim = SimEnv::new("");
    let out = sim.ok([
        "image",
        "import",
        &fixture_tar().to_string_lossy(),
        "--name",
        "tarred",
    ]);
    assert!(out.stderr.contains("unpack"), "{out}");
    sim.ok(["vm", "create", "--name", "fromtar", "--image", "tarred"]);
    assert_eq!(
        sim.ok(["vm", "ssh", "fromtar", "--", "hostname"])
            .stdout
            .trim(),
        "fromtar"
    );
    sim.ok(["vm", "delete", "fromtar"]);

    let hostile = hostile_tarball(sim.env.root());
    let out = sim.banger([
        "image",
        "import",
        &hostile.to_string_lossy(),
        "--name",
        "evil",
    ]);
    out.assert_code(1);
    assert!(
        out.stderr.contains("escaped-by-banger-test"),
        "the error must name the entry:\n{out}"
    );
    let staging_parent = sim.layout().staging_dir();
    assert!(!staging_parent.join("escaped-by-banger-test").exists());
    assert!(
        !sim.layout()
            .state_dir
            .join("escaped-by-banger-test")
            .exists()
    );
    let images: Vec<Value> =
        serde_json::from_str(&sim.ok(["image", "list", "--json"]).stdout).unwrap();
    assert_eq!(
        images.len(),
        1,
        "only the good import is registered: {images:?}"
    );
    sim.assert_clean();
}

/// What debootstrap puts in a new tree's /dev (its `setup_devices_simple`),
/// plus a FIFO: made with mknod in `root/dev`.
fn make_debootstrap_dev(root: &Path) {
    use nix::sys::stat::{Mode, SFlag, makedev, mknod};
    let dev = root.join("dev");
    std::fs::create_dir_all(dev.join("pts")).unwrap();
    std::fs::create_dir_all(dev.join("shm")).unwrap();
    for (name, major, minor, mode) in [
        ("full", 1, 7, 0o666),
        ("null", 1, 3, 0o666),
        ("random", 1, 8, 0o666),
        ("tty", 5, 0, 0o666),
        ("urandom", 1, 9, 0o666),
        ("zero", 1, 5, 0o666),
        ("console", 5, 1, 0o600),
        ("ptmx", 5, 2, 0o666),
    ] {
        mknod(
            &dev.join(name),
            SFlag::S_IFCHR,
            Mode::from_bits_truncate(mode),
            makedev(major, minor),
        )
        .unwrap();
    }
    nix::unistd::mkfifo(&dev.join("initctl"), Mode::from_bits_truncate(0o600)).unwrap();
    for (name, target) in [
        ("fd", "/proc/self/fd"),
        ("stdin", "/proc/self/fd/0"),
        ("stdout", "/proc/self/fd/1"),
        ("stderr", "/proc/self/fd/2"),
    ] {
        std::os::unix::fs::symlink(target, dev.join(name)).unwrap();
    }
}

/// A plain debootstrap tree imports with its /dev nodes, as a directory and
/// as a tarball made from it: the 9 nodes and FIFOs are skipped with a
/// one-line count, the image has none of them, and it boots.
#[test]
fn debootstrap_trees_import_with_their_dev_nodes() {
    if !e2e_ready() {
        return;
    }
    let sim = SimEnv::new("");
    let tree = sim.env.root().join("debootstrap-tree");
    let mut copy = Command::new("cp");
    copy.args(["-a", "--reflink=auto"])
        .arg(banger_testkit::sim::fixture_rootfs())
        .arg(&tree);
    banger_testkit::env::run(copy).assert_success();
    make_debootstrap_dev(&tree);
    sim.give(&tree);
    let tarball = sim.env.root().join("debootstrap.tar");
    let mut tar = Command::new("tar");
    tar.args(["--numeric-owner", "--xattrs", "--xattrs-include=*", "-C"])
        .arg(&tree)
        .arg("-cf")
        .arg(&tarball)
        .arg(".");
    banger_testkit::env::run(tar).assert_success();

    for (source, name) in [(&tree, "from-dir"), (&tarball, "from-tar")] {
        let out = sim.ok(["image", "import", &source.to_string_lossy(), "--name", name]);
        assert!(
            out.stderr.contains(
                "skipped 9 device nodes and FIFOs: a guest's /dev is a devtmpfs, so images need none"
            ),
            "{out}"
        );
        let image: Value =
            serde_json::from_str(&sim.ok(["image", "show", name, "--json"]).stdout).unwrap();
        let rootfs = image["rootfs_path"].as_str().unwrap();
        for gone in ["/dev/null", "/dev/console", "/dev/initctl"] {
            assert_eq!(
                banger_disk::stat(Path::new(rootfs), gone).unwrap(),
                None,
                "{gone} is in the {name} image"
            );
        }
        assert!(
            banger_disk::stat(Path::new(rootfs), "/dev/pts")
                .unwrap()
                .is_some()
        );
    }
    let out = sim.ok([
        "vm",
        "run",
        "--rm",
        "--image",
        "from-tar",
        "--",
        "echo hi > /dev/null && test -c /dev/null && echo booted",
    ]);
    assert_eq!(out.stdout, "booted\n", "{out}");
    sim.assert_clean();
}

/// python3 -m http.server in the namespace, serving `dir` on 127.0.0.1:8000.
fn http_server(sim: &SimEnv, dir: &Path) -> Child {
    let child = sim
        .in_netns("python3")
        .args([
            "-m",
            "http.server",
            "8000",
            "--bind",
            "127.0.0.1",
            "--directory",
            &dir.to_string_lossy(),
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    sim.wait_for("the catalog server", Duration::from_secs(10), || {
        sim.exec("curl", ["-sf", "-o", "/dev/null", "http://127.0.0.1:8000/"])
            .success()
    });
    child
}

fn tar_zst(source: &Path, out: &Path) -> (String, u64) {
    let status = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "tar -C '{}' -cf - . | zstd -q -f -o '{}'",
            source.display(),
            out.display()
        ))
        .status()
        .unwrap();
    assert!(status.success());
    let sum = Command::new("sha256sum").arg(out).output().unwrap();
    let sha = String::from_utf8_lossy(&sum.stdout)
        .split_whitespace()
        .next()
        .unwrap()
        .to_owned();
    (sha, std::fs::metadata(out).unwrap().len())
}

#[test]
fn catalog_downloads_are_verified_before_use() {
    if !e2e_ready() {
        return;
    }
    let root = banger_testkit::TestEnv::new();
    let served = root.root().join("served");
    std::fs::create_dir_all(served.join("kernel")).unwrap();
    std::fs::copy("/bin/true", served.join("kernel/vmlinux")).unwrap();
    let (kernel_sha, kernel_size) = tar_zst(&served.join("kernel"), &served.join("k1.tar.zst"));
    let rootfs = banger_testkit::sim::fixture_rootfs();
    let (image_sha, image_size) = tar_zst(&rootfs, &served.join("img.tar.zst"));
    let catalog = serde_json::json!({
        "version": 1,
        "kernels": [
            {"name": "k1", "arch": "x86_64", "version": "6.1.0",
             "artifact": {"url": "http://127.0.0.1:8000/k1.tar.zst", "sha256": kernel_sha, "size": kernel_size}},
            {"name": "corrupt", "arch": "x86_64",
             "artifact": {"url": "http://127.0.0.1:8000/k1.tar.zst", "sha256": "0".repeat(64), "size": kernel_size}}
        ],
        "images": [
            {"name": "golden", "arch": "x86_64", "kernel": "k1",
             "artifact": {"url": "http://127.0.0.1:8000/img.tar.zst", "sha256": image_sha, "size": image_size}}
        ]
    });
    std::fs::write(served.join("catalog.json"), catalog.to_string()).unwrap();
    let sim = SimEnv::new("catalog_url = \"http://127.0.0.1:8000/catalog.json\"\n");
    let mut server = http_server(&sim, &served);

    // A catalog image pulls its kernel too.
    let out = sim.ok(["image", "pull", "golden"]);
    assert!(out.stderr.contains("image golden pulled"), "{out}");
    let image: Value =
        serde_json::from_str(&sim.ok(["image", "show", "golden", "--json"]).stdout).unwrap();
    assert_eq!(image["kernel_name"], "k1");
    assert_eq!(image["source"]["kind"], "catalog");
    assert_eq!(image["source"]["sha256"], image_sha.as_str());
    sim.ok(["vm", "create", "--name", "gold", "--image", "golden"]);
    assert_eq!(
        sim.ok(["vm", "ssh", "gold", "--", "hostname"])
            .stdout
            .trim(),
        "gold"
    );
    sim.ok(["vm", "delete", "gold"]);

    // A corrupted artifact is refused, named, and not kept.
    let out = sim.banger(["kernel", "pull", "corrupt"]);
    out.assert_code(1);
    assert!(out.stderr.contains("corrupt"), "{out}");
    assert!(out.stderr.contains("sha256"), "{out}");
    let kernels: Vec<Value> =
        serde_json::from_str(&sim.ok(["kernel", "list", "--json"]).stdout).unwrap();
    assert_eq!(kernels.len(), 1, "{kernels:?}");
    let cache = sim.layout().cache_dir.join("catalog");
    let leftovers: Vec<String> = walk(&cache)
        .into_iter()
        .filter(|path| !path.contains(&kernel_sha) && !path.contains(&image_sha))
        .collect();
    assert!(
        leftovers.is_empty(),
        "a rejected download was kept: {leftovers:?}"
    );
    let unknown = sim.banger(["kernel", "pull", "nope"]);
    assert!(unknown.stderr.contains("no kernel named"), "{unknown}");
    let _ = server.kill();
    let _ = server.wait();
    sim.assert_clean();
}

fn walk(dir: &Path) -> Vec<String> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let path = entry.path();
        if path.is_dir() {
            found.extend(walk(&path));
        } else {
            found.push(path.display().to_string());
        }
    }
    found
}

#[test]
fn registered_ext4_files_boot() {
    if !e2e_ready() {
        return;
    }
    let sim = SimEnv::new("");
    sim.import_fixture();
    let image: Value =
        serde_json::from_str(&sim.ok(["image", "show", "debian", "--json"]).stdout).unwrap();
    // Register a copy made outside banger's dirs.
    let outside = sim.env.root().join("mine.ext4");
    std::fs::copy(image["rootfs_path"].as_str().unwrap(), &outside).unwrap();
    sim.give(&outside);
    let out = sim.ok([
        "image",
        "register",
        "--name",
        "mine",
        "--rootfs",
        &outside.to_string_lossy(),
    ]);
    assert!(out.stderr.contains("image mine registered"), "{out}");
    sim.ok(["vm", "create", "--name", "reg", "--image", "mine"]);
    assert_eq!(
        sim.ok(["vm", "ssh", "reg", "--", "hostname"]).stdout.trim(),
        "reg"
    );
    sim.ok(["vm", "delete", "reg"]);
    sim.ok(["image", "delete", "mine"]);
    assert!(
        outside.exists(),
        "deleting a registered image must not touch the original"
    );
    let not_ext4 = sim.banger([
        "image",
        "register",
        "--name",
        "bad",
        "--rootfs",
        "/etc/hostname",
    ]);
    not_ext4.assert_code(1);
    assert!(not_ext4.stderr.contains("not an ext4 image"), "{not_ext4}");
    sim.assert_clean();
}
