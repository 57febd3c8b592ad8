//! End-to-end environments: a [`TestEnv`] whose daemon runs inside its own
//! network namespace with `vmm = "sim"` (or `"qemu"`), so bridges, TAPs, NAT rules and the
//! DNS port never touch the host or other tests. Dropping it stops the
//! daemon, kills any VMM left under its state dir, stops its helper and
//! deletes the namespace.
//!
//! As root by default; with `BANGER_E2E_USER` set, as that user through a
//! `banger-helper` of the world's own (see [`crate::user`]).

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::Duration;

use crate::env::{Output, TestEnv, process_alive, run};
use crate::user::{E2eUser, WorldNetwork};

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
    user: Option<E2eUser>,
    helper: Option<HelperProcess>,
}

/// The world's `banger-helper serve`, as root in the world's namespace,
/// on a socket in a root-owned directory of its own (outside the world,
/// which is the user's).
#[derive(Debug)]
struct HelperProcess {
    dir: tempfile::TempDir,
    child: Mutex<Option<Child>>,
}

impl HelperProcess {
    fn socket(&self) -> PathBuf {
        self.dir.path().join("helper.sock")
    }

    fn log(&self) -> PathBuf {
        self.dir.path().join("helper.log")
    }
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
        // Resolved first: a missing user fails before anything exists.
        let user = E2eUser::from_env();
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
        let helper = user.as_ref().map(|_| {
            let dir = tempfile::Builder::new()
                .prefix("bh")
                .tempdir_in("/tmp")
                .expect("helper dir");
            std::fs::set_permissions(
                dir.path(),
                std::os::unix::fs::PermissionsExt::from_mode(0o755),
            )
            .expect("helper dir mode");
            HelperProcess {
                dir,
                child: Mutex::new(None),
            }
        });
        let sim = Self {
            env,
            netns,
            user,
            helper,
        };
        sim.exec("ip", ["link", "set", "lo", "up"]).assert_success();
        if let Some(user) = &sim.user {
            user.give(sim.env.root());
            sim.start_helper();
        }
        // An explicit [network] table keeps the default DNS port, which is
        // private to this namespace.
        let network = if extra_config.contains("[network]") {
            ""
        } else {
            "\n[network]\n"
        };
        sim.write_config(&format!("{settings}{extra_config}{network}"));
        sim
    }

    /// The user this world runs as, `None` for root.
    pub fn user(&self) -> Option<&E2eUser> {
        self.user.as_ref()
    }

    /// The uid this world's daemon runs as.
    pub fn uid(&self) -> u32 {
        self.user.as_ref().map_or(0, |user| user.uid)
    }

    /// Bridge, subnet, DNS port and pool names of this world's daemon.
    pub fn network(&self) -> WorldNetwork {
        WorldNetwork::for_uid(self.uid())
    }

    /// Writes `config.toml` as [`TestEnv::write_config`] does; for a user,
    /// it also names the world's helper and is the user's file.
    pub fn write_config(&self, toml: &str) {
        match &self.helper {
            None => self.env.write_config(toml),
            Some(helper) => {
                let socket = helper.socket();
                self.env
                    .write_config(&format!("helper_socket = \"{}\"\n{toml}", socket.display()));
                self.give(&self.layout().config_dir);
            }
        }
    }

    /// Gives `path` (and everything under it) to the world's user, so
    /// what a test made as root can be read and changed by banger running
    /// as that user. Nothing to do for root.
    pub fn give(&self, path: &Path) {
        if let Some(user) = &self.user {
            user.give(path);
        }
    }

    /// The world's helper socket (user worlds only).
    pub fn helper_socket(&self) -> Option<PathBuf> {
        self.helper.as_ref().map(HelperProcess::socket)
    }

    /// The pid of the world's running helper (user worlds only).
    pub fn helper_pid(&self) -> Option<i32> {
        let helper = self.helper.as_ref()?;
        let mut child = helper.child.lock().unwrap();
        let running = child.as_mut()?;
        match running.try_wait() {
            Ok(None) => Some(running.id() as i32),
            _ => None,
        }
    }

    /// Starts the world's helper (`banger-helper serve`, as root, in the
    /// world's network namespace) and waits for its socket. Panics for a root world.
    pub fn start_helper(&self) {
        let helper = self.helper.as_ref().expect("a user world has a helper");
        let user = self.user.as_ref().expect("a user world has a user");
        let mut slot = helper.child.lock().unwrap();
        assert!(slot.is_none(), "the helper already runs");
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(helper.log())
            .expect("helper log");
        // Only the network namespace is the world's: the helper shares the
        // host's mount namespace, as an installed one does, so it sees
        // what is mounted after it started (`ip netns exec` would give it
        // a mount namespace of its own).
        let mut command = Command::new("nsenter");
        command
            .arg(format!("--net=/run/netns/{}", self.netns))
            .arg("--")
            .arg(crate::env::binary("banger-helper"));
        self.world_env(&mut command);
        command
            .args(["serve", "--socket"])
            .arg(helper.socket())
            .args(["--group", &user.helper_group])
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("helper log"))
            .stderr(log);
        if std::env::var_os("BANGER_HELPER_LOG").is_none() {
            command.env("BANGER_HELPER_LOG", "debug");
        }
        let mut child = command.spawn().expect("starting banger-helper");
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        let socket = helper.socket();
        loop {
            if let Ok(Some(status)) = child.try_wait() {
                panic!(
                    "banger-helper exited ({status}) before serving:\n{}",
                    std::fs::read_to_string(helper.log()).unwrap_or_default()
                );
            }
            if std::os::unix::net::UnixStream::connect(&socket).is_ok() {
                break;
            }
            if std::time::Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "banger-helper did not serve {} within 20 s:\n{}",
                    socket.display(),
                    std::fs::read_to_string(helper.log()).unwrap_or_default()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        *slot = Some(child);
    }

    /// Kills the world's helper with SIGKILL (as a crash would) and reaps
    /// it. Nothing to do when it does not run.
    pub fn kill_helper(&self) {
        self.stop_helper(nix::sys::signal::Signal::SIGKILL);
    }

    /// Stops the helper with `signal`, then SIGKILL if it lingers.
    fn stop_helper(&self, signal: nix::sys::signal::Signal) {
        let Some(helper) = &self.helper else { return };
        let Some(mut child) = helper.child.lock().unwrap().take() else {
            return;
        };
        let pid = nix::unistd::Pid::from_raw(child.id() as i32);
        let _ = nix::sys::signal::kill(pid, signal);
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while matches!(child.try_wait(), Ok(None)) && std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = child.kill();
        let _ = child.wait();
    }

    pub fn layout(&self) -> &banger_model::layout::Layout {
        &self.env.layout
    }

    /// Runs `banger ARGS` inside the namespace, as the world's user.
    pub fn banger<I, S>(&self, args: I) -> Output
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let mut command = self.banger_command();
        command.args(args);
        run(command)
    }

    /// A `banger` command (arguments still to add) that runs inside the
    /// namespace as the world's user; its pid is banger's.
    pub fn banger_command(&self) -> Command {
        self.user_command(crate::env::binary("banger"))
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

    /// Any program inside the namespace as the world's user (root for a
    /// root world), with this world's environment.
    pub fn exec_as_user<I, S>(&self, program: impl AsRef<OsStr>, args: I) -> Output
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let mut command = self.user_command(program);
        command.args(args);
        run(command)
    }

    /// A command that runs `program` in the namespace as the world's user
    /// (`ip netns exec` needs root; `setpriv` then becomes the user and
    /// execs the program, so the child's pid is the program's).
    pub fn user_command(&self, program: impl AsRef<OsStr>) -> Command {
        let Some(user) = &self.user else {
            return self.in_netns(program);
        };
        user.setpriv(self.in_netns("setpriv"), program)
    }

    /// A command for `program` on the host side (outside the namespace)
    /// acting for the world's user: for a user world it runs as that user
    /// with the world's environment (git and ssh-keygen over the user's
    /// files); for a root world it is a plain `Command::new(program)`.
    pub fn host_command(&self, program: impl AsRef<OsStr>) -> Command {
        let Some(user) = &self.user else {
            return Command::new(program);
        };
        let mut command = user.command(program);
        command.env_clear();
        if let Some(path) = std::env::var_os("PATH") {
            command.env("PATH", path);
        }
        command.env("USER", &user.name).env("LOGNAME", &user.name);
        for (key, value) in self.env.vars() {
            command.env(key, value);
        }
        command
    }

    /// A command that runs `program` in the namespace, as root.
    pub fn in_netns(&self, program: impl AsRef<OsStr>) -> Command {
        let mut command = Command::new("ip");
        command.args(["netns", "exec", &self.netns]).arg(program);
        self.world_env(&mut command);
        command
    }

    /// Clears `command`'s environment but for what banger's programs need
    /// and the variables that point them at this world.
    fn world_env(&self, command: &mut Command) {
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
    }

    /// The Debian fixture as this world's user can read it: the fixture
    /// for root, the user's own copy of it otherwise.
    pub fn fixture_rootfs(&self) -> PathBuf {
        self.readable(&fixture_rootfs())
    }

    /// `tree` (a root-owned fixture), or for a user world that user's
    /// copy of it ([`E2eUser::copy_of`]).
    pub fn readable(&self, tree: &Path) -> PathBuf {
        match &self.user {
            None => tree.to_owned(),
            Some(user) => user.copy_of(tree),
        }
    }

    /// Imports the Debian fixture as image `debian` (the default image).
    pub fn import_fixture(&self) {
        let rootfs = self.fixture_rootfs();
        self.ok([
            "image",
            "import",
            &rootfs.to_string_lossy(),
            "--name",
            "debian",
        ]);
    }

    /// `dig @127.0.0.1 -p PORT NAME A +short` inside the namespace, PORT
    /// being the world's DNS port.
    pub fn dig(&self, name: &str) -> String {
        let port = self.network().dns_port.to_string();
        let out = self.exec(
            "dig",
            [
                "@127.0.0.1",
                "-p",
                &port,
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
        if let Some(helper) = &self.helper {
            section(
                "helper log (tail)",
                tail(
                    &std::fs::read_to_string(helper.log()).unwrap_or_default(),
                    40,
                ),
            );
        }
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
        let network = self.network();
        let stray_links: Vec<&str> = links
            .lines()
            .filter_map(|line| line.split_whitespace().next())
            .map(|name| name.split('@').next().unwrap_or(name))
            .filter(|name| network.is_vm_tap(name) || name.starts_with("bsv"))
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
        self.stop_helper(nix::sys::signal::Signal::SIGTERM);
        let _ = run({
            let mut command = Command::new("ip");
            command.args(["netns", "del", &self.netns]);
            command
        });
    }
}
