//! `Resolve::in_root`: the guest's view of its own root filesystem.

use std::ffi::OsStr;
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use banger_rootfs::{Dangling, MakeRoomError, Resolve, ResolveDirError};
use nix::sys::stat::{Mode, fchmod};

use crate::{Tree, make_dirs};

#[test]
fn absolute_symlinks_pointing_outside_resolve_inside_the_root() {
    let tree = Tree::new();
    let root = tree.root(Resolve::in_root());
    // /etc -> the host's real outside directory, /up -> /.
    tree.symlink(tree.outside(), "etc");
    tree.symlink("/", "up");

    make_dirs(&root, "/etc/ssh").expect("through an absolute link");
    let inside = tree.host(tree.outside().to_str().unwrap()).join("ssh");
    assert!(inside.is_dir(), "{} made inside the root", inside.display());

    make_dirs(&root, "/up/up/up/x").expect("through a link to /");
    assert!(tree.host("x").is_dir());

    // An absolute path naming the host's directory is the root's too.
    make_dirs(&root, tree.outside().join("y").to_str().unwrap()).expect("absolute path");
    assert!(
        tree.host(tree.outside().to_str().unwrap())
            .join("y")
            .is_dir()
    );
    tree.assert_outside_untouched();
}

#[test]
fn dotdot_chains_stop_at_the_root() {
    let tree = Tree::new();
    let root = tree.root(Resolve::in_root());
    tree.mkdir("a/b");
    tree.symlink("../../../../../../../outside", "a/b/up");
    tree.symlink("../../..", "a/b/top");

    make_dirs(&root, "/a/b/up/x").expect("through an escaping relative link");
    assert!(tree.host("outside/x").is_dir());
    make_dirs(&root, "/a/b/top/../../y").expect("a .. chain through a link");
    assert!(tree.host("y").is_dir());
    make_dirs(&root, "/../../../z").expect(".. in the path itself");
    assert!(tree.host("z").is_dir());
    make_dirs(&root, "a/../../../../w").expect("a relative path");
    assert!(tree.host("w").is_dir());
    tree.assert_outside_untouched();
}

#[test]
fn a_symlink_at_the_final_component_is_replaced_not_followed() {
    let tree = Tree::new();
    let root = tree.root(Resolve::in_root());
    tree.mkdir("etc");
    tree.symlink(tree.outside().join("keep"), "etc/passwd");
    tree.symlink("../../outside/keep", "etc/shadow");
    tree.symlink(tree.outside().join("new"), "etc/dangling");

    let etc = make_dirs(&root, "/etc").expect("etc");
    for name in ["passwd", "shadow", "dangling"] {
        let name = OsStr::new(name);
        // Without making room, O_EXCL refuses even a dangling symlink.
        let err = etc.create_file(name, Mode::from_bits_truncate(0o644));
        assert_eq!(
            err.expect_err("created over a symlink").kind(),
            std::io::ErrorKind::AlreadyExists
        );
        etc.make_room(name).expect("make room");
        let mut file = etc
            .create_file(name, Mode::from_bits_truncate(0o644))
            .expect("create");
        file.write_all(b"guest data").expect("write");
        let meta = std::fs::symlink_metadata(tree.host("etc").join(name)).expect("stat");
        assert!(meta.is_file(), "{name:?} is a regular file now");
    }
    etc.make_room(OsStr::new("passwd")).expect("make room");
    etc.symlink(OsStr::new("/outside/keep"), OsStr::new("passwd"))
        .expect("symlink");
    assert_eq!(
        std::fs::read_link(tree.host("etc/passwd")).expect("readlink"),
        Path::new("/outside/keep")
    );
    tree.assert_outside_untouched();
}

#[test]
fn symlink_loops_are_refused() {
    let tree = Tree::new();
    let root = tree.root(Resolve::in_root());
    tree.mkdir("usr");
    tree.symlink("/usr/local", "usr/local");
    tree.symlink("b", "a");
    tree.symlink("/a", "b");

    let err = make_dirs(&root, "/usr/local/bin").expect_err("self loop");
    assert!(
        matches!(&err, ResolveDirError::Loop { component } if component == Path::new("/usr/local")),
        "{err:?}"
    );
    let err = make_dirs(&root, "/a/x").expect_err("two-link loop");
    assert!(
        matches!(&err, ResolveDirError::Loop { component } if component == Path::new("/a")),
        "{err:?}"
    );
    assert!(err.to_string().contains("/a"), "{err}");
    tree.assert_outside_untouched();
}

#[test]
fn a_directory_or_a_file_in_the_way() {
    let tree = Tree::new();
    let root = tree.root(Resolve::in_root());
    tree.mkdir("etc/ssh/sshd_config.d/99-banger.conf");
    std::fs::write(tree.host("etc/ssh/sshd_config.d/99-banger.conf/x"), "x").unwrap();
    let dir = make_dirs(&root, "/etc/ssh/sshd_config.d").expect("dir");
    let err = dir
        .make_room(OsStr::new("99-banger.conf"))
        .expect_err("directory in the way");
    assert!(matches!(err, MakeRoomError::DirectoryInTheWay), "{err:?}");
    assert!(
        tree.host("etc/ssh/sshd_config.d/99-banger.conf/x")
            .is_file(),
        "the directory is left alone"
    );

    tree.mkdir("usr");
    std::fs::write(tree.host("usr/local"), "not a dir").unwrap();
    let err = make_dirs(&root, "/usr/local/bin").expect_err("file in the way");
    assert!(
        matches!(&err, ResolveDirError::NotADirectory { component } if component == Path::new("/usr/local")),
        "{err:?}"
    );
    // A symlink to a file is just as much in the way.
    tree.symlink("/usr/local", "opt");
    let err = make_dirs(&root, "/opt/bin").expect_err("link to a file in the way");
    assert!(
        matches!(&err, ResolveDirError::NotADirectory { component } if component == Path::new("/opt")),
        "{err:?}"
    );
    assert_eq!(
        std::fs::read_to_string(tree.host("usr/local")).unwrap(),
        "not a dir"
    );
}

#[test]
fn dangling_symlinks_are_refused_or_their_targets_made() {
    let tree = Tree::new();
    let root = tree.root(Resolve::in_root());
    tree.mkdir("usr");
    tree.symlink("/opt/local", "usr/local");
    let refuse = |path: &str| {
        root.make_dirs(
            Path::new(path),
            Mode::from_bits_truncate(0o755),
            Dangling::Refuse,
            |_, _| Ok(()),
        )
    };
    let err = refuse("/usr/local/bin").expect_err("dangling");
    assert!(
        matches!(&err, ResolveDirError::Dangling { component } if component == Path::new("/usr/local")),
        "{err:?}"
    );
    assert!(!tree.host("opt").exists());

    // Made: /opt/local through the link, then a chain of two links, one
    // relative, whose target climbs out.
    make_dirs(&root, "/usr/local/bin").expect("made through the link");
    assert!(tree.host("opt/local/bin").is_dir());
    tree.symlink("../srv/data", "usr/share");
    tree.symlink("../../../../outside/srv", "srv");
    make_dirs(&root, "/usr/share/x").expect("made through two links");
    assert!(tree.host("outside/srv/data/x").is_dir());
    tree.assert_outside_untouched();

    let err = root.dir(Path::new("/var/www")).expect_err("missing");
    assert!(
        matches!(&err, ResolveDirError::Missing { component } if component == Path::new("/var")),
        "{err:?}"
    );
    tree.symlink("/nowhere", "var");
    let err = root.dir(Path::new("/var/www")).expect_err("dangling");
    assert!(
        matches!(&err, ResolveDirError::Missing { component } if component == Path::new("/var")),
        "{err:?}"
    );
    assert!(!tree.host("nowhere").exists(), "dir makes nothing");
}

#[test]
fn made_directories_are_reported_in_order_and_existing_ones_kept() {
    let tree = Tree::new();
    let root = tree.root(Resolve::in_root());
    tree.mkdir("a");
    std::fs::set_permissions(tree.host("a"), std::fs::Permissions::from_mode(0o750)).unwrap();
    tree.symlink("/a", "link");

    let mut made = Vec::new();
    root.make_dirs(
        Path::new("/link/b/c"),
        Mode::from_bits_truncate(0o700),
        Dangling::Refuse,
        |path, fd| {
            made.push(path.to_owned());
            fchmod(fd, Mode::from_bits_truncate(0o711))?;
            Ok(())
        },
    )
    .expect("make");
    assert_eq!(made, [Path::new("/link/b"), Path::new("/link/b/c")]);
    let mode = |path: &str| {
        std::fs::metadata(tree.host(path))
            .unwrap()
            .permissions()
            .mode()
            & 0o7777
    };
    assert_eq!(mode("a"), 0o750, "an existing directory keeps its mode");
    assert_eq!(mode("a/b"), 0o711);
    assert_eq!(mode("a/b/c"), 0o711);

    // A failing callback fails the call, naming the directory.
    let err = root
        .make_dirs(
            Path::new("/d"),
            Mode::from_bits_truncate(0o755),
            Dangling::Refuse,
            |_, _| Err(std::io::Error::other("no")),
        )
        .expect_err("callback error");
    assert!(
        matches!(&err, ResolveDirError::Io { component, .. } if component == Path::new("/d")),
        "{err:?}"
    );
}
