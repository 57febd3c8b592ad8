//! Booting the guest as a container: the host side ([`NamespaceLauncher`],
//! [`NsGuest`]) and the helper process it re-executes ([`helper_main`]).
//!
//! Process tree and lifetimes:
//!
//! ```text
//! banger-simvm (tokio)                     host namespaces
//!  └─ spawner thread (lives for the process)
//!      └─ helper (simvm re-exec'd)         new mnt/pid/uts/net/ipc namespaces,
//!          │                               PDEATHSIG=SIGKILL (dies with simvm)
//!          └─ guest PID 1                  PDEATHSIG=SIGKILL (dies with the helper)
//!              └─ first boot, sshd, agent… (die with PID 1)
//! ```
//!
//! Nothing is mounted in the host's mount namespace; loop devices are
//! autoclear; the veth lives and dies with the guest's network namespace. A
//! SIGKILLed simvm therefore takes the whole guest down and leaves nothing
//! behind but its API and vsock socket files (as Firecracker does).

mod init;
pub mod proto;

use std::os::fd::OwnedFd;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use banger_firecracker::boot_args::{Cmdline, FIRST_BOOT_INIT};
use futures::future::BoxFuture;
use nix::sys::signal::Signal;
use nix::sys::socket::{AddressFamily, SockFlag, SockType};
use nix::unistd::Pid;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader, Lines};
use tokio::net::unix::{OwnedReadHalf, OwnedWriteHalf};
use tokio::sync::{oneshot, watch};

pub use init::helper_main;
use proto::{Event, GO, HelperConfig, HelperDrive};

use crate::controller::{BootPlan, Guest, GuestLauncher, VsockUpstream};
use crate::net;
use crate::vsock::GUEST_VSOCK_DIR;

/// How long a boot may take to reach the point where the first-boot script
/// starts.
const BOOT_TIMEOUT: Duration = Duration::from_secs(60);
/// PATH for the first-boot script.
const GUEST_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

struct SpawnRequest {
    ctl: OwnedFd,
    reply: oneshot::Sender<std::io::Result<Spawned>>,
}

struct Spawned {
    pid: u32,
    exit: oneshot::Receiver<i32>,
}

/// Boots guests in namespaces. Owns the spawner thread.
#[derive(Debug)]
pub struct NamespaceLauncher {
    spawner: Mutex<std::sync::mpsc::Sender<SpawnRequest>>,
    grace: Duration,
}

impl NamespaceLauncher {
    /// Starts the spawner thread. `grace` is how long guest processes get
    /// between SIGTERM and SIGKILL when the guest shuts down.
    pub fn new(grace: Duration) -> std::io::Result<Self> {
        let (tx, rx) = std::sync::mpsc::channel::<SpawnRequest>();
        std::thread::Builder::new()
            .name("guest-spawner".into())
            .spawn(move || spawner_thread(rx))?;
        Ok(Self {
            spawner: Mutex::new(tx),
            grace,
        })
    }

    async fn spawn_helper(&self, ctl: OwnedFd) -> Result<Spawned, String> {
        let (reply, answer) = oneshot::channel();
        self.spawner
            .lock()
            .map_err(|_| "guest spawner is gone".to_owned())?
            .send(SpawnRequest { ctl, reply })
            .map_err(|_| "guest spawner is gone".to_owned())?;
        answer
            .await
            .map_err(|_| "guest spawner is gone".to_owned())?
            .map_err(|e| format!("could not start the guest helper: {e}"))
    }
}

/// The guest helper's death signal follows the thread that forked it, so
/// helpers are forked by this thread, which never ends while simvm runs.
fn spawner_thread(requests: std::sync::mpsc::Receiver<SpawnRequest>) {
    while let Ok(request) = requests.recv() {
        let result = crate::exec::spawn_guest_helper(request.ctl).map(|mut child| {
            let pid = child.id();
            let (tx, exit) = oneshot::channel();
            // Any thread may reap; only the forking thread must live on.
            let reaper = std::thread::Builder::new()
                .name("guest-reaper".into())
                .spawn(move || {
                    let code = match child.wait() {
                        Ok(status) => status.code().unwrap_or(-1),
                        Err(_) => -1,
                    };
                    let _ = tx.send(code);
                });
            if reaper.is_err() {
                tracing::error!(pid, "could not start a reaper thread");
            }
            Spawned { pid, exit }
        });
        let _ = request.reply.send(result);
    }
    // The launcher is gone, which only happens as simvm exits: stay alive
    // anyway so no helper loses its parent thread early.
    loop {
        std::thread::park();
    }
}

impl GuestLauncher for NamespaceLauncher {
    fn launch<'a>(&'a self, plan: &'a BootPlan) -> BoxFuture<'a, Result<Arc<dyn Guest>, String>> {
        Box::pin(async move {
            let guest = self.boot(plan).await?;
            let guest: Arc<dyn Guest> = Arc::new(guest);
            Ok(guest)
        })
    }
}

/// A helper that is killed unless the boot completes.
struct HelperGuard {
    pid: u32,
    exit: Option<oneshot::Receiver<i32>>,
    armed: bool,
}

impl HelperGuard {
    async fn abort(mut self) {
        self.armed = false;
        let _ = nix::sys::signal::kill(Pid::from_raw(self.pid as i32), Signal::SIGKILL);
        if let Some(exit) = self.exit.take() {
            let _ = tokio::time::timeout(Duration::from_secs(10), exit).await;
        }
    }
}

impl Drop for HelperGuard {
    fn drop(&mut self) {
        if self.armed {
            let _ = nix::sys::signal::kill(Pid::from_raw(self.pid as i32), Signal::SIGKILL);
        }
    }
}

async fn next_event(lines: &mut Lines<BufReader<OwnedReadHalf>>) -> Result<Event, String> {
    loop {
        match lines.next_line().await {
            Ok(Some(line)) => match Event::parse(&line) {
                Some(event) => return Ok(event),
                None => tracing::warn!(%line, "unexpected line from the guest helper"),
            },
            Ok(None) => return Err("the guest helper exited during boot".to_owned()),
            Err(e) => return Err(format!("reading from the guest helper failed: {e}")),
        }
    }
}

impl NamespaceLauncher {
    async fn boot(&self, plan: &BootPlan) -> Result<NsGuest, String> {
        let bridge = match &plan.nic {
            Some(nic) => Some(
                net::bridge_of(&nic.tap)
                    .await
                    .map_err(|e| error_chain(&e))?,
            ),
            None => None,
        };
        let (ours, theirs) = nix::sys::socket::socketpair(
            AddressFamily::Unix,
            SockType::Stream,
            None,
            SockFlag::SOCK_CLOEXEC,
        )
        .map_err(|e| format!("socketpair: {e}"))?;
        let spawned = self.spawn_helper(theirs).await?;
        let mut guard = HelperGuard {
            pid: spawned.pid,
            exit: Some(spawned.exit),
            armed: true,
        };
        let stream = std::os::unix::net::UnixStream::from(ours);
        let result = async {
            stream
                .set_nonblocking(true)
                .map_err(|e| format!("control socket: {e}"))?;
            let stream = tokio::net::UnixStream::from_std(stream)
                .map_err(|e| format!("control socket: {e}"))?;
            let (read, write) = stream.into_split();
            let lines = BufReader::new(read).lines();
            tokio::time::timeout(BOOT_TIMEOUT, self.handshake(plan, bridge, lines, write))
                .await
                .map_err(|_| format!("the guest did not come up within {BOOT_TIMEOUT:?}"))?
        }
        .await;
        match result {
            Ok(mut booted) => {
                guard.armed = false;
                let exit = guard.exit.take().expect("exit receiver is present");
                let (exited_tx, exited) = watch::channel(false);
                let helper_pid = guard.pid;
                let lines = booted.lines.take().expect("lines are present");
                tokio::spawn(watch_guest(
                    lines,
                    booted.write.take(),
                    exit,
                    exited_tx,
                    helper_pid,
                ));
                booted.guest.exited = exited;
                Ok(booted.guest)
            }
            Err(e) => {
                guard.abort().await;
                Err(e)
            }
        }
    }

    async fn handshake(
        &self,
        plan: &BootPlan,
        bridge: Option<String>,
        mut lines: Lines<BufReader<OwnedReadHalf>>,
        mut write: OwnedWriteHalf,
    ) -> Result<Booted, String> {
        let config = self.helper_config(plan)?;
        let mut line = serde_json::to_string(&config).map_err(|e| e.to_string())?;
        line.push('\n');
        write
            .write_all(line.as_bytes())
            .await
            .map_err(|e| format!("sending the boot configuration failed: {e}"))?;

        let mut loops = Vec::new();
        let mut ready = false;
        let init_pid = loop {
            match next_event(&mut lines).await? {
                Event::Loop(path) => loops.push(path),
                Event::Pid(pid) => break pid,
                Event::Ready => ready = true,
                Event::Error(e) => return Err(e),
                Event::Exit(code) => return Err(format!("the guest exited during boot ({code})")),
            }
        };
        tracing::info!(init_pid, "guest init started");

        let veth = match (&plan.nic, bridge) {
            (Some(nic), Some(bridge)) => {
                let name = net::host_veth_name(&plan.id);
                net::create_veth(&name, &bridge, init_pid, nic.mac)
                    .await
                    .map_err(|e| error_chain(&e))?;
                tracing::info!(veth = %name, %bridge, "guest network attached");
                Some(name)
            }
            _ => None,
        };
        net::configure_guest(init_pid, plan.ip.clone(), veth.is_some())
            .await
            .map_err(|e| error_chain(&e))?;

        while !ready {
            match next_event(&mut lines).await? {
                Event::Loop(path) => loops.push(path),
                Event::Ready => ready = true,
                Event::Error(e) => return Err(e),
                Event::Exit(code) => return Err(format!("the guest exited during boot ({code})")),
                Event::Pid(_) => {}
            }
        }
        write
            .write_all(format!("{GO}\n").as_bytes())
            .await
            .map_err(|e| format!("starting the guest failed: {e}"))?;
        let pid_ns = std::fs::read_link(format!("/proc/{init_pid}/ns/pid"))
            .ok()
            .map(|p| p.display().to_string());
        Ok(Booted {
            guest: NsGuest {
                init_pid,
                pid_ns,
                veth,
                loops,
                exited: watch::channel(false).1,
            },
            lines: Some(lines),
            write: Some(write),
        })
    }

    fn helper_config(&self, plan: &BootPlan) -> Result<HelperConfig, String> {
        let first_boot = first_boot_init(&plan.cmdline)?;
        let drive = |d: &crate::controller::DrivePlan| HelperDrive {
            path: d.path.clone(),
            read_only: d.read_only,
        };
        let hostname = plan
            .ip
            .as_ref()
            .and_then(|ip| ip.hostname.clone())
            .unwrap_or_else(|| plan.id.clone());
        Ok(HelperConfig {
            root: drive(&plan.root),
            work: plan.work.as_ref().map(drive),
            hostname,
            dns: plan
                .ip
                .as_ref()
                .map(|ip| ip.dns.clone())
                .unwrap_or_default(),
            first_boot,
            first_boot_args: vec!["--container".to_owned()],
            env: vec![
                ("container".to_owned(), "banger-simvm".to_owned()),
                ("PATH".to_owned(), GUEST_PATH.to_owned()),
                ("HOME".to_owned(), "/root".to_owned()),
                ("TERM".to_owned(), "linux".to_owned()),
            ],
            grace_ms: u64::try_from(self.grace.as_millis()).unwrap_or(u64::MAX),
        })
    }
}

/// What the container runs as its init: the kernel command line's `init=`
/// when it names banger's first boot (images without an initrd), else
/// banger's first boot as the systemd unit of an initrd image would run it.
/// Any other `init=` cannot run in a container and is refused.
fn first_boot_init(cmdline: &str) -> Result<PathBuf, String> {
    let init = Cmdline::parse(cmdline).init().map(str::to_owned);
    match init {
        Some(init) if init == FIRST_BOOT_INIT => {
            tracing::info!(%init, "running init= from the kernel command line (container mode)");
            Ok(PathBuf::from(init))
        }
        Some(init) => Err(format!(
            "init={init} on the kernel command line: banger-simvm runs only banger's first boot ({FIRST_BOOT_INIT}) as a guest's init"
        )),
        None => {
            tracing::info!(
                init = FIRST_BOOT_INIT,
                "no init= on the kernel command line: running banger's first boot as the image's unit would (container mode)"
            );
            Ok(PathBuf::from(FIRST_BOOT_INIT))
        }
    }
}

fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

struct Booted {
    guest: NsGuest,
    lines: Option<Lines<BufReader<OwnedReadHalf>>>,
    write: Option<OwnedWriteHalf>,
}

/// Follows the helper after boot: logs what it says, and flips `exited`
/// when it is gone.
async fn watch_guest(
    mut lines: Lines<BufReader<OwnedReadHalf>>,
    write: Option<OwnedWriteHalf>,
    exit: oneshot::Receiver<i32>,
    exited: watch::Sender<bool>,
    helper_pid: u32,
) {
    let reader = async {
        while let Ok(Some(line)) = lines.next_line().await {
            match Event::parse(&line) {
                Some(Event::Exit(code)) => tracing::info!(code, "guest init exited"),
                _ => tracing::debug!(%line, "guest helper"),
            }
        }
    };
    let ((), code) = tokio::join!(reader, exit);
    tracing::info!(helper_pid, code = code.unwrap_or(-1), "guest helper exited");
    drop(write);
    exited.send_replace(true);
}

/// A guest running in namespaces.
#[derive(Debug)]
pub struct NsGuest {
    /// Host pid of the guest's PID 1.
    init_pid: u32,
    /// `pid:[inode]` of the guest's PID namespace.
    pid_ns: Option<String>,
    veth: Option<String>,
    loops: Vec<PathBuf>,
    exited: watch::Receiver<bool>,
}

impl NsGuest {
    fn is_gone(&self) -> bool {
        *self.exited.borrow()
    }

    /// Host pids of every process in the guest's PID namespace.
    fn guest_pids(&self) -> Vec<i32> {
        let Some(pid_ns) = &self.pid_ns else {
            return Vec::new();
        };
        let Ok(entries) = std::fs::read_dir("/proc") else {
            return Vec::new();
        };
        entries
            .filter_map(Result::ok)
            .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
            .filter(|pid| {
                std::fs::read_link(format!("/proc/{pid}/ns/pid"))
                    .is_ok_and(|ns| ns.display().to_string() == *pid_ns)
            })
            .collect()
    }

    /// Sends `signal` to every guest process until a pass finds none it has
    /// not signalled (so processes forked meanwhile are caught too).
    fn signal_guest(&self, signal: Signal) -> Result<(), String> {
        if self.is_gone() {
            return Ok(());
        }
        let mut done = std::collections::HashSet::new();
        for _ in 0..50 {
            let fresh: Vec<i32> = self
                .guest_pids()
                .into_iter()
                .filter(|p| !done.contains(p))
                .collect();
            if fresh.is_empty() {
                return Ok(());
            }
            for pid in fresh {
                let _ = nix::sys::signal::kill(Pid::from_raw(pid), signal);
                done.insert(pid);
            }
        }
        Ok(())
    }
}

impl Guest for NsGuest {
    fn vsock_upstream(&self) -> VsockUpstream {
        VsockUpstream::Dir(
            PathBuf::from(format!("/proc/{}/root", self.init_pid))
                .join(GUEST_VSOCK_DIR.trim_start_matches('/')),
        )
    }

    fn ctrl_alt_del(&self) -> Result<(), String> {
        if self.is_gone() {
            return Ok(());
        }
        // The guest's PID 1 is only reaped by the helper once it has exited,
        // which `exited` reports, so its pid cannot have been reused here.
        nix::sys::signal::kill(Pid::from_raw(self.init_pid as i32), Signal::SIGTERM)
            .or_else(|e| {
                if e == nix::errno::Errno::ESRCH {
                    Ok(())
                } else {
                    Err(e)
                }
            })
            .map_err(|e| format!("signalling the guest failed: {e}"))
    }

    fn kill(&self) {
        if !self.is_gone() {
            let _ = nix::sys::signal::kill(Pid::from_raw(self.init_pid as i32), Signal::SIGKILL);
        }
    }

    fn pause(&self) -> Result<(), String> {
        self.signal_guest(Signal::SIGSTOP)
    }

    fn resume(&self) -> Result<(), String> {
        self.signal_guest(Signal::SIGCONT)
    }

    fn exited(&self) -> watch::Receiver<bool> {
        self.exited.clone()
    }

    fn leftovers(&self) -> Vec<String> {
        let mut left: Vec<String> = self
            .loops
            .iter()
            .filter(|l| banger_disk::loopdev::is_attached(l))
            .map(|l| l.display().to_string())
            .collect();
        if let Some(veth) = &self.veth
            && net::link_exists(veth)
        {
            left.push(veth.clone());
        }
        left
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn init_comes_from_the_kernel_command_line() {
        let with = format!("console=ttyS0 root=/dev/vda init={FIRST_BOOT_INIT}");
        assert_eq!(
            first_boot_init(&with).unwrap(),
            PathBuf::from(FIRST_BOOT_INIT)
        );
        assert_eq!(
            first_boot_init("console=ttyS0 root=/dev/vda").unwrap(),
            PathBuf::from(FIRST_BOOT_INIT)
        );
        let err = first_boot_init("console=ttyS0 init=/bin/bash").unwrap_err();
        assert!(err.contains("init=/bin/bash"), "{err}");
    }
}
