//! The one program the agent starts, through [`banger_exec`]: the command
//! of an SSH session under [`crate::session`].

use std::ffi::OsString;

use banger_exec::{Cmd, ExecError};
use nix::sys::signal::{SigSet, SigmaskHow, pthread_sigmask};

/// Starts `program` with `args`, inheriting stdin, stdout, stderr and the
/// environment, with an empty signal mask (the guard blocks the signals it
/// waits for; the command must not inherit that); returns its pid (the
/// caller reaps it with `waitpid`). The error is the one from exec, so the
/// caller can tell a missing program (exit 127) from another failure.
pub(crate) fn spawn(program: &OsString, args: &[OsString]) -> std::io::Result<u32> {
    let command = Cmd::new(program).args(args);
    // SAFETY: pthread_sigmask is async-signal-safe and only changes the
    // forked child's own mask before exec; nothing is allocated.
    let command = unsafe {
        command.pre_exec(|| {
            pthread_sigmask(SigmaskHow::SIG_SETMASK, Some(&SigSet::empty()), None)
                .map_err(std::io::Error::from)
        })
    };
    match command.spawn() {
        Ok(child) => Ok(child.id()),
        Err(ExecError::Spawn { source, .. }) => Err(source),
        Err(other) => Err(std::io::Error::other(other)),
    }
}
