//! [`ExecError`]: why a program did not run to success.

use std::ffi::OsStr;
use std::fmt::Write as _;
use std::io;
use std::os::unix::process::ExitStatusExt;
use std::process::ExitStatus;
use std::time::Duration;

/// How much of a program's output an error keeps (its tail).
const OUTPUT_LIMIT: usize = 4000;

/// Why a program did not run to success.
///
/// `command` fields are the command line as shown to people (see
/// [`render`]); it is never executed as text.
#[derive(Debug, thiserror::Error)]
pub enum ExecError {
    /// The program is on none of the searched directories.
    #[error("{program} not found on {}; install {package}", places(also_in))]
    NotFound {
        program: String,
        /// The directories searched after `PATH`.
        also_in: &'static [&'static str],
        /// The package that provides it.
        package: &'static str,
    },
    /// The program could not be started, or waiting for it failed.
    #[error("cannot run {program}")]
    Spawn {
        program: String,
        #[source]
        source: io::Error,
    },
    /// It exited with a non-zero status.
    #[error("{command} exited with status {code}{}", detail(stderr))]
    Failed {
        command: String,
        code: i32,
        /// Its stderr (or stdout, when stderr was empty), trimmed.
        stderr: String,
    },
    /// A signal ended it.
    #[error("{command} was killed by signal {signal}{}", detail(stderr))]
    Killed {
        command: String,
        signal: i32,
        stderr: String,
    },
    /// It had not exited by the deadline and was killed.
    #[error("{command} did not finish within {}s", timeout.as_secs_f32())]
    TimedOut { command: String, timeout: Duration },
}

impl ExecError {
    /// The failed program's trimmed stderr, when it ran and failed.
    pub fn stderr(&self) -> Option<&str> {
        match self {
            Self::Failed { stderr, .. } | Self::Killed { stderr, .. } => Some(stderr),
            _ => None,
        }
    }

    /// The exit code, when the program ran and exited non-zero.
    pub fn code(&self) -> Option<i32> {
        match self {
            Self::Failed { code, .. } => Some(*code),
            _ => None,
        }
    }

    /// The error for a program that ended with `status`, which is not
    /// success: `Failed` or `Killed`, carrying stderr (or stdout when
    /// stderr is empty), trimmed and cut to its last few thousand bytes.
    pub fn from_status(command: String, status: ExitStatus, stderr: &[u8], stdout: &[u8]) -> Self {
        let text = String::from_utf8_lossy(stderr);
        let text = if text.trim().is_empty() {
            String::from_utf8_lossy(stdout)
        } else {
            text
        };
        let stderr = tail(text.trim());
        match (status.code(), status.signal()) {
            (Some(code), _) => Self::Failed {
                command,
                code,
                stderr,
            },
            (None, Some(signal)) => Self::Killed {
                command,
                signal,
                stderr,
            },
            // Neither an exit nor a signal: not produced by a finished wait.
            (None, None) => Self::Failed {
                command,
                code: -1,
                stderr,
            },
        }
    }
}

/// `PATH, /usr/sbin or /sbin`.
fn places(also_in: &[&str]) -> String {
    match also_in {
        [] => "PATH".to_owned(),
        [rest @ .., last] => {
            let mut places = vec!["PATH"];
            places.extend(rest);
            format!("{} or {last}", places.join(", "))
        }
    }
}

fn detail(stderr: &str) -> String {
    if stderr.is_empty() {
        String::new()
    } else {
        format!(": {stderr}")
    }
}

/// The last [`OUTPUT_LIMIT`] bytes of `text`, so a chatty program keeps
/// an error readable (the end says what went wrong).
fn tail(text: &str) -> String {
    if text.len() <= OUTPUT_LIMIT {
        return text.to_owned();
    }
    let mut cut = text.len() - OUTPUT_LIMIT;
    while !text.is_char_boundary(cut) {
        cut += 1;
    }
    format!("…{}", &text[cut..])
}

/// `program args…` for messages and logs: arguments that are empty or hold
/// whitespace are quoted. Only ever shown, never run.
pub fn render<'a>(program: &OsStr, args: impl IntoIterator<Item = &'a OsStr>) -> String {
    let mut line = program.to_string_lossy().into_owned();
    for arg in args {
        let arg = arg.to_string_lossy();
        if arg.is_empty() || arg.contains(char::is_whitespace) {
            let _ = write!(line, " {arg:?}");
        } else {
            let _ = write!(line, " {arg}");
        }
    }
    line
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_arguments_quoting_only_when_needed() {
        let args = [OsStr::new("-c"), OsStr::new("echo a"), OsStr::new("")];
        assert_eq!(render(OsStr::new("sh"), args), "sh -c \"echo a\" \"\"");
    }

    #[test]
    fn stays_small_enough_to_nest_in_callers_errors() {
        // Callers carry it as the source of their own variants; clippy's
        // large_enum_variant fires on them once it grows.
        assert!(size_of::<ExecError>() <= 64, "{}", size_of::<ExecError>());
    }

    #[test]
    fn long_output_keeps_the_tail() {
        let text = "x".repeat(5000) + "the end";
        let trimmed = tail(&text);
        assert!(trimmed.ends_with("the end"));
        assert!(trimmed.len() <= OUTPUT_LIMIT + 4);
    }

    #[test]
    fn failure_messages_name_the_command_and_status() {
        let failed = ExecError::from_status(
            "mkfs.ext4 -q img".into(),
            ExitStatus::from_raw(3 << 8),
            b"  bad size\n",
            b"",
        );
        assert_eq!(
            failed.to_string(),
            "mkfs.ext4 -q img exited with status 3: bad size"
        );
        assert_eq!(failed.code(), Some(3));
        let quiet = ExecError::from_status(
            "false".into(),
            ExitStatus::from_raw(1 << 8),
            b"",
            b"from stdout\n",
        );
        assert_eq!(quiet.stderr(), Some("from stdout"));
        let killed = ExecError::from_status("sleep 9".into(), ExitStatus::from_raw(9), b"", b"");
        assert_eq!(killed.to_string(), "sleep 9 was killed by signal 9");
    }
}
