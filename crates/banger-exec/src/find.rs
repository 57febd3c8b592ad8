//! Finding a program on `PATH`, through the `which` crate.

use std::ffi::OsStr;
use std::path::{Path, PathBuf};

use crate::ExecError;

/// The system administrator's directories, which a user's `PATH` often
/// lacks while the tools banger needs live there (`mkfs.ext4`, `dmsetup`).
pub const SBIN: &[&str] = &["/usr/sbin", "/sbin"];

/// Searched when `PATH` is not set at all.
const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// The executable `name` in the directories of `PATH` (the usual system
/// directories when `PATH` is unset), else in `also_in`, in order. A `name`
/// with a `/` is taken as a path and returned if it is executable.
pub fn find_program(name: impl AsRef<OsStr>, also_in: &[&str]) -> Option<PathBuf> {
    let name = name.as_ref();
    let path = std::env::var_os("PATH").unwrap_or_else(|| DEFAULT_PATH.into());
    first(name, &path).or_else(|| {
        also_in
            .iter()
            .find_map(|dir| first(name, Path::new(dir).as_os_str()))
    })
}

/// [`find_program`], or [`ExecError::NotFound`] naming where it looked and
/// the package to install.
pub fn require_program(
    name: &str,
    also_in: &'static [&'static str],
    package: &'static str,
) -> Result<PathBuf, ExecError> {
    find_program(name, also_in).ok_or_else(|| ExecError::NotFound {
        program: name.to_owned(),
        also_in,
        package,
    })
}

fn first(name: &OsStr, dirs: &OsStr) -> Option<PathBuf> {
    which::which_in_global(name, Some(dirs)).ok()?.next()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_programs_on_path_and_in_extra_directories() {
        assert!(find_program("sh", &[]).is_some());
        assert!(find_program("no-such-program-banger", SBIN).is_none());
        // e2fsprogs is a hard requirement of banger; it lives in sbin.
        assert!(find_program("mkfs.ext4", SBIN).is_some());
        assert_eq!(
            find_program("/bin/sh", &[]).as_deref(),
            Some(Path::new("/bin/sh"))
        );
    }

    #[test]
    fn a_missing_program_names_where_it_was_looked_for() {
        let err = require_program("no-such-program-banger", SBIN, "banger-tools").unwrap_err();
        assert_eq!(
            err.to_string(),
            "no-such-program-banger not found on PATH, /usr/sbin or /sbin; install banger-tools"
        );
        let err = require_program("no-such-program-banger", &[], "x").unwrap_err();
        assert!(err.to_string().contains("not found on PATH; install x"));
    }
}
