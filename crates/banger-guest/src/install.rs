//! Writing [`GuestFiles`] into a root filesystem directory.
//!
//! A rootfs comes from an image and is not trusted: its symlinks are resolved
//! as the guest would resolve them, inside the rootfs (an absolute link
//! target starts again at the rootfs, `..` stops at it), so nothing is ever
//! written outside the rootfs. Entries at the final path are replaced, never
//! written through.

use std::collections::VecDeque;
use std::ffi::OsString;
use std::io;
use std::os::unix::fs::PermissionsExt;
use std::path::{Component, Path, PathBuf};

use crate::files::{EntryKind, GuestEntry, GuestFiles, OWNER_GID, OWNER_UID};

/// How many symlinks one path may traverse (Linux's own limit).
const MAX_SYMLINK_HOPS: usize = 40;

/// Installing the guest files into a rootfs directory failed.
#[derive(Debug, thiserror::Error)]
pub enum InstallGuestFilesError {
    /// Reading, creating or replacing a file failed.
    #[error("cannot install {guest_path} into rootfs {rootfs}")]
    Io {
        /// The rootfs directory.
        rootfs: PathBuf,
        /// The guest path being installed.
        guest_path: PathBuf,
        /// The cause (names the host path).
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
    let chown = nix::unistd::geteuid().is_root();
    for entry in entries {
        Installer {
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
            EntryKind::Dir { mode } => self.resolve_dir(self.guest_path, *mode).map(|_| ()),
            EntryKind::File { source, mode } => {
                let contents = source.read().map_err(|e| self.io(e))?;
                let host = self.replaceable_target()?;
                fs_err::write(&host, &contents).map_err(|e| self.io(e))?;
                fs_err::set_permissions(&host, std::fs::Permissions::from_mode(*mode))
                    .map_err(|e| self.io(e))?;
                self.own(&host)
            }
            EntryKind::Symlink { target } => {
                let host = self.replaceable_target()?;
                fs_err::os::unix::fs::symlink(target.as_ref(), &host).map_err(|e| self.io(e))?;
                self.own(&host)
            }
        }
    }

    /// The host path for the entry's final component, with its parent resolved
    /// inside the rootfs and anything but a directory at the path removed.
    fn replaceable_target(&self) -> Result<PathBuf, InstallGuestFilesError> {
        let (Some(parent), Some(name)) = (self.guest_path.parent(), self.guest_path.file_name())
        else {
            return Err(self.bad_path());
        };
        let host = self.resolve_dir(parent, 0o755)?.join(name);
        match std::fs::symlink_metadata(&host) {
            Ok(meta) if meta.is_dir() => Err(InstallGuestFilesError::DirectoryInTheWay {
                rootfs: self.rootfs.to_owned(),
                guest_path: self.guest_path.to_owned(),
            }),
            Ok(_) => {
                fs_err::remove_file(&host).map_err(|e| self.io(e))?;
                Ok(host)
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(host),
            Err(e) => Err(self.io(fs_err_io(e, &host))),
        }
    }

    /// Resolves the guest directory `dir` to a host path inside the rootfs,
    /// following symlinks as the guest would and creating missing components
    /// as directories with `mode`.
    fn resolve_dir(&self, dir: &Path, mode: u32) -> Result<PathBuf, InstallGuestFilesError> {
        let mut resolved: Vec<OsString> = Vec::new();
        let mut pending: VecDeque<OsString> = guest_components(dir);
        let mut hops = 0;
        while let Some(component) = pending.pop_front() {
            if component == ".." {
                resolved.pop();
                continue;
            }
            let mut host = self.rootfs.to_path_buf();
            host.extend(&resolved);
            host.push(&component);
            match std::fs::symlink_metadata(&host) {
                Ok(meta) if meta.is_dir() => resolved.push(component),
                Ok(meta) if meta.file_type().is_symlink() => {
                    hops += 1;
                    if hops > MAX_SYMLINK_HOPS {
                        return Err(InstallGuestFilesError::SymlinkLoop {
                            rootfs: self.rootfs.to_owned(),
                            guest_path: self.guest_path.to_owned(),
                        });
                    }
                    let target = fs_err::read_link(&host).map_err(|e| self.io(e))?;
                    if target.is_absolute() {
                        resolved.clear();
                    }
                    let mut next = guest_components(&target);
                    next.extend(pending.drain(..));
                    pending = next;
                }
                Ok(_) => {
                    let mut component_path = PathBuf::from("/");
                    component_path.extend(&resolved);
                    component_path.push(&component);
                    return Err(InstallGuestFilesError::NotADirectory {
                        rootfs: self.rootfs.to_owned(),
                        guest_path: self.guest_path.to_owned(),
                        component: component_path,
                    });
                }
                Err(e) if e.kind() == io::ErrorKind::NotFound => {
                    fs_err::create_dir(&host).map_err(|e| self.io(e))?;
                    fs_err::set_permissions(&host, std::fs::Permissions::from_mode(mode))
                        .map_err(|e| self.io(e))?;
                    self.own(&host)?;
                    resolved.push(component);
                }
                Err(e) => return Err(self.io(fs_err_io(e, &host))),
            }
        }
        let mut host = self.rootfs.to_path_buf();
        host.extend(&resolved);
        Ok(host)
    }

    fn own(&self, host: &Path) -> Result<(), InstallGuestFilesError> {
        if self.chown {
            std::os::unix::fs::lchown(host, Some(OWNER_UID), Some(OWNER_GID))
                .map_err(|e| self.io(fs_err_io(e, host)))?;
        }
        Ok(())
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

/// The components of a guest path that matter for resolution: names and `..`.
fn guest_components(path: &Path) -> VecDeque<OsString> {
    path.components()
        .filter_map(|c| match c {
            Component::Normal(name) => Some(name.to_owned()),
            Component::ParentDir => Some(OsString::from("..")),
            Component::RootDir | Component::CurDir | Component::Prefix(_) => None,
        })
        .collect()
}

/// Adds the host path to an error from `std` the way `fs-err` would.
fn fs_err_io(error: io::Error, path: &Path) -> io::Error {
    io::Error::new(error.kind(), format!("{error} (path: {})", path.display()))
}
