//! Starting a VMM process (`firecracker` or `banger-simvm`), waiting for its
//! API, configuring and booting it, and finding it again after a daemon
//! restart.
//!
//! Both binaries take `--api-sock PATH --id ID [--log-path P]`. The VMM runs
//! in a session of its own and outlives the process that started it; its
//! stdout and stderr (the guest's serial console) are appended to the
//! console log.

use std::ffi::OsString;
use std::fmt;
use std::io::{self, ErrorKind};
use std::os::fd::OwnedFd;
use std::os::unix::fs::FileTypeExt;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use banger_exec::Cmd;
use nix::sys::signal::Signal;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::api::{BootSource, Drive, InstanceInfo, Logger, MachineConfiguration, Metrics};
use crate::api::{NetworkInterface, Vsock};
use crate::client::{ApiClient, ApiRequestError, ConnectError};
use crate::pidfd;

/// Longest `--id` Firecracker accepts.
pub const MAX_ID_LEN: usize = 64;

/// How to start one VMM.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LaunchSpec {
    /// `firecracker` (looked up in PATH when bare), `banger-simvm`, or a path.
    pub binary: PathBuf,
    /// `--id`: 1..=64 characters, alphanumeric or `-`.
    pub id: String,
    /// `--api-sock`.
    pub api_socket: PathBuf,
    /// The hybrid vsock socket the VMM will create; a stale one is removed
    /// before start.
    pub vsock_socket: Option<PathBuf>,
    /// The VMM's stdout and stderr are appended here.
    pub console_log: PathBuf,
    /// `--log-path`: the VMM's own log. Truncated before start, because
    /// Firecracker writes it from offset 0 without truncating.
    pub log_path: Option<PathBuf>,
    /// Further arguments, e.g. `--level Debug`.
    pub extra_args: Vec<OsString>,
    /// How long to wait for the API to answer `GET /`.
    pub api_timeout: Duration,
    /// The VMM must run as root (the `sim` engine's namespaces). A daemon
    /// that is not root has banger-helper start it; [`launch`] ignores it.
    pub needs_root: bool,
}

impl LaunchSpec {
    pub fn new(
        binary: impl Into<PathBuf>,
        id: impl Into<String>,
        api_socket: impl Into<PathBuf>,
        console_log: impl Into<PathBuf>,
    ) -> Self {
        Self {
            binary: binary.into(),
            id: id.into(),
            api_socket: api_socket.into(),
            vsock_socket: None,
            console_log: console_log.into(),
            log_path: None,
            extra_args: Vec::new(),
            api_timeout: Duration::from_secs(10),
            needs_root: false,
        }
    }

    /// The command-line arguments the VMM is started with.
    pub fn args(&self) -> Vec<OsString> {
        let mut args: Vec<OsString> = vec![
            "--api-sock".into(),
            self.api_socket.clone().into(),
            "--id".into(),
            self.id.clone().into(),
        ];
        if let Some(log) = &self.log_path {
            args.push("--log-path".into());
            args.push(log.clone().into());
        }
        args.extend(self.extra_args.iter().cloned());
        args
    }
}

/// Firecracker's rule for `--id`: 1..=64 characters, alphanumeric or `-`.
pub fn validate_id(id: &str) -> Result<(), InvalidId> {
    let len = id.chars().count();
    if len == 0 || len > MAX_ID_LEN {
        return Err(InvalidId::Length(len));
    }
    if let Some(c) = id.chars().find(|c| !(c.is_alphanumeric() || *c == '-')) {
        return Err(InvalidId::Char(c));
    }
    Ok(())
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InvalidId {
    #[error("vmm id must be 1 to 64 characters long, not {0}")]
    Length(usize),
    #[error("vmm id may only contain alphanumerics and '-', not {0:?}")]
    Char(char),
}

/// How a VMM process ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VmmExit {
    Code(i32),
    Signal(i32),
    /// Not our child (adopted after a restart): the status is not ours to read.
    Unknown,
}

impl From<std::process::ExitStatus> for VmmExit {
    fn from(status: std::process::ExitStatus) -> Self {
        match (status.code(), status.signal()) {
            (Some(code), _) => Self::Code(code),
            (None, Some(signal)) => Self::Signal(signal),
            (None, None) => Self::Unknown,
        }
    }
}

impl fmt::Display for VmmExit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Code(code) => write!(f, "exit code {code}"),
            Self::Signal(signal) => write!(f, "signal {signal}"),
            Self::Unknown => f.write_str("unknown status"),
        }
    }
}

/// Observes a VMM's exit. Cheap to clone; every clone sees the exit.
#[derive(Debug, Clone)]
pub struct ExitWatch(watch::Receiver<Option<VmmExit>>);

/// The sending half of an [`ExitWatch`]; fakes use it to simulate a death.
#[derive(Debug)]
pub struct ExitNotifier(watch::Sender<Option<VmmExit>>);

impl ExitNotifier {
    pub fn notify(&self, exit: VmmExit) {
        self.0.send_replace(Some(exit));
    }
}

impl ExitWatch {
    pub fn channel() -> (ExitNotifier, ExitWatch) {
        let (tx, rx) = watch::channel(None);
        (ExitNotifier(tx), ExitWatch(rx))
    }

    /// The exit, if it has happened.
    pub fn exited(&self) -> Option<VmmExit> {
        *self.0.borrow()
    }

    /// Waits for the exit. A watcher that vanished counts as an unknown exit.
    pub async fn wait(&mut self) -> VmmExit {
        let seen = match self.0.wait_for(Option::is_some).await {
            Ok(exit) => *exit,
            Err(_) => None,
        };
        seen.or_else(|| self.exited()).unwrap_or(VmmExit::Unknown)
    }
}

/// A running (or once running) VMM process.
#[derive(Debug, Clone)]
pub struct VmmProcess {
    pid: u32,
    api_socket: PathBuf,
    exit: ExitWatch,
    pidfd: Option<Arc<OwnedFd>>,
}

impl VmmProcess {
    /// A handle without a process behind it, for fakes.
    pub fn detached(pid: u32, api_socket: PathBuf, exit: ExitWatch) -> Self {
        Self {
            pid,
            api_socket,
            exit,
            pidfd: None,
        }
    }

    pub fn pid(&self) -> u32 {
        self.pid
    }

    pub fn api_socket(&self) -> &Path {
        &self.api_socket
    }

    /// A watch on this process's exit.
    pub fn exit_watch(&self) -> ExitWatch {
        self.exit.clone()
    }

    /// The exit, if it has happened.
    pub fn exited(&self) -> Option<VmmExit> {
        self.exit.exited()
    }

    /// Sends `signal` through the process's pidfd (never to a recycled pid).
    /// Ok when the process is already gone.
    pub fn signal(&self, signal: Signal) -> Result<(), KillVmmError> {
        if self.exited().is_some() {
            return Ok(());
        }
        let result = match &self.pidfd {
            Some(fd) => pidfd::send_signal(fd, signal),
            None => return Ok(()),
        };
        match result {
            Ok(()) => Ok(()),
            Err(e) if e.raw_os_error() == Some(libc::ESRCH) => Ok(()),
            Err(source) => Err(KillVmmError::Signal {
                pid: self.pid,
                signal,
                source,
            }),
        }
    }
}

/// Starting a VMM failed. The process, if it was started, has been killed.
#[derive(Debug, thiserror::Error)]
pub enum LaunchError {
    #[error(transparent)]
    InvalidId(#[from] InvalidId),
    #[error("{path} is in use by a running vmm")]
    SocketInUse { path: PathBuf },
    #[error("could not remove stale socket {path}")]
    StaleSocket {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("could not open vmm log {path}")]
    Log {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("could not start {binary}")]
    Spawn {
        binary: PathBuf,
        #[source]
        source: banger_exec::ExecError,
    },
    #[error("{binary} exited ({exit}) before its api answered; see {console_log}")]
    Exited {
        binary: PathBuf,
        exit: VmmExit,
        console_log: PathBuf,
    },
    #[error("vmm api {path} did not answer within {waited:?}; see {console_log}")]
    ApiTimeout {
        path: PathBuf,
        waited: Duration,
        console_log: PathBuf,
    },
    #[error("banger-helper could not start {binary} for this user")]
    Helper {
        binary: PathBuf,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    #[error("vmm start was cancelled")]
    Cancelled,
}

/// Starts the VMM described by `spec` and waits until its API answers.
#[tracing::instrument(skip_all, fields(id = %spec.id, binary = %spec.binary.display()))]
pub async fn launch(
    spec: &LaunchSpec,
    cancel: &CancellationToken,
) -> Result<VmmProcess, LaunchError> {
    let console = prepare(spec).await?;
    // Detached: the caller's terminal signals and exit do not reach it.
    let child = Cmd::new(&spec.binary)
        .args(spec.args())
        .spawn_detached_async(Some(console))
        .map_err(|source| LaunchError::Spawn {
            binary: spec.binary.clone(),
            source,
        })?;
    let process = watch_child(child, spec.api_socket.clone())?;
    tracing::debug!(pid = process.pid, "vmm spawned");
    if let Err(err) = api_ready(spec, &process, cancel).await {
        // Leave nothing running behind a failed start: kill it and wait
        // (bounded) until it is gone, so a rollback sees it gone.
        if let Err(error) = kill(&process, Duration::from_secs(10)).await {
            tracing::warn!(%error, "could not kill a vmm that failed to start");
        }
        return Err(err);
    }
    Ok(process)
}

/// What every start does before the VMM runs: checks the id, removes stale
/// sockets, truncates the VMM's log and opens the console log (returned,
/// for the VMM's stdout and stderr).
pub async fn prepare(spec: &LaunchSpec) -> Result<std::fs::File, LaunchError> {
    validate_id(&spec.id)?;
    remove_stale_socket(&spec.api_socket).await?;
    if let Some(vsock) = &spec.vsock_socket {
        remove_stale_socket(vsock).await?;
    }
    let console = open_log(&spec.console_log, false)?;
    if let Some(log) = &spec.log_path {
        drop(open_log(log, true)?);
    }
    Ok(console)
}

/// Waits until the API of the just-started `process` answers. On an error
/// the process may still run: the caller kills it.
pub async fn api_ready(
    spec: &LaunchSpec,
    process: &VmmProcess,
    cancel: &CancellationToken,
) -> Result<(), LaunchError> {
    wait_for_api(
        &spec.api_socket,
        spec.api_timeout,
        cancel,
        Some(&process.exit),
    )
    .await
    .map(drop)
    .map_err(|err| match err {
        WaitForApiError::Exited(exit) => LaunchError::Exited {
            binary: spec.binary.clone(),
            exit,
            console_log: spec.console_log.clone(),
        },
        WaitForApiError::Timeout { waited, .. } => LaunchError::ApiTimeout {
            path: spec.api_socket.clone(),
            waited,
            console_log: spec.console_log.clone(),
        },
        WaitForApiError::Cancelled => LaunchError::Cancelled,
    })
}

fn watch_child(
    mut child: tokio::process::Child,
    api_socket: PathBuf,
) -> Result<VmmProcess, LaunchError> {
    let pid = child.id().expect("a freshly spawned child has a pid");
    // The child cannot be reaped before we wait for it, so the pid is ours.
    let fd = pidfd::open(pid).ok().map(Arc::new);
    let (notifier, exit) = ExitWatch::channel();
    tokio::spawn(async move {
        let status = child.wait().await;
        let exit = status.map(VmmExit::from).unwrap_or(VmmExit::Unknown);
        tracing::debug!(pid, %exit, "vmm exited");
        notifier.notify(exit);
    });
    Ok(VmmProcess {
        pid,
        api_socket,
        exit,
        pidfd: fd,
    })
}

fn open_log(path: &Path, truncate: bool) -> Result<std::fs::File, LaunchError> {
    let mut options = fs_err::OpenOptions::new();
    options.create(true);
    if truncate {
        options.write(true).truncate(true);
    } else {
        options.append(true);
    }
    options
        .open(path)
        .map(fs_err::File::into_parts)
        .map(|(file, _)| file)
        .map_err(|source| LaunchError::Log {
            path: path.to_owned(),
            source,
        })
}

/// Removes a socket a dead VMM left behind (Firecracker does not remove its
/// API and vsock sockets). Refuses when something still accepts on it.
pub async fn remove_stale_socket(path: &Path) -> Result<(), LaunchError> {
    let stale = |source| LaunchError::StaleSocket {
        path: path.to_owned(),
        source,
    };
    let meta = match fs_err::symlink_metadata(path) {
        Ok(meta) => meta,
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(stale(e)),
    };
    if !meta.file_type().is_socket() {
        return Err(stale(io::Error::new(
            ErrorKind::AlreadyExists,
            "exists and is not a socket",
        )));
    }
    if tokio::net::UnixStream::connect(path).await.is_ok() {
        return Err(LaunchError::SocketInUse {
            path: path.to_owned(),
        });
    }
    match fs_err::remove_file(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == ErrorKind::NotFound => Ok(()),
        Err(e) => Err(stale(e)),
    }
}

/// Waiting for a VMM's API failed.
#[derive(Debug, thiserror::Error)]
pub enum WaitForApiError {
    #[error("vmm exited ({0}) before its api answered")]
    Exited(VmmExit),
    #[error("vmm api {path} did not answer within {waited:?}")]
    Timeout {
        path: PathBuf,
        waited: Duration,
        #[source]
        last: Option<Box<dyn std::error::Error + Send + Sync>>,
    },
    #[error("waiting for the vmm api was cancelled")]
    Cancelled,
}

/// Polls `GET /` on `socket` until it answers, `timeout` passes, `cancel`
/// fires, or (when given) the process exits.
pub async fn wait_for_api(
    socket: &Path,
    timeout: Duration,
    cancel: &CancellationToken,
    exit: Option<&ExitWatch>,
) -> Result<InstanceInfo, WaitForApiError> {
    let start = Instant::now();
    let deadline = tokio::time::Instant::now() + timeout;
    let mut exit = exit.cloned();
    let mut delay = Duration::from_millis(1);
    let mut last: Option<Box<dyn std::error::Error + Send + Sync>> = None;
    loop {
        if let Some(code) = exit.as_ref().and_then(ExitWatch::exited) {
            return Err(WaitForApiError::Exited(code));
        }
        let attempt = async {
            let mut client = ApiClient::connect(socket).await.map_err(boxed)?;
            client.describe_instance().await.map_err(boxed)
        };
        tokio::select! {
            _ = cancel.cancelled() => return Err(WaitForApiError::Cancelled),
            result = tokio::time::timeout_at(deadline, attempt) => match result {
                Ok(Ok(info)) => return Ok(info),
                Ok(Err(error)) => last = Some(error),
                Err(_) => {}
            },
        }
        if tokio::time::Instant::now() >= deadline {
            return Err(WaitForApiError::Timeout {
                path: socket.to_owned(),
                waited: start.elapsed(),
                last,
            });
        }
        let sleep = tokio::time::sleep_until(deadline.min(tokio::time::Instant::now() + delay));
        delay = (delay * 2).min(Duration::from_millis(8));
        tokio::select! {
            _ = cancel.cancelled() => return Err(WaitForApiError::Cancelled),
            code = async {
                match exit.as_mut() {
                    Some(watch) => watch.wait().await,
                    None => std::future::pending().await,
                }
            } => return Err(WaitForApiError::Exited(code)),
            () = sleep => {}
        }
    }
}

fn boxed<E: std::error::Error + Send + Sync + 'static>(
    e: E,
) -> Box<dyn std::error::Error + Send + Sync> {
    Box::new(e)
}

/// Everything sent to a VMM between start and `InstanceStart`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct VmConfig {
    pub logger: Option<Logger>,
    pub metrics: Option<Metrics>,
    pub machine: MachineConfiguration,
    pub boot_source: BootSource,
    pub drives: Vec<Drive>,
    pub network_interfaces: Vec<NetworkInterface>,
    pub vsock: Option<Vsock>,
}

/// Configuring or starting the guest failed.
#[derive(Debug, thiserror::Error)]
pub enum ConfigureError {
    #[error(transparent)]
    Connect(#[from] ConnectError),
    #[error("configuring the vmm failed at {step}")]
    Request {
        step: String,
        #[source]
        source: ApiRequestError,
    },
}

/// Sends `config` and then `InstanceStart`. Firecracker accepts the
/// pre-boot requests in any order; the logger goes first so the rest is
/// logged where it belongs.
#[tracing::instrument(skip_all)]
pub async fn configure_and_start(
    client: &mut ApiClient,
    config: &VmConfig,
) -> Result<(), ConfigureError> {
    let step = |name: &str| {
        let name = name.to_owned();
        move |source| ConfigureError::Request { step: name, source }
    };
    if let Some(logger) = &config.logger {
        client.put_logger(logger).await.map_err(step("logger"))?;
    }
    if let Some(metrics) = &config.metrics {
        client.put_metrics(metrics).await.map_err(step("metrics"))?;
    }
    client
        .put_machine_config(&config.machine)
        .await
        .map_err(step("machine-config"))?;
    client
        .put_boot_source(&config.boot_source)
        .await
        .map_err(step("boot-source"))?;
    for drive in &config.drives {
        client
            .put_drive(drive)
            .await
            .map_err(step(&format!("drive {}", drive.drive_id)))?;
    }
    for iface in &config.network_interfaces {
        client
            .put_network_interface(iface)
            .await
            .map_err(step(&format!("network-interface {}", iface.iface_id)))?;
    }
    if let Some(vsock) = &config.vsock {
        client.put_vsock(vsock).await.map_err(step("vsock"))?;
    }
    client
        .instance_start()
        .await
        .map_err(step("InstanceStart"))?;
    Ok(())
}

/// Asking the guest to shut down failed.
#[derive(Debug, thiserror::Error)]
pub enum StopVmmError {
    #[error(transparent)]
    Connect(#[from] ConnectError),
    #[error(transparent)]
    Request(#[from] ApiRequestError),
}

/// Sends `SendCtrlAltDel` through the API socket. The guest shuts down on
/// its own time; wait on the process's [`ExitWatch`].
pub async fn send_ctrl_alt_del(api_socket: &Path) -> Result<(), StopVmmError> {
    let mut client = ApiClient::connect(api_socket).await?;
    client.send_ctrl_alt_del().await?;
    Ok(())
}

/// Signalling a VMM failed.
#[derive(Debug, thiserror::Error)]
pub enum KillVmmError {
    #[error("could not send {signal} to vmm pid {pid}")]
    Signal {
        pid: u32,
        signal: Signal,
        #[source]
        source: io::Error,
    },
    #[error("vmm pid {pid} did not exit within {waited:?} of SIGKILL")]
    StillRunning { pid: u32, waited: Duration },
    #[error("banger-helper could not kill vmm pid {pid}")]
    Helper {
        pid: u32,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
}

/// SIGKILLs the VMM and waits (bounded) until it is gone.
pub async fn kill(process: &VmmProcess, wait: Duration) -> Result<(), KillVmmError> {
    process.signal(Signal::SIGKILL)?;
    wait_gone(process, wait).await
}

/// Waits (bounded) until a VMM that was sent SIGKILL is gone.
pub async fn wait_gone(process: &VmmProcess, wait: Duration) -> Result<(), KillVmmError> {
    let mut watch = process.exit_watch();
    match tokio::time::timeout(wait, watch.wait()).await {
        Ok(_) => Ok(()),
        Err(_) => Err(KillVmmError::StillRunning {
            pid: process.pid,
            waited: wait,
        }),
    }
}

/// Looking for a VMM by its API socket failed.
#[derive(Debug, thiserror::Error)]
pub enum FindVmmError {
    #[error("could not read {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("banger-helper could not look for the vmm of {path}")]
    Helper {
        path: PathBuf,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
}

/// The pid of the process listening on the unix socket `api_socket`, found
/// through `/proc/thread-self/net/unix` (socket inode by path) and
/// `/proc/*/fd` (inode to pid). `None` when nobody in the calling thread's
/// network namespace listens there.
pub fn find_pid_by_api_socket(api_socket: &Path) -> Result<Option<u32>, FindVmmError> {
    // The calling thread's network namespace (a thread may have entered
    // another one than its process); /proc/net is the process's.
    let table_path = ["/proc/thread-self/net/unix", "/proc/net/unix"]
        .map(Path::new)
        .into_iter()
        .find(|p| p.exists())
        .unwrap_or(Path::new("/proc/net/unix"));
    let table = fs_err::read_to_string(table_path).map_err(|source| FindVmmError::Read {
        path: table_path.to_owned(),
        source,
    })?;
    let wanted = socket_path_forms(api_socket);
    let inodes = unix_socket_inodes(&table, &wanted);
    if inodes.is_empty() {
        return Ok(None);
    }
    for pid in pids()? {
        let Ok(fds) = std::fs::read_dir(format!("/proc/{pid}/fd")) else {
            continue;
        };
        for fd in fds.filter_map(Result::ok) {
            let Ok(target) = std::fs::read_link(fd.path()) else {
                continue;
            };
            let Some(inode) = target
                .to_str()
                .and_then(|t| t.strip_prefix("socket:["))
                .and_then(|t| t.strip_suffix(']'))
                .and_then(|t| t.parse::<u64>().ok())
            else {
                continue;
            };
            if inodes.contains(&inode) {
                return Ok(Some(pid));
            }
        }
    }
    Ok(None)
}

/// The pid of a VMM started for `api_socket` that has not bound it yet: a
/// process whose arguments are `… --api-sock PATH …`. A daemon killed right
/// after starting one would otherwise leave it running, unseen by the next.
pub fn find_pid_by_argv(api_socket: &Path) -> Result<Option<u32>, FindVmmError> {
    let wanted = socket_path_forms(api_socket);
    for pid in pids()? {
        let Ok(cmdline) = std::fs::read(format!("/proc/{pid}/cmdline")) else {
            continue;
        };
        let mut args = cmdline.split(|byte| *byte == 0);
        while let Some(arg) = args.next() {
            if arg == b"--api-sock"
                && let Some(path) = args.next()
                && wanted.iter().any(|form| form.as_bytes() == path)
            {
                return Ok(Some(pid));
            }
        }
    }
    Ok(None)
}

/// Every pid in `/proc`, in order.
fn pids() -> Result<Vec<u32>, FindVmmError> {
    let proc_dir = Path::new("/proc");
    let entries = fs_err::read_dir(proc_dir).map_err(|source| FindVmmError::Read {
        path: proc_dir.to_owned(),
        source,
    })?;
    let mut pids: Vec<u32> = entries
        .filter_map(Result::ok)
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .collect();
    pids.sort_unstable();
    Ok(pids)
}

/// The literal path and its canonical form (a VMM may have been given
/// either).
fn socket_path_forms(path: &Path) -> Vec<String> {
    let mut forms = vec![path.to_string_lossy().into_owned()];
    if let (Some(parent), Some(name)) = (path.parent(), path.file_name())
        && let Ok(parent) = std::fs::canonicalize(parent)
    {
        let canonical = parent.join(name).to_string_lossy().into_owned();
        if !forms.contains(&canonical) {
            forms.push(canonical);
        }
    }
    forms
}

/// `SO_ACCEPTCON`: the socket is listening.
const UNIX_FLAG_LISTENING: u64 = 0x10000;

/// Inodes of sockets bound to one of `paths` in a `/proc/net/unix` table,
/// listening sockets first.
fn unix_socket_inodes(table: &str, paths: &[String]) -> Vec<u64> {
    let mut listening = Vec::new();
    let mut other = Vec::new();
    for line in table.lines().skip(1) {
        let cols: Vec<&str> = line.split_whitespace().collect();
        // Num RefCount Protocol Flags Type St Inode Path
        let (Some(flags), Some(inode), Some(path)) = (cols.get(3), cols.get(6), cols.get(7)) else {
            continue;
        };
        if !paths.iter().any(|p| p == path) {
            continue;
        }
        let (Ok(flags), Ok(inode)) = (u64::from_str_radix(flags, 16), inode.parse::<u64>()) else {
            continue;
        };
        if flags & UNIX_FLAG_LISTENING != 0 {
            listening.push(inode);
        } else {
            other.push(inode);
        }
    }
    listening.extend(other);
    listening
}

/// Re-adopts the VMM listening on `api_socket` (after a daemon restart): its
/// pid, a pidfd for signalling and an exit watch. `None` when no process
/// listens there.
pub fn adopt(api_socket: &Path) -> Result<Option<VmmProcess>, FindVmmError> {
    let Some(pid) = find_pid_by_api_socket(api_socket)? else {
        return Ok(None);
    };
    adopt_pid(pid, api_socket)
}

/// [`adopt`], or else the VMM started for `api_socket` that does not listen
/// yet (found by its arguments, a scan of every process's command line:
/// only for a start a crash interrupted).
pub fn adopt_starting(api_socket: &Path) -> Result<Option<VmmProcess>, FindVmmError> {
    if let Some(process) = adopt(api_socket)? {
        return Ok(Some(process));
    }
    let Some(pid) = find_pid_by_argv(api_socket)? else {
        return Ok(None);
    };
    adopt_pid(pid, api_socket)
}

/// A handle on the running VMM `pid` serving `api_socket`, which need not
/// be this process's child (or even its user's: signalling is then not
/// possible, but the exit is still seen). `None` when it is gone.
pub fn adopt_pid(pid: u32, api_socket: &Path) -> Result<Option<VmmProcess>, FindVmmError> {
    let fd = match pidfd::open(pid) {
        Ok(fd) => fd,
        Err(e) if e.raw_os_error() == Some(libc::ESRCH) => return Ok(None),
        Err(source) => {
            return Err(FindVmmError::Read {
                path: PathBuf::from(format!("/proc/{pid}")),
                source,
            });
        }
    };
    let watch_fd = fd.try_clone().map_err(|source| FindVmmError::Read {
        path: PathBuf::from(format!("/proc/{pid}")),
        source,
    })?;
    let (notifier, exit) = ExitWatch::channel();
    tokio::spawn(async move {
        let _ = pidfd::exited(watch_fd).await;
        notifier.notify(VmmExit::Unknown);
    });
    Ok(Some(VmmProcess {
        pid,
        api_socket: api_socket.to_owned(),
        exit,
        pidfd: Some(Arc::new(fd)),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_follow_firecracker_rules() {
        assert_eq!(validate_id("0123abcd-ef"), Ok(()));
        assert_eq!(validate_id(""), Err(InvalidId::Length(0)));
        assert_eq!(validate_id(&"a".repeat(65)), Err(InvalidId::Length(65)));
        assert_eq!(validate_id("a_b"), Err(InvalidId::Char('_')));
        assert_eq!(validate_id(&"a".repeat(64)), Ok(()));
    }

    #[test]
    fn args_are_firecracker_flags() {
        let mut spec = LaunchSpec::new("firecracker", "vm1", "/s/api.sock", "/s/console.log");
        spec.log_path = Some("/s/vmm.log".into());
        spec.extra_args = vec!["--level".into(), "Debug".into()];
        let args: Vec<String> = spec
            .args()
            .into_iter()
            .map(|a| a.into_string().unwrap())
            .collect();
        assert_eq!(
            args,
            [
                "--api-sock",
                "/s/api.sock",
                "--id",
                "vm1",
                "--log-path",
                "/s/vmm.log",
                "--level",
                "Debug"
            ]
        );
    }

    #[test]
    fn proc_net_unix_parsing_prefers_listeners() {
        let table = "Num       RefCount Protocol Flags    Type St Inode Path\n\
            0000000000000000: 00000003 00000000 00000000 0001 03 1001 /run/x/api.sock\n\
            0000000000000000: 00000002 00000000 00010000 0001 01 1000 /run/x/api.sock\n\
            0000000000000000: 00000002 00000000 00010000 0001 01 2000 /run/y/api.sock\n\
            0000000000000000: 00000002 00000000 00000000 0001 03 3000\n";
        assert_eq!(
            unix_socket_inodes(table, &["/run/x/api.sock".to_owned()]),
            [1000, 1001]
        );
        assert!(unix_socket_inodes(table, &["/nope".to_owned()]).is_empty());
    }

    #[tokio::test]
    async fn finds_the_listener_of_a_socket_in_this_process() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("api.sock");
        let _listener = tokio::net::UnixListener::bind(&path).unwrap();
        assert_eq!(
            find_pid_by_api_socket(&path).unwrap(),
            Some(std::process::id())
        );
        assert_eq!(
            find_pid_by_api_socket(&dir.path().join("other.sock")).unwrap(),
            None
        );
    }

    /// A VMM that has not bound its socket yet is found by its arguments
    /// (a daemon killed right after starting it must not lose it).
    #[tokio::test]
    async fn a_vmm_not_listening_yet_is_found_by_its_arguments() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("api.sock");
        let other = dir.path().join("other.sock");
        // One process that keeps its arguments (Debian's perl is essential).
        let mut child = banger_exec::Cmd::new("perl")
            .args(["-e", "sleep 30", "--", "--id", "vm1", "--api-sock"])
            .arg(&path)
            .spawn_async()
            .unwrap();
        let pid = child.id().unwrap();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        while find_pid_by_argv(&path).unwrap() != Some(pid) {
            assert!(std::time::Instant::now() < deadline, "never found {pid}");
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        assert_eq!(find_pid_by_argv(&other).unwrap(), None);
        assert!(adopt(&path).unwrap().is_none(), "not listening");
        let adopted = adopt_starting(&path)
            .unwrap()
            .expect("adopted by its arguments");
        assert_eq!(adopted.pid(), pid);
        child.kill().await.unwrap();
    }

    #[tokio::test]
    async fn stale_sockets_are_removed_live_ones_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("api.sock");
        remove_stale_socket(&path).await.unwrap();

        let listener = std::os::unix::net::UnixListener::bind(&path).unwrap();
        let err = remove_stale_socket(&path).await.unwrap_err();
        assert!(matches!(err, LaunchError::SocketInUse { .. }), "{err:?}");
        drop(listener);
        assert!(path.exists(), "a dropped listener leaves its socket file");
        remove_stale_socket(&path).await.unwrap();
        assert!(!path.exists());

        let file = dir.path().join("plain");
        fs_err::write(&file, "x").unwrap();
        let err = remove_stale_socket(&file).await.unwrap_err();
        assert!(matches!(err, LaunchError::StaleSocket { .. }), "{err:?}");
    }

    #[tokio::test]
    async fn wait_for_api_stops_on_cancel_and_exit() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("api.sock");
        let cancel = CancellationToken::new();
        cancel.cancel();
        let err = wait_for_api(&path, Duration::from_secs(30), &cancel, None)
            .await
            .unwrap_err();
        assert!(matches!(err, WaitForApiError::Cancelled), "{err:?}");

        let (notifier, watch) = ExitWatch::channel();
        notifier.notify(VmmExit::Code(1));
        let err = wait_for_api(
            &path,
            Duration::from_secs(30),
            &CancellationToken::new(),
            Some(&watch),
        )
        .await
        .unwrap_err();
        assert!(
            matches!(err, WaitForApiError::Exited(VmmExit::Code(1))),
            "{err:?}"
        );

        let err = wait_for_api(&path, Duration::ZERO, &CancellationToken::new(), None)
            .await
            .unwrap_err();
        assert!(matches!(err, WaitForApiError::Timeout { .. }), "{err:?}");
    }

    /// A real process started detached: it gets its own session, its output
    /// lands in the console log, and its early exit is reported with the
    /// log's path.
    #[tokio::test]
    async fn launch_reports_an_early_exit_with_the_console_log() {
        let dir = tempfile::tempdir().unwrap();
        let script = dir.path().join("fake-vmm");
        fs_err::write(
            &script,
            "#!/bin/sh\necho \"args: $*\"\necho \"sid: $(cut -d' ' -f6 /proc/$$/stat) pid: $$\"\nexit 3\n",
        )
        .unwrap();
        fs_err::set_permissions(&script, std::os::unix::fs::PermissionsExt::from_mode(0o755))
            .unwrap();
        let console = dir.path().join("console.log");
        let spec = LaunchSpec::new(&script, "vm-1", dir.path().join("api.sock"), &console);
        let err = launch(&spec, &CancellationToken::new()).await.unwrap_err();
        match &err {
            LaunchError::Exited {
                exit, console_log, ..
            } => {
                assert_eq!(*exit, VmmExit::Code(3));
                assert_eq!(console_log, &console);
            }
            other => panic!("unexpected {other:?}"),
        }
        assert!(err.to_string().contains("console.log"), "{err}");
        let log = fs_err::read_to_string(&console).unwrap();
        assert!(log.contains("args: --api-sock"), "{log}");
        let ids = log.lines().find(|l| l.starts_with("sid: ")).unwrap();
        let parts: Vec<&str> = ids.split_whitespace().collect();
        assert_eq!(parts[1], parts[3], "the vmm leads its own session: {ids}");
    }
}
