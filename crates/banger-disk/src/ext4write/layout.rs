//! Where everything goes: block groups, their metadata, and a block
//! allocator that hands out the data blocks in order.
//!
//! Every group has a block bitmap, an inode bitmap and an inode table at
//! its start; groups 0, 1 and the powers of 3, 5 and 7 first hold a copy
//! of the superblock and of the group descriptor table (`sparse_super`).
//! Data is allocated from the first free block on, group after group, so a
//! file's blocks are contiguous except where a group's metadata cuts in.

pub(super) const BLOCK: u64 = 4096;
pub(super) const BLOCKS_PER_GROUP: u64 = 32768;
pub(super) const INODE_SIZE: u64 = 256;
const INODES_PER_BLOCK: u64 = BLOCK / INODE_SIZE;
const DESC_SIZE: u64 = 32;
/// Bits in one bitmap block: the most inodes a group can have.
const BITMAP_BITS: u64 = BLOCK * 8;

/// The shape of the filesystem.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Geometry {
    pub(super) blocks: u64,
    pub(super) groups: u64,
    pub(super) inodes_per_group: u64,
    pub(super) itable_blocks: u64,
    pub(super) gdt_blocks: u64,
}

/// Why a size cannot hold a filesystem.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum GeometryError {
    Small,
    Large,
    Inodes,
}

impl Geometry {
    /// A filesystem of `bytes` (whole blocks) with at least `inodes` inodes.
    /// A last group too small for its own metadata is left out, as mke2fs
    /// does.
    pub(super) fn new(bytes: u64, inodes: u64) -> Result<Self, GeometryError> {
        let mut blocks = bytes / BLOCK;
        if blocks > u64::from(u32::MAX) {
            return Err(GeometryError::Large);
        }
        for _ in 0..2 {
            let groups = blocks.div_ceil(BLOCKS_PER_GROUP);
            if groups == 0 {
                return Err(GeometryError::Small);
            }
            let per_group = inodes.div_ceil(groups).div_ceil(INODES_PER_BLOCK) * INODES_PER_BLOCK;
            let inodes_per_group = per_group.max(INODES_PER_BLOCK);
            if inodes_per_group > BITMAP_BITS || inodes_per_group * groups > u64::from(u32::MAX) {
                return Err(GeometryError::Inodes);
            }
            let geometry = Self {
                blocks,
                groups,
                inodes_per_group,
                itable_blocks: inodes_per_group / INODES_PER_BLOCK,
                gdt_blocks: (groups * DESC_SIZE).div_ceil(BLOCK),
            };
            let last = groups - 1;
            let last_size = geometry.group_end(last) - geometry.group_start(last);
            if last_size >= geometry.overhead(last) + 50 {
                return Ok(geometry);
            }
            if last == 0 {
                return Err(GeometryError::Small);
            }
            blocks = last * BLOCKS_PER_GROUP;
        }
        Err(GeometryError::Small)
    }

    pub(super) fn inodes(&self) -> u64 {
        self.inodes_per_group * self.groups
    }

    pub(super) fn group_start(&self, group: u64) -> u64 {
        group * BLOCKS_PER_GROUP
    }

    pub(super) fn group_end(&self, group: u64) -> u64 {
        ((group + 1) * BLOCKS_PER_GROUP).min(self.blocks)
    }

    /// Whether `group` holds a superblock and descriptor copy.
    pub(super) fn has_super(&self, group: u64) -> bool {
        if group <= 1 {
            return true;
        }
        [3u64, 5, 7].iter().any(|&base| {
            let mut power = base;
            while power < group {
                power *= base;
            }
            power == group
        })
    }

    pub(super) fn block_bitmap(&self, group: u64) -> u64 {
        let start = self.group_start(group);
        if self.has_super(group) {
            start + 1 + self.gdt_blocks
        } else {
            start
        }
    }

    pub(super) fn inode_bitmap(&self, group: u64) -> u64 {
        self.block_bitmap(group) + 1
    }

    pub(super) fn inode_table(&self, group: u64) -> u64 {
        self.block_bitmap(group) + 2
    }

    /// The group's first block after its metadata.
    pub(super) fn data_start(&self, group: u64) -> u64 {
        self.inode_table(group) + self.itable_blocks
    }

    /// Metadata blocks of `group`.
    pub(super) fn overhead(&self, group: u64) -> u64 {
        self.data_start(group) - self.group_start(group)
    }

    /// Data blocks a filesystem of this shape offers in all.
    pub(super) fn data_blocks(&self) -> u64 {
        (0..self.groups)
            .map(|group| self.group_end(group) - self.data_start(group))
            .sum()
    }
}

/// A run of contiguous blocks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Run {
    pub(super) start: u64,
    pub(super) len: u64,
}

/// Hands out data blocks in order and remembers what it gave.
#[derive(Debug)]
pub(super) struct Allocator {
    geometry: Geometry,
    group: u64,
    next: u64,
    used_per_group: Vec<u64>,
}

/// Out of data blocks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Full;

impl Allocator {
    pub(super) fn new(geometry: Geometry) -> Self {
        Self {
            geometry,
            group: 0,
            next: geometry.data_start(0),
            used_per_group: vec![0; geometry.groups as usize],
        }
    }

    /// `count` blocks, as few runs as the groups allow.
    pub(super) fn allocate(&mut self, count: u64) -> Result<Vec<Run>, Full> {
        let mut runs = Vec::new();
        let mut left = count;
        while left > 0 {
            let end = self.geometry.group_end(self.group);
            if self.next >= end {
                self.group += 1;
                if self.group >= self.geometry.groups {
                    return Err(Full);
                }
                self.next = self.geometry.data_start(self.group);
                continue;
            }
            let len = left.min(end - self.next);
            runs.push(Run {
                start: self.next,
                len,
            });
            self.used_per_group[self.group as usize] += len;
            self.next += len;
            left -= len;
        }
        Ok(runs)
    }

    /// Data blocks handed out in `group`; they are the first ones after
    /// its metadata.
    pub(super) fn used_in(&self, group: u64) -> u64 {
        self.used_per_group[group as usize]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sparse_super_groups() {
        let geometry = Geometry::new(64 << 30, 1 << 20).unwrap();
        let with: Vec<u64> = (0..geometry.groups)
            .filter(|&group| geometry.has_super(group))
            .collect();
        assert_eq!(with, [0, 1, 3, 5, 7, 9, 25, 27, 49, 81, 125, 243, 343]);
    }

    #[test]
    fn a_tiny_last_group_is_left_out() {
        // 2 GiB and 40 blocks: the 40 cannot hold a group's metadata.
        let geometry = Geometry::new((2 << 30) + 40 * BLOCK, 131072).unwrap();
        assert_eq!(geometry.groups, 16);
        assert_eq!(geometry.blocks, 16 * BLOCKS_PER_GROUP);
        assert_eq!(geometry.inodes_per_group, 8192);
        assert_eq!(geometry.gdt_blocks, 1);
        assert!(Geometry::new(40 * BLOCK, 16).is_err());
    }

    #[test]
    fn allocation_skips_each_groups_metadata() {
        let geometry = Geometry::new(3 * BLOCKS_PER_GROUP * BLOCK, 3 * 16).unwrap();
        let mut allocator = Allocator::new(geometry);
        let first = geometry.group_end(0) - geometry.data_start(0);
        let runs = allocator.allocate(first + 10).unwrap();
        assert_eq!(
            runs,
            [
                Run {
                    start: geometry.data_start(0),
                    len: first
                },
                Run {
                    start: geometry.data_start(1),
                    len: 10
                }
            ]
        );
        assert_eq!(allocator.used_in(1), 10);
        let rest = geometry.data_blocks() - first - 10;
        assert!(allocator.allocate(rest).is_ok());
        assert_eq!(allocator.allocate(1), Err(Full));
    }
}
