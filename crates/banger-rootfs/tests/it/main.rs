//! banger-rootfs against real directory trees: a root with hostile symlinks
//! next to an `outside` directory that must never be written.

mod beneath;
mod dir;
mod in_root;

use std::path::{Path, PathBuf};

use banger_rootfs::{Resolve, Root};

/// `root/` and a sibling `outside/` holding one file, in a temporary
/// directory.
struct Tree {
    dir: tempfile::TempDir,
}

impl Tree {
    fn new() -> Tree {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::create_dir(dir.path().join("root")).expect("root");
        std::fs::create_dir(dir.path().join("outside")).expect("outside");
        std::fs::write(dir.path().join("outside/keep"), "host data").expect("keep");
        Tree { dir }
    }

    fn root_path(&self) -> PathBuf {
        self.dir.path().join("root")
    }

    /// The host path of `path` under the root, without resolving anything.
    fn host(&self, path: &str) -> PathBuf {
        self.root_path().join(path.trim_start_matches('/'))
    }

    /// The absolute host path of the outside directory.
    fn outside(&self) -> PathBuf {
        self.dir.path().join("outside")
    }

    fn root(&self, resolve: Resolve) -> Root {
        Root::open(&self.root_path(), resolve).expect("open root")
    }

    fn mkdir(&self, path: &str) {
        std::fs::create_dir_all(self.host(path)).expect("mkdir");
    }

    fn symlink(&self, target: impl AsRef<Path>, link: &str) {
        std::os::unix::fs::symlink(target, self.host(link)).expect("symlink");
    }

    /// Nothing but `keep`, unchanged, is outside the root.
    fn assert_outside_untouched(&self) {
        let names: Vec<_> = std::fs::read_dir(self.outside())
            .expect("outside")
            .map(|entry| entry.expect("entry").file_name())
            .collect();
        assert_eq!(names, ["keep"], "something was made outside the root");
        assert_eq!(
            std::fs::read_to_string(self.outside().join("keep")).expect("keep"),
            "host data"
        );
        let siblings = std::fs::read_dir(self.dir.path()).expect("tempdir").count();
        assert_eq!(siblings, 2, "something was made next to the root");
    }
}

/// `make_dirs` with mode 0755, making the targets of dangling symlinks,
/// and no callback work.
fn make_dirs(
    root: &Root,
    path: &str,
) -> Result<banger_rootfs::Dir, banger_rootfs::ResolveDirError> {
    root.make_dirs(
        Path::new(path),
        nix::sys::stat::Mode::from_bits_truncate(0o755),
        banger_rootfs::Dangling::MakeTarget,
        |_, _| Ok(()),
    )
}
