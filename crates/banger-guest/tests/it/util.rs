//! Helpers shared by the integration tests.

use std::path::Path;
use std::process::Command;

/// Whether `program` can be found on PATH; prints why a test is skipped when not.
pub(crate) fn have(program: &str, test: &str) -> bool {
    let package = match program {
        "systemd-analyze" => "systemd",
        "ssh-keygen" => "openssh-client",
        "unshare" | "sha256sum" => "coreutils util-linux",
        "ip" => "iproute2",
        other => other,
    };
    banger_testkit::have_or_skip(test, program, package)
}

/// The repository root (two levels above this crate).
pub(crate) fn repo_root() -> &'static Path {
    Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../.."))
}

/// Runs a command and returns (status code, stdout, stderr).
pub(crate) fn output(cmd: &mut Command) -> (i32, String, String) {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("running {cmd:?}: {e}"));
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}
