//! Reading the working tree without ever leaving it.
//!
//! Every path is opened relative to a descriptor of the repository's top
//! directory: parent directories through `banger-rootfs`'s `openat2` with
//! `RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS`, the last component without
//! following it. A
//! directory replaced by a symlink (to `/etc`, to `../..`) is therefore
//! never read through: a tracked path beneath it is, as git sees it too,
//! gone from the working tree, and the symlink itself travels as a symlink.
//! Device nodes and FIFOs are never opened.

use std::ffi::{OsStr, OsString};
use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};

use banger_rootfs::{Dir, Resolve, ResolveDirError, Root};
use nix::errno::Errno;
use nix::fcntl::{AtFlags, OFlag, openat, readlinkat};
use nix::sys::stat::{FileStat, Mode, SFlag, fstat, fstatat};

/// Deepest directory tree [`Tree::walk`] descends.
const MAX_DEPTH: usize = 512;

/// What a path of the working tree is, read without following symlinks.
#[derive(Debug)]
pub enum Entry {
    /// A regular file, opened for reading.
    File {
        file: File,
        stat: FileStat,
    },
    /// A symlink and its target (never followed).
    Symlink {
        target: OsString,
        stat: FileStat,
    },
    Dir {
        stat: FileStat,
    },
    /// A device node, FIFO or socket: never opened, never copied.
    Special {
        kind: &'static str,
    },
    /// Not in the working tree: missing, or beneath a symlink or a file.
    Gone,
}

/// Why a path of the working tree cannot be read.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    #[error("{0} is not readable")]
    Unreadable(PathBuf),
    #[error("{path} changed while it was read")]
    Changed { path: PathBuf },
    #[error("reading {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

/// The working tree under a repository's top directory.
#[derive(Debug)]
pub struct Tree {
    top: PathBuf,
    root: Root,
}

impl Tree {
    pub fn open(top: &Path) -> Result<Self, ReadError> {
        // Beneath the top, and no symlinks at all: git does not follow a
        // symlink to a directory either.
        let resolve = Resolve::beneath().no_symlinks();
        let root = Root::open(top, resolve).map_err(|source| ReadError::Io {
            path: top.to_owned(),
            source,
        })?;
        Ok(Self {
            top: top.to_owned(),
            root,
        })
    }

    /// The entry at `relative` (a path as git prints it: no `..`, no
    /// leading `/`).
    pub fn entry(&self, relative: &Path) -> Result<Entry, ReadError> {
        let Some(name) = relative.file_name() else {
            return Ok(Entry::Gone);
        };
        if relative.is_absolute()
            || relative
                .components()
                .any(|part| !matches!(part, std::path::Component::Normal(_)))
        {
            return Ok(Entry::Gone);
        }
        let parent = match relative.parent() {
            Some(parent) if !parent.as_os_str().is_empty() => parent,
            _ => Path::new("."),
        };
        let dir = match self.root.dir(parent) {
            Ok(dir) => dir,
            Err(ResolveDirError::Io { source, .. }) => {
                return Err(read_error(&self.top.join(parent), source));
            }
            // Missing, beneath a symlink, or beneath a file: not in the tree.
            Err(_) => return Ok(Entry::Gone),
        };
        self.entry_in(&dir, name, relative)
    }

    fn entry_in(&self, dir: &Dir, name: &OsStr, relative: &Path) -> Result<Entry, ReadError> {
        let full = || self.top.join(relative);
        let stat = match fstatat(dir, name, AtFlags::AT_SYMLINK_NOFOLLOW) {
            Ok(stat) => stat,
            Err(Errno::ENOENT | Errno::ENOTDIR) => return Ok(Entry::Gone),
            Err(Errno::EACCES) => return Err(ReadError::Unreadable(full())),
            Err(errno) => return Err(io_error(&full(), errno)),
        };
        match kind(&stat) {
            SFlag::S_IFREG => {
                let flags =
                    OFlag::O_RDONLY | OFlag::O_NOFOLLOW | OFlag::O_NOCTTY | OFlag::O_CLOEXEC;
                let fd = match openat(dir, name, flags, Mode::empty()) {
                    Ok(fd) => fd,
                    Err(Errno::EACCES | Errno::EPERM) => {
                        return Err(ReadError::Unreadable(full()));
                    }
                    Err(Errno::ENOENT | Errno::ELOOP) => {
                        return Err(ReadError::Changed { path: full() });
                    }
                    Err(errno) => return Err(io_error(&full(), errno)),
                };
                let opened = fstat(&fd).map_err(|errno| io_error(&full(), errno))?;
                if opened.st_ino != stat.st_ino
                    || opened.st_dev != stat.st_dev
                    || kind(&opened) != SFlag::S_IFREG
                {
                    return Err(ReadError::Changed { path: full() });
                }
                Ok(Entry::File {
                    file: File::from(fd),
                    stat: opened,
                })
            }
            SFlag::S_IFLNK => match readlinkat(dir, name) {
                Ok(target) => Ok(Entry::Symlink { target, stat }),
                Err(Errno::EINVAL | Errno::ENOENT) => Err(ReadError::Changed { path: full() }),
                Err(errno) => Err(io_error(&full(), errno)),
            },
            SFlag::S_IFDIR => Ok(Entry::Dir { stat }),
            SFlag::S_IFIFO => Ok(Entry::Special { kind: "a FIFO" }),
            SFlag::S_IFSOCK => Ok(Entry::Special { kind: "a socket" }),
            SFlag::S_IFCHR => Ok(Entry::Special {
                kind: "a character device",
            }),
            SFlag::S_IFBLK => Ok(Entry::Special {
                kind: "a block device",
            }),
            _ => Ok(Entry::Special {
                kind: "of an unknown type",
            }),
        }
    }

    /// Calls `visit` for every entry under the top directory, parents
    /// before their children, in name order; never descends through a
    /// symlink.
    pub fn walk(
        &self,
        visit: &mut dyn FnMut(&Path, Entry) -> Result<(), ReadError>,
    ) -> Result<(), ReadError> {
        let root = self.root.dir(Path::new(".")).map_err(|error| match error {
            ResolveDirError::Io { source, .. } => read_error(&self.top, source),
            other => ReadError::Io {
                path: self.top.clone(),
                source: io::Error::other(other),
            },
        })?;
        self.walk_dir(&root, Path::new(""), 0, visit)
    }

    fn walk_dir(
        &self,
        dir: &Dir,
        relative: &Path,
        depth: usize,
        visit: &mut dyn FnMut(&Path, Entry) -> Result<(), ReadError>,
    ) -> Result<(), ReadError> {
        let here = self.top.join(relative);
        if depth > MAX_DEPTH {
            return Err(ReadError::Io {
                path: here,
                source: io::Error::other("directory tree too deep"),
            });
        }
        let mut names = dir.list().map_err(|source| read_error(&here, source))?;
        names.sort();
        for name in names {
            let path = relative.join(&name);
            let entry = self.entry_in(dir, &name, &path)?;
            let is_dir = matches!(entry, Entry::Dir { .. });
            visit(&path, entry)?;
            if is_dir {
                let child = dir
                    .open_dir(&name)
                    .map_err(|source| read_error(&self.top.join(&path), source))?;
                self.walk_dir(&child, &path, depth + 1, visit)?;
            }
        }
        Ok(())
    }
}

fn kind(stat: &FileStat) -> SFlag {
    SFlag::from_bits_truncate(stat.st_mode) & SFlag::S_IFMT
}

/// `EACCES` as [`ReadError::Unreadable`], the rest as [`ReadError::Io`].
fn read_error(path: &Path, source: io::Error) -> ReadError {
    if source.raw_os_error() == Some(Errno::EACCES as i32) {
        return ReadError::Unreadable(path.to_owned());
    }
    ReadError::Io {
        path: path.to_owned(),
        source,
    }
}

fn io_error(path: &Path, errno: Errno) -> ReadError {
    ReadError::Io {
        path: path.to_owned(),
        source: errno.into(),
    }
}

#[cfg(test)]
mod tests {
    use std::io::Read;
    use std::os::unix::fs::{PermissionsExt, symlink};

    use super::*;

    fn tree() -> (tempfile::TempDir, Tree) {
        let dir = tempfile::tempdir().unwrap();
        let top = dir.path().join("repo");
        fs_err::create_dir_all(top.join("src")).unwrap();
        fs_err::write(top.join("src/main.c"), "int main;\n").unwrap();
        let tree = Tree::open(&top).unwrap();
        (dir, tree)
    }

    fn read(entry: Entry) -> String {
        match entry {
            Entry::File { mut file, .. } => {
                let mut text = String::new();
                file.read_to_string(&mut text).unwrap();
                text
            }
            other => panic!("not a file: {other:?}"),
        }
    }

    #[test]
    fn files_are_read_and_symlinks_are_not_followed() {
        let (dir, tree) = tree();
        let top = dir.path().join("repo");
        assert_eq!(
            read(tree.entry(Path::new("src/main.c")).unwrap()),
            "int main;\n"
        );
        symlink("/etc/passwd", top.join("passwd")).unwrap();
        match tree.entry(Path::new("passwd")).unwrap() {
            Entry::Symlink { target, .. } => assert_eq!(target, "/etc/passwd"),
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            tree.entry(Path::new("missing")).unwrap(),
            Entry::Gone
        ));
        assert!(matches!(
            tree.entry(Path::new("src")).unwrap(),
            Entry::Dir { .. }
        ));
    }

    #[test]
    fn a_directory_replaced_by_a_symlink_is_not_read_through() {
        let (dir, tree) = tree();
        let top = dir.path().join("repo");
        let outside = dir.path().join("secret");
        fs_err::create_dir_all(&outside).unwrap();
        fs_err::write(outside.join("main.c"), "SECRET\n").unwrap();
        fs_err::write(dir.path().join("main.c"), "SECRET\n").unwrap();
        for target in [outside.as_os_str(), OsStr::new("../.."), OsStr::new("..")] {
            fs_err::remove_dir_all(top.join("src")).ok();
            fs_err::remove_file(top.join("src")).ok();
            symlink(target, top.join("src")).unwrap();
            assert!(
                matches!(tree.entry(Path::new("src/main.c")).unwrap(), Entry::Gone),
                "read through a symlink to {target:?}"
            );
            assert!(matches!(
                tree.entry(Path::new("src")).unwrap(),
                Entry::Symlink { .. }
            ));
        }
        // `..` in a path never resolves.
        assert!(matches!(
            tree.entry(Path::new("../main.c")).unwrap(),
            Entry::Gone
        ));
        assert!(matches!(
            tree.entry(Path::new("/etc/passwd")).unwrap(),
            Entry::Gone
        ));
    }

    #[test]
    fn a_walk_lists_symlinks_as_symlinks_and_never_descends_them() {
        let (dir, tree) = tree();
        let top = dir.path().join("repo");
        symlink("/etc", top.join("etc")).unwrap();
        nix::unistd::mkfifo(&top.join("fifo"), Mode::from_bits_truncate(0o644)).unwrap();
        let mut seen = Vec::new();
        tree.walk(&mut |path, entry| {
            let kind = match entry {
                Entry::File { .. } => "file",
                Entry::Symlink { .. } => "symlink",
                Entry::Dir { .. } => "dir",
                Entry::Special { .. } => "special",
                Entry::Gone => "gone",
            };
            seen.push(format!("{} {kind}", path.display()));
            Ok(())
        })
        .unwrap();
        assert_eq!(
            seen,
            ["etc symlink", "fifo special", "src dir", "src/main.c file"]
        );
    }

    #[test]
    fn an_unreadable_file_is_named() {
        let (dir, tree) = tree();
        let top = dir.path().join("repo");
        fs_err::write(top.join("private"), "x").unwrap();
        fs_err::set_permissions(top.join("private"), std::fs::Permissions::from_mode(0o000))
            .unwrap();
        // Root reads everything; read as another user in a thread of our
        // own (the filesystem uid and capabilities are per thread).
        let result = std::thread::scope(|scope| {
            scope
                .spawn(|| {
                    nix::unistd::setfsuid(nix::unistd::Uid::from_raw(65534));
                    tree.entry(Path::new("private"))
                })
                .join()
                .unwrap()
        });
        match result {
            Err(ReadError::Unreadable(path)) => assert_eq!(path, top.join("private")),
            other => panic!("{other:?}"),
        }
    }
}
