//! Measuring a staged tree so the ext4 image can be sized.

use std::collections::HashSet;
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use serde::Serialize;

const BLOCK: u64 = 4096;

/// What a staged tree holds, counted the way an ext4 image will need it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct ContentSize {
    /// Space the content needs in 4 KiB blocks: regular files by their
    /// allocated blocks (holes stay holes), directories by their entries,
    /// symlinks too long to live in the inode by one block. Hard-linked
    /// inodes count once.
    pub bytes: u64,
    /// Distinct inodes, the root included.
    pub inodes: u64,
    /// Sum of regular file lengths (what `du --apparent-size` says).
    pub apparent_bytes: u64,
}

fn round_up(value: u64, to: u64) -> u64 {
    value.div_ceil(to) * to
}

/// Walks `root` without following symlinks.
pub(crate) fn measure(root: &Path) -> io::Result<ContentSize> {
    let mut seen: HashSet<(u64, u64)> = HashSet::new();
    let mut total = ContentSize::default();
    let mut stack = vec![root.to_owned()];
    while let Some(dir) = stack.pop() {
        total.inodes += 1;
        let mut entry_bytes = 24u64;
        for entry in fs_err::read_dir(&dir)? {
            let entry = entry?;
            entry_bytes += round_up(8 + entry.file_name().len() as u64, 4);
            let meta = fs_err::symlink_metadata(entry.path())?;
            let kind = meta.file_type();
            if kind.is_dir() {
                stack.push(entry.path());
                continue;
            }
            if meta.nlink() > 1 && !seen.insert((meta.dev(), meta.ino())) {
                continue;
            }
            total.inodes += 1;
            if kind.is_file() {
                let len = meta.len();
                total.apparent_bytes += len;
                if len > 0 {
                    let allocated = (meta.blocks() * 512).clamp(BLOCK, round_up(len, BLOCK));
                    total.bytes += round_up(allocated, BLOCK);
                }
            } else if kind.is_symlink() && meta.len() >= 60 {
                total.bytes += BLOCK;
            }
        }
        total.bytes += round_up(entry_bytes, BLOCK);
    }
    Ok(total)
}
