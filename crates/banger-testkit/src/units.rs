//! Checking the systemd units banger installs with systemd's own verifier.

use std::path::Path;
use std::process::Command;

/// `systemd-analyze verify` of the unit text `unit`, written as `name` in
/// `scratch` with its `ExecStart` binary `exec` replaced by `/bin/true`
/// (verify wants it to exist). `user` checks it as a user unit (a user
/// manager needs a runtime dir; systemd need not run). Unknown keys and bad
/// values are warnings naming the unit file: any such line, or a failed
/// run, is the error.
pub fn verify_unit(
    scratch: &Path,
    name: &str,
    unit: &str,
    exec: &str,
    user: bool,
) -> Result<(), String> {
    let checked = scratch.join(name);
    std::fs::write(&checked, unit.replace(exec, "/bin/true")).map_err(|e| e.to_string())?;
    let mut command = Command::new("systemd-analyze");
    command.arg("verify");
    if user {
        let runtime = scratch.join("runtime");
        std::fs::create_dir_all(&runtime).map_err(|e| e.to_string())?;
        command.arg("--user").env("XDG_RUNTIME_DIR", &runtime);
    }
    let out = command
        .arg("--man=no")
        .arg(&checked)
        .output()
        .map_err(|e| format!("cannot run systemd-analyze: {e}"))?;
    let _ = std::fs::remove_file(&checked);
    let stderr = String::from_utf8_lossy(&out.stderr);
    let about_unit = stderr.lines().any(|line| line.contains(name));
    if out.status.success() && !about_unit {
        Ok(())
    } else {
        Err(format!("systemd-analyze verify {name}:\n{stderr}"))
    }
}

#[cfg(test)]
mod tests {
    use super::verify_unit;

    #[test]
    fn a_good_unit_passes_and_an_unknown_key_fails() {
        if !crate::have_or_skip(
            "a_good_unit_passes_and_an_unknown_key_fails",
            "systemd-analyze",
            "systemd",
        ) {
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let good = "[Unit]\nDescription=t\n\n[Service]\nExecStart=/opt/x/run\n";
        verify_unit(dir.path(), "t.service", good, "/opt/x/run", false).unwrap();
        verify_unit(dir.path(), "t.service", good, "/opt/x/run", true).unwrap();
        let bad = "[Unit]\nDescription=t\n\n[Service]\nExecStart=/opt/x/run\nBogusKey=1\n";
        let err = verify_unit(dir.path(), "t.service", bad, "/opt/x/run", false).unwrap_err();
        assert!(err.contains("BogusKey"), "{err}");
    }
}
