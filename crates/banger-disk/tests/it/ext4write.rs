//! The one-pass ext4 writer, judged by e2fsprogs (`e2fsck -fn`, debugfs,
//! resize2fs) and, as root, by the kernel through a real mount.

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use banger_disk::ext4write::{Meta, Owners, Tree, WriteExt4Error, WriteOptions, write_ext4};
use banger_model::ByteSize;

use crate::util::{self, debugfs_stat};

/// A tree with what workspaces and home directories hold.
fn source(dir: &Path) -> PathBuf {
    let src = dir.join("src");
    let mkdir = |rel: &str| std::fs::create_dir_all(src.join(rel)).unwrap();
    mkdir("repo/.git/objects/pack");
    mkdir("repo/src/deep/er/still");
    mkdir("many");
    let write = |rel: &str, bytes: &[u8]| std::fs::write(src.join(rel), bytes).unwrap();
    write("repo/empty", b"");
    write("repo/one", b"1");
    write("repo/block", &[7u8; 4096]);
    write("repo/block-and-a-bit", &[8u8; 4097]);
    write(
        "repo/src/deep/er/still/main.rs",
        &(0..100_000u32).map(|n| (n % 251) as u8).collect::<Vec<_>>(),
    );
    write("repo/na me ünïcode #1", b"odd name\n");
    write("repo/run.sh", b"#!/bin/sh\necho hi\n");
    std::fs::set_permissions(
        src.join("repo/run.sh"),
        std::fs::Permissions::from_mode(0o755),
    )
    .unwrap();
    write("repo/setuid", b"s");
    std::fs::set_permissions(
        src.join("repo/setuid"),
        std::fs::Permissions::from_mode(0o4750),
    )
    .unwrap();
    std::os::unix::fs::symlink("src/deep/er/still/main.rs", src.join("repo/short-link")).unwrap();
    let long_target = format!("{}/target", "x".repeat(90));
    std::os::unix::fs::symlink(&long_target, src.join("repo/long-link")).unwrap();
    std::fs::hard_link(src.join("repo/one"), src.join("repo/one-again")).unwrap();
    for n in 0..600 {
        write(
            &format!("many/entry-number-{n:04}"),
            format!("{n}\n").as_bytes(),
        );
    }
    // A sparse file spanning five groups: its extents need a leaf block.
    let sparse = std::fs::File::create(src.join("repo/.git/objects/pack/sparse.pack")).unwrap();
    sparse.set_len(700 << 20).unwrap();
    use std::os::unix::fs::FileExt;
    for offset in [0u64, 300 << 20, (700 << 20) - 5] {
        sparse.write_all_at(b"data!", offset).unwrap();
    }
    nix::unistd::mkfifo(
        &src.join("repo/fifo"),
        nix::sys::stat::Mode::from_bits_truncate(0o644),
    )
    .unwrap();
    // After 2038 (ext4 keeps the epoch bits).
    let later = std::time::UNIX_EPOCH + std::time::Duration::from_secs((1 << 32) + 12345);
    std::fs::File::options()
        .write(true)
        .open(src.join("repo/one"))
        .unwrap()
        .set_modified(later)
        .unwrap();
    src
}

fn written(src: &Path, out: &Path, size: ByteSize) -> Result<(), WriteExt4Error> {
    let mut tree = Tree::new(Meta::root(0o700));
    let added = tree.add_dir(src, Owners::of_process()).unwrap();
    assert_eq!(added.special, 1, "the FIFO is left out");
    write_ext4(
        &tree,
        out,
        &WriteOptions {
            size,
            min_inodes: 0,
            label: Some("banger-work".into()),
            min_free: ByteSize(0),
        },
    )
    .map(|_| ())
}

#[test]
fn a_written_tree_is_clean_and_reads_back_as_it_was() {
    let dir = tempfile::tempdir().unwrap();
    let src = source(dir.path());
    let out = dir.path().join("work.ext4");
    written(&src, &out, ByteSize::gib(2)).unwrap();
    util::assert_fsck_clean(&out);
    assert_eq!(
        util::dumpe2fs_field(&out, "Filesystem volume name"),
        "banger-work"
    );
    assert_eq!(
        util::dumpe2fs_field(&out, "Block count"),
        ((2u64 << 30) / 4096).to_string()
    );

    for rel in [
        "repo/empty",
        "repo/one",
        "repo/block",
        "repo/block-and-a-bit",
        "repo/src/deep/er/still/main.rs",
        "repo/na me ünïcode #1",
        "many/entry-number-0599",
    ] {
        let read = banger_disk::read_file(&out, &format!("/{rel}")).unwrap();
        assert_eq!(read, std::fs::read(src.join(rel)).unwrap(), "{rel}");
    }
    let run = debugfs_stat(&out, "/repo/run.sh");
    assert_eq!(
        (run.kind.as_str(), run.mode, run.uid, run.gid),
        ("regular", 0o755, 0, 0)
    );
    assert_eq!(debugfs_stat(&out, "/repo/setuid").mode, 0o4750);
    assert_eq!(debugfs_stat(&out, "/repo/one").links, 2);
    assert_eq!(
        debugfs_stat(&out, "/repo/one").inode,
        debugfs_stat(&out, "/repo/one-again").inode
    );
    assert_eq!(debugfs_stat(&out, "/repo/src").links, 3);
    let lost = debugfs_stat(&out, "/lost+found");
    assert_eq!((lost.inode, lost.mode), (11, 0o700));
    assert!(
        banger_disk::stat(&out, "/repo/fifo").unwrap().is_none(),
        "FIFOs are left out"
    );

    if !banger_testkit::root_or_skip(
        "a_written_tree_is_clean_and_reads_back_as_it_was (its kernel mount)",
        "loop devices, mounts",
    ) {
        return;
    }
    let mounted = banger_disk::MountedExt4::ext4(&out, false).unwrap();
    assert_trees_equal(&src, mounted.path());
    // The guest writes into it: the kernel grows the big directory (and
    // indexes it), adds a tree, removes files, through the journal.
    let root = mounted.path();
    for n in 0..2000 {
        std::fs::write(root.join(format!("many/added-{n}")), b"new\n").unwrap();
    }
    std::fs::create_dir_all(root.join("repo/target/debug")).unwrap();
    std::fs::write(root.join("repo/target/debug/app"), vec![3u8; 3 << 20]).unwrap();
    std::fs::remove_file(root.join("repo/block")).unwrap();
    std::fs::remove_dir_all(root.join("repo/src")).unwrap();
    mounted.unmount().unwrap();
    assert!(util::loops_under(dir.path()).is_empty());
    util::assert_fsck_clean(&out);
}

/// Every entry of `expected` (FIFOs aside) is in `actual` with the same
/// kind, mode, modification time, content or target, and nothing more.
fn assert_trees_equal(expected: &Path, actual: &Path) {
    let names = |dir: &Path| -> Vec<_> {
        let mut names: Vec<_> = std::fs::read_dir(dir)
            .unwrap()
            .map(|entry| entry.unwrap().file_name())
            .filter(|name| name != "lost+found" && name != "fifo")
            .collect();
        names.sort();
        names
    };
    assert_eq!(names(expected), names(actual), "{}", actual.display());
    for name in names(expected) {
        let (want, got) = (expected.join(&name), actual.join(&name));
        let (want_meta, got_meta) = (
            std::fs::symlink_metadata(&want).unwrap(),
            std::fs::symlink_metadata(&got).unwrap(),
        );
        assert_eq!(want_meta.mode(), got_meta.mode(), "{}", got.display());
        let kind = want_meta.file_type();
        if kind.is_dir() {
            assert_trees_equal(&want, &got);
            continue;
        }
        assert_eq!(
            (want_meta.mtime(), want_meta.mtime_nsec()),
            (got_meta.mtime(), got_meta.mtime_nsec()),
            "{}",
            got.display()
        );
        if kind.is_symlink() {
            assert_eq!(
                std::fs::read_link(&want).unwrap(),
                std::fs::read_link(&got).unwrap()
            );
        } else {
            assert_eq!(want_meta.len(), got_meta.len(), "{}", got.display());
            assert!(same_bytes(&want, &got), "{} differs", got.display());
        }
    }
}

/// Compares two files a MiB at a time.
fn same_bytes(a: &Path, b: &Path) -> bool {
    use std::io::Read;
    let (mut a, mut b) = (
        std::fs::File::open(a).unwrap(),
        std::fs::File::open(b).unwrap(),
    );
    let (mut left, mut right) = (vec![0u8; 1 << 20], vec![0u8; 1 << 20]);
    loop {
        let read = a.read(&mut left).unwrap();
        if read == 0 {
            return b.read(&mut right).unwrap() == 0;
        }
        if b.read_exact(&mut right[..read]).is_err() || left[..read] != right[..read] {
            return false;
        }
    }
}

/// Progress counts bytes and files, never goes back, and ends at the
/// whole: every file, every byte.
#[test]
fn progress_counts_bytes_and_files_up_to_the_whole() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    std::fs::create_dir(&src).unwrap();
    // 40 MiB in 40 files: a report every 8 MiB or so, then the last.
    for n in 0..40 {
        std::fs::write(src.join(format!("f{n}")), vec![n as u8; 1 << 20]).unwrap();
    }
    std::fs::write(src.join("empty"), b"").unwrap();
    let mut tree = Tree::new(Meta::root(0o700));
    tree.add_dir(&src, Owners::of_process()).unwrap();
    let planned = banger_disk::ext4write::plan_ext4(
        &tree,
        &WriteOptions {
            size: ByteSize::mib(128),
            min_inodes: 0,
            label: None,
            min_free: ByteSize(0),
        },
    )
    .unwrap();
    let seen = std::sync::Mutex::new(Vec::new());
    let written = planned
        .write_reporting(&tree, &dir.path().join("out.ext4"), &|copied| {
            seen.lock().unwrap().push(copied)
        })
        .unwrap();
    let seen = seen.into_inner().unwrap();
    assert!(seen.len() >= 3, "{seen:?}");
    for pair in seen.windows(2) {
        assert!(pair[0].bytes <= pair[1].bytes, "{seen:?}");
    }
    for copied in &seen {
        assert_eq!((copied.total_bytes, copied.total_files), (40 << 20, 41));
        assert!(copied.files <= 41 && copied.bytes <= 40 << 20, "{copied:?}");
    }
    let last = seen.last().unwrap();
    assert_eq!((last.bytes, last.files), (40 << 20, 41));
    assert_eq!(written.file_bytes, 40 << 20);
}

#[test]
fn resize2fs_grows_a_written_disk() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    std::fs::create_dir(&src).unwrap();
    std::fs::write(src.join("kept"), b"still here\n").unwrap();
    let out = dir.path().join("work.ext4");
    let mut tree = Tree::new(Meta::root(0o700));
    tree.add_dir(&src, Owners::of_process()).unwrap();
    write_ext4(
        &tree,
        &out,
        &WriteOptions {
            size: ByteSize::mib(64),
            min_inodes: 0,
            label: None,
            min_free: ByteSize(0),
        },
    )
    .unwrap();
    let grown = banger_disk::workdisk::grow_work_disk(&out, ByteSize::gib(3)).unwrap();
    assert_eq!(grown.after, ByteSize::gib(3));
    util::assert_fsck_clean(&out);
    assert_eq!(
        banger_disk::read_file(&out, "/kept").unwrap(),
        b"still here\n"
    );
}

#[test]
fn too_little_room_and_files_changed_underway_leave_no_image() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    std::fs::create_dir(&src).unwrap();
    std::fs::write(src.join("big"), vec![1u8; 9 << 20]).unwrap();
    let out = dir.path().join("work.ext4");
    let options = |size| WriteOptions {
        size,
        min_inodes: 0,
        label: None,
        min_free: ByteSize(0),
    };

    let mut tree = Tree::new(Meta::root(0o700));
    tree.add_dir(&src, Owners::of_process()).unwrap();
    let error = write_ext4(&tree, &out, &options(ByteSize::mib(8))).unwrap_err();
    assert!(matches!(error, WriteExt4Error::TooSmall { .. }), "{error}");
    assert!(!out.exists());

    // Shorter after the walk.
    std::fs::write(src.join("big"), b"short now").unwrap();
    let error = write_ext4(&tree, &out, &options(ByteSize::mib(64))).unwrap_err();
    assert!(
        matches!(&error, WriteExt4Error::Changed { path, .. } if path.ends_with("big")),
        "{error}"
    );
    assert!(!out.exists());

    // A symlink swapped in after the walk is not followed.
    let mut tree = Tree::new(Meta::root(0o700));
    tree.add_dir(&src, Owners::of_process()).unwrap();
    std::fs::remove_file(src.join("big")).unwrap();
    std::os::unix::fs::symlink("/etc/hostname", src.join("big")).unwrap();
    let error = write_ext4(&tree, &out, &options(ByteSize::mib(64))).unwrap_err();
    assert!(matches!(error, WriteExt4Error::Changed { .. }), "{error}");
    assert!(!out.exists());
}

#[test]
fn host_files_come_from_beneath_their_root_and_nothing_is_followed() {
    use banger_model::host_files::Section;
    let dir = tempfile::tempdir().unwrap();
    let checkout = dir.path().join("checkout");
    std::fs::create_dir_all(checkout.join("src/nested")).unwrap();
    std::fs::write(checkout.join("README"), b"readme\n").unwrap();
    std::fs::write(checkout.join("src/nested/lib.rs"), b"fn main() {}\n").unwrap();
    std::fs::write(checkout.join("changed"), b"host version\n").unwrap();
    std::os::unix::fs::symlink("README", checkout.join("link")).unwrap();
    std::fs::set_permissions(
        checkout.join("src/nested"),
        std::fs::Permissions::from_mode(0o750),
    )
    .unwrap();
    // A directory swapped for a symlink to elsewhere: not followed.
    let outside = dir.path().join("outside");
    std::fs::create_dir(&outside).unwrap();
    std::fs::write(outside.join("secret"), b"never copied\n").unwrap();
    std::os::unix::fs::symlink(&outside, checkout.join("swapped")).unwrap();
    nix::unistd::mkfifo(
        &checkout.join("fifo"),
        nix::sys::stat::Mode::from_bits_truncate(0o644),
    )
    .unwrap();

    // What the client staged: the repository's own version of `changed`.
    let content = dir.path().join("content");
    std::fs::create_dir_all(content.join("repo")).unwrap();
    std::fs::write(content.join("repo/changed"), b"staged version\n").unwrap();

    let mut tree = Tree::new(Meta::root(0o700));
    tree.add_dir(&content, Owners::of_process()).unwrap();
    let section = Section {
        root: checkout.clone(),
        into: "repo".into(),
        paths: [
            "README",
            "changed",
            "fifo",
            "gone",
            "link",
            "src/nested/lib.rs",
            "swapped/secret",
        ]
        .iter()
        .map(PathBuf::from)
        .collect(),
        clean_before: None,
    };
    let added = tree.add_host_files(&section, Owners::of_process()).unwrap();
    assert_eq!(
        (added.files, added.shadowed, added.left_out),
        (3, 1, 3),
        "{added:?}"
    );

    // Swapped after the listing: the copy refuses to follow it either.
    std::fs::rename(checkout.join("src/nested"), checkout.join("src/moved")).unwrap();
    std::os::unix::fs::symlink(&outside, checkout.join("src/nested")).unwrap();
    std::fs::write(outside.join("lib.rs"), b"not this\n").unwrap();
    let out = dir.path().join("work.ext4");
    let options = WriteOptions {
        size: ByteSize::mib(64),
        min_inodes: 0,
        label: None,
        min_free: ByteSize(0),
    };
    let error = write_ext4(&tree, &out, &options).unwrap_err();
    assert!(
        matches!(&error, WriteExt4Error::Changed { path, .. } if path.ends_with("src/nested/lib.rs")),
        "{error}"
    );
    assert!(!out.exists());
    std::fs::remove_file(checkout.join("src/nested")).unwrap();
    std::fs::rename(checkout.join("src/moved"), checkout.join("src/nested")).unwrap();

    write_ext4(&tree, &out, &options).unwrap();
    util::assert_fsck_clean(&out);
    let read = |path: &str| banger_disk::read_file(&out, path).unwrap();
    assert_eq!(read("/repo/README"), b"readme\n");
    assert_eq!(read("/repo/changed"), b"staged version\n");
    assert_eq!(read("/repo/src/nested/lib.rs"), b"fn main() {}\n");
    assert_eq!(debugfs_stat(&out, "/repo/src/nested").mode, 0o750);
    assert_eq!(debugfs_stat(&out, "/repo/link").kind, "symlink");
    for absent in [
        "/repo/fifo",
        "/repo/gone",
        "/repo/swapped",
        "/repo/swapped/secret",
    ] {
        assert!(
            banger_disk::stat(&out, absent).unwrap().is_none(),
            "{absent}"
        );
    }
}

#[test]
fn edits_go_in_as_the_image_is_written() {
    use banger_disk::Ext4Edits;
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    std::fs::create_dir_all(src.join("old/dir")).unwrap();
    std::fs::write(src.join("old/file"), b"old\n").unwrap();
    std::fs::write(src.join(".gitconfig"), b"[user]\n").unwrap();
    let mut tree = Tree::new(Meta::root(0o700));
    tree.add_dir(&src, Owners::of_process()).unwrap();
    let mut edits = Ext4Edits::new();
    edits
        .chmod("/", 0o755)
        .unwrap()
        .mkdir_p("/.ssh/deeper", banger_disk::Meta::root(0o700))
        .unwrap()
        .write_file(
            "/.ssh/authorized_keys",
            "ssh-ed25519 AAAA key\n",
            banger_disk::Meta::new(0o600, 0, 0),
        )
        .unwrap()
        .write_file(
            "/.gitconfig",
            "[user]\n\tname = Me\n",
            banger_disk::Meta::root(0o644),
        )
        .unwrap()
        .symlink("/link", "/.ssh/authorized_keys", 0, 0)
        .unwrap()
        .chown("/old/file", 1000, 1000)
        .unwrap()
        .remove("/old/dir")
        .unwrap()
        .remove("/not/there")
        .unwrap();
    tree.apply_edits(&edits).unwrap();
    let out = dir.path().join("work.ext4");
    let options = WriteOptions {
        size: ByteSize::mib(64),
        min_inodes: 0,
        label: None,
        min_free: ByteSize(0),
    };
    write_ext4(&tree, &out, &options).unwrap();
    util::assert_fsck_clean(&out);
    assert_eq!(debugfs_stat(&out, "/").mode, 0o755);
    assert_eq!(
        debugfs_stat(&out, "/.ssh").mode,
        0o755,
        "a parent mkdir_p made"
    );
    assert_eq!(debugfs_stat(&out, "/.ssh/deeper").mode, 0o700);
    assert_eq!(
        banger_disk::read_file(&out, "/.ssh/authorized_keys").unwrap(),
        b"ssh-ed25519 AAAA key\n"
    );
    assert_eq!(
        banger_disk::read_file(&out, "/.gitconfig").unwrap(),
        b"[user]\n\tname = Me\n"
    );
    assert_eq!(debugfs_stat(&out, "/link").kind, "symlink");
    let owned = debugfs_stat(&out, "/old/file");
    assert_eq!((owned.uid, owned.gid), (1000, 1000));
    assert!(banger_disk::stat(&out, "/old/dir").unwrap().is_none());

    // A non-empty directory is not removed, as debugfs would not.
    let mut refused = Ext4Edits::new();
    refused.remove("/old").unwrap();
    assert!(tree.apply_edits(&refused).is_err());
}
