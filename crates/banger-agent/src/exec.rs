//! The only place the agent starts a process: the command of an SSH
//! session under [`crate::session`].

use std::ffi::OsString;
use std::os::unix::process::CommandExt;
use std::process::Command;

use nix::sys::signal::{SigSet, SigmaskHow, pthread_sigmask};

/// Starts `program` with `args`, inheriting stdin, stdout, stderr and the
/// environment, with an empty signal mask (the guard blocks the signals it
/// waits for; the command must not inherit that); returns its pid (the
/// caller reaps it with `waitpid`).
pub(crate) fn spawn(program: &OsString, args: &[OsString]) -> std::io::Result<u32> {
    let mut command = Command::new(program);
    command.args(args);
    // SAFETY: pthread_sigmask is async-signal-safe and only changes the
    // forked child's own mask before exec; nothing is allocated.
    unsafe {
        command.pre_exec(|| {
            pthread_sigmask(SigmaskHow::SIG_SETMASK, Some(&SigSet::empty()), None)
                .map_err(std::io::Error::from)
        });
    }
    let child = command.spawn()?;
    Ok(child.id())
}
