//! The Firecracker API as a state machine: one request in, one answer out,
//! with Firecracker v1.16's paths, checks, ordering of checks, status codes
//! and messages. Booting is delegated to a [`GuestLauncher`], so everything
//! here is unit-tested without root.

use std::fmt;
use std::io;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use banger_firecracker::api::{
    self, ActionType, BootSource, Drive, InstanceActionInfo, InstanceInfo, InstanceState, Logger,
    MachineConfiguration, MachineConfigurationUpdate, Metrics, NetworkInterface, PartialDrive,
    PartialNetworkInterface, Vm, VmState, Vsock,
};
use banger_firecracker::boot_args::{Cmdline, IpConfig};
use futures::future::BoxFuture;
use hyper::body::Bytes;
use hyper::{Method, StatusCode};
use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio::sync::watch;

use crate::cli::Owner;
use crate::log::LogControl;
use crate::vsock::VsockDevice;

/// The version `GET /` reports: the Firecracker API version simvm speaks.
pub const VMM_VERSION: &str = "1.16.1";
/// `GET /` `app_name`.
pub const APP_NAME: &str = "banger-simvm";
/// Longest TAP name the kernel accepts (IFNAMSIZ minus the NUL).
const MAX_IFNAME_LEN: usize = 15;

/// One API request, as it came off the wire.
#[derive(Debug, Clone)]
pub struct ApiRequest {
    pub method: Method,
    /// Path and query, e.g. `/drives/rootfs`.
    pub path: String,
    /// `None` when the request had no body (Firecracker treats an empty body
    /// as none).
    pub body: Option<Bytes>,
}

impl ApiRequest {
    pub fn new(method: Method, path: &str, body: Option<&str>) -> Self {
        Self {
            method,
            path: path.to_owned(),
            body: body
                .filter(|b| !b.is_empty())
                .map(|b| Bytes::copy_from_slice(b.as_bytes())),
        }
    }
}

/// One answer: a status and, unless 204, a JSON body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiReply {
    pub status: StatusCode,
    pub body: Option<String>,
}

impl ApiReply {
    fn no_content() -> Self {
        Self {
            status: StatusCode::NO_CONTENT,
            body: None,
        }
    }

    fn json<T: Serialize>(value: &T) -> Self {
        Self {
            status: StatusCode::OK,
            body: Some(serde_json::to_string(value).expect("api types serialize")),
        }
    }

    fn fault(message: impl fmt::Display) -> Self {
        let body = api::Error {
            fault_message: message.to_string(),
        };
        Self {
            status: StatusCode::BAD_REQUEST,
            body: Some(serde_json::to_string(&body).expect("fault serializes")),
        }
    }

    /// The `fault_message`, when this is an error.
    pub fn fault_message(&self) -> Option<String> {
        let body = self.body.as_deref()?;
        serde_json::from_str::<api::Error>(body)
            .ok()
            .map(|e| e.fault_message)
    }
}

const NOT_SUPPORTED_PRE_BOOT: &str =
    "The requested operation is not supported before starting the microVM.";
const NOT_SUPPORTED_POST_BOOT: &str =
    "The requested operation is not supported after starting the microVM.";

/// A drive as the guest boot needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DrivePlan {
    pub path: PathBuf,
    pub read_only: bool,
}

/// The guest's network interface.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NicPlan {
    /// The configured TAP; the guest's veth joins the bridge it belongs to.
    pub tap: String,
    pub mac: Option<api::MacAddr>,
}

/// The vsock device (simvm serves its host-side socket, `uds_path`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VsockPlan {
    pub guest_cid: u32,
}

/// Everything `InstanceStart` hands to the launcher.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BootPlan {
    pub id: String,
    pub kernel: PathBuf,
    pub initrd: Option<PathBuf>,
    pub vcpus: u8,
    pub mem_mib: usize,
    pub root: DrivePlan,
    /// Mounted at `/root` inside the root drive.
    pub work: Option<DrivePlan>,
    /// Every drive in Firecracker's order: the root drive first, then the
    /// others as they were added (the guest sees them as vda, vdb, …).
    pub drives: Vec<DrivePlan>,
    pub cmdline: String,
    pub ip: Option<IpConfig>,
    pub nic: Option<NicPlan>,
    pub vsock: Option<VsockPlan>,
}

/// How simvm's hybrid vsock socket reaches a guest's vsock listeners.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VsockUpstream {
    /// The listener for port P is the unix socket `<dir>/<P>.sock` (the
    /// namespace engine: seen from simvm through the guest's root).
    Dir(PathBuf),
    /// Another hybrid vsock socket (`CONNECT <port>\n` → `OK …\n`): the
    /// qemu engine's vhost-device-vsock.
    Hybrid(PathBuf),
    /// Nothing can be reached yet (the guest's vsock driver is not up):
    /// connections are closed, as when nothing listens.
    NotReady,
}

/// A running guest.
pub trait Guest: Send + Sync + fmt::Debug {
    /// Where connections to the guest's vsock ports go.
    fn vsock_upstream(&self) -> VsockUpstream;
    /// Ctrl-Alt-Del: asks the guest to shut down.
    fn ctrl_alt_del(&self) -> Result<(), String>;
    fn pause(&self) -> Result<(), String>;
    fn resume(&self) -> Result<(), String>;
    /// Becomes `true` once the guest is gone.
    fn exited(&self) -> watch::Receiver<bool>;
    /// Forced stop: SIGKILL to the guest.
    fn kill(&self) {}
    /// Host resources of the guest that still exist (loop devices, veth);
    /// empty once everything has been released.
    fn leftovers(&self) -> Vec<String> {
        Vec::new()
    }
    /// Once exited: why, if the guest did not end by shutting itself down
    /// or being asked to (a crashed or killed VMM process). simvm then exits
    /// with an error, as a crashed Firecracker would.
    fn failure(&self) -> Option<String> {
        None
    }
}

/// Boots guests.
pub trait GuestLauncher: Send + Sync + fmt::Debug {
    fn launch<'a>(&'a self, plan: &'a BootPlan) -> BoxFuture<'a, Result<Arc<dyn Guest>, String>>;
}

/// Where the running guest (if any) is published for the vsock proxy and
/// for simvm's main loop.
pub type GuestSlot = watch::Sender<Option<Arc<dyn Guest>>>;

/// The API's state.
#[derive(Debug)]
pub struct Controller {
    id: String,
    state: InstanceState,
    machine: MachineConfiguration,
    boot_source: Option<BootSource>,
    /// Root drive first, as Firecracker keeps them.
    drives: Vec<Drive>,
    nics: Vec<NetworkInterface>,
    vsock: Option<VsockDevice>,
    metrics: Option<std::fs::File>,
    log: LogControl,
    launcher: Arc<dyn GuestLauncher>,
    guest: Arc<GuestSlot>,
    /// Who the vsock socket is given to (`--owner`).
    owner: Option<Owner>,
}

impl Controller {
    pub fn new(
        id: impl Into<String>,
        launcher: Arc<dyn GuestLauncher>,
        log: LogControl,
        guest: Arc<GuestSlot>,
    ) -> Self {
        Self {
            id: id.into(),
            state: InstanceState::NotStarted,
            machine: MachineConfiguration::default(),
            boot_source: None,
            drives: Vec::new(),
            nics: Vec::new(),
            vsock: None,
            metrics: None,
            log,
            launcher,
            guest,
            owner: None,
        }
    }

    /// Gives the vsock socket to `owner` once bound (`--owner`).
    pub fn set_owner(&mut self, owner: Option<Owner>) {
        self.owner = owner;
    }

    pub fn state(&self) -> InstanceState {
        self.state
    }

    /// The vsock socket path, if a vsock device was configured.
    pub fn vsock_path(&self) -> Option<&Path> {
        self.vsock.as_ref().map(VsockDevice::path)
    }

    /// `--metrics-path` at start-up, as Firecracker does it.
    pub fn init_metrics(&mut self, path: &Path) -> Result<(), String> {
        self.put_metrics(Metrics {
            metrics_path: path.to_owned(),
        })
        .fault_message()
        .map_or(Ok(()), Err)
    }

    fn booted(&self) -> bool {
        self.state != InstanceState::NotStarted
    }

    /// Answers one request.
    pub async fn handle(&mut self, request: ApiRequest) -> ApiReply {
        let ApiRequest { method, path, body } = request;
        let trimmed = path.trim_start_matches('/');
        let mut tokens = trimmed.split_terminator('/');
        let first = tokens.next().unwrap_or("");
        let second = tokens.next();
        tracing::info!(%method, path = %path, "api request");
        let body = body.as_deref();
        let reply = match (&method, first, body) {
            (&Method::GET, "", None) => ApiReply::json(&self.instance_info()),
            (&Method::GET, "machine-config", None) => ApiReply::json(&self.machine),
            (&Method::GET, "version", None) => {
                ApiReply::json(&serde_json::json!({ "firecracker_version": VMM_VERSION }))
            }
            (&Method::GET, _, Some(_)) => ApiReply::fault("GET request cannot have a body."),
            (&Method::PUT, "actions", Some(body)) => match decode::<InstanceActionInfo>(body) {
                Ok(action) => self.action(action.action_type).await,
                Err(reply) => reply,
            },
            (&Method::PUT, "boot-source", Some(body)) => {
                decode(body).map_or_else(|r| r, |b| self.put_boot_source(b))
            }
            (&Method::PUT, "drives", Some(body)) => self.put_drive(second, body),
            (&Method::PUT, "logger", Some(body)) => {
                decode(body).map_or_else(|r| r, |l| self.put_logger(l))
            }
            (&Method::PUT, "machine-config", Some(body)) => {
                match decode::<MachineConfiguration>(body) {
                    Ok(config) => {
                        self.update_machine_config(&MachineConfigurationUpdate::from(&config))
                    }
                    Err(reply) => reply,
                }
            }
            (&Method::PUT, "metrics", Some(body)) => {
                decode(body).map_or_else(|r| r, |m| self.put_metrics(m))
            }
            (&Method::PUT, "network-interfaces", Some(body)) => self.put_nic(second, body),
            (&Method::PUT, "vsock", Some(body)) => {
                decode(body).map_or_else(|r| r, |v| self.put_vsock(v))
            }
            (&Method::PUT, _, None) => ApiReply::fault("Empty PUT request."),
            (&Method::PATCH, "machine-config", Some(body)) => {
                match decode::<MachineConfigurationUpdate>(body) {
                    Ok(update) if update.is_empty() => ApiReply::fault("Empty PATCH request."),
                    Ok(update) => self.update_machine_config(&update),
                    Err(reply) => reply,
                }
            }
            (&Method::PATCH, "vm", Some(body)) => match decode::<Vm>(body) {
                Ok(vm) => self.patch_vm(vm.state),
                Err(reply) => reply,
            },
            (&Method::PATCH, "drives", Some(body)) => {
                self.patch_device::<PartialDrive>(&method, first, second, body, |d, id| {
                    (d.drive_id != id).then(|| {
                        "The id from the path does not match the id from the body!".to_owned()
                    })
                })
            }
            (&Method::PATCH, "network-interfaces", Some(body)) => self
                .patch_device::<PartialNetworkInterface>(&method, first, second, body, |n, id| {
                    (n.iface_id != id).then(|| {
                        format!(
                            "The id from the path [{id}] does not match the id from the body [{}]!",
                            n.iface_id
                        )
                    })
                }),
            (&Method::DELETE, "drives" | "network-interfaces" | "pmem", None) => {
                self.unsupported_device_update(&method, first, second)
            }
            (&Method::PATCH, _, None) => ApiReply::fault("Empty PATCH request."),
            (&Method::DELETE, _, Some(_)) => ApiReply::fault("Empty Delete request."),
            (&Method::GET, "vm", None) if second == Some("config") => ApiReply::fault(
                "The requested operation is not supported: banger-simvm does not emulate GET /vm/config",
            ),
            // Firecracker loads snapshots only into a fresh VMM.
            (&Method::PUT, "snapshot", Some(_)) if second == Some("load") && self.booted() => {
                ApiReply::fault(NOT_SUPPORTED_POST_BOOT)
            }
            (&Method::GET, "balloon" | "hotplug" | "mmds", None)
            | (
                &Method::PUT,
                "balloon" | "cpu-config" | "entropy" | "hotplug" | "mmds" | "pmem" | "serial"
                | "snapshot",
                Some(_),
            )
            | (&Method::PATCH, "balloon" | "hotplug" | "mmds" | "pmem", _) => {
                ApiReply::fault(format!(
                    "The requested operation is not supported: banger-simvm does not emulate {method} /{trimmed}"
                ))
            }
            (&Method::GET | &Method::PUT | &Method::PATCH | &Method::DELETE, _, _) => {
                ApiReply::fault(format!(
                    "Invalid request method and/or path: {method} {first}."
                ))
            }
            _ => ApiReply::fault("Invalid HTTP Method: Unsupported HTTP method."),
        };
        match reply.fault_message() {
            Some(fault) => tracing::warn!(status = %reply.status, %fault, "api request refused"),
            None => tracing::debug!(status = %reply.status, "api request done"),
        }
        reply
    }

    fn instance_info(&self) -> InstanceInfo {
        InstanceInfo {
            id: self.id.clone(),
            state: self.state,
            vmm_version: VMM_VERSION.to_owned(),
            app_name: APP_NAME.to_owned(),
        }
    }

    fn update_machine_config(&mut self, update: &MachineConfigurationUpdate) -> ApiReply {
        if self.booted() {
            return ApiReply::fault(NOT_SUPPORTED_POST_BOOT);
        }
        match self.machine.updated(update) {
            Ok(next) => {
                self.machine = next;
                ApiReply::no_content()
            }
            Err(e) => ApiReply::fault(format!("Machine config error: {e}")),
        }
    }

    fn put_boot_source(&mut self, boot: BootSource) -> ApiReply {
        if self.booted() {
            return ApiReply::fault(NOT_SUPPORTED_POST_BOOT);
        }
        if let Err(e) = std::fs::File::open(&boot.kernel_image_path) {
            return ApiReply::fault(format!(
                "Boot source error: The kernel file cannot be opened: {e}"
            ));
        }
        if let Some(initrd) = &boot.initrd_path
            && let Err(e) = std::fs::File::open(initrd)
        {
            return ApiReply::fault(format!(
                "Boot source error: The initrd file cannot be opened due to invalid path or invalid permissions. {e}"
            ));
        }
        if let Some(args) = &boot.boot_args
            && let Err(e) = api::validate_cmdline(args)
        {
            return ApiReply::fault(format!(
                "Boot source error: The kernel command line is invalid: {e}"
            ));
        }
        self.boot_source = Some(boot);
        ApiReply::no_content()
    }

    fn put_drive(&mut self, id: Option<&str>, body: &[u8]) -> ApiReply {
        let id = match checked_id(id) {
            Ok(id) => id.to_owned(),
            Err(reply) => return reply,
        };
        let drive: Drive = match decode(body) {
            Ok(drive) => drive,
            Err(reply) => return reply,
        };
        if drive.drive_id != id {
            return ApiReply::fault("The id from the path does not match the id from the body!");
        }
        if self.booted() {
            return ApiReply::fault("PCI is not enabled");
        }
        let position = self
            .drives
            .iter()
            .position(|d| d.drive_id == drive.drive_id);
        let has_root = self.drives.first().is_some_and(|d| d.is_root_device);
        if drive.is_root_device && has_root && position != Some(0) {
            return ApiReply::fault("Drive config error: A root block device already exists!");
        }
        let (Some(path), None) = (&drive.path_on_host, &drive.socket) else {
            return ApiReply::fault(
                "Drive config error: Unable to create the virtio block device: Invalid block config.",
            );
        };
        let read_only = drive.is_read_only.unwrap_or(false);
        if let Err(e) = std::fs::OpenOptions::new()
            .read(true)
            .write(!read_only)
            .open(path)
        {
            return ApiReply::fault(format!(
                "Drive config error: Unable to create the virtio block device: Virtio backend error: Error manipulating the backing file: {e} {path}"
            ));
        }
        let is_root = drive.is_root_device;
        match position {
            None if is_root => self.drives.insert(0, drive),
            None => self.drives.push(drive),
            Some(i) => {
                self.drives[i] = drive;
                if i != 0 && is_root {
                    self.drives.swap(0, i);
                }
            }
        }
        ApiReply::no_content()
    }

    fn put_nic(&mut self, id: Option<&str>, body: &[u8]) -> ApiReply {
        let id = match checked_id(id) {
            Ok(id) => id.to_owned(),
            Err(reply) => return reply,
        };
        let nic: NetworkInterface = match decode(body) {
            Ok(nic) => nic,
            Err(reply) => return reply,
        };
        if nic.iface_id != id {
            return ApiReply::fault(format!(
                "The id from the path [{id}] does not match the id from the body [{}]!",
                nic.iface_id
            ));
        }
        if self.booted() {
            return ApiReply::fault("PCI is not enabled");
        }
        if let Some(mac) = nic.guest_mac
            && self
                .nics
                .iter()
                .any(|n| n.guest_mac == Some(mac) && n.iface_id != nic.iface_id)
        {
            return ApiReply::fault(format!(
                "Network config error: The MAC address is already in use: {mac}"
            ));
        }
        let others: Vec<&NetworkInterface> = self
            .nics
            .iter()
            .filter(|n| n.iface_id != nic.iface_id)
            .collect();
        let create = "Network config error: Could not create the network device";
        if nic.host_dev_name.len() > MAX_IFNAME_LEN {
            return ApiReply::fault(format!(
                "{create}: Open tap device failed: Invalid interface name"
            ));
        }
        if others.iter().any(|n| n.host_dev_name == nic.host_dev_name) {
            return ApiReply::fault(format!(
                "{create}: Open tap device failed: Error while creating ifreq structure: Device or resource busy (os error 16). Invalid TUN/TAP Backend provided by {}. Check our documentation on setting up the network devices.",
                nic.host_dev_name
            ));
        }
        if let Some(mtu) = nic.mtu
            && !api::MTU_RANGE.contains(&mtu)
        {
            return ApiReply::fault(format!(
                "{create}: MTU {mtu} is out of range [{}, {}]",
                api::MTU_RANGE.start(),
                api::MTU_RANGE.end()
            ));
        }
        self.nics.retain(|n| n.iface_id != nic.iface_id);
        self.nics.push(nic);
        ApiReply::no_content()
    }

    fn put_vsock(&mut self, config: Vsock) -> ApiReply {
        if self.booted() {
            return ApiReply::fault(NOT_SUPPORTED_POST_BOOT);
        }
        let backend = "Vsock config error: Cannot create backend for vsock device";
        if let Some(old) = self.vsock.take()
            && let Err(e) = old.remove()
        {
            return ApiReply::fault(format!(
                "{backend}: Error binding to the host-side Unix socket: {e}"
            ));
        }
        let device = match VsockDevice::bind(config, self.guest.subscribe()) {
            Ok(device) => device,
            Err(e) => {
                return ApiReply::fault(format!(
                    "{backend}: Error binding to the host-side Unix socket: {e}"
                ));
            }
        };
        if let Some(owner) = self.owner
            && let Err(e) = owner.give(device.path())
        {
            let _ = device.remove();
            return ApiReply::fault(format!(
                "{backend}: cannot give the host-side Unix socket to {owner}: {e}"
            ));
        }
        self.vsock = Some(device);
        ApiReply::no_content()
    }

    fn put_logger(&mut self, logger: Logger) -> ApiReply {
        if self.booted() {
            return ApiReply::fault(NOT_SUPPORTED_POST_BOOT);
        }
        match self.log.apply(&logger) {
            Ok(()) => ApiReply::no_content(),
            Err(e) => ApiReply::fault(format!("Logger error: Failed to open target file: {e}")),
        }
    }

    fn put_metrics(&mut self, metrics: Metrics) -> ApiReply {
        if self.booted() {
            return ApiReply::fault(NOT_SUPPORTED_POST_BOOT);
        }
        let bad_input = "Metrics error: Cannot initialize the metrics system due to bad user input";
        let file = match open_nonblock(&metrics.metrics_path) {
            Ok(file) => file,
            Err(e) => return ApiReply::fault(format!("{bad_input}: {e}")),
        };
        if self.metrics.is_some() {
            return ApiReply::fault(format!(
                "{bad_input}: Reinitialization of metrics not allowed."
            ));
        }
        self.metrics = Some(file);
        ApiReply::no_content()
    }

    async fn action(&mut self, action: ActionType) -> ApiReply {
        match action {
            ActionType::InstanceStart if self.booted() => ApiReply::fault(NOT_SUPPORTED_POST_BOOT),
            ActionType::InstanceStart => self.instance_start().await,
            _ if !self.booted() => ApiReply::fault(NOT_SUPPORTED_PRE_BOOT),
            ActionType::FlushMetrics => {
                self.flush_metrics();
                ApiReply::no_content()
            }
            ActionType::SendCtrlAltDel => match self.running_guest() {
                Some(guest) => match guest.ctrl_alt_del() {
                    Ok(()) => ApiReply::no_content(),
                    Err(e) => ApiReply::fault(format!("Internal VMM error: {e}")),
                },
                None => ApiReply::no_content(),
            },
        }
    }

    fn flush_metrics(&mut self) {
        use std::io::Write;
        if let Some(file) = &mut self.metrics {
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_millis())
                .unwrap_or(0);
            let line = serde_json::json!({ "utc_timestamp_ms": now });
            if let Err(error) = writeln!(file, "{line}") {
                tracing::warn!(%error, "could not write metrics");
            }
        }
    }

    fn running_guest(&self) -> Option<Arc<dyn Guest>> {
        self.guest.borrow().clone()
    }

    fn patch_vm(&mut self, state: VmState) -> ApiReply {
        if !self.booted() {
            return ApiReply::fault(NOT_SUPPORTED_PRE_BOOT);
        }
        let Some(guest) = self.running_guest() else {
            return ApiReply::no_content();
        };
        let (result, next) = match state {
            VmState::Paused => (guest.pause(), InstanceState::Paused),
            VmState::Resumed => (guest.resume(), InstanceState::Running),
        };
        match result {
            Ok(()) => {
                self.state = next;
                ApiReply::no_content()
            }
            Err(e) => ApiReply::fault(format!("Internal VMM error: {e}")),
        }
    }

    /// `PATCH` of a drive or network interface: Firecracker's checks, then
    /// refused (before boot as Firecracker does, after boot because simvm
    /// does not emulate device updates).
    fn patch_device<T: DeserializeOwned>(
        &self,
        method: &Method,
        kind: &str,
        id: Option<&str>,
        body: &[u8],
        mismatch: impl FnOnce(&T, &str) -> Option<String>,
    ) -> ApiReply {
        let id = match checked_id(id) {
            Ok(id) => id,
            Err(reply) => return reply,
        };
        let update: T = match decode(body) {
            Ok(update) => update,
            Err(reply) => return reply,
        };
        if let Some(message) = mismatch(&update, id) {
            return ApiReply::fault(message);
        }
        self.unsupported_device_update(method, kind, Some(id))
    }

    fn unsupported_device_update(&self, method: &Method, kind: &str, id: Option<&str>) -> ApiReply {
        if let Err(reply) = checked_id(id) {
            return reply;
        }
        if !self.booted() {
            return ApiReply::fault(NOT_SUPPORTED_PRE_BOOT);
        }
        ApiReply::fault(format!(
            "The requested operation is not supported: banger-simvm does not emulate {method} /{kind}"
        ))
    }

    /// Builds the boot plan from the configuration.
    fn plan(&self) -> Result<BootPlan, String> {
        let boot = self
            .boot_source
            .as_ref()
            .ok_or("Cannot start microvm without kernel configuration.")?;
        let drive_plan = |d: &Drive| DrivePlan {
            path: PathBuf::from(d.path_on_host.clone().unwrap_or_default()),
            read_only: d.is_read_only.unwrap_or(false),
        };
        let root = self
            .drives
            .first()
            .filter(|d| d.is_root_device)
            .map(drive_plan)
            .ok_or("banger-simvm needs a drive with is_root_device to boot")?;
        let work = self
            .drives
            .iter()
            .find(|d| !d.is_root_device)
            .map(drive_plan);
        let drives = self.drives.iter().map(drive_plan).collect();
        let cmdline = boot.boot_args.clone().unwrap_or_default();
        let ip = Cmdline::parse(&cmdline)
            .ip()
            .map_err(|e| format!("Invalid kernel command line: {e}"))?;
        let nic = self.nics.first().map(|n| NicPlan {
            tap: n.host_dev_name.clone(),
            mac: n.guest_mac,
        });
        let vsock = self.vsock.as_ref().map(|device| VsockPlan {
            guest_cid: device.config().guest_cid,
        });
        Ok(BootPlan {
            id: self.id.clone(),
            kernel: PathBuf::from(&boot.kernel_image_path),
            initrd: boot.initrd_path.as_ref().map(PathBuf::from),
            vcpus: self.machine.vcpu_count,
            mem_mib: self.machine.mem_size_mib,
            root,
            work,
            drives,
            cmdline,
            ip,
            nic,
            vsock,
        })
    }

    async fn instance_start(&mut self) -> ApiReply {
        let plan = match self.plan() {
            Ok(plan) => plan,
            Err(e) => return ApiReply::fault(format!("Start microvm error: {e}")),
        };
        tracing::info!(root = %plan.root.path.display(), "booting guest");
        match self.launcher.launch(&plan).await {
            Ok(guest) => {
                self.state = InstanceState::Running;
                self.guest.send_replace(Some(guest));
                ApiReply::no_content()
            }
            Err(e) => ApiReply::fault(format!("Start microvm error: {e}")),
        }
    }
}

/// Decodes a JSON body, answering Firecracker's message on failure.
fn decode<T: DeserializeOwned>(body: &[u8]) -> Result<T, ApiReply> {
    serde_json::from_slice(body).map_err(|e| {
        ApiReply::fault(format!(
            "An error occurred when deserializing the json body of a request: {e}."
        ))
    })
}

/// Firecracker's check of a resource id taken from the path.
fn checked_id(id: Option<&str>) -> Result<&str, ApiReply> {
    match id {
        None | Some("") => Err(ApiReply::fault("The ID cannot be empty.")),
        Some(id) if !id.chars().all(|c| c == '_' || c.is_alphanumeric()) => Err(ApiReply::fault(
            "API Resource IDs can only contain alphanumeric characters and underscores.",
        )),
        Some(id) => Ok(id),
    }
}

/// Opens a log or metrics target the way Firecracker does (created if
/// missing, never truncated), but appending, so restarts add to it.
pub(crate) fn open_nonblock(path: &Path) -> io::Result<std::fs::File> {
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(path)
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use super::*;

    #[derive(Debug, Default)]
    struct FakeGuest {
        calls: Mutex<Vec<&'static str>>,
        exited: Option<watch::Sender<bool>>,
    }

    impl Guest for FakeGuest {
        fn vsock_upstream(&self) -> VsockUpstream {
            VsockUpstream::Dir(PathBuf::from("/nonexistent"))
        }
        fn ctrl_alt_del(&self) -> Result<(), String> {
            self.calls.lock().unwrap().push("ctrl_alt_del");
            Ok(())
        }
        fn pause(&self) -> Result<(), String> {
            self.calls.lock().unwrap().push("pause");
            Ok(())
        }
        fn resume(&self) -> Result<(), String> {
            self.calls.lock().unwrap().push("resume");
            Ok(())
        }
        fn exited(&self) -> watch::Receiver<bool> {
            self.exited.as_ref().unwrap().subscribe()
        }
    }

    #[derive(Debug, Default)]
    struct FakeLauncher {
        plans: Mutex<Vec<BootPlan>>,
        fail: Mutex<Option<String>>,
    }

    impl GuestLauncher for FakeLauncher {
        fn launch<'a>(
            &'a self,
            plan: &'a BootPlan,
        ) -> BoxFuture<'a, Result<Arc<dyn Guest>, String>> {
            Box::pin(async move {
                self.plans.lock().unwrap().push(plan.clone());
                if let Some(e) = self.fail.lock().unwrap().take() {
                    return Err(e);
                }
                let (tx, _) = watch::channel(false);
                let guest: Arc<dyn Guest> = Arc::new(FakeGuest {
                    exited: Some(tx),
                    ..FakeGuest::default()
                });
                Ok(guest)
            })
        }
    }

    struct Fixture {
        dir: tempfile::TempDir,
        controller: Controller,
        launcher: Arc<FakeLauncher>,
    }

    impl Fixture {
        fn new() -> Self {
            let dir = tempfile::tempdir().unwrap();
            for f in ["vmlinux", "root.img", "work.img"] {
                fs_err::write(dir.path().join(f), "x").unwrap();
            }
            let launcher = Arc::new(FakeLauncher::default());
            let (slot, _) = watch::channel(None);
            let controller = Controller::new(
                "vm-1",
                launcher.clone(),
                LogControl::detached(),
                Arc::new(slot),
            );
            Self {
                dir,
                controller,
                launcher,
            }
        }

        fn path(&self, name: &str) -> String {
            self.dir.path().join(name).display().to_string()
        }

        async fn send(&mut self, method: Method, path: &str, body: &str) -> ApiReply {
            let body = body.replace("{dir}", &self.dir.path().display().to_string());
            self.controller
                .handle(ApiRequest::new(method, path, Some(&body)))
                .await
        }

        async fn ok(&mut self, method: Method, path: &str, body: &str) {
            let reply = self.send(method.clone(), path, body).await;
            assert!(reply.status.is_success(), "{method} {path}: {reply:?}");
        }
    }

    async fn configured() -> Fixture {
        let mut f = Fixture::new();
        f.ok(
            Method::PUT,
            "/boot-source",
            r#"{"kernel_image_path":"{dir}/vmlinux","boot_args":"console=ttyS0 ip=172.30.0.5::172.30.0.1:255.255.255.0:guest:eth0:off:1.1.1.1"}"#,
        )
        .await;
        f.ok(
            Method::PUT,
            "/drives/work",
            r#"{"drive_id":"work","is_root_device":false,"path_on_host":"{dir}/work.img","is_read_only":false}"#,
        )
        .await;
        f.ok(
            Method::PUT,
            "/drives/rootfs",
            r#"{"drive_id":"rootfs","is_root_device":true,"path_on_host":"{dir}/root.img","is_read_only":false}"#,
        )
        .await;
        f.ok(
            Method::PUT,
            "/network-interfaces/eth0",
            r#"{"iface_id":"eth0","host_dev_name":"tap-x","guest_mac":"02:fc:ac:1e:00:05"}"#,
        )
        .await;
        f
    }

    #[tokio::test]
    async fn boot_plan_comes_from_the_configuration() {
        let mut f = configured().await;
        f.ok(
            Method::PUT,
            "/actions",
            r#"{"action_type":"InstanceStart"}"#,
        )
        .await;
        let plans = f.launcher.plans.lock().unwrap().clone();
        let plan = &plans[0];
        assert_eq!(plan.root.path, PathBuf::from(f.path("root.img")));
        assert_eq!(
            plan.work.as_ref().unwrap().path,
            PathBuf::from(f.path("work.img"))
        );
        let ip = plan.ip.as_ref().unwrap();
        assert_eq!(ip.hostname.as_deref(), Some("guest"));
        assert_eq!(ip.prefix_len(), 24);
        assert_eq!(plan.nic.as_ref().unwrap().tap, "tap-x");
        assert_eq!(f.controller.state(), InstanceState::Running);

        let reply = f.send(Method::GET, "/", "").await;
        assert!(reply.body.unwrap().contains(r#""state":"Running""#));
    }

    /// The plan carries everything a VMM needs (qemu uses all of it).
    #[tokio::test]
    async fn the_plan_holds_the_whole_machine() {
        let mut f = Fixture::new();
        f.ok(
            Method::PUT,
            "/vsock",
            r#"{"guest_cid":7,"uds_path":"{dir}/v.sock"}"#,
        )
        .await;
        f.ok(
            Method::PUT,
            "/machine-config",
            r#"{"vcpu_count":2,"mem_size_mib":768}"#,
        )
        .await;
        f.ok(
            Method::PUT,
            "/boot-source",
            r#"{"kernel_image_path":"{dir}/vmlinux","initrd_path":"{dir}/work.img","boot_args":"console=ttyS0"}"#,
        )
        .await;
        f.ok(
            Method::PUT,
            "/drives/rootfs",
            r#"{"drive_id":"rootfs","is_root_device":true,"path_on_host":"{dir}/root.img","is_read_only":true}"#,
        )
        .await;
        f.ok(
            Method::PUT,
            "/drives/work",
            r#"{"drive_id":"work","is_root_device":false,"path_on_host":"{dir}/work.img"}"#,
        )
        .await;
        f.ok(
            Method::PUT,
            "/actions",
            r#"{"action_type":"InstanceStart"}"#,
        )
        .await;
        let plan = f.launcher.plans.lock().unwrap()[0].clone();
        assert_eq!(plan.vsock, Some(VsockPlan { guest_cid: 7 }));
        assert_eq!((plan.vcpus, plan.mem_mib), (2, 768));
        assert_eq!(plan.kernel, PathBuf::from(f.path("vmlinux")));
        assert_eq!(plan.initrd, Some(PathBuf::from(f.path("work.img"))));
        let drives: Vec<(PathBuf, bool)> = plan
            .drives
            .iter()
            .map(|d| (d.path.clone(), d.read_only))
            .collect();
        assert_eq!(
            drives,
            [
                (PathBuf::from(f.path("root.img")), true),
                (PathBuf::from(f.path("work.img")), false)
            ]
        );
    }

    #[tokio::test]
    async fn failed_boot_stays_not_started() {
        let mut f = configured().await;
        *f.launcher.fail.lock().unwrap() = Some("mount failed".into());
        let reply = f
            .send(
                Method::PUT,
                "/actions",
                r#"{"action_type":"InstanceStart"}"#,
            )
            .await;
        assert_eq!(reply.status, StatusCode::BAD_REQUEST);
        assert_eq!(
            reply.fault_message().unwrap(),
            "Start microvm error: mount failed"
        );
        assert_eq!(f.controller.state(), InstanceState::NotStarted);
        f.ok(
            Method::PUT,
            "/actions",
            r#"{"action_type":"InstanceStart"}"#,
        )
        .await;
    }

    #[tokio::test]
    async fn start_needs_kernel_and_root_drive() {
        let mut f = Fixture::new();
        let reply = f
            .send(
                Method::PUT,
                "/actions",
                r#"{"action_type":"InstanceStart"}"#,
            )
            .await;
        assert_eq!(
            reply.fault_message().unwrap(),
            "Start microvm error: Cannot start microvm without kernel configuration."
        );
        f.ok(
            Method::PUT,
            "/boot-source",
            r#"{"kernel_image_path":"{dir}/vmlinux"}"#,
        )
        .await;
        let reply = f
            .send(
                Method::PUT,
                "/actions",
                r#"{"action_type":"InstanceStart"}"#,
            )
            .await;
        assert!(reply.fault_message().unwrap().contains("is_root_device"));
    }

    #[tokio::test]
    async fn root_drive_moves_first_and_is_unique() {
        let mut f = configured().await;
        assert_eq!(f.controller.drives[0].drive_id, "rootfs");
        let reply = f
            .send(
                Method::PUT,
                "/drives/work",
                r#"{"drive_id":"work","is_root_device":true,"path_on_host":"{dir}/work.img"}"#,
            )
            .await;
        assert_eq!(
            reply.fault_message().unwrap(),
            "Drive config error: A root block device already exists!"
        );
        // Updating the root drive itself is fine.
        f.ok(
            Method::PUT,
            "/drives/rootfs",
            r#"{"drive_id":"rootfs","is_root_device":true,"path_on_host":"{dir}/root.img","is_read_only":true}"#,
        )
        .await;
    }

    #[tokio::test]
    async fn post_boot_refusals() {
        let mut f = configured().await;
        f.ok(
            Method::PUT,
            "/actions",
            r#"{"action_type":"InstanceStart"}"#,
        )
        .await;
        for (method, path, body, fault) in [
            (
                Method::PUT,
                "/machine-config",
                r#"{"vcpu_count":1,"mem_size_mib":128}"#,
                NOT_SUPPORTED_POST_BOOT,
            ),
            (
                Method::PUT,
                "/boot-source",
                r#"{"kernel_image_path":"/nope"}"#,
                NOT_SUPPORTED_POST_BOOT,
            ),
            (
                Method::PUT,
                "/drives/x",
                r#"{"drive_id":"x","is_root_device":false,"path_on_host":"/nope"}"#,
                "PCI is not enabled",
            ),
            (
                Method::PUT,
                "/actions",
                r#"{"action_type":"InstanceStart"}"#,
                NOT_SUPPORTED_POST_BOOT,
            ),
            (
                Method::PUT,
                "/logger",
                r#"{"level":"Info"}"#,
                NOT_SUPPORTED_POST_BOOT,
            ),
        ] {
            let reply = f.send(method, path, body).await;
            assert_eq!(reply.fault_message().as_deref(), Some(fault), "{path}");
        }
        f.ok(Method::PATCH, "/vm", r#"{"state":"Paused"}"#).await;
        assert_eq!(f.controller.state(), InstanceState::Paused);
        f.ok(Method::PATCH, "/vm", r#"{"state":"Resumed"}"#).await;
        f.ok(
            Method::PUT,
            "/actions",
            r#"{"action_type":"SendCtrlAltDel"}"#,
        )
        .await;
    }

    #[tokio::test]
    async fn routing_errors_match_firecracker() {
        let mut f = Fixture::new();
        for (method, path, body, fault) in [
            (
                Method::GET,
                "/nope",
                "",
                "Invalid request method and/or path: GET nope.",
            ),
            (
                Method::GET,
                "/machine-config?x=1",
                "",
                "Invalid request method and/or path: GET machine-config?x=1.",
            ),
            (Method::PUT, "/machine-config", "", "Empty PUT request."),
            (Method::PATCH, "/machine-config", "", "Empty PATCH request."),
            (
                Method::PATCH,
                "/machine-config",
                "{}",
                "Empty PATCH request.",
            ),
            (Method::GET, "/", "{}", "GET request cannot have a body."),
            (
                Method::PUT,
                "/drives/a-b",
                "{}",
                "API Resource IDs can only contain alphanumeric characters and underscores.",
            ),
            (Method::PUT, "/drives", "{}", "The ID cannot be empty."),
            (
                Method::PATCH,
                "/vm",
                r#"{"state":"Paused"}"#,
                NOT_SUPPORTED_PRE_BOOT,
            ),
        ] {
            let reply = f.send(method.clone(), path, body).await;
            assert_eq!(reply.status, StatusCode::BAD_REQUEST, "{method} {path}");
            assert_eq!(
                reply.fault_message().as_deref(),
                Some(fault),
                "{method} {path}"
            );
        }
        let reply = f.send(Method::GET, "/machine-config/", "").await;
        assert_eq!(reply.status, StatusCode::OK);
    }

    #[tokio::test]
    async fn metrics_cannot_be_reinitialized() {
        let mut f = Fixture::new();
        let body = r#"{"metrics_path":"{dir}/metrics","unknown":1}"#;
        f.ok(Method::PUT, "/metrics", body).await;
        let reply = f.send(Method::PUT, "/metrics", body).await;
        assert!(
            reply
                .fault_message()
                .unwrap()
                .ends_with("Reinitialization of metrics not allowed."),
            "{reply:?}"
        );
    }

    #[tokio::test]
    async fn nic_checks() {
        let mut f = configured().await;
        let reply = f
            .send(
                Method::PUT,
                "/network-interfaces/eth1",
                r#"{"iface_id":"eth1","host_dev_name":"tap-y","guest_mac":"02:fc:ac:1e:00:05"}"#,
            )
            .await;
        assert_eq!(
            reply.fault_message().unwrap(),
            "Network config error: The MAC address is already in use: 02:fc:ac:1e:00:05"
        );
        let reply = f
            .send(
                Method::PUT,
                "/network-interfaces/eth1",
                r#"{"iface_id":"eth1","host_dev_name":"tap-x"}"#,
            )
            .await;
        assert!(
            reply
                .fault_message()
                .unwrap()
                .contains("Device or resource busy")
        );
        let reply = f
            .send(
                Method::PUT,
                "/network-interfaces/eth0",
                r#"{"iface_id":"eth1","host_dev_name":"tap-x"}"#,
            )
            .await;
        assert_eq!(
            reply.fault_message().unwrap(),
            "The id from the path [eth0] does not match the id from the body [eth1]!"
        );
    }
}
