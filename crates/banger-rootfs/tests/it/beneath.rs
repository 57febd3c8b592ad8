//! `Resolve::beneath`: anything that would leave the root is refused.

use std::path::Path;

use banger_rootfs::{Resolve, ResolveDirError};

use crate::{Tree, make_dirs};

fn escapes(result: Result<banger_rootfs::Dir, ResolveDirError>, component: &str) {
    match result {
        Err(ResolveDirError::Escapes { component: named }) => {
            assert_eq!(named, Path::new(component));
        }
        other => panic!("expected an escape at {component}, got {other:?}"),
    }
}

#[test]
fn absolute_symlinks_and_dotdot_out_are_refused() {
    let tree = Tree::new();
    let root = tree.root(Resolve::beneath().no_xdev());
    tree.symlink(tree.outside(), "esc");
    tree.symlink("/", "slash");
    tree.mkdir("a/b");
    tree.symlink("../../../outside", "a/b/up");

    escapes(make_dirs(&root, "esc/x"), "esc");
    escapes(make_dirs(&root, "slash/x"), "slash");
    escapes(make_dirs(&root, "a/b/up/x"), "a/b/up");
    escapes(make_dirs(&root, "../outside/x"), "..");
    escapes(make_dirs(&root, "/x"), "/");
    escapes(root.dir(Path::new("esc")), "esc");
    tree.assert_outside_untouched();
}

#[test]
fn relative_symlinks_inside_are_followed() {
    let tree = Tree::new();
    let root = tree.root(Resolve::beneath());
    tree.mkdir("usr/lib");
    tree.symlink("usr/lib", "lib");
    tree.symlink("lib", "lib64");
    tree.mkdir("etc");
    tree.symlink("../usr/lib", "etc/up");

    make_dirs(&root, "lib64/x").expect("chain");
    make_dirs(&root, "etc/up/y/z").expect("relative ..");
    make_dirs(&root, "etc/../usr/w").expect(".. staying inside");
    assert!(tree.host("usr/lib/x").is_dir());
    assert!(tree.host("usr/lib/y/z").is_dir());
    assert!(tree.host("usr/w").is_dir());
    tree.assert_outside_untouched();
}

#[test]
fn no_symlinks_refuses_every_symlink() {
    let tree = Tree::new();
    let root = tree.root(Resolve::beneath().no_symlinks());
    tree.mkdir("usr/lib");
    tree.symlink("usr/lib", "lib");
    root.dir(Path::new("usr/lib")).expect("plain directories");
    let err = root.dir(Path::new("lib")).expect_err("a symlink");
    assert!(
        matches!(&err, ResolveDirError::Loop { component } if component == Path::new("lib")),
        "{err:?}"
    );
}
