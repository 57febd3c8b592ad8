//! The only place this crate starts processes.

use std::ffi::OsString;
use std::io;
use std::path::Path;
use std::process::Stdio;

use tokio::process::{Child, Command};

/// Starts `binary args…` in a session of its own (so the caller's terminal
/// signals and exit do not reach it), stdin from /dev/null, stdout and
/// stderr appended to `console`.
pub(crate) fn spawn_detached(
    binary: &Path,
    args: &[OsString],
    console: std::fs::File,
) -> io::Result<Child> {
    let stderr = console.try_clone()?;
    let mut command = Command::new(binary);
    command
        .args(args)
        .stdin(Stdio::null())
        .stdout(console)
        .stderr(stderr)
        .kill_on_drop(false);
    // SAFETY: the closure runs in the forked child before exec and only
    // calls setsid(2), which is async-signal-safe; it touches no locks or
    // allocations of the parent.
    unsafe {
        command.pre_exec(|| {
            nix::unistd::setsid().map_err(io::Error::from)?;
            Ok(())
        });
    }
    command.spawn()
}
