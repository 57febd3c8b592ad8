//! Reading the few ext4 superblock fields this crate needs (block size and
//! counts), straight from the image: cheaper than running `dumpe2fs`.

use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use fs_err as fs;

const SUPERBLOCK_OFFSET: u64 = 1024;
const EXT4_MAGIC: u16 = 0xEF53;
const INCOMPAT_64BIT: u32 = 0x80;

/// The sizes recorded in an ext2/3/4 superblock.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ext4Superblock {
    pub block_size: u64,
    pub blocks: u64,
    pub inodes: u32,
}

impl Ext4Superblock {
    /// Size of the filesystem in bytes (may be less than its file's length).
    pub fn size_bytes(&self) -> u64 {
        self.blocks * self.block_size
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ReadSuperblockError {
    #[error("cannot read the superblock of {path}")]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("{path} is not an ext2/3/4 filesystem (bad superblock magic)")]
    NotExt4 { path: PathBuf },
}

/// Reads the superblock of the filesystem in `path` (file or block device).
pub fn read_superblock(path: &Path) -> Result<Ext4Superblock, ReadSuperblockError> {
    let io_error = |source: io::Error| ReadSuperblockError::Io {
        path: path.to_owned(),
        source,
    };
    let file = fs::File::open(path).map_err(io_error)?;
    let mut raw = [0u8; 1024];
    file.file()
        .read_exact_at(&mut raw, SUPERBLOCK_OFFSET)
        .map_err(io_error)?;
    parse(&raw).ok_or_else(|| ReadSuperblockError::NotExt4 {
        path: path.to_owned(),
    })
}

fn le32(raw: &[u8], offset: usize) -> u32 {
    u32::from_le_bytes([
        raw[offset],
        raw[offset + 1],
        raw[offset + 2],
        raw[offset + 3],
    ])
}

fn parse(raw: &[u8; 1024]) -> Option<Ext4Superblock> {
    if u16::from_le_bytes([raw[56], raw[57]]) != EXT4_MAGIC {
        return None;
    }
    let log_block_size = le32(raw, 24);
    if log_block_size > 6 {
        return None;
    }
    let block_size = 1024u64 << log_block_size;
    let mut blocks = u64::from(le32(raw, 4));
    if le32(raw, 96) & INCOMPAT_64BIT != 0 {
        blocks |= u64::from(le32(raw, 0x150)) << 32;
    }
    Some(Ext4Superblock {
        block_size,
        blocks,
        inodes: le32(raw, 0),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_fields() {
        let mut raw = [0u8; 1024];
        raw[0..4].copy_from_slice(&16384u32.to_le_bytes());
        raw[4..8].copy_from_slice(&5u32.to_le_bytes());
        raw[24..28].copy_from_slice(&2u32.to_le_bytes());
        raw[56..58].copy_from_slice(&EXT4_MAGIC.to_le_bytes());
        raw[96..100].copy_from_slice(&INCOMPAT_64BIT.to_le_bytes());
        raw[0x150..0x154].copy_from_slice(&1u32.to_le_bytes());
        let sb = parse(&raw).unwrap();
        assert_eq!(sb.block_size, 4096);
        assert_eq!(sb.blocks, (1 << 32) + 5);
        assert_eq!(sb.inodes, 16384);
        raw[56] = 0;
        assert!(parse(&raw).is_none());
    }
}
