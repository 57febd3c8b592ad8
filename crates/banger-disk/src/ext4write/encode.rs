//! The on-disk records, byte by byte (little-endian, except the journal's
//! big-endian superblock): superblock, group descriptors, inodes, extent
//! trees, directory blocks. No checksum features are enabled, so none are
//! computed.

use super::layout::{BLOCK, Geometry, INODE_SIZE, Run};
use super::tree::{Meta, Time};

pub(super) const ROOT_INO: u32 = 2;
pub(super) const JOURNAL_INO: u32 = 8;
pub(super) const FIRST_INO: u32 = 11;
const EXTRA_ISIZE: u16 = 32;

pub(super) const S_IFREG: u16 = 0o100000;
pub(super) const S_IFDIR: u16 = 0o040000;
pub(super) const S_IFLNK: u16 = 0o120000;

pub(super) const FT_REG: u8 = 1;
pub(super) const FT_DIR: u8 = 2;
pub(super) const FT_SYMLINK: u8 = 7;

const EXTENTS_FL: u32 = 0x0008_0000;
const EXTENT_MAGIC: u16 = 0xF30A;
const EXTENTS_IN_INODE: usize = 4;
const EXTENTS_PER_LEAF: usize = (BLOCK as usize - 12) / 12;
/// The longest initialized extent.
const MAX_EXTENT: u64 = 32768;

const COMPAT_HAS_JOURNAL: u32 = 0x0004;
const COMPAT_EXT_ATTR: u32 = 0x0008;
const COMPAT_DIR_INDEX: u32 = 0x0020;
const INCOMPAT_FILETYPE: u32 = 0x0002;
const INCOMPAT_EXTENTS: u32 = 0x0040;
const RO_COMPAT_SPARSE_SUPER: u32 = 0x0001;
const RO_COMPAT_LARGE_FILE: u32 = 0x0002;
const RO_COMPAT_HUGE_FILE: u32 = 0x0008;
const RO_COMPAT_DIR_NLINK: u32 = 0x0020;
const RO_COMPAT_EXTRA_ISIZE: u32 = 0x0040;

fn put16(buf: &mut [u8], at: usize, value: u16) {
    buf[at..at + 2].copy_from_slice(&value.to_le_bytes());
}

fn put32(buf: &mut [u8], at: usize, value: u32) {
    buf[at..at + 4].copy_from_slice(&value.to_le_bytes());
}

fn put32_be(buf: &mut [u8], at: usize, value: u32) {
    buf[at..at + 4].copy_from_slice(&value.to_be_bytes());
}

/// ext4's 32 seconds bits and its `_extra` word (2 epoch bits, then the
/// nanoseconds).
fn time_words(time: Time) -> (u32, u32) {
    let low = time.secs as i32;
    let epoch = ((time.secs - i64::from(low)) >> 32) as u32 & 3;
    (low as u32, epoch | (time.nanos << 2))
}

/// Everything the superblock says.
pub(super) struct Super<'a> {
    pub(super) geometry: &'a Geometry,
    pub(super) free_blocks: u64,
    pub(super) free_inodes: u64,
    pub(super) uuid: [u8; 16],
    pub(super) hash_seed: [u8; 16],
    pub(super) label: &'a [u8],
    pub(super) now: Time,
    /// The journal inode's `i_block` and size, backed up in the superblock.
    pub(super) journal_backup: ([u8; 60], u64),
}

impl Super<'_> {
    /// The 1024-byte superblock as group `group` holds it.
    pub(super) fn bytes(&self, group: u64) -> [u8; 1024] {
        let g = self.geometry;
        let mut sb = [0u8; 1024];
        put32(&mut sb, 0, g.inodes() as u32);
        put32(&mut sb, 4, g.blocks as u32);
        put32(&mut sb, 12, self.free_blocks as u32);
        put32(&mut sb, 16, self.free_inodes as u32);
        put32(&mut sb, 20, 0); // first data block
        put32(&mut sb, 24, 2); // 1024 << 2
        put32(&mut sb, 28, 2);
        put32(&mut sb, 32, super::layout::BLOCKS_PER_GROUP as u32);
        put32(&mut sb, 36, super::layout::BLOCKS_PER_GROUP as u32);
        put32(&mut sb, 40, g.inodes_per_group as u32);
        let (now, _) = time_words(self.now);
        put32(&mut sb, 48, now); // written
        put16(&mut sb, 54, u16::MAX); // max mount count: none
        put16(&mut sb, 56, 0xEF53);
        put16(&mut sb, 58, 1); // clean
        put16(&mut sb, 60, 1); // on errors: continue
        put32(&mut sb, 64, now); // last check
        put32(&mut sb, 76, 1); // dynamic revision
        put32(&mut sb, 84, FIRST_INO);
        put16(&mut sb, 88, INODE_SIZE as u16);
        put16(&mut sb, 90, group as u16);
        put32(
            &mut sb,
            92,
            COMPAT_HAS_JOURNAL | COMPAT_EXT_ATTR | COMPAT_DIR_INDEX,
        );
        put32(&mut sb, 96, INCOMPAT_FILETYPE | INCOMPAT_EXTENTS);
        put32(
            &mut sb,
            100,
            RO_COMPAT_SPARSE_SUPER
                | RO_COMPAT_LARGE_FILE
                | RO_COMPAT_HUGE_FILE
                | RO_COMPAT_DIR_NLINK
                | RO_COMPAT_EXTRA_ISIZE,
        );
        sb[104..120].copy_from_slice(&self.uuid);
        let label = &self.label[..self.label.len().min(16)];
        sb[120..120 + label.len()].copy_from_slice(label);
        put32(&mut sb, 224, JOURNAL_INO);
        sb[236..252].copy_from_slice(&self.hash_seed);
        sb[252] = 1; // half-MD4 directory hashes
        sb[253] = 1; // the journal's blocks are backed up below
        put32(&mut sb, 256, 0x000C); // user_xattr, acl
        put32(&mut sb, 264, now); // made
        let (i_block, size) = self.journal_backup;
        sb[268..328].copy_from_slice(&i_block);
        put32(&mut sb, 328, (size >> 32) as u32);
        put32(&mut sb, 332, size as u32);
        put16(&mut sb, 348, EXTRA_ISIZE);
        put16(&mut sb, 350, EXTRA_ISIZE);
        // Directory hashes are signed where C's char is.
        put32(&mut sb, 352, if std::ffi::c_char::MIN == 0 { 2 } else { 1 });
        sb
    }
}

/// One group's descriptor.
pub(super) struct GroupDesc {
    pub(super) block_bitmap: u64,
    pub(super) inode_bitmap: u64,
    pub(super) inode_table: u64,
    pub(super) free_blocks: u64,
    pub(super) free_inodes: u64,
    pub(super) dirs: u64,
}

impl GroupDesc {
    pub(super) fn write_into(&self, buf: &mut [u8]) {
        put32(buf, 0, self.block_bitmap as u32);
        put32(buf, 4, self.inode_bitmap as u32);
        put32(buf, 8, self.inode_table as u32);
        put16(buf, 12, self.free_blocks as u16);
        put16(buf, 14, self.free_inodes as u16);
        put16(buf, 16, self.dirs as u16);
    }
}

/// A bitmap block whose first `used` bits are set, as are the bits from
/// `size` on (past the group's end).
pub(super) fn bitmap(used: u64, size: u64) -> Vec<u8> {
    let mut block = vec![0u8; BLOCK as usize];
    let mut set = |from: u64, to: u64| {
        for bit in from..to {
            block[(bit / 8) as usize] |= 1 << (bit % 8);
        }
    };
    set(0, used);
    set(size, BLOCK * 8);
    block
}

/// An extent: `len` blocks of the file from `logical` on, at `start`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Extent {
    pub(super) logical: u64,
    pub(super) start: u64,
    pub(super) len: u64,
}

/// The extents of data laid out in `runs`.
pub(super) fn extents(runs: &[Run]) -> Vec<Extent> {
    let mut out = Vec::new();
    let mut logical = 0;
    for run in runs {
        let mut done = 0;
        while done < run.len {
            let len = (run.len - done).min(MAX_EXTENT);
            out.push(Extent {
                logical,
                start: run.start + done,
                len,
            });
            logical += len;
            done += len;
        }
    }
    out
}

/// Leaf blocks an extent list needs beyond the inode's four slots.
pub(super) fn leaf_blocks_needed(count: usize) -> u64 {
    if count <= EXTENTS_IN_INODE {
        0
    } else {
        count.div_ceil(EXTENTS_PER_LEAF) as u64
    }
}

/// The most extents a file may have (four full leaves).
pub(super) const MAX_EXTENTS: usize = EXTENTS_IN_INODE * EXTENTS_PER_LEAF;

fn extent_header(buf: &mut [u8], entries: usize, max: usize, depth: u16) {
    put16(buf, 0, EXTENT_MAGIC);
    put16(buf, 2, entries as u16);
    put16(buf, 4, max as u16);
    put16(buf, 6, depth);
}

fn extent_entry(buf: &mut [u8], extent: &Extent) {
    put32(buf, 0, extent.logical as u32);
    put16(buf, 4, extent.len as u16);
    put16(buf, 6, (extent.start >> 32) as u16);
    put32(buf, 8, extent.start as u32);
}

/// The inode's `i_block` for `extents` and the leaf blocks (with their
/// addresses) when they do not fit in it.
pub(super) fn extent_tree(extents: &[Extent], leaves: &[u64]) -> ([u8; 60], Vec<(u64, Vec<u8>)>) {
    let mut i_block = [0u8; 60];
    if extents.len() <= EXTENTS_IN_INODE {
        extent_header(&mut i_block, extents.len(), EXTENTS_IN_INODE, 0);
        for (slot, extent) in extents.iter().enumerate() {
            extent_entry(&mut i_block[12 + slot * 12..], extent);
        }
        return (i_block, Vec::new());
    }
    let chunks: Vec<&[Extent]> = extents.chunks(EXTENTS_PER_LEAF).collect();
    assert_eq!(chunks.len(), leaves.len(), "one leaf block per chunk");
    extent_header(&mut i_block, chunks.len(), EXTENTS_IN_INODE, 1);
    let mut blocks = Vec::new();
    for (slot, (chunk, &leaf)) in chunks.iter().zip(leaves).enumerate() {
        let index = &mut i_block[12 + slot * 12..];
        put32(index, 0, chunk[0].logical as u32);
        put32(index, 4, leaf as u32);
        put16(index, 8, (leaf >> 32) as u16);
        let mut block = vec![0u8; BLOCK as usize];
        extent_header(&mut block, chunk.len(), EXTENTS_PER_LEAF, 0);
        for (at, extent) in chunk.iter().enumerate() {
            extent_entry(&mut block[12 + at * 12..], extent);
        }
        blocks.push((leaf, block));
    }
    (i_block, blocks)
}

/// What an inode holds.
pub(super) struct InodeRecord {
    pub(super) mode: u16,
    pub(super) meta: Meta,
    pub(super) ctime: Time,
    pub(super) size: u64,
    pub(super) links: u16,
    /// Blocks in use, leaf blocks included.
    pub(super) blocks: u64,
    pub(super) i_block: [u8; 60],
    /// `i_block` is an extent tree (not a fast symlink's target).
    pub(super) extents: bool,
}

impl InodeRecord {
    pub(super) fn write_into(&self, buf: &mut [u8]) {
        put16(buf, 0, self.mode);
        put16(buf, 2, self.meta.uid as u16);
        put32(buf, 4, self.size as u32);
        let (atime, atime_extra) = time_words(self.meta.atime);
        let (ctime, ctime_extra) = time_words(self.ctime);
        let (mtime, mtime_extra) = time_words(self.meta.mtime);
        put32(buf, 8, atime);
        put32(buf, 12, ctime);
        put32(buf, 16, mtime);
        put16(buf, 24, self.meta.gid as u16);
        put16(buf, 26, self.links);
        let sectors = self.blocks * (BLOCK / 512);
        put32(buf, 28, sectors as u32);
        put32(buf, 32, if self.extents { EXTENTS_FL } else { 0 });
        buf[40..100].copy_from_slice(&self.i_block);
        put32(buf, 108, (self.size >> 32) as u32);
        put16(buf, 116, (sectors >> 32) as u16);
        put16(buf, 120, (self.meta.uid >> 16) as u16);
        put16(buf, 122, (self.meta.gid >> 16) as u16);
        put16(buf, 128, EXTRA_ISIZE);
        put32(buf, 132, ctime_extra);
        put32(buf, 136, mtime_extra);
        put32(buf, 140, atime_extra);
        put32(buf, 144, ctime);
        put32(buf, 148, ctime_extra);
    }
}

/// A directory's blocks holding `entries` (name, inode, file type) after
/// `.` and `..`: each entry in one block, the last of a block stretched to
/// its end, `min_blocks` at least (lost+found keeps room).
pub(super) fn dir_blocks(
    self_ino: u32,
    parent_ino: u32,
    entries: &[(&[u8], u32, u8)],
    min_blocks: usize,
) -> Vec<u8> {
    let block = BLOCK as usize;
    let mut out: Vec<u8> = Vec::with_capacity(block);
    let mut block_start = 0;
    let mut last: Option<usize> = None;
    let mut put = |out: &mut Vec<u8>, name: &[u8], ino: u32, file_type: u8| {
        let rec_len = (8 + name.len()).div_ceil(4) * 4;
        if out.len() + rec_len > block_start + block {
            // Close this block: its last entry takes the rest.
            let last_at = last.expect("a block holds at least one entry");
            let stretched = block_start + block - last_at;
            put16(&mut out[last_at..], 4, stretched as u16);
            out.resize(block_start + block, 0);
            block_start += block;
        }
        let at = out.len();
        out.resize(at + rec_len, 0);
        put32(&mut out[at..], 0, ino);
        put16(&mut out[at..], 4, rec_len as u16);
        out[at + 6] = name.len() as u8;
        out[at + 7] = file_type;
        out[at + 8..at + 8 + name.len()].copy_from_slice(name);
        last = Some(at);
    };
    put(&mut out, b".", self_ino, FT_DIR);
    put(&mut out, b"..", parent_ino, FT_DIR);
    for (name, ino, file_type) in entries {
        put(&mut out, name, *ino, *file_type);
    }
    let last_at = last.expect("a directory has . and ..");
    put16(
        &mut out[last_at..],
        4,
        (block_start + block - last_at) as u16,
    );
    out.resize(block_start + block, 0);
    while out.len() < min_blocks * block {
        // An empty block: one unused entry spanning it.
        let at = out.len();
        out.resize(at + block, 0);
        put16(&mut out[at..], 4, block as u16);
    }
    out
}

/// The journal's superblock (jbd2 v2, empty and clean).
pub(super) fn journal_superblock(blocks: u64, uuid: &[u8; 16]) -> Vec<u8> {
    let mut jsb = vec![0u8; BLOCK as usize];
    put32_be(&mut jsb, 0, 0xC03B_3998);
    put32_be(&mut jsb, 4, 4); // superblock v2
    put32_be(&mut jsb, 12, BLOCK as u32);
    put32_be(&mut jsb, 16, blocks as u32);
    put32_be(&mut jsb, 20, 1); // first log block
    put32_be(&mut jsb, 24, 1); // first sequence
    jsb[48..64].copy_from_slice(uuid);
    put32_be(&mut jsb, 64, 1); // users
    jsb
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_past_2038_keep_their_epoch() {
        let (low, extra) = time_words(Time {
            secs: (1 << 32) + 5,
            nanos: 7,
        });
        assert_eq!(low, 5);
        assert_eq!(extra, 1 | (7 << 2));
        let (low, extra) = time_words(Time { secs: -1, nanos: 0 });
        assert_eq!(low, u32::MAX);
        assert_eq!(extra & 3, 0);
    }

    #[test]
    fn long_runs_split_into_extents_of_32768() {
        let runs = [Run {
            start: 100,
            len: 40000,
        }];
        assert_eq!(
            extents(&runs),
            [
                Extent {
                    logical: 0,
                    start: 100,
                    len: 32768
                },
                Extent {
                    logical: 32768,
                    start: 32868,
                    len: 7232
                }
            ]
        );
    }

    #[test]
    fn directory_entries_never_cross_a_block() {
        let names: Vec<Vec<u8>> = (0..400)
            .map(|n| format!("file-{n:04}").into_bytes())
            .collect();
        let entries: Vec<(&[u8], u32, u8)> = names
            .iter()
            .enumerate()
            .map(|(n, name)| (name.as_slice(), 12 + n as u32, FT_REG))
            .collect();
        let bytes = dir_blocks(2, 2, &entries, 1);
        assert_eq!(bytes.len() % BLOCK as usize, 0);
        let mut seen = 0;
        for block in bytes.chunks(BLOCK as usize) {
            let mut at = 0;
            while at < block.len() {
                let rec_len = u16::from_le_bytes([block[at + 4], block[at + 5]]) as usize;
                assert!(rec_len >= 12 && at + rec_len <= block.len());
                seen += 1;
                at += rec_len;
            }
            assert_eq!(at, block.len());
        }
        assert_eq!(seen, 402);
    }
}
