//! Loop devices through the kernel's ioctls: attach a file (read-only and
//! auto-clear as options), detach, and list attached devices by their
//! backing file from `/sys/block/loop*/loop/backing_file`.
//!
//! Attaching races with every other process on the host that grabs loop
//! devices: the number `LOOP_CTL_GET_FREE` hands out may be taken before we
//! bind it, in which case binding fails with `EBUSY` and we ask again.

use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::path::{Path, PathBuf};

use fs_err as fs;
use nix::errno::Errno;
use serde::{Deserialize, Serialize};

use crate::sys;

const LOOP_CONTROL: &str = "/dev/loop-control";
const SYS_BLOCK: &str = "/sys/block";
const ATTACH_ATTEMPTS: usize = 32;

/// A loop device, `/dev/loop<number>`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct LoopDevice {
    pub number: u32,
}

impl LoopDevice {
    pub fn path(&self) -> PathBuf {
        PathBuf::from(format!("/dev/loop{}", self.number))
    }

    fn sys_dir(&self) -> PathBuf {
        Path::new(SYS_BLOCK).join(format!("loop{}", self.number))
    }

    /// The file this device is bound to now, from sysfs; `None` when the
    /// device is unbound (or gone).
    pub fn backing_file(&self) -> Result<Option<BackingFile>, ListLoopsError> {
        read_backing_file(&self.sys_dir())
    }
}

impl std::fmt::Display for LoopDevice {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "/dev/loop{}", self.number)
    }
}

/// How to attach.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct LoopOptions {
    /// The device refuses writes (and the backing file is opened read-only).
    pub read_only: bool,
    /// The kernel detaches the device by itself once its last user closes
    /// it (this process's descriptor, a mount, device-mapper). A crash then
    /// cannot leak the device.
    pub autoclear: bool,
}

/// An attached loop device together with an open descriptor of it. While
/// this value lives, an auto-clear device stays attached; dropping it
/// closes the descriptor (and so detaches an auto-clear device nobody else
/// holds). It never detaches a device that is not auto-clear: use
/// [`detach`] or [`AttachedLoop::detach`].
#[derive(Debug)]
pub struct AttachedLoop {
    device: LoopDevice,
    backing: PathBuf,
    fd: OwnedFd,
}

impl AttachedLoop {
    pub fn device(&self) -> LoopDevice {
        self.device
    }

    /// The backing file as given to [`attach`].
    pub fn backing(&self) -> &Path {
        &self.backing
    }

    /// Detaches through the held descriptor (no chance of hitting a device
    /// number somebody else reused), then closes it.
    pub fn detach(self) -> Result<(), DetachLoopError> {
        match sys::loop_clr_fd(self.fd.as_fd()) {
            Ok(()) | Err(Errno::ENXIO) => Ok(()),
            Err(errno) => Err(DetachLoopError::Ioctl {
                device: self.device,
                source: errno.into(),
            }),
        }
    }

    /// Closes the descriptor, keeping the device attached (unless it is
    /// auto-clear and unused, in which case the kernel detaches it).
    pub fn release(self) -> LoopDevice {
        self.device
    }
}

#[derive(Debug, thiserror::Error)]
pub enum AttachLoopError {
    #[error("cannot open {path} to attach it to a loop device")]
    OpenBacking {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("cannot open {LOOP_CONTROL}; is the loop module loaded and are we root?")]
    OpenControl {
        #[source]
        source: io::Error,
    },
    #[error("no free loop device for {path}")]
    GetFree {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("cannot open loop device {device}")]
    OpenDevice {
        device: LoopDevice,
        #[source]
        source: io::Error,
    },
    #[error("cannot bind {path} to loop device {device}")]
    Bind {
        path: PathBuf,
        device: LoopDevice,
        #[source]
        source: io::Error,
    },
    #[error(
        "every free loop device was taken by someone else while attaching {path}; gave up after {ATTACH_ATTEMPTS} attempts"
    )]
    Contended { path: PathBuf },
}

#[derive(Debug, thiserror::Error)]
pub enum DetachLoopError {
    #[error("cannot open loop device {device}")]
    Open {
        device: LoopDevice,
        #[source]
        source: io::Error,
    },
    #[error("cannot detach loop device {device}")]
    Ioctl {
        device: LoopDevice,
        #[source]
        source: io::Error,
    },
    #[error("cannot read the backing file of {device}")]
    Inspect {
        device: LoopDevice,
        #[source]
        source: Box<ListLoopsError>,
    },
}

#[derive(Debug, thiserror::Error)]
pub enum ListLoopsError {
    #[error("cannot read {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

/// Whether loop device `path` (e.g. `/dev/loop3`) is bound to a file now.
pub fn is_attached(path: &Path) -> bool {
    path.file_name()
        .is_some_and(|name| Path::new(SYS_BLOCK).join(name).join("loop").exists())
}

/// Attaches `backing` to a free loop device.
#[tracing::instrument(level = "debug", skip_all, fields(backing = %backing.display(), read_only = options.read_only, autoclear = options.autoclear))]
pub fn attach(backing: &Path, options: LoopOptions) -> Result<AttachedLoop, AttachLoopError> {
    let file = fs::OpenOptions::new()
        .read(true)
        .write(!options.read_only)
        .open(backing)
        .map_err(|error| AttachLoopError::OpenBacking {
            path: backing.to_owned(),
            source: error,
        })?;
    let control = fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(LOOP_CONTROL)
        .map_err(|error| AttachLoopError::OpenControl { source: error })?;
    let mut flags = 0;
    if options.read_only {
        flags |= sys::LO_FLAGS_READ_ONLY;
    }
    if options.autoclear {
        flags |= sys::LO_FLAGS_AUTOCLEAR;
    }
    let mut info = sys::LoopInfo64::zeroed();
    info.lo_flags = flags;
    let name = backing.as_os_str().as_encoded_bytes();
    let len = name.len().min(sys::LO_NAME_SIZE - 1);
    info.lo_file_name[..len].copy_from_slice(&name[..len]);

    for _ in 0..ATTACH_ATTEMPTS {
        let number = sys::loop_ctl_get_free(control.file().as_fd()).map_err(|errno| {
            AttachLoopError::GetFree {
                path: backing.to_owned(),
                source: errno.into(),
            }
        })?;
        let device = LoopDevice { number };
        let device_file = match open_device(device) {
            Ok(file) => file,
            // The node may lag behind its creation for a moment.
            Err(error) if error.kind() == io::ErrorKind::NotFound => {
                std::thread::sleep(std::time::Duration::from_millis(5));
                continue;
            }
            Err(source) => return Err(AttachLoopError::OpenDevice { device, source }),
        };
        let fd: OwnedFd = device_file.into();
        match bind(fd.as_fd(), file.file().as_fd(), &info) {
            Ok(()) => {
                tracing::debug!(device = %device, "attached loop device");
                return Ok(AttachedLoop {
                    device,
                    backing: backing.to_owned(),
                    fd,
                });
            }
            // Somebody bound it between GET_FREE and our bind: try another.
            Err(Errno::EBUSY) => continue,
            Err(errno) => {
                return Err(AttachLoopError::Bind {
                    path: backing.to_owned(),
                    device,
                    source: errno.into(),
                });
            }
        }
    }
    Err(AttachLoopError::Contended {
        path: backing.to_owned(),
    })
}

fn open_device(device: LoopDevice) -> io::Result<std::fs::File> {
    std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(device.path())
}

/// LOOP_CONFIGURE where the kernel has it (5.8+), else SET_FD + SET_STATUS64.
fn bind(
    device: std::os::fd::BorrowedFd<'_>,
    backing: std::os::fd::BorrowedFd<'_>,
    info: &sys::LoopInfo64,
) -> nix::Result<()> {
    use std::os::fd::AsRawFd;
    let config = sys::LoopConfig {
        fd: backing.as_raw_fd() as u32,
        block_size: 0,
        info: *info,
        reserved: [0; 8],
    };
    match sys::loop_configure(device, &config) {
        Ok(()) => Ok(()),
        Err(Errno::EINVAL | Errno::ENOTTY) => {
            sys::loop_set_fd(device, backing)?;
            if let Err(errno) = sys::loop_set_status64(device, info) {
                let _ = sys::loop_clr_fd(device);
                return Err(errno);
            }
            Ok(())
        }
        Err(errno) => Err(errno),
    }
}

/// Detaches `device`. A device that is already unbound is not an error.
/// A device still in use (mounted, held by device-mapper) is turned into
/// an auto-clear device by the kernel and goes away when released.
pub fn detach(device: LoopDevice) -> Result<(), DetachLoopError> {
    let file = match open_device(device) {
        Ok(file) => file,
        Err(error) if error.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(source) => return Err(DetachLoopError::Open { device, source }),
    };
    match sys::loop_clr_fd(file.as_fd()) {
        Ok(()) | Err(Errno::ENXIO) => {
            tracing::debug!(device = %device, "detached loop device");
            Ok(())
        }
        Err(errno) => Err(DetachLoopError::Ioctl {
            device,
            source: errno.into(),
        }),
    }
}

/// Detaches `device` only if it is still bound to `expected` (device
/// numbers are reused, so a stored number alone proves nothing). Returns
/// whether it detached anything.
pub fn detach_if_backed_by(device: LoopDevice, expected: &Path) -> Result<bool, DetachLoopError> {
    let current = device
        .backing_file()
        .map_err(|source| DetachLoopError::Inspect {
            device,
            source: Box::new(source),
        })?;
    let Some(current) = current else {
        return Ok(false);
    };
    let expected = canonical_or_same(expected);
    if current.path != expected {
        tracing::debug!(device = %device, current = %current.path.display(), expected = %expected.display(), "loop device now belongs to another file; leaving it");
        return Ok(false);
    }
    detach(device)?;
    Ok(true)
}

fn canonical_or_same(path: &Path) -> PathBuf {
    std::fs::canonicalize(path).unwrap_or_else(|_| path.to_owned())
}

/// What a loop device is bound to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BackingFile {
    pub path: PathBuf,
    /// The file was deleted while attached (sysfs appends ` (deleted)`).
    pub deleted: bool,
}

/// An attached loop device and its backing file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LoopInfo {
    pub device: LoopDevice,
    pub backing: BackingFile,
}

fn read_backing_file(sys_dir: &Path) -> Result<Option<BackingFile>, ListLoopsError> {
    let path = sys_dir.join("loop/backing_file");
    let raw = match std::fs::read(&path) {
        Ok(raw) => raw,
        Err(error) if error.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(source) => return Err(ListLoopsError::Read { path, source }),
    };
    Ok(parse_backing_file(&raw))
}

fn parse_backing_file(raw: &[u8]) -> Option<BackingFile> {
    use std::os::unix::ffi::OsStrExt;
    let raw = raw.strip_suffix(b"\n").unwrap_or(raw);
    if raw.is_empty() {
        return None;
    }
    let (raw, deleted) = match raw.strip_suffix(b" (deleted)") {
        Some(stripped) => (stripped, true),
        None => (raw, false),
    };
    Some(BackingFile {
        path: PathBuf::from(std::ffi::OsStr::from_bytes(raw)),
        deleted,
    })
}

/// Every attached loop device on the host.
pub fn list_attached() -> Result<Vec<LoopInfo>, ListLoopsError> {
    let read_error = |source| ListLoopsError::Read {
        path: PathBuf::from(SYS_BLOCK),
        source,
    };
    let mut found = Vec::new();
    for entry in std::fs::read_dir(SYS_BLOCK).map_err(read_error)? {
        let entry = entry.map_err(read_error)?;
        let name = entry.file_name();
        let Some(number) = name
            .to_str()
            .and_then(|name| name.strip_prefix("loop"))
            .and_then(|number| number.parse::<u32>().ok())
        else {
            continue;
        };
        if let Some(backing) = read_backing_file(&entry.path())? {
            found.push(LoopInfo {
                device: LoopDevice { number },
                backing,
            });
        }
    }
    found.sort_by_key(|info| info.device);
    Ok(found)
}

/// Attached loop devices whose backing file lies under `dir` (compared
/// after resolving symlinks in `dir`, as sysfs reports resolved paths).
/// This is how reconcile finds what a crashed daemon left behind.
pub fn list_backed_under(dir: &Path) -> Result<Vec<LoopInfo>, ListLoopsError> {
    let dir = canonical_or_same(dir);
    Ok(list_attached()?
        .into_iter()
        .filter(|info| info.backing.path.starts_with(&dir))
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_sysfs_backing_file() {
        assert_eq!(
            parse_backing_file(b"/var/lib/x y/root.ext4\n"),
            Some(BackingFile {
                path: PathBuf::from("/var/lib/x y/root.ext4"),
                deleted: false
            })
        );
        assert_eq!(
            parse_backing_file(b"/tmp/a.img (deleted)\n"),
            Some(BackingFile {
                path: PathBuf::from("/tmp/a.img"),
                deleted: true
            })
        );
        assert_eq!(parse_backing_file(b"\n"), None);
    }

    #[test]
    fn device_paths() {
        assert_eq!(LoopDevice { number: 12 }.path(), Path::new("/dev/loop12"));
        assert_eq!(LoopDevice { number: 3 }.to_string(), "/dev/loop3");
    }
}
