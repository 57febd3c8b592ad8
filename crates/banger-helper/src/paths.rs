//! Paths a caller names to the helper, checked as that caller's: absolute
//! and plain, in a directory reached from `/` without a symlink that is
//! the caller's and writable by nobody else, files opened relative to it
//! without following a link.

use std::ffi::OsStr;
use std::fs::File;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path, PathBuf};

use banger_rootfs::{Resolve, Root};
use nix::fcntl::OFlag;
use nix::sys::stat::{Mode, SFlag, fstat};

use crate::caller::Caller;

/// A path that is not the caller's to name.
#[derive(Debug, thiserror::Error)]
pub enum PathError {
    #[error("{path:?} is not an absolute path of plain components")]
    NotPlain { path: PathBuf },
    #[error("cannot open {path} without following a symlink")]
    Open {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path} belongs to uid {owner}, not to uid {uid}")]
    NotYours { path: PathBuf, owner: u32, uid: u32 },
    #[error("{path} is writable by others than its owner")]
    Shared { path: PathBuf },
    #[error("{path} is not a regular file")]
    NotAFile { path: PathBuf },
}

impl PathError {
    pub fn code(&self) -> banger_rpc::ErrorCode {
        match self {
            Self::NotPlain { .. } | Self::Open { .. } | Self::NotAFile { .. } => {
                banger_rpc::ErrorCode::InvalidArgument
            }
            Self::NotYours { .. } | Self::Shared { .. } => banger_rpc::ErrorCode::PermissionDenied,
        }
    }
}

/// The parent of an absolute path made of plain components only.
pub fn plain_parent(path: &Path) -> Result<PathBuf, PathError> {
    let not_plain = || PathError::NotPlain {
        path: path.to_owned(),
    };
    let mut components = path.components();
    if components.next() != Some(Component::RootDir) {
        return Err(not_plain());
    }
    if !components.all(|c| matches!(c, Component::Normal(_))) {
        return Err(not_plain());
    }
    match (path.parent(), path.file_name()) {
        (Some(parent), Some(_)) if parent != Path::new("/") => Ok(parent.to_owned()),
        _ => Err(not_plain()),
    }
}

/// Opens `dir` from `/` without following any symlink and checks that it
/// is the caller's and nobody else may write in it.
pub fn open_own_dir(caller: &Caller, dir: &Path) -> Result<OwnedFd, PathError> {
    let open_error = |source: std::io::Error| PathError::Open {
        path: dir.to_owned(),
        source,
    };
    let root = Root::open(Path::new("/"), Resolve::beneath().no_symlinks()).map_err(open_error)?;
    let relative = dir.strip_prefix("/").unwrap_or(dir);
    let fd = root
        .open_at(
            relative,
            OFlag::O_DIRECTORY | OFlag::O_RDONLY | OFlag::O_CLOEXEC,
        )
        .map_err(|e| open_error(e.into()))?;
    let stat = fstat(fd.as_fd()).map_err(|e| open_error(e.into()))?;
    if stat.st_uid != caller.uid {
        return Err(PathError::NotYours {
            path: dir.to_owned(),
            owner: stat.st_uid,
            uid: caller.uid,
        });
    }
    if stat.st_mode & 0o022 != 0 {
        return Err(PathError::Shared {
            path: dir.to_owned(),
        });
    }
    Ok(fd)
}

/// Opens the existing regular file `path` (in the directory `dir`) for
/// appending, without following a symlink, and checks that it is the
/// caller's.
pub fn open_own_file(caller: &Caller, dir: &OwnedFd, path: &Path) -> Result<File, PathError> {
    let open_error = |source: nix::Error| PathError::Open {
        path: path.to_owned(),
        source: source.into(),
    };
    let name = path.file_name().unwrap_or_default();
    let fd = nix::fcntl::openat(
        dir.as_fd(),
        Path::new(OsStr::from_bytes(name.as_bytes())),
        OFlag::O_WRONLY | OFlag::O_APPEND | OFlag::O_NOFOLLOW | OFlag::O_NOCTTY | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .map_err(open_error)?;
    let stat = fstat(fd.as_fd()).map_err(open_error)?;
    if SFlag::from_bits_truncate(stat.st_mode) & SFlag::S_IFMT != SFlag::S_IFREG {
        return Err(PathError::NotAFile {
            path: path.to_owned(),
        });
    }
    if stat.st_uid != caller.uid {
        return Err(PathError::NotYours {
            path: path.to_owned(),
            owner: stat.st_uid,
            uid: caller.uid,
        });
    }
    Ok(File::from(fd))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_must_be_absolute_and_plain() {
        assert_eq!(
            plain_parent(Path::new("/home/u/vms/1/api.sock")).unwrap(),
            Path::new("/home/u/vms/1")
        );
        for bad in ["api.sock", "/api.sock", "/a/../b/api.sock", "/"] {
            assert!(plain_parent(Path::new(bad)).is_err(), "{bad}");
        }
    }
}
