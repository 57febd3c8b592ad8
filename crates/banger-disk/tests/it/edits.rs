//! debugfs edits, read back three ways: the crate's own `stat`/`read_file`,
//! debugfs's human `stat`, and (as root) a real mount.

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use banger_disk::edits::{ApplyEditsError, FileKind};
use banger_disk::{
    Ext4BuildOptions, Ext4Edits, Meta, MountedExt4, apply_edits, build_ext4_from_dir, read_file,
    stat,
};

use crate::util::{self, require_root};

/// A small rootfs-like image with /etc, /etc/motd, a symlink and /root.
fn image(dir: &Path) -> PathBuf {
    let tree = dir.join("tree");
    std::fs::create_dir_all(tree.join("etc")).unwrap();
    std::fs::create_dir_all(tree.join("root")).unwrap();
    std::fs::write(tree.join("etc/motd"), b"old motd\n").unwrap();
    std::fs::write(tree.join("etc/hostname"), b"template\n").unwrap();
    std::os::unix::fs::symlink("/etc/motd", tree.join("etc/motd.link")).unwrap();
    std::fs::set_permissions(tree.join("root"), std::fs::Permissions::from_mode(0o700)).unwrap();
    let out = dir.join("rootfs.ext4");
    build_ext4_from_dir(&tree, &out, &Ext4BuildOptions::default()).unwrap();
    out
}

const WEIRD: &str = "/root/dir with \"quotes\" and spaces/fi\\le #1;'x'";

fn the_edits() -> Ext4Edits {
    let mut edits = Ext4Edits::new();
    edits
        .mkdir_p("/root/.ssh", Meta::root(0o700))
        .unwrap()
        .write_file(
            "/root/.ssh/authorized_keys",
            "ssh-ed25519 AAAA test@host\n",
            Meta::root(0o600),
        )
        .unwrap()
        .write_file("/etc/hostname", "vm-one\n", Meta::root(0o644))
        .unwrap()
        .chmod("/root", 0o755)
        .unwrap()
        .mkdir_p(
            "/root/dir with \"quotes\" and spaces",
            Meta::new(0o750, 1000, 1000),
        )
        .unwrap()
        .write_file(WEIRD, vec![0u8, 1, 2, 255], Meta::new(0o4711, 70_000, 1234))
        .unwrap()
        .symlink("/etc/motd.link", "/etc/hostname", 0, 0)
        .unwrap()
        .symlink(
            "/root/link to weird",
            "dir with \"quotes\" and spaces",
            1000,
            1000,
        )
        .unwrap()
        .remove("/etc/motd")
        .unwrap()
        .remove("/does/not/exist")
        .unwrap()
        .chown("/etc", 0, 4)
        .unwrap()
        .mkdir_p("/var/lib/banger/deep", Meta::root(0o711))
        .unwrap()
        // The root directory itself (a work disk's root is the guest's /root).
        .mkdir_p("/", Meta::new(0o751, 0, 0))
        .unwrap();
    edits
}

#[test]
fn edits_apply_in_one_run_and_read_back() {
    let dir = tempfile::tempdir().unwrap();
    let image = image(dir.path());
    apply_edits(&image, &the_edits()).unwrap();
    util::assert_fsck_clean(&image);

    assert_eq!(
        read_file(&image, "/root/.ssh/authorized_keys").unwrap(),
        b"ssh-ed25519 AAAA test@host\n"
    );
    assert_eq!(read_file(&image, "/etc/hostname").unwrap(), b"vm-one\n");
    assert_eq!(read_file(&image, WEIRD).unwrap(), vec![0u8, 1, 2, 255]);

    let ssh = stat(&image, "/root/.ssh").unwrap().unwrap();
    assert_eq!(
        (ssh.kind, ssh.mode, ssh.uid, ssh.gid),
        (FileKind::Directory, 0o700, 0, 0)
    );
    let keys = stat(&image, "/root/.ssh/authorized_keys").unwrap().unwrap();
    assert_eq!(
        (keys.kind, keys.mode, keys.size),
        (FileKind::Regular, 0o600, 27)
    );
    let root = stat(&image, "/root").unwrap().unwrap();
    assert_eq!((root.kind, root.mode), (FileKind::Directory, 0o755));
    let weird = stat(&image, WEIRD).unwrap().unwrap();
    assert_eq!((weird.mode, weird.uid, weird.gid), (0o4711, 70_000, 1234));
    let link = stat(&image, "/etc/motd.link").unwrap().unwrap();
    assert_eq!(link.kind, FileKind::Symlink);
    assert_eq!(stat(&image, "/etc/motd").unwrap(), None);
    let etc = stat(&image, "/etc").unwrap().unwrap();
    assert_eq!((etc.mode, etc.uid, etc.gid), (0o755, 0, 4));
    let deep = stat(&image, "/var/lib/banger/deep").unwrap().unwrap();
    assert_eq!(deep.mode, 0o711);
    let top = stat(&image, "/").unwrap().unwrap();
    assert_eq!(
        (top.kind, top.mode, top.uid),
        (FileKind::Directory, 0o751, 0)
    );
    let parent = stat(&image, "/var/lib").unwrap().unwrap();
    assert_eq!((parent.kind, parent.mode), (FileKind::Directory, 0o755));

    // debugfs's own account agrees.
    let independent = util::debugfs_stat(&image, WEIRD);
    assert_eq!(
        (
            independent.kind.as_str(),
            independent.mode,
            independent.uid,
            independent.gid
        ),
        ("regular", 0o4711, 70_000, 1234)
    );
    assert_eq!(util::debugfs_stat(&image, "/root/.ssh").mode, 0o700);

    // Applying the same batch again is fine (replace, not duplicate).
    apply_edits(&image, &the_edits()).unwrap();
    util::assert_fsck_clean(&image);
    assert_eq!(read_file(&image, "/etc/hostname").unwrap(), b"vm-one\n");
}

#[test]
fn mounted_view_matches() {
    require_root!();
    let dir = tempfile::tempdir().unwrap();
    let image = image(dir.path());
    apply_edits(&image, &the_edits()).unwrap();
    let mounted = MountedExt4::ext4(&image, true).unwrap();
    let root = mounted.path();
    let weird = root.join(WEIRD.trim_start_matches('/'));
    let meta = std::fs::symlink_metadata(&weird).unwrap();
    assert_eq!(
        (meta.mode() & 0o7777, meta.uid(), meta.gid()),
        (0o4711, 70_000, 1234)
    );
    assert_eq!(std::fs::read(&weird).unwrap(), vec![0u8, 1, 2, 255]);
    assert_eq!(
        std::fs::read_link(root.join("root/link to weird")).unwrap(),
        Path::new("dir with \"quotes\" and spaces")
    );
    assert_eq!(
        std::fs::read_link(root.join("etc/motd.link")).unwrap(),
        Path::new("/etc/hostname")
    );
    assert_eq!(
        std::fs::symlink_metadata(root.join("root/link to weird"))
            .unwrap()
            .uid(),
        1000
    );
    assert_eq!(
        std::fs::metadata(root.join("root/.ssh")).unwrap().mode() & 0o7777,
        0o700
    );
    assert!(!root.join("etc/motd").exists());
    mounted.unmount().unwrap();
    assert!(util::loops_under(dir.path()).is_empty());
}

#[test]
fn failures_name_the_problem_and_change_nothing_planned_later() {
    let dir = tempfile::tempdir().unwrap();
    let image = image(dir.path());

    let mut missing_parent = Ext4Edits::new();
    missing_parent
        .write_file("/nope/file", "x", Meta::root(0o644))
        .unwrap();
    let error = apply_edits(&image, &missing_parent).unwrap_err();
    assert!(matches!(error, ApplyEditsError::Command { .. }), "{error}");
    assert!(error.to_string().contains("/nope"), "{error}");

    let mut chmod_missing = Ext4Edits::new();
    chmod_missing.chmod("/nope", 0o600).unwrap();
    assert!(matches!(
        apply_edits(&image, &chmod_missing),
        Err(ApplyEditsError::NotFound { .. })
    ));

    let mut through_file = Ext4Edits::new();
    through_file
        .mkdir_p("/etc/motd/sub", Meta::root(0o755))
        .unwrap();
    let error = apply_edits(&image, &through_file).unwrap_err();
    assert!(
        matches!(&error, ApplyEditsError::NotADirectory { path, .. } if path == "/etc/motd"),
        "{error}"
    );

    let mut over_dir = Ext4Edits::new();
    over_dir.write_file("/etc", "x", Meta::root(0o644)).unwrap();
    assert!(matches!(
        apply_edits(&image, &over_dir),
        Err(ApplyEditsError::IsADirectory { .. })
    ));

    let mut not_empty = Ext4Edits::new();
    not_empty.remove("/etc").unwrap();
    let error = apply_edits(&image, &not_empty).unwrap_err();
    assert!(matches!(error, ApplyEditsError::Command { .. }), "{error}");

    util::assert_fsck_clean(&image);
    assert_eq!(read_file(&image, "/etc/motd").unwrap(), b"old motd\n");

    let junk = dir.path().join("junk.img");
    std::fs::write(&junk, vec![0u8; 1 << 20]).unwrap();
    let mut edits = Ext4Edits::new();
    edits.write_file("/x", "x", Meta::root(0o644)).unwrap();
    let error = apply_edits(&junk, &edits).unwrap_err();
    assert!(matches!(error, ApplyEditsError::Open { .. }), "{error}");

    assert!(matches!(
        read_file(&image, "/etc"),
        Err(banger_disk::edits::ReadExt4Error::NotAFile { .. })
    ));
    assert!(matches!(
        read_file(&image, "/missing"),
        Err(banger_disk::edits::ReadExt4Error::NotFound { .. })
    ));
}

#[test]
fn many_edits_in_one_batch() {
    let dir = tempfile::tempdir().unwrap();
    let image = image(dir.path());
    let mut edits = Ext4Edits::new();
    edits.mkdir_p("/data", Meta::root(0o755)).unwrap();
    for index in 0..300 {
        edits
            .write_file(
                &format!("/data/file {index}"),
                format!("content {index}\n"),
                Meta::new(0o640, index, index),
            )
            .unwrap();
    }
    apply_edits(&image, &edits).unwrap();
    util::assert_fsck_clean(&image);
    assert_eq!(
        read_file(&image, "/data/file 299").unwrap(),
        b"content 299\n"
    );
    let last = stat(&image, "/data/file 299").unwrap().unwrap();
    assert_eq!((last.mode, last.uid, last.gid), (0o640, 299, 299));
}
