//! [`Dir`]: a directory resolved under a [`Root`](crate::Root), and
//! operations on its entries that never follow the entry itself.

use std::ffi::{OsStr, OsString};
use std::fs::File;
use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;

use nix::errno::Errno;
use nix::fcntl::{AtFlags, OFlag, openat};
use nix::sys::stat::{FileStat, Mode, SFlag, UtimensatFlags, fstatat, mkdirat, utimensat};
use nix::sys::time::TimeSpec;
use nix::unistd::{Gid, Uid, UnlinkatFlags, fchownat, linkat, symlinkat, unlinkat};

/// Deepest directory tree [`Dir::remove`] walks.
const MAX_REMOVE_DEPTH: usize = 1024;

/// Whether `stat` (from [`Dir::lstat`]) is a directory.
pub fn is_dir(stat: &FileStat) -> bool {
    SFlag::from_bits_truncate(stat.st_mode) & SFlag::S_IFMT == SFlag::S_IFDIR
}

/// Why [`Dir::make_room`] could not clear an entry.
#[derive(Debug, thiserror::Error)]
pub enum MakeRoomError {
    /// A directory is where a file or symlink must go.
    #[error("a directory is in the way")]
    DirectoryInTheWay,
    #[error("cannot remove the existing entry")]
    Io(#[source] io::Error),
}

/// A directory inside a root. Every method takes a single file name (no
/// `/`, not `.` or `..`; anything else is `InvalidInput`) and acts on that
/// entry with an `*at` call that does not follow it when it is a symlink:
/// a symlink there is replaced or refused, never written through.
#[derive(Debug)]
pub struct Dir {
    fd: OwnedFd,
}

impl Dir {
    pub(crate) fn new(fd: OwnedFd) -> Self {
        Self { fd }
    }

    /// `lstat` of `name`; `None` when there is nothing.
    pub fn lstat(&self, name: &OsStr) -> io::Result<Option<FileStat>> {
        match fstatat(&self.fd, single(name)?, AtFlags::AT_SYMLINK_NOFOLLOW) {
            Ok(stat) => Ok(Some(stat)),
            Err(Errno::ENOENT) => Ok(None),
            Err(errno) => Err(errno.into()),
        }
    }

    /// Clears `name` for a new file or symlink: whatever is there that is
    /// not a directory (a symlink included) is unlinked; a directory is
    /// refused.
    pub fn make_room(&self, name: &OsStr) -> Result<(), MakeRoomError> {
        match unlinkat(
            &self.fd,
            single(name).map_err(MakeRoomError::Io)?,
            UnlinkatFlags::NoRemoveDir,
        ) {
            Ok(()) | Err(Errno::ENOENT) => Ok(()),
            Err(Errno::EISDIR) => Err(MakeRoomError::DirectoryInTheWay),
            Err(errno) => Err(MakeRoomError::Io(errno.into())),
        }
    }

    /// Removes `name`, recursively when it is a directory, never following
    /// a symlink. Returns whether something was there.
    pub fn remove(&self, name: &OsStr) -> io::Result<bool> {
        remove_depth(&self.fd, single(name)?, 0)
    }

    /// The names in this directory (without `.` and `..`), unsorted.
    pub fn list(&self) -> io::Result<Vec<OsString>> {
        list(&self.fd)
    }

    /// The subdirectory `name`; a symlink is refused (`ENOTDIR`).
    pub fn open_dir(&self, name: &OsStr) -> io::Result<Dir> {
        let fd = openat(
            &self.fd,
            single(name)?,
            OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
            Mode::empty(),
        )?;
        Ok(Dir::new(fd))
    }

    /// Makes directory `name` with `mode` (less the umask).
    pub fn mkdir(&self, name: &OsStr, mode: Mode) -> io::Result<()> {
        Ok(mkdirat(&self.fd, single(name)?, mode)?)
    }

    /// Creates file `name` (which must not exist, not even as a dangling
    /// symlink) for writing, with `mode` (less the umask).
    pub fn create_file(&self, name: &OsStr, mode: Mode) -> io::Result<File> {
        let fd = openat(
            &self.fd,
            single(name)?,
            OFlag::O_WRONLY | OFlag::O_CREAT | OFlag::O_EXCL | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
            mode,
        )?;
        Ok(File::from(fd))
    }

    /// Creates `name` as a symlink to `target` (stored as given, not
    /// resolved).
    pub fn symlink(&self, target: &OsStr, name: &OsStr) -> io::Result<()> {
        Ok(symlinkat(target, &self.fd, single(name)?)?)
    }

    /// Creates `name` as a hard link to `target_name` in `target_dir`, the
    /// entry itself when it is a symlink.
    pub fn hard_link(&self, name: &OsStr, target_dir: &Dir, target_name: &OsStr) -> io::Result<()> {
        Ok(linkat(
            &target_dir.fd,
            single(target_name)?,
            &self.fd,
            single(name)?,
            AtFlags::empty(),
        )?)
    }

    /// Sets the owner of `name`, of the symlink itself when it is one.
    pub fn chown(&self, name: &OsStr, uid: Uid, gid: Gid) -> io::Result<()> {
        Ok(fchownat(
            &self.fd,
            single(name)?,
            Some(uid),
            Some(gid),
            AtFlags::AT_SYMLINK_NOFOLLOW,
        )?)
    }

    /// Sets the access and modification times of `name`, of the symlink
    /// itself when it is one.
    pub fn set_times(&self, name: &OsStr, atime: &TimeSpec, mtime: &TimeSpec) -> io::Result<()> {
        Ok(utimensat(
            &self.fd,
            single(name)?,
            atime,
            mtime,
            UtimensatFlags::NoFollowSymlink,
        )?)
    }
}

impl AsFd for Dir {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

/// `name` when it names one entry of a directory.
fn single(name: &OsStr) -> io::Result<&OsStr> {
    let bytes = name.as_bytes();
    if bytes.is_empty() || bytes == b"." || bytes == b".." || bytes.contains(&b'/') {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{name:?} is not a single file name"),
        ));
    }
    Ok(name)
}

fn remove_depth(dir: &OwnedFd, name: &OsStr, depth: usize) -> io::Result<bool> {
    let stat = match fstatat(dir, name, AtFlags::AT_SYMLINK_NOFOLLOW) {
        Ok(stat) => stat,
        Err(Errno::ENOENT) => return Ok(false),
        Err(errno) => return Err(errno.into()),
    };
    if !is_dir(&stat) {
        unlinkat(dir, name, UnlinkatFlags::NoRemoveDir)?;
        return Ok(true);
    }
    if depth >= MAX_REMOVE_DEPTH {
        return Err(io::Error::other("directory tree too deep to remove"));
    }
    let child = openat(
        dir,
        name,
        OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
        Mode::empty(),
    )?;
    for entry in list(&child)? {
        remove_depth(&child, &entry, depth + 1)?;
    }
    unlinkat(dir, name, UnlinkatFlags::RemoveDir)?;
    Ok(true)
}

fn list(dir: &OwnedFd) -> io::Result<Vec<OsString>> {
    let listing = nix::dir::Dir::openat(
        dir,
        ".",
        OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
        Mode::empty(),
    )?;
    let mut names = Vec::new();
    for entry in listing {
        let entry = entry?;
        let name = entry.file_name().to_bytes();
        if name != b"." && name != b".." {
            names.push(OsStr::from_bytes(name).to_owned());
        }
    }
    Ok(names)
}
