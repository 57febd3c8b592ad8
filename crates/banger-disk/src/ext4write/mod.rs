//! A fresh ext4 filesystem written straight into a sparse image file from
//! a [`Tree`], in one pass: no mke2fs, no staging copy of the content, no
//! mount. Regular files are copied from their host files with
//! `copy_file_range` into blocks laid out in order, so writing a tree
//! costs about what reading it does. `mkfs.ext4 -d` spends ~60 µs a file
//! in libext2fs; a workspace of 10k files is the case this is for.
//!
//! The filesystem is ext4 with `has_journal ext_attr dir_index filetype
//! extents sparse_super large_file huge_file dir_nlink extra_isize`, 4 KiB
//! blocks and 256-byte inodes; without checksums (`metadata_csum`), flex
//! groups or 64-bit block numbers (so at most 16 TiB), and without
//! `resize_inode` (`resize2fs` still grows it offline). Directories are
//! linear (the kernel indexes one when it grows). Extended attributes are
//! not carried over. `e2fsck -fn` is the judge of what it writes.
//!
//! Layout: [`layout`] (groups and the block allocator), [`encode`] (the
//! records), [`tree`] (what goes in).

mod encode;
mod layout;
pub mod tree;

use std::fs::File;
use std::io;
use std::os::fd::AsFd;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use banger_model::ByteSize;
use fs_err::os::unix::fs::OpenOptionsExt;

use encode::{Extent, GroupDesc, InodeRecord, Super};
use layout::{Allocator, BLOCK, Geometry, GeometryError, INODE_SIZE, Run};
pub use tree::{Added, HostAdded, Meta, NodeId, Owners, Source, Time, Tree, WalkError};
use tree::{Kind, shown};

/// What to write.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WriteOptions {
    /// The filesystem's size (whole 4 KiB blocks are used).
    pub size: ByteSize,
    /// At least this many inodes (more when the tree needs them, and one
    /// per 16 KiB at least).
    pub min_inodes: u64,
    /// Filesystem label (at most 16 bytes).
    pub label: Option<String>,
    /// Free space the filesystem must have left once the tree is in.
    pub min_free: ByteSize,
}

/// What was written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Written {
    pub size: ByteSize,
    pub inodes: u64,
    /// Blocks in use (metadata, journal and content).
    pub used: ByteSize,
    /// Bytes of regular files copied in.
    pub file_bytes: u64,
}

/// How far [`Planned::write_reporting`] has copied the regular files.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Copied {
    pub bytes: u64,
    pub total_bytes: u64,
    pub files: u64,
    pub total_files: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum WriteExt4Error {
    #[error("label {0:?} is longer than ext4's 16 bytes")]
    Label(String),
    #[error("the name {name:?} is longer than ext4's 255 bytes")]
    NameTooLong { name: String },
    #[error("a symlink's target is longer than 4095 bytes ({name:?})")]
    TargetTooLong { name: String },
    #[error("the content needs more than {size}: {needed} at least")]
    TooSmall { size: ByteSize, needed: ByteSize },
    #[error("{size} is too large for this writer (at most 16 TiB)")]
    TooLarge { size: ByteSize },
    #[error("the content needs more inodes than {size} can hold")]
    TooManyInodes { size: ByteSize },
    #[error("{path} is too fragmented to describe")]
    Fragmented { path: PathBuf },
    #[error("cannot create {path}")]
    Create {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("cannot write {path}")]
    Write {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("cannot read {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("{path} changed while it was copied in (it is no longer a file of {len} bytes)")]
    Changed { path: PathBuf, len: u64 },
}

const BYTES_PER_INODE: u64 = 16384;
/// Threads copying files in (at most; no more than the host's CPUs).
const COPY_THREADS: usize = 4;
/// Bytes copied between starts of the image's writeback.
const WRITEBACK_EVERY: u64 = 64 << 20;
/// lost+found's blocks, as mke2fs makes it (room to reconnect files
/// without allocating).
const LOST_FOUND_BLOCKS: usize = 4;

/// Writes `tree` as a new filesystem into `out`, which must not exist; on
/// an error nothing is left at `out`.
#[tracing::instrument(level = "debug", skip_all, fields(out = %out.display(), size = %options.size))]
pub fn write_ext4(
    tree: &Tree,
    out: &Path,
    options: &WriteOptions,
) -> Result<Written, WriteExt4Error> {
    plan_ext4(tree, options)?.write(tree, out)
}

/// Lays `tree` out (inode numbers, blocks) without writing anything, so a
/// caller can learn where things go first ([`Planned::inode`]).
pub fn plan_ext4(tree: &Tree, options: &WriteOptions) -> Result<Planned, WriteExt4Error> {
    Plan::new(tree, options).map(Planned)
}

/// An image laid out for a tree, not yet written.
pub struct Planned(Plan);

impl std::fmt::Debug for Planned {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Planned")
            .field("geometry", &self.0.geometry)
            .field("inodes_used", &self.0.inodes.len())
            .finish_non_exhaustive()
    }
}

impl Planned {
    /// The inode number `node` gets.
    pub fn inode(&self, node: NodeId) -> u32 {
        self.0.ino[node]
    }

    /// The change time every inode gets.
    pub fn ctime(&self) -> Time {
        self.0.now
    }

    /// Writes the tree it was planned for (whose files may since have
    /// been given other bytes of the same length, and nothing else) into
    /// `out`, which must not exist; on an error nothing is left there.
    pub fn write(&self, tree: &Tree, out: &Path) -> Result<Written, WriteExt4Error> {
        self.write_reporting(tree, out, &|_| {})
    }

    /// [`Planned::write`], telling `progress` how much of the files'
    /// bytes (and how many files) are copied, every percent or so and at
    /// the end.
    #[tracing::instrument(level = "debug", skip_all, fields(out = %out.display()))]
    pub fn write_reporting(
        &self,
        tree: &Tree,
        out: &Path,
        progress: &(dyn Fn(Copied) + Sync),
    ) -> Result<Written, WriteExt4Error> {
        let plan = &self.0;
        let file = fs_err::OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .mode(crate::clone::DISK_FILE_MODE)
            .open(out)
            .map_err(|source| WriteExt4Error::Create {
                path: out.to_owned(),
                source,
            })?;
        let file: File = file.into();
        let result = file
            .set_len(plan.geometry.blocks * BLOCK)
            .map_err(|source| WriteExt4Error::Create {
                path: out.to_owned(),
                source,
            })
            .and_then(|()| plan.write(tree, &file, out, progress));
        match result {
            Ok(file_bytes) => Ok(Written {
                size: ByteSize(plan.geometry.blocks * BLOCK),
                inodes: plan.geometry.inodes(),
                used: ByteSize((plan.geometry.blocks - plan.free_blocks()) * BLOCK),
                file_bytes,
            }),
            Err(error) => {
                drop(file);
                let _ = std::fs::remove_file(out);
                Err(error)
            }
        }
    }
}

/// Inode numbers, blocks and records, decided before anything is written.
struct Plan {
    geometry: Geometry,
    allocator: Allocator,
    uuid: [u8; 16],
    label: Vec<u8>,
    now: Time,
    /// Inode number of each tree node.
    ino: Vec<u32>,
    /// Each directory's parent's inode number.
    parent: Vec<u32>,
    /// Names each node has.
    names: Vec<u32>,
    /// Inode records from inode 1 on (index = ino - 1).
    inodes: Vec<Option<InodeRecord>>,
    dirs_per_group: Vec<u64>,
    /// Blocks with their bytes: directories, long symlinks, extent
    /// leaves, the journal's superblock.
    blocks: Vec<(u64, Vec<u8>)>,
    /// Regular files: node and where their data goes.
    files: Vec<(NodeId, Vec<Run>)>,
    journal_backup: ([u8; 60], u64),
    /// About the size the content needs (for the error when it is not
    /// there).
    needed: ByteSize,
}

impl Plan {
    fn new(tree: &Tree, options: &WriteOptions) -> Result<Self, WriteExt4Error> {
        let label = options.label.clone().unwrap_or_default().into_bytes();
        if label.len() > 16 {
            return Err(WriteExt4Error::Label(
                options.label.clone().unwrap_or_default(),
            ));
        }
        let Numbering {
            ino,
            parent,
            names,
            order,
            max_ino,
        } = number(tree);
        let wanted = options
            .min_inodes
            .max(u64::from(max_ino) + u64::from(max_ino) / 5 + 1024)
            .max(options.size.bytes() / BYTES_PER_INODE);
        let geometry =
            Geometry::new(options.size.bytes(), wanted).map_err(|error| match error {
                GeometryError::Large => WriteExt4Error::TooLarge { size: options.size },
                GeometryError::Inodes => WriteExt4Error::TooManyInodes { size: options.size },
                GeometryError::Small => WriteExt4Error::TooSmall {
                    size: options.size,
                    needed: ByteSize(4 << 20),
                },
            })?;
        if u64::from(max_ino) > geometry.inodes() {
            return Err(WriteExt4Error::TooManyInodes { size: options.size });
        }
        let journal = crate::mkfs::journal_blocks(geometry.blocks).max(1024);
        let wanted_blocks = content_blocks(tree) + journal + LOST_FOUND_BLOCKS as u64;
        let wanted_blocks = wanted_blocks + options.min_free.bytes().div_ceil(BLOCK);
        let needed = ByteSize(
            ((wanted_blocks + geometry.blocks - geometry.data_blocks()) * BLOCK * 51 / 50)
                .div_ceil(1 << 20)
                << 20,
        );
        if wanted_blocks > geometry.data_blocks() {
            return Err(WriteExt4Error::TooSmall {
                size: options.size,
                needed,
            });
        }
        let mut plan = Self {
            geometry,
            allocator: Allocator::new(geometry),
            uuid: rand::random(),
            label,
            now: Time::now(),
            ino,
            parent,
            names,
            inodes: (0..max_ino).map(|_| None).collect(),
            dirs_per_group: vec![0; geometry.groups as usize],
            blocks: Vec::new(),
            files: Vec::new(),
            journal_backup: ([0; 60], 0),
            needed,
        };
        plan.plan_journal(options.size)?;
        plan.plan_lost_found(tree, options.size)?;
        for node in order {
            plan.plan_node(tree, node, options.size)?;
        }
        Ok(plan)
    }

    fn allocate(&mut self, count: u64, size: ByteSize) -> Result<Vec<Run>, WriteExt4Error> {
        self.allocator
            .allocate(count)
            .map_err(|layout::Full| WriteExt4Error::TooSmall {
                size,
                needed: self.needed.max(ByteSize(size.bytes() + count * BLOCK)),
            })
    }

    /// Allocates `count` blocks and the extent leaves they need; the
    /// inode's `i_block` and the blocks in use.
    fn place(
        &mut self,
        count: u64,
        size: ByteSize,
        what: impl Fn() -> PathBuf,
    ) -> Result<(Vec<Run>, [u8; 60], u64), WriteExt4Error> {
        let runs = self.allocate(count, size)?;
        let extents: Vec<Extent> = encode::extents(&runs);
        if extents.len() > encode::MAX_EXTENTS {
            return Err(WriteExt4Error::Fragmented { path: what() });
        }
        let leaves_needed = encode::leaf_blocks_needed(extents.len());
        let leaves: Vec<u64> = self
            .allocate(leaves_needed, size)?
            .iter()
            .flat_map(|run| run.start..run.start + run.len)
            .collect();
        let (i_block, leaf_blocks) = encode::extent_tree(&extents, &leaves);
        self.blocks.extend(leaf_blocks);
        Ok((runs, i_block, count + leaves_needed))
    }

    fn plan_journal(&mut self, size: ByteSize) -> Result<(), WriteExt4Error> {
        let blocks = crate::mkfs::journal_blocks(self.geometry.blocks).max(1024);
        let (runs, i_block, used) = self.place(blocks, size, || PathBuf::from("<journal>"))?;
        self.blocks.push((
            runs[0].start,
            encode::journal_superblock(blocks, &self.uuid),
        ));
        self.journal_backup = (i_block, blocks * BLOCK);
        self.set_inode(
            encode::JOURNAL_INO,
            InodeRecord {
                mode: encode::S_IFREG | 0o600,
                meta: Meta {
                    perm: 0o600,
                    ..Meta::root(0o600)
                },
                ctime: self.now,
                size: blocks * BLOCK,
                links: 1,
                blocks: used,
                i_block,
                extents: true,
            },
        );
        Ok(())
    }

    /// lost+found (inode 11), unless the tree brings its own.
    fn plan_lost_found(&mut self, tree: &Tree, size: ByteSize) -> Result<(), WriteExt4Error> {
        if tree.lookup(Tree::ROOT, b"lost+found").is_some() {
            return Ok(());
        }
        let bytes = encode::dir_blocks(encode::FIRST_INO, encode::ROOT_INO, &[], LOST_FOUND_BLOCKS);
        self.plan_dir_inode(encode::FIRST_INO, Meta::root(0o700), 2, bytes, size)
    }

    fn plan_dir_inode(
        &mut self,
        ino: u32,
        meta: Meta,
        links: u16,
        bytes: Vec<u8>,
        size: ByteSize,
    ) -> Result<(), WriteExt4Error> {
        let count = bytes.len() as u64 / BLOCK;
        let (runs, i_block, used) = self.place(count, size, || PathBuf::from("<directory>"))?;
        let mut at = 0;
        for run in &runs {
            let len = (run.len * BLOCK) as usize;
            self.blocks.push((run.start, bytes[at..at + len].to_vec()));
            at += len;
        }
        self.dirs_per_group[((ino - 1) as u64 / self.geometry.inodes_per_group) as usize] += 1;
        self.set_inode(
            ino,
            InodeRecord {
                mode: encode::S_IFDIR | meta.perm,
                meta,
                ctime: self.now,
                size: bytes.len() as u64,
                links,
                blocks: used,
                i_block,
                extents: true,
            },
        );
        Ok(())
    }

    fn plan_node(
        &mut self,
        tree: &Tree,
        node: NodeId,
        size: ByteSize,
    ) -> Result<(), WriteExt4Error> {
        let ino = self.ino[node];
        let meta = tree.nodes[node].meta;
        match &tree.nodes[node].kind {
            Kind::Dir(entries) => {
                let parent = self.parent[node];
                let mut listed: Vec<(&[u8], u32, u8)> = Vec::with_capacity(entries.len() + 1);
                let mut subdirs = 0u64;
                if node == Tree::ROOT && tree.lookup(Tree::ROOT, b"lost+found").is_none() {
                    listed.push((b"lost+found", encode::FIRST_INO, encode::FT_DIR));
                    subdirs += 1;
                }
                for (name, child) in entries {
                    if name.len() > 255 {
                        return Err(WriteExt4Error::NameTooLong {
                            name: shown(name).into_owned(),
                        });
                    }
                    let file_type = match tree.nodes[*child].kind {
                        Kind::Dir(_) => {
                            subdirs += 1;
                            encode::FT_DIR
                        }
                        Kind::File { .. } => encode::FT_REG,
                        Kind::Symlink(_) => encode::FT_SYMLINK,
                    };
                    listed.push((name, self.ino[*child], file_type));
                }
                listed.sort_by(|a, b| a.0.cmp(b.0));
                let bytes = encode::dir_blocks(ino, parent, &listed, 1);
                // More than 65000 links: dir_nlink's "many" (1).
                let links = u16::try_from(2 + subdirs)
                    .ok()
                    .filter(|&n| n < 65000)
                    .unwrap_or(1);
                self.plan_dir_inode(ino, meta, links, bytes, size)
            }
            Kind::File { source, len } => {
                let count = len.div_ceil(BLOCK);
                let what = || source.shown();
                let (runs, i_block, used) = self.place(count, size, what)?;
                self.files.push((node, runs));
                self.set_inode(
                    ino,
                    InodeRecord {
                        mode: encode::S_IFREG | meta.perm,
                        meta,
                        ctime: self.now,
                        size: *len,
                        links: self.links_of(node),
                        blocks: used,
                        i_block,
                        extents: true,
                    },
                );
                Ok(())
            }
            Kind::Symlink(target) => {
                if target.len() > 4095 {
                    return Err(WriteExt4Error::TargetTooLong {
                        name: shown(target).into_owned(),
                    });
                }
                let links = self.links_of(node);
                let record = if target.len() < 60 {
                    // A fast symlink: the target in i_block.
                    let mut i_block = [0u8; 60];
                    i_block[..target.len()].copy_from_slice(target);
                    InodeRecord {
                        mode: encode::S_IFLNK | meta.perm,
                        meta,
                        ctime: self.now,
                        size: target.len() as u64,
                        links,
                        blocks: 0,
                        i_block,
                        extents: false,
                    }
                } else {
                    let (runs, i_block, used) =
                        self.place(1, size, || PathBuf::from(shown(target).into_owned()))?;
                    let mut block = target.clone();
                    block.resize(BLOCK as usize, 0);
                    self.blocks.push((runs[0].start, block));
                    InodeRecord {
                        mode: encode::S_IFLNK | meta.perm,
                        meta,
                        ctime: self.now,
                        size: target.len() as u64,
                        links,
                        blocks: used,
                        i_block,
                        extents: true,
                    }
                };
                self.set_inode(ino, record);
                Ok(())
            }
        }
    }

    fn set_inode(&mut self, ino: u32, record: InodeRecord) {
        self.inodes[(ino - 1) as usize] = Some(record);
    }

    fn links_of(&self, node: NodeId) -> u16 {
        self.names[node].min(u32::from(u16::MAX)) as u16
    }

    fn free_blocks(&self) -> u64 {
        (0..self.geometry.groups)
            .map(|group| self.free_blocks_in(group))
            .sum()
    }

    fn free_blocks_in(&self, group: u64) -> u64 {
        let g = &self.geometry;
        g.group_end(group) - g.data_start(group) - self.allocator.used_in(group)
    }

    /// Inodes in use in `group` (they are the first ones of the whole
    /// filesystem, so the first ones of each group).
    fn used_inodes_in(&self, group: u64) -> u64 {
        let per = self.geometry.inodes_per_group;
        (self.inodes.len() as u64)
            .saturating_sub(group * per)
            .min(per)
    }

    /// Copies the regular files' bytes into their blocks, on a few
    /// threads (a workspace is thousands of small files, each an open, a
    /// copy and a close); the bytes copied.
    fn copy_files(
        &self,
        tree: &Tree,
        file: &File,
        out: &Path,
        progress: &(dyn Fn(Copied) + Sync),
    ) -> Result<u64, WriteExt4Error> {
        use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
        let next = AtomicUsize::new(0);
        let failed = AtomicBool::new(false);
        // Bytes copied since writeback was last started: the disk writes
        // while the copy goes on, rather than all at once when something
        // next flushes the image (a loop device attached to it, an fsync).
        let unflushed = std::sync::atomic::AtomicU64::new(0);
        let total: u64 = self
            .files
            .iter()
            .map(|(node, _)| tree.len_of(*node).unwrap_or(0))
            .sum();
        let total_files = self.files.len() as u64;
        let step = (total / 100).max(8 << 20);
        let done = std::sync::atomic::AtomicU64::new(0);
        let files_done = std::sync::atomic::AtomicU64::new(0);
        let next_report = std::sync::atomic::AtomicU64::new(step);
        let threads = std::thread::available_parallelism()
            .map(usize::from)
            .unwrap_or(1)
            .clamp(1, COPY_THREADS);
        let work = || -> Result<u64, WriteExt4Error> {
            let mut copied = 0;
            let mut use_copy_file_range = true;
            loop {
                let index = next.fetch_add(1, Ordering::Relaxed);
                let Some((node, runs)) = self.files.get(index) else {
                    return Ok(copied);
                };
                if failed.load(Ordering::Relaxed) {
                    return Ok(copied);
                }
                let Kind::File { source, len } = &tree.nodes[*node].kind else {
                    unreachable!("only files are planned as files");
                };
                let result = match source {
                    Source::Bytes(bytes) => {
                        write_bytes(bytes, runs, file).map_err(|source| WriteExt4Error::Write {
                            path: out.to_owned(),
                            source,
                        })
                    }
                    host => copy_in(
                        host,
                        *len,
                        tree.nodes[*node].meta.mtime,
                        runs,
                        file,
                        &mut use_copy_file_range,
                    )
                    .map_err(|error| match error {
                        CopyError::Changed => WriteExt4Error::Changed {
                            path: host.shown(),
                            len: *len,
                        },
                        CopyError::Read(source) => WriteExt4Error::Read {
                            path: host.shown(),
                            source,
                        },
                    }),
                };
                if let Err(error) = result {
                    failed.store(true, Ordering::Relaxed);
                    return Err(error);
                }
                copied += len;
                let files = files_done.fetch_add(1, Ordering::Relaxed) + 1;
                let so_far = done.fetch_add(*len, Ordering::Relaxed) + len;
                let due = next_report.load(Ordering::Relaxed);
                if so_far >= due
                    && next_report
                        .compare_exchange(due, so_far + step, Ordering::Relaxed, Ordering::Relaxed)
                        .is_ok()
                {
                    progress(Copied {
                        bytes: so_far,
                        total_bytes: total,
                        files,
                        total_files,
                    });
                }
                if unflushed.fetch_add(*len, Ordering::Relaxed) + len >= WRITEBACK_EVERY {
                    unflushed.store(0, Ordering::Relaxed);
                    // Only a head start: a failure shows when the data is
                    // written for good.
                    let _ = crate::sys::start_writeback(file.as_fd());
                }
            }
        };
        std::thread::scope(|scope| {
            let helpers: Vec<_> = (1..threads).map(|_| scope.spawn(work)).collect();
            let mut copied = work()?;
            for helper in helpers {
                copied += helper.join().expect("a copy thread panicked")?;
            }
            progress(Copied {
                bytes: copied,
                total_bytes: total,
                files: total_files,
                total_files,
            });
            Ok(copied)
        })
    }

    /// Writes everything; the bytes of regular files copied.
    fn write(
        &self,
        tree: &Tree,
        file: &File,
        out: &Path,
        progress: &(dyn Fn(Copied) + Sync),
    ) -> Result<u64, WriteExt4Error> {
        let write_error = |source: io::Error| WriteExt4Error::Write {
            path: out.to_owned(),
            source,
        };
        let at = |block: u64| block * BLOCK;
        let copied = self.copy_files(tree, file, out, progress)?;
        for (block, bytes) in &self.blocks {
            file.write_all_at(bytes, at(*block)).map_err(write_error)?;
        }
        let g = &self.geometry;
        let per = g.inodes_per_group;
        let mut descs = vec![0u8; (g.gdt_blocks * BLOCK) as usize];
        for group in 0..g.groups {
            let used_inodes = self.used_inodes_in(group);
            if used_inodes > 0 {
                let mut table = vec![0u8; (used_inodes * INODE_SIZE) as usize];
                for (slot, record) in self.inodes[(group * per) as usize..][..used_inodes as usize]
                    .iter()
                    .enumerate()
                {
                    if let Some(record) = record {
                        record.write_into(&mut table[slot * INODE_SIZE as usize..]);
                    }
                }
                file.write_all_at(&table, at(g.inode_table(group)))
                    .map_err(write_error)?;
            }
            let group_len = g.group_end(group) - g.group_start(group);
            let used_blocks = g.overhead(group) + self.allocator.used_in(group);
            file.write_all_at(
                &encode::bitmap(used_blocks, group_len),
                at(g.block_bitmap(group)),
            )
            .map_err(write_error)?;
            file.write_all_at(&encode::bitmap(used_inodes, per), at(g.inode_bitmap(group)))
                .map_err(write_error)?;
            GroupDesc {
                block_bitmap: g.block_bitmap(group),
                inode_bitmap: g.inode_bitmap(group),
                inode_table: g.inode_table(group),
                free_blocks: self.free_blocks_in(group),
                free_inodes: per - used_inodes,
                dirs: self.dirs_per_group[group as usize],
            }
            .write_into(&mut descs[(group * 32) as usize..]);
        }
        let free_inodes = g.inodes() - self.inodes.len() as u64;
        let superblock = Super {
            geometry: g,
            free_blocks: self.free_blocks(),
            free_inodes,
            uuid: self.uuid,
            hash_seed: rand::random(),
            label: &self.label,
            now: self.now,
            journal_backup: self.journal_backup,
        };
        for group in (0..g.groups).filter(|&group| g.has_super(group)) {
            let start = at(g.group_start(group));
            let offset = if group == 0 { 1024 } else { 0 };
            file.write_all_at(&superblock.bytes(group), start + offset)
                .map_err(write_error)?;
            file.write_all_at(&descs, start + BLOCK)
                .map_err(write_error)?;
        }
        Ok(copied)
    }
}

/// Blocks the tree's content takes (directories estimated from their
/// names).
fn content_blocks(tree: &Tree) -> u64 {
    tree.nodes
        .iter()
        .map(|node| match &node.kind {
            Kind::Dir(entries) => {
                let bytes: u64 = entries
                    .iter()
                    .map(|(name, _)| (8 + name.len() as u64).div_ceil(4) * 4)
                    .sum();
                (bytes + 24).div_ceil(BLOCK - 256)
            }
            Kind::File { len, .. } => len.div_ceil(BLOCK) * 341 / 340,
            Kind::Symlink(target) => u64::from(target.len() >= 60),
        })
        .sum()
}

/// Inode numbers of the tree's nodes (root 2, the rest from 12 in
/// depth-first order), with each directory's parent and each node's count
/// of names.
struct Numbering {
    ino: Vec<u32>,
    parent: Vec<u32>,
    names: Vec<u32>,
    order: Vec<NodeId>,
    max_ino: u32,
}

fn number(tree: &Tree) -> Numbering {
    let nodes = tree.nodes.len();
    let mut numbering = Numbering {
        ino: vec![0; nodes],
        parent: vec![encode::ROOT_INO; nodes],
        names: vec![0; nodes],
        order: vec![Tree::ROOT],
        max_ino: encode::FIRST_INO,
    };
    numbering.ino[Tree::ROOT] = encode::ROOT_INO;
    let has_lost_found = tree.lookup(Tree::ROOT, b"lost+found").is_some();
    let mut next = if has_lost_found {
        encode::FIRST_INO
    } else {
        encode::FIRST_INO + 1
    };
    let mut stack = vec![Tree::ROOT];
    while let Some(dir) = stack.pop() {
        let Kind::Dir(entries) = &tree.nodes[dir].kind else {
            continue;
        };
        for (_, child) in entries.iter().rev() {
            numbering.names[*child] += 1;
            if numbering.ino[*child] != 0 {
                continue; // a hard link already numbered
            }
            numbering.ino[*child] = next;
            next += 1;
            numbering.order.push(*child);
            if matches!(tree.nodes[*child].kind, Kind::Dir(_)) {
                numbering.parent[*child] = numbering.ino[dir];
                stack.push(*child);
            }
        }
    }
    numbering.max_ino = (next - 1).max(encode::FIRST_INO);
    numbering
}

/// Writes in-memory bytes into their blocks.
fn write_bytes(bytes: &[u8], runs: &[Run], out: &File) -> io::Result<()> {
    let mut done = 0usize;
    for run in runs {
        let take = ((run.len * BLOCK) as usize).min(bytes.len() - done);
        out.write_all_at(&bytes[done..done + take], run.start * BLOCK)?;
        done += take;
    }
    Ok(())
}

enum CopyError {
    Changed,
    Read(io::Error),
}

/// Copies the host file `source` (which must still be a regular file of
/// `len` bytes, modified at `mtime`) into `runs` of `out`; its holes stay
/// holes.
fn copy_in(
    source: &Source,
    len: u64,
    mtime: Time,
    runs: &[Run],
    out: &File,
    use_copy_file_range: &mut bool,
) -> Result<(), CopyError> {
    use std::os::unix::fs::OpenOptionsExt as _;
    let gone = |errno: i32| {
        matches!(
            errno,
            nix::libc::ELOOP | nix::libc::ENOENT | nix::libc::ENOTDIR | nix::libc::EXDEV
        )
    };
    let src: File = match source {
        Source::Path(path) => std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(nix::libc::O_NOFOLLOW)
            .open(path)
            .map_err(|error| match error.raw_os_error() {
                Some(errno) if gone(errno) => CopyError::Changed,
                _ => CopyError::Read(error),
            })?,
        Source::Beneath { root, path } => banger_rootfs::resolve::open(
            root.as_fd(),
            path,
            nix::fcntl::OFlag::O_RDONLY,
            banger_rootfs::Resolve::beneath().no_symlinks(),
        )
        .map_err(|errno| {
            if gone(errno as i32) {
                CopyError::Changed
            } else {
                CopyError::Read(errno.into())
            }
        })?
        .into(),
        Source::Bytes(_) => unreachable!("in-memory files are written, not copied"),
    };
    let unchanged = |src: &File| -> Result<(), CopyError> {
        let meta = src.metadata().map_err(CopyError::Read)?;
        let modified = Time {
            secs: std::os::unix::fs::MetadataExt::mtime(&meta),
            nanos: std::os::unix::fs::MetadataExt::mtime_nsec(&meta) as u32,
        };
        if meta.is_file() && meta.len() == len && modified == mtime {
            Ok(())
        } else {
            Err(CopyError::Changed)
        }
    };
    unchanged(&src)?;
    let mut done = 0;
    for run in runs {
        let take = (run.len * BLOCK).min(len - done);
        copy_data(
            &src,
            done,
            take,
            out,
            run.start * BLOCK,
            use_copy_file_range,
        )
        .map_err(|error| match error.kind() {
            io::ErrorKind::UnexpectedEof => CopyError::Changed,
            // copy_file_range does not tell which side failed; the
            // output is ours and already sized, so it is the source.
            _ => CopyError::Read(error),
        })?;
        done += take;
    }
    unchanged(&src)
}

/// Copies the data regions of `src`'s `[start, start + len)` to `out` at
/// `out_start` on (the image reads as zeros where nothing is written).
fn copy_data(
    src: &File,
    start: u64,
    len: u64,
    out: &File,
    out_start: u64,
    use_copy_file_range: &mut bool,
) -> io::Result<()> {
    use nix::errno::Errno;
    use nix::unistd::{Whence, lseek};
    use std::os::fd::AsFd;
    let end = start + len;
    let mut position = start;
    while position < end {
        let data = match lseek(src.as_fd(), position as i64, Whence::SeekData) {
            Ok(data) => data as u64,
            // Only a hole from here on.
            Err(Errno::ENXIO) => return Ok(()),
            Err(_) => position,
        };
        if data >= end {
            return Ok(());
        }
        let hole = match lseek(src.as_fd(), data as i64, Whence::SeekHole) {
            Ok(hole) => (hole as u64).min(end),
            Err(_) => end,
        };
        crate::clone::copy_range(
            src,
            data,
            out,
            out_start + (data - start),
            hole - data,
            use_copy_file_range,
        )?;
        position = hole;
    }
    Ok(())
}
