//! File-system primitives for the unpacker. Everything is relative to a
//! directory file descriptor and never follows a symlink in the last
//! component; parent directories are resolved with `openat2` and
//! `RESOLVE_BENEATH | RESOLVE_NO_MAGICLINKS | RESOLVE_NO_XDEV`, so the
//! kernel refuses any resolution that would leave the staging root, however
//! the symlinks inside it are arranged.

use std::ffi::{CString, OsStr, OsString};
use std::io;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use nix::errno::Errno;
use nix::fcntl::{AtFlags, OFlag, OpenHow, ResolveFlag, openat, openat2};
use nix::sys::stat::{FileStat, Mode, SFlag, fstatat, mkdirat};
use nix::unistd::{UnlinkatFlags, unlinkat};

use super::path::RelPath;

/// Deepest directory tree [`remove_at`] walks.
const MAX_REMOVE_DEPTH: usize = 1024;

fn resolve_flags() -> ResolveFlag {
    ResolveFlag::RESOLVE_BENEATH | ResolveFlag::RESOLVE_NO_MAGICLINKS | ResolveFlag::RESOLVE_NO_XDEV
}

/// `openat2(root, path, flags)` confined beneath `root`. `EAGAIN` (a
/// concurrent rename somewhere on the system) is retried.
pub(crate) fn open_beneath(root: impl AsFd, path: &Path, flags: OFlag) -> nix::Result<OwnedFd> {
    let how = OpenHow::new()
        .flags(flags | OFlag::O_CLOEXEC)
        .resolve(resolve_flags());
    let mut tries = 0;
    loop {
        match openat2(root.as_fd(), path, how) {
            Err(Errno::EAGAIN) if tries < 16 => tries += 1,
            other => return other,
        }
    }
}

/// Why a directory could not be resolved.
#[derive(Debug)]
pub(crate) enum ResolveFailure {
    /// Resolution would leave the root (through a symlink or `..`).
    Escapes,
    /// Too many symlinks on the way.
    Loop,
    /// A component exists and is not a directory.
    NotADirectory,
    /// A component does not exist (and creating was not asked for).
    Missing,
    /// A component is a symlink to nothing.
    Dangling,
    Io(io::Error),
}

fn classify(errno: Errno) -> ResolveFailure {
    match errno {
        Errno::EXDEV => ResolveFailure::Escapes,
        Errno::ELOOP => ResolveFailure::Loop,
        Errno::ENOTDIR => ResolveFailure::NotADirectory,
        Errno::ENOENT => ResolveFailure::Missing,
        other => ResolveFailure::Io(other.into()),
    }
}

/// An `O_PATH` descriptor for directory `rel` beneath `root`. With
/// `create`, missing directories are made (mode 0755) and reported in
/// `created`; they are made inside the directory the previous components
/// resolved to, so they are beneath the root too.
pub(crate) fn resolve_dir(
    root: &OwnedFd,
    rel: &RelPath,
    create: bool,
    created: &mut Vec<RelPath>,
) -> Result<OwnedFd, ResolveFailure> {
    let flags = OFlag::O_PATH | OFlag::O_DIRECTORY;
    match open_beneath(root, &rel.to_path(), flags) {
        Ok(fd) => return Ok(fd),
        Err(Errno::ENOENT) if create => {}
        Err(errno) => return Err(classify(errno)),
    }
    // Slow path: walk the prefixes, making what is missing.
    let mut current = open_beneath(root, Path::new("."), flags).map_err(classify)?;
    let mut prefix = RelPath::root();
    for name in rel.components() {
        prefix = prefix.join(name);
        current = match open_beneath(root, &prefix.to_path(), flags) {
            Ok(fd) => fd,
            Err(Errno::ENOENT) => {
                match mkdirat(&current, name.as_os_str(), Mode::from_bits_truncate(0o755)) {
                    Ok(()) => created.push(prefix.clone()),
                    // A dangling symlink: refuse to create through it.
                    Err(Errno::EEXIST) => return Err(ResolveFailure::Dangling),
                    Err(errno) => return Err(classify(errno)),
                }
                open_beneath(root, &prefix.to_path(), flags).map_err(classify)?
            }
            Err(errno) => return Err(classify(errno)),
        };
    }
    Ok(current)
}

/// `lstat` of `name` in `dir`; `None` when it does not exist.
pub(crate) fn lstat_at(dir: impl AsFd, name: &OsStr) -> io::Result<Option<FileStat>> {
    match fstatat(dir, name, AtFlags::AT_SYMLINK_NOFOLLOW) {
        Ok(stat) => Ok(Some(stat)),
        Err(Errno::ENOENT) => Ok(None),
        Err(errno) => Err(errno.into()),
    }
}

pub(crate) fn is_dir(stat: &FileStat) -> bool {
    SFlag::from_bits_truncate(stat.st_mode) & SFlag::S_IFMT == SFlag::S_IFDIR
}

/// Removes `name` in `dir`, recursively when it is a directory, never
/// following symlinks. Returns whether something was removed.
pub(crate) fn remove_at(dir: &OwnedFd, name: &OsStr) -> io::Result<bool> {
    remove_at_depth(dir, name, 0)
}

fn remove_at_depth(dir: &OwnedFd, name: &OsStr, depth: usize) -> io::Result<bool> {
    let Some(stat) = lstat_at(dir, name)? else {
        return Ok(false);
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
    for entry in list_dir(&child)? {
        remove_at_depth(&child, &entry, depth + 1)?;
    }
    unlinkat(dir, name, UnlinkatFlags::RemoveDir)?;
    Ok(true)
}

/// The names in directory `dir` (without `.` and `..`).
pub(crate) fn list_dir(dir: &OwnedFd) -> io::Result<Vec<OsString>> {
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

/// Opens directory `rel` beneath `root` for metadata changes (`fchown`,
/// `fchmod`, `fsetxattr`, `futimens`); a symlink in the last component is
/// refused. Only directories are ever opened this way: opening a device
/// node could have side effects.
pub(crate) fn open_dir_for_metadata(root: &OwnedFd, rel: &RelPath) -> nix::Result<OwnedFd> {
    open_beneath(
        root,
        &rel.to_path(),
        OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW,
    )
}

/// `fsetxattr(2)`.
pub(crate) fn set_xattr(fd: impl AsFd, name: &str, value: &[u8]) -> io::Result<()> {
    let name = CString::new(name).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    // SAFETY: `fd` is a live descriptor for the duration of the call, `name`
    // is a NUL-terminated string and `value` a valid slice of `value.len()`
    // bytes; the kernel only reads from both.
    let result = unsafe {
        libc::fsetxattr(
            fd.as_fd().as_raw_fd(),
            name.as_ptr(),
            value.as_ptr().cast(),
            value.len(),
            0,
        )
    };
    if result == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}
