//! banger's storage: everything a VM's disks need on the host.
//!
//! It owns the copy-on-write root overlay over an image's read-only
//! `rootfs.ext4` (reflink, device-mapper snapshot over loop devices, or a
//! sparse copy — chosen by probing the state directory), the guest's work
//! disk (a clone of the image's `work-seed.ext4` grown with `resize2fs`),
//! loop devices, ext4 edits without mounting (debugfs) and with mounting
//! (a guard that always undoes itself), and building ext4 images from
//! directories (`mkfs.ext4 -d`).
//!
//! The daemon talks to it through [`DiskOps`] ([`HostDiskOps`] for real,
//! [`fake::FakeDiskOps`] in tests). All calls block; use `spawn_blocking`.
//!
//! Layout:
//! - [`strategy`]: probing a directory for reflink / dm-snapshot / copy.
//! - [`clone`]: reflink (FICLONE) and hole-preserving sparse copy.
//! - [`overlay`]: per-VM root overlays, rollback-safe, with teardown.
//! - [`workdisk`]: work disks cloned from the seed and grown.
//! - [`edits`]: batched ext4 edits and reads through debugfs.
//! - [`mount`]: [`MountedExt4`], loop-mount guard for what debugfs can't do.
//! - [`mkfs`]: ext4 images (and work seeds) from directories, sized from content.
//! - [`ext4write`]: a fresh ext4 image written from a tree in one pass
//!   (work disks that start with a workspace).
//! - [`git_index`]: a workspace's git index filled in with the disk's stat
//!   data, so the guest's git finds it clean.
//! - [`loopdev`]: loop device attach/detach/list through ioctls.
//! - [`dm`]: device-mapper names, tables, listing.
//! - [`superblock`]: reading an ext4 image's size without tools.
//! - [`ops`]: the [`DiskOps`] trait, its host implementation, orphans.
//! - [`fake`]: the recording fake with failure injection.
//! - [`exec`]: the only module that starts processes (e2fsprogs, dmsetup).
//! - `host`, `rollback`, `sys`: primitive host operations, handle
//!   bookkeeping, raw ioctls (private).

pub mod clone;
pub mod dm;
pub mod edits;
pub mod exec;
pub mod ext4write;
pub mod fake;
pub mod git_index;
mod host;
pub mod loopdev;
pub mod mkfs;
pub mod mount;
pub mod ops;
pub mod overlay;
mod rollback;
pub mod strategy;
pub mod superblock;
mod sys;
pub mod workdisk;

pub use clone::{CloneFileError, CloneMethod, clone_file};
pub use edits::{
    ApplyEditsError, Ext4Edit, Ext4Edits, Ext4Stat, FileKind, Meta, apply_edits, read_file, stat,
};
pub use exec::ExecError;
pub use loopdev::{LoopDevice, LoopOptions};
pub use mkfs::{BuildExt4Error, Ext4BuildOptions, Ext4Image, build_ext4_from_dir, make_work_seed};
pub use mount::{FsType, MountedExt4, MountedImage};
pub use ops::{DiskOps, HostDiskOps, Orphan};
pub use overlay::{CreateRootError, RemoveRootError, RootOverlay, RootRequest};
pub use rollback::{Handle, ReleaseError};
pub use strategy::{StrategyProbe, detect_strategy};
pub use workdisk::{GrowOutcome, GrowWorkDiskError, MakeWorkDiskError, WorkDisk, WorkDiskRequest};
