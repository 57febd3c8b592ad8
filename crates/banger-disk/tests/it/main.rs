//! banger-disk's integration tests: real e2fsprogs, loop devices, mounts
//! and reflinks. Tests needing root print a reason and skip otherwise; CI
//! runs them as root. Each test works in its own temp dir and checks that
//! no loop device or mount under it survives.

mod copy;
mod edits;
mod ext4write;
mod git_index;
mod loops;
mod mkfs;
mod policy;
mod reflink;
mod util;
mod workdisk;
