//! [`Cmd`]: a program, its arguments and environment, and the synchronous
//! ways to run it.

use std::ffi::OsStr;
use std::fs::File;
use std::io::{self, Read, Write};
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Child, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use crate::ExecError;
use crate::error::render;

/// A program to run: built up by value, then consumed by one of the ways to
/// run it. Arguments are handed to the program one by one, never through a
/// shell.
///
/// Unless set otherwise, a command inherits banger's environment, working
/// directory and stdio; [`Cmd::output`] and its kin capture stdout and
/// stderr and give the program an empty stdin.
#[derive(Debug)]
pub struct Cmd {
    pub(crate) inner: std::process::Command,
    pub(crate) kill_on_drop: bool,
}

impl Cmd {
    /// `program`, found on `PATH` unless it holds a `/`.
    pub fn new(program: impl AsRef<OsStr>) -> Self {
        Self {
            inner: std::process::Command::new(program),
            kill_on_drop: false,
        }
    }

    pub fn arg(mut self, arg: impl AsRef<OsStr>) -> Self {
        self.inner.arg(arg);
        self
    }

    pub fn args<I, S>(mut self, args: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        self.inner.args(args);
        self
    }

    pub fn env(mut self, key: impl AsRef<OsStr>, value: impl AsRef<OsStr>) -> Self {
        self.inner.env(key, value);
        self
    }

    pub fn envs<I, K, V>(mut self, vars: I) -> Self
    where
        I: IntoIterator<Item = (K, V)>,
        K: AsRef<OsStr>,
        V: AsRef<OsStr>,
    {
        self.inner.envs(vars);
        self
    }

    /// Starts from an empty environment (then [`Cmd::env`] adds to it).
    pub fn env_clear(mut self) -> Self {
        self.inner.env_clear();
        self
    }

    pub fn current_dir(mut self, dir: impl AsRef<Path>) -> Self {
        self.inner.current_dir(dir);
        self
    }

    pub fn stdin(mut self, stdin: impl Into<Stdio>) -> Self {
        self.inner.stdin(stdin);
        self
    }

    pub fn stdout(mut self, stdout: impl Into<Stdio>) -> Self {
        self.inner.stdout(stdout);
        self
    }

    pub fn stderr(mut self, stderr: impl Into<Stdio>) -> Self {
        self.inner.stderr(stderr);
        self
    }

    /// Puts the child in process group `group` (`0`: a new group led by the
    /// child), so it and everything it starts can be signalled together.
    pub fn process_group(mut self, group: i32) -> Self {
        self.inner.process_group(group);
        self
    }

    /// Runs the program as `uid` (root only).
    pub fn uid(mut self, uid: u32) -> Self {
        self.inner.uid(uid);
        self
    }

    /// Runs the program with group `gid` (root only).
    pub fn gid(mut self, gid: u32) -> Self {
        self.inner.gid(gid);
        self
    }

    /// For the async ways to run: kill the child when its handle is dropped.
    pub fn kill_on_drop(mut self, kill: bool) -> Self {
        self.kill_on_drop = kill;
        self
    }

    /// Runs `hook` in the child between fork and exec.
    ///
    /// # Safety
    ///
    /// As [`std::os::unix::process::CommandExt::pre_exec`]: the hook runs
    /// in a copy of a possibly multi-threaded process, so it may only make
    /// async-signal-safe calls — no allocation, no locks.
    pub unsafe fn pre_exec<F>(mut self, hook: F) -> Self
    where
        F: FnMut() -> io::Result<()> + Send + Sync + 'static,
    {
        // SAFETY: the caller upholds pre_exec's contract (see above).
        unsafe {
            self.inner.pre_exec(hook);
        }
        self
    }

    /// The program as given, for messages.
    pub fn program(&self) -> String {
        self.inner.get_program().to_string_lossy().into_owned()
    }

    /// The command line, for messages and logs (never run as text).
    pub fn display(&self) -> String {
        render(self.inner.get_program(), self.inner.get_args())
    }

    pub(crate) fn spawn_error(&self) -> impl FnOnce(io::Error) -> ExecError + use<> {
        let program = self.program();
        move |source| ExecError::Spawn { program, source }
    }

    /// Runs to completion with stdin empty, stdout and stderr captured,
    /// whatever the exit status.
    pub fn output(mut self) -> Result<Output, ExecError> {
        let command = self.display();
        let output = self.inner.output().map_err(self.spawn_error())?;
        Ok(Output::new(command, output))
    }

    /// [`Cmd::output`], and a status other than success is an error.
    pub fn run(self) -> Result<Output, ExecError> {
        self.output()?.check()
    }

    /// [`Cmd::output`] with `input` written to the program's stdin. A
    /// program that exits early closes its stdin: the write error is then
    /// reported only if the program claims success.
    pub fn output_with_stdin(mut self, input: &[u8]) -> Result<Output, ExecError> {
        let command = self.display();
        let error = self.spawn_error();
        let mut child = match self
            .inner
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
        {
            Ok(child) => child,
            Err(source) => return Err(error(source)),
        };
        let mut pipe = child.stdin.take().expect("stdin is piped");
        let input = input.to_vec();
        let writer = std::thread::spawn(move || pipe.write_all(&input));
        let result = child.wait_with_output().and_then(|output| {
            let written = writer
                .join()
                .map_err(|_| io::Error::other("writing stdin panicked"))?;
            if output.status.success() {
                written?;
            }
            Ok(output)
        });
        result
            .map(|output| Output::new(command, output))
            .map_err(error)
    }

    /// Runs to completion with stdio as set (inherited by default); a
    /// status other than success is not an error here.
    pub fn status(mut self) -> Result<ExitStatus, ExecError> {
        self.inner.status().map_err(self.spawn_error())
    }

    /// [`Cmd::output`], but a program still running after `timeout` is
    /// killed (and reaped) and reported as [`ExecError::TimedOut`].
    pub fn output_timeout(mut self, timeout: Duration) -> Result<Output, ExecError> {
        let command = self.display();
        let error = self.spawn_error();
        let mut child = match self
            .inner
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
        {
            Ok(child) => child,
            Err(source) => return Err(error(source)),
        };
        // Read both pipes while waiting, so a chatty program cannot block
        // on a full pipe until the deadline.
        let stdout = drain(child.stdout.take());
        let stderr = drain(child.stderr.take());
        let deadline = Instant::now() + timeout;
        let status = loop {
            match child.try_wait() {
                Ok(Some(status)) => break status,
                Ok(None) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(10));
                }
                Ok(None) => {
                    let _ = child.kill();
                    let _ = child.wait();
                    return Err(ExecError::TimedOut { command, timeout });
                }
                Err(source) => return Err(error(source)),
            }
        };
        Ok(Output {
            command,
            status,
            stdout: stdout.join().unwrap_or_default(),
            stderr: stderr.join().unwrap_or_default(),
        })
    }

    /// Starts the program with stdio as set and returns at once.
    pub fn spawn(mut self) -> Result<Child, ExecError> {
        self.inner.spawn().map_err(self.spawn_error())
    }

    /// Starts the program detached: in a session of its own (so banger's
    /// terminal, its signals and its exit do not reach it), stdin from
    /// /dev/null, stdout and stderr to `log` (appended or truncated as the
    /// file was opened), or to /dev/null without one.
    pub fn spawn_detached(self, log: Option<File>) -> Result<Child, ExecError> {
        self.detached(log)?.spawn()
    }

    /// The program gets stdin, stdout and stderr and no other descriptor of
    /// ours, whether or not it was opened close-on-exec: a long-lived
    /// program (the daemon) must not hold what its starter had open, such
    /// as the lock of a `flock banger …` around it.
    pub fn without_inherited_fds(self) -> Self {
        // SAFETY: close_range(2) is a plain syscall; marking descriptors
        // close-on-exec (rather than closing them) leaves std's own exec
        // error pipe working. Kernels before 5.11 lack it: nothing is done.
        unsafe {
            self.pre_exec(|| {
                libc::syscall(
                    libc::SYS_close_range,
                    3u32,
                    u32::MAX,
                    libc::CLOSE_RANGE_CLOEXEC,
                );
                Ok(())
            })
        }
    }

    /// Sets up what [`Cmd::spawn_detached`] promises, for both runtimes.
    pub(crate) fn detached(mut self, log: Option<File>) -> Result<Self, ExecError> {
        let (stdout, stderr) = match log {
            Some(log) => {
                let copy = log.try_clone().map_err(self.spawn_error())?;
                (Stdio::from(log), Stdio::from(copy))
            }
            None => (Stdio::null(), Stdio::null()),
        };
        self.inner
            .stdin(Stdio::null())
            .stdout(stdout)
            .stderr(stderr);
        // SAFETY: the hook runs in the forked child before exec and only
        // calls setsid(2), which is async-signal-safe; it allocates nothing
        // and takes no locks.
        unsafe {
            self.inner.pre_exec(|| {
                if libc::setsid() < 0 {
                    return Err(io::Error::last_os_error());
                }
                Ok(())
            });
        }
        Ok(self)
    }
}

fn drain<R: Read + Send + 'static>(pipe: Option<R>) -> std::thread::JoinHandle<Vec<u8>> {
    std::thread::spawn(move || {
        let mut bytes = Vec::new();
        if let Some(mut pipe) = pipe {
            let _ = pipe.read_to_end(&mut bytes);
        }
        bytes
    })
}

/// What a finished program printed, and how it ended.
#[derive(Debug, Clone)]
pub struct Output {
    /// The command line, for messages.
    pub command: String,
    pub status: ExitStatus,
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
}

impl Output {
    pub(crate) fn new(command: String, output: std::process::Output) -> Self {
        Self {
            command,
            status: output.status,
            stdout: output.stdout,
            stderr: output.stderr,
        }
    }

    pub fn success(&self) -> bool {
        self.status.success()
    }

    /// stdout as text (invalid UTF-8 replaced).
    pub fn stdout_text(&self) -> String {
        String::from_utf8_lossy(&self.stdout).into_owned()
    }

    /// stderr as text (invalid UTF-8 replaced).
    pub fn stderr_text(&self) -> String {
        String::from_utf8_lossy(&self.stderr).into_owned()
    }

    /// `self` if the program succeeded, else the error describing how it
    /// ended ([`Output::failure`]).
    pub fn check(self) -> Result<Self, ExecError> {
        if self.success() {
            Ok(self)
        } else {
            Err(self.failure())
        }
    }

    /// The error for this run, for callers that accept more than status 0
    /// (`e2fsck -p` exits 1 when it fixed something) and reject the rest.
    pub fn failure(&self) -> ExecError {
        ExecError::from_status(
            self.command.clone(),
            self.status,
            &self.stderr,
            &self.stdout,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_program_without_inherited_fds_sees_only_stdio() {
        use std::os::fd::AsRawFd;
        // Opened without close-on-exec, as flock(1) hands its lock on.
        // A high number, so that it is not the one ls opens itself.
        let file = std::fs::File::open("/dev/null").unwrap();
        // SAFETY: F_DUPFD makes a copy (without FD_CLOEXEC) of a descriptor
        // we own; it is closed below.
        let fd = unsafe { libc::fcntl(file.as_raw_fd(), libc::F_DUPFD, 200) };
        assert!(fd >= 200);
        let listing = |cmd: Cmd| {
            let out = cmd.args(["/proc/self/fd"]).run().unwrap().stdout_text();
            out.lines().map(str::to_owned).collect::<Vec<_>>()
        };
        let inherited = listing(Cmd::new("ls"));
        assert!(
            inherited.contains(&fd.to_string()),
            "fd {fd}: {inherited:?}"
        );
        let clean = listing(Cmd::new("ls").without_inherited_fds());
        assert!(!clean.contains(&fd.to_string()), "fd {fd}: {clean:?}");
        // SAFETY: `fd` is our copy, closed once.
        unsafe { libc::close(fd) };
        drop(file);
    }

    #[test]
    fn runs_to_output_and_reports_failures() {
        let out = Cmd::new("echo").arg("a b").run().unwrap();
        assert_eq!(out.stdout_text(), "a b\n");

        let err = Cmd::new("sh")
            .args(["-c", "echo oops >&2; exit 3"])
            .run()
            .unwrap_err();
        assert_eq!(err.stderr(), Some("oops"));
        assert_eq!(
            err.to_string(),
            "sh -c \"echo oops >&2; exit 3\" exited with status 3: oops"
        );

        let err = Cmd::new("/nonexistent/banger-exec-test").run().unwrap_err();
        assert!(matches!(err, ExecError::Spawn { .. }), "{err}");
        assert_eq!(err.to_string(), "cannot run /nonexistent/banger-exec-test");
    }

    #[test]
    fn environment_and_directory_reach_the_program() {
        let dir = tempfile::tempdir().unwrap();
        let out = Cmd::new("/bin/sh")
            .args(["-c", "echo \"$A\"; pwd"])
            .env_clear()
            .env("A", "set")
            .current_dir(dir.path())
            .run()
            .unwrap();
        let canonical = dir.path().canonicalize().unwrap();
        assert_eq!(out.stdout_text(), format!("set\n{}\n", canonical.display()));
    }

    #[test]
    fn stdin_bytes_are_fed() {
        let out = Cmd::new("cat").output_with_stdin(b"fed\n").unwrap();
        assert_eq!(out.stdout_text(), "fed\n");
        // A program that ignores its stdin and fails reports its failure.
        let out = Cmd::new("sh")
            .args(["-c", "exit 4"])
            .output_with_stdin(&vec![0; 1 << 20])
            .unwrap();
        assert_eq!(out.failure().code(), Some(4));
    }

    #[test]
    fn a_slow_program_times_out_and_is_killed() {
        let started = Instant::now();
        let err = Cmd::new("sleep")
            .arg("30")
            .output_timeout(Duration::from_millis(100))
            .unwrap_err();
        assert!(matches!(err, ExecError::TimedOut { .. }), "{err}");
        assert_eq!(err.to_string(), "sleep 30 did not finish within 0.1s");
        assert!(started.elapsed() < Duration::from_secs(10));
        let out = Cmd::new("echo")
            .arg("quick")
            .output_timeout(Duration::from_secs(10))
            .unwrap();
        assert_eq!(out.stdout_text(), "quick\n");
    }

    #[test]
    fn a_detached_program_leads_its_own_session_and_writes_to_the_log() {
        let dir = tempfile::tempdir().unwrap();
        let log_path = dir.path().join("log");
        let log = File::create(&log_path).unwrap();
        let mut child = Cmd::new("/bin/sh")
            .args(["-c", "echo out; echo err >&2; cut -d' ' -f6 /proc/$$/stat"])
            .spawn_detached(Some(log))
            .unwrap();
        let pid = child.id();
        assert!(child.wait().unwrap().success());
        let text = std::fs::read_to_string(&log_path).unwrap();
        let lines: Vec<&str> = text.lines().map(str::trim).collect();
        assert_eq!(lines, ["out", "err", &pid.to_string()], "{text}");

        let mut quiet = Cmd::new("true").spawn_detached(None).unwrap();
        assert!(quiet.wait().unwrap().success());
    }
}
