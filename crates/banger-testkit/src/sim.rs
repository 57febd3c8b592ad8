//! End-to-end environments: a [`TestEnv`] whose daemon runs inside its own
//! network namespace with `vmm = "sim"` (or `"qemu"`), so bridges, TAPs, NAT rules and the
//! DNS port never touch the host or other tests. Dropping it stops the
//! daemon, kills any VMM left under its state dir and deletes the namespace.

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use crate::env::{Output, TestEnv, process_alive, run};

/// Where `tests/fixtures/debian-rootfs.sh` leaves the Debian test rootfs.
pub fn fixture_rootfs() -> PathBuf {
    if let Some(path) = std::env::var_os("BANGER_TEST_ROOTFS") {
        return PathBuf::from(path);
    }
    repo_root().join(".cache/fixtures/debian-bookworm/rootfs")
}

pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// Whether end-to-end tests can run here; prints why not when they cannot.
/// Missing root skips (developer machines); a missing fixture when running
/// as root fails loudly, so CI never silently skips.
#[track_caller]
pub fn e2e_ready() -> bool {
    let test = std::thread::current()
        .name()
        .unwrap_or("an end-to-end test")
        .to_owned();
    if !crate::skip::root_or_skip(&test, "network namespaces, mounts, loop devices") {
        return false;
    }
    if std::env::var_os("BANGER_SKIP_E2E").is_some() {
        crate::skip::skip(
            &test,
            "BANGER_SKIP_E2E is set",
            crate::skip::Prerequisite::NotInCi,
        );
        return false;
    }
    let rootfs = fixture_rootfs();
    assert!(
        rootfs.join("etc/os-release").is_file(),
        "the Debian fixture is missing at {}; build it with `tests/fixtures/debian-rootfs.sh .cache/fixtures/debian-bookworm` (or run `make test`)",
        rootfs.display()
    );
    true
}

/// A banger world whose daemon lives in a private network namespace.
#[derive(Debug)]
pub struct SimEnv {
    pub env: TestEnv,
    pub netns: String,
}

impl SimEnv {
    /// A fresh world with `vmm = "sim"` and `extra_config` appended.
    pub fn new(extra_config: &str) -> Self {
        Self::with_settings(
            "vmm = \"sim\"\nboot_timeout_seconds = 60\nstop_grace_seconds = 5\n",
            extra_config,
        )
    }

    /// A fresh world with `vmm = "qemu"` (real guest kernels, slow under
    /// software emulation: generous boot and stop limits) and
    /// `extra_config` appended.
    pub fn qemu(extra_config: &str) -> Self {
        Self::with_settings(
            "vmm = \"qemu\"\nboot_timeout_seconds = 300\nstop_grace_seconds = 60\n",
            extra_config,
        )
    }

    fn with_settings(settings: &str, extra_config: &str) -> Self {
        let env = TestEnv::new();
        let netns = format!(
            "bt-{}",
            &env.root().file_name().unwrap().to_string_lossy()[2..]
        );
        let out = run({
            let mut command = Command::new("ip");
            command.args(["netns", "add", &netns]);
            command
        });
        out.assert_success();
        let sim = Self { env, netns };
        sim.exec("ip", ["link", "set", "lo", "up"]).assert_success();
        // An explicit [network] table keeps the default DNS port, which is
        // private to this namespace.
        let network = if extra_config.contains("[network]") {
            ""
        } else {
            "\n[network]\n"
        };
        sim.env
            .write_config(&format!("{settings}{extra_config}{network}"));
        sim
    }

    pub fn layout(&self) -> &banger_model::layout::Layout {
        &self.env.layout
    }

    /// Runs `banger ARGS` inside the namespace.
    pub fn banger<I, S>(&self, args: I) -> Output
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let mut command = self.in_netns(crate::env::binary("banger"));
        command.args(args);
        run(command)
    }

    /// Like [`SimEnv::banger`], panicking with diagnostics on failure.
    #[track_caller]
    pub fn ok<I, S>(&self, args: I) -> Output
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let out = self.banger(args);
        if !out.success() {
            panic!("command failed:\n{out}\n{}", self.diagnostics());
        }
        out
    }

    /// Any program inside the namespace, with this world's environment.
    pub fn exec<I, S>(&self, program: impl AsRef<OsStr>, args: I) -> Output
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let mut command = self.in_netns(program);
        command.args(args);
        run(command)
    }

    /// A command that runs `program` in the namespace.
    pub fn in_netns(&self, program: impl AsRef<OsStr>) -> Command {
        let mut command = Command::new("ip");
        command.args(["netns", "exec", &self.netns]).arg(program);
        command.env_clear();
        for key in [
            "PATH",
            "BANGER_LOG",
            "RUST_BACKTRACE",
            "BANGER_SIMVM_VSOCK_LOG",
        ] {
            if let Some(value) = std::env::var_os(key) {
                command.env(key, value);
            }
        }
        command.env("NO_COLOR", "1");
        for (key, value) in self.env.vars() {
            command.env(key, value);
        }
        command
    }

    /// Imports the Debian fixture as image `debian` (the default image).
    pub fn import_fixture(&self) {
        let rootfs = fixture_rootfs();
        self.ok([
            "image",
            "import",
            &rootfs.to_string_lossy(),
            "--name",
            "debian",
        ]);
    }

    /// `dig @127.0.0.1 -p 42069 NAME A +short` inside the namespace.
    pub fn dig(&self, name: &str) -> String {
        let out = self.exec(
            "dig",
            [
                "@127.0.0.1",
                "-p",
                "42069",
                "+short",
                "+time=2",
                "+tries=2",
                name,
                "A",
            ],
        );
        out.stdout.trim().to_owned()
    }

    /// What a human needs to debug a failure.
    pub fn diagnostics(&self) -> String {
        let mut text = String::new();
        let mut section = |title: &str, body: String| {
            text.push_str(&format!("--- {title} ---\n{body}\n"));
        };
        section("daemon log (tail)", tail(&self.env.daemon_log(), 60));
        section("ip -d link", self.exec("ip", ["-d", "-br", "link"]).stdout);
        section("iptables-save", self.exec("iptables-save", [""; 0]).stdout);
        section("loop devices", run(Command::new("losetup")).stdout);
        let root = self.env.root().display().to_string();
        let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
        section(
            "mounts under the test dir",
            mounts
                .lines()
                .filter(|l| l.contains(&root))
                .collect::<Vec<_>>()
                .join("\n"),
        );
        for vm_dir in std::fs::read_dir(self.layout().vms_dir())
            .into_iter()
            .flatten()
            .flatten()
        {
            let console =
                std::fs::read_to_string(vm_dir.path().join("console.log")).unwrap_or_default();
            section(
                &format!("console of {}", vm_dir.file_name().to_string_lossy()),
                tail(&console, 30),
            );
            let vmm_log =
                std::fs::read_to_string(vm_dir.path().join("vmm.log")).unwrap_or_default();
            section(
                &format!("vmm log of {}", vm_dir.file_name().to_string_lossy()),
                tail(&vmm_log, 40),
            );
        }
        text
    }

    /// Asserts the host holds nothing of this world's VMs: no VM TAPs or
    /// veths, no tagged NAT rules, no loop devices or mounts over its files,
    /// no VMM processes. The kernel frees a dead guest's namespaces, veths
    /// and autoclear loop devices asynchronously, so this waits (bounded)
    /// before calling anything a leak.
    #[track_caller]
    pub fn assert_clean(&self) {
        let deadline = std::time::Instant::now() + Duration::from_secs(15);
        while self.leaks().is_some() && std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(100));
        }
        if let Some(leaks) = self.leaks() {
            panic!("host resources leaked:\n{leaks}\n{}", self.diagnostics());
        }
    }

    /// A description of what this world still holds on the host, if anything.
    pub fn leaks(&self) -> Option<String> {
        let links = self.exec("ip", ["-br", "link"]).stdout;
        let stray_links: Vec<&str> = links
            .lines()
            .filter_map(|line| line.split_whitespace().next())
            .filter(|name| {
                (name.starts_with("btap-") && !name.starts_with("btap-pool-"))
                    || name.starts_with("bsv")
            })
            .collect();
        let rules = self.exec("iptables-save", [""; 0]).stdout;
        let stray_rules: Vec<&str> = rules
            .lines()
            .filter(|line| line.contains("banger:"))
            .collect();
        let root = self.env.root().display().to_string();
        let loops = run({
            let mut command = Command::new("losetup");
            command.args(["-a"]);
            command
        })
        .stdout;
        let stray_loops: Vec<&str> = loops.lines().filter(|line| line.contains(&root)).collect();
        let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
        let stray_mounts: Vec<&str> = mounts.lines().filter(|line| line.contains(&root)).collect();
        let processes = self.vmm_processes();
        let clean = stray_links.is_empty()
            && stray_rules.is_empty()
            && stray_loops.is_empty()
            && stray_mounts.is_empty()
            && processes.is_empty();
        (!clean).then(|| {
            format!(
                "links: {stray_links:?}\nrules: {stray_rules:?}\nloops: {stray_loops:?}\nmounts: {stray_mounts:?}\nprocesses: {processes:?}"
            )
        })
    }

    /// Pids of processes whose command line mentions this world's state
    /// dir (VMMs started for it).
    pub fn vmm_processes(&self) -> Vec<i32> {
        let needle = self.layout().vms_dir().display().to_string();
        let mut pids = Vec::new();
        for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
            let Ok(pid) = entry.file_name().to_string_lossy().parse::<i32>() else {
                continue;
            };
            let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) else {
                continue;
            };
            if String::from_utf8_lossy(&cmdline).contains(&needle) && process_alive(pid) {
                pids.push(pid);
            }
        }
        pids
    }

    /// Waits (bounded) for `condition`, panicking with diagnostics.
    #[track_caller]
    pub fn wait_for(&self, what: &str, timeout: Duration, mut condition: impl FnMut() -> bool) {
        let deadline = std::time::Instant::now() + timeout;
        while !condition() {
            if std::time::Instant::now() > deadline {
                panic!(
                    "timed out after {timeout:?} waiting for {what}\n{}",
                    self.diagnostics()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

impl Drop for SimEnv {
    fn drop(&mut self) {
        self.env.stop_daemon();
        for pid in self.vmm_processes() {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while !self.vmm_processes().is_empty() && std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = run({
            let mut command = Command::new("ip");
            command.args(["netns", "del", &self.netns]);
            command
        });
    }
}
