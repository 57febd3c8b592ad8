//! A VM's copy-on-write root disk over an image's read-only `rootfs.ext4`.
//!
//! - reflink: `<vm dir>/root.ext4` shares the image's extents (instant);
//! - copy: `<vm dir>/root.ext4` is a sparse copy;
//! - dm-snapshot: the image on a read-only loop device, a sparse
//!   `<vm dir>/root.cow` on a second loop device, and
//!   `/dev/mapper/banger-<vm id>-root` as a persistent snapshot of the two.
//!
//! Setup records every handle as it is acquired and releases them in
//! reverse if a later step fails. The loop devices are auto-clear: once the
//! dm device holds them, removing it detaches them, and a daemon killed
//! before that point cannot leak them (its descriptors close).
//!
//! The returned [`RootOverlay`] is serialisable: the daemon stores it and
//! hands it back to [`deactivate_root`] / [`activate_root`] (stop/start)
//! and [`remove_root`] (delete), which release exactly what it names.

use std::path::{Path, PathBuf};

use banger_model::Id;
use banger_model::vm::{StorageStrategy, VmPaths};
use serde::{Deserialize, Serialize};

use crate::clone::CloneFileError;
use crate::dm::{self, InvalidDmName};
use crate::exec::ExecError;
use crate::host::BlockHost;
use crate::loopdev::{AttachLoopError, LoopDevice, LoopOptions};
use crate::rollback::{self, Handle, ReleaseError, Rollback};

/// What to build a root overlay from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RootRequest {
    /// The image's read-only `rootfs.ext4`.
    pub base: PathBuf,
    /// The VM's directory (`<state>/vms/<id>`), which must exist.
    pub vm_dir: PathBuf,
    pub vm_id: Id,
    /// Normally the daemon's detected strategy.
    pub strategy: StorageStrategy,
}

/// A VM's root disk, as created.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum RootOverlay {
    /// A file in the VM's directory (reflink or sparse copy).
    File {
        /// How it was made ([`StorageStrategy::Reflink`] or
        /// [`StorageStrategy::Copy`]).
        strategy: StorageStrategy,
        path: PathBuf,
    },
    /// A device-mapper snapshot.
    DmSnapshot {
        name: String,
        base: PathBuf,
        cow: PathBuf,
        /// The loop devices while active; `None` once deactivated.
        loops: Option<DmLoops>,
    },
}

/// The two loop devices under an active dm snapshot.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct DmLoops {
    pub base: LoopDevice,
    pub cow: LoopDevice,
}

impl RootOverlay {
    pub fn strategy(&self) -> StorageStrategy {
        match self {
            Self::File { strategy, .. } => *strategy,
            Self::DmSnapshot { .. } => StorageStrategy::DmSnapshot,
        }
    }

    /// The path the VMM opens as its root drive.
    pub fn device(&self) -> PathBuf {
        match self {
            Self::File { path, .. } => path.clone(),
            Self::DmSnapshot { name, .. } => dm::dm_device_path(name),
        }
    }

    /// Whether the disk can be used now (a dm snapshot can be deactivated
    /// while its VM is stopped).
    pub fn is_active(&self) -> bool {
        match self {
            Self::File { .. } => true,
            Self::DmSnapshot { loops, .. } => loops.is_some(),
        }
    }

    /// Everything this overlay holds on the host, in acquisition order.
    pub fn handles(&self) -> Vec<Handle> {
        match self {
            Self::File { path, .. } => vec![Handle::File { path: path.clone() }],
            Self::DmSnapshot {
                name,
                base,
                cow,
                loops,
            } => {
                let mut handles = Vec::new();
                if let Some(loops) = loops {
                    handles.push(Handle::Loop {
                        device: loops.base,
                        backing: base.clone(),
                    });
                }
                handles.push(Handle::File { path: cow.clone() });
                if let Some(loops) = loops {
                    handles.push(Handle::Loop {
                        device: loops.cow,
                        backing: cow.clone(),
                    });
                    handles.push(Handle::Dm { name: name.clone() });
                }
                handles
            }
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum CreateRootError {
    #[error("cannot make the root disk")]
    Clone(#[source] CloneFileError),
    #[error("i/o error on {path}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("root image {path} is {len} bytes, not a whole number of 512-byte sectors")]
    UnalignedBase { path: PathBuf, len: u64 },
    #[error("root disk {path} is missing")]
    Missing { path: PathBuf },
    #[error(transparent)]
    DmName(#[from] InvalidDmName),
    #[error("dm device {name} already exists; hint: run banger doctor")]
    DmExists { name: String },
    #[error("cannot attach the {role} to a loop device")]
    AttachLoop {
        role: &'static str,
        #[source]
        source: AttachLoopError,
    },
    #[error("cannot create dm snapshot {name}")]
    DmCreate {
        name: String,
        #[source]
        source: ExecError,
    },
    #[error("{cause}; rolling back also failed: {}", rollback::summarize(.failures))]
    RollbackIncomplete {
        #[source]
        cause: Box<CreateRootError>,
        failures: Vec<ReleaseError>,
    },
}

/// Some handles could not be released (the others were).
#[derive(Debug, thiserror::Error)]
#[error("could not release {} handle(s) of the root disk: {}", .failures.len(), rollback::summarize(.failures))]
pub struct RemoveRootError {
    pub failures: Vec<ReleaseError>,
}

/// Where the cow file of a dm-snapshot root lives.
pub fn cow_path(vm_dir: &Path) -> PathBuf {
    vm_dir.join("root.cow")
}

/// The cow file must hold every chunk of the origin plus the snapshot's
/// exception tables (16 bytes per 4 KiB chunk, 1/256) and header, or the
/// snapshot is invalidated when the guest rewrites its whole disk. It is
/// sparse, so the size costs nothing until written.
fn cow_len(base_len: u64) -> u64 {
    base_len + base_len / 64 + (1 << 20)
}

#[tracing::instrument(level = "debug", skip_all, fields(vm = %request.vm_id, strategy = %request.strategy))]
pub(crate) fn create_root(
    host: &impl BlockHost,
    request: &RootRequest,
) -> Result<RootOverlay, CreateRootError> {
    match request.strategy {
        StorageStrategy::Reflink | StorageStrategy::Copy => {
            let path = VmPaths::new(&request.vm_dir).root_disk();
            let method = host
                .clone_file(&request.base, &path, request.strategy)
                .map_err(CreateRootError::Clone)?;
            Ok(RootOverlay::File {
                strategy: method.strategy(),
                path,
            })
        }
        StorageStrategy::DmSnapshot => {
            let name = dm::root_dm_name(&request.vm_id)?;
            let cow = cow_path(&request.vm_dir);
            activate_dm(host, name, request.base.clone(), cow, true)
        }
    }
}

/// Makes a deactivated overlay usable again (dm: loops + snapshot over the
/// existing cow file). An active overlay is returned unchanged.
pub(crate) fn activate_root(
    host: &impl BlockHost,
    overlay: &RootOverlay,
) -> Result<RootOverlay, CreateRootError> {
    match overlay {
        RootOverlay::File { path, .. } => {
            if host.exists(path) {
                Ok(overlay.clone())
            } else {
                Err(CreateRootError::Missing { path: path.clone() })
            }
        }
        RootOverlay::DmSnapshot {
            name,
            base,
            cow,
            loops,
        } => {
            if loops.is_some() && host.dm_exists(name) {
                return Ok(overlay.clone());
            }
            if !host.exists(cow) {
                return Err(CreateRootError::Missing { path: cow.clone() });
            }
            // A half-active leftover (dm gone, loops maybe still there).
            if let Some(loops) = loops {
                let stale = [
                    Handle::Loop {
                        device: loops.base,
                        backing: base.clone(),
                    },
                    Handle::Loop {
                        device: loops.cow,
                        backing: cow.clone(),
                    },
                    Handle::Dm { name: name.clone() },
                ];
                let failures = rollback::release_all(host, &stale);
                if !failures.is_empty() {
                    tracing::warn!(name, failures = %rollback::summarize(&failures), "stale handles left while reactivating");
                }
            }
            activate_dm(host, name.clone(), base.clone(), cow.clone(), false)
        }
    }
}

/// The dm-snapshot sequence: base loop (ro), cow file (when `fresh`), cow
/// loop (rw), `dmsetup create`. Rolled back in reverse on failure.
fn activate_dm(
    host: &impl BlockHost,
    name: String,
    base: PathBuf,
    cow: PathBuf,
    fresh: bool,
) -> Result<RootOverlay, CreateRootError> {
    if host.dm_exists(&name) {
        return Err(CreateRootError::DmExists { name });
    }
    let len = host.file_len(&base).map_err(|source| CreateRootError::Io {
        path: base.clone(),
        source,
    })?;
    if len % 512 != 0 || len == 0 {
        return Err(CreateRootError::UnalignedBase { path: base, len });
    }
    let mut rollback = Rollback::new(host);
    let mut keepalive = Vec::new();
    let result = (|| {
        let base_loop = host
            .attach_loop(
                &base,
                LoopOptions {
                    read_only: true,
                    autoclear: true,
                },
            )
            .map_err(|source| CreateRootError::AttachLoop {
                role: "root image",
                source,
            })?;
        rollback.push(Handle::Loop {
            device: base_loop.device,
            backing: base.clone(),
        });
        let base_device = base_loop.device;
        keepalive.push(base_loop);

        if fresh {
            host.create_sparse_file(&cow, cow_len(len))
                .map_err(|source| CreateRootError::Io {
                    path: cow.clone(),
                    source,
                })?;
            rollback.push(Handle::File { path: cow.clone() });
        }

        let cow_loop = host
            .attach_loop(
                &cow,
                LoopOptions {
                    read_only: false,
                    autoclear: true,
                },
            )
            .map_err(|source| CreateRootError::AttachLoop {
                role: "cow file",
                source,
            })?;
        rollback.push(Handle::Loop {
            device: cow_loop.device,
            backing: cow.clone(),
        });
        let cow_device = cow_loop.device;
        keepalive.push(cow_loop);

        let table = dm::snapshot_table(base_device, cow_device, len / 512);
        host.dm_create(&name, &table)
            .map_err(|source| CreateRootError::DmCreate {
                name: name.clone(),
                source,
            })?;
        rollback.push(Handle::Dm { name: name.clone() });
        Ok(DmLoops {
            base: base_device,
            cow: cow_device,
        })
    })();
    match result {
        Ok(loops) => {
            rollback.disarm();
            // device-mapper holds the loop devices now; closing our
            // descriptors leaves them attached until the dm device goes.
            drop(keepalive);
            tracing::info!(%name, base = %loops.base, cow = %loops.cow, "dm snapshot active");
            Ok(RootOverlay::DmSnapshot {
                name,
                base,
                cow,
                loops: Some(loops),
            })
        }
        Err(cause) => {
            let failures = rollback.unwind();
            drop(keepalive);
            if failures.is_empty() {
                Err(cause)
            } else {
                Err(CreateRootError::RollbackIncomplete {
                    cause: Box::new(cause),
                    failures,
                })
            }
        }
    }
}

/// Releases what an active overlay holds but keeps its data (dm: removes
/// the snapshot and detaches the loops, keeps the cow file). Files are
/// left alone.
pub(crate) fn deactivate_root(
    host: &impl BlockHost,
    overlay: &RootOverlay,
) -> Result<RootOverlay, RemoveRootError> {
    match overlay {
        RootOverlay::File { .. } => Ok(overlay.clone()),
        RootOverlay::DmSnapshot {
            name,
            base,
            cow,
            loops,
        } => {
            let mut handles: Vec<Handle> = overlay
                .handles()
                .into_iter()
                .filter(|handle| !matches!(handle, Handle::File { .. }))
                .collect();
            // Already inactive: still make sure no dm device of this name
            // survived a crash.
            if loops.is_none() {
                handles.push(Handle::Dm { name: name.clone() });
            }
            let failures = rollback::release_all(host, &handles);
            if !failures.is_empty() {
                return Err(RemoveRootError { failures });
            }
            Ok(RootOverlay::DmSnapshot {
                name: name.clone(),
                base: base.clone(),
                cow: cow.clone(),
                loops: None,
            })
        }
    }
}

/// Releases everything the overlay holds, files included, in reverse
/// order; carries on past failures and reports them all. Safe to call
/// again after a partial failure.
pub(crate) fn remove_root(
    host: &impl BlockHost,
    overlay: &RootOverlay,
) -> Result<(), RemoveRootError> {
    let mut handles = overlay.handles();
    // An inactive dm overlay may still have a leftover dm device (a crash
    // between create and store): remove it by name too.
    if let RootOverlay::DmSnapshot {
        name, loops: None, ..
    } = overlay
    {
        handles.push(Handle::Dm { name: name.clone() });
    }
    let failures = rollback::release_all(host, &handles);
    if failures.is_empty() {
        Ok(())
    } else {
        Err(RemoveRootError { failures })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::host::fake::FakeHost;

    const BASE: &str = "/img/rootfs.ext4";
    const ID: &str = "0123456789abcdef0123456789abcdef";

    fn request(strategy: StorageStrategy) -> RootRequest {
        RootRequest {
            base: PathBuf::from(BASE),
            vm_dir: PathBuf::from("/vms/x"),
            vm_id: Id::from_stored(ID),
            strategy,
        }
    }

    fn dm_name() -> String {
        format!("banger-{ID}-root")
    }

    #[test]
    fn dm_snapshot_command_sequence() {
        let host = FakeHost::with_file(BASE);
        let overlay = create_root(&host, &request(StorageStrategy::DmSnapshot)).unwrap();
        assert_eq!(
            host.log(),
            vec![
                "attach /img/rootfs.ext4 ro -> /dev/loop0".to_owned(),
                "create_sparse /vms/x/root.cow 1091567616".to_owned(),
                "attach /vms/x/root.cow rw -> /dev/loop1".to_owned(),
                format!(
                    "dm_create {} 0 2097152 snapshot /dev/loop0 /dev/loop1 P 8",
                    dm_name()
                ),
            ]
        );
        assert_eq!(
            overlay.device(),
            PathBuf::from(format!("/dev/mapper/{}", dm_name()))
        );
        assert_eq!(overlay.strategy(), StorageStrategy::DmSnapshot);

        host.clear_log();
        remove_root(&host, &overlay).unwrap();
        assert_eq!(
            host.log(),
            vec![
                format!("dm_remove {}", dm_name()),
                "detach /dev/loop1 /vms/x/root.cow".to_owned(),
                "remove_file /vms/x/root.cow".to_owned(),
                "detach /dev/loop0 /img/rootfs.ext4".to_owned(),
            ]
        );
        assert!(host.loops.borrow().is_empty());
        assert!(host.dms.borrow().is_empty());
        assert!(!host.exists(Path::new("/vms/x/root.cow")));
    }

    #[test]
    fn every_failing_step_rolls_back_what_came_before() {
        let steps = [
            ("attach", 1),
            ("create_sparse", 1),
            ("attach", 2),
            ("dm_create", 1),
        ];
        for (op, nth) in steps {
            let host = FakeHost::with_file(BASE);
            host.fail(op, nth);
            let error = create_root(&host, &request(StorageStrategy::DmSnapshot)).unwrap_err();
            assert!(
                !matches!(error, CreateRootError::RollbackIncomplete { .. }),
                "{op}#{nth}: {error}"
            );
            assert!(
                host.loops.borrow().is_empty(),
                "{op}#{nth} leaked loops: {:?}",
                host.log()
            );
            assert!(host.dms.borrow().is_empty(), "{op}#{nth} leaked dm");
            assert_eq!(
                host.files.borrow().iter().collect::<Vec<_>>(),
                vec![Path::new(BASE)],
                "{op}#{nth} leaked files"
            );
        }
    }

    #[test]
    fn rollback_reverses_order_and_reports_release_failures() {
        let host = FakeHost::with_file(BASE);
        host.fail("dm_create", 1);
        host.fail("detach", 1); // the cow loop's detach, first in reverse
        let error = create_root(&host, &request(StorageStrategy::DmSnapshot)).unwrap_err();
        let log = host.log();
        assert_eq!(
            log[3..],
            [
                format!(
                    "dm_create {} 0 2097152 snapshot /dev/loop0 /dev/loop1 P 8 -> FAIL",
                    dm_name()
                ),
                "detach /dev/loop1 /vms/x/root.cow -> FAIL".to_owned(),
                "remove_file /vms/x/root.cow".to_owned(),
                "detach /dev/loop0 /img/rootfs.ext4".to_owned(),
            ]
        );
        let CreateRootError::RollbackIncomplete { cause, failures } = &error else {
            panic!("expected an incomplete rollback, got {error}");
        };
        assert!(matches!(**cause, CreateRootError::DmCreate { .. }));
        assert_eq!(failures.len(), 1);
        let message = error.to_string();
        assert!(message.contains("/dev/loop1"), "{message}");
    }

    #[test]
    fn deactivate_keeps_the_cow_and_activate_reuses_it() {
        let host = FakeHost::with_file(BASE);
        let overlay = create_root(&host, &request(StorageStrategy::DmSnapshot)).unwrap();
        let stopped = deactivate_root(&host, &overlay).unwrap();
        assert!(!stopped.is_active());
        assert!(host.exists(Path::new("/vms/x/root.cow")));
        assert!(host.loops.borrow().is_empty() && host.dms.borrow().is_empty());

        host.clear_log();
        let started = activate_root(&host, &stopped).unwrap();
        assert!(started.is_active());
        assert!(
            !host
                .log()
                .iter()
                .any(|line| line.starts_with("create_sparse")),
            "reactivation must not recreate the cow: {:?}",
            host.log()
        );

        // A failed reactivation must not delete the existing cow.
        let again = deactivate_root(&host, &started).unwrap();
        host.fail("dm_create", 3);
        activate_root(&host, &again).unwrap_err();
        assert!(host.exists(Path::new("/vms/x/root.cow")));
        assert!(host.loops.borrow().is_empty());
    }

    #[test]
    fn file_strategies_clone_and_remove() {
        for strategy in [StorageStrategy::Reflink, StorageStrategy::Copy] {
            let host = FakeHost::with_file(BASE);
            let overlay = create_root(&host, &request(strategy)).unwrap();
            assert_eq!(overlay.strategy(), strategy);
            assert_eq!(overlay.device(), Path::new("/vms/x/root.ext4"));
            remove_root(&host, &overlay).unwrap();
            assert!(!host.exists(Path::new("/vms/x/root.ext4")));
        }
    }

    #[test]
    fn overlay_round_trips_through_json() {
        let overlay = RootOverlay::DmSnapshot {
            name: dm_name(),
            base: PathBuf::from(BASE),
            cow: PathBuf::from("/vms/x/root.cow"),
            loops: Some(DmLoops {
                base: LoopDevice { number: 4 },
                cow: LoopDevice { number: 9 },
            }),
        };
        let json = serde_json::to_string(&overlay).unwrap();
        assert_eq!(serde_json::from_str::<RootOverlay>(&json).unwrap(), overlay);
    }

    #[test]
    fn existing_dm_device_is_refused_untouched() {
        let host = FakeHost::with_file(BASE);
        host.dms.borrow_mut().insert(dm_name());
        let error = create_root(&host, &request(StorageStrategy::DmSnapshot)).unwrap_err();
        assert!(matches!(error, CreateRootError::DmExists { .. }));
        assert!(host.log().is_empty());
    }
}
