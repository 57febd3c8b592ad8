//! Shared helpers: root checks, external tools, scratch filesystems.

use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use banger_disk::loopdev;
use banger_disk::{FsType, MountedImage};

/// Skips the calling test (with a printed reason) unless running as root.
macro_rules! require_root {
    () => {
        if !banger_testkit::root_or_skip(
            std::thread::current()
                .name()
                .unwrap_or("a banger-disk test"),
            "loop devices, mounts",
        ) {
            return;
        }
    };
}
pub(crate) use require_root;

/// Runs a tool; panics with its output when it fails.
pub(crate) fn run(program: &str, args: &[&str]) -> String {
    let output = Command::new(program)
        .args(args)
        .env("LC_ALL", "C")
        .output()
        .unwrap_or_else(|error| panic!("cannot run {program}: {error}"));
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(output.status.success(), "{program} {args:?} failed: {text}");
    text
}

pub(crate) fn path_str(path: &Path) -> &str {
    path.to_str().expect("test paths are UTF-8")
}

/// `e2fsck -fn` must report a clean filesystem.
pub(crate) fn assert_fsck_clean(image: &Path) {
    let output = Command::new("e2fsck")
        .args(["-fn", path_str(image)])
        .env("LC_ALL", "C")
        .output()
        .expect("e2fsck runs");
    assert!(
        output.status.success(),
        "e2fsck -fn {} is not clean:\n{}{}",
        image.display(),
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

/// A field of `dumpe2fs -h`.
pub(crate) fn dumpe2fs_field(image: &Path, field: &str) -> String {
    let output = run("dumpe2fs", &["-h", path_str(image)]);
    output
        .lines()
        .find_map(|line| line.strip_prefix(&format!("{field}:")))
        .unwrap_or_else(|| panic!("dumpe2fs has no {field}: {output}"))
        .trim()
        .to_owned()
}

/// What `debugfs -R "stat PATH"` says: (mode bits as printed, uid, gid, links, type).
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct DebugfsStat {
    pub(crate) kind: String,
    pub(crate) mode: u32,
    pub(crate) uid: u32,
    pub(crate) gid: u32,
    pub(crate) links: u32,
    pub(crate) inode: u64,
}

/// Independent of the crate's own `inode_dump` parser: reads debugfs's
/// human-readable `stat`.
pub(crate) fn debugfs_stat(image: &Path, path: &str) -> DebugfsStat {
    let request = format!("stat \"{}\"", path.replace('"', "\"\""));
    let output = run("debugfs", &["-R", &request, path_str(image)]);
    let field = |name: &str| -> String {
        let start = output
            .find(name)
            .unwrap_or_else(|| panic!("no {name} in debugfs stat of {path}: {output}"));
        output[start + name.len()..]
            .split_whitespace()
            .next()
            .unwrap()
            .to_owned()
    };
    DebugfsStat {
        kind: field("Type:"),
        mode: u32::from_str_radix(&field("Mode:"), 8).unwrap(),
        uid: field("User:").parse().unwrap(),
        gid: field("Group:").parse().unwrap(),
        links: field("Links:").parse().unwrap(),
        inode: field("Inode:").parse().unwrap(),
    }
}

/// A sparse file of `size` with a few data blocks, like a disk image.
pub(crate) fn sparse_image(path: &Path, size: u64) {
    let file = std::fs::File::create(path).unwrap();
    file.set_len(size).unwrap();
    let block = vec![0x5au8; 1 << 20];
    for offset in [0, size / 3, size / 2, size - (1 << 20)] {
        file.write_all_at(&block, offset).unwrap();
    }
    file.sync_all().unwrap();
}

/// Loop devices still backed by files under `dir`: must be none when a
/// test is done.
pub(crate) fn loops_under(dir: &Path) -> Vec<loopdev::LoopInfo> {
    loopdev::list_backed_under(dir).unwrap()
}

/// Whether anything is mounted at or below `dir`.
pub(crate) fn mounted_under(dir: &Path) -> Vec<String> {
    let dir = std::fs::canonicalize(dir).unwrap_or_else(|_| dir.to_owned());
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    mountinfo
        .lines()
        .filter_map(|line| line.split(' ').nth(4))
        .filter(|target| Path::new(target).starts_with(&dir))
        .map(str::to_owned)
        .collect()
}

/// A btrfs or xfs filesystem on a sparse file, loop-mounted in a temp dir:
/// somewhere reflinks work. Unmounted and detached on drop.
pub(crate) struct ScratchFs {
    // Field order matters: unmount before the temp dir goes.
    pub(crate) mount: Option<MountedImage>,
    _dir: tempfile::TempDir,
}

impl ScratchFs {
    pub(crate) fn new(fstype: FsType, size: u64) -> Self {
        let dir = tempfile::Builder::new()
            .prefix("banger-disk-scratch-")
            .tempdir()
            .unwrap();
        let image = dir.path().join(format!("scratch.{}", fstype.as_str()));
        let file = std::fs::File::create(&image).unwrap();
        file.set_len(size).unwrap();
        drop(file);
        match fstype {
            FsType::Btrfs => run("mkfs.btrfs", &["-q", "-f", path_str(&image)]),
            FsType::Xfs => run("mkfs.xfs", &["-q", "-f", path_str(&image)]),
            FsType::Ext4 => run("mkfs.ext4", &["-q", "-F", path_str(&image)]),
        };
        let mount = MountedImage::mount(&image, fstype, false, dir.path()).unwrap();
        Self {
            mount: Some(mount),
            _dir: dir,
        }
    }

    /// The mounted filesystem's root.
    pub(crate) fn root(&self) -> PathBuf {
        self.mount.as_ref().unwrap().path().to_owned()
    }
}

impl Drop for ScratchFs {
    fn drop(&mut self) {
        if let Some(mount) = self.mount.take() {
            mount.unmount().unwrap();
        }
    }
}

/// FIEMAP through `filefrag -v`: whether every extent of the file is
/// marked shared.
pub(crate) fn all_extents_shared(path: &Path) -> bool {
    let output = run("filefrag", &["-v", path_str(path)]);
    let extents: Vec<&str> = output
        .lines()
        .filter(|line| {
            line.trim_start()
                .chars()
                .next()
                .is_some_and(|c| c.is_ascii_digit())
                && line.contains(':')
        })
        .collect();
    !extents.is_empty() && extents.iter().all(|line| line.contains("shared"))
}
