//! One daemon per user: an exclusive `flock` on the lock file for the
//! daemon's whole life, then a fresh socket with mode 0600.

use std::fs::File;
use std::io::{Read, Seek, Write};
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};

use nix::fcntl::{Flock, FlockArg};

#[derive(Debug, thiserror::Error)]
pub enum AcquireInstanceError {
    #[error("another bangerd is already running (pid {pid}); stop it with `banger daemon stop`")]
    AlreadyRunning { pid: String },
    #[error("creating {path}")]
    Dir {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("locking {path}")]
    Lock {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("binding socket {path}")]
    Bind {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// Held for the daemon's life; dropping it releases the lock.
#[derive(Debug)]
pub struct InstanceLock {
    _lock: Flock<File>,
}

/// Creates `dir` (and parents) and makes it owner-only (0700).
pub fn private_dir(dir: &Path) -> Result<(), AcquireInstanceError> {
    let dir_err = |source| AcquireInstanceError::Dir {
        path: dir.to_owned(),
        source,
    };
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(dir_err)?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700)).map_err(dir_err)
}

/// Takes the daemon lock without waiting and records our pid in it.
pub fn acquire(lock_path: &Path) -> Result<InstanceLock, AcquireInstanceError> {
    if let Some(dir) = lock_path.parent() {
        private_dir(dir)?;
    }
    let lock_err = |source| AcquireInstanceError::Lock {
        path: lock_path.to_owned(),
        source,
    };
    let file = File::options()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(lock_path)
        .map_err(lock_err)?;
    let mut lock = match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
        Ok(lock) => lock,
        Err((mut file, nix::errno::Errno::EWOULDBLOCK)) => {
            let mut pid = String::new();
            let _ = file.read_to_string(&mut pid);
            let pid = pid.trim();
            return Err(AcquireInstanceError::AlreadyRunning {
                pid: if pid.is_empty() {
                    "unknown".into()
                } else {
                    pid.to_owned()
                },
            });
        }
        Err((_, errno)) => return Err(lock_err(std::io::Error::from(errno))),
    };
    lock.set_len(0).map_err(lock_err)?;
    lock.rewind().map_err(lock_err)?;
    writeln!(lock, "{}", std::process::id()).map_err(lock_err)?;
    Ok(InstanceLock { _lock: lock })
}

/// Whether a daemon currently holds the lock at `lock_path`.
pub fn is_held(lock_path: &Path) -> bool {
    let Ok(file) = File::options().read(true).write(true).open(lock_path) else {
        return false;
    };
    Flock::lock(file, FlockArg::LockSharedNonblock).is_err()
}

/// Binds a fresh socket at `path` (removing a stale one; safe because we
/// hold the instance lock) and restricts it to the owner.
pub fn bind(path: &Path) -> Result<tokio::net::UnixListener, AcquireInstanceError> {
    let bind_err = |source| AcquireInstanceError::Bind {
        path: path.to_owned(),
        source,
    };
    if let Some(dir) = path.parent() {
        private_dir(dir)?;
    }
    match std::fs::remove_file(path) {
        Ok(()) => {}
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => {}
        Err(err) => return Err(bind_err(err)),
    }
    let listener = tokio::net::UnixListener::bind(path).map_err(bind_err)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).map_err(bind_err)?;
    Ok(listener)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn second_acquire_fails_and_names_the_pid() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("run/bangerd.lock");
        let held = acquire(&path).unwrap();
        assert!(is_held(&path));
        match acquire(&path) {
            Err(AcquireInstanceError::AlreadyRunning { pid }) => {
                assert_eq!(pid, std::process::id().to_string());
            }
            other => panic!("expected AlreadyRunning, got {other:?}"),
        }
        drop(held);
        assert!(!is_held(&path));
        let _again = acquire(&path).unwrap();
    }

    #[tokio::test]
    async fn socket_is_owner_only() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("run/bangerd.sock");
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, b"stale").unwrap();
        let _listener = bind(&path).unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        let dir_mode = std::fs::metadata(path.parent().unwrap())
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(dir_mode & 0o777, 0o700);
    }
}
