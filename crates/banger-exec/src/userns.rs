//! Running a program as root of a user namespace of its own, as
//! `unshare --map-root-user` does: the caller's uid and gid are 0 in it,
//! every other id is the overflow id (65534). A program that records file
//! owners (`mkfs.ext4 -d`) then records the caller's files as root's,
//! which is what a daemon running as its user needs for the images and
//! work disks it builds.

use std::io;

use crate::Cmd;

impl Cmd {
    /// Runs the program in a new user namespace where the uid and gid it
    /// starts with (after [`Cmd::uid`]/[`Cmd::gid`], if set) are 0. Needs
    /// unprivileged user namespaces (Debian's default).
    pub fn as_root_of_own_user_namespace(self) -> Self {
        // SAFETY: the hook only makes raw syscalls (prctl, geteuid, getegid,
        // unshare, open, write, close) on stack buffers: no allocation,
        // no locks, so it is async-signal-safe.
        unsafe { self.pre_exec(enter_user_namespace) }
    }
}

fn enter_user_namespace() -> io::Result<()> {
    // A process that changed its uid (`Cmd::uid`) is not dumpable, which
    // makes its /proc/self files root's: it could not write its own maps.
    // SAFETY: a plain prctl with integer arguments.
    if unsafe { libc::prctl(libc::PR_SET_DUMPABLE, 1, 0, 0, 0) } != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: plain syscalls without pointers.
    let (uid, gid) = unsafe { (libc::geteuid(), libc::getegid()) };
    // SAFETY: CLONE_NEWUSER moves only this (single-threaded, forked)
    // process into a new namespace.
    if unsafe { libc::unshare(libc::CLONE_NEWUSER) } != 0 {
        return Err(io::Error::last_os_error());
    }
    // gid_map may only be written once setgroups is denied.
    write_proc(c"/proc/self/setgroups", b"deny")?;
    let mut line = [0u8; 32];
    write_proc(c"/proc/self/uid_map", map_line(uid, &mut line))?;
    let mut line = [0u8; 32];
    write_proc(c"/proc/self/gid_map", map_line(gid, &mut line))?;
    Ok(())
}

/// `0 ID 1\n` in `buf`, without allocating.
fn map_line(id: u32, buf: &mut [u8; 32]) -> &[u8] {
    let mut digits = [0u8; 10];
    let mut n = id;
    let mut len = 0;
    loop {
        digits[len] = b'0' + (n % 10) as u8;
        len += 1;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    buf[0] = b'0';
    buf[1] = b' ';
    for i in 0..len {
        buf[2 + i] = digits[len - 1 - i];
    }
    buf[2 + len..2 + len + 3].copy_from_slice(b" 1\n");
    &buf[..2 + len + 3]
}

fn write_proc(path: &std::ffi::CStr, content: &[u8]) -> io::Result<()> {
    // SAFETY: `path` is NUL-terminated; the descriptor is closed below.
    let fd = unsafe { libc::open(path.as_ptr(), libc::O_WRONLY | libc::O_CLOEXEC) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `content` is valid for its length; `fd` is open.
    let written = unsafe { libc::write(fd, content.as_ptr().cast(), content.len()) };
    let error = io::Error::last_os_error();
    // SAFETY: `fd` is ours and open.
    unsafe { libc::close(fd) };
    if written != content.len() as isize {
        return Err(error);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn map_lines_are_written_without_allocating() {
        let mut buf = [0u8; 32];
        assert_eq!(map_line(0, &mut buf), b"0 0 1\n");
        let mut buf = [0u8; 32];
        assert_eq!(map_line(60001, &mut buf), b"0 60001 1\n");
        let mut buf = [0u8; 32];
        assert_eq!(map_line(u32::MAX, &mut buf), b"0 4294967295 1\n");
    }

    /// As another user, the user's own file looks root's and root's file
    /// looks like the overflow id's.
    #[test]
    fn the_callers_files_look_roots() {
        if !banger_testkit::root_or_skip("the_callers_files_look_roots", "acting as another uid") {
            return;
        }
        const USER: u32 = 60001;
        let dir = tempfile::tempdir().unwrap();
        std::fs::set_permissions(
            dir.path(),
            std::os::unix::fs::PermissionsExt::from_mode(0o755),
        )
        .unwrap();
        let mine = dir.path().join("mine");
        let roots = dir.path().join("roots");
        std::fs::write(&mine, b"x").unwrap();
        std::fs::write(&roots, b"x").unwrap();
        std::os::unix::fs::chown(&mine, Some(USER), Some(USER)).unwrap();
        let out = Cmd::new("stat")
            .args(["-c", "%u:%g"])
            .arg(&mine)
            .arg(&roots)
            .uid(USER)
            .gid(USER)
            .as_root_of_own_user_namespace()
            .run()
            .unwrap();
        assert_eq!(out.stdout_text(), "0:0\n65534:65534\n");
        // Without the namespace the same user sees the real owners.
        let out = Cmd::new("stat")
            .args(["-c", "%u:%g"])
            .arg(&mine)
            .uid(USER)
            .gid(USER)
            .run()
            .unwrap();
        assert_eq!(out.stdout_text(), "60001:60001\n");
    }
}
