//! The only place this crate starts processes: e2fsprogs (`mkfs.ext4`,
//! `debugfs`, `resize2fs`, `e2fsck`) and `dmsetup`.
//!
//! Arguments are always passed as argv, never through a shell. Tools are
//! looked up on `PATH` and then in `/usr/sbin` and `/sbin`, because the
//! daemon may run with a user's `PATH` that lacks the sbin directories.

use std::ffi::{OsStr, OsString};
use std::fmt;
use std::io::{Read, Seek, SeekFrom};
use std::path::PathBuf;
use std::process::{Command, ExitStatus, Stdio};

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
        let name = self.program();
        let from_path = std::env::var_os("PATH")
            .map(|path| std::env::split_paths(&path).collect::<Vec<_>>())
            .unwrap_or_default();
        from_path
            .into_iter()
            .chain([PathBuf::from("/usr/sbin"), PathBuf::from("/sbin")])
            .map(|dir| dir.join(name))
            .find(|candidate| candidate.is_file())
    }
}

impl fmt::Display for Tool {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.program())
    }
}

/// A program could not be run or reported failure.
#[derive(Debug, thiserror::Error)]
pub enum ExecError {
    #[error("{tool} not found on PATH, /usr/sbin or /sbin; install {package}")]
    NotFound { tool: Tool, package: &'static str },
    #[error("could not run {tool}")]
    Spawn {
        tool: Tool,
        #[source]
        source: std::io::Error,
    },
    #[error("{tool} {args} exited with {status}: {output}")]
    Failed {
        tool: Tool,
        args: String,
        status: ExitStatus,
        /// stderr (or combined output) trimmed to a readable length.
        output: String,
    },
}

impl ExecError {
    /// The failing program's output, for callers that match on messages
    /// (resize2fs asking for a fsck first).
    pub fn output(&self) -> Option<&str> {
        match self {
            Self::Failed { output, .. } => Some(output),
            _ => None,
        }
    }
}

/// What a finished program printed.
#[derive(Debug)]
pub(crate) struct Output {
    pub(crate) status: ExitStatus,
    pub(crate) stdout: Vec<u8>,
    pub(crate) stderr: String,
}

fn command(tool: Tool, args: &[OsString]) -> Result<Command, ExecError> {
    let path = tool.locate().ok_or(ExecError::NotFound {
        tool,
        package: tool.package(),
    })?;
    let mut command = Command::new(path);
    command
        .args(args)
        .stdin(Stdio::null())
        // debugfs pipes long output through a pager on a terminal; never.
        .env("DEBUGFS_PAGER", "__none__")
        .env("PAGER", "__none__")
        .env("LC_ALL", "C");
    Ok(command)
}

fn render_args(args: &[OsString]) -> String {
    args.iter()
        .map(|arg| arg.to_string_lossy().into_owned())
        .collect::<Vec<_>>()
        .join(" ")
}

/// Keeps error messages readable when a tool is chatty.
fn trim_output(text: &str) -> String {
    const LIMIT: usize = 4000;
    let text = text.trim();
    if text.len() <= LIMIT {
        return text.to_owned();
    }
    let mut cut = text.len() - LIMIT;
    while !text.is_char_boundary(cut) {
        cut += 1;
    }
    format!("…{}", &text[cut..])
}

/// Runs `tool args` and returns its output whatever its exit status.
pub(crate) fn run_unchecked(tool: Tool, args: &[OsString]) -> Result<Output, ExecError> {
    let started = std::time::Instant::now();
    let output = command(tool, args)?
        .output()
        .map_err(|source| ExecError::Spawn { tool, source })?;
    tracing::debug!(
        tool = tool.program(),
        args = %render_args(args),
        status = %output.status,
        elapsed_ms = started.elapsed().as_secs_f64() * 1000.0,
        "ran tool"
    );
    Ok(Output {
        status: output.status,
        stdout: output.stdout,
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    })
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
        let text = if output.stderr.trim().is_empty() {
            String::from_utf8_lossy(&output.stdout).into_owned()
        } else {
            output.stderr.clone()
        };
        Err(ExecError::Failed {
            tool,
            args: render_args(args),
            status: output.status,
            output: trim_output(&text),
        })
    }
}

/// Runs `tool args` with stdout and stderr going to one file, so the
/// order in which a program interleaves them is kept (debugfs echoes each
/// command on stdout and reports its errors on stderr).
pub(crate) fn run_combined(
    tool: Tool,
    args: &[OsString],
) -> Result<(ExitStatus, String), ExecError> {
    let spawn_error = |source| ExecError::Spawn { tool, source };
    let mut sink = tempfile::tempfile().map_err(spawn_error)?;
    let stderr_sink = sink.try_clone().map_err(spawn_error)?;
    let started = std::time::Instant::now();
    let status = command(tool, args)?
        .stdout(Stdio::from(sink.try_clone().map_err(spawn_error)?))
        .stderr(Stdio::from(stderr_sink))
        .status()
        .map_err(spawn_error)?;
    tracing::debug!(
        tool = tool.program(),
        args = %render_args(args),
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
    fn long_output_keeps_the_tail() {
        let text = "x".repeat(5000) + "the end";
        let trimmed = trim_output(&text);
        assert!(trimmed.ends_with("the end"));
        assert!(trimmed.len() <= 4010);
    }

    #[test]
    fn tools_are_found_in_sbin() {
        // e2fsprogs is a hard requirement of banger; the machine has it.
        assert!(Tool::MkfsExt4.locate().is_some());
        assert!(Tool::Debugfs.locate().is_some());
    }
}
