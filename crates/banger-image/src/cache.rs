//! The content-addressed blob cache: `<cache>/oci/blobs/sha256/<hex>`.
//!
//! A blob only ever appears under `blobs/` after its bytes hashed to its
//! digest: downloads go to `incoming/<hex>.partial`, are hashed as they are
//! written, synced, and renamed into place. A partial file survives an
//! interrupted pull; the next pull hashes what is there and asks the
//! registry for the rest with a `Range` request. Each partial file is
//! `flock`ed while in use, so two pulls sharing a layer (in one process or
//! two) download it once.

use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use nix::fcntl::{Flock, FlockArg};

use crate::digest::{Digest, Hasher};

#[derive(Debug, Clone)]
pub struct BlobCache {
    root: PathBuf,
}

/// Why a blob could not be committed to the cache.
#[derive(Debug, thiserror::Error)]
pub enum CommitError {
    #[error("blob {digest}: got {actual} bytes, expected {expected}; the download was deleted")]
    Size {
        digest: Digest,
        expected: u64,
        actual: u64,
    },
    #[error("blob {digest}: content hashes to {actual}; the download was deleted")]
    Digest { digest: Digest, actual: Digest },
    #[error("blob {digest}: cannot store {path}")]
    Io {
        digest: Digest,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

/// What [`BlobCache::begin`] found.
#[derive(Debug)]
pub(crate) enum Begin {
    /// The blob is already in the cache.
    Present,
    /// A locked partial download to continue.
    Partial(PartialBlob),
}

/// A locked, partially downloaded blob whose prefix has been hashed.
#[derive(Debug)]
pub(crate) struct PartialBlob {
    file: Flock<File>,
    path: PathBuf,
    final_path: PathBuf,
    digest: Digest,
    hasher: Hasher,
}

impl BlobCache {
    /// A cache rooted at `root` (banger uses `Layout::oci_cache()`).
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self { root: root.into() }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Where a verified blob lives.
    pub fn blob_path(&self, digest: &Digest) -> PathBuf {
        self.root.join("blobs").join("sha256").join(digest.hex())
    }

    fn partial_path(&self, digest: &Digest) -> PathBuf {
        self.root
            .join("incoming")
            .join(format!("{}.partial", digest.hex()))
    }

    /// Whether the blob is cached with the expected size.
    pub fn contains(&self, digest: &Digest, size: u64) -> bool {
        std::fs::metadata(self.blob_path(digest))
            .is_ok_and(|meta| meta.is_file() && meta.len() == size)
    }

    /// Reads a small cached blob (a config), checking its digest again.
    pub fn read_verified(&self, digest: &Digest, limit: u64) -> io::Result<Option<Vec<u8>>> {
        let path = self.blob_path(digest);
        let file = match fs_err::File::open(&path) {
            Ok(file) => file,
            Err(err) if err.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(err) => return Err(err),
        };
        let mut bytes = Vec::new();
        file.take(limit + 1).read_to_end(&mut bytes)?;
        if bytes.len() as u64 > limit || Digest::of(&bytes) != *digest {
            tracing::warn!(path = %path.display(), "cached blob is corrupt; deleting it");
            fs_err::remove_file(&path)?;
            return Ok(None);
        }
        Ok(Some(bytes))
    }

    /// Stores bytes already verified against `digest` (configs, manifests).
    pub fn store(&self, digest: &Digest, bytes: &[u8]) -> Result<(), CommitError> {
        let actual = Digest::of(bytes);
        if actual != *digest {
            return Err(CommitError::Digest {
                digest: digest.clone(),
                actual,
            });
        }
        let final_path = self.blob_path(digest);
        let io_error = |path: &Path| {
            let path = path.to_owned();
            let digest = digest.clone();
            move |source| CommitError::Io {
                digest,
                path,
                source,
            }
        };
        let dir = final_path.parent().expect("blob paths have a parent");
        fs_err::create_dir_all(dir).map_err(io_error(dir))?;
        let temp = dir.join(format!(".{}.{}.tmp", digest.hex(), rand::random::<u32>()));
        let result = (|| {
            let mut file = fs_err::File::create(&temp)?;
            file.write_all(bytes)?;
            file.sync_data()?;
            fs_err::rename(&temp, &final_path)
        })();
        if result.is_err() {
            let _ = fs_err::remove_file(&temp);
        }
        result.map_err(io_error(&final_path))
    }

    /// Opens (creating) and locks the partial download of `digest`,
    /// blocking while another download holds it. Returns
    /// [`Begin::Present`] when the blob is cached by then.
    pub(crate) fn begin(&self, digest: &Digest, size: u64) -> io::Result<Begin> {
        let final_path = self.blob_path(digest);
        let path = self.partial_path(digest);
        fs_err::create_dir_all(final_path.parent().expect("blob paths have a parent"))?;
        fs_err::create_dir_all(path.parent().expect("partial paths have a parent"))?;
        loop {
            if self.contains(digest, size) {
                return Ok(Begin::Present);
            }
            let file = fs_err::OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .truncate(false)
                .open(&path)?
                .into_parts()
                .0;
            let file = Flock::lock(file, FlockArg::LockExclusive)
                .map_err(|(_, errno)| io::Error::from(errno))?;
            // The file we locked may have been renamed into place (or
            // deleted) by the holder before us: only a lock on the inode
            // still at `path` counts.
            let ours = file.metadata()?;
            match std::fs::metadata(&path) {
                Ok(current) if current.ino() == ours.ino() && current.dev() == ours.dev() => {}
                _ => continue,
            }
            if self.contains(digest, size) {
                let _ = fs_err::remove_file(&path);
                return Ok(Begin::Present);
            }
            let mut partial = PartialBlob {
                file,
                path,
                final_path,
                digest: digest.clone(),
                hasher: Hasher::new(),
            };
            partial.rehash(size)?;
            return Ok(Begin::Partial(partial));
        }
    }
}

impl PartialBlob {
    /// Hashes what is already on disk; a prefix longer than the blob is
    /// discarded.
    fn rehash(&mut self, size: u64) -> io::Result<()> {
        let len = self.file.metadata()?.len();
        if len > size {
            return self.reset();
        }
        self.file.seek(SeekFrom::Start(0))?;
        let mut buffer = vec![0u8; 256 * 1024];
        loop {
            let read = self.file.read(&mut buffer)?;
            if read == 0 {
                break;
            }
            self.hasher.update(&buffer[..read]);
        }
        Ok(())
    }

    /// Bytes on disk (and hashed).
    pub(crate) fn len(&self) -> u64 {
        self.hasher.len()
    }

    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    pub(crate) fn append(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.file.write_all(bytes)?;
        self.hasher.update(bytes);
        Ok(())
    }

    /// Starts over from zero bytes.
    pub(crate) fn reset(&mut self) -> io::Result<()> {
        self.file.set_len(0)?;
        self.file.seek(SeekFrom::Start(0))?;
        self.hasher = Hasher::new();
        Ok(())
    }

    /// Verifies size and digest and renames the blob into place; a blob
    /// that does not verify is deleted.
    pub(crate) fn commit(mut self, size: u64) -> Result<(), CommitError> {
        let digest = self.digest.clone();
        let io_error = |path: &Path, source| CommitError::Io {
            digest: digest.clone(),
            path: path.to_owned(),
            source,
        };
        let hasher = std::mem::take(&mut self.hasher);
        let actual_len = hasher.len();
        let actual = hasher.finish();
        if actual_len != size {
            self.discard();
            return Err(CommitError::Size {
                digest: digest.clone(),
                expected: size,
                actual: actual_len,
            });
        }
        if actual != digest {
            self.discard();
            return Err(CommitError::Digest {
                digest: digest.clone(),
                actual,
            });
        }
        self.file
            .sync_data()
            .map_err(|source| io_error(&self.path, source))?;
        fs_err::rename(&self.path, &self.final_path)
            .map_err(|source| io_error(&self.final_path, source))?;
        tracing::debug!(digest = %digest, "blob verified and cached");
        Ok(())
    }

    /// Deletes the partial download.
    pub(crate) fn discard(&self) {
        if let Err(err) = fs_err::remove_file(&self.path) {
            tracing::warn!(error = %err, "cannot delete a bad download");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partial_resumes_and_commits_only_verified_blobs() {
        let dir = tempfile::tempdir().unwrap();
        let cache = BlobCache::new(dir.path());
        let content = b"hello, layer".repeat(1000);
        let digest = Digest::of(&content);
        let size = content.len() as u64;

        let Begin::Partial(mut partial) = cache.begin(&digest, size).unwrap() else {
            panic!("empty cache has the blob");
        };
        partial.append(&content[..5000]).unwrap();
        drop(partial); // interrupted

        let Begin::Partial(mut partial) = cache.begin(&digest, size).unwrap() else {
            panic!("partial blob counted as present");
        };
        assert_eq!(partial.len(), 5000);
        partial.append(&content[5000..]).unwrap();
        partial.commit(size).unwrap();
        assert!(cache.contains(&digest, size));
        assert_eq!(std::fs::read(cache.blob_path(&digest)).unwrap(), content);
        assert!(matches!(
            cache.begin(&digest, size).unwrap(),
            Begin::Present
        ));
    }

    #[test]
    fn corrupt_download_is_deleted() {
        let dir = tempfile::tempdir().unwrap();
        let cache = BlobCache::new(dir.path());
        let digest = Digest::of(b"right");
        let Begin::Partial(mut partial) = cache.begin(&digest, 5).unwrap() else {
            panic!();
        };
        partial.append(b"wrong").unwrap();
        let path = partial.path().to_owned();
        assert!(matches!(partial.commit(5), Err(CommitError::Digest { .. })));
        assert!(!path.exists());
        assert!(!cache.blob_path(&digest).exists());
    }

    #[test]
    fn store_and_read_verified() {
        let dir = tempfile::tempdir().unwrap();
        let cache = BlobCache::new(dir.path());
        let digest = Digest::of(b"{}");
        assert!(cache.store(&Digest::of(b"x"), b"{}").is_err());
        cache.store(&digest, b"{}").unwrap();
        assert_eq!(cache.read_verified(&digest, 10).unwrap().unwrap(), b"{}");
        std::fs::write(cache.blob_path(&digest), b"{!").unwrap();
        assert_eq!(cache.read_verified(&digest, 10).unwrap(), None);
        assert!(!cache.blob_path(&digest).exists());
    }
}
