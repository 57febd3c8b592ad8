//! Image trees built with debootstrap for callers: debootstrap needs root
//! (it chroots, mounts and makes device nodes in its target), so the helper
//! runs it into a new directory in one of the caller's own directories,
//! releases the mounts it left, and gives the tree to the caller. The
//! owners the tree had (a few dozen files of groups such as `shadow` or
//! `utmp`) are answered, so the caller's daemon puts them back in the
//! image it builds.
//!
//! The helper makes the target itself (root's, in the checked directory of
//! the caller's) and debootstrap reaches it through the helper's descriptor
//! of it (`/proc/<helper>/fd/<n>`), so renaming or replacing the caller's
//! directories meanwhile cannot point debootstrap anywhere else. The tree
//! is given away children first, so a directory stays root's (and its
//! entries out of the caller's reach) until everything in it is done.

use std::ffi::{OsStr, OsString};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use banger_bootstrap::rootfs::RootfsPlan;
use banger_bootstrap::{BootstrapHost, Distro, HostBootstrap, TreeOwner};
use nix::fcntl::{AtFlags, OFlag};
use nix::sys::stat::{FchmodatFlags, Mode, SFlag, fchmodat, fstatat};
use nix::unistd::{Gid, Uid, fchownat};
use tokio_util::sync::CancellationToken;

use crate::caller::Caller;
use crate::paths::{PathError, open_own_dir, open_own_file, plain_parent};
use crate::protocol::{DebootstrapDone, DebootstrapParams};

/// The most differently owned files a tree may have.
pub const MAX_OWNERS: usize = 10_000;

/// Why a debootstrap request was refused or failed.
#[derive(Debug, thiserror::Error)]
pub enum BootstrapError {
    #[error(transparent)]
    Path(#[from] PathError),
    #[error("{0}")]
    Invalid(String),
    #[error("{path} exists already")]
    Exists { path: PathBuf },
    #[error(transparent)]
    Debootstrap(#[from] banger_bootstrap::host::DebootstrapError),
    #[error(transparent)]
    Mounts(#[from] banger_bootstrap::rootfs::ReleaseMountsError),
    #[error(transparent)]
    Finish(#[from] banger_bootstrap::rootfs::FinishRootfsError),
    #[error("cannot give {path} to uid {uid}")]
    Give {
        path: PathBuf,
        uid: u32,
        #[source]
        source: std::io::Error,
    },
    #[error("the tree has more than {MAX_OWNERS} files owned by others than root")]
    TooManyOwners,
}

impl BootstrapError {
    pub fn code(&self) -> banger_rpc::ErrorCode {
        use banger_bootstrap::host::DebootstrapError as D;
        use banger_rpc::ErrorCode;
        match self {
            Self::Path(error) => error.code(),
            Self::Invalid(_) => ErrorCode::InvalidArgument,
            Self::Exists { .. } => ErrorCode::Conflict,
            Self::Debootstrap(D::NotInstalled | D::NoKeyring { .. } | D::Unreachable { .. }) => {
                ErrorCode::FailedPrecondition
            }
            _ => ErrorCode::Internal,
        }
    }
}

/// Runs debootstraps for callers, with root's `.deb` cache under
/// `cache_dir`.
#[derive(Debug, Clone)]
pub struct Bootstraps {
    cache_dir: PathBuf,
}

impl Bootstraps {
    pub fn new(cache_dir: impl Into<PathBuf>) -> Self {
        Self {
            cache_dir: cache_dir.into(),
        }
    }

    /// Builds `params.target` for `caller`; see the module docs.
    pub async fn run(
        &self,
        caller: &Caller,
        params: DebootstrapParams,
    ) -> Result<DebootstrapDone, BootstrapError> {
        let distro =
            Distro::parse(&params.distro).map_err(|e| BootstrapError::Invalid(e.to_string()))?;
        let mirror = banger_model::distro::check_mirror(&params.mirror)
            .map_err(|e| BootstrapError::Invalid(e.to_string()))?;
        let dir = plain_parent(&params.target)?;
        let name = target_name(&params.target)?;
        let dir_fd = open_own_dir(caller, &dir)?;
        let target_fd = make_target(&dir_fd, &name, &params.target)?;
        let log_dir = plain_parent(&params.log)?;
        let log_dir_fd = open_own_dir(caller, &log_dir)?;
        let log = open_own_file(caller, &log_dir_fd, &params.log)?;
        let pid = std::process::id();
        let through =
            |fd: &dyn AsRawFd| PathBuf::from(format!("/proc/{pid}/fd/{}", fd.as_raw_fd()));
        let plan = RootfsPlan::new(
            &distro,
            &mirror,
            params.profile,
            &params.packages,
            &through(&target_fd),
            &self.cache_dir,
            &through(&log),
        )
        .map_err(|e| BootstrapError::Invalid(e.to_string()))?;
        let plan = RootfsPlan {
            proxy: params.proxy.map(check_proxy).transpose()?,
            ..plan
        };
        banger_bootstrap::host::preflight_tools(&plan)?;
        tracing::info!(uid = caller.uid, target = %params.target.display(), %distro, "debootstrap for a caller");
        let mut quiet = |_: &str| {};
        let ran = HostBootstrap
            .debootstrap(&plan, &mut quiet, &CancellationToken::new())
            .await;
        // Whatever happened, nothing stays mounted and the caller gets what
        // there is (to remove it, or to build from it).
        let real_target =
            std::fs::read_link(through(&target_fd)).unwrap_or_else(|_| dir.join(&name));
        HostBootstrap.release_mounts(&real_target)?;
        // The clean-up that needs root (device nodes, read-only files and
        // directories), done before the tree is the caller's.
        let finished = match &ran {
            Ok(()) => banger_bootstrap::rootfs::finish(&plan.target).map_err(BootstrapError::from),
            Err(_) => Ok(()),
        };
        let mut owners = Vec::new();
        let given = give_tree(&target_fd, Path::new(""), caller, &mut owners).and_then(|()| {
            nix::unistd::fchown(
                target_fd.as_fd(),
                Some(Uid::from_raw(caller.uid)),
                Some(Gid::from_raw(caller.gid)),
            )
            .map_err(std::io::Error::from)
        });
        given.map_err(|source| BootstrapError::Give {
            path: params.target.clone(),
            uid: caller.uid,
            source,
        })?;
        ran.map_err(|error| caller_log(error, &params.log))?;
        finished?;
        if owners.len() > MAX_OWNERS {
            return Err(BootstrapError::TooManyOwners);
        }
        tracing::info!(
            uid = caller.uid,
            owners = owners.len(),
            "debootstrap tree given to its caller"
        );
        Ok(DebootstrapDone { owners })
    }
}

/// debootstrap's error naming the log as the caller knows it (debootstrap
/// wrote it through this helper's descriptor).
fn caller_log(
    error: banger_bootstrap::host::DebootstrapError,
    log: &Path,
) -> banger_bootstrap::host::DebootstrapError {
    use banger_bootstrap::host::DebootstrapError as D;
    match error {
        D::Failed { status, detail, .. } => D::Failed {
            status,
            detail,
            log: log.to_owned(),
        },
        D::Unreachable { mirror, detail, .. } => D::Unreachable {
            mirror,
            detail,
            log: log.to_owned(),
        },
        other => other,
    }
}

/// An `http://` proxy URL of printable characters.
fn check_proxy(proxy: String) -> Result<String, BootstrapError> {
    let printable = proxy.bytes().all(|b| b.is_ascii_graphic());
    if proxy.starts_with("http://") && printable {
        return Ok(proxy);
    }
    Err(BootstrapError::Invalid(format!(
        "{proxy:?} is not an http:// proxy URL"
    )))
}

/// Makes the target, root's, in the caller's directory and opens it. Held
/// by this descriptor, it stays the directory debootstrap builds in
/// whatever the caller renames meanwhile, and its entries stay out of the
/// caller's reach until it is given away.
fn make_target(dir: &OwnedFd, name: &OsStr, path: &Path) -> Result<OwnedFd, BootstrapError> {
    let made = nix::sys::stat::mkdirat(dir.as_fd(), name, Mode::from_bits_truncate(0o755));
    match made {
        Ok(()) => {}
        Err(nix::Error::EEXIST) => {
            return Err(BootstrapError::Exists {
                path: path.to_owned(),
            });
        }
        Err(error) => {
            return Err(BootstrapError::Give {
                path: path.to_owned(),
                uid: 0,
                source: error.into(),
            });
        }
    }
    let fd = nix::fcntl::openat(
        dir.as_fd(),
        name,
        OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .map_err(|error| {
        BootstrapError::Invalid(format!("{} changed under us: {error}", path.display()))
    })?;
    // Only root makes root's directories: this is the one just made.
    let stat = nix::sys::stat::fstat(fd.as_fd()).map_err(|error| BootstrapError::Give {
        path: path.to_owned(),
        uid: 0,
        source: error.into(),
    })?;
    if stat.st_uid != 0 {
        return Err(BootstrapError::Invalid(format!(
            "{} changed under us",
            path.display()
        )));
    }
    Ok(fd)
}

/// The target's name: a banger id and `.rootfs`.
fn target_name(target: &Path) -> Result<OsString, BootstrapError> {
    let name = target.file_name().unwrap_or_default();
    let valid = name
        .to_str()
        .and_then(|n| n.strip_suffix(".rootfs"))
        .is_some_and(|id| id.len() == 32 && id.bytes().all(|b| b.is_ascii_hexdigit()));
    if !valid {
        return Err(BootstrapError::Invalid(format!(
            "{} is not a build tree's name (<32 hex digits>.rootfs)",
            target.display()
        )));
    }
    Ok(name.to_owned())
}

/// Gives everything in the directory `dir` (at `rel` in the tree) to the
/// caller, children before their directory, recording other owners than
/// root. Does not leave the directory's filesystem.
fn give_tree(
    dir: &OwnedFd,
    rel: &Path,
    caller: &Caller,
    owners: &mut Vec<TreeOwner>,
) -> std::io::Result<()> {
    let device = nix::sys::stat::fstat(dir.as_fd())?.st_dev;
    let mut listing = nix::dir::Dir::openat(
        dir.as_fd(),
        ".",
        OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
        Mode::empty(),
    )?;
    let names: Vec<OsString> = listing
        .iter()
        .filter_map(Result::ok)
        .map(|entry| OsStr::from_bytes(entry.file_name().to_bytes()).to_owned())
        .filter(|name| name != "." && name != "..")
        .collect();
    for name in names {
        let stat = fstatat(dir.as_fd(), name.as_os_str(), AtFlags::AT_SYMLINK_NOFOLLOW)?;
        let path = rel.join(&name);
        if stat.st_uid != 0 || stat.st_gid != 0 {
            owners.push(TreeOwner {
                path: path.clone(),
                uid: stat.st_uid,
                gid: stat.st_gid,
            });
            if owners.len() > MAX_OWNERS {
                return Ok(());
            }
        }
        let kind = SFlag::from_bits_truncate(stat.st_mode) & SFlag::S_IFMT;
        if kind == SFlag::S_IFDIR && stat.st_dev == device {
            let child = nix::fcntl::openat(
                dir.as_fd(),
                name.as_os_str(),
                OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
                Mode::empty(),
            )?;
            give_tree(&child, &path, caller, owners)?;
        }
        let mode = (kind != SFlag::S_IFLNK).then_some(stat.st_mode & 0o7777);
        give_entry(dir, &name, caller, mode)?;
    }
    Ok(())
}

/// Gives one entry to the caller without following it; `mode` is put back
/// afterwards when it has set-id bits (chown clears them).
fn give_entry(
    dir: &OwnedFd,
    name: &OsStr,
    caller: &Caller,
    mode: Option<u32>,
) -> std::io::Result<()> {
    fchownat(
        dir.as_fd(),
        name,
        Some(Uid::from_raw(caller.uid)),
        Some(Gid::from_raw(caller.gid)),
        AtFlags::AT_SYMLINK_NOFOLLOW,
    )?;
    if let Some(mode) = mode.filter(|mode| mode & 0o6000 != 0) {
        fchmodat(
            dir.as_fd(),
            name,
            Mode::from_bits_truncate(mode),
            FchmodatFlags::NoFollowSymlink,
        )?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_are_build_tree_names() {
        let ok = "/s/0123456789abcdef0123456789abcdef.rootfs";
        assert!(target_name(Path::new(ok)).is_ok());
        for bad in [
            "/s/x.rootfs",
            "/s/0123456789abcdef0123456789abcdef",
            "/s/0123456789abcdef0123456789abcdeg.rootfs",
        ] {
            assert!(target_name(Path::new(bad)).is_err(), "{bad}");
        }
    }
}
