//! Typed results, one per method (methods answering a bare record use the
//! model type directly).

use std::path::PathBuf;

use banger_buildinfo::BuildInfo;
use banger_model::image::Image;
use banger_model::kernel::Kernel;
use banger_model::vm::Vm;
use serde::{Deserialize, Serialize};

/// `daemon.ping`
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PingResult {
    pub build: BuildInfo,
    pub pid: u32,
    pub protocol: u32,
    /// Fingerprint of the config file the daemon read
    /// (`banger_model::config::fingerprint`).
    #[serde(default)]
    pub config: u64,
}

/// `daemon.status`
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatusResult {
    pub build: BuildInfo,
    pub pid: u32,
    /// RFC 3339.
    pub started_at: String,
    pub socket: PathBuf,
    pub log_path: PathBuf,
    pub state_dir: PathBuf,
    pub config_path: PathBuf,
    pub log_level: String,
    /// Addresses the `.vm` DNS server listens on (`udp://…`, `tcp://…`).
    pub dns_listeners: Vec<String>,
    /// The bridge and subnet this daemon's VMs use, and how it reaches them.
    pub network: NetworkStatus,
    pub vms_total: usize,
    pub vms_running: usize,
    /// Requests in flight, including the status request itself.
    pub active_requests: usize,
}

/// Where a daemon's VMs live on the host network.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NetworkStatus {
    pub bridge: String,
    /// The bridge's address and prefix, e.g. `172.30.0.1/24`.
    pub subnet: String,
    /// `netlink` (a root daemon) or `banger-helper at PATH`.
    pub via: String,
}

/// `daemon.shutdown`, and methods with nothing to say.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Empty {}

/// `vm.list`
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VmListResult {
    pub vms: Vec<Vm>,
    /// Host conditions every VM is affected by (the state filesystem
    /// running out of space).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
}

/// `vm.show`: the record and what its disks hold on the host.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VmDetails {
    #[serde(flatten)]
    pub vm: Vm,
    pub disks: banger_model::vm::VmDisks,
}

/// `image.list`
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageListResult {
    pub images: Vec<Image>,
}

/// `image.pull`: the image, and what the pull did to it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImagePullResult {
    pub image: Image,
    pub outcome: PullOutcome,
}

/// What `image pull` of a name did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum PullOutcome {
    /// A new image.
    Pulled,
    /// The image was there with the same digest: nothing was downloaded.
    UpToDate { digest: String },
    /// The image was there with another digest: its files were replaced in
    /// place (same name and id). VMs made from it keep their own disks.
    Replaced {
        previous_digest: String,
        digest: String,
        /// VMs made from the previous version.
        vms: Vec<String>,
    },
}

/// `kernel.list`
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KernelListResult {
    pub kernels: Vec<Kernel>,
}

/// `daemon.sleep`
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct SleepResult {
    pub slept_ms: u64,
}

/// `vm.ssh_info`: what the CLI needs to exec `ssh`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SshInfo {
    pub name: String,
    pub ip: std::net::Ipv4Addr,
    pub user: String,
    pub key_path: PathBuf,
    /// This VM's own known_hosts file.
    pub known_hosts: PathBuf,
    pub state: banger_model::vm::VmState,
}

/// `vm.health`
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VmHealth {
    pub name: String,
    pub state: banger_model::vm::VmState,
    /// The agent answered `/healthz`.
    pub agent_ok: bool,
    pub agent_version: Option<String>,
    /// Why the agent did not answer.
    pub agent_error: Option<String>,
}

/// `vm.stats`: the VMM process as the host sees it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VmStats {
    pub name: String,
    pub pid: u32,
    /// Over a short sample; 100 = one full core.
    pub cpu_percent: f64,
    pub rss_bytes: u64,
    pub threads: u32,
    pub uptime_seconds: u64,
    pub disks: banger_model::vm::VmDisks,
}

/// `doctor.run`: the daemon's readiness checks, in display order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DoctorResult {
    pub checks: Vec<DoctorCheck>,
}

pub use banger_model::check::{CheckStatus, DoctorCheck};

/// One guest listener as `vm ports` shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PortRow {
    /// `https`, `http`, `tcp` or `udp`.
    pub proto: String,
    /// `https://web.vm:8443`, `tcp web.vm:22`, or a guest-local address.
    pub endpoint: String,
    /// The same with the guest's address for the name (`https://172.30.0.2:8443`),
    /// for hosts where `NAME.vm` does not resolve.
    #[serde(default)]
    pub address: String,
    pub port: u16,
    pub process: Option<String>,
    pub command: Option<String>,
    /// Host addresses (`127.0.0.1:8080`) published to this port (`-p`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub published: Vec<String>,
}

/// `vm.ports`
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PortsResult {
    pub name: String,
    /// The guest's address on the bridge.
    #[serde(default)]
    pub ip: Option<String>,
    pub ports: Vec<PortRow>,
}
