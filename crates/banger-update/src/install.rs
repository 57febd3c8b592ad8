//! Putting verified binaries in place, all or nothing.
//!
//! [`Staged::write`] writes a new binary next to the file it replaces
//! (same directory, so the final `rename` is atomic and cannot cross
//! filesystems), mode 0755, fsynced. [`swap_all`] then, for each target in
//! turn, keeps the current file as a hard-linked backup and renames the
//! staged file over it. If any step fails, the targets already swapped get
//! their backups renamed back (or are removed if they did not exist),
//! staged files are deleted, and the error is returned: every target is
//! then byte for byte what it was. On success the backups are removed.
//! A running program keeps its (old) inode; the next exec gets the new one.

use std::io::Write;
use std::os::unix::fs::PermissionsExt;

use fs_err::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

/// A verified binary written next to its target, not yet in place.
#[derive(Debug)]
pub struct Staged {
    pub target: PathBuf,
    pub staged: PathBuf,
}

#[derive(Debug, thiserror::Error)]
#[error("cannot write {path}")]
pub struct StageError {
    pub path: PathBuf,
    #[source]
    pub source: std::io::Error,
}

impl Staged {
    /// Writes `bytes` to a hidden temp file beside `target`.
    pub fn write(target: &Path, bytes: &[u8]) -> Result<Self, StageError> {
        let dir = target.parent().unwrap_or(Path::new("."));
        let name = target
            .file_name()
            .map(|name| name.to_string_lossy().into_owned())
            .unwrap_or_default();
        let staged = dir.join(format!(".{name}.banger-update-{}", std::process::id()));
        let error = |source| StageError {
            path: staged.clone(),
            source,
        };
        let result = (|| {
            if let Some(parent) = staged.parent() {
                fs_err::create_dir_all(parent)?;
            }
            let mut file = fs_err::OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .mode(0o755)
                .open(&staged)?;
            file.file()
                .set_permissions(std::fs::Permissions::from_mode(0o755))?;
            file.write_all(bytes)?;
            file.sync_all()
        })();
        if let Err(err) = result {
            let _ = std::fs::remove_file(&staged);
            return Err(error(err));
        }
        Ok(Self {
            target: target.to_owned(),
            staged,
        })
    }

    /// Deletes the staged file (when the update is abandoned).
    pub fn discard(&self) {
        let _ = std::fs::remove_file(&self.staged);
    }
}

/// The filesystem steps of a swap, a seam so tests can fail any of them.
pub trait SwapFs: std::fmt::Debug {
    /// Keeps `target` as `backup` (a hard link); `false` if `target` does
    /// not exist.
    fn backup(&self, target: &Path, backup: &Path) -> std::io::Result<bool>;
    fn rename(&self, from: &Path, to: &Path) -> std::io::Result<()>;
    fn remove(&self, path: &Path) -> std::io::Result<()>;
    fn sync_dir(&self, dir: &Path) -> std::io::Result<()>;
}

/// The real filesystem.
#[derive(Debug, Default, Clone, Copy)]
pub struct RealSwapFs;

impl SwapFs for RealSwapFs {
    fn backup(&self, target: &Path, backup: &Path) -> std::io::Result<bool> {
        let _ = std::fs::remove_file(backup);
        match std::fs::hard_link(target, backup) {
            Ok(()) => Ok(true),
            Err(err) if err.kind() == std::io::ErrorKind::NotFound && !target.exists() => Ok(false),
            // A filesystem without hard links: copy instead.
            Err(_) => std::fs::copy(target, backup).map(|_| true),
        }
    }

    fn rename(&self, from: &Path, to: &Path) -> std::io::Result<()> {
        std::fs::rename(from, to)
    }

    fn remove(&self, path: &Path) -> std::io::Result<()> {
        std::fs::remove_file(path)
    }

    fn sync_dir(&self, dir: &Path) -> std::io::Result<()> {
        std::fs::File::open(dir)?.sync_all()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SwapError {
    #[error("cannot replace {target}; every binary was restored")]
    RolledBack {
        target: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "cannot replace {target}, and restoring {restore} failed too ({restore_error}); reinstall banger"
    )]
    RestoreFailed {
        target: PathBuf,
        #[source]
        source: std::io::Error,
        restore: PathBuf,
        restore_error: String,
    },
}

fn backup_path(target: &Path) -> PathBuf {
    let name = target
        .file_name()
        .map(|name| name.to_string_lossy().into_owned())
        .unwrap_or_default();
    target.with_file_name(format!(".{name}.banger-old-{}", std::process::id()))
}

/// Swaps every staged file in, or none (see the module docs).
pub fn swap_all(staged: Vec<Staged>, fs: &dyn SwapFs) -> Result<(), SwapError> {
    // (target, backup if the target existed)
    let mut done: Vec<(PathBuf, Option<PathBuf>)> = Vec::new();
    let mut failure = None;
    for item in &staged {
        let backup = backup_path(&item.target);
        let step = fs.backup(&item.target, &backup).and_then(|existed| {
            fs.rename(&item.staged, &item.target)
                .map(|()| existed)
                .inspect_err(|_| {
                    if existed {
                        let _ = fs.remove(&backup);
                    }
                })
        });
        match step {
            Ok(existed) => done.push((item.target.clone(), existed.then_some(backup))),
            Err(source) => {
                failure = Some((item.target.clone(), source));
                break;
            }
        }
    }
    let Some((target, source)) = failure else {
        for (target, backup) in &done {
            if let Some(backup) = backup {
                let _ = fs.remove(backup);
            }
            if let Some(dir) = target.parent() {
                let _ = fs.sync_dir(dir);
            }
        }
        return Ok(());
    };
    for item in &staged {
        item.discard();
    }
    let mut restore_failure = None;
    for (swapped, backup) in done.iter().rev() {
        let restored = match backup {
            Some(backup) => fs.rename(backup, swapped),
            None => fs.remove(swapped),
        };
        if let Err(err) = restored {
            tracing::error!(target = %swapped.display(), error = %err, "cannot restore after a failed update");
            restore_failure.get_or_insert((swapped.clone(), err.to_string()));
        }
        if let Some(dir) = swapped.parent() {
            let _ = fs.sync_dir(dir);
        }
    }
    Err(match restore_failure {
        None => SwapError::RolledBack { target, source },
        Some((restore, restore_error)) => SwapError::RestoreFailed {
            target,
            source,
            restore,
            restore_error,
        },
    })
}

#[cfg(test)]
mod tests {
    use std::cell::Cell;

    use super::*;

    /// The real filesystem, failing the `n`th rename (1-based).
    #[derive(Debug)]
    struct FailingRename {
        n: usize,
        seen: Cell<usize>,
    }

    impl SwapFs for FailingRename {
        fn backup(&self, target: &Path, backup: &Path) -> std::io::Result<bool> {
            RealSwapFs.backup(target, backup)
        }
        fn rename(&self, from: &Path, to: &Path) -> std::io::Result<()> {
            self.seen.set(self.seen.get() + 1);
            if self.seen.get() == self.n {
                return Err(std::io::Error::other("injected rename failure"));
            }
            RealSwapFs.rename(from, to)
        }
        fn remove(&self, path: &Path) -> std::io::Result<()> {
            RealSwapFs.remove(path)
        }
        fn sync_dir(&self, dir: &Path) -> std::io::Result<()> {
            RealSwapFs.sync_dir(dir)
        }
    }

    fn setup() -> (tempfile::TempDir, Vec<PathBuf>) {
        let dir = tempfile::tempdir().unwrap();
        let targets: Vec<PathBuf> = ["banger", "bangerd", "agent"]
            .iter()
            .map(|name| dir.path().join(name))
            .collect();
        for target in &targets[..2] {
            std::fs::write(target, format!("old {}", target.display())).unwrap();
        }
        // The third target does not exist yet (a companion added by a release).
        (dir, targets)
    }

    fn stage(targets: &[PathBuf]) -> Vec<Staged> {
        targets
            .iter()
            .map(|target| {
                Staged::write(target, format!("new {}", target.display()).as_bytes()).unwrap()
            })
            .collect()
    }

    fn listing(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    }

    #[test]
    fn all_swapped_and_nothing_left_behind() {
        let (dir, targets) = setup();
        swap_all(stage(&targets), &RealSwapFs).unwrap();
        for target in &targets {
            assert_eq!(
                std::fs::read_to_string(target).unwrap(),
                format!("new {}", target.display())
            );
            let mode = std::fs::metadata(target).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o755);
        }
        assert_eq!(listing(dir.path()), ["agent", "banger", "bangerd"]);
    }

    #[test]
    fn a_failure_at_any_step_restores_every_target() {
        for n in 1..=3 {
            let (dir, targets) = setup();
            let fs = FailingRename {
                n,
                seen: Cell::new(0),
            };
            let err = swap_all(stage(&targets), &fs).unwrap_err();
            assert!(matches!(err, SwapError::RolledBack { .. }), "{err}");
            for target in &targets[..2] {
                assert_eq!(
                    std::fs::read_to_string(target).unwrap(),
                    format!("old {}", target.display()),
                    "failure at rename {n}"
                );
            }
            assert!(!targets[2].exists(), "failure at rename {n}");
            assert_eq!(
                listing(dir.path()),
                ["banger", "bangerd"],
                "failure at rename {n}"
            );
        }
    }
}
