//! `vmm = "qemu"` end to end: the real CLI and daemon, banger-simvm's qemu
//! engine, and the kernel and image users get (`banger kernel bootstrap
//! debian`: Debian's cloud kernel and banger's initrd; `banger image
//! bootstrap debian:bookworm`; their packages are cached in the
//! repository's ignored `.cache/`, shared with the fixture build) booting in
//! QEMU microvm, under KVM where the kernel boots under it and software
//! emulation otherwise. Boots are shared between checks to keep the suite's
//! time down: two `vm run --rm`, then one VM taken through its whole life.
//!
//! Needs root, the fixture, `qemu-system-x86_64` and `vhost-device-vsock`
//! (`scripts/install-deps.sh` installs both; the latter into
//! `.cache/tools/bin`). Without the programs the test says why and skips,
//! except under `CI=true`, where it fails.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use banger_testkit::sim::repo_root;
use banger_testkit::{Output, SimEnv, e2e_ready};
use serde_json::Value;

use crate::e2e_bootstrap::{MirrorProxy, banger_via_proxy, have, share_caches};
use crate::e2e_lifecycle::Outside;

const KERNEL: &str = "debian-bookworm-cloud";

/// `vhost-device-vsock`, or why the test cannot run.
pub(crate) fn vhost_device_vsock() -> Result<PathBuf, String> {
    if !have("qemu-system-x86_64") {
        return Err("qemu-system-x86_64 is not installed (package qemu-system-x86)".into());
    }
    if let Some(path) = std::env::var_os("BANGER_TEST_VHOST_VSOCK") {
        return Ok(PathBuf::from(path));
    }
    let cached = repo_root().join(".cache/tools/bin/vhost-device-vsock");
    if cached.is_file() {
        return Ok(cached);
    }
    std::env::var_os("PATH")
        .and_then(|path| {
            std::env::split_paths(&path)
                .map(|dir| dir.join("vhost-device-vsock"))
                .find(|candidate| candidate.is_file())
        })
        .ok_or_else(|| "vhost-device-vsock is not in .cache/tools/bin or PATH".into())
}

/// Runs a step, printing how long it took.
fn step<T>(what: &str, body: impl FnOnce() -> T) -> T {
    let started = Instant::now();
    let value = body();
    eprintln!("qemu e2e: {what}: {:.1?}", started.elapsed());
    value
}

fn ok(sim: &SimEnv, args: &[&str]) -> Output {
    sim.ok(args)
}

fn vm_json(sim: &SimEnv, name: &str) -> Value {
    serde_json::from_str(&ok(sim, &["vm", "show", name, "--json"]).stdout).unwrap()
}

/// `git ARGS` in `dir` as the world's user.
fn git(sim: &SimEnv, dir: &Path, args: &[&str]) {
    let out = sim
        .host_command("git")
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "git {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A checkout with a committed file changed but not committed, and an
/// untracked file, the world's user's.
fn dirty_repo(sim: &SimEnv) -> PathBuf {
    let repo = sim.env.root().join("repo");
    std::fs::create_dir_all(&repo).unwrap();
    sim.give(&repo);
    git(sim, &repo, &["init", "-q", "-b", "main"]);
    git(sim, &repo, &["config", "user.name", "Repo Person"]);
    git(sim, &repo, &["config", "user.email", "repo@example.com"]);
    std::fs::write(repo.join("tracked.txt"), "committed\n").unwrap();
    std::fs::write(repo.join("kept.txt"), "committed, kept\n").unwrap();
    git(sim, &repo, &["add", "-A"]);
    git(sim, &repo, &["commit", "-qm", "init"]);
    std::fs::write(repo.join("tracked.txt"), "changed, not committed\n").unwrap();
    std::fs::write(repo.join("untracked.txt"), "never added\n").unwrap();
    sim.give(&repo);
    repo
}

/// Host pids of the VM's QEMU.
fn qemu_pids(sim: &SimEnv) -> Vec<i32> {
    sim.vmm_processes()
        .into_iter()
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/cmdline")).is_ok_and(|cmdline| {
                let program = cmdline.split(|b| *b == 0).next().unwrap_or_default();
                program.ends_with(b"qemu-system-x86_64")
            })
        })
        .collect()
}

#[test]
fn qemu_guest_end_to_end() {
    if !e2e_ready() {
        return;
    }
    let vhost = match vhost_device_vsock() {
        Ok(path) => path,
        Err(reason) => {
            assert!(
                std::env::var("CI").map_or(true, |v| v != "true"),
                "{reason}; scripts/install-deps.sh installs it"
            );
            eprintln!(
                "skipped qemu_guest_end_to_end: {reason}; scripts/install-deps.sh installs it"
            );
            return;
        }
    };
    let started = Instant::now();
    let sim = SimEnv::qemu(&format!(
        "vhost_vsock_bin = \"{}\"\n\n[[file_sync]]\nhost = \"~/synced.txt\"\nguest = \"~/synced.txt\"\n",
        vhost.display()
    ));
    std::fs::write(
        sim.env.layout.home.join("synced.txt"),
        "synced from the host\n",
    )
    .unwrap();

    // The kernel users get, and the fixture image booting with it.
    share_caches(&sim.env, sim.user());
    let proxy = MirrorProxy::start(&sim.netns);
    let out = step("kernel bootstrap", || {
        banger_via_proxy(&sim, &proxy, &["kernel", "bootstrap", "debian"])
    });
    if !out.success() {
        panic!("kernel bootstrap failed:\n{out}\n{}", sim.diagnostics());
    }
    let kernel: Value =
        serde_json::from_str(&ok(&sim, &["kernel", "show", KERNEL, "--json"]).stdout).unwrap();
    let release = kernel["version"].as_str().unwrap().to_owned();
    // The image users get: Debian's packages through debootstrap (cached in
    // the repository's .cache/, shared with the fixture build).
    let out = step("image bootstrap", || {
        banger_via_proxy(
            &sim,
            &proxy,
            &[
                "image",
                "bootstrap",
                "debian:bookworm",
                "--kernel-ref",
                KERNEL,
            ],
        )
    });
    if !out.success() {
        panic!("image bootstrap failed:\n{out}\n{}", sim.diagnostics());
    }
    drop(proxy);

    // 1. The guest's own kernel answers, not the host's.
    let out = step("vm run --rm -- cat /proc/version", || {
        ok(
            &sim,
            &[
                "vm",
                "run",
                "--rm",
                "--vmm",
                "qemu",
                "--",
                "cat",
                "/proc/version",
            ],
        )
    });
    assert!(
        out.stdout.starts_with(&format!("Linux version {release} ")),
        "not the guest kernel {release}:\n{out}"
    );
    let host = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap();
    assert!(
        !out.stdout.contains(&format!(" {} ", host.trim())),
        "the host's kernel answered:\n{out}"
    );

    // 2. A workspace with uncommitted work, and the command's exit code.
    let repo = dirty_repo(&sim);
    // Files modified in the second the workspace is listed are compared by
    // content (git's racy-clean rule); none is, here.
    std::thread::sleep(std::time::Duration::from_millis(1100));
    let out = step("vm run --rm REPO -- sh -c '…; exit 7'", || {
        sim.banger([
            "vm",
            "run",
            "--rm",
            "--vmm",
            "qemu",
            &repo.to_string_lossy(),
            "--",
            "sh",
            "-c",
            "cat /root/repo/tracked.txt /root/repo/untracked.txt; git -C /root/repo log --format=%s; \
             git -C /root/repo diff-files --name-only; exit 7",
        ])
    });
    if out.code != Some(7) {
        panic!("expected exit code 7:\n{out}\n{}", sim.diagnostics());
    }
    // The disk's git index vouches for kept.txt under the real kernel's
    // stat (inode, times): only the changed file is left to compare.
    assert_eq!(
        out.stdout, "changed, not committed\nnever added\ninit\ntracked.txt\n",
        "{out}"
    );
    assert_eq!(ok(&sim, &["vm", "list", "--json"]).stdout.trim(), "[]");

    // 3. One VM through its whole life.
    let out = step("vm create --nat", || {
        ok(
            &sim,
            &["vm", "create", "--name", "q", "--vmm", "qemu", "--nat"],
        )
    });
    for stage in ["start_vmm", "wait_vsock_agent", "wait_ssh", "ready"] {
        assert!(out.stderr.contains(stage), "stage {stage} missing:\n{out}");
    }
    // The guest's clock keeps the host's pace (under emulation the kernel
    // is told the host's TSC rate; a guessed one ran it 1.28x fast).
    let uptime = || -> f64 {
        let out = ok(&sim, &["vm", "ssh", "q", "--", "cat", "/proc/uptime"]);
        out.stdout
            .split_whitespace()
            .next()
            .unwrap()
            .parse()
            .unwrap()
    };
    let (guest_before, host_before) = (uptime(), Instant::now());
    std::thread::sleep(Duration::from_secs(10));
    let (guest_after, host_after) = (uptime(), Instant::now());
    let pace = (guest_after - guest_before) / (host_after - host_before).as_secs_f64();
    eprintln!("qemu e2e: guest clock pace {pace:.3} of the host's");
    assert!((0.9..1.1).contains(&pace), "guest clock pace {pace:.3}");
    // The boot's figures, for the record (scripts/bench.sh has the same).
    for line in out.stderr.lines().filter(|line| line.contains(" done ")) {
        eprintln!("qemu e2e: vm create stage: {}", line.trim());
    }

    let vm = vm_json(&sim, "q");
    assert_eq!(vm["vmm"], "qemu");
    let accel = vm["accel"]
        .as_str()
        .expect("a qemu VM records its accelerator")
        .to_owned();
    let list = ok(&sim, &["vm", "list"]);
    assert!(list.stdout.contains(&format!("qemu ({accel})")), "{list}");
    let show = ok(&sim, &["vm", "show", "q"]).stdout;
    assert!(
        show.contains("qemu (a real guest kernel in QEMU microvm"),
        "{show}"
    );
    if accel == "tcg" {
        assert!(show.contains("software emulation: slow"), "{show}");
        assert!(list.stderr.contains("software emulation"), "{list}");
    }
    // vm stats counts QEMU (a booted guest's memory), not only simvm.
    let stats: Value =
        serde_json::from_str(&ok(&sim, &["vm", "stats", "q", "--json"]).stdout).unwrap();
    assert!(
        stats["rss_bytes"].as_u64().unwrap() > 64 << 20,
        "QEMU is not counted: {stats}"
    );
    // Doctor names the engine's pieces and, after that boot, the accelerator.
    let doctor = sim.banger(["doctor"]);
    for check in [
        "qemu: guests boot their real kernel",
        "vhost-device-vsock 0.3.0",
        "qemu-accel",
    ] {
        assert!(doctor.stdout.contains(check), "{check} missing:\n{doctor}");
    }
    if accel == "tcg" {
        assert!(
            doctor.stdout.contains("TCG, software emulation: slow"),
            "{doctor}"
        );
    }

    // sshd runs with banger's hardening; the kernel is the guest's.
    let sshd = ok(&sim, &["vm", "ssh", "q", "--", "/usr/sbin/sshd", "-T"]).stdout;
    for setting in [
        "permitrootlogin without-password",
        "pubkeyauthentication yes",
        "passwordauthentication no",
        "kbdinteractiveauthentication no",
        "strictmodes yes",
    ] {
        assert!(sshd.contains(setting), "{setting} missing:\n{sshd}");
    }
    assert_eq!(
        ok(&sim, &["vm", "ssh", "q", "--", "uname", "-r"])
            .stdout
            .trim(),
        release
    );

    // First boot set quickack on the route to the host (ssh's handshake
    // waits on delayed ACKs otherwise).
    let routes = ok(
        &sim,
        &[
            "vm", "ssh", "q", "--", "ip", "-4", "route", "show", "dev", "eth0",
        ],
    )
    .stdout;
    assert!(
        routes
            .lines()
            .any(|line| line.contains("proto kernel scope link")
                && line.trim_end().ends_with("quickack 1")),
        "{routes}"
    );

    // [[file_sync]] landed.
    assert_eq!(
        ok(&sim, &["vm", "ssh", "q", "--", "cat", "/root/synced.txt"]).stdout,
        "synced from the host\n"
    );

    // The agent, over virtio-vsock, reports a listener started in the guest.
    ok(
        &sim,
        &[
            "vm",
            "ssh",
            "q",
            "--",
            "systemd-run",
            "--unit",
            "porttest",
            "git",
            "daemon",
            "--port=8765",
            "--base-path=/root",
        ],
    );
    let ports = step("vm ports lists the guest's listener", || {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let out = sim.banger(["vm", "ports", "q"]);
            if out.stdout.contains(":8765") || Instant::now() > deadline {
                break out;
            }
            std::thread::sleep(Duration::from_millis(500));
        }
    });
    if !ports.stdout.contains(":8765") {
        let guest = sim.banger([
            "vm",
            "ssh",
            "q",
            "--",
            "sh",
            "-c",
            "systemctl status porttest --no-pager; ss -ltnp",
        ]);
        panic!("vm ports never listed :8765:\n{ports}\n--- in the guest ---\n{guest}");
    }
    let ports = ports.stdout;
    // `q.vm:8765` where the host resolves .vm names, the guest's address
    // where it does not (as on CI machines).
    let line = ports
        .lines()
        .find(|line| line.contains(":8765"))
        .unwrap_or_default();
    assert!(
        line.contains("tcp q.vm:8765")
            || line.contains(&format!("tcp {}", sim.network().address_prefix())),
        "{ports}"
    );
    assert!(line.contains("git"), "{ports}");

    // Published on the host's loopback, the listener answers through the
    // forward: git daemon's own refusal of an unexported path.
    let out = ok(&sim, &["vm", "port-forward", "q", "18765:8765"]);
    assert_eq!(out.stdout, "127.0.0.1:18765 → q:8765\n", "{out}");
    let ports = ok(&sim, &["vm", "ports", "q"]).stdout;
    assert!(ports.contains("127.0.0.1:18765"), "{ports}");
    let answered = sim.exec("git", ["ls-remote", "git://127.0.0.1:18765/nothing"]);
    assert!(
        answered
            .stderr
            .contains("remote error: access denied or repository not exported"),
        "{answered}"
    );

    // NAT: the guest reaches a server on the host's side of the bridge.
    let outside = Outside::new(&sim, "hello-from-the-host-side");
    // (The image has no curl: bash speaks HTTP/1.0 over /dev/tcp.)
    let fetched = ok(
        &sim,
        &[
            "vm",
            "ssh",
            "q",
            "--",
            "timeout",
            "10",
            "bash",
            "-c",
            "exec 3<>/dev/tcp/10.200.0.2/8080 && printf 'GET /marker HTTP/1.0\\r\\n\\r\\n' >&3 && cat <&3",
        ],
    );
    assert!(
        fetched.stdout.starts_with("HTTP/1.0 200")
            && fetched.stdout.ends_with("hello-from-the-host-side"),
        "{fetched}"
    );
    drop(outside);

    // The console log holds the kernel's boot messages.
    let logs = ok(&sim, &["vm", "logs", "q"]).stdout;
    assert!(logs.contains(&format!("Linux version {release}")), "{logs}");
    assert!(logs.contains("Kernel command line:"), "{logs}");

    // Stop is a clean guest shutdown (Ctrl-Alt-Del), well inside the grace.
    let stop_started = Instant::now();
    assert_eq!(
        step("vm stop", || ok(&sim, &["vm", "stop", "q"]))
            .stdout
            .trim(),
        "q: stopped"
    );
    assert!(
        stop_started.elapsed() < Duration::from_secs(50),
        "the guest did not shut down on Ctrl-Alt-Del; it was killed after the grace"
    );
    let console =
        std::fs::read_to_string(Path::new(vm["dir"].as_str().unwrap()).join("console.log"))
            .unwrap();
    assert!(
        console.contains("systemd-shutdown") && console.contains("reboot: Restarting system"),
        "no clean shutdown in the console log:\n{}",
        console
            .lines()
            .rev()
            .take(30)
            .collect::<Vec<_>>()
            .join("\n")
    );
    assert!(qemu_pids(&sim).is_empty(), "QEMU still runs after stop");

    // Start again, reachable again.
    assert_eq!(
        step("vm start", || ok(&sim, &["vm", "start", "q"]))
            .stdout
            .trim(),
        "q: running"
    );
    assert_eq!(
        ok(&sim, &["vm", "ssh", "q", "--", "hostname"])
            .stdout
            .trim(),
        "q"
    );

    // kill -9 of QEMU: the VM is noticed in error (a crash, not a guest
    // shutdown) within seconds, and everything it held is released.
    let pids = qemu_pids(&sim);
    assert_eq!(pids.len(), 1, "one QEMU expected: {pids:?}");
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pids[0]),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    let killed = Instant::now();
    sim.wait_for("the VM to be noticed dead", Duration::from_secs(15), || {
        vm_json(&sim, "q")["state"] == "error"
    });
    let shown = ok(&sim, &["vm", "show", "q"]).stdout;
    assert!(shown.contains("exited unexpectedly"), "{shown}");
    let vmm_log =
        std::fs::read_to_string(Path::new(vm["dir"].as_str().unwrap()).join("vmm.log")).unwrap();
    assert!(vmm_log.contains("qemu exited (signal: 9"), "{vmm_log}");
    eprintln!("qemu e2e: death noticed after {:.1?}", killed.elapsed());
    sim.wait_for("its processes to go", Duration::from_secs(15), || {
        sim.vmm_processes().is_empty()
    });
    let links = sim.exec("ip", ["-br", "link"]).stdout;
    let network = sim.network();
    assert!(
        !links
            .lines()
            .filter_map(|l| l.split_whitespace().next())
            .any(|name| network.is_vm_tap(name)),
        "{links}"
    );

    ok(&sim, &["vm", "delete", "q"]);
    sim.assert_clean();
    eprintln!("qemu e2e: total {:.1?}", started.elapsed());
}
