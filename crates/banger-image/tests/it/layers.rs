//! Layer semantics, applied for real: whiteouts, opaque directories, hard
//! links across layers, symlink chains, type replacement, ownership, modes,
//! mtimes and xattrs.

use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;

use banger_image::{ContentSize, UnpackError, UnpackOptions, Unpacker};

use crate::support::tarball::{Entry, Tarball, gzip, zstd};
use crate::support::{Sandbox, root_or_skip, tree};

/// Applies `layers` in order to the sandbox's staging directory.
pub(crate) fn apply(
    sandbox: &Sandbox,
    layers: &[Vec<u8>],
    options: UnpackOptions,
) -> Result<ContentSize, UnpackError> {
    let mut unpacker = Unpacker::create(&sandbox.staging(), options)?;
    for (index, layer) in layers.iter().enumerate() {
        let mut reader = std::io::BufReader::new(layer.as_slice());
        unpacker.apply_compressed(
            &format!("layer{index}"),
            &mut reader,
            Some(layer.len() as u64),
        )?;
    }
    unpacker.finish()
}

fn read(path: impl AsRef<Path>) -> String {
    String::from_utf8(std::fs::read(path).unwrap()).unwrap()
}

fn xattr(path: &Path, name: &str) -> Option<Vec<u8>> {
    let path = CString::new(path.as_os_str().as_bytes()).unwrap();
    let name = CString::new(name).unwrap();
    let mut buffer = vec![0u8; 256];
    // SAFETY: valid NUL-terminated strings and a buffer of the given length.
    let len = unsafe {
        libc::lgetxattr(
            path.as_ptr(),
            name.as_ptr(),
            buffer.as_mut_ptr().cast(),
            buffer.len(),
        )
    };
    if len < 0 {
        return None;
    }
    buffer.truncate(len as usize);
    Some(buffer)
}

#[test]
fn whiteouts_and_opaque_directories() {
    let sandbox = Sandbox::new();
    let mut lower = Tarball::new();
    lower
        .dir("etc")
        .file("etc/a", b"a1")
        .file("etc/b", b"b1")
        .dir("opt")
        .dir("opt/keep")
        .file("opt/keep/old", b"old")
        .file("opt/x", b"x")
        .dir("var/sub")
        .file("var/sub/f", b"f")
        .file("usr/bin/tool", b"tool");
    let mut upper = Tarball::new();
    upper
        .whiteout("etc/a")
        // Written and whited out in the same layer: whiteouts hide lower layers only.
        .file("etc/c", b"c2")
        .whiteout("etc/c")
        .file("opt/new", b"new")
        .opaque("opt")
        .dir("opt/keep")
        .file("opt/keep/new2", b"new2")
        .whiteout("var/sub")
        .whiteout("nothing/here");
    let size = apply(
        &sandbox,
        &[gzip(&lower.bytes()), zstd(&upper.bytes())],
        UnpackOptions::default(),
    )
    .unwrap();
    let staging = sandbox.staging();
    assert_eq!(
        tree(&staging),
        [
            "etc",
            "etc/b",
            "etc/c",
            "opt",
            "opt/keep",
            "opt/keep/new2",
            "opt/new",
            "usr",
            "usr/bin",
            "usr/bin/tool",
            "var",
        ]
    );
    assert_eq!(read(staging.join("etc/c")), "c2");
    assert_eq!(read(staging.join("opt/new")), "new");
    // The root and implied parents get ordinary directory modes.
    assert_eq!(std::fs::metadata(&staging).unwrap().mode() & 0o7777, 0o755);
    assert_eq!(
        std::fs::metadata(staging.join("usr/bin")).unwrap().mode() & 0o7777,
        0o755
    );
    assert_eq!(size.inodes, 12);
    assert_eq!(size.apparent_bytes, 2 + 2 + 3 + 4 + 4);
    sandbox.assert_untouched();
}

#[test]
fn opaque_marker_before_and_after_the_layers_own_entries() {
    let sandbox = Sandbox::new();
    let mut lower = Tarball::new();
    lower
        .dir("d/sub")
        .file("d/sub/old", b"o")
        .file("d/gone", b"g");
    let mut upper = Tarball::new();
    // The layer's own entries come before its opaque marker.
    upper.dir("d/sub").file("d/sub/mine", b"m").opaque("d");
    apply(
        &sandbox,
        &[lower.bytes(), upper.bytes()],
        UnpackOptions::default(),
    )
    .unwrap();
    assert_eq!(tree(&sandbox.staging()), ["d", "d/sub", "d/sub/mine"]);
}

#[test]
fn hard_links_across_layers() {
    let sandbox = Sandbox::new();
    let mut one = Tarball::new();
    one.file_with("bin/busybox", b"BB", 0o755, 0, 0, 1_600_000_000);
    let mut two = Tarball::new();
    two.hardlink("bin/sh", "bin/busybox")
        .dir("a")
        .hardlink("a/link", "./bin/busybox");
    let mut three = Tarball::new();
    // Replacing the file must not write through the links.
    three.file("bin/busybox", b"NEW");
    let size = apply(
        &sandbox,
        &[one.bytes(), gzip(&two.bytes()), three.bytes()],
        UnpackOptions::default(),
    )
    .unwrap();
    let staging = sandbox.staging();
    let sh = std::fs::metadata(staging.join("bin/sh")).unwrap();
    let link = std::fs::metadata(staging.join("a/link")).unwrap();
    assert_eq!(sh.ino(), link.ino());
    assert_eq!(sh.nlink(), 2);
    assert_eq!(read(staging.join("bin/sh")), "BB");
    assert_eq!(read(staging.join("bin/busybox")), "NEW");
    assert_ne!(
        std::fs::metadata(staging.join("bin/busybox"))
            .unwrap()
            .ino(),
        sh.ino()
    );
    // Hard-linked inodes count once: root, bin, a, sh/link, busybox.
    assert_eq!(size.inodes, 5);
}

#[test]
fn symlink_chains_and_writes_through_relative_links() {
    let sandbox = Sandbox::new();
    let mut one = Tarball::new();
    one.dir("usr/lib")
        .file("usr/lib/libc.so", b"c")
        .symlink("lib", "usr/lib")
        .symlink("lib64", "lib")
        .dir("etc")
        .symlink("etc/libc", "../usr/lib/libc.so")
        .symlink("etc/localtime", "/usr/share/zoneinfo/UTC")
        .symlink("dangling", "does/not/exist");
    let mut two = Tarball::new();
    // Through a chain of relative symlinks that stay inside the root.
    two.file("lib64/extra", b"e");
    apply(
        &sandbox,
        &[one.bytes(), two.bytes()],
        UnpackOptions::default(),
    )
    .unwrap();
    let staging = sandbox.staging();
    assert_eq!(read(staging.join("usr/lib/extra")), "e");
    assert_eq!(
        std::fs::read_link(staging.join("lib64")).unwrap(),
        Path::new("lib")
    );
    assert_eq!(
        std::fs::read_link(staging.join("etc/libc")).unwrap(),
        Path::new("../usr/lib/libc.so")
    );
    assert_eq!(read(staging.join("etc/libc")), "c");
    assert_eq!(
        std::fs::read_link(staging.join("etc/localtime")).unwrap(),
        Path::new("/usr/share/zoneinfo/UTC")
    );
    assert!(
        std::fs::symlink_metadata(staging.join("dangling"))
            .unwrap()
            .file_type()
            .is_symlink()
    );
    assert!(!staging.join("lib").symlink_metadata().unwrap().is_dir());
}

#[test]
fn type_replacement_between_layers() {
    let sandbox = Sandbox::new();
    let mut one = Tarball::new();
    one.file("x", b"file")
        .dir("y")
        .file("y/inner", b"i")
        .dir("usr")
        .symlink("z", "usr")
        .file("w", b"w");
    let mut two = Tarball::new();
    two.dir("x")
        .file("x/child", b"c")
        .file("y", b"now a file")
        .dir("z")
        .file("z/f", b"f")
        .symlink("w", "x/child");
    apply(
        &sandbox,
        &[one.bytes(), two.bytes()],
        UnpackOptions::default(),
    )
    .unwrap();
    let staging = sandbox.staging();
    assert!(
        std::fs::symlink_metadata(staging.join("x"))
            .unwrap()
            .is_dir()
    );
    assert_eq!(read(staging.join("x/child")), "c");
    assert_eq!(read(staging.join("y")), "now a file");
    assert!(
        std::fs::symlink_metadata(staging.join("z"))
            .unwrap()
            .is_dir()
    );
    assert!(
        !staging.join("usr/f").exists(),
        "a directory entry must replace a symlink, not follow it"
    );
    assert_eq!(
        std::fs::read_link(staging.join("w")).unwrap(),
        Path::new("x/child")
    );
}

#[test]
fn ownership_modes_mtimes_and_xattrs() {
    if !root_or_skip("ownership_modes_mtimes_and_xattrs") {
        return;
    }
    let sandbox = Sandbox::new();
    // VFS_CAP_REVISION_2 | effective, permitted = CAP_NET_RAW (13).
    let capability: Vec<u8> = [0x0200_0001u32, 1 << 13, 0, 0, 0]
        .iter()
        .flat_map(|word| word.to_le_bytes())
        .collect();
    let mut layer = Tarball::new();
    layer
        .dir_with("usr", 0o755, 0, 0, 1_111_111_111)
        .dir_with("usr/bin", 0o755, 0, 0, 1_234_567_890)
        .file_with("usr/bin/passwd", b"suid", 0o4755, 0, 0, 1_500_000_000)
        .file_with("usr/bin/wall", b"sgid", 0o2755, 0, 5, 1_500_000_000)
        .dir_with("tmp", 0o1777, 0, 0, 1_500_000_000)
        .dir_with("home/user", 0o700, 1000, 1000, 1_500_000_000)
        .file_with("home/user/secret", b"s", 0o640, 1000, 1001, 1_400_000_000)
        .entry(Entry {
            name: b"usr/bin/ping",
            data: b"ping",
            mode: 0o755,
            // The last two are skipped with a warning: the kernel refuses an
            // unknown namespace, and overlayfs xattrs are never applied.
            xattrs: &[
                ("security.capability", &capability),
                ("user.banger", b"yes"),
                ("bogus.namespace", b"x"),
                ("trusted.overlay.redirect", b"/etc"),
            ],
            ..Entry::default()
        })
        .entry(Entry {
            kind: tar::EntryType::Symlink,
            name: b"home/user/link",
            link: Some(b"secret"),
            uid: 1000,
            gid: 1000,
            mtime: 1_300_000_000,
            ..Entry::default()
        });
    apply(&sandbox, &[layer.bytes()], UnpackOptions::default()).unwrap();
    let staging = sandbox.staging();
    let meta = |path: &str| std::fs::symlink_metadata(staging.join(path)).unwrap();
    assert_eq!(meta("usr/bin/passwd").permissions().mode() & 0o7777, 0o4755);
    assert_eq!(meta("usr/bin/wall").permissions().mode() & 0o7777, 0o2755);
    assert_eq!(meta("usr/bin/wall").gid(), 5);
    assert_eq!(meta("tmp").permissions().mode() & 0o7777, 0o1777);
    assert_eq!(
        (meta("home/user").uid(), meta("home/user").gid()),
        (1000, 1000)
    );
    assert_eq!(meta("home/user").permissions().mode() & 0o7777, 0o700);
    let secret = meta("home/user/secret");
    assert_eq!(
        (secret.uid(), secret.gid(), secret.mode() & 0o7777),
        (1000, 1001, 0o640)
    );
    assert_eq!(secret.mtime(), 1_400_000_000);
    let link = meta("home/user/link");
    assert_eq!(
        (link.uid(), link.gid(), link.mtime()),
        (1000, 1000, 1_300_000_000)
    );
    // Directory mtimes survive the entries created in them afterwards.
    assert_eq!(meta("usr/bin").mtime(), 1_234_567_890);
    assert_eq!(meta("usr").mtime(), 1_111_111_111);
    assert_eq!(
        xattr(&staging.join("usr/bin/ping"), "security.capability"),
        Some(capability)
    );
    assert_eq!(
        xattr(&staging.join("usr/bin/ping"), "user.banger"),
        Some(b"yes".to_vec())
    );
    assert_eq!(
        xattr(&staging.join("usr/bin/ping"), "trusted.overlay.redirect"),
        None
    );
    assert_eq!(
        std::fs::read(staging.join("usr/bin/ping")).unwrap(),
        b"ping"
    );
}

/// Device nodes and FIFOs are never created, whoever unpacks: they are
/// counted, what a lower layer had at their path goes, and hard links to
/// them are skipped too; the rest of the layer applies.
#[test]
fn device_nodes_and_fifos_are_skipped_and_counted() {
    let sandbox = Sandbox::new();
    let mut lower = Tarball::new();
    lower
        .dir("dev")
        .file("dev/console", b"a file a lower layer had");
    let mut upper = Tarball::new();
    upper
        .device("dev/null", tar::EntryType::Char, 1, 3)
        .device("dev/console", tar::EntryType::Char, 5, 1)
        .device("dev/loop9", tar::EntryType::Block, 7, 9)
        .device("run/initctl", tar::EntryType::Fifo, 0, 0)
        .hardlink("dev/null-again", "dev/null")
        .file("etc/hostname", b"kept\n");
    let mut unpacker = Unpacker::create(&sandbox.staging(), UnpackOptions::default()).unwrap();
    let first = unpacker
        .apply_tar("lower", lower.bytes().as_slice(), None)
        .unwrap();
    assert_eq!(first.skipped_special, 0);
    let stats = unpacker
        .apply_tar("upper", upper.bytes().as_slice(), None)
        .unwrap();
    assert_eq!(stats.skipped_special, 5);
    assert_eq!(unpacker.skipped_special(), 5);
    unpacker.finish().unwrap();
    let staging = sandbox.staging();
    for gone in [
        "dev/null",
        "dev/console",
        "dev/loop9",
        "run/initctl",
        "dev/null-again",
    ] {
        assert!(
            std::fs::symlink_metadata(staging.join(gone)).is_err(),
            "{gone} exists"
        );
    }
    // A skipped node's parent is not made for it.
    assert!(!staging.join("run").exists());
    assert_eq!(
        std::fs::read(staging.join("etc/hostname")).unwrap(),
        b"kept\n"
    );
}

#[test]
fn content_size_counts_blocks_and_inodes() {
    let sandbox = Sandbox::new();
    let mut layer = Tarball::new();
    layer
        .file("big", &vec![7u8; 10_000])
        .file("empty", b"")
        .symlink("short", "big")
        .symlink("long", &"x".repeat(80));
    let size = apply(&sandbox, &[layer.bytes()], UnpackOptions::default()).unwrap();
    assert_eq!(size.inodes, 5);
    assert_eq!(size.apparent_bytes, 10_000);
    // big: 3 blocks, long symlink: 1 block, root directory: 1 block.
    assert_eq!(size.bytes, 5 * 4096);
}

#[test]
fn a_failed_unpack_removes_the_staging_directory() {
    let sandbox = Sandbox::new();
    let mut good = Tarball::new();
    good.file("a", b"a");
    let mut bad = Tarball::new();
    bad.file("b", b"b").file("../escape", b"x");
    let err = apply(
        &sandbox,
        &[good.bytes(), bad.bytes()],
        UnpackOptions::default(),
    )
    .unwrap_err();
    assert!(matches!(err, UnpackError::Refused { .. }), "{err}");
    assert!(!sandbox.staging().exists());
    sandbox.assert_untouched();
    // A corrupt (truncated) gzip stream fails too, and cleans up.
    let sandbox = Sandbox::new();
    let mut layer = gzip(&good.bytes());
    layer.truncate(layer.len() / 2);
    let err = apply(&sandbox, &[layer], UnpackOptions::default()).unwrap_err();
    assert!(matches!(err, UnpackError::Archive { .. }), "{err}");
    assert!(!sandbox.staging().exists());
}

#[test]
fn staging_must_not_exist() {
    let sandbox = Sandbox::new();
    std::fs::create_dir(sandbox.staging()).unwrap();
    std::fs::write(sandbox.staging().join("keep"), b"k").unwrap();
    let err = Unpacker::create(&sandbox.staging(), UnpackOptions::default()).unwrap_err();
    assert!(matches!(err, UnpackError::Staging { .. }), "{err}");
    // Someone else's directory is left alone.
    assert!(sandbox.staging().join("keep").exists());
}
