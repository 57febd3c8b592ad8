//! The programs this crate runs (`iptables`, `resolvectl`), through
//! [`banger_exec`].
//!
//! A child inherits the network namespace of the thread that spawns it,
//! which is what the namespace-per-test harness and a daemon inside a
//! namespace rely on.

use std::path::Path;

use banger_exec::Cmd;
pub use banger_exec::ExecError;

/// Runs `program` with `args` (C locale, empty stdin), waits for it and
/// returns its stdout. A non-zero exit is an error carrying the command
/// and its stderr.
pub(crate) async fn run(program: &Path, args: &[String]) -> Result<String, ExecError> {
    let command = Cmd::new(program).args(args).env("LC_ALL", "C");
    tracing::debug!(command = %command.display(), "running");
    Ok(command.run_async().await?.stdout_text())
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
