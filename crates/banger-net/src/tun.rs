//! Persistent TAP devices through `/dev/net/tun` ioctls.
//!
//! The kernel cannot create TUN/TAP devices over rtnetlink (its `tun` link
//! type rejects `RTM_NEWLINK`), so this is the one place that uses the
//! character device: `TUNSETIFF` creates (or opens) the TAP, `TUNSETPERSIST`
//! keeps it after our descriptor closes. Firecracker later opens the TAP by
//! name with `IFF_TAP | IFF_NO_PI | IFF_VNET_HDR`; the kernel lets a
//! privileged opener attach to an existing persistent TAP and takes the
//! opener's feature flags, so the flags used here only need the TAP type and
//! no multi-queue. Without an owner the TAP is root's: the VMM must run with
//! `CAP_NET_ADMIN`, as it does when the daemon runs as root. With an owner
//! (`TUNSETOWNER`, what `banger-helper` asks for on a user's behalf) that
//! user may open it without any capability.

use std::ffi::c_int;
use std::io;
use std::os::fd::AsRawFd;

/// A failed step of TAP creation.
#[derive(Debug)]
pub(crate) struct TunError {
    pub(crate) step: &'static str,
    pub(crate) source: io::Error,
}

const TUN_DEVICE: &str = "/dev/net/tun";

/// Creates the persistent TAP `name`, or opens it when it already exists
/// (a persistent TAP nobody has open). Returns whether it was created.
/// With `owner`, the TAP is made that uid's (`TUNSETOWNER`), adopted or not.
///
/// `name` must already be validated (at most 15 bytes, no NUL).
pub(crate) fn create_persistent_tap(name: &str, owner: Option<u32>) -> Result<bool, TunError> {
    match set_iff_persist(name, true, owner) {
        Ok(()) => Ok(true),
        // IFF_TUN_EXCL: EBUSY means the device exists. Adopt it.
        Err(error) if error.source.raw_os_error() == Some(libc::EBUSY) => {
            set_iff_persist(name, false, owner).map(|()| false)
        }
        Err(error) => Err(error),
    }
}

fn set_iff_persist(name: &str, exclusive: bool, owner: Option<u32>) -> Result<(), TunError> {
    let file = fs_err::OpenOptions::new()
        .read(true)
        .write(true)
        .open(TUN_DEVICE)
        .map_err(|source| TunError {
            step: "open /dev/net/tun for",
            source,
        })?;
    let fd = file.as_raw_fd();

    // SAFETY: `ifreq` is a C struct of a byte array and a union of plain
    // integers, pointers and arrays; all-zero bytes are a valid value of it.
    let mut ifr: libc::ifreq = unsafe { std::mem::zeroed() };
    let bytes = name.as_bytes();
    if bytes.len() >= ifr.ifr_name.len() || bytes.contains(&0) {
        return Err(TunError {
            step: "name",
            source: io::Error::from_raw_os_error(libc::EINVAL),
        });
    }
    for (slot, byte) in ifr.ifr_name.iter_mut().zip(bytes) {
        *slot = *byte as libc::c_char;
    }
    let mut flags: c_int = libc::IFF_TAP | libc::IFF_NO_PI | libc::IFF_VNET_HDR;
    if exclusive {
        flags |= libc::IFF_TUN_EXCL;
    }
    ifr.ifr_ifru.ifru_flags = flags as libc::c_short;

    // SAFETY: `fd` is an open descriptor of /dev/net/tun owned by `file`,
    // which outlives the call; TUNSETIFF reads and writes one `ifreq`, and
    // `ifr` is a valid, exclusively borrowed `ifreq` for the whole call.
    let rc = unsafe { libc::ioctl(fd, libc::TUNSETIFF, &mut ifr as *mut libc::ifreq) };
    if rc < 0 {
        return Err(TunError {
            step: "create",
            source: io::Error::last_os_error(),
        });
    }
    if let Some(uid) = owner {
        // SAFETY: `fd` is still open (owned by `file`); TUNSETOWNER takes the
        // uid by value and touches no memory of ours.
        let rc = unsafe { libc::ioctl(fd, libc::TUNSETOWNER, uid as libc::c_ulong) };
        if rc < 0 {
            return Err(TunError {
                step: "set the owner of",
                source: io::Error::last_os_error(),
            });
        }
    }
    // SAFETY: `fd` is still open (owned by `file`); TUNSETPERSIST takes its
    // argument by value and touches no memory of ours.
    let rc = unsafe { libc::ioctl(fd, libc::TUNSETPERSIST, 1 as libc::c_ulong) };
    if rc < 0 {
        return Err(TunError {
            step: "make persistent",
            source: io::Error::last_os_error(),
        });
    }
    Ok(())
}
