//! [`FakeDiskOps`]: a [`DiskOps`] that touches nothing, records every call,
//! keeps track of what is "live" (roots and work disks made and not yet
//! removed) and fails the Nth call of any operation on request — so the
//! daemon can test that each failure point of a create rolls back fully.
//!
//! ```
//! use banger_disk::fake::{DiskOp, FakeDiskOps};
//! let disks = FakeDiskOps::new();
//! disks.fail_nth(DiskOp::MakeWorkDisk, 1);
//! // ... run the daemon's create against `disks` ...
//! assert!(disks.is_clean(), "leaked: {:?}", disks.live_roots());
//! ```

use std::collections::{BTreeMap, HashMap, HashSet};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};

use banger_model::ByteSize;
use banger_model::vm::{StorageStrategy, VmPaths};

use crate::clone::{CloneFileError, CloneMethod};
use crate::edits::{ApplyEditsError, Ext4Edits};
use crate::exec::{ExecError, Tool};
use crate::loopdev::{DetachLoopError, ListLoopsError, LoopDevice};
use crate::ops::{DiskOps, ListOrphansError, Orphan, RemoveWorkDiskError};
use crate::overlay::{self, CreateRootError, DmLoops, RemoveRootError, RootOverlay, RootRequest};
use crate::rollback::ReleaseError;
use crate::workdisk::{
    GrowOutcome, GrowWorkDiskError, MakeWorkDiskError, WorkDisk, WorkDiskRequest,
};

/// The operations of [`DiskOps`], for failure injection and counting.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum DiskOp {
    CreateRoot,
    ActivateRoot,
    DeactivateRoot,
    RemoveRoot,
    MakeWorkDisk,
    GrowWorkDisk,
    RemoveWorkDisk,
    ApplyEdits,
    ListOrphans,
    ReleaseOrphan,
}

/// One recorded call, with its arguments.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DiskCall {
    CreateRoot(RootRequest),
    ActivateRoot(RootOverlay),
    DeactivateRoot(RootOverlay),
    RemoveRoot(RootOverlay),
    MakeWorkDisk(WorkDiskRequest),
    GrowWorkDisk { path: PathBuf, size: ByteSize },
    RemoveWorkDisk(PathBuf),
    ApplyEdits { image: PathBuf, edits: Ext4Edits },
    ListOrphans(PathBuf),
    ReleaseOrphan(Orphan),
}

impl DiskCall {
    pub fn op(&self) -> DiskOp {
        match self {
            Self::CreateRoot(_) => DiskOp::CreateRoot,
            Self::ActivateRoot(_) => DiskOp::ActivateRoot,
            Self::DeactivateRoot(_) => DiskOp::DeactivateRoot,
            Self::RemoveRoot(_) => DiskOp::RemoveRoot,
            Self::MakeWorkDisk(_) => DiskOp::MakeWorkDisk,
            Self::GrowWorkDisk { .. } => DiskOp::GrowWorkDisk,
            Self::RemoveWorkDisk(_) => DiskOp::RemoveWorkDisk,
            Self::ApplyEdits { .. } => DiskOp::ApplyEdits,
            Self::ListOrphans(_) => DiskOp::ListOrphans,
            Self::ReleaseOrphan(_) => DiskOp::ReleaseOrphan,
        }
    }
}

#[derive(Debug, Default)]
struct State {
    calls: Vec<DiskCall>,
    counts: HashMap<DiskOp, usize>,
    fail_nth: HashSet<(DiskOp, usize)>,
    fail_always: HashSet<DiskOp>,
    /// Live roots by device path.
    roots: BTreeMap<PathBuf, RootOverlay>,
    /// Live work disks and their sizes.
    work_disks: BTreeMap<PathBuf, ByteSize>,
    orphans: Vec<Orphan>,
    next_loop: u32,
}

/// The recording fake. Cheap to share behind an `Arc`.
#[derive(Debug, Default)]
pub struct FakeDiskOps {
    state: Mutex<State>,
}

fn injected(op: DiskOp, call: usize) -> io::Error {
    io::Error::other(format!("injected failure of {op:?} call {call}"))
}

impl FakeDiskOps {
    pub fn new() -> Self {
        Self::default()
    }

    fn state(&self) -> MutexGuard<'_, State> {
        // A panicking test thread must not hide the record from others.
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Makes the `nth` call (1-based, counted per operation) of `op` fail.
    pub fn fail_nth(&self, op: DiskOp, nth: usize) -> &Self {
        self.state().fail_nth.insert((op, nth));
        self
    }

    /// Makes every call of `op` fail.
    pub fn fail_always(&self, op: DiskOp) -> &Self {
        self.state().fail_always.insert(op);
        self
    }

    /// Stops injecting failures.
    pub fn clear_failures(&self) {
        let mut state = self.state();
        state.fail_nth.clear();
        state.fail_always.clear();
    }

    /// What [`DiskOps::list_orphans`] will report.
    pub fn set_orphans(&self, orphans: Vec<Orphan>) {
        self.state().orphans = orphans;
    }

    pub fn calls(&self) -> Vec<DiskCall> {
        self.state().calls.clone()
    }

    /// The operations called, in order.
    pub fn ops(&self) -> Vec<DiskOp> {
        self.state().calls.iter().map(DiskCall::op).collect()
    }

    pub fn count(&self, op: DiskOp) -> usize {
        self.state().counts.get(&op).copied().unwrap_or(0)
    }

    /// Roots created and not removed.
    pub fn live_roots(&self) -> Vec<RootOverlay> {
        self.state().roots.values().cloned().collect()
    }

    /// Work disks made and not removed.
    pub fn live_work_disks(&self) -> Vec<PathBuf> {
        self.state().work_disks.keys().cloned().collect()
    }

    /// Nothing is live.
    pub fn is_clean(&self) -> bool {
        let state = self.state();
        state.roots.is_empty() && state.work_disks.is_empty()
    }

    /// Records the call; `Some(call number)` when it must fail.
    fn record(&self, call: DiskCall) -> Result<(), (DiskOp, usize)> {
        let mut state = self.state();
        let op = call.op();
        let count = {
            let count = state.counts.entry(op).or_default();
            *count += 1;
            *count
        };
        state.calls.push(call);
        if state.fail_always.contains(&op) || state.fail_nth.contains(&(op, count)) {
            Err((op, count))
        } else {
            Ok(())
        }
    }
}

impl DiskOps for FakeDiskOps {
    fn create_root(&self, request: &RootRequest) -> Result<RootOverlay, CreateRootError> {
        self.record(DiskCall::CreateRoot(request.clone()))
            .map_err(|(op, n)| CreateRootError::Io {
                path: request.vm_dir.clone(),
                source: injected(op, n),
            })?;
        let mut state = self.state();
        let overlay = match request.strategy {
            StorageStrategy::DmSnapshot => {
                let base = LoopDevice {
                    number: state.next_loop,
                };
                let cow = LoopDevice {
                    number: state.next_loop + 1,
                };
                state.next_loop += 2;
                RootOverlay::DmSnapshot {
                    name: crate::dm::root_dm_name(&request.vm_id)?,
                    base: request.base.clone(),
                    cow: overlay::cow_path(&request.vm_dir),
                    loops: Some(DmLoops { base, cow }),
                }
            }
            strategy => RootOverlay::File {
                strategy,
                path: VmPaths::new(&request.vm_dir).root_disk(),
            },
        };
        if state.roots.contains_key(&overlay.device()) {
            return Err(CreateRootError::Clone(CloneFileError::CreateDestination {
                path: overlay.device(),
                source: io::Error::from(io::ErrorKind::AlreadyExists),
            }));
        }
        state.roots.insert(overlay.device(), overlay.clone());
        Ok(overlay)
    }

    fn activate_root(&self, root: &RootOverlay) -> Result<RootOverlay, CreateRootError> {
        self.record(DiskCall::ActivateRoot(root.clone()))
            .map_err(|(op, n)| CreateRootError::Io {
                path: root.device(),
                source: injected(op, n),
            })?;
        let mut state = self.state();
        let active = match root {
            RootOverlay::DmSnapshot {
                name,
                base,
                cow,
                loops: None,
            } => {
                let loops = DmLoops {
                    base: LoopDevice {
                        number: state.next_loop,
                    },
                    cow: LoopDevice {
                        number: state.next_loop + 1,
                    },
                };
                state.next_loop += 2;
                RootOverlay::DmSnapshot {
                    name: name.clone(),
                    base: base.clone(),
                    cow: cow.clone(),
                    loops: Some(loops),
                }
            }
            other => other.clone(),
        };
        if !state.roots.contains_key(&active.device()) {
            return Err(CreateRootError::Missing {
                path: active.device(),
            });
        }
        state.roots.insert(active.device(), active.clone());
        Ok(active)
    }

    fn deactivate_root(&self, root: &RootOverlay) -> Result<RootOverlay, RemoveRootError> {
        self.record(DiskCall::DeactivateRoot(root.clone()))
            .map_err(|(op, n)| RemoveRootError {
                failures: vec![ReleaseError::RemoveFile {
                    path: root.device(),
                    source: injected(op, n),
                }],
            })?;
        let inactive = match root {
            RootOverlay::DmSnapshot {
                name, base, cow, ..
            } => RootOverlay::DmSnapshot {
                name: name.clone(),
                base: base.clone(),
                cow: cow.clone(),
                loops: None,
            },
            other => other.clone(),
        };
        let mut state = self.state();
        if state.roots.contains_key(&inactive.device()) {
            state.roots.insert(inactive.device(), inactive.clone());
        }
        Ok(inactive)
    }

    fn remove_root(&self, root: &RootOverlay) -> Result<(), RemoveRootError> {
        self.record(DiskCall::RemoveRoot(root.clone()))
            .map_err(|(op, n)| RemoveRootError {
                failures: vec![ReleaseError::RemoveFile {
                    path: root.device(),
                    source: injected(op, n),
                }],
            })?;
        self.state().roots.remove(&root.device());
        Ok(())
    }

    fn make_work_disk(&self, request: &WorkDiskRequest) -> Result<WorkDisk, MakeWorkDiskError> {
        self.record(DiskCall::MakeWorkDisk(request.clone()))
            .map_err(|(op, n)| {
                MakeWorkDiskError::Clone(CloneFileError::CreateDestination {
                    path: request.dest.clone(),
                    source: injected(op, n),
                })
            })?;
        let mut state = self.state();
        if state.work_disks.contains_key(&request.dest) {
            return Err(MakeWorkDiskError::Clone(
                CloneFileError::CreateDestination {
                    path: request.dest.clone(),
                    source: io::Error::from(io::ErrorKind::AlreadyExists),
                },
            ));
        }
        state.work_disks.insert(request.dest.clone(), request.size);
        Ok(WorkDisk {
            path: request.dest.clone(),
            size: request.size,
            method: match (&request.content, request.strategy) {
                (Some(_), _) => None,
                (None, StorageStrategy::Reflink) => Some(CloneMethod::Reflink),
                (None, _) => Some(CloneMethod::SparseCopy),
            },
            from_cache: false,
        })
    }

    fn grow_work_disk(
        &self,
        path: &Path,
        size: ByteSize,
    ) -> Result<GrowOutcome, GrowWorkDiskError> {
        self.record(DiskCall::GrowWorkDisk {
            path: path.to_owned(),
            size,
        })
        .map_err(|(op, n)| GrowWorkDiskError::Extend {
            path: path.to_owned(),
            source: injected(op, n),
        })?;
        let mut state = self.state();
        let Some(current) = state.work_disks.get(path).copied() else {
            return Err(GrowWorkDiskError::Extend {
                path: path.to_owned(),
                source: io::Error::from(io::ErrorKind::NotFound),
            });
        };
        if size < current {
            return Err(GrowWorkDiskError::Shrink {
                path: path.to_owned(),
                current,
                requested: size,
            });
        }
        state.work_disks.insert(path.to_owned(), size);
        Ok(GrowOutcome {
            before: current,
            after: size,
        })
    }

    fn remove_work_disk(&self, path: &Path) -> Result<(), RemoveWorkDiskError> {
        self.record(DiskCall::RemoveWorkDisk(path.to_owned()))
            .map_err(|(op, n)| RemoveWorkDiskError {
                path: path.to_owned(),
                source: injected(op, n),
            })?;
        self.state().work_disks.remove(path);
        Ok(())
    }

    fn apply_edits(&self, image: &Path, edits: &Ext4Edits) -> Result<(), ApplyEditsError> {
        self.record(DiskCall::ApplyEdits {
            image: image.to_owned(),
            edits: edits.clone(),
        })
        .map_err(|(op, n)| ApplyEditsError::Stage(injected(op, n)))
    }

    fn list_orphans(&self, state_dir: &Path) -> Result<Vec<Orphan>, ListOrphansError> {
        self.record(DiskCall::ListOrphans(state_dir.to_owned()))
            .map_err(|(op, n)| {
                ListOrphansError::Loops(ListLoopsError::Read {
                    path: state_dir.to_owned(),
                    source: injected(op, n),
                })
            })?;
        Ok(self.state().orphans.clone())
    }

    fn release_orphan(&self, orphan: &Orphan) -> Result<(), ReleaseError> {
        self.record(DiskCall::ReleaseOrphan(orphan.clone()))
            .map_err(|(op, n)| match orphan {
                Orphan::Dm(device) => ReleaseError::RemoveDm {
                    name: device.name.clone(),
                    source: ExecError::Spawn {
                        program: Tool::Dmsetup.program().to_owned(),
                        source: injected(op, n),
                    },
                },
                Orphan::Loop(info) => ReleaseError::DetachLoop {
                    device: info.device,
                    backing: info.backing.path.clone(),
                    source: DetachLoopError::Ioctl {
                        device: info.device,
                        source: injected(op, n),
                    },
                },
            })?;
        self.state().orphans.retain(|known| known != orphan);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use banger_model::Id;

    fn root_request(dir: &str) -> RootRequest {
        RootRequest {
            base: PathBuf::from("/img/rootfs.ext4"),
            vm_dir: PathBuf::from(dir),
            vm_id: Id::from_stored("00112233445566778899aabbccddeeff"),
            strategy: StorageStrategy::Reflink,
        }
    }

    fn work_request(dest: &str) -> WorkDiskRequest {
        WorkDiskRequest {
            seed: PathBuf::from("/img/work-seed.ext4"),
            dest: PathBuf::from(dest),
            size: ByteSize::gib(8),
            strategy: StorageStrategy::Reflink,
            grown_seed_cache: None,
            content: None,
            host_files: None,
            edits: None,
            progress: None,
        }
    }

    /// The shape of a daemon's create: root, work disk, edits; on failure
    /// undo in reverse.
    fn create(disks: &dyn DiskOps) -> Result<(), String> {
        let root = disks
            .create_root(&root_request("/vms/a"))
            .map_err(|e| crate::rollback::chain(&e))?;
        let work = match disks.make_work_disk(&work_request("/vms/a/work.ext4")) {
            Ok(work) => work,
            Err(error) => {
                disks
                    .remove_root(&root)
                    .map_err(|e| crate::rollback::chain(&e))?;
                return Err(crate::rollback::chain(&error));
            }
        };
        let mut edits = Ext4Edits::new();
        edits
            .write_file("/etc/hostname", "a\n", crate::Meta::root(0o644))
            .unwrap();
        if let Err(error) = disks.apply_edits(&root.device(), &edits) {
            disks
                .remove_work_disk(&work.path)
                .map_err(|e| crate::rollback::chain(&e))?;
            disks
                .remove_root(&root)
                .map_err(|e| crate::rollback::chain(&e))?;
            return Err(crate::rollback::chain(&error));
        }
        Ok(())
    }

    #[test]
    fn each_injected_failure_is_reported_and_leaves_nothing_live() {
        for op in [DiskOp::CreateRoot, DiskOp::MakeWorkDisk, DiskOp::ApplyEdits] {
            let disks = FakeDiskOps::new();
            disks.fail_nth(op, 1);
            let error = create(&disks).unwrap_err();
            assert!(error.contains("injected failure"), "{op:?}: {error}");
            assert!(
                disks.is_clean(),
                "{op:?} leaked {:?} {:?}",
                disks.live_roots(),
                disks.live_work_disks()
            );
        }
        let disks = FakeDiskOps::new();
        create(&disks).unwrap();
        assert_eq!(
            disks.ops(),
            vec![DiskOp::CreateRoot, DiskOp::MakeWorkDisk, DiskOp::ApplyEdits]
        );
        assert_eq!(disks.live_roots().len(), 1);
        assert_eq!(
            disks.live_work_disks(),
            vec![PathBuf::from("/vms/a/work.ext4")]
        );
    }

    #[test]
    fn nth_call_counts_per_operation() {
        let disks = FakeDiskOps::new();
        disks.fail_nth(DiskOp::CreateRoot, 2);
        disks.create_root(&root_request("/vms/a")).unwrap();
        disks.create_root(&root_request("/vms/b")).unwrap_err();
        disks.create_root(&root_request("/vms/c")).unwrap();
        assert_eq!(disks.count(DiskOp::CreateRoot), 3);
        assert_eq!(disks.live_roots().len(), 2);
    }

    #[test]
    fn grow_only_grows_and_dm_roots_deactivate() {
        let disks = FakeDiskOps::new();
        disks
            .make_work_disk(&work_request("/vms/a/work.ext4"))
            .unwrap();
        let path = Path::new("/vms/a/work.ext4");
        assert!(matches!(
            disks.grow_work_disk(path, ByteSize::gib(4)),
            Err(GrowWorkDiskError::Shrink { .. })
        ));
        assert_eq!(
            disks.grow_work_disk(path, ByteSize::gib(16)).unwrap().after,
            ByteSize::gib(16)
        );

        let mut request = root_request("/vms/d");
        request.strategy = StorageStrategy::DmSnapshot;
        let root = disks.create_root(&request).unwrap();
        let stopped = disks.deactivate_root(&root).unwrap();
        assert!(!stopped.is_active());
        let started = disks.activate_root(&stopped).unwrap();
        assert!(started.is_active());
        disks.remove_root(&started).unwrap();
        assert!(disks.live_roots().is_empty());
    }
}
