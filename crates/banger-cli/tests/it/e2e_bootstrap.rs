//! Images and kernels bootstrapped from Debian's packages, end to end: the
//! real CLI and daemon, real debootstrap and apt against Debian's mirror,
//! a sim VM booted from the result. Needs root and the network to the
//! mirror. Downloaded packages are shared across runs through the
//! repository's ignored `.cache/` (the same `.deb` cache the fixture script
//! uses), so a warm run downloads only the signed indices.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use banger_bootstrap::cpio::{Archive, Node};
use banger_bootstrap::decompress::Compression;
use banger_bootstrap::modules;
use banger_testkit::env::run;
use banger_testkit::sim::repo_root;
use banger_testkit::user::E2eUser;
use banger_testkit::{SimEnv, TestEnv, e2e_ready};
use serde_json::Value;

const MIRROR_HOST: &str = "deb.debian.org:80";

/// A TCP forwarder listening on 127.0.0.1 inside a network namespace and
/// connecting to the Debian mirror from the host's namespace. Used as
/// `http_proxy`, it gives a daemon in the test namespace the mirror and
/// nothing else. It records the request lines it forwards.
pub(crate) struct MirrorProxy {
    port: u16,
    stop: Arc<AtomicBool>,
    requests: Arc<Mutex<Vec<String>>>,
    accept: Option<std::thread::JoinHandle<()>>,
}

impl MirrorProxy {
    pub(crate) fn start(netns: &str) -> Self {
        let path = format!("/run/netns/{netns}");
        // A socket belongs to the namespace of the thread that made it.
        let listener = std::thread::spawn(move || {
            let ns = std::fs::File::open(&path).unwrap();
            nix::sched::setns(ns, nix::sched::CloneFlags::CLONE_NEWNET).unwrap();
            TcpListener::bind("127.0.0.1:0").unwrap()
        })
        .join()
        .unwrap();
        listener.set_nonblocking(true).unwrap();
        let port = listener.local_addr().unwrap().port();
        let stop = Arc::new(AtomicBool::new(false));
        let requests = Arc::new(Mutex::new(Vec::new()));
        let accept = std::thread::spawn({
            let (stop, requests) = (stop.clone(), requests.clone());
            move || {
                while !stop.load(Ordering::SeqCst) {
                    match listener.accept() {
                        Ok((client, _)) => {
                            client.set_nonblocking(false).unwrap();
                            let requests = requests.clone();
                            std::thread::spawn(move || forward(client, &requests));
                        }
                        Err(_) => std::thread::sleep(Duration::from_millis(20)),
                    }
                }
            }
        });
        Self {
            port,
            stop,
            requests,
            accept: Some(accept),
        }
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Forwarded requests for `.deb` files.
    fn deb_requests(&self) -> Vec<String> {
        self.requests
            .lock()
            .unwrap()
            .iter()
            .filter(|line| line.contains(".deb "))
            .cloned()
            .collect()
    }

    fn clear(&self) {
        self.requests.lock().unwrap().clear();
    }
}

impl Drop for MirrorProxy {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(accept) = self.accept.take() {
            let _ = accept.join();
        }
    }
}

/// Pipes one connection both ways, noting request lines (`GET http://…`).
fn forward(client: TcpStream, requests: &Mutex<Vec<String>>) {
    let Ok(upstream) = TcpStream::connect(MIRROR_HOST) else {
        return;
    };
    let (mut client_read, mut upstream_write) =
        (client.try_clone().unwrap(), upstream.try_clone().unwrap());
    let (mut upstream_read, mut client_write) = (upstream, client);
    let down = std::thread::spawn(move || {
        let _ = std::io::copy(&mut upstream_read, &mut client_write);
        let _ = client_write.shutdown(std::net::Shutdown::Write);
    });
    let mut buffer = [0u8; 16384];
    loop {
        let n = match client_read.read(&mut buffer) {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        let text = String::from_utf8_lossy(&buffer[..n]);
        for line in text.lines() {
            if line.starts_with("GET ") || line.starts_with("HEAD ") {
                requests.lock().unwrap().push(line.to_owned());
            }
        }
        if upstream_write.write_all(&buffer[..n]).is_err() {
            break;
        }
    }
    let _ = upstream_write.shutdown(std::net::Shutdown::Write);
    let _ = down.join();
}

/// Points this world's package caches at the repository's ignored
/// `.cache/`, so repeated runs reuse downloaded packages. A world of
/// another user than root gets that user's copy of them (root's cache is
/// not theirs to write), and its links are the user's.
pub(crate) fn share_caches(env: &TestEnv, user: Option<&E2eUser>) {
    let banger_cache = env.layout.cache_dir.clone();
    std::fs::create_dir_all(&banger_cache).unwrap();
    let shared = std::env::var_os("BANGER_FIXTURE_CACHE")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo_root().join(".cache"));
    for dir in ["debootstrap", "apt"] {
        let mut target = shared.join(dir);
        std::fs::create_dir_all(&target).unwrap();
        if let Some(user) = user {
            target = user.copy_of(&target);
        }
        std::os::unix::fs::symlink(&target, banger_cache.join(dir)).unwrap();
    }
    if let Some(user) = user {
        user.give(&banger_cache);
    }
}

/// The seconds in `… in 12.3 s; …` or `… in 2 min 05 s; …`.
fn reported_seconds(line: &str) -> Option<f64> {
    let text = line.split(" in ").nth(1)?.split([';', ':']).next()?.trim();
    let text = text.strip_suffix(" s")?;
    match text.split_once(" min ") {
        Some((minutes, seconds)) => {
            Some(minutes.parse::<f64>().ok()? * 60.0 + seconds.parse::<f64>().ok()?)
        }
        None => text.parse().ok(),
    }
}

pub(crate) fn have(program: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|path| std::env::split_paths(&path).any(|dir| dir.join(program).is_file()))
}

/// `banger ARGS` inside the namespace with the proxy set, so that the
/// daemon it starts inherits it.
pub(crate) fn banger_via_proxy(
    sim: &SimEnv,
    proxy: &MirrorProxy,
    args: &[&str],
) -> banger_testkit::Output {
    let mut command = sim.banger_command();
    command
        .args(args)
        .env("http_proxy", proxy.url())
        .env("HTTP_PROXY", proxy.url());
    run(command)
}

/// `vm run` with no image anywhere (none registered, the catalog offers
/// none): the non-interactive fallback bootstraps debian:bookworm (sim VMs
/// need no kernel), says so and how long it took, and the command runs in
/// Debian bookworm with banger's key-only root login. A rebuild downloads no
/// package again.
#[test]
fn vm_run_without_an_image_bootstraps_debian_and_runs_in_it() {
    if !e2e_ready() {
        return;
    }
    assert!(
        have("debootstrap"),
        "debootstrap is not installed (scripts/install-deps.sh installs it)"
    );
    let sim = SimEnv::new("");
    share_caches(&sim.env, sim.user());
    let proxy = MirrorProxy::start(&sim.netns);

    let started = Instant::now();
    let out = banger_via_proxy(
        &sim,
        &proxy,
        &[
            "vm",
            "run",
            "--rm",
            "--vmm",
            "sim",
            "--",
            "cat",
            "/etc/os-release",
        ],
    );
    let took = started.elapsed();
    if !out.success() {
        panic!("command failed:\n{out}\n{}", sim.diagnostics());
    }
    eprintln!("bootstrap + vm run took {took:?}");
    assert!(out.stdout.contains("VERSION_CODENAME=bookworm"), "{out}");
    assert!(out.stdout.contains("Debian GNU/Linux"), "{out}");
    assert!(
        out.stderr.contains("There is no default image yet"),
        "{out}"
    );
    assert!(out.stderr.contains("debootstrap debian:bookworm"), "{out}");
    for stage in [
        "debootstrap_resolve",
        "debootstrap_install",
        "clean_rootfs",
        "build_rootfs",
        "install_guest_files",
        "build_work_seed",
        "wait_ssh",
    ] {
        assert!(out.stderr.contains(stage), "stage {stage} missing:\n{out}");
    }
    assert!(
        out.stderr.contains(
            "image debian-bookworm (developer profile) bootstrapped from debian:bookworm in "
        ),
        "{out}"
    );
    assert!(out.stderr.contains(" installed ("), "{out}");
    // It says how long the bootstrap took, and no longer than it did.
    let line = out
        .stderr
        .lines()
        .find(|line| line.starts_with("image debian-bookworm (developer profile) bootstrapped"))
        .unwrap_or_else(|| panic!("no bootstrap line:\n{out}"));
    let took = reported_seconds(line).unwrap_or_else(|| panic!("no duration in {line:?}"));
    assert!(
        took > 0.0 && took <= started.elapsed().as_secs_f64(),
        "{took} s reported, {:?} measured: {line}",
        started.elapsed()
    );
    let vms: Value = serde_json::from_str(&sim.ok(["vm", "list", "--json"]).stdout).unwrap();
    assert_eq!(vms, serde_json::json!([]), "--rm left a VM");

    // sshd: root by key only (banger's drop-in); the base tools are there.
    let check = sim.ok([
        "vm",
        "run",
        "--rm",
        "--vmm",
        "sim",
        "--",
        "sh",
        "-c",
        "/usr/sbin/sshd -T; git --version; ip -V; make --version; docker --version",
    ]);
    assert!(
        check.stdout.contains("permitrootlogin without-password"),
        "{check}"
    );
    assert!(
        check.stdout.contains("passwordauthentication no"),
        "{check}"
    );
    assert!(check.stdout.contains("git version"), "{check}");
    // The default is the developer image.
    assert!(check.stdout.contains("GNU Make"), "{check}");
    assert!(check.stdout.contains("Docker version"), "{check}");
    let shown = sim.ok(["image", "show", "debian-bookworm"]);
    assert!(shown.stdout.contains("profile     developer"), "{shown}");
    let doctor = sim.banger(["doctor"]);
    assert!(
        doctor.stdout.contains("debian-bookworm, developer profile"),
        "{doctor}"
    );

    let images: Value = serde_json::from_str(&sim.ok(["image", "list", "--json"]).stdout).unwrap();
    let image = &images[0];
    assert_eq!(image["name"], "debian-bookworm");
    assert_eq!(image["is_default"], true);
    assert_eq!(image["source"]["kind"], "bootstrap");
    assert_eq!(image["source"]["distro"], "debian:bookworm");
    let image_dir = Path::new(image["rootfs_path"].as_str().unwrap())
        .parent()
        .unwrap()
        .to_owned();
    let log = std::fs::read_to_string(image_dir.join("debootstrap.log")).unwrap();
    assert!(log.contains("Base system installed successfully"), "{log}");

    sim.assert_clean();

    // A rebuild reuses the cached packages: no .deb crosses the proxy (the
    // minimal set is part of the developer one).
    proxy.clear();
    let started = Instant::now();
    let again = banger_via_proxy(
        &sim,
        &proxy,
        &[
            "image",
            "bootstrap",
            "debian:bookworm",
            "--name",
            "again",
            "--profile",
            "minimal",
        ],
    );
    if !again.success() {
        panic!("command failed:\n{again}\n{}", sim.diagnostics());
    }
    eprintln!("cached rebuild took {:?}", started.elapsed());
    assert!(
        again
            .stderr
            .contains("image again (minimal profile) bootstrapped"),
        "{again}"
    );
    assert!(
        !proxy.requests.lock().unwrap().is_empty(),
        "the rebuild did not go through the proxy at all"
    );
    assert_eq!(proxy.deb_requests(), Vec::<String>::new());
    sim.ok(["image", "delete", "again"]);
    // The daemon deletes the build tree in the background.
    let staging = sim.layout().staging_dir();
    sim.wait_for("staging to be cleaned", Duration::from_secs(180), || {
        std::fs::read_dir(&staging).map_or(true, |mut entries| entries.next().is_none())
    });
    sim.assert_clean();
}

/// Bad input: each a clear error saying what to install or set, nothing
/// registered, nothing left in staging.
#[test]
fn bootstrap_bad_input_is_explained_and_leaves_nothing() {
    if !banger_testkit::root_or_skip(
        "bootstrap_bad_input_is_explained_and_leaves_nothing",
        "image bootstrap",
    ) {
        return;
    }
    let env = TestEnv::new();
    let out = env.banger(["image", "bootstrap", "gentoo"]);
    assert_eq!(out.code, Some(1), "{out}");
    assert!(
        out.stderr.contains("unknown distribution \"gentoo\""),
        "{out}"
    );
    assert!(out.stderr.contains("debian:bookworm"), "{out}");

    let out = env.banger(["kernel", "bootstrap", "arch"]);
    assert_eq!(out.code, Some(1), "{out}");
    assert!(
        out.stderr.contains("unknown distribution \"arch\""),
        "{out}"
    );

    if banger_testkit::have_or_skip(
        "bootstrap_bad_input_is_explained_and_leaves_nothing (unreachable mirror)",
        "debootstrap",
        "debootstrap",
    ) {
        let out = env.banger([
            "image",
            "bootstrap",
            "--mirror",
            "http://127.0.0.1:9/debian",
        ]);
        assert_eq!(out.code, Some(1), "{out}");
        assert!(
            out.stderr
                .contains("cannot reach the mirror http://127.0.0.1:9/debian"),
            "{out}"
        );
        assert!(
            out.stderr
                .contains("hint: check the network, or pass --mirror"),
            "{out}"
        );
        assert!(
            out.stderr.contains("image-bootstrap-"),
            "the log is not named:\n{out}"
        );
    }
    env.stop_daemon();

    // No debootstrap on PATH: the daemon started with this PATH cannot find it.
    let mut command = env.command("banger");
    command
        .args(["image", "bootstrap", "debian"])
        .env("PATH", "/nonexistent");
    let out = run(command);
    assert_eq!(out.code, Some(1), "{out}");
    assert!(out.stderr.contains("debootstrap is not installed"), "{out}");
    assert!(out.stderr.contains("apt-get install debootstrap"), "{out}");
    env.stop_daemon();

    let images: Value =
        serde_json::from_str(&env.banger(["image", "list", "--json"]).stdout).unwrap();
    assert_eq!(images, serde_json::json!([]));
    // A failed build's tree is removed in the background.
    let staging = env.layout.staging_dir();
    env.wait_for("staging to be cleaned", Duration::from_secs(30), || {
        std::fs::read_dir(&staging).map_or(true, |mut entries| entries.next().is_none())
    });
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    assert!(!mounts.contains(&env.root().display().to_string()));
}

/// `kernel bootstrap`: Debian's cloud kernel becomes an x86-64 ELF vmlinux
/// and an initrd with the virtio, vsock and ext4 modules (and everything
/// they depend on) and a shellcheck-clean /init; registered with both.
#[test]
fn kernel_bootstrap_registers_vmlinux_and_initrd() {
    let test = "kernel_bootstrap_registers_vmlinux_and_initrd";
    if !banger_testkit::root_or_skip(test, "like the rest of the end-to-end tests")
        || !banger_testkit::have_or_skip(test, "apt-get", "apt")
    {
        return;
    }
    let env = TestEnv::new();
    share_caches(&env, None);
    let started = Instant::now();
    let out = env.banger(["kernel", "bootstrap", "debian"]);
    out.assert_success();
    eprintln!("kernel bootstrap took {:?}", started.elapsed());
    assert!(
        out.stderr
            .contains("kernel debian-bookworm-cloud bootstrapped"),
        "{out}"
    );
    let kernel: Value = serde_json::from_str(
        &env.banger(["kernel", "show", "debian-bookworm-cloud", "--json"])
            .stdout,
    )
    .unwrap();
    assert_eq!(kernel["source"]["kind"], "bootstrap");
    assert!(
        kernel["source"]["package"]
            .as_str()
            .unwrap()
            .starts_with("linux-image-"),
        "{kernel}"
    );
    let release = kernel["version"].as_str().unwrap().to_owned();
    assert!(release.ends_with("-cloud-amd64"), "{release}");

    let vmlinux = std::fs::read(kernel["vmlinux_path"].as_str().unwrap()).unwrap();
    check_elf_x86_64_executable(&vmlinux);
    let initrd = std::fs::read(kernel["initrd_path"].as_str().unwrap()).unwrap();
    check_initrd(&initrd, &release);
    // The package's modules, indexed, as a read-only ext4 image every VM
    // that boots this kernel gets.
    let modules =
        Path::new(kernel["vmlinux_path"].as_str().unwrap()).with_file_name("modules.ext4");
    check_modules_image(&modules);
    match std::env::var_os("BANGER_TEST_FIRECRACKER") {
        Some(firecracker) => firecracker_accepts(
            Path::new(&firecracker),
            Path::new(kernel["vmlinux_path"].as_str().unwrap()),
            Path::new(kernel["initrd_path"].as_str().unwrap()),
        ),
        None => banger_testkit::skip(
            "kernel_bootstrap_registers_vmlinux_and_initrd (its Firecracker boot)",
            "set BANGER_TEST_FIRECRACKER=/path/to/firecracker (v1.16) to run it",
            banger_testkit::Prerequisite::NotInCi,
        ),
    }
    if banger_testkit::have_or_skip(
        "kernel_bootstrap_registers_vmlinux_and_initrd (its emulated boot)",
        "qemu-system-x86_64",
        "qemu-system-x86",
    ) {
        qemu_boots_through_the_initrd(
            Path::new(kernel["vmlinux_path"].as_str().unwrap()),
            Path::new(kernel["initrd_path"].as_str().unwrap()),
            &initrd,
            &modules,
        );
    }

    // A second bootstrap downloads no package again (apt's log of that run).
    let out = env.banger(["kernel", "bootstrap", "debian", "--name", "again"]);
    out.assert_success();
    let apt_log = std::fs::read_to_string(
        env.layout
            .cache_dir
            .join("apt/debian-bookworm-amd64/apt.log"),
    )
    .unwrap();
    assert!(
        !apt_log
            .lines()
            .any(|line| line.starts_with("Get:") && line.contains("linux-image")),
        "the kernel package was downloaded again:\n{apt_log}"
    );
    env.banger(["kernel", "rm", "again"]).assert_success();
}

/// `modules.ext4`: labelled for first boot, the package's modules with
/// depmod's indexes, Docker's modules among them.
fn check_modules_image(image: &Path) {
    assert!(image.is_file(), "{} is missing", image.display());
    let mut label = std::process::Command::new("dumpe2fs");
    label.arg("-h").arg(image);
    let out = run(label);
    assert!(
        out.stdout
            .contains("Filesystem volume name:   banger-modules"),
        "{out}"
    );
    let dep = String::from_utf8(banger_disk::read_file(image, "/modules.dep").unwrap()).unwrap();
    for module in ["overlay.ko", "br_netfilter.ko", "veth.ko", "nf_tables.ko"] {
        assert!(
            dep.lines()
                .any(|line| line.split(':').next().unwrap_or("").contains(module)),
            "{module} is not in modules.dep"
        );
    }
    for index in ["/modules.dep.bin", "/modules.alias.bin", "/modules.builtin"] {
        assert!(
            banger_disk::stat(image, index).unwrap().is_some(),
            "{index} missing"
        );
    }
}

fn check_elf_x86_64_executable(elf: &[u8]) {
    assert_eq!(&elf[..4], b"\x7fELF", "not an ELF");
    assert_eq!(elf[4], 2, "not ELF64");
    assert_eq!(elf[5], 1, "not little-endian");
    assert_eq!(u16::from_le_bytes([elf[16], elf[17]]), 2, "not ET_EXEC");
    assert_eq!(u16::from_le_bytes([elf[18], elf[19]]), 62, "not x86-64");
}

fn check_initrd(initrd: &[u8], release: &str) {
    let cpio = Compression::Gzip.decompress(initrd, 1 << 30).unwrap();
    let archive = Archive::parse(&cpio).unwrap();
    let entries = archive.entries();
    let Node::File(init) = &entries["init"].node else {
        panic!("/init is not a file")
    };
    assert!(init.starts_with(b"#!/bin/sh"));
    let Node::File(busybox) = &entries["bin/busybox"].node else {
        panic!("/bin/busybox is not a file")
    };
    assert!(busybox.starts_with(b"\x7fELF"));
    let prefix = format!("lib/modules/{release}/");
    let present: Vec<String> = entries
        .keys()
        .filter_map(|path| path.strip_prefix(&prefix))
        .filter_map(modules::name_from_path)
        .collect();
    for wanted in modules::FIRECRACKER_MODULES {
        // ext4 is built into Debian's kernel.
        if *wanted == "ext4" {
            continue;
        }
        assert!(
            present.contains(&(*wanted).to_owned()),
            "{wanted} missing: {present:?}"
        );
    }
    // Every module's hard dependencies are in the initrd too.
    for (path, entry) in entries {
        let Some(rel) = path.strip_prefix(&prefix) else {
            continue;
        };
        if !rel.ends_with(".ko") {
            continue;
        }
        let Node::File(ko) = &entry.node else {
            continue;
        };
        let info = modules::modinfo(ko).unwrap();
        for dep in info.depends {
            assert!(present.contains(&dep), "{rel} needs {dep}, missing");
        }
    }
    let Node::File(order) = &entries["etc/banger-initrd/modules"].node else {
        panic!("no module list")
    };
    assert_eq!(
        String::from_utf8_lossy(order).lines().count(),
        present.len()
    );

    // /init as shipped passes shellcheck.
    if banger_testkit::have_or_skip(
        "kernel_bootstrap_registers_vmlinux_and_initrd (shellcheck of /init)",
        "shellcheck",
        "shellcheck",
    ) {
        let dir = tempfile::tempdir().unwrap();
        let script = dir.path().join("init");
        std::fs::write(&script, init).unwrap();
        let mut command = std::process::Command::new("shellcheck");
        command.args(["-s", "sh"]).arg(&script);
        run(command).assert_success();
    }
}

/// A real Firecracker takes the kernel and initrd: `InstanceStart` answers
/// 204 and its debug log says it loaded the kernel. (What the guest does
/// next depends on the host's KVM; on the machines this is developed on
/// there is none usable, so nothing later is checked.)
fn firecracker_accepts(firecracker: &Path, vmlinux: &Path, initrd: &Path) {
    use banger_firecracker::api::{BootSource, Drive, LogLevel, Logger, MachineConfiguration};
    use banger_firecracker::boot_args::BootArgs;
    use banger_firecracker::{LaunchSpec, ProcessVmm, VmConfig, Vmm};
    use tokio_util::sync::CancellationToken;

    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("root.ext4");
    std::fs::File::create(&root)
        .unwrap()
        .set_len(64 << 20)
        .unwrap();
    let mut mkfs = std::process::Command::new("mkfs.ext4");
    mkfs.args(["-q", "-F"]).arg(&root);
    run(mkfs).assert_success();
    let log = dir.path().join("vmm.log");
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let mut spec = LaunchSpec::new(
            firecracker,
            "bootstrap-kernel",
            dir.path().join("api.sock"),
            dir.path().join("console.log"),
        );
        spec.log_path = Some(log.clone());
        let vmm = ProcessVmm;
        let process = vmm.start(&spec, &CancellationToken::new()).await.unwrap();
        let config = VmConfig {
            logger: Some(Logger {
                log_path: Some(log.clone()),
                level: Some(LogLevel::Debug),
                show_level: Some(true),
                show_log_origin: Some(false),
                module: None,
            }),
            metrics: None,
            machine: MachineConfiguration::new(1, 256),
            boot_source: BootSource {
                kernel_image_path: vmlinux.display().to_string(),
                initrd_path: Some(initrd.display().to_string()),
                boot_args: Some(BootArgs::default().to_string()),
            },
            drives: vec![Drive::virtio("rootfs", root.display().to_string(), true)],
            network_interfaces: vec![],
            vsock: None,
        };
        let configured = vmm.configure(&process, &config).await;
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        let _ = vmm.kill(&process).await;
        configured.unwrap_or_else(|err| panic!("Firecracker refused the kernel: {err}\n{text}"));
        assert!(
            text.contains("Kernel loaded"),
            "no kernel load in the log:\n{text}"
        );
        assert!(text.contains("InstanceStart"), "{text}");
    });
}

/// The kernel really boots through the initrd: QEMU's `microvm` machine
/// (software emulation; virtio-mmio devices described through ACPI, as
/// Firecracker ≥ 1.8 does) with a tiny root disk whose
/// `/usr/local/libexec/banger-first-boot` reports what it sees and powers
/// off. Checks that `/init` loaded the modules, mounted `/dev/vda`, applied
/// `ip=` (address, route, hostname, resolv.conf) and chose first boot as
/// the real init.
fn qemu_boots_through_the_initrd(
    vmlinux: &Path,
    initrd_path: &Path,
    initrd: &[u8],
    modules: &Path,
) {
    let cpio = Compression::Gzip.decompress(initrd, 1 << 30).unwrap();
    let archive = Archive::parse(&cpio).unwrap();
    let Node::File(busybox) = &archive.entries()["bin/busybox"].node else {
        panic!("no busybox in the initrd")
    };
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("root");
    for sub in [
        "bin",
        "proc",
        "sys",
        "dev",
        "etc",
        "lib",
        "usr/local/libexec",
    ] {
        std::fs::create_dir_all(root.join(sub)).unwrap();
    }
    use std::os::unix::fs::PermissionsExt;
    std::fs::write(root.join("bin/busybox"), busybox).unwrap();
    std::fs::set_permissions(
        root.join("bin/busybox"),
        std::fs::Permissions::from_mode(0o755),
    )
    .unwrap();
    let report = "#!/bin/busybox sh\n\
        echo \"REPORT pid=$$\"\n\
        echo \"REPORT modules: $(/bin/busybox cut -d' ' -f1 /proc/modules | /bin/busybox tr '\\n' ' ')\"\n\
        echo \"REPORT addr: $(/bin/busybox ip -4 -o addr show eth0)\"\n\
        echo \"REPORT route: $(/bin/busybox ip route show default)\"\n\
        echo \"REPORT resolv: $(/bin/busybox cat /etc/resolv.conf | /bin/busybox tr '\\n' ' ')\"\n\
        echo \"REPORT hostname: $(/bin/busybox hostname)\"\n\
        echo \"REPORT root: $(/bin/busybox grep ' / ' /proc/mounts)\"\n\
        release=$(/bin/busybox uname -r); /bin/busybox mkdir -p /lib/modules/$release\n\
        /bin/busybox mount -t ext4 -o ro \"$(/bin/busybox findfs LABEL=banger-modules)\" /lib/modules/$release\n\
        /bin/busybox modprobe overlay && /bin/busybox modprobe br_netfilter\n\
        echo \"REPORT filesystems: $(/bin/busybox tr '\\n\\t' '  ' < /proc/filesystems)\"\n\
        echo \"REPORT loaded: $(/bin/busybox cut -d' ' -f1 /proc/modules | /bin/busybox tr '\\n' ' ')\"\n\
        /bin/busybox poweroff -f\n";
    let first_boot = root.join("usr/local/libexec/banger-first-boot");
    std::fs::write(&first_boot, report).unwrap();
    std::fs::set_permissions(&first_boot, std::fs::Permissions::from_mode(0o755)).unwrap();
    let disk = dir.path().join("root.ext4");
    std::fs::File::create(&disk)
        .unwrap()
        .set_len(64 << 20)
        .unwrap();
    let mut mkfs = std::process::Command::new("mkfs.ext4");
    mkfs.args(["-q", "-F", "-d"]).arg(&root).arg(&disk);
    run(mkfs).assert_success();

    let console = dir.path().join("console.txt");
    let mut qemu = std::process::Command::new("qemu-system-x86_64");
    qemu.args([
        "-M",
        "microvm,acpi=on,rtc=on,pit=on,pic=on",
        "-cpu",
        "max",
        "-m",
        "512",
        "-smp",
        "1",
    ])
    .args(["-nographic", "-no-reboot", "-kernel"])
    .arg(vmlinux)
    .arg("-initrd")
    .arg(initrd_path)
    // tsc_early_khz: under emulation the kernel cannot calibrate the TSC.
    .args([
        "-append",
        "console=ttyS0 reboot=k panic=1 tsc_early_khz=2000000 root=/dev/vda rw \
             ip=10.0.2.15::10.0.2.2:255.255.255.0:qguest:eth0:off:1.1.1.1:8.8.8.8",
    ])
    .arg("-drive")
    .arg(format!(
        "id=root,file={},format=raw,if=none",
        disk.display()
    ))
    .args(["-device", "virtio-blk-device,drive=root"])
    .arg("-drive")
    .arg(format!(
        "id=modules,file={},format=raw,if=none,readonly=on",
        modules.display()
    ))
    .args(["-device", "virtio-blk-device,drive=modules"])
    .args([
        "-netdev",
        "user,id=n0,restrict=on",
        "-device",
        "virtio-net-device,netdev=n0",
    ])
    .stdin(std::process::Stdio::null())
    .stdout(std::fs::File::create(&console).unwrap())
    .stderr(std::process::Stdio::null());
    let started = Instant::now();
    let mut child = qemu.spawn().unwrap();
    let deadline = started + Duration::from_secs(600);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break Some(status);
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    let text = std::fs::read_to_string(&console).unwrap_or_default();
    eprintln!("emulated boot took {:?}", started.elapsed());
    assert!(
        status.is_some(),
        "the emulated guest did not power off in time:\n{text}"
    );
    let report: Vec<&str> = text
        .lines()
        .filter(|line| line.starts_with("REPORT"))
        .collect();
    let all = report.join("\n");
    assert!(
        all.contains("REPORT pid=1"),
        "first boot was not PID 1:\n{text}"
    );
    for module in [
        "virtio_mmio",
        "virtio_blk",
        "virtio_net",
        "vsock",
        "vmw_vsock_virtio_transport",
    ] {
        assert!(
            all.contains(&format!(" {module} ")) || all.contains(&format!(": {module} ")),
            "{module} not loaded:\n{all}"
        );
    }
    assert!(all.contains("inet 10.0.2.15/24"), "{all}");
    assert!(all.contains("default via 10.0.2.2 dev eth0"), "{all}");
    assert!(
        all.contains("nameserver 1.1.1.1 nameserver 8.8.8.8"),
        "{all}"
    );
    assert!(all.contains("REPORT hostname: qguest"), "{all}");
    assert!(all.contains("/dev/vda / ext4 rw"), "{all}");
    // The modules drive carries what Docker loads.
    assert!(all.contains(" overlay "), "overlay not available:\n{all}");
    assert!(
        all.contains("br_netfilter"),
        "br_netfilter not loaded:\n{all}"
    );
    assert!(
        text.contains(
            "banger-initrd: switching to /dev/vda, init /usr/local/libexec/banger-first-boot"
        ),
        "{text}"
    );
}
