//! ext4 images from directories: ownership, modes, links, sizing, sparseness.

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;

use banger_disk::edits::FileKind;
use banger_disk::mkfs::{measure_dir, plan_ext4};
use banger_disk::{Ext4BuildOptions, build_ext4_from_dir, make_work_seed, read_file, stat};
use nix::unistd::{Gid, Uid};

use crate::util::{self, require_root};

fn own(path: &Path, uid: u32, gid: u32) {
    nix::unistd::fchownat(
        nix::fcntl::AT_FDCWD,
        path,
        Some(Uid::from_raw(uid)),
        Some(Gid::from_raw(gid)),
        nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW,
    )
    .unwrap();
}

#[test]
fn preserves_owners_modes_symlinks_and_hard_links() {
    require_root!();
    let dir = tempfile::tempdir().unwrap();
    let tree = dir.path().join("tree");
    std::fs::create_dir_all(tree.join("usr/bin")).unwrap();
    std::fs::create_dir_all(tree.join("home/user/empty dir")).unwrap();
    std::fs::write(tree.join("usr/bin/tool"), vec![7u8; 50_000]).unwrap();
    std::fs::set_permissions(
        tree.join("usr/bin/tool"),
        std::fs::Permissions::from_mode(0o4755),
    )
    .unwrap();
    std::fs::hard_link(tree.join("usr/bin/tool"), tree.join("usr/bin/tool-alias")).unwrap();
    std::fs::write(tree.join("home/user/notes with space.txt"), b"hello\n").unwrap();
    own(&tree.join("home/user"), 1000, 1000);
    own(&tree.join("home/user/notes with space.txt"), 1000, 100);
    std::fs::set_permissions(
        tree.join("home/user/notes with space.txt"),
        std::fs::Permissions::from_mode(0o640),
    )
    .unwrap();
    std::fs::set_permissions(
        tree.join("home/user"),
        std::fs::Permissions::from_mode(0o2750),
    )
    .unwrap();
    std::os::unix::fs::symlink("../usr/bin/tool", tree.join("home/tool-link")).unwrap();
    own(&tree.join("home/tool-link"), 1000, 1000);
    let long_target = format!("/{}", "t".repeat(100));
    std::os::unix::fs::symlink(&long_target, tree.join("long-link")).unwrap();
    nix::unistd::mkfifo(
        &tree.join("fifo"),
        nix::sys::stat::Mode::from_bits_truncate(0o600),
    )
    .unwrap();
    own(&tree, 1234, 1234); // the image root stays root:root

    let out = dir.path().join("rootfs.ext4");
    let built = build_ext4_from_dir(
        &tree,
        &out,
        &Ext4BuildOptions {
            label: Some("rootfs".into()),
            ..Default::default()
        },
    )
    .unwrap();
    util::assert_fsck_clean(&out);
    let meta = std::fs::metadata(&out).unwrap();
    assert_eq!(meta.len(), built.size.bytes());
    assert!(
        meta.blocks() * 512 < meta.len() / 2,
        "image is not sparse: {} of {}",
        meta.blocks() * 512,
        meta.len()
    );
    assert_eq!(
        util::dumpe2fs_field(&out, "Filesystem volume name"),
        "rootfs"
    );

    let root = util::debugfs_stat(&out, "/");
    assert_eq!((root.uid, root.gid, root.mode), (0, 0, 0o755));
    let tool = util::debugfs_stat(&out, "/usr/bin/tool");
    let alias = util::debugfs_stat(&out, "/usr/bin/tool-alias");
    assert_eq!((tool.mode, tool.links), (0o4755, 2));
    assert_eq!(tool.inode, alias.inode, "hard link became a copy");
    let notes = util::debugfs_stat(&out, "/home/user/notes with space.txt");
    assert_eq!((notes.uid, notes.gid, notes.mode), (1000, 100, 0o640));
    let home = util::debugfs_stat(&out, "/home/user");
    assert_eq!(
        (home.kind.as_str(), home.uid, home.mode),
        ("directory", 1000, 0o2750)
    );
    let link = util::debugfs_stat(&out, "/home/tool-link");
    assert_eq!((link.kind.as_str(), link.uid), ("symlink", 1000));
    assert_eq!(util::debugfs_stat(&out, "/fifo").kind, "FIFO");
    assert_eq!(
        stat(&out, "/home/user/empty dir").unwrap().unwrap().kind,
        FileKind::Directory
    );
    assert_eq!(read_file(&out, "/usr/bin/tool").unwrap(), vec![7u8; 50_000]);

    // A slow symlink keeps its target in a data block.
    let readlink = util::run("debugfs", &["-R", "cat /long-link", util::path_str(&out)]);
    assert!(readlink.contains(&long_target), "{readlink}");
}

/// A debootstrap tree's /dev: with `skip_special` the nodes and FIFOs are
/// left out of the image (hard-linked names too), counted; everything else
/// in /dev stays.
#[test]
fn skip_special_leaves_device_nodes_and_fifos_out() {
    require_root!();
    use nix::sys::stat::{Mode, SFlag, makedev, mknod};
    let dir = tempfile::tempdir().unwrap();
    let tree = dir.path().join("tree");
    std::fs::create_dir_all(tree.join("dev/pts")).unwrap();
    std::fs::create_dir_all(tree.join("etc")).unwrap();
    std::fs::write(tree.join("etc/hostname"), b"x\n").unwrap();
    let rw = Mode::from_bits_truncate(0o666);
    for (name, major, minor) in [
        ("null", 1, 3),
        ("zero", 1, 5),
        ("full", 1, 7),
        ("tty", 5, 0),
    ] {
        mknod(
            &tree.join("dev").join(name),
            SFlag::S_IFCHR,
            rw,
            makedev(major, minor),
        )
        .unwrap();
    }
    mknod(&tree.join("dev/loop0"), SFlag::S_IFBLK, rw, makedev(7, 0)).unwrap();
    std::fs::hard_link(tree.join("dev/null"), tree.join("dev/null-too")).unwrap();
    nix::unistd::mkfifo(&tree.join("dev/initctl"), Mode::from_bits_truncate(0o600)).unwrap();
    std::os::unix::fs::symlink("/proc/self/fd", tree.join("dev/fd")).unwrap();

    let out = dir.path().join("rootfs.ext4");
    let built = build_ext4_from_dir(
        &tree,
        &out,
        &Ext4BuildOptions {
            skip_special: true,
            ..Default::default()
        },
    )
    .unwrap();
    assert_eq!(built.skipped_special, 7);
    util::assert_fsck_clean(&out);
    for gone in [
        "null", "null-too", "zero", "full", "tty", "loop0", "initctl",
    ] {
        assert!(
            stat(&out, &format!("/dev/{gone}")).unwrap().is_none(),
            "/dev/{gone} is still in the image"
        );
    }
    assert_eq!(
        stat(&out, "/dev/pts").unwrap().unwrap().kind,
        FileKind::Directory
    );
    assert_eq!(
        stat(&out, "/dev/fd").unwrap().unwrap().kind,
        FileKind::Symlink
    );
    assert_eq!(read_file(&out, "/etc/hostname").unwrap(), b"x\n");

    // Without the option they are copied as they are.
    let kept = dir.path().join("kept.ext4");
    let built = build_ext4_from_dir(&tree, &kept, &Ext4BuildOptions::default()).unwrap();
    assert_eq!(built.skipped_special, 0);
    assert_eq!(util::debugfs_stat(&kept, "/dev/null").kind, "character");
}

#[test]
fn size_follows_content_with_headroom() {
    let dir = tempfile::tempdir().unwrap();
    let tree = dir.path().join("tree");
    std::fs::create_dir(&tree).unwrap();
    for index in 0..20 {
        std::fs::write(
            tree.join(format!("blob{index}")),
            vec![index as u8 + 1; 1 << 20],
        )
        .unwrap();
    }
    let content = measure_dir(&tree).unwrap();
    assert!(
        content.bytes >= 20 << 20 && content.bytes < 21 << 20,
        "{content:?}"
    );
    assert_eq!(content.inodes, 21);
    let out = dir.path().join("img.ext4");
    let built = build_ext4_from_dir(&tree, &out, &Ext4BuildOptions::default()).unwrap();
    assert_eq!(built.size, plan_ext4(content).size);
    // 20 MiB + 20 % + 64 MiB + inode tables + journal, in 4 MiB steps.
    assert!(built.size.bytes() >= (24 << 20) + (64 << 20));
    assert!(built.size.bytes() <= 128 << 20, "{}", built.size);
    util::assert_fsck_clean(&out);
    let free_blocks: u64 = util::dumpe2fs_field(&out, "Free blocks").parse().unwrap();
    assert!(
        free_blocks * 4096 >= 40 << 20,
        "too little headroom: {free_blocks} blocks free"
    );
}

#[test]
fn many_small_files_get_enough_inodes() {
    let dir = tempfile::tempdir().unwrap();
    let tree = dir.path().join("tree");
    std::fs::create_dir(&tree).unwrap();
    // Spread over directories like a real tree (mke2fs fills one huge
    // directory slowly).
    for group in 0..100 {
        let sub = tree.join(format!("d{group}"));
        std::fs::create_dir(&sub).unwrap();
        for index in 0..150 {
            std::fs::write(sub.join(format!("f{index}")), b"").unwrap();
        }
    }
    let out = dir.path().join("img.ext4");
    let built = build_ext4_from_dir(&tree, &out, &Ext4BuildOptions::default()).unwrap();
    assert!(built.inodes >= 18_000);
    util::assert_fsck_clean(&out);
    let inodes: u64 = util::dumpe2fs_field(&out, "Inode count").parse().unwrap();
    assert!(inodes >= built.inodes);
}

#[test]
fn work_seed_from_root_or_empty() {
    let dir = tempfile::tempdir().unwrap();
    let rootfs = dir.path().join("rootfs");
    std::fs::create_dir_all(rootfs.join("root/.ssh")).unwrap();
    std::fs::write(rootfs.join("root/.bashrc"), b"PS1='$ '\n").unwrap();
    let seed = dir.path().join("work-seed.ext4");
    make_work_seed(&rootfs, &seed).unwrap();
    util::assert_fsck_clean(&seed);
    assert_eq!(read_file(&seed, "/.bashrc").unwrap(), b"PS1='$ '\n");
    assert_eq!(
        stat(&seed, "/.ssh").unwrap().unwrap().kind,
        FileKind::Directory
    );
    assert_eq!(
        util::dumpe2fs_field(&seed, "Filesystem volume name"),
        "banger-work"
    );
    let reserved: u64 = util::dumpe2fs_field(&seed, "Reserved GDT blocks")
        .parse()
        .unwrap();
    assert!(
        reserved >= 1000,
        "seed is not growable: {reserved} reserved GDT blocks"
    );

    let bare = dir.path().join("bare");
    std::fs::create_dir(&bare).unwrap();
    let empty_seed = dir.path().join("empty-seed.ext4");
    make_work_seed(&bare, &empty_seed).unwrap();
    util::assert_fsck_clean(&empty_seed);
    let root = stat(&empty_seed, "/").unwrap().unwrap();
    assert_eq!((root.kind, root.uid, root.gid), (FileKind::Directory, 0, 0));
    assert_eq!(stat(&empty_seed, "/.bashrc").unwrap(), None);
}
