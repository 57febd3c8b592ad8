//! Raw ioctl declarations and kernel structure layouts: FICLONE, the loop
//! driver and device-mapper's version query; and `sync_file_range`. Callers wrap these in safe
//! functions; nothing outside this crate sees them.
#![allow(unreachable_pub)]

use std::os::fd::{AsRawFd, BorrowedFd};

// FICLONE = _IOW(0x94, 9, int): share the source file's extents.
nix::ioctl_write_int!(ficlone_raw, 0x94, 9);

/// Makes `dst` share all of `src`'s extents (reflink).
pub(crate) fn ficlone(dst: BorrowedFd<'_>, src: BorrowedFd<'_>) -> nix::Result<()> {
    // SAFETY: FICLONE takes the source descriptor as its integer argument;
    // both descriptors are borrowed, so they stay open for the call.
    unsafe {
        ficlone_raw(
            dst.as_raw_fd(),
            src.as_raw_fd() as nix::sys::ioctl::ioctl_param_type,
        )
    }?;
    Ok(())
}

/// Starts writing `file`'s dirty pages back (`sync_file_range` with
/// `SYNC_FILE_RANGE_WRITE`): it returns without waiting for them, so the
/// disk writes while the caller goes on.
pub(crate) fn start_writeback(file: BorrowedFd<'_>) -> nix::Result<()> {
    // SAFETY: sync_file_range takes a descriptor (borrowed, so open for the
    // call), a range (0, 0: the whole file) and flags; no memory is passed.
    let done = unsafe {
        nix::libc::sync_file_range(file.as_raw_fd(), 0, 0, nix::libc::SYNC_FILE_RANGE_WRITE)
    };
    nix::errno::Errno::result(done).map(drop)
}

// The loop driver's ioctls are not _IO-encoded ("bad" in nix's terms).
const LOOP_SET_FD: u64 = 0x4C00;
const LOOP_CLR_FD: u64 = 0x4C01;
const LOOP_SET_STATUS64: u64 = 0x4C04;
const LOOP_CONFIGURE: u64 = 0x4C0A;
const LOOP_CTL_GET_FREE: u64 = 0x4C82;

pub(crate) const LO_FLAGS_READ_ONLY: u32 = 1;
pub(crate) const LO_FLAGS_AUTOCLEAR: u32 = 4;

pub(crate) const LO_NAME_SIZE: usize = 64;

/// `struct loop_info64` from `<linux/loop.h>`.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub(crate) struct LoopInfo64 {
    pub lo_device: u64,
    pub lo_inode: u64,
    pub lo_rdevice: u64,
    pub lo_offset: u64,
    pub lo_sizelimit: u64,
    pub lo_number: u32,
    pub lo_encrypt_type: u32,
    pub lo_encrypt_key_size: u32,
    pub lo_flags: u32,
    pub lo_file_name: [u8; LO_NAME_SIZE],
    pub lo_crypt_name: [u8; LO_NAME_SIZE],
    pub lo_encrypt_key: [u8; 32],
    pub lo_init: [u64; 2],
}

impl LoopInfo64 {
    pub(crate) fn zeroed() -> Self {
        Self {
            lo_device: 0,
            lo_inode: 0,
            lo_rdevice: 0,
            lo_offset: 0,
            lo_sizelimit: 0,
            lo_number: 0,
            lo_encrypt_type: 0,
            lo_encrypt_key_size: 0,
            lo_flags: 0,
            lo_file_name: [0; LO_NAME_SIZE],
            lo_crypt_name: [0; LO_NAME_SIZE],
            lo_encrypt_key: [0; 32],
            lo_init: [0; 2],
        }
    }
}

/// `struct loop_config` from `<linux/loop.h>` (LOOP_CONFIGURE, Linux 5.8+).
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub(crate) struct LoopConfig {
    pub fd: u32,
    pub block_size: u32,
    pub info: LoopInfo64,
    pub reserved: [u64; 8],
}

const _: () = assert!(std::mem::size_of::<LoopInfo64>() == 232);
const _: () = assert!(std::mem::size_of::<LoopConfig>() == 304);

nix::ioctl_none_bad!(loop_ctl_get_free_raw, LOOP_CTL_GET_FREE);
nix::ioctl_write_int_bad!(loop_set_fd_raw, LOOP_SET_FD);
nix::ioctl_none_bad!(loop_clr_fd_raw, LOOP_CLR_FD);
nix::ioctl_write_ptr_bad!(loop_set_status64_raw, LOOP_SET_STATUS64, LoopInfo64);
nix::ioctl_write_ptr_bad!(loop_configure_raw, LOOP_CONFIGURE, LoopConfig);

/// Asks `/dev/loop-control` for a free loop device number (creating the
/// device if needed).
pub(crate) fn loop_ctl_get_free(control: BorrowedFd<'_>) -> nix::Result<u32> {
    // SAFETY: LOOP_CTL_GET_FREE takes no argument; the descriptor is
    // borrowed for the call.
    let number = unsafe { loop_ctl_get_free_raw(control.as_raw_fd()) }?;
    Ok(number as u32)
}

/// Binds `backing` to the loop device in one step.
pub(crate) fn loop_configure(device: BorrowedFd<'_>, config: &LoopConfig) -> nix::Result<()> {
    // SAFETY: `config` points to a live, correctly laid out `loop_config`
    // (size asserted above) that the kernel only reads.
    unsafe { loop_configure_raw(device.as_raw_fd(), config) }?;
    Ok(())
}

/// The pre-5.8 way to bind: LOOP_SET_FD, then LOOP_SET_STATUS64.
pub(crate) fn loop_set_fd(device: BorrowedFd<'_>, backing: BorrowedFd<'_>) -> nix::Result<()> {
    // SAFETY: LOOP_SET_FD takes the backing descriptor as its integer
    // argument; both descriptors are borrowed for the call.
    unsafe { loop_set_fd_raw(device.as_raw_fd(), backing.as_raw_fd()) }?;
    Ok(())
}

pub(crate) fn loop_set_status64(device: BorrowedFd<'_>, info: &LoopInfo64) -> nix::Result<()> {
    // SAFETY: `info` points to a live `loop_info64` that the kernel reads.
    unsafe { loop_set_status64_raw(device.as_raw_fd(), info) }?;
    Ok(())
}

pub(crate) fn loop_clr_fd(device: BorrowedFd<'_>) -> nix::Result<()> {
    // SAFETY: LOOP_CLR_FD takes no argument; the descriptor is borrowed.
    unsafe { loop_clr_fd_raw(device.as_raw_fd()) }?;
    Ok(())
}

/// `struct dm_ioctl` from `<linux/dm-ioctl.h>`.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub(crate) struct DmIoctl {
    pub version: [u32; 3],
    pub data_size: u32,
    pub data_start: u32,
    pub target_count: u32,
    pub open_count: i32,
    pub flags: u32,
    pub event_nr: u32,
    pub padding: u32,
    pub dev: u64,
    pub name: [u8; 128],
    pub uuid: [u8; 129],
    pub data: [u8; 7],
}

const _: () = assert!(std::mem::size_of::<DmIoctl>() == 312);

// DM_VERSION = _IOWR(0xfd, 0, struct dm_ioctl)
nix::ioctl_readwrite!(dm_version_raw, 0xfd, 0, DmIoctl);

/// Asks the device-mapper control device for its interface version.
pub(crate) fn dm_version(control: BorrowedFd<'_>) -> nix::Result<[u32; 3]> {
    let mut request = DmIoctl {
        // The interface major version this code speaks; minor 0 is
        // accepted by every 4.x kernel.
        version: [4, 0, 0],
        data_size: std::mem::size_of::<DmIoctl>() as u32,
        data_start: std::mem::size_of::<DmIoctl>() as u32,
        target_count: 0,
        open_count: 0,
        flags: 0,
        event_nr: 0,
        padding: 0,
        dev: 0,
        name: [0; 128],
        uuid: [0; 129],
        data: [0; 7],
    };
    // SAFETY: `request` is a live, writable `dm_ioctl` (size asserted
    // above) whose data_size says exactly how much the kernel may touch.
    unsafe { dm_version_raw(control.as_raw_fd(), &mut request) }?;
    Ok(request.version)
}
