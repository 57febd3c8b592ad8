//! The only place this crate starts processes (`iptables`, `resolvectl`).
//!
//! Programs get an argv, never a shell string. A child inherits the network
//! namespace of the thread that spawns it, which is what the namespace-per-test
//! harness and a daemon inside a namespace rely on.

use std::ffi::OsStr;
use std::fmt;
use std::io;
use std::path::Path;
use std::process::{ExitStatus, Stdio};

use tokio::process::Command;

/// Why a helper program did not succeed.
#[derive(Debug, thiserror::Error)]
pub enum ExecError {
    #[error("cannot run {program}")]
    Spawn {
        program: String,
        #[source]
        source: io::Error,
    },
    #[error("`{command}` failed ({status}): {stderr}")]
    Failed {
        command: String,
        status: ExitStatus,
        stderr: String,
    },
}

impl ExecError {
    /// The failed program's stderr, when it ran and failed.
    pub fn stderr(&self) -> Option<&str> {
        match self {
            Self::Spawn { .. } => None,
            Self::Failed { stderr, .. } => Some(stderr),
        }
    }
}

/// A command line rendered for messages and logs (never executed as text).
struct Rendered<'a>(&'a Path, &'a [String]);

impl fmt::Display for Rendered<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0.display())?;
        for arg in self.1 {
            if arg.is_empty() || arg.contains(char::is_whitespace) {
                write!(f, " {arg:?}")?;
            } else {
                write!(f, " {arg}")?;
            }
        }
        Ok(())
    }
}

/// Runs `program` with `args`, waits for it and returns its stdout.
///
/// A non-zero exit is an error carrying the command and its stderr.
pub(crate) async fn run(program: &Path, args: &[String]) -> Result<String, ExecError> {
    tracing::debug!(command = %Rendered(program, args), "running");
    let output = Command::new(program)
        .args(args.iter().map(OsStr::new))
        .env("LC_ALL", "C")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .output()
        .await
        .map_err(|source| ExecError::Spawn {
            program: program.display().to_string(),
            source,
        })?;
    if !output.status.success() {
        return Err(ExecError::Failed {
            command: Rendered(program, args).to_string(),
            status: output.status,
            stderr: String::from_utf8_lossy(&output.stderr).trim().to_owned(),
        });
    }
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn reports_stdout_failure_and_missing_programs() {
        let out = run(Path::new("echo"), &["a b".to_owned()]).await.unwrap();
        assert_eq!(out, "a b\n");

        let err = run(
            Path::new("sh"),
            &["-c".to_owned(), "echo oops >&2; exit 3".to_owned()],
        )
        .await
        .unwrap_err();
        assert_eq!(err.stderr(), Some("oops"));
        let message = err.to_string();
        assert!(
            message.contains("sh -c \"echo oops >&2; exit 3\""),
            "{message}"
        );
        assert!(message.contains("oops"), "{message}");

        let err = run(Path::new("/nonexistent/banger-net-test"), &[])
            .await
            .unwrap_err();
        assert!(matches!(err, ExecError::Spawn { .. }), "{err}");
        assert!(err.to_string().contains("/nonexistent/banger-net-test"));
    }
}
