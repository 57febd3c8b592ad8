//! An isolated banger environment for one test.

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use banger_model::layout::Layout;

/// Path of a workspace binary (`banger`, `bangerd`, …) built next to the
/// running test executable.
pub fn binary(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("test executable path");
    // target/<profile>/deps/<test>-<hash> → target/<profile>/<name>
    let profile_dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("target/<profile> directory");
    let path = profile_dir.join(name);
    assert!(
        path.is_file(),
        "{} is missing; build the workspace first (`cargo build --workspace` or run the suite with `cargo nextest run --workspace`)",
        path.display()
    );
    path
}

/// The captured result of a command.
#[derive(Debug)]
pub struct Output {
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
    pub command: String,
}

impl Output {
    pub fn success(&self) -> bool {
        self.code == Some(0)
    }

    /// Panics with everything needed to debug when the command failed.
    #[track_caller]
    pub fn assert_success(&self) -> &Self {
        assert!(self.success(), "command failed:\n{self}");
        self
    }

    #[track_caller]
    pub fn assert_code(&self, code: i32) -> &Self {
        assert_eq!(self.code, Some(code), "unexpected exit code:\n{self}");
        self
    }
}

impl std::fmt::Display for Output {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(f, "$ {}", self.command)?;
        writeln!(f, "exit: {:?}", self.code)?;
        writeln!(f, "--- stdout ---\n{}", self.stdout)?;
        write!(f, "--- stderr ---\n{}", self.stderr)
    }
}

/// The work disk size of test VMs unless a test asks for another. Create
/// refuses a VM whose disks the free space could not hold (disk honesty);
/// CI machines have about 12 GiB free under /tmp, less than the builtin
/// 8G work disk plus an imported image's root, and tests run side by side.
pub const TEST_DISK_SIZE: &str = "2G";

/// One test's private banger world.
#[derive(Debug)]
pub struct TestEnv {
    dir: tempfile::TempDir,
    pub layout: Layout,
}

impl Default for TestEnv {
    fn default() -> Self {
        Self::new()
    }
}

impl TestEnv {
    pub fn new() -> Self {
        // Keep the path short: unix socket paths are limited to 108 bytes.
        let dir = tempfile::Builder::new()
            .prefix("bt")
            .tempdir_in("/tmp")
            .expect("temp dir");
        let root = dir.path();
        let layout = Layout::from_lookup(|key| {
            let value = match key {
                "HOME" => root.join("home"),
                "XDG_CONFIG_HOME" => root.join("config"),
                "XDG_STATE_HOME" => root.join("state"),
                "XDG_CACHE_HOME" => root.join("cache"),
                "XDG_RUNTIME_DIR" => root.join("run"),
                _ => return None,
            };
            Some(value.to_string_lossy().into_owned())
        })
        .expect("test layout");
        std::fs::create_dir_all(&layout.home).expect("home dir");
        let env = Self { dir, layout };
        env.write_config("");
        env
    }

    pub fn root(&self) -> &Path {
        self.dir.path()
    }

    /// The environment variables that point banger at this world.
    pub fn vars(&self) -> Vec<(&'static str, PathBuf)> {
        let root = self.root();
        vec![
            ("HOME", root.join("home")),
            ("XDG_CONFIG_HOME", root.join("config")),
            ("XDG_STATE_HOME", root.join("state")),
            ("XDG_CACHE_HOME", root.join("cache")),
            ("XDG_RUNTIME_DIR", root.join("run")),
        ]
    }

    /// A command for workspace binary `name` with this world's environment.
    pub fn command(&self, name: &str) -> Command {
        let mut command = Command::new(binary(name));
        command.env_clear();
        for key in ["PATH", "BANGER_LOG", "RUST_BACKTRACE"] {
            if let Some(value) = std::env::var_os(key) {
                command.env(key, value);
            }
        }
        command.env("NO_COLOR", "1");
        for (key, value) in self.vars() {
            command.env(key, value);
        }
        command
    }

    /// Runs `banger ARGS` to completion.
    pub fn banger<I, S>(&self, args: I) -> Output
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let mut command = self.command("banger");
        command.args(args);
        run(command)
    }

    /// Writes `config.toml`. Unless `toml` has its own `[network]` table,
    /// DNS listens on a random loopback port, so that test daemons sharing
    /// the host's network namespace never fight over the default port.
    /// Unless it has its own `[vm_defaults]`, work disks default to
    /// [`TEST_DISK_SIZE`].
    pub fn write_config(&self, toml: &str) {
        let path = self.layout.config_file();
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        let mut text = toml.to_owned();
        if !text.contains("[network]") {
            text.push_str("\n[network]\ndns_listen = \"127.0.0.1:0\"\n");
        }
        if !text.contains("[vm_defaults]") {
            text.push_str(&format!(
                "\n[vm_defaults]\ndisk_size = \"{TEST_DISK_SIZE}\"\n"
            ));
        }
        std::fs::write(path, text).unwrap();
    }

    pub fn daemon_log(&self) -> String {
        std::fs::read_to_string(self.layout.daemon_log()).unwrap_or_default()
    }

    /// The pid recorded in the daemon's lock file, if the lock is held.
    pub fn daemon_pid(&self) -> Option<i32> {
        let text = std::fs::read_to_string(self.layout.daemon_lock()).ok()?;
        let pid: i32 = text.trim().parse().ok()?;
        process_alive(pid).then_some(pid)
    }

    /// Waits (bounded) until `condition` holds; panics with `what` if not.
    #[track_caller]
    pub fn wait_for(&self, what: &str, timeout: Duration, mut condition: impl FnMut() -> bool) {
        let deadline = Instant::now() + timeout;
        while !condition() {
            assert!(
                Instant::now() < deadline,
                "timed out after {timeout:?} waiting for {what}\n--- daemon log ---\n{}",
                self.daemon_log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Stops this world's daemon: SIGTERM, then SIGKILL if it lingers.
    pub fn stop_daemon(&self) {
        let Some(pid) = self.daemon_pid() else { return };
        let pid_t = nix::unistd::Pid::from_raw(pid);
        let _ = nix::sys::signal::kill(pid_t, nix::sys::signal::Signal::SIGTERM);
        let deadline = Instant::now() + Duration::from_secs(10);
        while process_alive(pid) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        if process_alive(pid) {
            let _ = nix::sys::signal::kill(pid_t, nix::sys::signal::Signal::SIGKILL);
        }
    }
}

impl Drop for TestEnv {
    fn drop(&mut self) {
        self.stop_daemon();
    }
}

/// Runs a command, capturing its output.
/// Gives `path` and everything under it to `uid`:`gid`, never following a
/// symlink (a test world handed to an ordinary user).
pub fn chown_tree(path: &Path, uid: u32, gid: u32) {
    std::os::unix::fs::lchown(path, Some(uid), Some(gid))
        .unwrap_or_else(|err| panic!("chown {}: {err}", path.display()));
    if path.is_dir() && !path.is_symlink() {
        for entry in std::fs::read_dir(path).unwrap() {
            chown_tree(&entry.unwrap().path(), uid, gid);
        }
    }
}

pub fn run(mut command: Command) -> Output {
    let rendered = format!("{command:?}");
    let output = command
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|err| panic!("running {rendered}: {err}"));
    Output {
        code: output.status.code(),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
        command: rendered,
    }
}

/// Whether `pid` is a live (non-zombie) process.
pub fn process_alive(pid: i32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => {
            // The state follows the parenthesised command name.
            let state = stat
                .rsplit_once(')')
                .and_then(|(_, rest)| rest.split_whitespace().next());
            !matches!(state, Some("Z" | "X") | None)
        }
        Err(_) => false,
    }
}
