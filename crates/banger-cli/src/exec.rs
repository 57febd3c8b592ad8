//! The programs the CLI runs (`bangerd`, `ssh`, `git`, a freshly installed
//! `banger`), as thin wrappers over [`banger_exec`].

use std::ffi::{OsStr, OsString};
use std::path::Path;

use banger_exec::{Child, Cmd, ExecError, ExitStatus, Output, Stdio};

/// Starts `bangerd` detached from this terminal and process group, its
/// output going to `startup_log` (created afresh) so a failed start can be
/// shown, holding no descriptor of ours.
pub fn spawn_daemon(bangerd: &Path, startup_log: &Path) -> anyhow::Result<Child> {
    let log = fs_err::File::create(startup_log)?.into_parts().0;
    Ok(Cmd::new(bangerd)
        .without_inherited_fds()
        .spawn_detached(Some(log))?)
}

/// Starts the system `ssh` with `args`, inheriting the terminal. Ctrl-C at
/// the terminal reaches `ssh` too (same process group); the caller keeps a
/// handler installed so banger itself survives it, and waits for the child.
pub fn spawn_ssh(args: &[OsString]) -> Result<tokio::process::Child, ExecError> {
    Cmd::new("ssh").args(args).spawn_async()
}

/// Runs another `banger` (the freshly installed one after an update) with
/// `args`, inheriting the terminal and environment, and waits for it.
pub async fn run_banger(banger: &Path, args: &[&str]) -> Result<ExitStatus, ExecError> {
    Cmd::new(banger)
        .args(args)
        .stdin(Stdio::null())
        .status_async()
        .await
}

/// `git ARGS` in `dir`, capturing its output (for reading a repository).
pub fn git(dir: &Path, args: &[&str]) -> Result<Output, ExecError> {
    Cmd::new("git").arg("-C").arg(dir).args(args).output()
}

/// `git ARGS` in `dir` for a repository banger made itself (the staged
/// workspace): the user's global and system git config are left out, so
/// no hook, filter or setting of theirs runs, exactly as in a guest, and
/// `env` is added (an index of banger's own, the copied-in commit's
/// author).
pub fn git_isolated<A: AsRef<OsStr>>(
    dir: &Path,
    args: &[A],
    env: &[(&str, &OsStr)],
    stdin: Option<&[u8]>,
) -> Result<Output, ExecError> {
    let command = Cmd::new("git")
        .arg("-C")
        .arg(dir)
        .args(args)
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_TERMINAL_PROMPT", "0")
        .envs(env.iter().copied());
    match stdin {
        Some(input) => command.output_with_stdin(input),
        None => command.output(),
    }
}

/// `git bundle create FILE REFS...` in `dir`.
pub fn git_bundle(dir: &Path, file: &Path, refs: &[&str]) -> Result<Output, ExecError> {
    Cmd::new("git")
        .arg("-C")
        .arg(dir)
        .args(["bundle", "create", "--quiet"])
        .arg(file)
        .args(refs)
        .output()
}

/// Starts `ssh ARGS` with stdin (and stdout) piped as asked, stderr
/// inherited, for streaming copies.
pub fn ssh_piped(
    args: &[OsString],
    pipe_stdin: bool,
    pipe_stdout: bool,
) -> Result<Child, ExecError> {
    let pipe = |piped: bool| {
        if piped {
            Stdio::piped()
        } else {
            Stdio::inherit()
        }
    };
    Cmd::new("ssh")
        .args(args)
        .stdin(pipe(pipe_stdin))
        .stdout(pipe(pipe_stdout))
        .spawn()
}

/// Runs `ssh ARGS` with `input` on its stdin; returns its output.
pub async fn ssh_with_input(
    args: &[OsString],
    input: impl tokio::io::AsyncRead + Unpin,
) -> Result<Output, ExecError> {
    Cmd::new("ssh")
        .args(args)
        .output_with_stdin_async(input)
        .await
}

/// `err` and its causes on one line, for messages kept as text.
pub fn describe(err: &ExecError) -> String {
    let mut text = err.to_string();
    let mut source = std::error::Error::source(err);
    while let Some(cause) = source {
        text.push_str(&format!(": {cause}"));
        source = cause.source();
    }
    text
}
