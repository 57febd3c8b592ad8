//! Every process the CLI starts lives here.

use std::fs::File;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};

/// Starts `bangerd` detached from this terminal and process group, its
/// output going to `startup_log` so a failed start can be shown.
pub fn spawn_daemon(bangerd: &Path, startup_log: &Path) -> std::io::Result<Child> {
    let log = File::create(startup_log)?;
    let log_err = log.try_clone()?;
    let mut command = Command::new(bangerd);
    command.stdin(Stdio::null()).stdout(log).stderr(log_err);
    // SAFETY: setsid is async-signal-safe and touches no memory of the
    // parent; it runs in the forked child before exec.
    unsafe {
        command.pre_exec(|| {
            nix::unistd::setsid().map_err(std::io::Error::from)?;
            Ok(())
        });
    }
    command.spawn()
}

/// Starts the system `ssh` with `args`, inheriting the terminal. Ctrl-C at
/// the terminal reaches `ssh` too (same process group); the caller keeps a
/// handler installed so banger itself survives it, and waits for the child.
pub fn spawn_ssh(args: &[std::ffi::OsString]) -> std::io::Result<tokio::process::Child> {
    tokio::process::Command::new("ssh").args(args).spawn()
}

/// Runs another `banger` (the freshly installed one after an update) with
/// `args`, inheriting the terminal and environment, and waits for it.
pub async fn run_banger(banger: &Path, args: &[&str]) -> std::io::Result<std::process::ExitStatus> {
    tokio::process::Command::new(banger)
        .args(args)
        .stdin(Stdio::null())
        .status()
        .await
}

/// `git ARGS` in `dir`, capturing its output (for reading a repository).
pub fn git(dir: &Path, args: &[&str]) -> std::io::Result<std::process::Output> {
    Command::new("git")
        .arg("-C")
        .arg(dir)
        .args(args)
        .stdin(Stdio::null())
        .output()
}

/// `git ARGS` in `dir` for a repository banger made itself (the staged
/// workspace): the user's global and system git config are left out, so
/// no hook, filter or setting of theirs runs, exactly as in a guest, and
/// `env` is added (an index of banger's own, the copied-in commit's
/// author).
pub fn git_isolated<A: AsRef<std::ffi::OsStr>>(
    dir: &Path,
    args: &[A],
    env: &[(&str, &std::ffi::OsStr)],
    stdin: Option<&[u8]>,
) -> std::io::Result<std::process::Output> {
    let mut command = Command::new("git");
    command
        .arg("-C")
        .arg(dir)
        .args(args)
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_TERMINAL_PROMPT", "0")
        .envs(env.iter().map(|(key, value)| (key, value)))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let Some(input) = stdin else {
        return command.stdin(Stdio::null()).output();
    };
    let mut child = command.stdin(Stdio::piped()).spawn()?;
    let mut pipe = child.stdin.take().expect("stdin is piped");
    let input = input.to_vec();
    let writer = std::thread::spawn(move || std::io::Write::write_all(&mut pipe, &input));
    let output = child.wait_with_output()?;
    let written = writer
        .join()
        .map_err(|_| std::io::Error::other("writing to git panicked"))?;
    // A git that failed early closed its stdin; its stderr says why.
    if output.status.success() {
        written?;
    }
    Ok(output)
}

/// `git bundle create FILE REFS...` in `dir`.
pub fn git_bundle(dir: &Path, file: &Path, refs: &[&str]) -> std::io::Result<std::process::Output> {
    Command::new("git")
        .arg("-C")
        .arg(dir)
        .args(["bundle", "create", "--quiet"])
        .arg(file)
        .args(refs)
        .stdin(Stdio::null())
        .output()
}

/// Starts `ssh ARGS` with stdin (and stdout) piped as asked, stderr
/// inherited, for streaming copies.
pub fn ssh_piped(
    args: &[std::ffi::OsString],
    pipe_stdin: bool,
    pipe_stdout: bool,
) -> std::io::Result<Child> {
    let pipe = |piped: bool| {
        if piped {
            Stdio::piped()
        } else {
            Stdio::inherit()
        }
    };
    Command::new("ssh")
        .args(args)
        .stdin(pipe(pipe_stdin))
        .stdout(pipe(pipe_stdout))
        .spawn()
}

/// Runs `ssh ARGS` with `input` on its stdin; returns its output.
pub async fn ssh_with_input(
    args: &[std::ffi::OsString],
    input: impl tokio::io::AsyncRead + Unpin,
) -> std::io::Result<std::process::Output> {
    let mut input = input;
    let mut child = tokio::process::Command::new("ssh")
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?;
    let mut stdin = child.stdin.take().expect("piped stdin");
    let feed = async move {
        let copied = tokio::io::copy(&mut input, &mut stdin).await;
        drop(stdin);
        copied
    };
    let (fed, output) = tokio::join!(feed, child.wait_with_output());
    let output = output?;
    // A remote side that exits early closes the pipe; its status says more.
    if let Err(err) = fed
        && output.status.success()
    {
        return Err(err);
    }
    Ok(output)
}
