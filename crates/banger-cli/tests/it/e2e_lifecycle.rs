//! The whole VM lifecycle through the real CLI, daemon and banger-simvm,
//! each test in its own network namespace. Run as root (`make test`).

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use banger_testkit::{SimEnv, e2e_ready};
use serde_json::Value;

fn vm_json(sim: &SimEnv, name: &str) -> Value {
    let out = sim.ok(["vm", "show", name, "--json"]);
    serde_json::from_str(&out.stdout).unwrap()
}

fn guest_ip(sim: &SimEnv, name: &str) -> String {
    vm_json(sim, name)["network"]["ip"]
        .as_str()
        .unwrap()
        .to_owned()
}

/// A second namespace playing "the internet": reachable from the test
/// namespace over a veth, with no route back to the guests' subnet, so only
/// NATed guests can talk to its HTTP server at 10.200.0.2:8080.
pub(crate) struct Outside {
    netns: String,
    server: Child,
}

impl Outside {
    pub(crate) const URL: &str = "http://10.200.0.2:8080/marker";

    pub(crate) fn new(sim: &SimEnv, marker: &str) -> Self {
        let netns = format!("{}-out", sim.netns);
        let run = |args: &[&str]| {
            let out = Command::new(args[0]).args(&args[1..]).output().unwrap();
            assert!(
                out.status.success(),
                "{args:?}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        };
        run(&["ip", "netns", "add", &netns]);
        run(&[
            "ip", "-n", &sim.netns, "link", "add", "bt-out", "type", "veth", "peer", "name",
            "eth0", "netns", &netns,
        ]);
        run(&[
            "ip",
            "-n",
            &sim.netns,
            "addr",
            "add",
            "10.200.0.1/24",
            "dev",
            "bt-out",
        ]);
        run(&["ip", "-n", &sim.netns, "link", "set", "bt-out", "up"]);
        run(&[
            "ip",
            "-n",
            &netns,
            "addr",
            "add",
            "10.200.0.2/24",
            "dev",
            "eth0",
        ]);
        run(&["ip", "-n", &netns, "link", "set", "eth0", "up"]);
        run(&["ip", "-n", &netns, "link", "set", "lo", "up"]);
        let webroot = sim.env.root().join("webroot");
        std::fs::create_dir_all(&webroot).unwrap();
        std::fs::write(webroot.join("marker"), marker).unwrap();
        let server = Command::new("ip")
            .args([
                "netns",
                "exec",
                &netns,
                "python3",
                "-m",
                "http.server",
                "8080",
                "--bind",
                "10.200.0.2",
            ])
            .current_dir(&webroot)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let outside = Self { netns, server };
        sim.wait_for("the outside HTTP server", Duration::from_secs(10), || {
            Command::new("ip")
                .args([
                    "netns",
                    "exec",
                    &outside.netns,
                    "curl",
                    "-sf",
                    "--max-time",
                    "1",
                    Self::URL,
                ])
                .output()
                .is_ok_and(|out| out.status.success())
        });
        outside
    }
}

impl Drop for Outside {
    fn drop(&mut self) {
        let _ = self.server.kill();
        let _ = self.server.wait();
        let _ = Command::new("ip")
            .args(["netns", "del", &self.netns])
            .status();
    }
}

#[test]
fn create_ssh_dns_nat_stop_start_delete_leaves_nothing() {
    if !e2e_ready() {
        return;
    }
    let sim = SimEnv::new("");
    sim.import_fixture();
    let outside = Outside::new(&sim, "hello-from-outside");

    // NAT is the default; the spec line says so.
    let out = sim.ok(["vm", "create", "--name", "web"]);
    assert_eq!(out.stdout, "web\n");
    assert!(out.stderr.starts_with("spec: "), "{out}");
    assert!(
        out.stderr.lines().next().unwrap().ends_with(" · NAT"),
        "{out}"
    );
    for stage in [
        "prepare_disks",
        "start_vmm",
        "wait_vsock_agent",
        "wait_ssh",
        "ready",
    ] {
        assert!(out.stderr.contains(stage), "stage {stage} missing:\n{out}");
    }

    // Reached by name over SSH, named in DNS.
    assert_eq!(
        sim.ok(["vm", "ssh", "web", "--", "hostname"]).stdout.trim(),
        "web"
    );
    let ip = guest_ip(&sim, "web");
    assert_eq!(sim.dig("web.vm"), ip);
    assert_eq!(sim.dig("nobody.vm"), "");
    // The remote exit code is banger's.
    sim.banger(["vm", "ssh", "web", "--", "sh", "-c", "exit 7"])
        .assert_code(7);

    // NAT: the guest reaches a server outside; a guest without NAT cannot.
    let fetched = sim.ok([
        "vm",
        "ssh",
        "web",
        "--",
        "curl",
        "-sf",
        "--max-time",
        "5",
        Outside::URL,
    ]);
    assert_eq!(fetched.stdout, "hello-from-outside");
    let out = sim.ok(["vm", "create", "--name", "plain", "--no-nat"]);
    assert!(
        out.stderr.lines().next().unwrap().ends_with(" · no NAT"),
        "{out}"
    );
    let blocked = sim.banger([
        "vm",
        "ssh",
        "plain",
        "--",
        "curl",
        "-sf",
        "--max-time",
        "3",
        Outside::URL,
    ]);
    assert_ne!(
        blocked.code,
        Some(0),
        "a VM with --no-nat reached the outside:\n{blocked}"
    );

    // Inspection.
    assert!(sim.ok(["vm", "health", "web"]).stdout.contains("healthy"));
    let stats: Value =
        serde_json::from_str(&sim.ok(["vm", "stats", "web", "--json"]).stdout).unwrap();
    assert!(stats["rss_bytes"].as_u64().unwrap() > 0, "{stats}");
    let logs = sim.ok(["vm", "logs", "web"]);
    assert!(
        logs.stdout.contains("banger-first-boot"),
        "console log lacks first-boot output:\n{logs}"
    );

    // Stop: unreachable, out of DNS, TAP and NAT rules gone.
    assert_eq!(sim.ok(["vm", "stop", "web"]).stdout.trim(), "web: stopped");
    assert_eq!(vm_json(&sim, "web")["state"], "stopped");
    assert_eq!(sim.dig("web.vm"), "");
    let refused = sim.banger(["vm", "ssh", "web", "--", "true"]);
    assert!(
        refused
            .stderr
            .contains("start it with `banger vm start web`"),
        "{refused}"
    );
    let rules = sim.exec("iptables-save", [""; 0]).stdout;
    assert!(
        !rules.contains("banger:"),
        "NAT rules left after stop:\n{rules}"
    );

    // Start again: same address, reachable, NAT back.
    assert_eq!(sim.ok(["vm", "start", "web"]).stdout.trim(), "web: running");
    assert_eq!(guest_ip(&sim, "web"), ip);
    assert_eq!(
        sim.ok(["vm", "ssh", "web", "--", "hostname"]).stdout.trim(),
        "web"
    );
    assert_eq!(sim.dig("web.vm"), ip);
    assert!(
        sim.exec("iptables-save", [""; 0])
            .stdout
            .contains("banger:")
    );

    // Restart and kill.
    assert_eq!(
        sim.ok(["vm", "restart", "web"]).stdout.trim(),
        "web: running"
    );
    sim.ok(["vm", "ssh", "web", "--", "true"]);
    assert_eq!(sim.ok(["vm", "kill", "web"]).stdout.trim(), "web: stopped");

    // Delete both at once; nothing is left on the host.
    let out = sim.ok(["vm", "delete", "web", "plain"]);
    assert_eq!(out.stdout, "web: deleted\nplain: deleted\n");
    assert_eq!(sim.ok(["vm", "list", "--json"]).stdout.trim(), "[]");
    assert!(
        std::fs::read_dir(sim.layout().vms_dir())
            .unwrap()
            .next()
            .is_none()
    );
    drop(outside);
    sim.assert_clean();
}

#[test]
fn ten_vms_created_concurrently_then_deleted_concurrently() {
    if !e2e_ready() {
        return;
    }
    let sim = SimEnv::new("");
    sim.import_fixture();
    let names: Vec<String> = (0..10).map(|i| format!("vm{i}")).collect();
    let children: Vec<Child> = names
        .iter()
        .map(|name| {
            let mut command = sim.banger_command();
            command
                .args(["vm", "create", "--name", name])
                .stdout(Stdio::piped())
                .stderr(Stdio::piped());
            command.spawn().unwrap()
        })
        .collect();
    for (name, child) in names.iter().zip(children) {
        let out = child.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "creating {name} failed: {}\n{}",
            String::from_utf8_lossy(&out.stderr),
            sim.diagnostics()
        );
    }
    let vms: Vec<Value> = serde_json::from_str(&sim.ok(["vm", "list", "--json"]).stdout).unwrap();
    assert_eq!(vms.len(), 10);
    let mut ips: Vec<&str> = vms
        .iter()
        .map(|vm| vm["network"]["ip"].as_str().unwrap())
        .collect();
    ips.sort_unstable();
    ips.dedup();
    assert_eq!(ips.len(), 10, "addresses were handed out twice");
    for name in &names {
        assert_eq!(
            sim.ok(["vm", "ssh", name, "--", "hostname"]).stdout.trim(),
            name
        );
    }

    let mut args = vec!["vm", "delete"];
    args.extend(names.iter().map(String::as_str));
    let out = sim.ok(&args);
    assert_eq!(out.stdout.lines().count(), 10, "{out}");
    assert_eq!(sim.ok(["vm", "list", "--json"]).stdout.trim(), "[]");
    sim.assert_clean();
}

#[test]
fn a_daemon_killed_during_create_leaves_nothing_after_restart() {
    if !e2e_ready() {
        return;
    }
    let sim = SimEnv::new("");
    sim.import_fixture();
    sim.ok(["vm", "create", "--name", "survivor"]);
    // Kill the daemon at different points of a create: before and after
    // the VMM was launched (a create stays `creating` until ready).
    for (round, ready) in [has_dir as fn(&SimEnv, &str) -> bool, has_vmm]
        .iter()
        .enumerate()
    {
        let name = format!("victim{round}");
        let mut command = sim.banger_command();
        command
            .args(["vm", "create", "--name", &name])
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        let mut child = command.spawn().unwrap();
        let store = sim.layout().database();
        sim.wait_for(
            &format!("{name} to reach round {round}'s kill point"),
            Duration::from_secs(30),
            || vm_state_in_db(&store, &name).as_deref() == Some("creating") && ready(&sim, &name),
        );
        let pid = sim.env.daemon_pid().expect("daemon running");
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid),
            nix::sys::signal::Signal::SIGKILL,
        )
        .unwrap();
        let _ = child.wait();
        // The next command starts a daemon, which reconciles.
        let vms: Vec<Value> =
            serde_json::from_str(&sim.ok(["vm", "list", "--json"]).stdout).unwrap();
        let names: Vec<&str> = vms.iter().map(|vm| vm["name"].as_str().unwrap()).collect();
        assert_eq!(names, ["survivor"], "round {round}:\n{}", sim.diagnostics());
        assert_eq!(vms[0]["state"], "running");
    }
    // The survivor was re-adopted and still works.
    assert_eq!(
        sim.ok(["vm", "ssh", "survivor", "--", "hostname"])
            .stdout
            .trim(),
        "survivor"
    );
    sim.ok(["vm", "delete", "survivor"]);
    sim.assert_clean();
}

/// SIGKILL of the daemon at random points of `vm delete`: afterwards each
/// victim is either gone or intact and usable — never listed with its
/// disks gone — and nothing is left on the host.
#[test]
fn a_daemon_killed_during_delete_never_leaves_a_broken_vm() {
    if !e2e_ready() {
        return;
    }
    let sim = SimEnv::new("");
    sim.import_fixture();
    let store = sim.layout().database();
    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    let rounds = 8;
    let (mut mid_delete, mut before, mut after) = (0, 0, 0);
    let mut delays = Vec::new();
    for round in 0..rounds {
        let name = format!("victim{round}");
        sim.ok(["vm", "create", "--name", &name]);
        // Spread over the delete (about 0.1 s here), varied per run.
        let delay = u64::from(seed.wrapping_mul(round + 1) % 120);
        delays.push(delay);
        let mut command = sim.banger_command();
        command
            .args(["vm", "delete", &name])
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        let mut child = command.spawn().unwrap();
        std::thread::sleep(Duration::from_millis(delay));
        let Some(pid) = sim.env.daemon_pid() else {
            panic!("round {round}: no daemon running\n{}", sim.diagnostics());
        };
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid),
            nix::sys::signal::Signal::SIGKILL,
        )
        .unwrap();
        let _ = child.wait();
        match vm_state_in_db(&store, &name).as_deref() {
            Some("deleting") => mid_delete += 1,
            Some("running") => before += 1,
            None => after += 1,
            Some(other) => panic!(
                "round {round} ({delay} ms): the VM was left {other}\n{}",
                sim.diagnostics()
            ),
        }
        // The next command starts a daemon, which reconciles.
        let vms: Vec<Value> =
            serde_json::from_str(&sim.ok(["vm", "list", "--json"]).stdout).unwrap();
        match vms.as_slice() {
            [] => {}
            [vm] => {
                assert_eq!(vm["name"], name.as_str());
                assert_eq!(vm["state"], "running", "round {round} ({delay} ms)");
                let hostname = sim.ok(["vm", "ssh", &name, "--", "hostname"]).stdout;
                assert_eq!(hostname.trim(), name);
                sim.ok(["vm", "delete", &name]);
            }
            more => panic!("round {round}: {more:?}"),
        }
    }
    println!(
        "SIGKILL during vm delete: {rounds} kills (delays {delays:?} ms): \
         {mid_delete} mid-delete finished by reconcile, {before} before it began, {after} after it ended"
    );
    sim.assert_clean();
}

/// The VM's directory exists (disks are being made).
fn has_dir(sim: &SimEnv, name: &str) -> bool {
    vm_id_in_db(&sim.layout().database(), name)
        .is_some_and(|id| sim.layout().vms_dir().join(id).is_dir())
}

/// The VM's VMM runs.
fn has_vmm(sim: &SimEnv, name: &str) -> bool {
    vm_id_in_db(&sim.layout().database(), name).is_some_and(|id| {
        sim.vmm_processes()
            .iter()
            .any(|pid| cmdline(*pid).contains(&id))
    })
}

fn cmdline(pid: i32) -> String {
    String::from_utf8_lossy(&std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default())
        .into_owned()
}

fn vm_id_in_db(db: &std::path::Path, name: &str) -> Option<String> {
    let conn = banger_store::open_connection(db).ok()?;
    conn.query_row("SELECT id FROM vms WHERE name = ?1", [name], |row| {
        row.get(0)
    })
    .ok()
}

/// Reads a VM's state straight from SQLite (the daemon may be busy).
fn vm_state_in_db(db: &std::path::Path, name: &str) -> Option<String> {
    let conn = banger_store::open_connection(db).ok()?;
    conn.query_row("SELECT state FROM vms WHERE name = ?1", [name], |row| {
        row.get(0)
    })
    .ok()
}

#[test]
fn bad_input_is_refused_and_creates_nothing() {
    if !e2e_ready() {
        return;
    }
    let sim = SimEnv::new("");
    let out = sim.banger(["vm", "create", "--name", "web"]);
    out.assert_code(1);
    assert!(out.stderr.contains("no default image"), "{out}");
    assert!(out.stderr.contains("hint:"), "{out}");
    sim.import_fixture();
    let cases: &[(&[&str], i32, &str)] = &[
        (&["vm", "create", "--name", "Web_1"], 2, "lowercase letters"),
        (&["vm", "create", "--name=-web"], 2, "must not start or end"),
        (&["vm", "create", "--vcpu", "0"], 2, "vcpu must be between"),
        (
            &["vm", "create", "--memory", "-512"],
            2,
            "memory must be at least",
        ),
        (
            &["vm", "create", "--disk-size", "0G"],
            2,
            "greater than zero",
        ),
        (
            &["vm", "create", "--disk-size", "1M"],
            2,
            "disk size must be at least",
        ),
        (&["vm", "create", "--image", "nope"], 1, "no image named"),
        (
            &["vm", "create", "--vmm", "firecracker"],
            1,
            "has no kernel",
        ),
        (&["vm", "set", "ghost", "--vcpu", "2"], 1, "no VM named"),
        (&["vm", "start", "ghost"], 1, "no VM named"),
    ];
    for (args, code, message) in cases {
        let out = sim.banger(*args);
        out.assert_code(*code);
        assert!(
            out.stderr.contains(message),
            "{args:?} should say {message:?}:\n{out}"
        );
    }
    // Duplicates: the first create wins, the second is refused.
    sim.ok(["vm", "create", "--name", "dup"]);
    let out = sim.banger(["vm", "create", "--name", "dup"]);
    out.assert_code(1);
    assert!(out.stderr.contains("already exists"), "{out}");
    // vm set refuses a shrinking disk; stopped VMs grow right away.
    sim.ok(["vm", "stop", "dup"]);
    // (test VMs get a 2G work disk: banger_testkit::env::TEST_DISK_SIZE)
    let out = sim.banger(["vm", "set", "dup", "--disk-size", "1G"]);
    out.assert_code(1);
    assert!(out.stderr.contains("only grows"), "{out}");
    let out = sim.ok(["vm", "set", "dup", "--disk-size", "3G", "--vcpu", "2"]);
    assert!(out.stdout.contains("2 vcpu"), "{out}");
    sim.ok(["vm", "start", "dup"]);
    let df = sim.ok([
        "vm",
        "ssh",
        "dup",
        "--",
        "df",
        "--output=size",
        "-B1G",
        "/root",
    ]);
    assert_eq!(
        df.stdout.lines().last().map(str::trim),
        Some("3"),
        "/root was not grown to 3G:\n{df}"
    );
    sim.ok(["vm", "delete", "dup"]);
    // Partial success: one valid ref proceeds, one missing fails the exit code.
    sim.ok(["vm", "create", "--name", "real"]);
    let out = sim.banger(["vm", "stop", "real", "ghost", "real"]);
    out.assert_code(1);
    assert_eq!(out.stdout, "real: stopped\n");
    assert!(out.stderr.contains("ghost: error: no VM named"), "{out}");
    sim.ok(["vm", "delete", "real"]);
    assert_eq!(sim.ok(["vm", "list", "--json"]).stdout.trim(), "[]");
    sim.assert_clean();
}

/// The Firecracker path (kernel required, `init=` for images without an
/// initrd, every API request) against banger-simvm standing in for the
/// `firecracker` binary: simvm checks each request as Firecracker v1.16 does.
#[test]
fn the_firecracker_path_is_driven_through_a_validating_stand_in() {
    if !e2e_ready() {
        return;
    }
    let simvm = banger_testkit::binary("banger-simvm");
    let sim = SimEnv::new(&format!("firecracker_bin = \"{}\"\n", simvm.display()));
    if sim.user().is_some() {
        // A user's daemon runs Firecracker as the user, so the stand-in
        // would run its sim guest as the user too: namespaces need root.
        banger_testkit::skip(
            "the_firecracker_path_is_driven_through_a_validating_stand_in (as a user)",
            "the stand-in boots sim guests, which need root; a user's Firecracker runs as the user",
            banger_testkit::Prerequisite::NotInCi,
        );
        return;
    }
    // Any ELF passes as a kernel for the stand-in (it does not boot it).
    let kernel_dir = sim.env.root().join("kernel");
    std::fs::create_dir_all(&kernel_dir).unwrap();
    std::fs::copy("/bin/true", kernel_dir.join("vmlinux")).unwrap();
    // A modules image as `kernel bootstrap` makes it comes along.
    let modules_tree = sim.env.root().join("modules-tree");
    std::fs::create_dir_all(&modules_tree).unwrap();
    std::fs::write(modules_tree.join("modules.dep"), "").unwrap();
    let modules = kernel_dir.join("modules.ext4");
    std::fs::File::create(&modules)
        .unwrap()
        .set_len(8 << 20)
        .unwrap();
    let mut mkfs = Command::new("mkfs.ext4");
    mkfs.args(["-q", "-F", "-L", "banger-modules", "-d"])
        .arg(&modules_tree)
        .arg(&modules);
    banger_testkit::env::run(mkfs).assert_success();
    let out = sim.ok([
        "kernel",
        "import",
        &kernel_dir.to_string_lossy(),
        "--name",
        "k1",
    ]);
    assert!(out.stderr.contains("kernel k1 imported"), "{out}");
    let rootfs = sim.fixture_rootfs();
    sim.ok([
        "image",
        "import",
        &rootfs.to_string_lossy(),
        "--name",
        "debian",
        "--kernel-ref",
        "k1",
    ]);
    let image: Value =
        serde_json::from_str(&sim.ok(["image", "show", "debian", "--json"]).stdout).unwrap();
    assert_eq!(image["kernel_name"], "k1");

    sim.ok(["vm", "create", "--name", "fc", "--vmm", "firecracker"]);
    let vm = vm_json(&sim, "fc");
    assert_eq!(vm["vmm"], "firecracker");
    assert_eq!(
        sim.ok(["vm", "ssh", "fc", "--", "hostname"]).stdout.trim(),
        "fc"
    );
    // The image has no initrd: banger put `init=` on the kernel command
    // line, and the stand-in ran the guest's init from it.
    let logs = sim.ok(["vm", "logs", "fc"]).stdout;
    assert!(
        logs.contains("running init= from the kernel command line")
            && logs.contains("/usr/local/libexec/banger-first-boot"),
        "{logs}"
    );
    // The kernel's modules went to the VMM as a third, read-only drive.
    let vmm_log =
        std::fs::read_to_string(std::path::Path::new(vm["dir"].as_str().unwrap()).join("vmm.log"))
            .unwrap();
    assert!(
        vmm_log.contains("path=/drives/modules"),
        "no modules drive was configured:\n{vmm_log}"
    );
    // A kernel in use cannot be removed.
    let out = sim.banger(["kernel", "rm", "k1"]);
    out.assert_code(1);
    assert!(out.stderr.contains("used by images: debian"), "{out}");
    sim.ok(["vm", "delete", "fc"]);
    sim.ok(["image", "delete", "debian"]);
    sim.ok(["kernel", "rm", "k1"]);
    sim.assert_clean();
}

#[test]
fn ctrl_c_during_create_rolls_back() {
    if !e2e_ready() {
        return;
    }
    // A rootfs with nothing but a shell: its guest never becomes ready, so
    // the create is still waiting when Ctrl-C arrives.
    let sim = SimEnv::new("");
    let rootfs = shell_only_rootfs(sim.env.root());
    sim.ok([
        "image",
        "import",
        &rootfs.to_string_lossy(),
        "--name",
        "bare",
    ]);
    let mut command = sim.banger_command();
    command
        .args(["vm", "create", "--name", "interrupted"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let child = command.spawn().unwrap();
    // `ip netns exec` enters the namespace and execs banger in place.
    let store = sim.layout().database();
    sim.wait_for("the VM's VMM to run", Duration::from_secs(30), || {
        vm_state_in_db(&store, "interrupted").is_some() && has_vmm(&sim, "interrupted")
    });
    let banger = nix::unistd::Pid::from_raw(child.id() as i32);
    nix::sys::signal::kill(banger, nix::sys::signal::Signal::SIGINT).unwrap();
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(130), "{stderr}");
    assert!(stderr.contains("rolled back"), "{stderr}");
    assert_eq!(sim.ok(["vm", "list", "--json"]).stdout.trim(), "[]");
    sim.assert_clean();
}

/// `vm run --rm` whose guest never answers within the boot timeout: the VM
/// keeps running (not stopped, not deleted) and banger says how to look and
/// how to delete it; deleting it then leaves nothing.
#[test]
fn a_run_whose_guest_never_answers_keeps_the_vm_running() {
    if !e2e_ready() {
        return;
    }
    let sim = SimEnv::new("");
    sim.write_config(
        "vmm = \"sim\"\nboot_timeout_seconds = 2\nstop_grace_seconds = 5\n\n[network]\n",
    );
    let rootfs = shell_only_rootfs(sim.env.root());
    sim.ok([
        "image",
        "import",
        &rootfs.to_string_lossy(),
        "--name",
        "bare",
    ]);
    let out = sim.banger(["vm", "run", "--rm", "--name", "slow", "--", "true"]);
    assert_eq!(out.code, Some(1), "{out}");
    for wanted in [
        "did not answer within the boot timeout",
        "not deleted despite --rm",
        "keeps running",
        "banger vm logs slow",
        "banger vm ssh slow",
        "banger vm delete slow",
    ] {
        assert!(out.stderr.contains(wanted), "{wanted} missing:\n{out}");
    }
    assert_eq!(vm_json(&sim, "slow")["state"], "running");
    assert!(has_vmm(&sim, "slow"), "the VMM was stopped");
    assert!(sim.ok(["vm", "logs", "slow"]).stdout.contains("banger"));
    sim.ok(["vm", "delete", "slow"]);
    sim.assert_clean();
}

/// `/bin/sh` (dash) and the libraries it needs, nothing else.
fn shell_only_rootfs(root: &std::path::Path) -> std::path::PathBuf {
    let rootfs = root.join("bare-rootfs");
    for dir in ["bin", "root", "etc", "tmp"] {
        std::fs::create_dir_all(rootfs.join(dir)).unwrap();
    }
    std::fs::copy("/bin/dash", rootfs.join("bin/sh")).unwrap();
    let ldd = Command::new("ldd").arg("/bin/dash").output().unwrap();
    for line in String::from_utf8_lossy(&ldd.stdout).lines() {
        let library = line.split_whitespace().find(|word| word.starts_with('/'));
        if let Some(library) = library {
            let target = rootfs.join(library.trim_start_matches('/'));
            std::fs::create_dir_all(target.parent().unwrap()).unwrap();
            std::fs::copy(library, target).unwrap();
        }
    }
    rootfs
}

/// `ssh_key_path` pointing at keys ssh would refuse: each is refused at
/// `vm create` with its fix, before anything exists.
#[test]
fn unusable_ssh_keys_are_refused_before_a_vm_exists() {
    if !e2e_ready() {
        return;
    }
    use std::os::unix::fs::PermissionsExt;
    let sim = SimEnv::new("ssh_key_path = \"~/.ssh/mine\"\n");
    sim.import_fixture();
    let key = sim.layout().home.join(".ssh/mine");
    std::fs::create_dir_all(key.parent().unwrap()).unwrap();
    sim.give(key.parent().unwrap());
    let keygen = |passphrase: &str| {
        let _ = std::fs::remove_file(&key);
        let _ = std::fs::remove_file(key.with_extension("pub"));
        let out = sim
            .host_command("ssh-keygen")
            .args(["-q", "-t", "ed25519", "-N", passphrase, "-f"])
            .arg(&key)
            .output()
            .unwrap();
        assert!(out.status.success());
    };
    let refused = |what: &str, message: &str, hint: &str| {
        let out = sim.banger(["vm", "create", "--name", "k"]);
        out.assert_code(1);
        assert!(out.stderr.contains(message), "{what}: {out}");
        assert!(out.stderr.contains(hint), "{what}: {out}");
        assert_eq!(
            sim.ok(["vm", "list", "--json"]).stdout.trim(),
            "[]",
            "{what}"
        );
    };
    refused("missing", "does not exist", "ssh-keygen -t ed25519");
    keygen("");
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).unwrap();
    refused("0644", "can be read by other users", "chmod 600");
    keygen("a passphrase");
    refused("passphrase", "has a passphrase", "ssh_key_path");
    keygen("");
    std::fs::write(&key, "").unwrap();
    refused("empty", "is not an SSH private key", "ssh_key_path");
    // A good key works end to end.
    keygen("");
    sim.ok(["vm", "create", "--name", "k"]);
    assert_eq!(
        sim.ok(["vm", "ssh", "k", "--", "hostname"]).stdout.trim(),
        "k"
    );
    sim.ok(["vm", "delete", "k"]);
    sim.assert_clean();
}
