//! Applying layer tarballs, in order, to a staging directory.
//!
//! The staging directory is the only place anything is written. Entry
//! names are normalised first (absolute names and `..` refused), parent
//! directories are resolved by `banger-rootfs` with `openat2(RESOLVE_BENEATH
//! | RESOLVE_NO_MAGICLINKS | RESOLVE_NO_XDEV)` so a symlink planted by an
//! earlier entry can never redirect a write outside the root, and the last
//! component is always created with its `*at` calls that do not follow
//! symlinks (`O_CREAT|O_EXCL|O_NOFOLLOW`, `symlinkat`, `linkat` without
//! `AT_SYMLINK_FOLLOW`). Existing entries are unlinked, never written
//! through, so a hard link from an earlier layer is never modified.
//!
//! Layer semantics follow the OCI image spec: `.wh.NAME` removes NAME from
//! lower layers, `.wh..wh..opq` hides everything lower layers put in its
//! directory, a non-directory replaces a directory and the other way round,
//! hard links may point at files from earlier layers. Ownership (numeric),
//! modes including setuid/setgid/sticky, mtimes and `SCHILY.xattr.*` PAX
//! records are applied; an xattr the file system refuses is skipped with a
//! warning. Directory metadata is applied last, deepest first, so later
//! entries do not disturb directory mtimes.
//!
//! Refused, with an error naming the layer and the entry: absolute names,
//! `..` components, symlinks whose target climbs above the root, hard links
//! whose target is absolute, climbs out or is missing, anything whose
//! parent resolves outside the root, and sizes beyond the limits (per file,
//! total, and a ratio of unpacked to compressed bytes for decompression
//! bombs). When an [`Unpacker`] is dropped before [`Unpacker::finish`]
//! succeeded, its staging directory is deleted.
//!
//! Device nodes and FIFOs are never created: a guest's `/dev` is a
//! devtmpfs (a tmpfs under banger-simvm), so an image needs none, and a
//! node in an image could only ever give access to a host device. Each one
//! is skipped (whatever a lower layer had at its path is removed, as the
//! node would have replaced it) and counted: [`LayerStats::skipped_special`],
//! [`Unpacker::skipped_special`]. A debootstrap tree's `/dev/null`,
//! `/dev/console`, … import this way.

mod fs;
mod path;
mod size;

use std::collections::{BTreeMap, HashSet};
use std::ffi::OsStr;
use std::fmt;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::os::fd::AsFd;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use banger_rootfs::{Dangling, Dir, ResolveDirError, Root, is_dir};
use nix::errno::Errno;
use nix::fcntl::{OFlag, openat};
use nix::sys::stat::{Mode, fchmod, futimens};
use nix::sys::time::TimeSpec;
use nix::unistd::{Gid, Uid, fchown};

use crate::digest::{Digest, HashingReader};
use crate::manifest::Compression;

pub use size::ContentSize;

use path::{RelPath, Whiteout};

const KIB: u64 = 1024;
const MIB: u64 = 1024 * KIB;
const GIB: u64 = 1024 * MIB;

/// Limits and switches for [`Unpacker`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnpackOptions {
    /// Apply the archive's uid/gid (needs root; otherwise files belong to
    /// the caller). Defaults to whether the process runs as root.
    pub preserve_ownership: bool,
    /// Most bytes of file content written, all layers together.
    pub max_total_bytes: u64,
    /// Largest single file.
    pub max_file_bytes: u64,
    /// Most uncompressed bytes a layer may produce per compressed byte
    /// (0: no ratio limit). Only applies above [`Self::ratio_floor`].
    pub max_ratio: u64,
    /// Uncompressed bytes any layer may produce regardless of the ratio.
    pub ratio_floor: u64,
    /// Most archive entries, all layers together.
    pub max_entries: u64,
}

impl Default for UnpackOptions {
    fn default() -> Self {
        Self {
            preserve_ownership: nix::unistd::geteuid().is_root(),
            max_total_bytes: 64 * GIB,
            max_file_bytes: 32 * GIB,
            max_ratio: 200,
            ratio_floor: 2 * GIB,
            max_entries: 10_000_000,
        }
    }
}

/// Why an entry was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Refusal {
    AbsolutePath,
    ParentComponent,
    NulByte,
    PathTooLong,
    /// Symlink whose target climbs above the root.
    SymlinkEscapes {
        target: String,
    },
    /// Hard link whose target is absolute or climbs out.
    HardLinkEscapes {
        target: String,
    },
    HardLinkTargetMissing {
        target: String,
    },
    HardLinkToDirectory {
        target: String,
    },
    BadLinkTarget,
    /// The entry's parent resolves outside the root through a symlink.
    ResolvesOutside,
    SymlinkLoop,
    ParentNotDirectory,
    DanglingParent,
    BadWhiteout,
    ReplacesRoot,
    FileTooLarge {
        size: u64,
        limit: u64,
    },
    TotalTooLarge {
        limit: u64,
    },
    RatioExceeded {
        limit: u64,
        compressed: u64,
    },
    TooManyEntries {
        limit: u64,
    },
    BadOwner,
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::AbsolutePath => write!(f, "is an absolute path"),
            Self::ParentComponent => write!(f, "contains a \"..\" component"),
            Self::NulByte => write!(f, "contains a NUL byte"),
            Self::PathTooLong => write!(f, "is too long or too deep"),
            Self::SymlinkEscapes { target } => {
                write!(f, "is a symlink to {target:?}, which leaves the root")
            }
            Self::HardLinkEscapes { target } => {
                write!(f, "is a hard link to {target:?}, which is outside the root")
            }
            Self::HardLinkTargetMissing { target } => {
                write!(f, "is a hard link to {target:?}, which does not exist")
            }
            Self::HardLinkToDirectory { target } => {
                write!(f, "is a hard link to directory {target:?}")
            }
            Self::BadLinkTarget => write!(f, "has an empty or invalid link target"),
            Self::ResolvesOutside => write!(
                f,
                "has a parent directory that resolves outside the root (through a symlink)"
            ),
            Self::SymlinkLoop => write!(f, "has a parent path with too many symlinks"),
            Self::ParentNotDirectory => write!(f, "has a parent that is not a directory"),
            Self::DanglingParent => write!(f, "has a parent that is a dangling symlink"),
            Self::BadWhiteout => write!(f, "is a whiteout for an invalid name"),
            Self::ReplacesRoot => write!(f, "would replace the root directory"),
            Self::FileTooLarge { size, limit } => {
                write!(f, "is {size} bytes, over the per-file limit of {limit}")
            }
            Self::TotalTooLarge { limit } => write!(
                f,
                "takes the unpacked size over the limit of {limit} bytes (a decompression bomb?)"
            ),
            Self::RatioExceeded { limit, compressed } => write!(
                f,
                "takes the layer over {limit} uncompressed bytes from {compressed} compressed (a decompression bomb?)"
            ),
            Self::TooManyEntries { limit } => write!(f, "is over the limit of {limit} entries"),
            Self::BadOwner => write!(f, "has a uid or gid that does not fit 32 bits"),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum UnpackError {
    #[error("cannot create the staging directory {path}")]
    Staging {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("layer {layer}: entry {entry:?} {reason}; refused")]
    Refused {
        layer: String,
        entry: String,
        reason: Refusal,
    },
    #[error("layer {layer}: entry {entry:?}: cannot {action}")]
    Io {
        layer: String,
        entry: String,
        action: &'static str,
        #[source]
        source: io::Error,
    },
    #[error("layer {layer}: cannot read the archive")]
    Archive {
        layer: String,
        #[source]
        source: io::Error,
    },
    #[error("layer {layer}: the blob hashes to {actual}, not {layer}; the cached copy was deleted")]
    DigestMismatch { layer: String, actual: Digest },
    #[error("cannot finish the staging directory {path}")]
    Finish {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("the unpack was cancelled")]
    Cancelled,
    #[error("an earlier layer failed; this staging directory cannot be used any more")]
    Poisoned,
}

/// What one layer did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LayerStats {
    pub entries: u64,
    /// File content written.
    pub file_bytes: u64,
    /// Size of the uncompressed tar stream.
    pub tar_bytes: u64,
    /// Device nodes and FIFOs skipped (never created).
    pub skipped_special: u64,
}

#[derive(Debug, Clone)]
struct Meta {
    mode: u32,
    uid: u32,
    gid: u32,
    mtime: Option<i64>,
    xattrs: Vec<(String, Vec<u8>)>,
}

impl Meta {
    fn implicit_dir() -> Self {
        Self {
            mode: 0o755,
            uid: 0,
            gid: 0,
            mtime: None,
            xattrs: Vec::new(),
        }
    }
}

/// Per-layer bookkeeping.
#[derive(Debug, Default)]
struct LayerState {
    /// Paths this layer wrote.
    written: HashSet<RelPath>,
    /// Those paths and all their ancestors.
    touched: HashSet<RelPath>,
    stats: LayerStats,
}

impl LayerState {
    fn record(&mut self, path: &RelPath) {
        self.written.insert(path.clone());
        let mut current = path.clone();
        while self.touched.insert(current.clone()) {
            match current.split_last() {
                Some((parent, _)) => current = parent,
                None => break,
            }
        }
    }
}

/// Applies layers to a staging directory it creates; deletes it again
/// unless [`Unpacker::finish`] succeeds. Blocking: run it on a blocking
/// thread.
#[derive(Debug)]
pub struct Unpacker {
    path: PathBuf,
    root: Root,
    options: UnpackOptions,
    /// Deferred directory metadata.
    dirs: BTreeMap<RelPath, Meta>,
    total_bytes: u64,
    entries: u64,
    skipped_special: u64,
    /// Where skipped nodes would have been (hard links to them are skipped).
    skipped_paths: HashSet<RelPath>,
    poisoned: bool,
    finished: bool,
    cancel: Option<Arc<AtomicBool>>,
    buffer: Vec<u8>,
}

impl Drop for Unpacker {
    fn drop(&mut self) {
        if !self.finished {
            match fs_err::remove_dir_all(&self.path) {
                Ok(()) => {
                    tracing::debug!(path = %self.path.display(), "removed unfinished staging directory")
                }
                Err(err) => {
                    tracing::warn!(error = %err, "cannot remove unfinished staging directory")
                }
            }
        }
    }
}

/// Context for errors about one entry.
struct At<'a> {
    layer: &'a str,
    entry: &'a str,
}

impl At<'_> {
    fn refused(&self, reason: Refusal) -> UnpackError {
        UnpackError::Refused {
            layer: self.layer.to_owned(),
            entry: self.entry.to_owned(),
            reason,
        }
    }

    fn io(&self, action: &'static str) -> impl FnOnce(io::Error) -> UnpackError + '_ {
        move |source| UnpackError::Io {
            layer: self.layer.to_owned(),
            entry: self.entry.to_owned(),
            action,
            source,
        }
    }

    fn errno(&self, action: &'static str) -> impl FnOnce(Errno) -> UnpackError + '_ {
        move |errno| UnpackError::Io {
            layer: self.layer.to_owned(),
            entry: self.entry.to_owned(),
            action,
            source: errno.into(),
        }
    }

    fn resolve(&self, failure: ResolveDirError) -> UnpackError {
        match failure {
            ResolveDirError::Escapes { .. } => self.refused(Refusal::ResolvesOutside),
            ResolveDirError::Loop { .. } => self.refused(Refusal::SymlinkLoop),
            ResolveDirError::NotADirectory { .. } => self.refused(Refusal::ParentNotDirectory),
            ResolveDirError::Dangling { .. } => self.refused(Refusal::DanglingParent),
            ResolveDirError::Missing { .. } => {
                self.io("find the parent directory")(io::ErrorKind::NotFound.into())
            }
            ResolveDirError::Io { source, .. } => self.io("open the parent directory")(source),
        }
    }
}

/// Shared counter of uncompressed bytes, with a limit.
struct Counting<R> {
    inner: R,
    count: u64,
    limit: u64,
}

impl<R: Read> Read for Counting<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let read = self.inner.read(buf)?;
        self.count += read as u64;
        if self.count > self.limit {
            return Err(io::Error::other(BudgetExceeded));
        }
        Ok(read)
    }
}

#[derive(Debug)]
struct BudgetExceeded;

impl fmt::Display for BudgetExceeded {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "layer size budget exceeded")
    }
}

impl std::error::Error for BudgetExceeded {}

fn is_budget_error(err: &io::Error) -> bool {
    err.get_ref()
        .is_some_and(|inner| inner.is::<BudgetExceeded>())
}

impl Unpacker {
    /// Creates the staging directory `path` (which must not exist; its
    /// parent must).
    pub fn create(path: &Path, options: UnpackOptions) -> Result<Self, UnpackError> {
        let staging_error = |source: io::Error| UnpackError::Staging {
            path: path.to_owned(),
            source,
        };
        fs_err::create_dir(path).map_err(staging_error)?;
        let root = openat(
            nix::fcntl::AT_FDCWD,
            path,
            OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
            Mode::empty(),
        );
        let root = match root {
            Ok(root) => Root::from_fd(root, fs::staging_resolve()),
            Err(errno) => {
                let _ = fs_err::remove_dir(path);
                return Err(staging_error(errno.into()));
            }
        };
        // The root is 0755 root:root unless a layer says otherwise.
        let mut dirs = BTreeMap::new();
        dirs.insert(RelPath::root(), Meta::implicit_dir());
        Ok(Self {
            path: path.to_owned(),
            root,
            options,
            dirs,
            total_bytes: 0,
            entries: 0,
            skipped_special: 0,
            skipped_paths: HashSet::new(),
            poisoned: false,
            finished: false,
            cancel: None,
            buffer: vec![0; 256 * KIB as usize],
        })
    }

    /// Checks `flag` before every entry; when set, the current layer fails
    /// with [`UnpackError::Cancelled`].
    pub fn set_cancel(&mut self, flag: Arc<AtomicBool>) {
        self.cancel = Some(flag);
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn options(&self) -> &UnpackOptions {
        &self.options
    }

    /// Device nodes and FIFOs skipped so far, all layers together.
    pub fn skipped_special(&self) -> u64 {
        self.skipped_special
    }

    /// Applies a layer blob from the cache: sniffs its compression, applies
    /// it, and checks that the whole blob hashes to `digest` (a corrupt
    /// cached blob is deleted).
    pub fn apply_blob(&mut self, blob: &Path, digest: &Digest) -> Result<LayerStats, UnpackError> {
        let layer = digest.to_string();
        let file = fs_err::File::open(blob).map_err(|source| UnpackError::Archive {
            layer: layer.clone(),
            source,
        })?;
        let compressed = file.metadata().map(|meta| meta.len()).ok();
        let mut reader = BufReader::with_capacity(256 * KIB as usize, HashingReader::new(file));
        let applied = self
            .apply_compressed(&layer, &mut reader, compressed)
            .and_then(|stats| {
                // Hash whatever the decompressor left (padding after the archive).
                io::copy(&mut reader, &mut io::sink()).map_err(|source| UnpackError::Archive {
                    layer: layer.clone(),
                    source,
                })?;
                Ok(stats)
            });
        let actual = match &applied {
            Ok(_) => reader.into_inner().finish().0,
            // A layer that failed may be a corrupt cached blob: hash it all.
            Err(_) => match hash_file(blob) {
                Ok(actual) => actual,
                Err(_) => return applied,
            },
        };
        if actual != *digest {
            self.poisoned = true;
            if let Err(err) = fs_err::remove_file(blob) {
                tracing::warn!(error = %err, "cannot delete corrupt cached blob");
            }
            return Err(UnpackError::DigestMismatch { layer, actual });
        }
        applied
    }

    /// Applies a layer from `reader`, gzip, zstd or plain tar (detected from
    /// its first bytes). `layer` labels errors (a digest, a file name).
    /// `compressed_size`, when known, enables the ratio limit.
    pub fn apply_compressed(
        &mut self,
        layer: &str,
        reader: &mut impl BufRead,
        compressed_size: Option<u64>,
    ) -> Result<LayerStats, UnpackError> {
        let archive_error = |source| UnpackError::Archive {
            layer: layer.to_owned(),
            source,
        };
        let head = reader.fill_buf().map_err(archive_error)?;
        match Compression::sniff(head) {
            Compression::None => self.apply_tar(layer, reader, compressed_size),
            Compression::Gzip => {
                let mut decoder = flate2::bufread::MultiGzDecoder::new(reader);
                self.apply_tar(layer, &mut decoder, compressed_size)
            }
            Compression::Zstd => {
                let mut decoder =
                    zstd::stream::read::Decoder::with_buffer(reader).map_err(archive_error)?;
                self.apply_tar(layer, &mut decoder, compressed_size)
            }
        }
    }

    /// Applies an uncompressed tar stream.
    pub fn apply_tar(
        &mut self,
        layer: &str,
        reader: impl Read,
        compressed_size: Option<u64>,
    ) -> Result<LayerStats, UnpackError> {
        if self.poisoned {
            return Err(UnpackError::Poisoned);
        }
        let result = self.apply_tar_inner(layer, reader, compressed_size);
        if result.is_err() {
            self.poisoned = true;
        }
        result
    }

    fn layer_budget(&self, compressed_size: Option<u64>) -> u64 {
        match compressed_size {
            Some(compressed) if self.options.max_ratio > 0 => compressed
                .saturating_mul(self.options.max_ratio)
                .max(self.options.ratio_floor),
            _ => u64::MAX,
        }
    }

    fn apply_tar_inner(
        &mut self,
        layer: &str,
        reader: impl Read,
        compressed_size: Option<u64>,
    ) -> Result<LayerStats, UnpackError> {
        let budget = self.layer_budget(compressed_size);
        let ratio_refusal = || Refusal::RatioExceeded {
            limit: budget,
            compressed: compressed_size.unwrap_or(0),
        };
        let mut archive = tar::Archive::new(Counting {
            inner: reader,
            count: 0,
            limit: budget,
        });
        let mut state = LayerState::default();
        let entries = archive.entries().map_err(|source| UnpackError::Archive {
            layer: layer.to_owned(),
            source,
        })?;
        let mut last_entry = String::new();
        for entry in entries {
            if self
                .cancel
                .as_ref()
                .is_some_and(|flag| flag.load(Ordering::Relaxed))
            {
                return Err(UnpackError::Cancelled);
            }
            let mut entry = match entry {
                Ok(entry) => entry,
                Err(err) if is_budget_error(&err) => {
                    let at = At {
                        layer,
                        entry: &last_entry,
                    };
                    return Err(at.refused(ratio_refusal()));
                }
                Err(source) => {
                    return Err(UnpackError::Archive {
                        layer: layer.to_owned(),
                        source,
                    });
                }
            };
            last_entry = String::from_utf8_lossy(&entry.path_bytes()).into_owned();
            let at = At {
                layer,
                entry: &last_entry,
            };
            self.entries += 1;
            state.stats.entries += 1;
            if self.entries > self.options.max_entries {
                return Err(at.refused(Refusal::TooManyEntries {
                    limit: self.options.max_entries,
                }));
            }
            match self.apply_entry(&at, &mut entry, &mut state) {
                Ok(()) => {}
                Err(UnpackError::Io { source, .. } | UnpackError::Archive { source, .. })
                    if is_budget_error(&source) =>
                {
                    return Err(at.refused(ratio_refusal()));
                }
                Err(err) => return Err(err),
            }
        }
        // Whatever follows the end-of-archive marker still counts.
        let mut rest = archive.into_inner();
        match io::copy(&mut rest, &mut io::sink()) {
            Ok(_) => {}
            Err(err) if is_budget_error(&err) => {
                let at = At {
                    layer,
                    entry: &last_entry,
                };
                return Err(at.refused(ratio_refusal()));
            }
            Err(source) => {
                return Err(UnpackError::Archive {
                    layer: layer.to_owned(),
                    source,
                });
            }
        }
        state.stats.tar_bytes = rest.count;
        tracing::debug!(
            layer,
            entries = state.stats.entries,
            bytes = state.stats.file_bytes,
            "layer applied"
        );
        Ok(state.stats)
    }

    fn apply_entry<R: Read>(
        &mut self,
        at: &At<'_>,
        entry: &mut tar::Entry<'_, R>,
        state: &mut LayerState,
    ) -> Result<(), UnpackError> {
        let kind = entry.header().entry_type();
        if matches!(
            kind,
            tar::EntryType::XGlobalHeader
                | tar::EntryType::XHeader
                | tar::EntryType::GNULongName
                | tar::EntryType::GNULongLink
        ) {
            return Ok(());
        }
        let raw = entry.path_bytes().into_owned();
        let rel = RelPath::from_archive(&raw).map_err(|reason| at.refused(reason))?;

        let Some((parent, name)) = rel.split_last() else {
            // The root itself: only its metadata can change.
            if kind != tar::EntryType::Directory {
                return Err(at.refused(Refusal::ReplacesRoot));
            }
            let meta = self.meta(at, entry)?;
            self.dirs.insert(RelPath::root(), meta);
            return Ok(());
        };

        if let Some(whiteout) = path::whiteout(name) {
            return self.whiteout(at, &parent, whiteout, state);
        }

        match kind {
            tar::EntryType::Directory => {
                let meta = self.meta(at, entry)?;
                self.make_dir(at, &rel, &parent, name, meta)?;
            }
            tar::EntryType::Regular | tar::EntryType::Continuous | tar::EntryType::GNUSparse => {
                self.check_declared_size(at, entry.size())?;
                let meta = self.meta(at, entry)?;
                self.write_file(at, &rel, &parent, name, entry, meta, state)?;
            }
            tar::EntryType::Symlink => {
                let meta = self.meta(at, entry)?;
                let target = entry
                    .link_name_bytes()
                    .ok_or_else(|| at.refused(Refusal::BadLinkTarget))?
                    .into_owned();
                path::check_symlink_target(&rel, &target).map_err(|reason| at.refused(reason))?;
                self.make_symlink(at, &rel, &parent, name, &target, &meta)?;
            }
            tar::EntryType::Link => {
                let target = entry
                    .link_name_bytes()
                    .ok_or_else(|| at.refused(Refusal::BadLinkTarget))?
                    .into_owned();
                let target =
                    path::hard_link_target(&target).map_err(|reason| at.refused(reason))?;
                if self.skipped_paths.contains(&target) {
                    // A second name of a skipped node is skipped too.
                    self.skip_special(at, &rel, &parent, name, state)?;
                    return Ok(());
                }
                self.make_hard_link(at, &rel, &parent, name, &target)?;
            }
            tar::EntryType::Char | tar::EntryType::Block | tar::EntryType::Fifo => {
                self.skip_special(at, &rel, &parent, name, state)?;
                return Ok(());
            }
            other => {
                tracing::warn!(layer = at.layer, entry = at.entry, kind = ?other, "skipping archive entry of unsupported type");
                return Ok(());
            }
        }
        if !self.skipped_paths.is_empty() {
            self.skipped_paths.remove(&rel);
        }
        state.record(&rel);
        Ok(())
    }

    fn meta<R: Read>(
        &self,
        at: &At<'_>,
        entry: &mut tar::Entry<'_, R>,
    ) -> Result<Meta, UnpackError> {
        let header = entry.header();
        // Some writers leave numeric fields empty; read those as 0.
        let old = header.as_old();
        let numeric = |value: io::Result<u64>, raw: &[u8], what: &'static str| match value {
            Ok(value) => Ok(value),
            Err(_) if raw.iter().all(|byte| *byte == 0 || *byte == b' ') => Ok(0),
            Err(source) => Err(at.io(what)(source)),
        };
        let mode =
            numeric(header.mode().map(u64::from), &old.mode, "read the mode")? as u32 & 0o7777;
        let uid = numeric(header.uid(), &old.uid, "read the uid")?;
        let gid = numeric(header.gid(), &old.gid, "read the gid")?;
        let mtime = numeric(header.mtime(), &old.mtime, "read the mtime")?;
        let (Ok(uid), Ok(gid)) = (u32::try_from(uid), u32::try_from(gid)) else {
            return Err(at.refused(Refusal::BadOwner));
        };
        let mut xattrs = Vec::new();
        if let Some(extensions) = entry.pax_extensions().map_err(at.io("read PAX records"))? {
            for extension in extensions {
                let extension = extension.map_err(at.io("read PAX records"))?;
                let Ok(key) = extension.key() else { continue };
                if let Some(name) = key.strip_prefix("SCHILY.xattr.") {
                    xattrs.push((name.to_owned(), extension.value_bytes().to_vec()));
                }
            }
        }
        Ok(Meta {
            mode,
            uid,
            gid,
            mtime: Some(i64::try_from(mtime).unwrap_or(i64::MAX)),
            xattrs,
        })
    }

    /// The parent directory of an entry. Missing directories are made
    /// (0755, their metadata deferred as [`Meta::implicit_dir`]); nothing is
    /// made through a dangling symlink.
    fn parent_dir(&mut self, at: &At<'_>, parent: &RelPath) -> Result<Dir, UnpackError> {
        let mut created = Vec::new();
        let dir = self
            .root
            .make_dirs(
                &parent.to_path(),
                Mode::from_bits_truncate(0o755),
                Dangling::Refuse,
                |path, _| {
                    created.push(RelPath::from_plain(path));
                    Ok(())
                },
            )
            .map_err(|failure| at.resolve(failure))?;
        for dir in created {
            self.dirs.entry(dir).or_insert_with(Meta::implicit_dir);
        }
        Ok(dir)
    }

    /// The existing directory `rel`.
    fn existing_dir(&self, rel: &RelPath) -> Result<Dir, ResolveDirError> {
        self.root.dir(&rel.to_path())
    }

    /// Removes whatever is at `name` (recursively), forgetting deferred
    /// metadata of removed directories.
    fn clear(
        &mut self,
        at: &At<'_>,
        dir: &Dir,
        rel: &RelPath,
        name: &OsStr,
    ) -> Result<(), UnpackError> {
        if dir
            .remove(name)
            .map_err(at.io("remove the existing entry"))?
        {
            self.forget_dirs(rel);
        }
        Ok(())
    }

    fn forget_dirs(&mut self, removed: &RelPath) {
        let doomed: Vec<RelPath> = self
            .dirs
            .range(removed.clone()..)
            .take_while(|(path, _)| path.starts_with(removed))
            .map(|(path, _)| path.clone())
            .collect();
        for path in doomed {
            self.dirs.remove(&path);
        }
    }

    fn make_dir(
        &mut self,
        at: &At<'_>,
        rel: &RelPath,
        parent: &RelPath,
        name: &OsStr,
        meta: Meta,
    ) -> Result<(), UnpackError> {
        let dir = self.parent_dir(at, parent)?;
        match dir
            .lstat(name)
            .map_err(at.io("inspect the existing entry"))?
        {
            Some(stat) if is_dir(&stat) => {}
            Some(_) => {
                self.clear(at, &dir, rel, name)?;
                mkdir(at, &dir, name)?;
            }
            None => mkdir(at, &dir, name)?,
        }
        self.dirs.insert(rel.clone(), meta);
        Ok(())
    }

    #[allow(clippy::too_many_arguments)]
    fn write_file<R: Read>(
        &mut self,
        at: &At<'_>,
        rel: &RelPath,
        parent: &RelPath,
        name: &OsStr,
        entry: &mut tar::Entry<'_, R>,
        meta: Meta,
        state: &mut LayerState,
    ) -> Result<(), UnpackError> {
        let dir = self.parent_dir(at, parent)?;
        self.clear(at, &dir, rel, name)?;
        let mut file = dir
            .create_file(name, Mode::from_bits_truncate(0o600))
            .map_err(at.io("create the file"))?;
        let mut written: u64 = 0;
        loop {
            let read = match entry.read(&mut self.buffer) {
                Ok(0) => break,
                Ok(read) => read,
                Err(err) if err.kind() == io::ErrorKind::Interrupted => continue,
                Err(source) => {
                    return Err(UnpackError::Archive {
                        layer: at.layer.to_owned(),
                        source,
                    });
                }
            };
            written += read as u64;
            self.total_bytes += read as u64;
            if written > self.options.max_file_bytes {
                return Err(at.refused(Refusal::FileTooLarge {
                    size: written,
                    limit: self.options.max_file_bytes,
                }));
            }
            if self.total_bytes > self.options.max_total_bytes {
                return Err(at.refused(Refusal::TotalTooLarge {
                    limit: self.options.max_total_bytes,
                }));
            }
            file.write_all(&self.buffer[..read])
                .map_err(at.io("write the file"))?;
        }
        state.stats.file_bytes += written;
        self.apply_fd_meta(at, file.as_fd(), &meta)
    }

    /// Refuses a file whose header already says it is too big.
    fn check_declared_size(&self, at: &At<'_>, declared: u64) -> Result<(), UnpackError> {
        if declared > self.options.max_file_bytes {
            return Err(at.refused(Refusal::FileTooLarge {
                size: declared,
                limit: self.options.max_file_bytes,
            }));
        }
        if self.total_bytes.saturating_add(declared) > self.options.max_total_bytes {
            return Err(at.refused(Refusal::TotalTooLarge {
                limit: self.options.max_total_bytes,
            }));
        }
        Ok(())
    }

    /// Ownership, then mode (chown clears setuid), then xattrs (chown
    /// clears security.capability), then times.
    fn apply_fd_meta(&self, at: &At<'_>, fd: impl AsFd, meta: &Meta) -> Result<(), UnpackError> {
        let fd = fd.as_fd();
        if self.options.preserve_ownership {
            fchown(
                fd,
                Some(Uid::from_raw(meta.uid)),
                Some(Gid::from_raw(meta.gid)),
            )
            .map_err(at.errno("set the owner"))?;
        }
        fchmod(fd, Mode::from_bits_truncate(meta.mode)).map_err(at.errno("set the mode"))?;
        for (name, value) in &meta.xattrs {
            if name.starts_with("trusted.overlay.") || name.starts_with("user.overlay.") {
                tracing::warn!(layer = at.layer, entry = at.entry, xattr = %name, "skipping overlayfs xattr");
                continue;
            }
            if let Err(err) = fs::set_xattr(fd, name, value) {
                tracing::warn!(layer = at.layer, entry = at.entry, xattr = %name, error = %err, "the file system refused an xattr; skipped");
            }
        }
        if let Some(mtime) = meta.mtime {
            let time = TimeSpec::new(mtime, 0);
            futimens(fd, &time, &time).map_err(at.errno("set the mtime"))?;
        }
        Ok(())
    }

    fn make_symlink(
        &mut self,
        at: &At<'_>,
        rel: &RelPath,
        parent: &RelPath,
        name: &OsStr,
        target: &[u8],
        meta: &Meta,
    ) -> Result<(), UnpackError> {
        let dir = self.parent_dir(at, parent)?;
        self.clear(at, &dir, rel, name)?;
        dir.symlink(OsStr::from_bytes(target), name)
            .map_err(at.io("create the symlink"))?;
        if self.options.preserve_ownership {
            dir.chown(name, Uid::from_raw(meta.uid), Gid::from_raw(meta.gid))
                .map_err(at.io("set the symlink's owner"))?;
        }
        if let Some(mtime) = meta.mtime {
            let time = TimeSpec::new(mtime, 0);
            dir.set_times(name, &time, &time)
                .map_err(at.io("set the symlink's mtime"))?;
        }
        if !meta.xattrs.is_empty() {
            tracing::debug!(
                layer = at.layer,
                entry = at.entry,
                "xattrs on symlinks are not applied"
            );
        }
        Ok(())
    }

    fn make_hard_link(
        &mut self,
        at: &At<'_>,
        rel: &RelPath,
        parent: &RelPath,
        name: &OsStr,
        target: &RelPath,
    ) -> Result<(), UnpackError> {
        if target == rel {
            return Ok(());
        }
        let shown = target.display();
        let missing = || {
            at.refused(Refusal::HardLinkTargetMissing {
                target: shown.clone(),
            })
        };
        let (target_parent, target_name) = target.split_last().ok_or_else(missing)?;
        let target_dir = match self.existing_dir(&target_parent) {
            Ok(dir) => dir,
            Err(ResolveDirError::Missing { .. } | ResolveDirError::NotADirectory { .. }) => {
                return Err(missing());
            }
            Err(failure) => return Err(at.resolve(failure)),
        };
        match target_dir
            .lstat(target_name)
            .map_err(at.io("inspect the link target"))?
        {
            None => return Err(missing()),
            Some(stat) if is_dir(&stat) => {
                return Err(at.refused(Refusal::HardLinkToDirectory { target: shown }));
            }
            Some(_) => {}
        }
        let dir = self.parent_dir(at, parent)?;
        self.clear(at, &dir, rel, name)?;
        dir.hard_link(name, &target_dir, target_name)
            .map_err(at.io("create the hard link"))?;
        Ok(())
    }

    /// A device node or FIFO: never created. What lower layers had at its
    /// path goes, as the node would have replaced it; parents are not made.
    fn skip_special(
        &mut self,
        at: &At<'_>,
        rel: &RelPath,
        parent: &RelPath,
        name: &OsStr,
        state: &mut LayerState,
    ) -> Result<(), UnpackError> {
        self.skipped_special += 1;
        self.skipped_paths.insert(rel.clone());
        state.stats.skipped_special += 1;
        tracing::debug!(
            layer = at.layer,
            entry = at.entry,
            "skipped a device node or FIFO"
        );
        match self.existing_dir(parent) {
            Ok(dir) => self.clear(at, &dir, rel, name),
            Err(ResolveDirError::Missing { .. } | ResolveDirError::NotADirectory { .. }) => Ok(()),
            Err(failure) => Err(at.resolve(failure)),
        }
    }

    fn whiteout(
        &mut self,
        at: &At<'_>,
        parent: &RelPath,
        whiteout: Whiteout<'_>,
        state: &mut LayerState,
    ) -> Result<(), UnpackError> {
        match whiteout {
            Whiteout::Meta => Ok(()),
            Whiteout::Remove(name) => {
                if name.is_empty() || name == "." || name == ".." {
                    return Err(at.refused(Refusal::BadWhiteout));
                }
                let target = parent.join(name);
                if state.written.contains(&target) {
                    // Whiteouts hide lower layers only.
                    return Ok(());
                }
                let dir = match self.existing_dir(parent) {
                    Ok(dir) => dir,
                    // Nothing there to hide.
                    Err(
                        ResolveDirError::Missing { .. } | ResolveDirError::NotADirectory { .. },
                    ) => return Ok(()),
                    Err(failure) => return Err(at.resolve(failure)),
                };
                self.clear(at, &dir, &target, name)
            }
            Whiteout::Opaque => {
                let dir = self.parent_dir(at, parent)?;
                self.clear_opaque(at, &dir, parent, state, 0)
            }
        }
    }

    /// Removes everything under `rel` that this layer did not write.
    fn clear_opaque(
        &mut self,
        at: &At<'_>,
        dir: &Dir,
        rel: &RelPath,
        state: &LayerState,
        depth: usize,
    ) -> Result<(), UnpackError> {
        if depth > path::MAX_DEPTH {
            return Err(at.refused(Refusal::PathTooLong));
        }
        for name in dir.list().map_err(at.io("list the opaque directory"))? {
            let child = rel.join(&name);
            if !state.touched.contains(&child) {
                self.clear(at, dir, &child, &name)?;
                continue;
            }
            let Some(stat) = dir.lstat(&name).map_err(at.io("inspect an entry"))? else {
                continue;
            };
            if is_dir(&stat) {
                let sub = dir.open_dir(&name).map_err(at.io("open a directory"))?;
                self.clear_opaque(at, &sub, &child, state, depth + 1)?;
            }
        }
        Ok(())
    }

    /// Applies the deferred directory metadata, measures the tree and keeps
    /// the staging directory.
    pub fn finish(mut self) -> Result<ContentSize, UnpackError> {
        if self.poisoned {
            return Err(UnpackError::Poisoned);
        }
        let dirs = std::mem::take(&mut self.dirs);
        // Deepest first, so a restrictive parent mode comes last.
        let mut ordered: Vec<(RelPath, Meta)> = dirs.into_iter().collect();
        ordered.sort_by_key(|(path, _)| std::cmp::Reverse(path.components().len()));
        for (rel, meta) in ordered {
            let shown = rel.display();
            let at = At {
                layer: "(directory metadata)",
                entry: &shown,
            };
            // Only directories are opened this way (opening a device node
            // could have side effects), and a symlink in the last component
            // is refused.
            let fd = match self.root.open_at(
                &rel.to_path(),
                OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW,
            ) {
                Ok(fd) => fd,
                // Replaced by something else after all.
                Err(Errno::ENOENT | Errno::ENOTDIR | Errno::ELOOP) => continue,
                Err(errno) => return Err(at.errno("open the directory")(errno)),
            };
            self.apply_fd_meta(&at, &fd, &meta)?;
        }
        let size = size::measure(&self.path).map_err(|source| UnpackError::Finish {
            path: self.path.clone(),
            source,
        })?;
        self.finished = true;
        Ok(size)
    }
}

fn mkdir(at: &At<'_>, dir: &Dir, name: &OsStr) -> Result<(), UnpackError> {
    dir.mkdir(name, Mode::from_bits_truncate(0o755))
        .map_err(at.io("create the directory"))
}

fn hash_file(path: &Path) -> io::Result<Digest> {
    let mut reader = HashingReader::new(fs_err::File::open(path)?);
    io::copy(&mut reader, &mut io::sink())?;
    Ok(reader.finish().0)
}
