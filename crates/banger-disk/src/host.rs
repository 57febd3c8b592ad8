//! The primitive host operations root overlays are built from (clone a
//! file, make a sparse file, attach/detach a loop device, create/remove a
//! dm device), behind a trait so the dm-snapshot sequence and its rollback
//! are unit-tested against a recording fake.

use std::io;
use std::path::Path;

use banger_model::vm::StorageStrategy;
use fs_err as fs;
use fs_err::os::unix::fs::OpenOptionsExt;

use crate::clone::{self, CloneFileError, CloneMethod, DISK_FILE_MODE};
use crate::dm;
use crate::exec::ExecError;
use crate::loopdev::{
    self, AttachLoopError, AttachedLoop, DetachLoopError, LoopDevice, LoopOptions,
};

/// A loop device attached by [`BlockHost::attach_loop`], with whatever
/// keeps it alive until device-mapper holds it (the real host keeps the
/// descriptor of an auto-clear device open).
#[derive(Debug)]
pub(crate) struct HeldLoop {
    pub(crate) device: LoopDevice,
    pub(crate) _keepalive: Option<AttachedLoop>,
}

pub(crate) trait BlockHost {
    fn clone_file(
        &self,
        src: &Path,
        dst: &Path,
        strategy: StorageStrategy,
    ) -> Result<CloneMethod, CloneFileError>;
    fn file_len(&self, path: &Path) -> io::Result<u64>;
    /// Creates `path` (which must not exist) as a sparse file of `len` bytes.
    fn create_sparse_file(&self, path: &Path, len: u64) -> io::Result<()>;
    /// Removes `path`; a missing file is fine.
    fn remove_file(&self, path: &Path) -> io::Result<()>;
    fn exists(&self, path: &Path) -> bool;
    fn attach_loop(&self, path: &Path, options: LoopOptions) -> Result<HeldLoop, AttachLoopError>;
    /// Detaches `device` if it is still bound to `backing`.
    fn detach_loop(&self, device: LoopDevice, backing: &Path) -> Result<(), DetachLoopError>;
    fn dm_create(&self, name: &str, table: &str) -> Result<(), ExecError>;
    fn dm_remove(&self, name: &str) -> Result<(), ExecError>;
    fn dm_exists(&self, name: &str) -> bool;
}

/// The real host.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct RealHost;

impl BlockHost for RealHost {
    fn clone_file(
        &self,
        src: &Path,
        dst: &Path,
        strategy: StorageStrategy,
    ) -> Result<CloneMethod, CloneFileError> {
        clone::clone_file(src, dst, strategy)
    }

    fn file_len(&self, path: &Path) -> io::Result<u64> {
        Ok(fs::metadata(path)?.len())
    }

    fn create_sparse_file(&self, path: &Path, len: u64) -> io::Result<()> {
        let file = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(DISK_FILE_MODE)
            .open(path)?;
        file.set_len(len)?;
        Ok(())
    }

    fn remove_file(&self, path: &Path) -> io::Result<()> {
        match fs::remove_file(path) {
            Err(error) if error.kind() == io::ErrorKind::NotFound => Ok(()),
            other => other,
        }
    }

    fn exists(&self, path: &Path) -> bool {
        path.exists()
    }

    fn attach_loop(&self, path: &Path, options: LoopOptions) -> Result<HeldLoop, AttachLoopError> {
        let attached = loopdev::attach(path, options)?;
        Ok(HeldLoop {
            device: attached.device(),
            _keepalive: Some(attached),
        })
    }

    fn detach_loop(&self, device: LoopDevice, backing: &Path) -> Result<(), DetachLoopError> {
        loopdev::detach_if_backed_by(device, backing).map(|_| ())
    }

    fn dm_create(&self, name: &str, table: &str) -> Result<(), ExecError> {
        dm::create(name, table)
    }

    fn dm_remove(&self, name: &str) -> Result<(), ExecError> {
        dm::remove(name)
    }

    fn dm_exists(&self, name: &str) -> bool {
        dm::exists(name)
    }
}

#[cfg(test)]
pub(crate) mod fake {
    //! A recording [`BlockHost`] that fails the Nth call of an operation.

    use std::cell::RefCell;
    use std::collections::{BTreeSet, HashMap};
    use std::path::PathBuf;

    use super::*;

    #[derive(Debug, Default)]
    pub(crate) struct FakeHost {
        pub(crate) log: RefCell<Vec<String>>,
        counts: RefCell<HashMap<&'static str, usize>>,
        fail: RefCell<Vec<(&'static str, usize)>>,
        pub(crate) files: RefCell<BTreeSet<PathBuf>>,
        pub(crate) loops: RefCell<Vec<(LoopDevice, PathBuf)>>,
        pub(crate) dms: RefCell<BTreeSet<String>>,
        next_loop: RefCell<u32>,
    }

    impl FakeHost {
        pub(crate) fn with_file(path: &str) -> Self {
            let host = Self::default();
            host.files.borrow_mut().insert(PathBuf::from(path));
            host
        }

        /// Makes the `nth` (1-based) call of `op` fail.
        pub(crate) fn fail(&self, op: &'static str, nth: usize) {
            self.fail.borrow_mut().push((op, nth));
        }

        fn call(&self, op: &'static str, detail: String) -> Result<(), io::Error> {
            let mut counts = self.counts.borrow_mut();
            let count = counts.entry(op).or_default();
            *count += 1;
            let failing = self.fail.borrow().contains(&(op, *count));
            self.log.borrow_mut().push(if failing {
                format!("{op} {detail} -> FAIL")
            } else {
                format!("{op} {detail}")
            });
            if failing {
                Err(io::Error::other(format!(
                    "injected failure of {op} call {count}"
                )))
            } else {
                Ok(())
            }
        }

        pub(crate) fn log(&self) -> Vec<String> {
            self.log.borrow().clone()
        }

        pub(crate) fn clear_log(&self) {
            self.log.borrow_mut().clear();
        }
    }

    fn exec_failure(error: io::Error) -> ExecError {
        ExecError::Spawn {
            program: crate::exec::Tool::Dmsetup.program().to_owned(),
            source: error,
        }
    }

    impl BlockHost for FakeHost {
        fn clone_file(
            &self,
            src: &Path,
            dst: &Path,
            strategy: StorageStrategy,
        ) -> Result<CloneMethod, CloneFileError> {
            self.call(
                "clone",
                format!("{} {} {strategy}", src.display(), dst.display()),
            )
            .map_err(|source| CloneFileError::Copy {
                src: src.to_owned(),
                dst: dst.to_owned(),
                source,
            })?;
            self.files.borrow_mut().insert(dst.to_owned());
            Ok(match strategy {
                StorageStrategy::Reflink => CloneMethod::Reflink,
                _ => CloneMethod::SparseCopy,
            })
        }

        fn file_len(&self, path: &Path) -> io::Result<u64> {
            if self.files.borrow().contains(path) {
                Ok(1 << 30)
            } else {
                Err(io::Error::from(io::ErrorKind::NotFound))
            }
        }

        fn create_sparse_file(&self, path: &Path, len: u64) -> io::Result<()> {
            self.call("create_sparse", format!("{} {len}", path.display()))?;
            if !self.files.borrow_mut().insert(path.to_owned()) {
                return Err(io::Error::from(io::ErrorKind::AlreadyExists));
            }
            Ok(())
        }

        fn remove_file(&self, path: &Path) -> io::Result<()> {
            self.call("remove_file", path.display().to_string())?;
            self.files.borrow_mut().remove(path);
            Ok(())
        }

        fn exists(&self, path: &Path) -> bool {
            self.files.borrow().contains(path)
        }

        fn attach_loop(
            &self,
            path: &Path,
            options: LoopOptions,
        ) -> Result<HeldLoop, AttachLoopError> {
            let mut number = self.next_loop.borrow_mut();
            let device = LoopDevice { number: *number };
            let mode = if options.read_only { "ro" } else { "rw" };
            self.call("attach", format!("{} {mode} -> {device}", path.display()))
                .map_err(|source| AttachLoopError::Bind {
                    path: path.to_owned(),
                    device,
                    source,
                })?;
            *number += 1;
            self.loops.borrow_mut().push((device, path.to_owned()));
            Ok(HeldLoop {
                device,
                _keepalive: None,
            })
        }

        fn detach_loop(&self, device: LoopDevice, backing: &Path) -> Result<(), DetachLoopError> {
            self.call("detach", format!("{device} {}", backing.display()))
                .map_err(|source| DetachLoopError::Ioctl { device, source })?;
            self.loops
                .borrow_mut()
                .retain(|(attached, path)| !(*attached == device && path == backing));
            Ok(())
        }

        fn dm_create(&self, name: &str, table: &str) -> Result<(), ExecError> {
            self.call("dm_create", format!("{name} {table}"))
                .map_err(exec_failure)?;
            self.dms.borrow_mut().insert(name.to_owned());
            Ok(())
        }

        fn dm_remove(&self, name: &str) -> Result<(), ExecError> {
            self.call("dm_remove", name.to_owned())
                .map_err(exec_failure)?;
            self.dms.borrow_mut().remove(name);
            Ok(())
        }

        fn dm_exists(&self, name: &str) -> bool {
            self.dms.borrow().contains(name)
        }
    }
}
