//! How a path is confined to its root, and the `openat2` call itself.

use std::os::fd::{AsFd, OwnedFd};
use std::path::Path;

use nix::errno::Errno;
use nix::fcntl::{OFlag, OpenHow, ResolveFlag, openat2};

/// How often `openat2` is retried when it reports a concurrent rename.
const EAGAIN_RETRIES: usize = 16;

/// How paths are resolved under a [`Root`](crate::Root). Every variant
/// refuses magic links (`RESOLVE_NO_MAGICLINKS`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Resolve {
    flags: ResolveFlag,
}

impl Resolve {
    /// As the guest resolves its own paths (`RESOLVE_IN_ROOT`): the root is
    /// `/`, so an absolute path or symlink target starts again at the root
    /// and `..` at the root stays there. Nothing resolves outside the root
    /// and nothing is refused for trying.
    pub fn in_root() -> Self {
        Self {
            flags: ResolveFlag::RESOLVE_IN_ROOT | ResolveFlag::RESOLVE_NO_MAGICLINKS,
        }
    }

    /// Strictly beneath the root (`RESOLVE_BENEATH`): an absolute path or
    /// symlink target, or a `..` that would climb above the root, fails
    /// with `EXDEV` ([`ResolveDirError::Escapes`](crate::ResolveDirError::Escapes)).
    pub fn beneath() -> Self {
        Self {
            flags: ResolveFlag::RESOLVE_BENEATH | ResolveFlag::RESOLVE_NO_MAGICLINKS,
        }
    }

    /// Also refuses to cross a mount point (`RESOLVE_NO_XDEV`, `EXDEV`).
    pub fn no_xdev(self) -> Self {
        Self {
            flags: self.flags | ResolveFlag::RESOLVE_NO_XDEV,
        }
    }

    /// Also refuses every symlink on the way (`RESOLVE_NO_SYMLINKS`,
    /// `ELOOP`).
    pub fn no_symlinks(self) -> Self {
        Self {
            flags: self.flags | ResolveFlag::RESOLVE_NO_SYMLINKS,
        }
    }

    /// The `openat2` resolve flags.
    pub fn flags(self) -> ResolveFlag {
        self.flags
    }
}

/// `openat2(dir, path, flags | O_CLOEXEC)` with `resolve`'s confinement.
/// `EAGAIN` (the kernel saw a rename somewhere on the system while it
/// resolved `..`) is retried a few times.
pub fn open(dir: impl AsFd, path: &Path, flags: OFlag, resolve: Resolve) -> nix::Result<OwnedFd> {
    let how = OpenHow::new()
        .flags(flags | OFlag::O_CLOEXEC)
        .resolve(resolve.flags());
    let mut tries = 0;
    loop {
        match openat2(dir.as_fd(), path, how) {
            Err(Errno::EAGAIN) if tries < EAGAIN_RETRIES => tries += 1,
            other => return other,
        }
    }
}
