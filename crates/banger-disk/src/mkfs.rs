//! Building ext4 images from directories with `mkfs.ext4 -d`: no loop
//! device, no mount, ownership, modes, symlinks, hard links and xattrs
//! carried over by e2fsprogs itself. The output is a sparse file.
//!
//! ## Sizing
//! The content is measured by walking the tree (not following symlinks,
//! counting each hard-linked inode once): regular files by their allocated
//! blocks (`st_blocks`, at least one block when non-empty, at most their
//! length), directories by their entries, long symlinks by one block. Then
//!
//! ```text
//! inodes = max(size / 16 KiB, 1.2 × inodes in the tree + 1024)
//! size   = round_up_4MiB(1.2 × content + 256 B × inodes + journal + 64 MiB)
//! ```
//!
//! where `journal` is what mke2fs picks for a filesystem of that size. The
//! 20 % + 64 MiB headroom leaves the guest room to install packages; a run
//! that still ends out of space is retried with 1.5 × the size, twice.

use std::collections::HashSet;
use std::io;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

use banger_model::ByteSize;
use fs_err as fs;
use fs_err::os::unix::fs::OpenOptionsExt;

use crate::clone::DISK_FILE_MODE;
use crate::exec::{self, ExecError, Tool};

const BLOCK: u64 = 4096;
const MIB: u64 = 1 << 20;
pub(crate) const HEADROOM_FIXED: u64 = 64 * MIB;
const INODE_SIZE: u64 = 256;
const BYTES_PER_INODE: u64 = 16384;
/// mke2fs's `-E resize=` for growable images: reserve group descriptor
/// blocks for the largest growth it allows, so `resize2fs` can grow a small
/// work seed to any disk size (without it, growth past ~1000× fails).
const MAX_RESIZE_BLOCKS: u64 = u32::MAX as u64;
const ATTEMPTS: usize = 3;

/// What a directory tree will occupy in ext4.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ContentSize {
    pub bytes: u64,
    pub inodes: u64,
}

/// The size and inode count chosen for an image.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ext4Plan {
    pub size: ByteSize,
    pub inodes: u64,
}

/// Options for [`build_ext4_from_dir`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Ext4BuildOptions {
    /// Filesystem label (at most 16 bytes).
    pub label: Option<String>,
    /// Reserve room for `resize2fs` to grow the image to any size (work
    /// seeds); costs up to 4 MiB of group descriptor blocks.
    pub growable: bool,
    /// Never make the image smaller than this.
    pub min_size: Option<ByteSize>,
    /// Free space to add on top of what the content needs (for a root
    /// filesystem that guests install packages into). The image is sparse,
    /// so unused free space costs no disk.
    pub free_space: ByteSize,
    /// Leave out device nodes and FIFOs (a guest's `/dev` is a devtmpfs):
    /// `mkfs.ext4 -d` copies them, then they are removed from the image.
    pub skip_special: bool,
}

/// A built image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ext4Image {
    pub path: PathBuf,
    pub size: ByteSize,
    pub inodes: u64,
    pub content: ContentSize,
    /// Device nodes and FIFOs left out ([`Ext4BuildOptions::skip_special`]).
    pub skipped_special: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum BuildExt4Error {
    #[error("cannot read {path} to size the image")]
    Walk {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("{path} is not a directory")]
    NotADirectory { path: PathBuf },
    #[error("label {0:?} is longer than ext4's 16 bytes")]
    Label(String),
    #[error("cannot create image file {path}")]
    Create {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("mkfs.ext4 could not build {path} from {src}")]
    Mkfs {
        path: PathBuf,
        src: PathBuf,
        #[source]
        source: ExecError,
    },
    #[error("cannot stage an empty directory for {path}")]
    Stage {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("cannot leave the device node or FIFO {path} out of {out}")]
    SkipSpecial {
        path: PathBuf,
        out: PathBuf,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
}

fn round_up(value: u64, to: u64) -> u64 {
    value.div_ceil(to) * to
}

/// Measures `dir` as described in the module docs.
pub fn measure_dir(dir: &Path) -> Result<ContentSize, BuildExt4Error> {
    walk(dir).map(|(content, _)| content)
}

/// [`measure_dir`], also listing the device nodes and FIFOs (relative to `dir`).
fn walk(dir: &Path) -> Result<(ContentSize, Vec<PathBuf>), BuildExt4Error> {
    let walk_error = |path: &Path| {
        let path = path.to_owned();
        move |source: io::Error| BuildExt4Error::Walk { path, source }
    };
    let root = std::fs::symlink_metadata(dir).map_err(walk_error(dir))?;
    if !root.is_dir() {
        return Err(BuildExt4Error::NotADirectory {
            path: dir.to_owned(),
        });
    }
    let mut seen: HashSet<(u64, u64)> = HashSet::new();
    let mut total = ContentSize::default();
    let mut special = Vec::new();
    let mut stack = vec![dir.to_owned()];
    while let Some(current) = stack.pop() {
        total.inodes += 1;
        let mut entry_bytes = 24u64; // "." and ".."
        for entry in std::fs::read_dir(&current).map_err(walk_error(&current))? {
            let entry = entry.map_err(walk_error(&current))?;
            let name_len = entry.file_name().len() as u64;
            entry_bytes += round_up(8 + name_len, 4);
            let path = entry.path();
            let meta = std::fs::symlink_metadata(&path).map_err(walk_error(&path))?;
            let file_type = meta.file_type();
            if file_type.is_dir() {
                stack.push(path);
                continue;
            }
            if (file_type.is_char_device() || file_type.is_block_device() || file_type.is_fifo())
                && let Ok(rel) = path.strip_prefix(dir)
            {
                special.push(rel.to_owned());
            }
            if meta.nlink() > 1 && !seen.insert((meta.dev(), meta.ino())) {
                continue;
            }
            total.inodes += 1;
            if file_type.is_file() {
                let len = meta.len();
                if len > 0 {
                    let allocated = (meta.blocks() * 512).max(BLOCK).min(round_up(len, BLOCK));
                    total.bytes += round_up(allocated, BLOCK);
                }
            } else if file_type.is_symlink() && meta.len() >= 60 {
                total.bytes += BLOCK;
            }
        }
        total.bytes += round_up(entry_bytes, BLOCK);
    }
    Ok((total, special))
}

/// The journal size mke2fs picks for a filesystem of `blocks` 4 KiB blocks.
pub(crate) fn journal_blocks(blocks: u64) -> u64 {
    match blocks {
        0..2048 => 0,
        2048..32768 => 1024,
        32768..262144 => 4096,
        262144..524288 => 8192,
        524288..4194304 => 16384,
        4194304..8388608 => 32768,
        8388608..16777216 => 65536,
        16777216..33554432 => 131072,
        _ => 262144,
    }
}

/// Inode density of [`Ext4BuildOptions::free_space`].
const FREE_SPACE_BYTES_PER_INODE: u64 = 64 * 1024;

/// The size and inode count for `content` (see the module docs).
pub fn plan_ext4(content: ContentSize) -> Ext4Plan {
    let data = content.bytes + content.bytes / 5;
    let wanted_inodes = content.inodes + content.inodes / 5 + 1024;
    let base = data + wanted_inodes * INODE_SIZE + HEADROOM_FIXED;
    let journal = journal_blocks(base / BLOCK) * BLOCK;
    let size = round_up(base + journal, 4 * MIB);
    let inodes = wanted_inodes.max(size / BYTES_PER_INODE);
    Ext4Plan {
        size: ByteSize(size),
        inodes,
    }
}

/// Builds `out` (which must not exist) from the tree at `src`.
#[tracing::instrument(level = "debug", skip_all, fields(src = %src.display(), out = %out.display()))]
pub fn build_ext4_from_dir(
    src: &Path,
    out: &Path,
    options: &Ext4BuildOptions,
) -> Result<Ext4Image, BuildExt4Error> {
    if let Some(label) = &options.label
        && label.len() > 16
    {
        return Err(BuildExt4Error::Label(label.clone()));
    }
    let (content, special) = walk(src)?;
    let mut plan = plan_ext4(content);
    if options.free_space.bytes() > 0 {
        // Free space for packages: fewer inodes per byte than the content
        // ratio, so inode tables stay small.
        plan.size = ByteSize(round_up(
            plan.size.bytes() + options.free_space.bytes(),
            4 * MIB,
        ));
        plan.inodes += options.free_space.bytes() / FREE_SPACE_BYTES_PER_INODE;
    }
    if let Some(min) = options.min_size
        && plan.size < min
    {
        plan.size = ByteSize(round_up(min.bytes(), 4 * MIB));
        plan.inodes = plan.inodes.max(plan.size.bytes() / BYTES_PER_INODE);
    }
    let mut attempt = 0;
    loop {
        attempt += 1;
        match mkfs_once(src, out, plan, options) {
            Ok(()) => {
                let skipped_special = if options.skip_special && !special.is_empty() {
                    if let Err(error) = remove_special(out, &special) {
                        let _ = std::fs::remove_file(out);
                        return Err(error);
                    }
                    special.len() as u64
                } else {
                    0
                };
                tracing::info!(out = %out.display(), size = %plan.size, inodes = plan.inodes, content = content.bytes, skipped_special, "built ext4 image");
                return Ok(Ext4Image {
                    path: out.to_owned(),
                    size: plan.size,
                    inodes: plan.inodes,
                    content,
                    skipped_special,
                });
            }
            Err(error) => {
                let _ = std::fs::remove_file(out);
                let out_of_space = matches!(&error, BuildExt4Error::Mkfs { source, .. }
                    if source.stderr().is_some_and(is_out_of_space));
                if !out_of_space || attempt >= ATTEMPTS {
                    return Err(error);
                }
                let grown = round_up(plan.size.bytes() / 2 * 3, 4 * MIB);
                tracing::warn!(out = %out.display(), size = %plan.size, retry = grown, "image ran out of space; retrying larger");
                plan = Ext4Plan {
                    size: ByteSize(grown),
                    inodes: plan.inodes.max(grown / BYTES_PER_INODE) * 3 / 2,
                };
            }
        }
    }
}

/// Removes `special` (paths relative to the image's root) from the image
/// `out` in one debugfs run.
fn remove_special(out: &Path, special: &[PathBuf]) -> Result<(), BuildExt4Error> {
    let mut edits = crate::edits::Ext4Edits::new();
    for rel in special {
        let failed =
            |source: Box<dyn std::error::Error + Send + Sync>| BuildExt4Error::SkipSpecial {
                path: rel.clone(),
                out: out.to_owned(),
                source,
            };
        let guest = rel
            .to_str()
            .map(|rel| format!("/{rel}"))
            .ok_or_else(|| failed("the name is not UTF-8".into()))?;
        edits.remove(&guest).map_err(|err| failed(Box::new(err)))?;
    }
    crate::edits::apply_edits(out, &edits).map_err(|err| BuildExt4Error::SkipSpecial {
        path: special[0].clone(),
        out: out.to_owned(),
        source: Box::new(err),
    })
}

fn is_out_of_space(output: &str) -> bool {
    output.contains("Could not allocate")
        || output.contains("No space left")
        || output.contains("No free space")
}

fn mkfs_once(
    src: &Path,
    out: &Path,
    plan: Ext4Plan,
    options: &Ext4BuildOptions,
) -> Result<(), BuildExt4Error> {
    let file = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(DISK_FILE_MODE)
        .open(out)
        .map_err(|error| BuildExt4Error::Create {
            path: out.to_owned(),
            source: error,
        })?;
    file.set_len(plan.size.bytes())
        .map_err(|error| BuildExt4Error::Create {
            path: out.to_owned(),
            source: error,
        })?;
    drop(file);
    // The file was just made sparse, so it reads as zeros already: mke2fs
    // need not zero the inode tables and the journal or discard the
    // blocks (half the time of a workspace build with them).
    let mut extended =
        String::from("root_owner=0:0,lazy_itable_init=1,lazy_journal_init=1,nodiscard");
    if options.growable {
        extended.push_str(&format!(",resize={MAX_RESIZE_BLOCKS}"));
    }
    let mut args = exec::args(["-q", "-F", "-t", "ext4", "-b", "4096"]);
    args.extend(exec::args(["-N".to_owned(), plan.inodes.to_string()]));
    args.extend(exec::args(["-E".to_owned(), extended]));
    if let Some(label) = &options.label {
        args.extend(exec::args(["-L", label.as_str()]));
    }
    args.push("-d".into());
    args.push(src.as_os_str().to_owned());
    args.push(out.as_os_str().to_owned());
    args.push(format!("{}k", plan.size.bytes() / 1024).into());
    exec::run_owning_as_root(Tool::MkfsExt4, &args).map_err(|source| BuildExt4Error::Mkfs {
        path: out.to_owned(),
        src: src.to_owned(),
        source,
    })?;
    Ok(())
}

/// The label of work seeds and work disks (the guest mounts `/root` by it).
pub const WORK_LABEL: &str = "banger-work";

/// Builds an image's `work-seed.ext4` from the rootfs's `/root` (an empty
/// filesystem when the rootfs has no `/root` directory). The seed is
/// growable, so any `--disk-size` can be reached with `resize2fs`.
pub fn make_work_seed(rootfs_dir: &Path, out: &Path) -> Result<Ext4Image, BuildExt4Error> {
    let options = Ext4BuildOptions {
        label: Some(WORK_LABEL.to_owned()),
        growable: true,
        min_size: None,
        free_space: banger_model::ByteSize(0),
        skip_special: true,
    };
    let home = rootfs_dir.join("root");
    match std::fs::symlink_metadata(&home) {
        Ok(meta) if meta.is_dir() => build_ext4_from_dir(&home, out, &options),
        other => {
            if let Ok(meta) = other {
                tracing::warn!(path = %home.display(), kind = ?meta.file_type(), "rootfs /root is not a directory; the work seed starts empty");
            }
            let empty = tempfile::Builder::new()
                .prefix("banger-empty-root-")
                .tempdir()
                .map_err(|source| BuildExt4Error::Stage {
                    path: out.to_owned(),
                    source,
                })?;
            build_ext4_from_dir(empty.path(), out, &options)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plan_adds_headroom_and_inodes() {
        let empty = plan_ext4(ContentSize::default());
        assert!(empty.size.bytes() >= 64 * MIB);
        assert_eq!(empty.size.bytes() % (4 * MIB), 0);

        let gig = plan_ext4(ContentSize {
            bytes: 1 << 30,
            inodes: 40_000,
        });
        assert!(gig.size.bytes() >= (1 << 30) * 6 / 5 + 64 * MIB + 16 * MIB);
        assert!(gig.inodes >= 48_000 + 1024);
        assert!(gig.inodes >= gig.size.bytes() / BYTES_PER_INODE);

        // Many tiny files: inodes, not bytes, drive the count.
        let tiny = plan_ext4(ContentSize {
            bytes: 10 * MIB,
            inodes: 200_000,
        });
        assert!(tiny.inodes >= 240_000);
        assert!(tiny.size.bytes() >= 240_000 * INODE_SIZE);
    }

    #[test]
    fn measures_a_tree_counting_hard_links_once() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        std::fs::create_dir(root.join("d")).unwrap();
        std::fs::write(root.join("d/big"), vec![1u8; 100_000]).unwrap();
        std::fs::hard_link(root.join("d/big"), root.join("link")).unwrap();
        std::fs::write(root.join("small"), b"x").unwrap();
        std::os::unix::fs::symlink("d/big", root.join("sym")).unwrap();
        let measured = measure_dir(root).unwrap();
        // root, d, big (once), small, sym
        assert_eq!(measured.inodes, 5);
        // big: 25 blocks, small: 1 block, two directories: 1 block each.
        assert_eq!(measured.bytes, (25 + 1 + 2) * BLOCK);
    }

    #[test]
    fn missing_source_is_named() {
        let error = measure_dir(Path::new("/nonexistent/rootfs")).unwrap_err();
        assert!(error.to_string().contains("/nonexistent/rootfs"), "{error}");
    }
}
