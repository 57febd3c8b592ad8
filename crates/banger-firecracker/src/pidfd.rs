//! Process file descriptors: race-free signalling and exit notification for
//! VMM processes, including ones this process did not start.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

use nix::sys::signal::Signal;
use tokio::io::Interest;
use tokio::io::unix::AsyncFd;

/// `pidfd_open(2)` for `pid`.
pub fn open(pid: u32) -> io::Result<OwnedFd> {
    let pid = libc::pid_t::try_from(pid).map_err(|_| io::Error::from_raw_os_error(libc::ESRCH))?;
    // SAFETY: pidfd_open takes a pid and flags and returns a new descriptor
    // or -1; no memory is passed.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    let fd = i32::try_from(fd).map_err(|_| io::Error::other("pidfd out of range"))?;
    // SAFETY: the kernel just returned this descriptor to us; nobody else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// `pidfd_send_signal(2)`. `ESRCH` means the process has already exited.
pub fn send_signal(fd: &OwnedFd, signal: Signal) -> io::Result<()> {
    // SAFETY: a valid pidfd, a signal number, a null siginfo (allowed: the
    // kernel fills in a default) and zero flags.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_pidfd_send_signal,
            fd.as_raw_fd(),
            signal as libc::c_int,
            std::ptr::null::<libc::siginfo_t>(),
            0,
        )
    };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Resolves when the process behind `fd` has exited (the pidfd becomes
/// readable).
pub async fn exited(fd: OwnedFd) -> io::Result<()> {
    // SAFETY: the OwnedFd is moved into the AsyncFd, which keeps it open and
    // unreplaced until it is dropped (deregistered) below.
    let fd = unsafe { AsyncFd::register_with_interest(fd, Interest::READABLE)? };
    let _guard = fd.readable().await?;
    Ok(())
}
