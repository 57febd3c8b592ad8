//! `Dir`'s entry operations.

use std::ffi::OsStr;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use banger_rootfs::{Resolve, is_dir};
use nix::sys::stat::Mode;

use crate::{Tree, make_dirs};

#[test]
fn remove_never_follows_symlinks() {
    let tree = Tree::new();
    let root = tree.root(Resolve::in_root());
    tree.mkdir("d/e");
    tree.symlink(tree.outside(), "d/to-dir");
    tree.symlink(tree.outside().join("keep"), "d/e/to-file");
    std::fs::write(tree.host("d/e/f"), "x").unwrap();

    let top = root.dir(Path::new("/")).expect("root dir");
    assert!(top.remove(OsStr::new("d")).expect("remove"));
    assert!(!tree.host("d").exists());
    assert!(!top.remove(OsStr::new("d")).expect("remove again"));
    tree.assert_outside_untouched();
}

#[test]
fn entries_are_made_and_inspected_without_following() {
    let tree = Tree::new();
    let root = tree.root(Resolve::in_root());
    tree.symlink(tree.outside(), "link");
    let top = make_dirs(&root, "/").expect("root dir");

    let stat = top.lstat(OsStr::new("link")).unwrap().expect("exists");
    assert!(!is_dir(&stat), "lstat sees the symlink, not the directory");
    assert!(top.lstat(OsStr::new("missing")).unwrap().is_none());
    let err = top.open_dir(OsStr::new("link")).expect_err("a symlink");
    assert_eq!(err.raw_os_error(), Some(nix::libc::ENOTDIR));

    top.mkdir(OsStr::new("sub"), Mode::from_bits_truncate(0o755))
        .unwrap();
    let sub = top.open_dir(OsStr::new("sub")).expect("sub");
    drop(
        sub.create_file(OsStr::new("file"), Mode::from_bits_truncate(0o600))
            .unwrap(),
    );
    top.hard_link(OsStr::new("again"), &sub, OsStr::new("file"))
        .expect("hard link");
    assert_eq!(std::fs::metadata(tree.host("again")).unwrap().nlink(), 2);
    let mut names = top.list().unwrap();
    names.sort();
    assert_eq!(names, ["again", "link", "sub"]);

    if nix::unistd::geteuid().is_root() {
        let nobody = nix::unistd::Uid::from_raw(65534);
        top.chown(
            OsStr::new("link"),
            nobody,
            nix::unistd::Gid::from_raw(65534),
        )
        .expect("chown");
        assert_eq!(
            std::fs::symlink_metadata(tree.host("link")).unwrap().uid(),
            65534
        );
        assert_eq!(
            std::fs::metadata(tree.outside()).unwrap().uid(),
            0,
            "the link's target keeps its owner"
        );
    }
    tree.assert_outside_untouched();
}

#[test]
fn names_must_be_single_components() {
    let tree = Tree::new();
    let root = tree.root(Resolve::in_root());
    tree.mkdir("a");
    tree.symlink(tree.outside(), "a/out");
    let top = make_dirs(&root, "/").expect("root dir");
    for bad in ["a/out/pwned", "", ".", "..", "/etc"] {
        let err = top
            .create_file(OsStr::new(bad), Mode::from_bits_truncate(0o644))
            .expect_err(bad);
        assert_eq!(err.kind(), std::io::ErrorKind::InvalidInput, "{bad:?}");
        assert!(top.remove(OsStr::new(bad)).is_err(), "{bad:?}");
        assert!(top.lstat(OsStr::new(bad)).is_err(), "{bad:?}");
    }
    tree.assert_outside_untouched();
}
