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
    pub vms_total: usize,
    pub vms_running: usize,
    /// Requests in flight, including the status request itself.
    pub active_requests: usize,
}

/// `daemon.shutdown`, and methods with nothing to say.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Empty {}

/// `vm.list`
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VmListResult {
    pub vms: Vec<Vm>,
}

/// `image.list`
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageListResult {
    pub images: Vec<Image>,
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
