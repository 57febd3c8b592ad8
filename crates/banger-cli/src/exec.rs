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

/// Runs the system `ssh` with `args`, inheriting the terminal, and returns
/// its exit status. Ctrl-C reaches `ssh` (same process group); the caller
/// keeps a handler installed so banger itself survives it.
pub async fn run_ssh(args: &[std::ffi::OsString]) -> std::io::Result<std::process::ExitStatus> {
    tokio::process::Command::new("ssh")
        .args(args)
        .status()
        .await
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
