//! The benchmark's external programs: `mkfs.btrfs` for a reflink scratch
//! filesystem and `cp --sparse=always` as the copy baseline.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

fn run(program: &str, args: &[&std::ffi::OsStr]) -> Result<Duration, String> {
    let started = Instant::now();
    let output = Command::new(program)
        .args(args)
        .output()
        .map_err(|error| format!("cannot run {program}: {error}"))?;
    let elapsed = started.elapsed();
    if !output.status.success() {
        return Err(format!(
            "{program} failed: {}",
            String::from_utf8_lossy(&output.stderr).trim()
        ));
    }
    Ok(elapsed)
}

pub(crate) fn mkfs_btrfs(image: &Path) -> Result<(), String> {
    run(
        "mkfs.btrfs",
        &["-q".as_ref(), "-f".as_ref(), image.as_os_str()],
    )
    .map(|_| ())
}

/// Wall time of `cp --sparse=always SRC DST`.
pub(crate) fn cp_sparse(src: &Path, dst: &Path) -> Result<Duration, String> {
    run(
        "cp",
        &["--sparse=always".as_ref(), src.as_os_str(), dst.as_os_str()],
    )
}
