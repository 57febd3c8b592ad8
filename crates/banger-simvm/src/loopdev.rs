//! Loop devices with `LO_FLAGS_AUTOCLEAR`: the kernel detaches them when
//! their last user goes away (here: when the guest's mount namespace, which
//! holds the only mount, is torn down), so even a SIGKILLed simvm leaves none
//! behind. A handful of ioctls; no loop-device crate (the usual one needs
//! libclang to build).

use std::fs::File;
use std::io;
use std::os::fd::{AsRawFd, RawFd};
use std::path::{Path, PathBuf};

const LOOP_SET_FD: u32 = 0x4C00;
const LOOP_CLR_FD: u32 = 0x4C01;
const LOOP_SET_STATUS64: u32 = 0x4C04;
const LOOP_CONFIGURE: u32 = 0x4C0A;
const LOOP_CTL_GET_FREE: u32 = 0x4C82;

const LO_FLAGS_READ_ONLY: u32 = 1;
const LO_FLAGS_AUTOCLEAR: u32 = 4;
const LO_NAME_SIZE: usize = 64;

/// `struct loop_info64` from `<linux/loop.h>`.
#[repr(C)]
#[derive(Clone, Copy)]
struct LoopInfo64 {
    lo_device: u64,
    lo_inode: u64,
    lo_rdevice: u64,
    lo_offset: u64,
    lo_sizelimit: u64,
    lo_number: u32,
    lo_encrypt_type: u32,
    lo_encrypt_key_size: u32,
    lo_flags: u32,
    lo_file_name: [u8; LO_NAME_SIZE],
    lo_crypt_name: [u8; LO_NAME_SIZE],
    lo_encrypt_key: [u8; 32],
    lo_init: [u64; 2],
}

/// `struct loop_config` from `<linux/loop.h>`.
#[repr(C)]
#[derive(Clone, Copy)]
struct LoopConfig {
    fd: u32,
    block_size: u32,
    info: LoopInfo64,
    reserved: [u64; 8],
}

nix::ioctl_none_bad!(loop_ctl_get_free, LOOP_CTL_GET_FREE);
nix::ioctl_write_ptr_bad!(loop_configure, LOOP_CONFIGURE, LoopConfig);
nix::ioctl_write_int_bad!(loop_set_fd, LOOP_SET_FD);
nix::ioctl_write_ptr_bad!(loop_set_status64, LOOP_SET_STATUS64, LoopInfo64);
nix::ioctl_none_bad!(loop_clr_fd, LOOP_CLR_FD);

/// An attached loop device. Keep it open until the filesystem on it is
/// mounted; closing it afterwards leaves the mount as its only user.
#[derive(Debug)]
pub struct LoopDevice {
    pub path: PathBuf,
    pub file: File,
}

#[derive(Debug, thiserror::Error)]
pub enum AttachLoopError {
    #[error("could not open {path}")]
    Open {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("could not get a free loop device")]
    GetFree(#[source] io::Error),
    #[error("could not attach {backing} to {device}")]
    Configure {
        backing: PathBuf,
        device: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("no free loop device after {0} attempts")]
    Exhausted(usize),
}

fn info(backing: &Path, read_only: bool) -> LoopInfo64 {
    let mut name = [0u8; LO_NAME_SIZE];
    let bytes = backing.as_os_str().as_encoded_bytes();
    let len = bytes.len().min(LO_NAME_SIZE - 1);
    name[..len].copy_from_slice(&bytes[..len]);
    LoopInfo64 {
        lo_device: 0,
        lo_inode: 0,
        lo_rdevice: 0,
        lo_offset: 0,
        lo_sizelimit: 0,
        lo_number: 0,
        lo_encrypt_type: 0,
        lo_encrypt_key_size: 0,
        lo_flags: LO_FLAGS_AUTOCLEAR | if read_only { LO_FLAGS_READ_ONLY } else { 0 },
        lo_file_name: name,
        lo_crypt_name: [0; LO_NAME_SIZE],
        lo_encrypt_key: [0; 32],
        lo_init: [0; 2],
    }
}

/// Attaches `backing` (already open) to a free loop device with
/// autoclear set.
pub fn attach(
    backing_path: &Path,
    backing: &File,
    read_only: bool,
) -> Result<LoopDevice, AttachLoopError> {
    let control_path = Path::new("/dev/loop-control");
    let control = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(control_path)
        .map_err(|source| AttachLoopError::Open {
            path: control_path.to_owned(),
            source,
        })?;
    const ATTEMPTS: usize = 16;
    for _ in 0..ATTEMPTS {
        // SAFETY: LOOP_CTL_GET_FREE takes no argument and returns a device
        // number; the fd is a valid /dev/loop-control.
        let number = unsafe { loop_ctl_get_free(control.as_raw_fd()) }
            .map_err(|e| AttachLoopError::GetFree(e.into()))?;
        let path = PathBuf::from(format!("/dev/loop{number}"));
        let device = std::fs::OpenOptions::new()
            .read(true)
            .write(!read_only)
            .open(&path)
            .map_err(|source| AttachLoopError::Open {
                path: path.clone(),
                source,
            })?;
        match configure(
            device.as_raw_fd(),
            backing.as_raw_fd(),
            info(backing_path, read_only),
        ) {
            Ok(()) => return Ok(LoopDevice { path, file: device }),
            // Someone else took it between GET_FREE and our configure.
            Err(e) if e.raw_os_error() == Some(libc::EBUSY) => continue,
            Err(source) => {
                return Err(AttachLoopError::Configure {
                    backing: backing_path.to_owned(),
                    device: path,
                    source,
                });
            }
        }
    }
    Err(AttachLoopError::Exhausted(ATTEMPTS))
}

fn configure(device: RawFd, backing: RawFd, info: LoopInfo64) -> io::Result<()> {
    let config = LoopConfig {
        fd: u32::try_from(backing).map_err(|_| io::Error::from_raw_os_error(libc::EBADF))?,
        block_size: 0,
        info,
        reserved: [0; 8],
    };
    // SAFETY: `config` is a fully initialised `struct loop_config` that
    // outlives the call; `device` is an open loop device.
    match unsafe { loop_configure(device, &config) } {
        Ok(_) => return Ok(()),
        // Kernels before 5.8 lack LOOP_CONFIGURE: fall back to SET_FD + SET_STATUS64.
        Err(nix::errno::Errno::EINVAL | nix::errno::Errno::ENOTTY) => {}
        Err(e) => return Err(e.into()),
    }
    // SAFETY: LOOP_SET_FD takes the backing file descriptor by value.
    unsafe { loop_set_fd(device, backing) }.map_err(io::Error::from)?;
    // SAFETY: `info` is a fully initialised `struct loop_info64`.
    if let Err(e) = unsafe { loop_set_status64(device, &info) } {
        // SAFETY: LOOP_CLR_FD takes no argument; undoes our SET_FD.
        let _ = unsafe { loop_clr_fd(device) };
        return Err(e.into());
    }
    Ok(())
}

/// Whether loop device `path` (e.g. `/dev/loop3`) still has a backing file.
pub fn is_attached(path: &Path) -> bool {
    let Some(name) = path.file_name() else {
        return false;
    };
    Path::new("/sys/block").join(name).join("loop").exists()
}
