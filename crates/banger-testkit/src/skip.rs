//! Tests that cannot run here say so where CI can count them.
//!
//! [`skip`] prints the reason and appends `test: reason` to the skip log
//! (`$BANGER_SKIP_LOG`, else `target/skipped-tests.log`), which
//! `scripts/test.sh` prints with a count after the run. With `CI=true`, a
//! test whose prerequisite the CI script provides (root, the packages
//! `scripts/install-deps.sh` installs) fails instead of skipping: CI never
//! passes a test it did not run.

use std::io::Write;
use std::path::PathBuf;

/// Whether the CI script provides what a test is missing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Prerequisite {
    /// Root, or a package `scripts/install-deps.sh` installs: missing in
    /// CI means CI is broken, so the test fails there.
    ProvidedByCi,
    /// Something CI does not have (a Firecracker binary, a filesystem
    /// without reflinks): the test skips everywhere it is missing.
    NotInCi,
}

/// Where skipped tests are recorded.
pub fn skip_log() -> PathBuf {
    std::env::var_os("BANGER_SKIP_LOG").map_or_else(
        || crate::sim::repo_root().join("target/skipped-tests.log"),
        PathBuf::from,
    )
}

/// Whether this run is CI's (`CI` set to anything but `false`/`0`/empty).
pub fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|value| !matches!(value.as_str(), "" | "0" | "false"))
}

/// Records that `test` does not run here because of `reason`. Panics in
/// CI when CI provides the prerequisite.
#[track_caller]
pub fn skip(test: &str, reason: &str, prerequisite: Prerequisite) {
    if prerequisite == Prerequisite::ProvidedByCi && in_ci() {
        panic!("{test} cannot run in CI, which should provide what it needs: {reason}");
    }
    eprintln!("skipped {test}: {reason}");
    append(&skip_log(), test, reason);
}

/// One short append per line: lines from parallel tests stay whole.
fn append(path: &std::path::Path, test: &str, reason: &str) {
    if let Some(dir) = path.parent() {
        let _ = std::fs::create_dir_all(dir);
    }
    if let Ok(mut log) = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
    {
        let _ = log.write_all(format!("{test}: {reason}\n").as_bytes());
    }
}

/// Whether the test runs as root; records the skip otherwise.
#[track_caller]
pub fn root_or_skip(test: &str, why: &str) -> bool {
    let root = nix::unistd::geteuid().is_root();
    if !root {
        skip(
            test,
            &format!("needs root ({why})"),
            Prerequisite::ProvidedByCi,
        );
    }
    root
}

/// Whether `program` is on PATH; records the skip otherwise. `package` is
/// the Debian package that provides it (CI installs those).
#[track_caller]
pub fn have_or_skip(test: &str, program: &str, package: &str) -> bool {
    let found = std::env::var_os("PATH")
        .is_some_and(|paths| std::env::split_paths(&paths).any(|dir| dir.join(program).is_file()));
    if !found {
        skip(
            test,
            &format!("{program} is not installed (apt-get install {package})"),
            Prerequisite::ProvidedByCi,
        );
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn skips_are_logged_a_line_each_for_the_summary() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("target/skipped.log");
        append(&log, "some_test", "it needs a unicorn");
        append(&log, "other_test", "no unicorn either");
        assert_eq!(
            std::fs::read_to_string(&log).unwrap(),
            "some_test: it needs a unicorn\nother_test: no unicorn either\n"
        );
    }
}
