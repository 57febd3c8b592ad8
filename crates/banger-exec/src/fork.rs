//! [`fork`]: a copy of this process, for the rare program (simvm's guest
//! helper) that becomes two processes without running another program.

use std::io;

/// Which side of a [`fork`] this process is on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Forked {
    /// The original process; `child` is the new one's pid.
    Parent { child: i32 },
    /// The copy.
    Child,
}

/// fork(2).
///
/// # Safety
///
/// The caller must be single-threaded (or otherwise know that no other
/// thread holds a lock or is mid-allocation): the child gets a copy of
/// memory in which only the calling thread runs.
pub unsafe fn fork() -> io::Result<Forked> {
    // SAFETY: fork has no memory preconditions; the caller upholds the
    // threading contract above.
    match unsafe { libc::fork() } {
        -1 => Err(io::Error::last_os_error()),
        0 => Ok(Forked::Child),
        child => Ok(Forked::Parent { child }),
    }
}
