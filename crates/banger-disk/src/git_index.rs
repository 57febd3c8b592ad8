//! Filling a git index's stat data in for the files as a new disk holds
//! them, so that git in the guest finds the workspace clean where it is,
//! without reading every file again.
//!
//! git trusts an index entry when the file's ctime, mtime, inode, owner
//! and size are the ones it recorded (the device is not compared); the
//! index the client made (`git read-tree`) records none, so the guest's
//! first `git status` would hash the whole tree. Only index versions 2
//! and 3 are filled (version 4 compresses paths); the trailing checksum
//! (SHA-1 or SHA-256, told apart by which one matches) is made again.

use sha2::Digest;

/// What the disk holds for one path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EntryStat {
    pub ctime: (u32, u32),
    pub mtime: (u32, u32),
    pub ino: u32,
    pub uid: u32,
    pub gid: u32,
    pub size: u64,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum IndexError {
    #[error("not a git index")]
    NotAnIndex,
    #[error("index version {0} is not filled in (only 2 and 3)")]
    Version(u32),
    #[error("the index's checksum matches neither SHA-1 nor SHA-256")]
    Checksum,
    #[error("the index ends inside an entry")]
    Truncated,
}

enum Hash {
    Sha1,
    Sha256,
}

impl Hash {
    fn len(&self) -> usize {
        match self {
            Self::Sha1 => 20,
            Self::Sha256 => 32,
        }
    }

    fn of(&self, bytes: &[u8]) -> Vec<u8> {
        match self {
            Self::Sha1 => sha1::Sha1::digest(bytes).to_vec(),
            Self::Sha256 => sha2::Sha256::digest(bytes).to_vec(),
        }
    }

    fn detect(index: &[u8]) -> Option<Self> {
        [Self::Sha1, Self::Sha256].into_iter().find(|hash| {
            index.len() >= 12 + hash.len() && {
                let (body, trailer) = index.split_at(index.len() - hash.len());
                hash.of(body) == trailer
            }
        })
    }
}

fn be32(bytes: &[u8], at: usize) -> u32 {
    u32::from_be_bytes(bytes[at..at + 4].try_into().expect("four bytes"))
}

fn put_be32(bytes: &mut [u8], at: usize, value: u32) {
    bytes[at..at + 4].copy_from_slice(&value.to_be_bytes());
}

/// Fills in the stat data of each stage-0 entry that `stat_for` knows
/// (by the entry's path) and makes the checksum again; how many were
/// filled.
pub fn fill_stat(
    index: &mut [u8],
    mut stat_for: impl FnMut(&[u8]) -> Option<EntryStat>,
) -> Result<usize, IndexError> {
    if index.len() < 12 || &index[..4] != b"DIRC" {
        return Err(IndexError::NotAnIndex);
    }
    let version = be32(index, 4);
    if !(2..=3).contains(&version) {
        return Err(IndexError::Version(version));
    }
    let hash = Hash::detect(index).ok_or(IndexError::Checksum)?;
    let entries = be32(index, 8) as usize;
    let end = index.len() - hash.len();
    let mut at = 12;
    let mut filled = 0;
    for _ in 0..entries {
        // ctime, mtime (seconds, nanoseconds), dev, ino, mode, uid, gid,
        // size: ten 32-bit words; then the object id and the flags.
        let flags_at = at + 40 + hash.len();
        if flags_at + 2 > end {
            return Err(IndexError::Truncated);
        }
        let flags = u16::from_be_bytes([index[flags_at], index[flags_at + 1]]);
        let extended = version == 3 && flags & 0x4000 != 0;
        let path_at = flags_at + 2 + if extended { 2 } else { 0 };
        let path_len = match index[path_at.min(end)..end]
            .iter()
            .position(|&byte| byte == 0)
        {
            Some(len) => len,
            None => return Err(IndexError::Truncated),
        };
        let entry_len = (path_at - at + path_len + 8) & !7;
        if at + entry_len > end {
            return Err(IndexError::Truncated);
        }
        let stage = (flags >> 12) & 3;
        if stage == 0
            && let Some(stat) = stat_for(&index[path_at..path_at + path_len])
        {
            let words = [
                (0, stat.ctime.0),
                (4, stat.ctime.1),
                (8, stat.mtime.0),
                (12, stat.mtime.1),
                (20, stat.ino),
                (28, stat.uid),
                (32, stat.gid),
                (36, stat.size as u32),
            ];
            for (offset, value) in words {
                put_be32(index, at + offset, value);
            }
            filled += 1;
        }
        at += entry_len;
    }
    let sum = hash.of(&index[..end]);
    index[end..].copy_from_slice(&sum);
    Ok(filled)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn what_is_not_an_index_is_refused() {
        assert_eq!(
            fill_stat(&mut b"nope".to_vec(), |_| None),
            Err(IndexError::NotAnIndex)
        );
        let mut v4 = b"DIRC\0\0\0\x04\0\0\0\0".to_vec();
        assert_eq!(fill_stat(&mut v4, |_| None), Err(IndexError::Version(4)));
        let mut bad = b"DIRC\0\0\0\x02\0\0\0\0".to_vec();
        bad.extend([0u8; 20]);
        assert_eq!(fill_stat(&mut bad, |_| None), Err(IndexError::Checksum));
    }
}
