//! The guest's `/root` disk: a clone of the image's `work-seed.ext4`
//! (reflink or sparse copy), grown to the requested size with `resize2fs`.
//! Disks only grow.
//!
//! Growing costs a `resize2fs` run (10–50 ms, mostly its fsyncs). With a
//! grown-seed cache directory (the image's own directory), the first VM of
//! a given size stores the grown seed there as
//! `<seed stem>.grown-<bytes>.ext4` and later VMs of that size only clone it,
//! which with reflinks is a sub-millisecond, size-independent operation.
//!
//! A disk that starts with content of its own (`vm run PATH` writes the
//! workspace before boot) is written instead by [`crate::ext4write`] from
//! that content plus the seed's files, dumped with `debugfs rdump`: one
//! pass at disk speed, no mke2fs, no mount, no loop device.

use std::io;
use std::path::{Path, PathBuf};

use banger_model::ByteSize;
use banger_model::vm::StorageStrategy;
use fs_err as fs;

use crate::clone::{self, CloneFileError, CloneMethod};
use crate::exec::{self, ExecError, Tool};
use crate::superblock::{self, ReadSuperblockError};

/// What to make.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkDiskRequest {
    /// The image's `work-seed.ext4`.
    pub seed: PathBuf,
    /// Where the disk goes (normally `VmPaths::work_disk`); must not exist.
    pub dest: PathBuf,
    /// Size of the grown filesystem (`--disk-size`).
    pub size: ByteSize,
    pub strategy: StorageStrategy,
    /// Where grown seeds are kept for reuse (the image's directory), or
    /// `None` to always clone and grow.
    pub grown_seed_cache: Option<PathBuf>,
    /// A directory whose entries the new disk starts with, beside the
    /// seed's (an entry in both is taken from here). The seed's files are
    /// dumped into it first, so it must be a scratch directory.
    pub content: Option<PathBuf>,
    /// Files taken straight from the host into the disk beside `content`
    /// (which has the last word on a path both name).
    pub host_files: Option<banger_model::host_files::HostFiles>,
    /// Edits made to a disk built from `content` as it is written (the
    /// guest's keys and config): no debugfs run on the fresh disk.
    pub edits: Option<crate::edits::Ext4Edits>,
    /// Told how much of the files is copied while a disk is written
    /// from `content`.
    pub progress: Option<WriteProgress>,
}

/// A callback for the bytes and files copied so far, and in all.
#[derive(Clone)]
pub struct WriteProgress(pub std::sync::Arc<dyn Fn(crate::ext4write::Copied) + Send + Sync>);

impl std::fmt::Debug for WriteProgress {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("WriteProgress")
    }
}

impl PartialEq for WriteProgress {
    fn eq(&self, other: &Self) -> bool {
        std::sync::Arc::ptr_eq(&self.0, &other.0)
    }
}

impl Eq for WriteProgress {}

/// What was made.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkDisk {
    pub path: PathBuf,
    /// Size of the filesystem inside.
    pub size: ByteSize,
    /// How the seed was cloned; `None` when the disk was built from
    /// [`WorkDiskRequest::content`].
    pub method: Option<CloneMethod>,
    /// Cloned from a cached grown seed (no resize needed).
    pub from_cache: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum MakeWorkDiskError {
    #[error("cannot read the work seed")]
    Seed(#[source] ReadSuperblockError),
    #[error(
        "requested disk size {requested} is smaller than the image's work seed ({seed_size}); disks only grow"
    )]
    SmallerThanSeed {
        requested: ByteSize,
        seed_size: ByteSize,
    },
    #[error("cannot make the work disk")]
    Clone(#[source] CloneFileError),
    #[error("cannot copy the work seed's files into {dir}")]
    DumpSeed {
        dir: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("cannot make the edits to the new work disk")]
    Edits(#[source] crate::ext4write::tree::EditTreeError),
    #[error("cannot build the work disk from {dir}")]
    Build {
        dir: PathBuf,
        #[source]
        source: Box<crate::ext4write::WriteExt4Error>,
    },
    #[error(
        "the content needs a {needed} disk, more than the requested {requested}; pass a larger --disk-size"
    )]
    ContentTooLarge {
        needed: ByteSize,
        requested: ByteSize,
    },
    #[error("cannot grow the work disk {path}")]
    Grow {
        path: PathBuf,
        #[source]
        source: GrowWorkDiskError,
    },
}

#[derive(Debug, thiserror::Error)]
pub enum GrowWorkDiskError {
    #[error("work disk {path} holds {current}; disks only grow, so {requested} is refused")]
    Shrink {
        path: PathBuf,
        current: ByteSize,
        requested: ByteSize,
    },
    #[error(transparent)]
    Superblock(#[from] ReadSuperblockError),
    #[error("cannot extend {path}")]
    Extend {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("e2fsck of {path} failed before resizing")]
    Fsck {
        path: PathBuf,
        #[source]
        source: ExecError,
    },
    #[error("resize2fs of {path} failed")]
    Resize {
        path: PathBuf,
        #[source]
        source: ExecError,
    },
}

/// The result of a grow.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GrowOutcome {
    pub before: ByteSize,
    pub after: ByteSize,
}

/// Clones the seed and grows it (or clones a cached grown seed).
#[tracing::instrument(level = "debug", skip_all, fields(dest = %request.dest.display(), size = %request.size))]
pub fn make_work_disk(request: &WorkDiskRequest) -> Result<WorkDisk, MakeWorkDiskError> {
    let seed = superblock::read_superblock(&request.seed).map_err(MakeWorkDiskError::Seed)?;
    if request.size.bytes() < seed.size_bytes() {
        return Err(MakeWorkDiskError::SmallerThanSeed {
            requested: request.size,
            seed_size: ByteSize(seed.size_bytes()),
        });
    }
    if let Some(content) = &request.content {
        return make_with_content(request, content);
    }
    if let Some(cache_dir) = &request.grown_seed_cache {
        match grown_seed(&request.seed, cache_dir, request.size, request.strategy) {
            Ok(grown) => {
                let method = clone::clone_file(&grown, &request.dest, request.strategy)
                    .map_err(MakeWorkDiskError::Clone)?;
                let size = match superblock::read_superblock(&request.dest) {
                    Ok(sb) => ByteSize(sb.size_bytes()),
                    Err(source) => {
                        remove_quietly(&request.dest);
                        return Err(MakeWorkDiskError::Grow {
                            path: request.dest.clone(),
                            source: source.into(),
                        });
                    }
                };
                return Ok(WorkDisk {
                    path: request.dest.clone(),
                    size,
                    method: Some(method),
                    from_cache: true,
                });
            }
            Err(error) => {
                tracing::warn!(cache = %cache_dir.display(), error = %crate::rollback::chain(&error), "grown-seed cache unusable; growing this disk directly");
            }
        }
    }
    let method = clone::clone_file(&request.seed, &request.dest, request.strategy)
        .map_err(MakeWorkDiskError::Clone)?;
    match grow_work_disk(&request.dest, request.size) {
        Ok(outcome) => Ok(WorkDisk {
            path: request.dest.clone(),
            size: outcome.after,
            method: Some(method),
            from_cache: false,
        }),
        Err(source) => {
            remove_quietly(&request.dest);
            Err(MakeWorkDiskError::Grow {
                path: request.dest.clone(),
                source,
            })
        }
    }
}

/// Builds the disk from `content` and the seed's files (see the module
/// docs), at exactly the requested size.
fn make_with_content(
    request: &WorkDiskRequest,
    content: &Path,
) -> Result<WorkDisk, MakeWorkDiskError> {
    use crate::ext4write::{self, Owners, Tree, WriteExt4Error};
    dump_seed_into(&request.seed, content).map_err(|source| MakeWorkDiskError::DumpSeed {
        dir: content.to_owned(),
        source,
    })?;
    let walk_error = |error: ext4write::WalkError| MakeWorkDiskError::Build {
        dir: content.to_owned(),
        source: Box::new(WriteExt4Error::Read {
            path: error.path,
            source: error.source,
        }),
    };
    let root = std::fs::symlink_metadata(content).map_err(|source| {
        walk_error(ext4write::WalkError {
            path: content.to_owned(),
            source,
        })
    })?;
    let mut root_meta = ext4write::Meta::root(0o700);
    root_meta.perm = (std::os::unix::fs::MetadataExt::mode(&root) & 0o7777) as u16;
    let mut tree = Tree::new(root_meta);
    // The daemon's own files (the staged workspace, the seed's files dumped
    // as root of its user namespace) become root's.
    tree.add_dir(content, Owners::of_process())
        .map_err(walk_error)?;
    let mut from_host = Vec::new();
    for section in request.host_files.iter().flat_map(|files| &files.sections) {
        let added = tree
            .add_host_files(section, Owners::of_process())
            .map_err(walk_error)?;
        tracing::debug!(root = %section.root.display(), files = added.files, bytes = added.bytes, shadowed = added.shadowed, left_out = added.left_out, "host files added");
        if let Some(clean_before) = section.clean_before {
            from_host.push((section.into.clone(), added.nodes, clean_before));
        }
    }
    let options = ext4write::WriteOptions {
        size: request.size,
        min_inodes: 0,
        label: Some(crate::mkfs::WORK_LABEL.to_owned()),
        // Room for the guest to build in, as images get (see mkfs).
        min_free: ByteSize(tree.file_bytes() / 5 + crate::mkfs::HEADROOM_FIXED),
    };
    if let Some(edits) = &request.edits {
        tree.apply_edits(edits).map_err(MakeWorkDiskError::Edits)?;
    }
    let too_small = |error| match error {
        WriteExt4Error::TooSmall { needed, .. } => MakeWorkDiskError::ContentTooLarge {
            needed,
            requested: request.size,
        },
        error => MakeWorkDiskError::Build {
            dir: content.to_owned(),
            source: Box::new(error),
        },
    };
    let planned = ext4write::plan_ext4(&tree, &options).map_err(too_small)?;
    for (into, nodes, clean_before) in from_host {
        fill_git_index(&mut tree, &planned, &into, &nodes, clean_before);
    }
    let report = |copied| {
        if let Some(progress) = &request.progress {
            (progress.0)(copied);
        }
    };
    let written = planned
        .write_reporting(&tree, &request.dest, &report)
        .map_err(too_small)?;
    tracing::info!(dest = %request.dest.display(), size = %written.size, used = %written.used, file_bytes = written.file_bytes, "wrote work disk with content");
    Ok(WorkDisk {
        path: request.dest.clone(),
        size: written.size,
        method: None,
        from_cache: false,
    })
}

/// Gives the git index at `into/.git/index` the disk's stat data for the
/// files `nodes` took from the host unchanged (modified before
/// `clean_before`, so as the index has them): git in the guest then finds
/// them clean without reading them. Files modified since, and files the
/// client wrote, keep empty stat data and are compared by content. An
/// index that cannot be filled is left as it is.
fn fill_git_index(
    tree: &mut crate::ext4write::Tree,
    planned: &crate::ext4write::Planned,
    into: &Path,
    nodes: &[crate::ext4write::NodeId],
    clean_before: i64,
) {
    use crate::ext4write::Tree;
    use crate::git_index::{self, EntryStat};
    use std::os::unix::ffi::OsStrExt;
    let Some(repo) = tree.lookup_path(Tree::ROOT, into.as_os_str().as_bytes()) else {
        return;
    };
    let Some(index) = tree.lookup_path(repo, b".git/index") else {
        return;
    };
    let mut bytes = match tree.read_file(index) {
        Ok(bytes) => bytes,
        Err(error) => {
            tracing::warn!(%error, "cannot read the workspace's git index; git will compare the files");
            return;
        }
    };
    let from_host: std::collections::HashSet<_> = nodes.iter().copied().collect();
    let ctime = planned.ctime();
    let filled = git_index::fill_stat(&mut bytes, |path| {
        let node = tree.lookup_path(repo, path)?;
        let meta = tree.meta(node);
        if !from_host.contains(&node) || meta.mtime.secs >= clean_before {
            return None;
        }
        Some(EntryStat {
            ctime: (ctime.secs as u32, ctime.nanos),
            mtime: (meta.mtime.secs as u32, meta.mtime.nanos),
            ino: planned.inode(node),
            uid: meta.uid,
            gid: meta.gid,
            size: tree.len_of(node)?,
        })
    });
    match filled.map(|filled| (filled, tree.set_file_bytes(index, bytes))) {
        Ok((filled, Ok(()))) => tracing::debug!(filled, "filled the workspace's git index"),
        Ok((_, Err(error))) => tracing::warn!(%error, "cannot fill the workspace's git index"),
        Err(error) => tracing::debug!(%error, "the workspace's git index is left as it is"),
    }
}

/// Dumps the seed's root into `dir` (entries `dir` already has win; the
/// seed's `lost+found` is left out, mke2fs makes its own).
fn dump_seed_into(seed: &Path, dir: &Path) -> io::Result<()> {
    let dump = tempfile::Builder::new()
        .prefix(".banger-seed-")
        .tempdir_in(dir)?;
    let target = dump
        .path()
        .to_str()
        .filter(|path| !path.contains('\n'))
        .ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                "scratch path is not UTF-8 or holds a newline",
            )
        })?;
    let request = format!("rdump / {}", crate::edits::quote(target));
    // rdump gives every file its owner in the seed (root): a daemon that
    // is not root may not, except as root of a user namespace of its own,
    // where root is its own uid (and mkfs.ext4 -d makes them root's again).
    let output = exec::run_owning_as_root(
        Tool::Debugfs,
        &exec::args([
            std::ffi::OsStr::new("-R"),
            request.as_ref(),
            seed.as_os_str(),
        ]),
    )
    .map_err(io::Error::other)?;
    // debugfs reports failures on stderr and still exits 0; its banner is
    // the only line a clean run prints.
    let stderr = output.stderr_text();
    let complaints: Vec<&str> = stderr
        .lines()
        .filter(|line| !line.trim().is_empty() && !line.starts_with("debugfs "))
        .collect();
    if !complaints.is_empty() {
        return Err(io::Error::other(format!(
            "debugfs rdump: {}",
            complaints.join("; ")
        )));
    }
    for entry in fs::read_dir(dump.path())? {
        let entry = entry?;
        let name = entry.file_name();
        if name == "lost+found" || fs::symlink_metadata(dir.join(&name)).is_ok() {
            continue;
        }
        fs::rename(entry.path(), dir.join(&name))?;
    }
    Ok(())
}

/// The cached grown copy of `seed` for `size`, made if missing.
fn grown_seed(
    seed: &Path,
    cache_dir: &Path,
    size: ByteSize,
    strategy: StorageStrategy,
) -> Result<PathBuf, MakeWorkDiskError> {
    let stem = seed
        .file_stem()
        .map(|stem| stem.to_string_lossy().into_owned())
        .unwrap_or_else(|| "work-seed".to_owned());
    let name = format!("{stem}.grown-{}.ext4", size.bytes());
    let cached = cache_dir.join(&name);
    if cached.is_file() {
        return Ok(cached);
    }
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|elapsed| elapsed.subsec_nanos())
        .unwrap_or_default();
    let temp = cache_dir.join(format!(".{name}.{}-{nanos}.tmp", std::process::id()));
    clone::clone_file(seed, &temp, strategy).map_err(MakeWorkDiskError::Clone)?;
    let result = grow_work_disk(&temp, size)
        .map_err(|source| MakeWorkDiskError::Grow {
            path: temp.clone(),
            source,
        })
        .and_then(|_| {
            // Racing creators produce identical files; the last rename wins.
            fs::rename(&temp, &cached).map_err(|error| MakeWorkDiskError::Grow {
                path: cached.clone(),
                source: GrowWorkDiskError::Extend {
                    path: cached.clone(),
                    source: error,
                },
            })
        });
    match result {
        Ok(()) => {
            tracing::info!(path = %cached.display(), size = %size, "cached grown work seed");
            Ok(cached)
        }
        Err(error) => {
            remove_quietly(&temp);
            Err(error)
        }
    }
}

fn remove_quietly(path: &Path) {
    if let Err(error) = std::fs::remove_file(path)
        && error.kind() != io::ErrorKind::NotFound
    {
        tracing::warn!(path = %path.display(), %error, "could not remove");
    }
}

/// Grows the filesystem in the image file `path` to `size` (rounded down
/// to whole filesystem blocks). The disk must not be in use. Asking for
/// less than the filesystem holds is an error; asking for the same size is
/// a no-op.
#[tracing::instrument(level = "debug", skip_all, fields(path = %path.display(), size = %size))]
pub fn grow_work_disk(path: &Path, size: ByteSize) -> Result<GrowOutcome, GrowWorkDiskError> {
    let before = superblock::read_superblock(path)?;
    let target_blocks = size.bytes() / before.block_size;
    if target_blocks < before.blocks {
        return Err(GrowWorkDiskError::Shrink {
            path: path.to_owned(),
            current: ByteSize(before.size_bytes()),
            requested: size,
        });
    }
    let target_len = target_blocks * before.block_size;
    if target_blocks == before.blocks {
        return Ok(GrowOutcome {
            before: ByteSize(before.size_bytes()),
            after: ByteSize(before.size_bytes()),
        });
    }
    let extend_error = |source: io::Error| GrowWorkDiskError::Extend {
        path: path.to_owned(),
        source,
    };
    let file = fs::OpenOptions::new()
        .write(true)
        .open(path)
        .map_err(extend_error)?;
    if file.metadata().map_err(extend_error)?.len() < target_len {
        file.set_len(target_len).map_err(extend_error)?;
    }
    drop(file);
    let resize_args = exec::args([path.as_os_str(), format!("{target_blocks}").as_ref()]);
    if let Err(first) = exec::run(Tool::Resize2fs, &resize_args) {
        // resize2fs wants a freshly checked filesystem when the disk was
        // used since its last check.
        let wants_fsck = first.stderr().is_some_and(|out| out.contains("e2fsck -f"));
        if !wants_fsck {
            return Err(GrowWorkDiskError::Resize {
                path: path.to_owned(),
                source: first,
            });
        }
        fsck_preen(path).map_err(|source| GrowWorkDiskError::Fsck {
            path: path.to_owned(),
            source,
        })?;
        exec::run(Tool::Resize2fs, &resize_args).map_err(|source| GrowWorkDiskError::Resize {
            path: path.to_owned(),
            source,
        })?;
    }
    let after = superblock::read_superblock(path)?;
    tracing::debug!(
        before = before.size_bytes(),
        after = after.size_bytes(),
        "grew work disk"
    );
    Ok(GrowOutcome {
        before: ByteSize(before.size_bytes()),
        after: ByteSize(after.size_bytes()),
    })
}

/// `e2fsck -fp`: fixes what is safe to fix; exit codes below 4 mean the
/// filesystem is now consistent.
pub(crate) fn fsck_preen(path: &Path) -> Result<(), ExecError> {
    exec::run_accepting(
        Tool::E2fsck,
        &exec::args([std::ffi::OsStr::new("-fp"), path.as_os_str()]),
        |status| status.code().is_some_and(|code| code < 4),
    )
    .map(|_| ())
}
