//! One daemon per user: an exclusive `flock` on the lock file for the
//! daemon's whole life, then a fresh socket with mode 0600.

use std::fs::File;
use std::io::{Read, Seek, Write};
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

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
    #[error(
        "{summary} in banger's directories, and this daemon runs as uid {uid} (left by running \
         banger as root?)\nhint: give them back to yourself: {fix}"
    )]
    ForeignFiles {
        summary: String,
        uid: u32,
        fix: String,
    },
}

/// A daemon that is not root cannot use what a root daemon left in its
/// directories (`sudo -E banger …` writes root's files into the user's XDG
/// dirs): it refuses to start, naming the one command that fixes it,
/// instead of failing later on whichever file it meets first.
pub fn refuse_foreign_files(dirs: &[PathBuf]) -> Result<(), AcquireInstanceError> {
    let uid = nix::unistd::geteuid();
    if uid.is_root() {
        return Ok(());
    }
    let found = banger_doctor::ownership::foreign_owned(dirs, uid.as_raw());
    if found.is_empty() {
        return Ok(());
    }
    Err(AcquireInstanceError::ForeignFiles {
        summary: found.summary(),
        uid: uid.as_raw(),
        fix: banger_doctor::ownership::fix_command(dirs, uid.as_raw()),
    })
}

/// Held for the daemon's life; dropping it releases the lock. The file holds
/// the daemon's pid, followed by ` stopping` once it drains for shutdown.
#[derive(Debug)]
pub struct InstanceLock {
    lock: Flock<File>,
}

impl InstanceLock {
    /// Tells a daemon starting next that this one is on its way out, so it
    /// waits for the lock instead of refusing to start.
    pub fn mark_stopping(&mut self) {
        let _ = write_state(&mut self.lock, "stopping");
    }
}

fn write_state(file: &mut File, state: &str) -> std::io::Result<()> {
    file.set_len(0)?;
    file.rewind()?;
    let pid = std::process::id();
    if state.is_empty() {
        writeln!(file, "{pid}")
    } else {
        writeln!(file, "{pid} {state}")
    }
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

/// How long a new daemon waits for a stopping one to let go.
pub const STOPPING_WAIT: Duration = Duration::from_secs(60);

/// Takes the daemon lock and records our pid in it. A running daemon makes
/// this fail at once; a stopping one is waited for (bounded).
pub fn acquire(lock_path: &Path) -> Result<InstanceLock, AcquireInstanceError> {
    if let Some(dir) = lock_path.parent() {
        private_dir(dir)?;
    }
    let lock_err = |source| AcquireInstanceError::Lock {
        path: lock_path.to_owned(),
        source,
    };
    let deadline = Instant::now() + STOPPING_WAIT;
    loop {
        let file = File::options()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(lock_path)
            .map_err(lock_err)?;
        match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
            Ok(mut lock) => {
                write_state(&mut lock, "").map_err(lock_err)?;
                return Ok(InstanceLock { lock });
            }
            Err((mut file, nix::errno::Errno::EWOULDBLOCK)) => {
                let mut content = String::new();
                let _ = file.read_to_string(&mut content);
                let mut words = content.split_whitespace();
                let pid = words.next().unwrap_or("unknown").to_owned();
                let stopping = words.next() == Some("stopping");
                if !stopping || Instant::now() > deadline {
                    return Err(AcquireInstanceError::AlreadyRunning { pid });
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            Err((_, errno)) => return Err(lock_err(std::io::Error::from(errno))),
        }
    }
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

    #[test]
    fn a_stopping_daemon_is_waited_for() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("bangerd.lock");
        let mut held = acquire(&path).unwrap();
        held.mark_stopping();
        let releaser = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(200));
            drop(held);
        });
        let started = Instant::now();
        let _next = acquire(&path).unwrap();
        assert!(started.elapsed() >= Duration::from_millis(150));
        releaser.join().unwrap();
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
