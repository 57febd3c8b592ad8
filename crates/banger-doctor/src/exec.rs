//! The only place this crate starts processes: `PROGRAM --version`.

use std::io::Read;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Runs `program --version` and returns the first non-empty line it prints
/// (stdout, else stderr). A program that has not exited after `timeout` is
/// killed and reported.
pub fn program_version(program: &Path, timeout: Duration) -> Result<String, String> {
    let mut child = Command::new(program)
        .arg("--version")
        .env("LC_ALL", "C")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|err| format!("cannot run {}: {err}", program.display()))?;
    let deadline = Instant::now() + timeout;
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break status,
            Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(10)),
            Ok(None) => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!(
                    "{} --version did not finish within {}s",
                    program.display(),
                    timeout.as_secs()
                ));
            }
            Err(err) => return Err(format!("waiting for {}: {err}", program.display())),
        }
    };
    let mut stdout = String::new();
    let mut stderr = String::new();
    if let Some(mut out) = child.stdout.take() {
        let _ = out.read_to_string(&mut stdout);
    }
    if let Some(mut err) = child.stderr.take() {
        let _ = err.read_to_string(&mut stderr);
    }
    let first_line = |text: &str| {
        text.lines()
            .map(str::trim)
            .find(|line| !line.is_empty())
            .map(str::to_owned)
    };
    if !status.success() {
        return Err(format!(
            "{} --version failed ({status}){}",
            program.display(),
            first_line(&stderr)
                .map(|line| format!(": {line}"))
                .unwrap_or_default()
        ));
    }
    first_line(&stdout)
        .or_else(|| first_line(&stderr))
        .ok_or_else(|| format!("{} --version printed nothing", program.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_first_line() {
        // coreutils' `true --version` prints its version on stdout.
        let version = program_version(Path::new("/bin/true"), Duration::from_secs(10)).unwrap();
        assert!(version.contains("true"), "{version}");
    }

    #[test]
    fn a_missing_program_is_an_error() {
        let err = program_version(
            Path::new("/nonexistent/firecracker"),
            Duration::from_secs(1),
        )
        .unwrap_err();
        assert!(err.contains("/nonexistent/firecracker"), "{err}");
    }

    #[test]
    fn a_failing_program_is_an_error() {
        let err = program_version(Path::new("/bin/false"), Duration::from_secs(10)).unwrap_err();
        assert!(err.contains("failed"), "{err}");
    }
}
