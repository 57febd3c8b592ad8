//! Mounting a disk image through a loop device, for the edits debugfs
//! cannot do. The guard always undoes what it did — unmount, detach,
//! remove the mount point — when dropped, including on early returns and
//! panics; [`MountedImage::unmount`] does the same and reports errors.
//!
//! Mounts are `nosuid,nodev`: the image may come from anywhere.

use std::io;
use std::path::{Path, PathBuf};
use std::time::Duration;

use nix::mount::{MntFlags, MsFlags};

use crate::loopdev::{
    self, AttachLoopError, AttachedLoop, DetachLoopError, LoopDevice, LoopOptions,
};

/// Filesystem types banger mounts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FsType {
    Ext4,
    Btrfs,
    Xfs,
}

impl FsType {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Ext4 => "ext4",
            Self::Btrfs => "btrfs",
            Self::Xfs => "xfs",
        }
    }
}

/// A mounted image; unmounted and detached on drop.
#[derive(Debug)]
pub struct MountedImage {
    image: PathBuf,
    mountpoint: Option<tempfile::TempDir>,
    attached: Option<AttachedLoop>,
    device: LoopDevice,
    mounted: bool,
}

/// The ext4 case, the one banger needs for guest disks.
pub type MountedExt4 = MountedImage;

#[derive(Debug, thiserror::Error)]
pub enum MountImageError {
    #[error("cannot create a mount point for {image} in {parent}")]
    MountPoint {
        image: PathBuf,
        parent: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("cannot attach {image}")]
    Attach {
        image: PathBuf,
        #[source]
        source: AttachLoopError,
    },
    #[error("cannot mount {image} ({fstype} on {device}) at {mountpoint}")]
    Mount {
        image: PathBuf,
        fstype: &'static str,
        device: LoopDevice,
        mountpoint: PathBuf,
        #[source]
        source: io::Error,
    },
}

#[derive(Debug, thiserror::Error)]
pub enum UnmountImageError {
    #[error("cannot unmount {mountpoint}")]
    Unmount {
        mountpoint: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("cannot detach the loop device of {image}")]
    Detach {
        image: PathBuf,
        #[source]
        source: DetachLoopError,
    },
    #[error("cannot remove mount point {mountpoint}")]
    RemoveMountPoint {
        mountpoint: PathBuf,
        #[source]
        source: io::Error,
    },
}

impl MountedImage {
    /// Mounts an ext4 image read-write (or read-only) in a fresh directory
    /// under the system temp dir.
    pub fn ext4(image: &Path, read_only: bool) -> Result<Self, MountImageError> {
        Self::mount(image, FsType::Ext4, read_only, &std::env::temp_dir())
    }

    /// Attaches `image` to an auto-clear loop device and mounts it in a
    /// fresh directory under `parent`.
    #[tracing::instrument(level = "debug", skip_all, fields(image = %image.display(), fstype = fstype.as_str()))]
    pub fn mount(
        image: &Path,
        fstype: FsType,
        read_only: bool,
        parent: &Path,
    ) -> Result<Self, MountImageError> {
        let mountpoint = tempfile::Builder::new()
            .prefix("banger-mnt-")
            .tempdir_in(parent)
            .map_err(|source| MountImageError::MountPoint {
                image: image.to_owned(),
                parent: parent.to_owned(),
                source,
            })?;
        let attached = loopdev::attach(
            image,
            LoopOptions {
                read_only,
                autoclear: true,
            },
        )
        .map_err(|source| MountImageError::Attach {
            image: image.to_owned(),
            source,
        })?;
        let device = attached.device();
        // From here on, dropping `guard` undoes everything.
        let mut guard = Self {
            image: image.to_owned(),
            mountpoint: Some(mountpoint),
            attached: Some(attached),
            device,
            mounted: false,
        };
        let mut flags = MsFlags::MS_NOSUID | MsFlags::MS_NODEV;
        if read_only {
            flags |= MsFlags::MS_RDONLY;
        }
        let target = guard.path().to_owned();
        nix::mount::mount(
            Some(&device.path()),
            &target,
            Some(fstype.as_str()),
            flags,
            None::<&str>,
        )
        .map_err(|errno| MountImageError::Mount {
            image: image.to_owned(),
            fstype: fstype.as_str(),
            device,
            mountpoint: target.clone(),
            source: errno.into(),
        })?;
        guard.mounted = true;
        tracing::debug!(device = %device, mountpoint = %target.display(), "mounted image");
        Ok(guard)
    }

    /// Where the filesystem is mounted.
    pub fn path(&self) -> &Path {
        self.mountpoint
            .as_ref()
            .map(|dir| dir.path())
            .unwrap_or_else(|| Path::new(""))
    }

    pub fn loop_device(&self) -> LoopDevice {
        self.device
    }

    pub fn image(&self) -> &Path {
        &self.image
    }

    /// Unmounts, detaches and removes the mount point, reporting the first
    /// failure (the later steps still run).
    pub fn unmount(mut self) -> Result<(), UnmountImageError> {
        self.teardown()
    }

    fn teardown(&mut self) -> Result<(), UnmountImageError> {
        let mut first_error = None;
        if self.mounted {
            let target = self.path().to_owned();
            match unmount_with_retry(&target) {
                Ok(()) => self.mounted = false,
                Err(source) => {
                    first_error.get_or_insert(UnmountImageError::Unmount {
                        mountpoint: target,
                        source,
                    });
                }
            }
        }
        if let Some(attached) = self.attached.take() {
            // Detach through our own descriptor; if the filesystem is still
            // mounted (lazily), the kernel finishes the detach on release.
            if let Err(source) = attached.detach() {
                first_error.get_or_insert(UnmountImageError::Detach {
                    image: self.image.clone(),
                    source,
                });
            }
        }
        // Never remove recursively: if the unmount failed, the directory
        // still shows the image's files.
        if !self.mounted
            && let Some(dir) = self.mountpoint.take()
        {
            let path = dir.keep();
            if let Err(source) = std::fs::remove_dir(&path) {
                first_error.get_or_insert(UnmountImageError::RemoveMountPoint {
                    mountpoint: path,
                    source,
                });
            }
        }
        match first_error {
            Some(error) => Err(error),
            None => Ok(()),
        }
    }
}

/// `umount`; while busy, retry briefly, then detach lazily so the mount
/// disappears from the namespace either way.
fn unmount_with_retry(target: &Path) -> io::Result<()> {
    let mut last = None;
    for attempt in 0..5 {
        match nix::mount::umount2(target, MntFlags::empty()) {
            Ok(()) => return Ok(()),
            Err(nix::errno::Errno::EBUSY) => {
                last = Some(nix::errno::Errno::EBUSY);
                std::thread::sleep(Duration::from_millis(20 * (attempt + 1)));
            }
            Err(errno) => return Err(errno.into()),
        }
    }
    tracing::warn!(mountpoint = %target.display(), "mount still busy; detaching it lazily");
    match nix::mount::umount2(target, MntFlags::MNT_DETACH) {
        Ok(()) => Ok(()),
        Err(errno) => Err(last.map_or(errno, |_| errno).into()),
    }
}

impl Drop for MountedImage {
    fn drop(&mut self) {
        if let Err(error) = self.teardown() {
            tracing::error!(image = %self.image.display(), error = %crate::rollback::chain(&error), "could not fully undo a mount");
        }
        // Still mounted: leave the directory rather than let TempDir
        // delete the mounted files.
        if let Some(dir) = self.mountpoint.take() {
            let _ = dir.keep();
        }
    }
}
