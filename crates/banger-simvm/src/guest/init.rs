//! The guest helper: simvm re-executed as a small single-threaded process
//! (no tokio, so fork and mounts are safe). It is born in new mount, PID,
//! UTS, network and IPC namespaces and dies with simvm (PDEATHSIG).
//!
//! The helper makes its mount namespace private, attaches the drives to
//! autoclear loop devices and mounts them, then forks the guest's PID 1.
//! PID 1 mounts /proc, /sys, /run and a minimal /dev, pivots into the root
//! drive, waits for simvm to configure the network, starts the first-boot
//! script and then reaps until told to shut down. All mounts live only in
//! the guest's mount namespace: when its last process is gone the kernel
//! unmounts everything and the loop devices detach themselves.

use std::fs::File;
use std::io::{self, BufRead, BufReader, Write};
use std::os::fd::{AsRawFd, FromRawFd};
use std::os::unix::fs::{DirBuilderExt, FileTypeExt, OpenOptionsExt, PermissionsExt};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::mount::{MntFlags, MsFlags};
use nix::sys::signal::{SigSet, Signal};
use nix::sys::wait::{WaitPidFlag, WaitStatus};
use nix::unistd::{ForkResult, Pid};

use super::proto::{CTL_FD, Event, GO, HelperConfig, HelperDrive};
use banger_disk::loopdev::{self, AttachedLoop, LoopOptions};

/// Where the root drive is mounted before the pivot. Any existing directory
/// works: the mount is only visible in the guest's private mount namespace.
const NEW_ROOT: &str = "/tmp";

/// Host device nodes bind-mounted into the guest's /dev.
const DEV_NODES: [&str; 6] = ["null", "zero", "full", "random", "urandom", "tty"];

#[derive(Debug, thiserror::Error)]
enum SetupError {
    #[error("control socket: {0}")]
    Control(#[source] io::Error),
    #[error("bad boot configuration")]
    Config(#[source] serde_json::Error),
    #[error("{what} {path}: {source}")]
    Path {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error(transparent)]
    Loop(#[from] loopdev::AttachLoopError),
    #[error("{what}: {source}")]
    Sys {
        what: String,
        #[source]
        source: Errno,
    },
}

fn sys(what: impl Into<String>) -> impl FnOnce(Errno) -> SetupError {
    let what = what.into();
    move |source| SetupError::Sys { what, source }
}

fn path_err(what: &'static str, path: &Path) -> impl FnOnce(io::Error) -> SetupError {
    let path = path.to_owned();
    move |source| SetupError::Path { what, path, source }
}

/// Sends one event line; the guest's init and the helper share the socket,
/// and a single short write keeps lines whole.
fn send(ctl: &UnixStream, event: &Event) {
    let line = format!("{event}\n");
    let _ = (&*ctl).write_all(line.as_bytes());
}

/// Entry point of the helper process.
pub fn helper_main() -> ! {
    // SAFETY: fd 3 was placed there for us by simvm (dup2 before exec) and
    // nothing else in this fresh process owns it.
    let ctl = unsafe { UnixStream::from_raw_fd(CTL_FD) };
    let code = match run_helper(&ctl) {
        Ok(code) => code,
        Err(error) => {
            eprintln!("banger-simvm: guest setup failed: {error}");
            send(&ctl, &Event::Error(error.to_string()));
            1
        }
    };
    std::process::exit(code)
}

fn run_helper(ctl: &UnixStream) -> Result<i32, SetupError> {
    set_cloexec(ctl.as_raw_fd());
    let mut reader = BufReader::new(ctl.try_clone().map_err(SetupError::Control)?);
    let mut line = String::new();
    reader.read_line(&mut line).map_err(SetupError::Control)?;
    let config: HelperConfig = serde_json::from_str(&line).map_err(SetupError::Config)?;

    nix::mount::mount(
        None::<&str>,
        "/",
        None::<&str>,
        MsFlags::MS_REC | MsFlags::MS_PRIVATE,
        None::<&str>,
    )
    .map_err(sys("making / private"))?;

    // Open and attach everything before the first mount: NEW_ROOT may hide
    // the directory the drives live in.
    let root = prepare_drive(ctl, &config.root)?;
    let work = config
        .work
        .as_ref()
        .map(|work| prepare_drive(ctl, work))
        .transpose()?;
    let new_root = Path::new(NEW_ROOT);
    root.mount(new_root)?;
    if let Some(work) = work {
        let target = new_root.join("root");
        ensure_dir(&target, 0o700)?;
        work.mount(&target)?;
    }

    match crate::exec::fork_guest_init().map_err(sys("fork"))? {
        ForkResult::Child => {
            let code = guest_init(ctl, reader, &config);
            std::process::exit(code)
        }
        ForkResult::Parent { child } => {
            send(ctl, &Event::Pid(child.as_raw() as u32));
            let code = wait_for(child);
            send(ctl, &Event::Exit(code));
            Ok(0)
        }
    }
}

fn set_cloexec(fd: i32) {
    // SAFETY: plain fcntl on a descriptor we own.
    unsafe {
        let flags = libc::fcntl(fd, libc::F_GETFD);
        if flags >= 0 {
            libc::fcntl(fd, libc::F_SETFD, flags | libc::FD_CLOEXEC);
        }
    }
}

/// Waits for `child`; its exit code, or minus the signal that killed it.
fn wait_for(child: Pid) -> i32 {
    loop {
        match nix::sys::wait::waitpid(child, None) {
            Ok(WaitStatus::Exited(_, code)) => return code,
            Ok(WaitStatus::Signaled(_, signal, _)) => return -(signal as i32),
            Ok(_) | Err(Errno::EINTR) => continue,
            Err(_) => return -1,
        }
    }
}

fn ensure_dir(path: &Path, mode: u32) -> Result<(), SetupError> {
    match std::fs::DirBuilder::new().mode(mode).create(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(path_err("creating", path)(e)),
    }
}

/// A drive ready to mount: its block device (the drive itself, or an
/// autoclear loop device over it), held open until mounted.
struct PreparedDrive {
    drive: HelperDrive,
    source: PathBuf,
    _file: File,
    _loop: Option<AttachedLoop>,
}

fn prepare_drive(ctl: &UnixStream, drive: &HelperDrive) -> Result<PreparedDrive, SetupError> {
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(!drive.read_only)
        .custom_flags(libc::O_CLOEXEC)
        .open(&drive.path)
        .map_err(path_err("opening drive", &drive.path))?;
    let meta = file
        .metadata()
        .map_err(path_err("inspecting drive", &drive.path))?;
    if meta.file_type().is_block_device() {
        return Ok(PreparedDrive {
            drive: drive.clone(),
            source: drive.path.clone(),
            _file: file,
            _loop: None,
        });
    }
    let device = loopdev::attach(
        &drive.path,
        LoopOptions {
            read_only: drive.read_only,
            autoclear: true,
        },
    )?;
    let source = device.device().path();
    send(ctl, &Event::Loop(source.clone()));
    Ok(PreparedDrive {
        drive: drive.clone(),
        source,
        _file: file,
        _loop: Some(device),
    })
}

impl PreparedDrive {
    /// Mounts the drive as ext4 at `target`. Dropping `self` afterwards
    /// closes the loop device and file; the mount keeps them alive.
    fn mount(self, target: &Path) -> Result<(), SetupError> {
        let mut flags = MsFlags::empty();
        if self.drive.read_only {
            flags |= MsFlags::MS_RDONLY;
        }
        nix::mount::mount(
            Some(&self.source),
            target,
            Some("ext4"),
            flags,
            None::<&str>,
        )
        .map_err(sys(format!(
            "mounting {} ({}) at {}",
            self.drive.path.display(),
            self.source.display(),
            target.display()
        )))
    }
}

/// PID 1 of the guest.
fn guest_init(ctl: &UnixStream, mut reader: BufReader<UnixStream>, config: &HelperConfig) -> i32 {
    // The helper is in the parent PID namespace, so getppid() is 0 here and
    // cannot tell whether it died before this call. If it did, simvm is
    // gone too (the helper dies only with it or after us), and the read of
    // GO below ends with EOF.
    if nix::sys::prctl::set_pdeathsig(Signal::SIGKILL).is_err() {
        return 1;
    }
    if let Err(error) = build_root(config) {
        eprintln!("banger-simvm: guest setup failed: {error}");
        send(ctl, &Event::Error(error.to_string()));
        return 1;
    }
    send(ctl, &Event::Ready);
    let mut line = String::new();
    if reader.read_line(&mut line).is_err() || line.trim() != GO {
        return 1;
    }
    drop(reader);
    if !config.dns.is_empty()
        && let Err(error) = write_resolv_conf(&config.dns)
    {
        eprintln!("banger-simvm: could not write /etc/resolv.conf: {error}");
    }
    let mut signals = SigSet::empty();
    for signal in [
        Signal::SIGCHLD,
        Signal::SIGTERM,
        Signal::SIGINT,
        Signal::SIGHUP,
    ] {
        signals.add(signal);
    }
    if signals.thread_block().is_err() {
        return 1;
    }
    let first_boot = match crate::exec::spawn_first_boot(
        &config.first_boot,
        &config.first_boot_args,
        &config.env,
    ) {
        Ok(child) => Some(child.id() as i32),
        Err(error) => {
            eprintln!(
                "banger-simvm: could not run {}: {error}",
                config.first_boot.display()
            );
            None
        }
    };
    reap_until_shutdown(&signals, first_boot, Duration::from_millis(config.grace_ms))
}

/// Mounts the pseudo filesystems into the new root, sets the hostname and
/// pivots into it.
fn build_root(config: &HelperConfig) -> Result<(), SetupError> {
    let root = Path::new(NEW_ROOT);
    let mount = |source: &str,
                 target: &Path,
                 fstype: &str,
                 flags: MsFlags,
                 data: Option<&str>|
     -> Result<(), SetupError> {
        nix::mount::mount(Some(source), target, Some(fstype), flags, data)
            .map_err(sys(format!("mounting {fstype} at {}", target.display())))
    };
    let hardened = MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC;

    let proc_dir = root.join("proc");
    ensure_dir(&proc_dir, 0o555)?;
    mount("proc", &proc_dir, "proc", hardened, None)?;
    let sys_dir = root.join("sys");
    ensure_dir(&sys_dir, 0o555)?;
    mount(
        "sysfs",
        &sys_dir,
        "sysfs",
        hardened | MsFlags::MS_RDONLY,
        None,
    )?;
    let run = root.join("run");
    ensure_dir(&run, 0o755)?;
    mount(
        "tmpfs",
        &run,
        "tmpfs",
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
        Some("mode=0755"),
    )?;
    for dir in ["banger", "banger/vsock", "lock"] {
        ensure_dir(&run.join(dir), 0o755)?;
    }

    let dev = root.join("dev");
    ensure_dir(&dev, 0o755)?;
    mount(
        "tmpfs",
        &dev,
        "tmpfs",
        MsFlags::MS_NOSUID,
        Some("mode=0755,size=65536k"),
    )?;
    for node in DEV_NODES {
        let target = dev.join(node);
        std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .mode(0o666)
            .open(&target)
            .map_err(path_err("creating", &target))?;
        let host = Path::new("/dev").join(node);
        nix::mount::mount(
            Some(&host),
            &target,
            None::<&str>,
            MsFlags::MS_BIND,
            None::<&str>,
        )
        .map_err(sys(format!("binding {}", host.display())))?;
    }
    let pts = dev.join("pts");
    ensure_dir(&pts, 0o755)?;
    mount(
        "devpts",
        &pts,
        "devpts",
        MsFlags::MS_NOSUID | MsFlags::MS_NOEXEC,
        Some("newinstance,ptmxmode=0666,mode=0620,gid=5"),
    )?;
    let shm = dev.join("shm");
    ensure_dir(&shm, 0o1777)?;
    mount(
        "tmpfs",
        &shm,
        "tmpfs",
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
        Some("mode=1777"),
    )?;
    for (link, target) in [
        ("ptmx", "pts/ptmx"),
        ("fd", "/proc/self/fd"),
        ("stdin", "/proc/self/fd/0"),
        ("stdout", "/proc/self/fd/1"),
        ("stderr", "/proc/self/fd/2"),
    ] {
        let link = dev.join(link);
        std::os::unix::fs::symlink(target, &link).map_err(path_err("linking", &link))?;
    }

    nix::unistd::sethostname(&config.hostname).map_err(sys("setting the hostname"))?;

    nix::unistd::chdir(root).map_err(sys(format!("entering {}", root.display())))?;
    nix::unistd::pivot_root(".", ".").map_err(sys("pivot_root"))?;
    nix::mount::umount2(".", MntFlags::MNT_DETACH).map_err(sys("detaching the old root"))?;
    nix::unistd::chdir("/").map_err(sys("entering /"))?;
    Ok(())
}

fn write_resolv_conf(dns: &[std::net::Ipv4Addr]) -> io::Result<()> {
    let path = Path::new("/etc/resolv.conf");
    if path
        .symlink_metadata()
        .is_ok_and(|m| m.file_type().is_symlink())
    {
        fs_err::remove_file(path)?;
    }
    let body: String = dns.iter().map(|s| format!("nameserver {s}\n")).collect();
    fs_err::write(path, body)?;
    fs_err::set_permissions(path, std::fs::Permissions::from_mode(0o644))
}

/// PID 1's loop: reap every child; on SIGTERM/SIGINT/SIGHUP send SIGTERM to
/// every process in the guest, SIGKILL after `grace`, and exit when none
/// is left.
fn reap_until_shutdown(signals: &SigSet, first_boot: Option<i32>, grace: Duration) -> i32 {
    let mut deadline: Option<Instant> = None;
    let mut killed = false;
    loop {
        let wait = match deadline {
            Some(d) if !killed => d.saturating_duration_since(Instant::now()),
            _ => Duration::from_secs(1),
        };
        match wait_signal(signals, wait) {
            Some(Signal::SIGTERM | Signal::SIGINT | Signal::SIGHUP) if deadline.is_none() => {
                eprintln!("banger-simvm: guest shutting down");
                deadline = Some(Instant::now() + grace);
                if signal_all(Signal::SIGTERM) == Err(Errno::ESRCH) {
                    return 0;
                }
            }
            _ => {}
        }
        let none_left = reap(first_boot);
        if let Some(d) = deadline {
            if none_left {
                return 0;
            }
            if !killed && Instant::now() >= d {
                killed = true;
                if signal_all(Signal::SIGKILL) == Err(Errno::ESRCH) {
                    return 0;
                }
            }
        }
    }
}

/// `kill(-1, signal)`: every process in the guest's PID namespace but us.
fn signal_all(signal: Signal) -> Result<(), Errno> {
    nix::sys::signal::kill(Pid::from_raw(-1), signal)
}

/// Reaps exited children; true when there are none left.
fn reap(first_boot: Option<i32>) -> bool {
    loop {
        match nix::sys::wait::waitpid(Pid::from_raw(-1), Some(WaitPidFlag::WNOHANG)) {
            Ok(WaitStatus::StillAlive) => return false,
            Ok(WaitStatus::Exited(pid, code)) if Some(pid.as_raw()) == first_boot => {
                if code != 0 {
                    eprintln!("banger-simvm: first boot exited with code {code}");
                }
            }
            Ok(WaitStatus::Signaled(pid, signal, _)) if Some(pid.as_raw()) == first_boot => {
                eprintln!("banger-simvm: first boot killed by {signal}");
            }
            Ok(_) | Err(Errno::EINTR) => {}
            Err(_) => return true,
        }
    }
}

/// Waits up to `timeout` for one of `signals` (which are blocked).
fn wait_signal(signals: &SigSet, timeout: Duration) -> Option<Signal> {
    let ts = libc::timespec {
        tv_sec: timeout.as_secs() as libc::time_t,
        tv_nsec: libc::c_long::from(timeout.subsec_nanos() as i32),
    };
    // SAFETY: a valid signal set and timespec, no siginfo requested.
    let rc = unsafe { libc::sigtimedwait(signals.as_ref(), std::ptr::null_mut(), &ts) };
    if rc < 0 {
        return None;
    }
    Signal::try_from(rc).ok()
}
