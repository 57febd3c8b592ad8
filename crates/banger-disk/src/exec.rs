//! The programs this crate runs — e2fsprogs (`mkfs.ext4`, `debugfs`,
//! `resize2fs`, `e2fsck`) and `dmsetup` — as thin wrappers over
//! [`banger_exec`].
//!
//! Tools are looked up on `PATH` and then in `/usr/sbin` and `/sbin`,
//! because the daemon may run with a user's `PATH` that lacks the sbin
//! directories.

use std::ffi::{OsStr, OsString};
use std::fmt;
use std::io::{Read, Seek, SeekFrom};
use std::path::PathBuf;
use std::process::ExitStatus;

pub use banger_exec::ExecError;
use banger_exec::{Cmd, Output, SBIN, Stdio};

/// The external programs this crate runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Tool {
    MkfsExt4,
    Debugfs,
    Resize2fs,
    E2fsck,
    Dmsetup,
}

impl Tool {
    pub fn program(self) -> &'static str {
        match self {
            Self::MkfsExt4 => "mkfs.ext4",
            Self::Debugfs => "debugfs",
            Self::Resize2fs => "resize2fs",
            Self::E2fsck => "e2fsck",
            Self::Dmsetup => "dmsetup",
        }
    }

    fn package(self) -> &'static str {
        match self {
            Self::Dmsetup => "dmsetup",
            _ => "e2fsprogs",
        }
    }

    /// Full path of the program, if it can be found.
    pub fn locate(self) -> Option<PathBuf> {
        banger_exec::find_program(self.program(), SBIN)
    }
}

impl fmt::Display for Tool {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.program())
    }
}

fn command(tool: Tool, args: &[OsString]) -> Result<Cmd, ExecError> {
    let path = banger_exec::require_program(tool.program(), SBIN, tool.package())?;
    Ok(Cmd::new(path)
        .args(args)
        .stdin(Stdio::null())
        // debugfs pipes long output through a pager on a terminal; never.
        .env("DEBUGFS_PAGER", "__none__")
        .env("PAGER", "__none__")
        .env("LC_ALL", "C"))
}

/// Runs `tool args` and returns its output whatever its exit status.
fn run_unchecked(tool: Tool, args: &[OsString]) -> Result<Output, ExecError> {
    let started = std::time::Instant::now();
    let output = command(tool, args)?.output()?;
    tracing::debug!(
        command = %output.command,
        status = %output.status,
        elapsed_ms = started.elapsed().as_secs_f64() * 1000.0,
        "ran tool"
    );
    Ok(output)
}

/// Runs `tool args` so that the files banger owns are recorded as root's:
/// as root, as is; otherwise as root of a user namespace of its own
/// (`mkfs.ext4 -d` copies each file's owner into the image, and a guest
/// wants its files root's, not those of the user whose daemon built them).
pub(crate) fn run_owning_as_root(tool: Tool, args: &[OsString]) -> Result<Output, ExecError> {
    let mut command = command(tool, args)?;
    if !nix::unistd::geteuid().is_root() {
        command = command.as_root_of_own_user_namespace();
    }
    let output = command.output()?;
    if output.status.success() {
        Ok(output)
    } else {
        Err(output.failure())
    }
}

/// Runs `tool args`; a non-zero exit is an error carrying stderr.
pub(crate) fn run(tool: Tool, args: &[OsString]) -> Result<Output, ExecError> {
    run_accepting(tool, args, |status| status.success())
}

/// Runs `tool args`; `accept` decides which exit statuses are success
/// (`e2fsck -p` exits 1 when it fixed something).
pub(crate) fn run_accepting(
    tool: Tool,
    args: &[OsString],
    accept: impl Fn(ExitStatus) -> bool,
) -> Result<Output, ExecError> {
    let output = run_unchecked(tool, args)?;
    if accept(output.status) {
        Ok(output)
    } else {
        Err(output.failure())
    }
}

/// Runs `tool args` with stdout and stderr going to one file, so the
/// order in which a program interleaves them is kept (debugfs echoes each
/// command on stdout and reports its errors on stderr).
pub(crate) fn run_combined(
    tool: Tool,
    args: &[OsString],
) -> Result<(ExitStatus, String), ExecError> {
    let command = command(tool, args)?;
    let spawn_error = |source| ExecError::Spawn {
        program: tool.program().to_owned(),
        source,
    };
    let mut sink = tempfile::tempfile().map_err(spawn_error)?;
    let stdout_sink = sink.try_clone().map_err(spawn_error)?;
    let stderr_sink = sink.try_clone().map_err(spawn_error)?;
    let started = std::time::Instant::now();
    let rendered = command.display();
    let status = command
        .stdout(Stdio::from(stdout_sink))
        .stderr(Stdio::from(stderr_sink))
        .status()?;
    tracing::debug!(
        command = %rendered,
        %status,
        elapsed_ms = started.elapsed().as_secs_f64() * 1000.0,
        "ran tool"
    );
    let mut bytes = Vec::new();
    sink.seek(SeekFrom::Start(0)).map_err(spawn_error)?;
    sink.read_to_end(&mut bytes).map_err(spawn_error)?;
    Ok((status, String::from_utf8_lossy(&bytes).into_owned()))
}

/// Shorthand for building argv from mixed strings and paths.
pub(crate) fn args<I, S>(items: I) -> Vec<OsString>
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    items
        .into_iter()
        .map(|item| item.as_ref().to_owned())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tools_are_found_in_sbin() {
        // e2fsprogs is a hard requirement of banger; the machine has it.
        assert!(Tool::MkfsExt4.locate().is_some());
        assert!(Tool::Debugfs.locate().is_some());
    }

    #[test]
    fn failures_carry_the_command_and_its_output() {
        let dir = tempfile::tempdir().unwrap();
        let err = run(
            Tool::E2fsck,
            &args([OsStr::new("-n"), dir.path().as_os_str()]),
        )
        .unwrap_err();
        let message = err.to_string();
        assert!(message.contains("e2fsck -n"), "{message}");
        assert!(
            err.stderr().is_some_and(|text| !text.is_empty()),
            "{message}"
        );
    }
}
