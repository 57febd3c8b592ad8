//! The one program this crate runs, through [`banger_exec`]:
//! `PROGRAM --version`.

use std::error::Error as _;
use std::path::Path;
use std::time::Duration;

use banger_exec::Cmd;

/// Runs `program --version` and returns the first non-empty line it prints
/// (stdout, else stderr). A program that has not exited after `timeout` is
/// killed and reported.
pub fn program_version(program: &Path, timeout: Duration) -> Result<String, String> {
    let output = Cmd::new(program)
        .arg("--version")
        .env("LC_ALL", "C")
        .output_timeout(timeout)
        .map_err(|err| match err.source() {
            Some(source) => format!("{err}: {source}"),
            None => err.to_string(),
        })?;
    let first_line = |text: &str| {
        text.lines()
            .map(str::trim)
            .find(|line| !line.is_empty())
            .map(str::to_owned)
    };
    let (stdout, stderr) = (output.stdout_text(), output.stderr_text());
    if !output.success() {
        return Err(format!(
            "{} --version failed ({}){}",
            program.display(),
            output.status,
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
    fn a_slow_program_is_reported() {
        let dir = tempfile::tempdir().unwrap();
        let slow = dir.path().join("slow");
        std::fs::write(&slow, "#!/bin/sh\nsleep 30\n").unwrap();
        std::fs::set_permissions(&slow, std::os::unix::fs::PermissionsExt::from_mode(0o755))
            .unwrap();
        let err = program_version(&slow, Duration::from_millis(200)).unwrap_err();
        assert!(
            err.ends_with("--version did not finish within 0.2s"),
            "{err}"
        );
    }

    #[test]
    fn a_failing_program_is_an_error() {
        let err = program_version(Path::new("/bin/false"), Duration::from_secs(10)).unwrap_err();
        assert!(err.contains("failed"), "{err}");
    }
}
