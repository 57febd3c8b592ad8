//! The async ways to run a [`Cmd`], on tokio's process API. They behave
//! as their synchronous namesakes.

use std::fs::File;
use std::process::{ExitStatus, Stdio};

use tokio::io::AsyncRead;
use tokio::process::Child;

use crate::{Cmd, ExecError, Output};

impl Cmd {
    fn into_tokio(self) -> tokio::process::Command {
        let mut command = tokio::process::Command::from(self.inner);
        command.kill_on_drop(self.kill_on_drop);
        command
    }

    /// [`Cmd::output`], awaiting the program.
    pub async fn output_async(self) -> Result<Output, ExecError> {
        let command = self.display();
        let error = self.spawn_error();
        let output = self.into_tokio().output().await.map_err(error)?;
        Ok(Output::new(command, output))
    }

    /// [`Cmd::run`], awaiting the program.
    pub async fn run_async(self) -> Result<Output, ExecError> {
        self.output_async().await?.check()
    }

    /// [`Cmd::output_with_stdin`], streaming `input` to the program.
    pub async fn output_with_stdin_async(
        self,
        mut input: impl AsyncRead + Unpin,
    ) -> Result<Output, ExecError> {
        let command = self.display();
        let error = self.spawn_error();
        let mut child = match self
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .into_tokio()
            .spawn()
        {
            Ok(child) => child,
            Err(source) => return Err(error(source)),
        };
        let mut stdin = child.stdin.take().expect("stdin is piped");
        let feed = async move {
            let copied = tokio::io::copy(&mut input, &mut stdin).await;
            drop(stdin);
            copied
        };
        let (fed, output) = tokio::join!(feed, child.wait_with_output());
        let result = output.and_then(|output| {
            if output.status.success() {
                fed?;
            }
            Ok(output)
        });
        result
            .map(|output| Output::new(command, output))
            .map_err(error)
    }

    /// [`Cmd::status`], awaiting the program.
    pub async fn status_async(self) -> Result<ExitStatus, ExecError> {
        let error = self.spawn_error();
        self.into_tokio().status().await.map_err(error)
    }

    /// [`Cmd::spawn`], returning tokio's handle.
    pub fn spawn_async(self) -> Result<Child, ExecError> {
        let error = self.spawn_error();
        self.into_tokio().spawn().map_err(error)
    }

    /// [`Cmd::spawn_detached`], returning tokio's handle (which never
    /// kills the program when dropped).
    pub fn spawn_detached_async(self, log: Option<File>) -> Result<Child, ExecError> {
        self.kill_on_drop(false).detached(log)?.spawn_async()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn runs_to_output_and_reports_failures() {
        let out = Cmd::new("echo").arg("a b").run_async().await.unwrap();
        assert_eq!(out.stdout_text(), "a b\n");
        let err = Cmd::new("sh")
            .args(["-c", "echo oops >&2; exit 3"])
            .run_async()
            .await
            .unwrap_err();
        assert_eq!(err.stderr(), Some("oops"));
        let err = Cmd::new("/nonexistent/banger-exec-test")
            .status_async()
            .await
            .unwrap_err();
        assert!(matches!(err, ExecError::Spawn { .. }), "{err}");
    }

    #[tokio::test]
    async fn streams_stdin() {
        let out = Cmd::new("cat")
            .output_with_stdin_async(&b"streamed"[..])
            .await
            .unwrap();
        assert_eq!(out.stdout_text(), "streamed");
    }

    #[tokio::test]
    async fn a_detached_program_writes_to_its_log() {
        let dir = tempfile::tempdir().unwrap();
        let log_path = dir.path().join("log");
        let mut child = Cmd::new("/bin/sh")
            .args(["-c", "echo detached"])
            .spawn_detached_async(Some(File::create(&log_path).unwrap()))
            .unwrap();
        assert!(child.wait().await.unwrap().success());
        assert_eq!(std::fs::read_to_string(&log_path).unwrap(), "detached\n");
    }
}
