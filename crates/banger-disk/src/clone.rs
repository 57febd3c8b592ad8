//! Cloning a disk image file: a reflink (FICLONE) where the filesystem
//! shares extents, otherwise a sparse copy that copies only the data
//! regions (SEEK_DATA/SEEK_HOLE) with `copy_file_range`, so holes stay holes.

use std::io;
use std::os::fd::AsFd;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use banger_model::vm::StorageStrategy;
use fs_err as fs;
use fs_err::os::unix::fs::OpenOptionsExt;
use nix::errno::Errno;
use nix::unistd::Whence;

use crate::sys;

/// Mode of the disk files this crate creates: they hold guest data, so only
/// the daemon's user may read them.
pub(crate) const DISK_FILE_MODE: u32 = 0o600;

/// How a clone was actually made.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CloneMethod {
    /// Extents shared with the source (instant, no space used).
    Reflink,
    /// Data regions copied, holes kept.
    SparseCopy,
}

impl CloneMethod {
    /// The storage strategy this method corresponds to.
    pub fn strategy(self) -> StorageStrategy {
        match self {
            Self::Reflink => StorageStrategy::Reflink,
            Self::SparseCopy => StorageStrategy::Copy,
        }
    }
}

/// Cloning a file failed; the destination was removed.
#[derive(Debug, thiserror::Error)]
pub enum CloneFileError {
    #[error("cannot open clone source {path}")]
    OpenSource {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("cannot create clone destination {path}")]
    CreateDestination {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("reflink of {src} to {dst} failed")]
    Reflink {
        src: PathBuf,
        dst: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("copying {src} to {dst} failed")]
    Copy {
        src: PathBuf,
        dst: PathBuf,
        #[source]
        source: io::Error,
    },
}

/// Creates `dst` (which must not exist) as a reflink of `src`.
pub fn reflink(src: &Path, dst: &Path) -> Result<(), CloneFileError> {
    let source = open_source(src)?;
    let target = create_destination(dst)?;
    match sys::ficlone(target.file().as_fd(), source.file().as_fd()) {
        Ok(()) => Ok(()),
        Err(errno) => {
            drop(target);
            remove_quietly(dst);
            Err(CloneFileError::Reflink {
                src: src.to_owned(),
                dst: dst.to_owned(),
                source: errno.into(),
            })
        }
    }
}

/// Creates `dst` (which must not exist) as a sparse copy of `src`; returns
/// the number of data bytes copied.
pub fn sparse_copy(src: &Path, dst: &Path) -> Result<u64, CloneFileError> {
    let source = open_source(src)?;
    let target = create_destination(dst)?;
    match copy_data_regions(source.file(), target.file()) {
        Ok(copied) => Ok(copied),
        Err(error) => {
            drop(target);
            remove_quietly(dst);
            Err(CloneFileError::Copy {
                src: src.to_owned(),
                dst: dst.to_owned(),
                source: error,
            })
        }
    }
}

/// Clones `src` to `dst` the way `strategy` asks: a reflink for
/// [`StorageStrategy::Reflink`] (falling back to a sparse copy when the two
/// paths cannot share extents, e.g. across filesystems), a sparse copy
/// otherwise. Returns what was actually done.
pub fn clone_file(
    src: &Path,
    dst: &Path,
    strategy: StorageStrategy,
) -> Result<CloneMethod, CloneFileError> {
    if strategy == StorageStrategy::Reflink {
        match reflink(src, dst) {
            Ok(()) => return Ok(CloneMethod::Reflink),
            Err(CloneFileError::Reflink { source, .. }) if reflink_unsupported(&source) => {
                tracing::warn!(
                    src = %src.display(),
                    dst = %dst.display(),
                    error = %source,
                    "reflink not possible here, falling back to a sparse copy"
                );
            }
            Err(other) => return Err(other),
        }
    }
    sparse_copy(src, dst).map(|_| CloneMethod::SparseCopy)
}

/// Errors that mean "this pair of files cannot share extents", as opposed
/// to a real I/O failure.
pub(crate) fn reflink_unsupported(error: &io::Error) -> bool {
    matches!(
        error.raw_os_error().map(Errno::from_raw),
        Some(Errno::EOPNOTSUPP | Errno::EXDEV | Errno::EINVAL | Errno::ENOTTY | Errno::ENOSYS)
    )
}

fn open_source(path: &Path) -> Result<fs::File, CloneFileError> {
    fs::File::open(path).map_err(|error| CloneFileError::OpenSource {
        path: path.to_owned(),
        source: error,
    })
}

fn create_destination(path: &Path) -> Result<fs::File, CloneFileError> {
    fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(DISK_FILE_MODE)
        .open(path)
        .map_err(|error| CloneFileError::CreateDestination {
            path: path.to_owned(),
            source: error,
        })
}

fn remove_quietly(path: &Path) {
    if let Err(error) = std::fs::remove_file(path)
        && error.kind() != io::ErrorKind::NotFound
    {
        tracing::warn!(path = %path.display(), %error, "could not remove partial clone");
    }
}

/// Copies every data region of `src` into the same offsets of `dst` and
/// sets `dst`'s length, leaving holes unallocated.
fn copy_data_regions(src: &std::fs::File, dst: &std::fs::File) -> io::Result<u64> {
    let len = src.metadata()?.len();
    let mut offset: u64 = 0;
    let mut copied: u64 = 0;
    let mut use_copy_file_range = true;
    while offset < len {
        let data_start = match nix::unistd::lseek(src.as_fd(), to_off(offset)?, Whence::SeekData) {
            Ok(start) => start as u64,
            // No data after `offset`: the rest is a hole.
            Err(Errno::ENXIO) => break,
            // Filesystems without SEEK_DATA: treat the whole file as data.
            Err(Errno::EINVAL) if offset == 0 => 0,
            Err(errno) => return Err(errno.into()),
        };
        let data_end = match nix::unistd::lseek(src.as_fd(), to_off(data_start)?, Whence::SeekHole)
        {
            Ok(end) => (end as u64).min(len),
            Err(Errno::EINVAL | Errno::ENXIO) => len,
            Err(errno) => return Err(errno.into()),
        };
        if data_end <= data_start {
            break;
        }
        copied += copy_range(
            src,
            data_start,
            dst,
            data_start,
            data_end - data_start,
            &mut use_copy_file_range,
        )?;
        offset = data_end;
    }
    dst.set_len(len)?;
    Ok(copied)
}

fn to_off(value: u64) -> io::Result<i64> {
    i64::try_from(value).map_err(|_| io::Error::other("file offset out of range"))
}

/// Copies `len` bytes of `src` at `src_start` to `dst` at `dst_start`, in
/// the kernel while `use_copy_file_range` holds (cleared for the caller's
/// later calls when these files cannot), else through a buffer. A source
/// that ends early is an error.
pub(crate) fn copy_range(
    src: &std::fs::File,
    src_start: u64,
    dst: &std::fs::File,
    dst_start: u64,
    len: u64,
    use_copy_file_range: &mut bool,
) -> io::Result<u64> {
    const CHUNK: u64 = 1 << 30;
    let shrank = || io::Error::new(io::ErrorKind::UnexpectedEof, "source shrank while copying");
    let mut done: u64 = 0;
    while done < len && *use_copy_file_range {
        let mut off_in = to_off(src_start + done)?;
        let mut off_out = to_off(dst_start + done)?;
        let want = (len - done).min(CHUNK) as usize;
        match nix::fcntl::copy_file_range(
            src.as_fd(),
            Some(&mut off_in),
            dst.as_fd(),
            Some(&mut off_out),
            want,
        ) {
            Ok(0) => return Err(shrank()),
            Ok(copied) => done += copied as u64,
            Err(Errno::EINTR) => {}
            // Not supported between these files: copy through userspace.
            Err(Errno::EXDEV | Errno::ENOSYS | Errno::EOPNOTSUPP | Errno::EINVAL) if done == 0 => {
                *use_copy_file_range = false;
            }
            Err(errno) => return Err(errno.into()),
        }
    }
    let mut buffer = vec![0u8; (len - done).min(1 << 20) as usize];
    while done < len {
        let want = ((len - done) as usize).min(buffer.len());
        let read = src.read_at(&mut buffer[..want], src_start + done)?;
        if read == 0 {
            return Err(shrank());
        }
        dst.write_all_at(&buffer[..read], dst_start + done)?;
        done += read as u64;
    }
    Ok(len)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt;

    fn sparse_file(path: &Path) {
        let file = std::fs::File::create(path).unwrap();
        file.set_len(64 << 20).unwrap();
        file.write_all_at(&[0xab; 8192], 0).unwrap();
        file.write_all_at(b"middle", 20 << 20).unwrap();
        file.write_all_at(b"tail", (64 << 20) - 4).unwrap();
    }

    #[test]
    fn sparse_copy_keeps_holes_and_content() {
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("src.img");
        let dst = dir.path().join("dst.img");
        sparse_file(&src);
        sparse_copy(&src, &dst).unwrap();
        let (a, b) = (std::fs::read(&src).unwrap(), std::fs::read(&dst).unwrap());
        assert_eq!(a, b);
        let (src_meta, dst_meta) = (
            std::fs::metadata(&src).unwrap(),
            std::fs::metadata(&dst).unwrap(),
        );
        assert_eq!(dst_meta.len(), src_meta.len());
        // A few data blocks, not 64 MiB.
        assert!(
            dst_meta.blocks() * 512 < 1 << 20,
            "copy allocated {} blocks",
            dst_meta.blocks()
        );
        assert_eq!(dst_meta.mode() & 0o777, DISK_FILE_MODE);
    }

    #[test]
    fn clone_refuses_to_overwrite() {
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("src.img");
        let dst = dir.path().join("dst.img");
        sparse_file(&src);
        std::fs::write(&dst, b"keep me").unwrap();
        let error = sparse_copy(&src, &dst).unwrap_err();
        assert!(
            matches!(error, CloneFileError::CreateDestination { .. }),
            "{error}"
        );
        assert_eq!(std::fs::read(&dst).unwrap(), b"keep me");
    }

    #[test]
    fn reflink_strategy_shares_extents_where_it_can_and_copies_elsewhere() {
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("src.img");
        let dst = dir.path().join("dst.img");
        sparse_file(&src);
        let reflinks = crate::strategy::probe_reflink(dir.path()).unwrap().is_yes();
        let method = clone_file(&src, &dst, StorageStrategy::Reflink).unwrap();
        let expected = if reflinks {
            CloneMethod::Reflink
        } else {
            CloneMethod::SparseCopy
        };
        assert_eq!(method, expected, "reflinks supported here: {reflinks}");
        assert_eq!(std::fs::read(&src).unwrap(), std::fs::read(&dst).unwrap());
    }

    #[test]
    fn missing_source_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let error = sparse_copy(&dir.path().join("nope"), &dir.path().join("out")).unwrap_err();
        assert!(error.to_string().contains("nope"), "{error}");
        assert!(!dir.path().join("out").exists());
    }
}
