//! The `qemu` engine: the real kernel, initrd and drives in QEMU's
//! `microvm` machine behind simvm's Firecracker API.
//!
//! On `InstanceStart`, [`QemuLauncher`] starts (as children of simvm, each
//! with `PDEATHSIG=SIGKILL`, so they die with it):
//!
//! ```text
//! banger-simvm (API, log, the configured hybrid vsock socket)
//!  ├─ vhost-device-vsock --guest-cid N --socket <api>.vhost --uds-path <api>.vsock
//!  │    the vsock device; simvm forwards hybrid vsock connections to its
//!  │    `<api>.vsock`, which speaks the same protocol (see [`crate::vsock`])
//!  └─ qemu-system-x86_64 -M microvm … (KVM when usable, else TCG)
//!       stdout: the serial console (simvm's stdout, as Firecracker's)
//!       stderr: simvm's log; control: QMP on <api>.qmp
//! ```
//!
//! `SendCtrlAltDel` is Ctrl-Alt-Del on an i8042 keyboard (QMP `send-key`),
//! as on Firecracker: systemd reboots, and `-no-reboot` ends QEMU;
//! a killed QEMU or vsock device makes simvm exit with an error naming it;
//! `PATCH /vm` is QMP `stop`/`cont`. When either process ends the other is
//! killed and the guest counts as gone, so simvm exits like a Firecracker
//! whose guest shut down or crashed. The sockets are removed on the way out.

pub mod accel;
pub mod args;
pub mod qmp;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use tokio::io::{AsyncBufReadExt, AsyncRead, BufReader};
use tokio::process::Child;
use tokio::sync::{Notify, watch};

pub use accel::{Accel, AccelChoice};

use crate::controller::{BootPlan, Guest, GuestLauncher, VsockUpstream};

/// How long QEMU and the vsock device get to create their sockets.
const START_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a killed child may take to be reaped.
const REAP_TIMEOUT: Duration = Duration::from_secs(10);
/// How long after QEMU reports the vsock device started simvm still waits
/// before connecting to it (the last ring messages may be in flight).
const VSOCK_SETTLE: Duration = Duration::from_millis(200);

/// Where the engine's programs are and which accelerator to use.
#[derive(Debug, Clone)]
pub struct QemuConfig {
    /// `qemu-system-x86_64` (looked up in `PATH` when bare).
    pub qemu: PathBuf,
    /// `vhost-device-vsock` (looked up in `PATH` when bare).
    pub vhost_vsock: PathBuf,
    pub accel: AccelChoice,
}

/// Boots guests in QEMU.
#[derive(Debug)]
pub struct QemuLauncher {
    config: QemuConfig,
    /// simvm's API socket: QEMU's and the vsock device's sockets sit beside
    /// it (`<api>.qmp`, `<api>.vhost`), in the VM's directory.
    api_socket: PathBuf,
}

impl QemuLauncher {
    pub fn new(config: QemuConfig, api_socket: PathBuf) -> Self {
        Self { config, api_socket }
    }

    fn socket(&self, suffix: &str) -> PathBuf {
        let mut path = self.api_socket.clone().into_os_string();
        path.push(suffix);
        PathBuf::from(path)
    }

    async fn boot(&self, plan: &BootPlan) -> Result<QemuGuest, String> {
        let accel = self
            .config
            .accel
            .resolve(&self.config.qemu, &plan.kernel)
            .await;
        tracing::info!(
            accel = accel.as_str(),
            "qemu engine: {}",
            accel.description()
        );
        let qmp = self.socket(".qmp");
        let vhost = plan.vsock.as_ref().map(|_| self.socket(".vhost"));
        let hybrid = plan.vsock.as_ref().map(|_| self.socket(".vsock"));
        for path in [Some(&qmp), vhost.as_ref(), hybrid.as_ref()]
            .into_iter()
            .flatten()
        {
            remove_socket(path);
        }

        let mut vsock_device = None;
        if let (Some(vsock), Some(vhost), Some(hybrid)) = (&plan.vsock, &vhost, &hybrid) {
            let mut child = crate::exec::spawn_vhost_vsock(
                &self.config.vhost_vsock,
                vsock.guest_cid,
                vhost,
                hybrid,
            )
            .map_err(|e| {
                format!(
                    "could not start {}: {e}; install it with scripts/install-deps.sh or set vhost_vsock_bin",
                    self.config.vhost_vsock.display()
                )
            })?;
            forward_output(child.stderr.take(), "vhost-device-vsock");
            forward_output(child.stdout.take(), "vhost-device-vsock");
            if let Err(e) = wait_for_socket(vhost, &mut child).await {
                kill_and_reap(&mut child).await;
                return Err(format!("vhost-device-vsock did not start: {e}"));
            }
            vsock_device = Some(child);
        }

        let argv = args::args(
            plan,
            accel,
            args::Sockets {
                qmp: &qmp,
                vhost_vsock: vhost.as_deref(),
            },
        );
        tracing::debug!(?argv, "starting qemu");
        let mut qemu = match crate::exec::spawn_qemu(&self.config.qemu, &argv) {
            Ok(child) => child,
            Err(e) => {
                if let Some(child) = &mut vsock_device {
                    kill_and_reap(child).await;
                }
                return Err(format!(
                    "could not start {}: {e}; install the qemu-system-x86 package",
                    self.config.qemu.display()
                ));
            }
        };
        forward_output(qemu.stderr.take(), "qemu");
        if let Err(e) = wait_for_socket(&qmp, &mut qemu).await {
            kill_and_reap(&mut qemu).await;
            if let Some(child) = &mut vsock_device {
                kill_and_reap(child).await;
            }
            return Err(format!("qemu did not start: {e}"));
        }
        tracing::info!(pid = qemu.id(), "qemu started");

        let (exited_tx, exited) = watch::channel(false);
        let kill = Arc::new(Notify::new());
        let failure = Arc::new(std::sync::Mutex::new(None));
        let mut sockets = vec![qmp.clone()];
        sockets.extend(vhost);
        sockets.extend(hybrid.clone());
        tokio::spawn(supervise(
            Children { qemu, vsock_device },
            kill.clone(),
            failure.clone(),
            exited_tx,
            sockets.clone(),
        ));
        Ok(QemuGuest {
            accel,
            qmp,
            hybrid,
            sockets,
            kill,
            failure,
            vsock_seen: std::sync::Mutex::new(None),
            exited,
        })
    }
}

impl GuestLauncher for QemuLauncher {
    fn launch<'a>(&'a self, plan: &'a BootPlan) -> BoxFuture<'a, Result<Arc<dyn Guest>, String>> {
        Box::pin(async move {
            let guest = self.boot(plan).await?;
            let guest: Arc<dyn Guest> = Arc::new(guest);
            Ok(guest)
        })
    }
}

/// Waits until `path` exists (the child listens), failing if the child
/// exits first or it takes too long.
async fn wait_for_socket(path: &Path, child: &mut Child) -> Result<(), String> {
    let deadline = tokio::time::Instant::now() + START_TIMEOUT;
    loop {
        if path.exists() {
            return Ok(());
        }
        if let Some(status) = child.try_wait().map_err(|e| e.to_string())? {
            return Err(format!("it exited ({status}); see the vmm log"));
        }
        if tokio::time::Instant::now() >= deadline {
            return Err(format!(
                "{} did not appear within {START_TIMEOUT:?}",
                path.display()
            ));
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Copies a child's output into simvm's log, line by line.
fn forward_output(stream: Option<impl AsyncRead + Unpin + Send + 'static>, program: &'static str) {
    let Some(stream) = stream else { return };
    tokio::spawn(async move {
        let mut lines = BufReader::new(stream).lines();
        while let Ok(Some(line)) = lines.next_line().await {
            tracing::warn!(program, "{line}");
        }
    });
}

async fn kill_and_reap(child: &mut Child) {
    let _ = child.start_kill();
    let _ = tokio::time::timeout(REAP_TIMEOUT, child.wait()).await;
}

fn remove_socket(path: &Path) {
    if let Err(error) = std::fs::remove_file(path)
        && error.kind() != std::io::ErrorKind::NotFound
    {
        tracing::warn!(%error, path = %path.display(), "could not remove socket");
    }
}

/// The processes behind one guest.
struct Children {
    qemu: Child,
    vsock_device: Option<Child>,
}

/// Waits for QEMU or the vsock device to end (or for a kill request), then
/// ends the other, removes the sockets and reports the guest gone. An end
/// that was neither the guest leaving (QEMU exits 0 on poweroff and, with
/// `-no-reboot`, on reboot) nor asked for is recorded as the failure.
async fn supervise(
    mut children: Children,
    kill: Arc<Notify>,
    failure: Arc<std::sync::Mutex<Option<String>>>,
    exited: watch::Sender<bool>,
    sockets: Vec<PathBuf>,
) {
    let device_exit = async {
        match &mut children.vsock_device {
            Some(child) => child.wait().await,
            None => std::future::pending().await,
        }
    };
    let failed = tokio::select! {
        status = children.qemu.wait() => match status {
            Ok(status) if status.success() => {
                tracing::info!("qemu exited: the guest shut down");
                None
            }
            Ok(status) => Some(format!("qemu exited ({status})")),
            Err(e) => Some(format!("qemu could not be waited for: {e}")),
        },
        status = device_exit => Some(match status {
            Ok(status) => format!("vhost-device-vsock exited ({status})"),
            Err(e) => format!("vhost-device-vsock could not be waited for: {e}"),
        }),
        () = kill.notified() => {
            tracing::warn!("killing qemu");
            None
        }
    };
    if let Some(reason) = &failed {
        tracing::error!(%reason, "stopping the guest");
    }
    *failure.lock().unwrap_or_else(|e| e.into_inner()) = failed;
    kill_and_reap(&mut children.qemu).await;
    if let Some(child) = &mut children.vsock_device {
        kill_and_reap(child).await;
    }
    for socket in &sockets {
        remove_socket(socket);
    }
    exited.send_replace(true);
}

/// A guest running in QEMU.
#[derive(Debug)]
pub struct QemuGuest {
    accel: Accel,
    qmp: PathBuf,
    /// vhost-device-vsock's hybrid vsock socket, when there is a vsock device.
    hybrid: Option<PathBuf>,
    sockets: Vec<PathBuf>,
    kill: Arc<Notify>,
    failure: Arc<std::sync::Mutex<Option<String>>>,
    /// When the guest was first seen to have started the vsock device.
    vsock_seen: std::sync::Mutex<Option<std::time::Instant>>,
    exited: watch::Receiver<bool>,
}

impl QemuGuest {
    pub fn accel(&self) -> Accel {
        self.accel
    }

    /// Whether the guest's driver has started the vsock device (QEMU then
    /// has handed vhost-device-vsock its memory and rings) and
    /// [`VSOCK_SETTLE`] has passed since it was first seen started. Asked
    /// over QMP until it is; remembered after.
    fn vsock_started(&self) -> bool {
        let mut seen = self.vsock_seen.lock().unwrap_or_else(|e| e.into_inner());
        if seen.is_none() {
            let path = format!("/machine/peripheral/{}", args::VSOCK_DEVICE_ID);
            match qmp::execute(
                &self.qmp,
                "x-query-virtio-status",
                Some(serde_json::json!({ "path": path })),
            ) {
                Ok(status) if status["vhost-started"] == true => {
                    tracing::info!("the guest started the vsock device");
                    *seen = Some(std::time::Instant::now());
                }
                Ok(_) => {}
                Err(error) => tracing::debug!(error = %error_chain(&error), "vsock status"),
            }
        }
        seen.is_some_and(|at| at.elapsed() >= VSOCK_SETTLE)
    }

    fn qmp(&self, command: &str) -> Result<(), String> {
        if *self.exited.borrow() {
            return Ok(());
        }
        qmp::execute(&self.qmp, command, None)
            .map(drop)
            .map_err(|e| error_chain(&e))
    }
}

impl Guest for QemuGuest {
    fn vsock_upstream(&self) -> VsockUpstream {
        match &self.hybrid {
            Some(socket) if self.vsock_started() => VsockUpstream::Hybrid(socket.clone()),
            Some(_) => VsockUpstream::NotReady,
            // No vsock device: connections find nothing to talk to.
            None => VsockUpstream::Dir(PathBuf::from("/nonexistent")),
        }
    }

    fn ctrl_alt_del(&self) -> Result<(), String> {
        if *self.exited.borrow() {
            return Ok(());
        }
        let keys = ["ctrl", "alt", "delete"]
            .map(|key| serde_json::json!({ "type": "qcode", "data": key }));
        qmp::execute(
            &self.qmp,
            "send-key",
            Some(serde_json::json!({ "keys": keys })),
        )
        .map(drop)
        .map_err(|e| error_chain(&e))
    }

    fn pause(&self) -> Result<(), String> {
        self.qmp("stop")
    }

    fn resume(&self) -> Result<(), String> {
        self.qmp("cont")
    }

    fn exited(&self) -> watch::Receiver<bool> {
        self.exited.clone()
    }

    fn kill(&self) {
        self.kill.notify_one();
    }

    fn failure(&self) -> Option<String> {
        self.failure
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    fn leftovers(&self) -> Vec<String> {
        self.sockets
            .iter()
            .filter(|s| s.exists())
            .map(|s| s.display().to_string())
            .collect()
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
