//! [`Root`]: the top directory of an untrusted tree, and resolving (and
//! making) directories under it.

use std::ffi::OsStr;
use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::{Component, Path, PathBuf};

use nix::errno::Errno;
use nix::fcntl::{OFlag, openat, readlinkat};
use nix::sys::stat::{Mode, mkdirat};

use crate::dir::Dir;
use crate::resolve::{self, Resolve};

/// What [`Root::dir`] and [`Root::make_dirs`] open: a directory, for use as
/// the base of `*at` calls only.
const DIR_FLAGS: OFlag = OFlag::O_PATH.union(OFlag::O_DIRECTORY);

/// How many dangling symlinks [`Root::make_dirs`] follows for one path
/// (Linux's own limit for symlinks in one path).
const MAX_DANGLING_HOPS: usize = 40;

/// What [`Root::make_dirs`] does at a symlink to nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dangling {
    /// Fails with [`ResolveDirError::Dangling`].
    Refuse,
    /// Makes the link's target (resolved with the root's confinement, so
    /// inside the root) and goes on there, as if the path had named the
    /// target.
    MakeTarget,
}

/// What [`Root::make_dirs`] was asked to make.
struct Create<'a> {
    mode: Mode,
    dangling: Dangling,
    on_created: &'a mut dyn FnMut(&Path, BorrowedFd<'_>) -> io::Result<()>,
}

/// Why a directory under a [`Root`] could not be resolved. `component` is
/// the first prefix of the asked-for path that failed, as that path spells
/// it (before symlinks).
#[derive(Debug, thiserror::Error)]
pub enum ResolveDirError {
    /// Resolution would leave the root (through a symlink, `..` or a mount
    /// point); only with [`Resolve::beneath`] or [`Resolve::no_xdev`].
    #[error("{} resolves outside the root", component.display())]
    Escapes { component: PathBuf },
    /// Too many symlinks on the way (a loop), or a symlink at all under
    /// [`Resolve::no_symlinks`].
    #[error("{}: too many levels of symbolic links", component.display())]
    Loop { component: PathBuf },
    /// A component exists and is not a directory.
    #[error("{} is not a directory", component.display())]
    NotADirectory { component: PathBuf },
    /// A component does not exist (and making it was not asked for).
    #[error("{} does not exist", component.display())]
    Missing { component: PathBuf },
    /// A component is a symlink to nothing: nothing is made through it.
    #[error("{} is a dangling symlink", component.display())]
    Dangling { component: PathBuf },
    /// Opening or making a component failed otherwise.
    #[error("cannot open or make {}", component.display())]
    Io {
        component: PathBuf,
        #[source]
        source: io::Error,
    },
}

impl ResolveDirError {
    /// The prefix of the asked-for path that failed.
    pub fn component(&self) -> &Path {
        match self {
            Self::Escapes { component }
            | Self::Loop { component }
            | Self::NotADirectory { component }
            | Self::Missing { component }
            | Self::Dangling { component }
            | Self::Io { component, .. } => component,
        }
    }

    fn from_errno(errno: Errno, component: &Path) -> Self {
        let component = component.to_owned();
        match errno {
            Errno::EXDEV => Self::Escapes { component },
            Errno::ELOOP => Self::Loop { component },
            Errno::ENOTDIR => Self::NotADirectory { component },
            Errno::ENOENT => Self::Missing { component },
            other => Self::Io {
                component,
                source: other.into(),
            },
        }
    }
}

/// The top directory of a tree, with how paths under it are confined.
/// Paths given to its methods are resolved from it: with
/// [`Resolve::in_root`] they may be absolute (`/etc/ssh` is the root's
/// `etc/ssh`), with [`Resolve::beneath`] they must be relative.
#[derive(Debug)]
pub struct Root {
    fd: OwnedFd,
    resolve: Resolve,
}

impl Root {
    /// Opens the directory `path` (trusted: symlinks in it are followed) as
    /// a root.
    pub fn open(path: &Path, resolve: Resolve) -> io::Result<Self> {
        let fd = nix::fcntl::open(path, DIR_FLAGS | OFlag::O_CLOEXEC, Mode::empty())?;
        Ok(Self::from_fd(fd, resolve))
    }

    /// A root from a descriptor of a directory (`O_PATH` is enough).
    pub fn from_fd(fd: OwnedFd, resolve: Resolve) -> Self {
        Self { fd, resolve }
    }

    pub fn resolve(&self) -> Resolve {
        self.resolve
    }

    /// `openat2` of `path` under the root with its confinement; `flags`
    /// decide the rest (add `O_NOFOLLOW` to refuse a symlink as the last
    /// component).
    pub fn open_at(&self, path: &Path, flags: OFlag) -> nix::Result<OwnedFd> {
        resolve::open(&self.fd, path, flags, self.resolve)
    }

    /// The existing directory `path` (symlinks on the way, the last
    /// component included, are followed within the confinement).
    pub fn dir(&self, path: &Path) -> Result<Dir, ResolveDirError> {
        self.walk(path, None)
    }

    /// The directory `path`, making each missing component with `mode`
    /// (less the umask) inside the directory its prefix resolved to, so
    /// under the root too. `on_created` gets each directory made, as the
    /// path prefix (spelled through the targets of the dangling symlinks
    /// followed) and a descriptor open for `fchmod`/`fchown`, in order.
    /// Existing directories are left as they are. At a symlink to nothing,
    /// `dangling` decides.
    pub fn make_dirs(
        &self,
        path: &Path,
        mode: Mode,
        dangling: Dangling,
        mut on_created: impl FnMut(&Path, BorrowedFd<'_>) -> io::Result<()>,
    ) -> Result<Dir, ResolveDirError> {
        self.walk(
            path,
            Some(Create {
                mode,
                dangling,
                on_created: &mut on_created,
            }),
        )
    }

    fn walk(&self, path: &Path, mut create: Option<Create<'_>>) -> Result<Dir, ResolveDirError> {
        let mut path = path.to_owned();
        let mut hops = 0;
        'resolve: loop {
            if let Ok(fd) = self.open_at(&path, DIR_FLAGS) {
                return Ok(Dir::new(fd));
            }
            // Slow path, one prefix at a time: to make what is missing, and
            // to name the component that failed.
            let mut current = self
                .open_at(Path::new("."), DIR_FLAGS)
                .map_err(|errno| ResolveDirError::from_errno(errno, Path::new(".")))?;
            let mut prefix = PathBuf::new();
            let mut components = path.components();
            while let Some(component) = components.next() {
                let parent = prefix.clone();
                prefix.push(component);
                let errno = match self.open_at(&prefix, DIR_FLAGS) {
                    Ok(fd) => {
                        current = fd;
                        continue;
                    }
                    Err(errno) => errno,
                };
                let (Errno::ENOENT, Some(create), Component::Normal(name)) =
                    (errno, create.as_mut(), component)
                else {
                    return Err(ResolveDirError::from_errno(errno, &prefix));
                };
                let exists = match make_dir(&current, name, &prefix, create) {
                    Ok(fd) => {
                        current = fd;
                        continue;
                    }
                    Err(MakeDir::Exists) => match self.open_at(&prefix, DIR_FLAGS) {
                        // A racing mkdir.
                        Ok(fd) => {
                            current = fd;
                            continue;
                        }
                        Err(Errno::ENOENT) => ResolveDirError::Dangling {
                            component: prefix.clone(),
                        },
                        Err(errno) => return Err(ResolveDirError::from_errno(errno, &prefix)),
                    },
                    Err(MakeDir::Failed(source)) => {
                        return Err(ResolveDirError::Io {
                            component: prefix,
                            source,
                        });
                    }
                };
                if create.dangling == Dangling::Refuse {
                    return Err(exists);
                }
                // Go on at the link's target: the same path with the link
                // replaced by its target, resolved by the kernel again.
                hops += 1;
                if hops > MAX_DANGLING_HOPS {
                    return Err(ResolveDirError::Loop { component: prefix });
                }
                let target = match readlinkat(&current, name) {
                    Ok(target) => target,
                    // Not a symlink after all: replaced while we looked.
                    Err(Errno::EINVAL | Errno::ENOENT) => return Err(exists),
                    Err(errno) => {
                        return Err(ResolveDirError::Io {
                            component: prefix,
                            source: errno.into(),
                        });
                    }
                };
                let mut next = parent.join(target);
                next.push(components.as_path());
                path = next;
                continue 'resolve;
            }
            return Ok(Dir::new(current));
        }
    }
}

impl AsFd for Root {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

enum MakeDir {
    Exists,
    Failed(io::Error),
}

/// Makes `name` in `parent` and opens it (not following a symlink, so it is
/// the directory just made or an error).
fn make_dir(
    parent: &OwnedFd,
    name: &OsStr,
    prefix: &Path,
    create: &mut Create<'_>,
) -> Result<OwnedFd, MakeDir> {
    match mkdirat(parent, name, create.mode) {
        Ok(()) => {}
        Err(Errno::EEXIST) => return Err(MakeDir::Exists),
        Err(errno) => return Err(MakeDir::Failed(errno.into())),
    }
    let fd = openat(
        parent,
        name,
        OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .map_err(|errno| MakeDir::Failed(errno.into()))?;
    (create.on_created)(prefix, fd.as_fd()).map_err(MakeDir::Failed)?;
    Ok(fd)
}
