//! The processes simvm starts (the guest helper, the first-boot script,
//! QEMU, `vhost-device-vsock`), as thin wrappers over [`banger_exec`] that
//! add the namespace and lifetime set-up each needs.

use std::io;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::path::Path;
use std::process::Child;

use banger_exec::{Cmd, ExecError, Stdio};
use nix::sched::CloneFlags;
use nix::sys::signal::Signal;

use crate::guest::proto::{CTL_FD, HELPER_ARG};

/// Namespaces the guest gets.
const GUEST_NAMESPACES: CloneFlags = CloneFlags::CLONE_NEWNS
    .union(CloneFlags::CLONE_NEWPID)
    .union(CloneFlags::CLONE_NEWUTS)
    .union(CloneFlags::CLONE_NEWNET)
    .union(CloneFlags::CLONE_NEWIPC);

/// Re-executes simvm as the single-threaded guest helper, with `ctl` as
/// fd 3, stdout and stderr on simvm's stdout (the guest console), SIGKILL
/// when the spawning thread dies, and in new mount, PID, UTS, network and
/// IPC namespaces (the helper's first child is the guest's PID 1).
///
/// Call from a thread that lives as long as the guest may: the death signal
/// follows the thread, not the process.
pub(crate) fn spawn_guest_helper(ctl: OwnedFd) -> io::Result<Child> {
    let console = io::stdout().as_fd().try_clone_to_owned()?;
    let parent = nix::unistd::getpid();
    let ctl_raw = ctl.as_raw_fd();
    let command = Cmd::new("/proc/self/exe")
        .arg(HELPER_ARG)
        .stdin(Stdio::null())
        .stdout(Stdio::inherit())
        .stderr(Stdio::from(console));
    // SAFETY: the closure runs in the forked child before exec and only makes
    // raw system calls (prctl, getppid, dup2/fcntl, unshare), all
    // async-signal-safe; it allocates nothing and takes no locks. `ctl_raw`
    // stays open in the parent until spawn returns because `ctl` is moved
    // into this function and dropped after it.
    let command = unsafe {
        command.pre_exec(move || {
            nix::sys::prctl::set_pdeathsig(Signal::SIGKILL)?;
            if nix::unistd::getppid() != parent {
                // simvm is already gone; no allocation here (after fork).
                return Err(io::Error::from_raw_os_error(libc::ESRCH));
            }
            if ctl_raw == CTL_FD {
                let flags = libc::fcntl(CTL_FD, libc::F_GETFD);
                if flags < 0 || libc::fcntl(CTL_FD, libc::F_SETFD, flags & !libc::FD_CLOEXEC) < 0 {
                    return Err(io::Error::last_os_error());
                }
            } else if libc::dup2(ctl_raw, CTL_FD) < 0 {
                return Err(io::Error::last_os_error());
            }
            nix::sched::unshare(GUEST_NAMESPACES)?;
            Ok(())
        })
    };
    let child = command.spawn().map_err(io_error);
    drop(ctl);
    child
}

/// Starts the image's first-boot script inside the guest (already pivoted
/// into its root): stdin from /dev/null, output on the console, a clean
/// environment.
pub(crate) fn spawn_first_boot(
    path: &Path,
    args: &[String],
    env: &[(String, String)],
) -> io::Result<Child> {
    Cmd::new(path)
        .args(args)
        .env_clear()
        .envs(env.iter().map(|(k, v)| (k, v)))
        .current_dir("/")
        .stdin(Stdio::null())
        .spawn()
        .map_err(io_error)
}

/// Forks the guest's PID 1 from the guest helper (its first child in the
/// new PID namespace).
///
/// Only for the helper: a fresh exec of simvm that has started no threads,
/// so the child may do anything after the fork.
pub(crate) fn fork_guest_init() -> nix::Result<nix::unistd::ForkResult> {
    // SAFETY: the caller is the single-threaded guest helper (see above); no
    // other thread can hold a lock the child would inherit.
    match unsafe { banger_exec::fork() } {
        Ok(banger_exec::Forked::Child) => Ok(nix::unistd::ForkResult::Child),
        Ok(banger_exec::Forked::Parent { child }) => Ok(nix::unistd::ForkResult::Parent {
            child: nix::unistd::Pid::from_raw(child),
        }),
        Err(error) => Err(nix::errno::Errno::from_raw(
            error.raw_os_error().unwrap_or(libc::EIO),
        )),
    }
}

/// The error of a failed start as the I/O error it wraps, so messages
/// keep the reason ("No such file or directory").
fn io_error(error: ExecError) -> io::Error {
    match error {
        ExecError::Spawn { source, .. } => source,
        other => io::Error::other(other),
    }
}

/// Makes a child die with simvm: SIGKILL when the spawning thread ends,
/// and kills it when its handle is dropped; then starts it. Callers spawn
/// from tokio worker threads, which live as long as simvm.
fn spawn_dying_with_parent(command: Cmd) -> io::Result<tokio::process::Child> {
    let parent = nix::unistd::getpid();
    // SAFETY: the closure runs in the forked child before exec and only
    // makes raw system calls (prctl, getppid), both async-signal-safe; it
    // allocates nothing and takes no locks.
    let command = unsafe {
        command.pre_exec(move || {
            nix::sys::prctl::set_pdeathsig(Signal::SIGKILL)?;
            if nix::unistd::getppid() != parent {
                return Err(io::Error::from_raw_os_error(libc::ESRCH));
            }
            Ok(())
        })
    };
    command.kill_on_drop(true).spawn_async().map_err(io_error)
}

/// Starts `vhost-device-vsock` for one guest: the vhost-user socket QEMU
/// connects to, and the hybrid vsock socket clients use. Its output is
/// piped (simvm logs it).
pub(crate) fn spawn_vhost_vsock(
    binary: &Path,
    guest_cid: u32,
    vhost_socket: &Path,
    uds_path: &Path,
) -> io::Result<tokio::process::Child> {
    let command = Cmd::new(binary)
        .arg("--guest-cid")
        .arg(guest_cid.to_string())
        .arg("--socket")
        .arg(vhost_socket)
        .arg("--uds-path")
        .arg(uds_path)
        // Its warnings (env_logger) land in simvm's log;
        // BANGER_SIMVM_VSOCK_LOG=debug shows every packet.
        .env(
            "RUST_LOG",
            std::env::var("BANGER_SIMVM_VSOCK_LOG").unwrap_or_else(|_| "warn".to_owned()),
        )
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    spawn_dying_with_parent(command)
}

/// Starts QEMU: stdout (the guest's serial console) is simvm's stdout,
/// stderr is piped (simvm logs it).
pub(crate) fn spawn_qemu(
    binary: &Path,
    args: &[std::ffi::OsString],
) -> io::Result<tokio::process::Child> {
    let command = Cmd::new(binary)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::inherit())
        .stderr(Stdio::piped());
    spawn_dying_with_parent(command)
}

/// Starts QEMU for the accelerator probe: console on a pipe, stderr
/// discarded.
pub(crate) fn spawn_qemu_probe(
    binary: &Path,
    args: &[std::ffi::OsString],
) -> io::Result<tokio::process::Child> {
    let command = Cmd::new(binary)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
    spawn_dying_with_parent(command)
}
