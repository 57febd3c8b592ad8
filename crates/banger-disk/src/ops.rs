//! [`DiskOps`]: the privileged or slow disk operations the daemon calls,
//! as one narrow trait. [`HostDiskOps`] does them for real;
//! [`crate::fake::FakeDiskOps`] records them and injects failures for the
//! daemon's rollback tests.
//!
//! Everything here is blocking; from tokio, call it in `spawn_blocking`.

use std::io;
use std::path::{Path, PathBuf};

use banger_model::ByteSize;
use serde::{Deserialize, Serialize};

use crate::dm::{self, DM_PREFIX, DmDevice, ListDmError};
use crate::edits::{self, ApplyEditsError, Ext4Edits};
use crate::host::RealHost;
use crate::loopdev::{self, ListLoopsError, LoopInfo};
use crate::overlay::{self, CreateRootError, RemoveRootError, RootOverlay, RootRequest};
use crate::rollback::ReleaseError;
use crate::workdisk::{
    self, GrowOutcome, GrowWorkDiskError, MakeWorkDiskError, WorkDisk, WorkDiskRequest,
};

/// A host resource that looks like banger's: a dm device named `banger-*`
/// or a loop device backed by a file under banger's state directory.
/// Reconcile releases those no live VM uses.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Orphan {
    Dm(DmDevice),
    Loop(LoopInfo),
}

impl std::fmt::Display for Orphan {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Dm(device) => write!(f, "dm device {}", device.name),
            Self::Loop(info) => write!(f, "loop {} ({})", info.device, info.backing.path.display()),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ListOrphansError {
    #[error("cannot list loop devices")]
    Loops(#[source] ListLoopsError),
    #[error("cannot list device-mapper devices")]
    Dm(#[source] ListDmError),
}

#[derive(Debug, thiserror::Error)]
#[error("cannot remove work disk {path}")]
pub struct RemoveWorkDiskError {
    pub path: PathBuf,
    #[source]
    pub source: io::Error,
}

/// The disk operations the daemon performs.
pub trait DiskOps: Send + Sync + std::fmt::Debug {
    /// Makes a VM's copy-on-write root disk; rolls back on failure.
    fn create_root(&self, request: &RootRequest) -> Result<RootOverlay, CreateRootError>;
    /// Makes a deactivated root usable again (VM start after stop).
    fn activate_root(&self, overlay: &RootOverlay) -> Result<RootOverlay, CreateRootError>;
    /// Releases devices but keeps data (VM stop).
    fn deactivate_root(&self, overlay: &RootOverlay) -> Result<RootOverlay, RemoveRootError>;
    /// Releases everything, data included (VM delete, rollback).
    fn remove_root(&self, overlay: &RootOverlay) -> Result<(), RemoveRootError>;
    /// Clones the image's work seed and grows it.
    fn make_work_disk(&self, request: &WorkDiskRequest) -> Result<WorkDisk, MakeWorkDiskError>;
    /// Grows an existing (unused) work disk (`vm set --disk-size`).
    fn grow_work_disk(&self, path: &Path, size: ByteSize)
    -> Result<GrowOutcome, GrowWorkDiskError>;
    /// Deletes a work disk; a missing file is fine.
    fn remove_work_disk(&self, path: &Path) -> Result<(), RemoveWorkDiskError>;
    /// Applies ext4 edits to an unmounted image or device.
    fn apply_edits(&self, image: &Path, edits: &Ext4Edits) -> Result<(), ApplyEditsError>;
    /// Every banger-looking dm device and every loop device backed by a
    /// file under `state_dir`; the caller keeps what live VMs use.
    fn list_orphans(&self, state_dir: &Path) -> Result<Vec<Orphan>, ListOrphansError>;
    /// Removes one resource reported by [`DiskOps::list_orphans`].
    fn release_orphan(&self, orphan: &Orphan) -> Result<(), ReleaseError>;
}

/// The real implementation.
#[derive(Debug, Clone, Copy, Default)]
pub struct HostDiskOps;

impl HostDiskOps {
    pub fn new() -> Self {
        Self
    }
}

impl DiskOps for HostDiskOps {
    fn create_root(&self, request: &RootRequest) -> Result<RootOverlay, CreateRootError> {
        overlay::create_root(&RealHost, request)
    }

    fn activate_root(&self, overlay: &RootOverlay) -> Result<RootOverlay, CreateRootError> {
        overlay::activate_root(&RealHost, overlay)
    }

    fn deactivate_root(&self, overlay: &RootOverlay) -> Result<RootOverlay, RemoveRootError> {
        overlay::deactivate_root(&RealHost, overlay)
    }

    fn remove_root(&self, overlay: &RootOverlay) -> Result<(), RemoveRootError> {
        overlay::remove_root(&RealHost, overlay)
    }

    fn make_work_disk(&self, request: &WorkDiskRequest) -> Result<WorkDisk, MakeWorkDiskError> {
        workdisk::make_work_disk(request)
    }

    fn grow_work_disk(
        &self,
        path: &Path,
        size: ByteSize,
    ) -> Result<GrowOutcome, GrowWorkDiskError> {
        workdisk::grow_work_disk(path, size)
    }

    fn remove_work_disk(&self, path: &Path) -> Result<(), RemoveWorkDiskError> {
        match fs_err::remove_file(path) {
            Ok(()) => Ok(()),
            Err(error) if error.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(error) => Err(RemoveWorkDiskError {
                path: path.to_owned(),
                source: error,
            }),
        }
    }

    fn apply_edits(&self, image: &Path, edits: &Ext4Edits) -> Result<(), ApplyEditsError> {
        edits::apply_edits(image, edits)
    }

    fn list_orphans(&self, state_dir: &Path) -> Result<Vec<Orphan>, ListOrphansError> {
        list_orphans(state_dir)
    }

    fn release_orphan(&self, orphan: &Orphan) -> Result<(), ReleaseError> {
        release_orphan(orphan)
    }
}

/// See [`DiskOps::list_orphans`]. dm devices come first: removing them
/// frees the loop devices under them.
pub fn list_orphans(state_dir: &Path) -> Result<Vec<Orphan>, ListOrphansError> {
    let mut found: Vec<Orphan> = dm::list_devices(DM_PREFIX)
        .map_err(ListOrphansError::Dm)?
        .into_iter()
        .map(Orphan::Dm)
        .collect();
    found.extend(
        loopdev::list_backed_under(state_dir)
            .map_err(ListOrphansError::Loops)?
            .into_iter()
            .map(Orphan::Loop),
    );
    Ok(found)
}

/// See [`DiskOps::release_orphan`].
pub fn release_orphan(orphan: &Orphan) -> Result<(), ReleaseError> {
    tracing::info!(%orphan, "releasing orphan");
    match orphan {
        Orphan::Dm(device) => {
            if !dm::exists(&device.name) {
                return Ok(());
            }
            dm::remove(&device.name).map_err(|source| ReleaseError::RemoveDm {
                name: device.name.clone(),
                source,
            })
        }
        Orphan::Loop(info) => loopdev::detach_if_backed_by(info.device, &info.backing.path)
            .map(|_| ())
            .map_err(|source| ReleaseError::DetachLoop {
                device: info.device,
                backing: info.backing.path.clone(),
                source,
            }),
    }
}
