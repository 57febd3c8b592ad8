//! Writing [`GuestFiles`] into a root filesystem directory.
//!
//! A rootfs comes from an image and is not trusted. Every path is resolved
//! by the kernel through `banger-rootfs` with `RESOLVE_IN_ROOT`, as the
//! guest would resolve it: an absolute link target starts again at the
//! rootfs and `..` stops at it, so nothing is ever written outside the
//! rootfs. Missing directories are made (owned by root, with the entry's
//! mode), through a dangling symlink too: its target is made, inside the
//! rootfs. Entries at the final path are replaced, never written through.

use std::ffi::OsStr;
use std::io::{self, Write};
use std::os::fd::{AsFd, BorrowedFd};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use banger_rootfs::{Dangling, Dir, MakeRoomError, Resolve, ResolveDirError, Root};
use nix::sys::stat::{Mode, fchmod};
use nix::unistd::{Gid, Uid, fchown};

use crate::files::{EntryKind, GuestEntry, GuestFiles, OWNER_GID, OWNER_UID};

/// Installing the guest files into a rootfs directory failed.
#[derive(Debug, thiserror::Error)]
pub enum InstallGuestFilesError {
    /// The rootfs directory cannot be opened.
    #[error("cannot open rootfs {rootfs}")]
    OpenRootfs {
        /// The rootfs directory.
        rootfs: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// Reading, creating or replacing a file failed.
    #[error("cannot install {guest_path} into rootfs {rootfs}")]
    Io {
        /// The rootfs directory.
        rootfs: PathBuf,
        /// The guest path being installed.
        guest_path: PathBuf,
        /// The cause (names the host path of a file read from the host, the
        /// guest directory that could not be made).
        #[source]
        source: io::Error,
    },
    /// A component of the guest path exists in the rootfs and is not a directory.
    #[error("cannot install {guest_path} into rootfs {rootfs}: {component} is not a directory")]
    NotADirectory {
        /// The rootfs directory.
        rootfs: PathBuf,
        /// The guest path being installed.
        guest_path: PathBuf,
        /// The offending component, as a guest path.
        component: PathBuf,
    },
    /// A directory sits where a file or symlink must go.
    #[error("cannot install {guest_path} into rootfs {rootfs}: a directory is in the way")]
    DirectoryInTheWay {
        /// The rootfs directory.
        rootfs: PathBuf,
        /// The guest path being installed.
        guest_path: PathBuf,
    },
    /// Resolving the guest path followed too many symlinks.
    #[error("cannot install {guest_path} into rootfs {rootfs}: too many levels of symbolic links")]
    SymlinkLoop {
        /// The rootfs directory.
        rootfs: PathBuf,
        /// The guest path being installed.
        guest_path: PathBuf,
    },
    /// A guest path in the list is not absolute or has no file name.
    #[error("guest path {guest_path} must be absolute and name a file")]
    BadGuestPath {
        /// The guest path.
        guest_path: PathBuf,
    },
}

/// Installs banger's guest files (first-boot script, units, sshd drop-in,
/// unit links and masks) and the agent binary from `agent_binary` into the
/// root filesystem directory `rootfs`.
pub fn install_into_dir(rootfs: &Path, agent_binary: &Path) -> Result<(), InstallGuestFilesError> {
    GuestFiles::new(agent_binary).install_into_dir(rootfs)
}

/// Applies `entries` in order under `rootfs`.
pub(crate) fn install_entries<'a>(
    rootfs: &Path,
    entries: impl IntoIterator<Item = &'a GuestEntry>,
) -> Result<(), InstallGuestFilesError> {
    let root = Root::open(rootfs, Resolve::in_root()).map_err(|source| {
        InstallGuestFilesError::OpenRootfs {
            rootfs: rootfs.to_owned(),
            source,
        }
    })?;
    let chown = nix::unistd::geteuid().is_root();
    for entry in entries {
        Installer {
            root: &root,
            rootfs,
            guest_path: entry.guest_path(),
            chown,
        }
        .apply(&entry.kind)?;
        tracing::debug!(rootfs = %rootfs.display(), path = %entry.path, "installed guest entry");
    }
    Ok(())
}

struct Installer<'a> {
    root: &'a Root,
    rootfs: &'a Path,
    guest_path: &'a Path,
    chown: bool,
}

impl Installer<'_> {
    fn apply(&self, kind: &EntryKind) -> Result<(), InstallGuestFilesError> {
        if !self.guest_path.is_absolute() {
            return Err(self.bad_path());
        }
        match kind {
            // Existing directories keep their mode; created ones get `mode`.
            EntryKind::Dir { mode } => self.make_dirs(self.guest_path, *mode).map(drop),
            EntryKind::File { source, mode } => {
                let contents = source.read().map_err(|e| self.io(e))?;
                let (dir, name) = self.replaceable()?;
                let mut file = dir
                    .create_file(name, Mode::from_bits_truncate(0o600))
                    .map_err(|e| self.io(e))?;
                file.write_all(&contents).map_err(|e| self.io(e))?;
                // Owner first: a chown clears set-id bits.
                self.own(file.as_fd()).map_err(|e| self.io(e))?;
                file.set_permissions(std::fs::Permissions::from_mode(*mode))
                    .map_err(|e| self.io(e))
            }
            EntryKind::Symlink { target } => {
                let (dir, name) = self.replaceable()?;
                dir.symlink(OsStr::new(target.as_ref()), name)
                    .map_err(|e| self.io(e))?;
                if self.chown {
                    dir.chown(name, Uid::from_raw(OWNER_UID), Gid::from_raw(OWNER_GID))
                        .map_err(|e| self.io(e))?;
                }
                Ok(())
            }
        }
    }

    /// The directory the entry's final component goes in, made when
    /// missing, with anything but a directory at that name removed.
    fn replaceable(&self) -> Result<(Dir, &OsStr), InstallGuestFilesError> {
        let (Some(parent), Some(name)) = (self.guest_path.parent(), self.guest_path.file_name())
        else {
            return Err(self.bad_path());
        };
        let dir = self.make_dirs(parent, 0o755)?;
        dir.make_room(name).map_err(|error| match error {
            MakeRoomError::DirectoryInTheWay => InstallGuestFilesError::DirectoryInTheWay {
                rootfs: self.rootfs.to_owned(),
                guest_path: self.guest_path.to_owned(),
            },
            MakeRoomError::Io(source) => self.io(source),
        })?;
        Ok((dir, name))
    }

    /// The guest directory `dir`, its missing components made with `mode`.
    fn make_dirs(&self, dir: &Path, mode: u32) -> Result<Dir, InstallGuestFilesError> {
        self.root
            .make_dirs(
                dir,
                Mode::from_bits_truncate(mode),
                Dangling::MakeTarget,
                |_, made| {
                    self.own(made)?;
                    fchmod(made, Mode::from_bits_truncate(mode))?;
                    Ok(())
                },
            )
            .map_err(|error| self.resolve_error(error))
    }

    fn own(&self, fd: BorrowedFd<'_>) -> Result<(), io::Error> {
        if self.chown {
            fchown(
                fd,
                Some(Uid::from_raw(OWNER_UID)),
                Some(Gid::from_raw(OWNER_GID)),
            )?;
        }
        Ok(())
    }

    fn resolve_error(&self, error: ResolveDirError) -> InstallGuestFilesError {
        match error {
            ResolveDirError::NotADirectory { component } => InstallGuestFilesError::NotADirectory {
                rootfs: self.rootfs.to_owned(),
                guest_path: self.guest_path.to_owned(),
                component,
            },
            ResolveDirError::Loop { .. } => InstallGuestFilesError::SymlinkLoop {
                rootfs: self.rootfs.to_owned(),
                guest_path: self.guest_path.to_owned(),
            },
            other => {
                let kind = match &other {
                    ResolveDirError::Io { source, .. } => source.kind(),
                    _ => io::ErrorKind::Other,
                };
                self.io(io::Error::new(kind, other))
            }
        }
    }

    fn io(&self, source: io::Error) -> InstallGuestFilesError {
        InstallGuestFilesError::Io {
            rootfs: self.rootfs.to_owned(),
            guest_path: self.guest_path.to_owned(),
            source,
        }
    }

    fn bad_path(&self) -> InstallGuestFilesError {
        InstallGuestFilesError::BadGuestPath {
            guest_path: self.guest_path.to_owned(),
        }
    }
}
