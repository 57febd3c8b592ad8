//! What the unpacker needs beyond `banger-rootfs`: the staging root's
//! confinement and setting xattrs.
//!
//! Every path is resolved with `RESOLVE_BENEATH | RESOLVE_NO_MAGICLINKS |
//! RESOLVE_NO_XDEV`, so the kernel refuses any resolution that would leave
//! the staging root, however the symlinks inside it are arranged. Not
//! `RESOLVE_IN_ROOT`: a layer's absolute symlink (`etc -> /etc`) is kept as
//! a symlink for the guest, but a later entry beneath it is refused rather
//! than written into the guest's `/etc`; refusing is the stricter choice for
//! data that may have been built to aim at the host, and the names the
//! unpacker resolves never start with `/` or contain `..` themselves.

use std::ffi::CString;
use std::io;
use std::os::fd::{AsFd, AsRawFd};

use banger_rootfs::Resolve;

/// How the unpacker resolves paths under its staging root.
pub(crate) fn staging_resolve() -> Resolve {
    Resolve::beneath().no_xdev()
}

/// `fsetxattr(2)`.
pub(crate) fn set_xattr(fd: impl AsFd, name: &str, value: &[u8]) -> io::Result<()> {
    let name = CString::new(name).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    // SAFETY: `fd` is a live descriptor for the duration of the call, `name`
    // is a NUL-terminated string and `value` a valid slice of `value.len()`
    // bytes; the kernel only reads from both.
    let result = unsafe {
        libc::fsetxattr(
            fd.as_fd().as_raw_fd(),
            name.as_ptr(),
            value.as_ptr().cast(),
            value.len(),
            0,
        )
    };
    if result == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}
