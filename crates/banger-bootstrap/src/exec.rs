//! The programs this crate runs — `debootstrap`, `apt-get`, `apt-cache`
//! and `depmod` — through [`banger_exec`], streamed line by line and
//! cancellable.
//!
//! Arguments are passed as argv, never through a shell. Programs are looked
//! up on the daemon's `PATH` only (so a test can hide one by narrowing
//! `PATH`). Each runs in its own process group: cancelling kills the whole
//! group (debootstrap's chrooted dpkg and maintainer scripts included), first
//! with SIGTERM, then with SIGKILL.

use std::ffi::OsString;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitStatus;
use std::time::Duration;

use banger_exec::{Cmd, Stdio};
use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio_util::sync::CancellationToken;

/// How many trailing output lines a failure carries.
const TAIL_LINES: usize = 15;
/// How long a cancelled process group has between SIGTERM and SIGKILL.
const TERM_GRACE: Duration = Duration::from_secs(5);

/// A program and what it needs to run.
#[derive(Debug, Clone)]
pub struct Invocation {
    pub program: PathBuf,
    pub args: Vec<OsString>,
    pub env: Vec<(String, OsString)>,
    pub cwd: Option<PathBuf>,
}

impl Invocation {
    pub fn new(program: impl Into<PathBuf>) -> Self {
        Self {
            program: program.into(),
            args: Vec::new(),
            env: Vec::new(),
            cwd: None,
        }
    }

    pub fn arg(mut self, arg: impl Into<OsString>) -> Self {
        self.args.push(arg.into());
        self
    }

    pub fn args<I, S>(mut self, args: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<OsString>,
    {
        self.args.extend(args.into_iter().map(Into::into));
        self
    }

    pub fn env(mut self, key: &str, value: impl Into<OsString>) -> Self {
        self.env.push((key.to_owned(), value.into()));
        self
    }

    pub fn cwd(mut self, dir: impl Into<PathBuf>) -> Self {
        self.cwd = Some(dir.into());
        self
    }

    fn name(&self) -> String {
        self.program
            .file_name()
            .map(|name| name.to_string_lossy().into_owned())
            .unwrap_or_else(|| self.program.display().to_string())
    }
}

/// What a finished program printed.
#[derive(Debug, Clone)]
pub struct Finished {
    pub status: ExitStatus,
    /// Everything on stdout (not kept when a log file is given).
    pub stdout: String,
    /// The last lines of stdout and stderr, interleaved as they came.
    pub tail: Vec<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum ExecError {
    #[error(transparent)]
    Spawn(#[from] banger_exec::ExecError),
    #[error("writing the log {path}")]
    Log {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("reading the output of {program}")]
    Read {
        program: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{program} was cancelled")]
    Cancelled { program: String },
}

#[derive(Debug, thiserror::Error)]
pub enum DepmodError {
    #[error("depmod is not installed (package kmod)")]
    NotInstalled,
    #[error("depmod failed ({status}): {detail}")]
    Failed { status: String, detail: String },
    #[error(transparent)]
    Exec(#[from] ExecError),
}

/// `depmod -b BASE RELEASE`: the module indexes (`modules.dep`, its `.bin`,
/// aliases, symbols) for the modules under `BASE/lib/modules/RELEASE`,
/// written next to them, as the guest's `modprobe` reads them.
pub async fn depmod(
    base: &Path,
    release: &str,
    cancel: &CancellationToken,
) -> Result<(), DepmodError> {
    let program = locate("depmod").ok_or(DepmodError::NotInstalled)?;
    let invocation = Invocation::new(program).arg("-b").arg(base).arg(release);
    let finished = run(&invocation, None, &mut |_| {}, cancel).await?;
    if finished.status.success() {
        return Ok(());
    }
    Err(DepmodError::Failed {
        status: finished.status.to_string(),
        detail: finished.tail.join("\n"),
    })
}

/// Finds `program` on `PATH` (or, with no `PATH` at all, in the usual
/// system directories).
pub fn locate(program: &str) -> Option<PathBuf> {
    banger_exec::find_program(program, &[])
}

/// Runs `invocation` to completion. Every output line is appended to `log`
/// (when given) and handed to `on_line`. Cancelling kills the process group
/// and returns [`ExecError::Cancelled`] once it is gone.
pub async fn run(
    invocation: &Invocation,
    log: Option<&Path>,
    on_line: &mut (dyn FnMut(&str) + Send),
    cancel: &CancellationToken,
) -> Result<Finished, ExecError> {
    let name = invocation.name();
    let mut command = Cmd::new(&invocation.program)
        .args(&invocation.args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .env("LC_ALL", "C")
        .process_group(0)
        .kill_on_drop(true)
        .envs(invocation.env.iter().map(|(key, value)| (key, value)));
    if let Some(cwd) = &invocation.cwd {
        command = command.current_dir(cwd);
    }
    let mut log_file = match log {
        Some(path) => Some(
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)
                .map_err(|source| ExecError::Log {
                    path: path.to_owned(),
                    source,
                })?,
        ),
        None => None,
    };
    if let (Some(file), Some(path)) = (log_file.as_mut(), log) {
        let rendered: Vec<String> = invocation
            .args
            .iter()
            .map(|arg| arg.to_string_lossy().into_owned())
            .collect();
        writeln!(
            file,
            "$ {} {}",
            invocation.program.display(),
            rendered.join(" ")
        )
        .map_err(|source| ExecError::Log {
            path: path.to_owned(),
            source,
        })?;
    }
    tracing::debug!(program = %invocation.program.display(), args = ?invocation.args, "running");
    let mut child = command.spawn_async()?;
    let pid = child.id().map(|pid| Pid::from_raw(pid as i32));
    let mut stdout = BufReader::new(child.stdout.take().expect("stdout is piped")).lines();
    let mut stderr = BufReader::new(child.stderr.take().expect("stderr is piped")).lines();
    let (mut out_open, mut err_open) = (true, true);
    let mut tail: Vec<String> = Vec::new();
    let mut collected = String::new();
    let read_err = |source| ExecError::Read {
        program: name.clone(),
        source,
    };
    while out_open || err_open {
        let (line, from_stdout) = tokio::select! {
            () = cancel.cancelled() => {
                kill_group(pid, &mut child).await;
                return Err(ExecError::Cancelled { program: name });
            }
            line = stdout.next_line(), if out_open => (line.map_err(read_err)?, true),
            line = stderr.next_line(), if err_open => (line.map_err(read_err)?, false),
        };
        let Some(line) = line else {
            if from_stdout {
                out_open = false;
            } else {
                err_open = false;
            }
            continue;
        };
        if let (Some(file), Some(path)) = (log_file.as_mut(), log) {
            writeln!(file, "{line}").map_err(|source| ExecError::Log {
                path: path.to_owned(),
                source,
            })?;
        } else if from_stdout {
            collected.push_str(&line);
            collected.push('\n');
        }
        on_line(&line);
        if tail.len() == TAIL_LINES {
            tail.remove(0);
        }
        tail.push(line);
    }
    let status = tokio::select! {
        () = cancel.cancelled() => {
            kill_group(pid, &mut child).await;
            return Err(ExecError::Cancelled { program: name });
        }
        status = child.wait() => status.map_err(|source| ExecError::Read { program: name.clone(), source })?,
    };
    if let (Some(file), Some(path)) = (log_file.as_mut(), log) {
        writeln!(file, "# {name} exited: {status}").map_err(|source| ExecError::Log {
            path: path.to_owned(),
            source,
        })?;
    }
    Ok(Finished {
        status,
        stdout: collected,
        tail,
    })
}

/// SIGTERM to the group, SIGKILL after a grace period, then reap.
async fn kill_group(pid: Option<Pid>, child: &mut tokio::process::Child) {
    let Some(pid) = pid else {
        let _ = child.kill().await;
        return;
    };
    tracing::info!(
        pid = pid.as_raw(),
        "cancelling: terminating the process group"
    );
    let _ = killpg(pid, Signal::SIGTERM);
    if tokio::time::timeout(TERM_GRACE, child.wait())
        .await
        .is_err()
    {
        let _ = killpg(pid, Signal::SIGKILL);
        let _ = child.wait().await;
    }
    // Children that outlived the leader (chrooted dpkg) die with the group.
    let _ = killpg(pid, Signal::SIGKILL);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn captures_lines_and_status() {
        let invocation = Invocation::new("/bin/sh").args(["-c", "echo out; echo err >&2; exit 3"]);
        let mut seen = Vec::new();
        let finished = run(
            &invocation,
            None,
            &mut |line| seen.push(line.to_owned()),
            &CancellationToken::new(),
        )
        .await
        .unwrap();
        assert_eq!(finished.status.code(), Some(3));
        assert_eq!(finished.stdout, "out\n");
        seen.sort();
        assert_eq!(seen, ["err", "out"]);
    }

    #[tokio::test]
    async fn cancelling_kills_the_whole_group() {
        let dir = tempfile::tempdir().unwrap();
        let pidfile = dir.path().join("grandchild");
        let script = format!(
            "sleep 300 & echo $! > {}; echo started; wait",
            pidfile.display()
        );
        let invocation = Invocation::new("/bin/sh").args(["-c", &script]);
        let cancel = CancellationToken::new();
        let trigger = cancel.clone();
        let result = run(
            &invocation,
            None,
            &mut |line| {
                if line == "started" {
                    trigger.cancel();
                }
            },
            &cancel,
        )
        .await;
        assert!(matches!(result, Err(ExecError::Cancelled { .. })));
        let grandchild: i32 = std::fs::read_to_string(&pidfile)
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        // Killed, and reaped by init or gone: /proc shows no live process.
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        loop {
            let stat = std::fs::read_to_string(format!("/proc/{grandchild}/stat"));
            let alive = stat.is_ok_and(|stat| !stat.contains(") Z"));
            if !alive {
                break;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "sleep {grandchild} survived"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    #[test]
    fn locate_searches_path() {
        assert!(locate("sh").is_some());
        assert!(locate("no-such-program-banger").is_none());
    }
}

/// Host tools the unit tests use to check our output.
#[cfg(test)]
pub(crate) mod tests_support {
    use std::path::Path;
    use std::process::{Command, Stdio};

    /// `cpio -itv < FILE`
    pub(crate) fn list_cpio(cpio: &str, file: &Path) -> String {
        let output = Command::new(cpio)
            .arg("-itv")
            .stdin(Stdio::from(std::fs::File::open(file).unwrap()))
            .output()
            .unwrap();
        assert!(output.status.success(), "{output:?}");
        String::from_utf8_lossy(&output.stdout).into_owned()
    }

    /// `shellcheck -s sh FILE`: `None` when shellcheck is not installed.
    pub(crate) fn shellcheck(file: &Path) -> Option<std::process::Output> {
        Command::new("shellcheck")
            .args(["-s", "sh"])
            .arg(file)
            .output()
            .ok()
    }

    /// The initrd's init script in dry-run mode against a fake root.
    pub(crate) fn dry_run_init(script: &Path, root: &Path) -> std::process::Output {
        Command::new("/bin/sh")
            .arg(script)
            .env("BANGER_INITRD_DRY_RUN", "1")
            .env("BANGER_INITRD_ROOT", root)
            .output()
            .unwrap()
    }
}
