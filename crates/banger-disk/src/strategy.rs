//! Choosing how VM root disks are made in a directory: reflink where the
//! filesystem shares extents, a device-mapper snapshot where device-mapper
//! answers, a sparse copy otherwise.
//!
//! Detection costs two small temp files, one ioctl and a couple of opens;
//! the daemon runs it once at start-up (and `doctor` prints the reasons).

use std::io::Write;
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};

use banger_model::vm::StorageStrategy;
use fs_err as fs;

use crate::exec::Tool;
use crate::sys;

const DM_CONTROL: &str = "/dev/mapper/control";
const LOOP_CONTROL: &str = "/dev/loop-control";

/// Whether one strategy is usable, and why not.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Support {
    Yes,
    No(String),
}

impl Support {
    pub fn is_yes(&self) -> bool {
        matches!(self, Self::Yes)
    }
}

/// The outcome of probing a directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StrategyProbe {
    pub dir: PathBuf,
    /// The best usable strategy.
    pub strategy: StorageStrategy,
    pub reflink: Support,
    /// Only probed when reflink is unavailable.
    pub device_mapper: Option<Support>,
}

#[derive(Debug, thiserror::Error)]
pub enum DetectStrategyError {
    #[error("cannot create probe files in {dir}")]
    Probe {
        dir: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// Probes `dir` (which must exist and be writable).
#[tracing::instrument(level = "debug", skip_all, fields(dir = %dir.display()))]
pub fn detect_strategy(dir: &Path) -> Result<StrategyProbe, DetectStrategyError> {
    let reflink = probe_reflink(dir)?;
    let (strategy, device_mapper) = if reflink.is_yes() {
        (StorageStrategy::Reflink, None)
    } else {
        let dm = probe_device_mapper();
        let strategy = if dm.is_yes() {
            StorageStrategy::DmSnapshot
        } else {
            StorageStrategy::Copy
        };
        (strategy, Some(dm))
    };
    tracing::info!(dir = %dir.display(), %strategy, ?reflink, ?device_mapper, "storage strategy");
    Ok(StrategyProbe {
        dir: dir.to_owned(),
        strategy,
        reflink,
        device_mapper,
    })
}

/// Clones one temp file onto another in `dir` with FICLONE.
pub fn probe_reflink(dir: &Path) -> Result<Support, DetectStrategyError> {
    let probe_error = |source| DetectStrategyError::Probe {
        dir: dir.to_owned(),
        source,
    };
    let mut source = tempfile::Builder::new()
        .prefix(".banger-reflink-probe-")
        .tempfile_in(dir)
        .map_err(probe_error)?;
    // FICLONE needs at least one block of data to share.
    source.write_all(&[0x5a; 4096]).map_err(probe_error)?;
    source.flush().map_err(probe_error)?;
    let target = tempfile::Builder::new()
        .prefix(".banger-reflink-probe-")
        .tempfile_in(dir)
        .map_err(probe_error)?;
    Ok(
        match sys::ficlone(target.as_file().as_fd(), source.as_file().as_fd()) {
            Ok(()) => Support::Yes,
            Err(errno) => Support::No(format!(
                "the filesystem of {} cannot share extents (FICLONE: {})",
                dir.display(),
                errno.desc()
            )),
        },
    )
}

/// Device-mapper is usable when its control device answers DM_VERSION,
/// loop devices can be made and `dmsetup` is installed.
pub fn probe_device_mapper() -> Support {
    let control = match fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(DM_CONTROL)
    {
        Ok(control) => control,
        Err(error) => return Support::No(format!("device-mapper unavailable: {error}")),
    };
    let version = match sys::dm_version(control.file().as_fd()) {
        Ok(version) => version,
        Err(errno) => {
            return Support::No(format!(
                "device-mapper did not answer DM_VERSION: {}",
                errno.desc()
            ));
        }
    };
    tracing::debug!(?version, "device-mapper version");
    if let Err(error) = fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(LOOP_CONTROL)
    {
        return Support::No(format!("loop devices unavailable: {error}"));
    }
    if Tool::Dmsetup.locate().is_none() {
        return Support::No("dmsetup is not installed".to_owned());
    }
    Support::Yes
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn probe_leaves_no_files() {
        let dir = tempfile::tempdir().unwrap();
        let probe = detect_strategy(dir.path()).unwrap();
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
        // The reasons line up with the choice.
        match probe.strategy {
            StorageStrategy::Reflink => assert!(probe.reflink.is_yes()),
            StorageStrategy::DmSnapshot => {
                assert_eq!(probe.device_mapper, Some(Support::Yes));
            }
            StorageStrategy::Copy => {
                assert!(!probe.reflink.is_yes());
                assert!(matches!(probe.device_mapper, Some(Support::No(_))));
            }
        }
    }

    #[test]
    fn missing_dir_is_an_error() {
        let error = detect_strategy(Path::new("/nonexistent/banger")).unwrap_err();
        assert!(error.to_string().contains("/nonexistent/banger"));
    }
}
