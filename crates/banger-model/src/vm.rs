//! VM records.

use std::fmt;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

use jiff::Timestamp;
use serde::{Deserialize, Serialize};

use crate::{Id, Name, VmSpec};

/// Lifecycle state of a VM.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum VmState {
    /// Being created; never booted yet.
    Creating,
    Starting,
    Running,
    Stopping,
    Stopped,
    /// Failed to start or its VMM died; `last_error` says why.
    Error,
    /// Being deleted: its disks may already be gone. A delete interrupted
    /// by a crash is finished by the next daemon's reconcile.
    Deleting,
}

impl VmState {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Creating => "creating",
            Self::Starting => "starting",
            Self::Running => "running",
            Self::Stopping => "stopping",
            Self::Stopped => "stopped",
            Self::Error => "error",
            Self::Deleting => "deleting",
        }
    }

    pub fn parse(raw: &str) -> Option<Self> {
        Some(match raw {
            "creating" => Self::Creating,
            "starting" => Self::Starting,
            "running" => Self::Running,
            "stopping" => Self::Stopping,
            "stopped" => Self::Stopped,
            "error" => Self::Error,
            "deleting" => Self::Deleting,
            _ => return None,
        })
    }
}

impl fmt::Display for VmState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One disk: what it may grow to and what it uses on the host now.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DiskUsage {
    /// The guest's view: the disk's full size.
    pub provisioned: crate::ByteSize,
    /// Blocks it holds on the host's filesystem.
    pub allocated: crate::ByteSize,
}

/// A VM's disks on the host.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct VmDisks {
    pub root: DiskUsage,
    pub work: DiskUsage,
}

impl VmDisks {
    pub fn provisioned(&self) -> crate::ByteSize {
        crate::ByteSize(self.root.provisioned.0 + self.work.provisioned.0)
    }

    pub fn allocated(&self) -> crate::ByteSize {
        crate::ByteSize(self.root.allocated.0 + self.work.allocated.0)
    }
}

/// Which VMM runs the guest.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum VmmKind {
    /// A Firecracker microVM: hypervisor isolation.
    #[default]
    Firecracker,
    /// `banger-simvm`: the guest runs in Linux namespaces, not a hypervisor.
    Sim,
    /// `banger-simvm --engine qemu`: the real kernel and image in QEMU
    /// microvm (KVM when usable, software emulation otherwise).
    Qemu,
}

impl VmmKind {
    pub const ALL: [Self; 3] = [Self::Firecracker, Self::Sim, Self::Qemu];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Firecracker => "firecracker",
            Self::Sim => "sim",
            Self::Qemu => "qemu",
        }
    }

    pub fn parse(raw: &str) -> Option<Self> {
        match raw {
            "firecracker" => Some(Self::Firecracker),
            "sim" => Some(Self::Sim),
            "qemu" => Some(Self::Qemu),
            _ => None,
        }
    }

    /// Whether guests boot a kernel (the image must have one).
    pub fn boots_kernel(self) -> bool {
        matches!(self, Self::Firecracker | Self::Qemu)
    }
}

/// What runs a qemu guest's vCPUs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Accel {
    /// Hardware virtualisation.
    Kvm,
    /// QEMU's software emulation (TCG): correct, and slow.
    Tcg,
}

impl Accel {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Kvm => "kvm",
            Self::Tcg => "tcg",
        }
    }

    /// How `vm show` and `doctor` describe it.
    pub fn description(self) -> &'static str {
        match self {
            Self::Kvm => "KVM, hardware virtualisation",
            Self::Tcg => "TCG, software emulation: slow",
        }
    }

    pub fn parse(raw: &str) -> Option<Self> {
        match raw {
            "kvm" => Some(Self::Kvm),
            "tcg" => Some(Self::Tcg),
            _ => None,
        }
    }
}

impl fmt::Display for Accel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl fmt::Display for VmmKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How the VM's copy-on-write root disk was made.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StorageStrategy {
    /// FICLONE on a filesystem with reflinks (btrfs, xfs).
    Reflink,
    /// A device-mapper snapshot over loop devices.
    DmSnapshot,
    /// A sparse full copy (slowest; `doctor` warns).
    Copy,
}

impl StorageStrategy {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Reflink => "reflink",
            Self::DmSnapshot => "dm_snapshot",
            Self::Copy => "copy",
        }
    }

    pub fn parse(raw: &str) -> Option<Self> {
        match raw {
            "reflink" => Some(Self::Reflink),
            "dm_snapshot" => Some(Self::DmSnapshot),
            "copy" => Some(Self::Copy),
            _ => None,
        }
    }
}

impl fmt::Display for StorageStrategy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A guest's address on the banger bridge, allocated for the VM's lifetime.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NetworkAllocation {
    pub ip: Ipv4Addr,
    pub prefix_len: u8,
    pub gateway: Ipv4Addr,
    pub mac: String,
}

impl NetworkAllocation {
    /// A locally administered MAC derived from the IP: `02:fc:` + the four
    /// address bytes, so the same IP always gets the same MAC.
    pub fn mac_for(ip: Ipv4Addr) -> String {
        let [a, b, c, d] = ip.octets();
        format!("02:fc:{a:02x}:{b:02x}:{c:02x}:{d:02x}")
    }
}

/// What `vm workspace prepare` recorded.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WorkspaceInfo {
    pub host_path: PathBuf,
    pub guest_path: PathBuf,
    /// The default export base: the workspace as it was copied in (the
    /// host's uncommitted work included), committed in the guest.
    pub base_commit: String,
    pub branch: Option<String>,
    /// The host's HEAD when the workspace was copied.
    #[serde(default)]
    pub head_commit: Option<String>,
}

/// One VM.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Vm {
    pub id: Id,
    pub name: Name,
    pub image_id: Id,
    pub image_name: String,
    pub state: VmState,
    pub spec: VmSpec,
    pub nat: bool,
    pub vmm: VmmKind,
    /// qemu VMs: the accelerator of the current (or last) boot.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub accel: Option<Accel>,
    /// Address, gateway and MAC, allocated at create.
    pub network: NetworkAllocation,
    /// The TAP device while running.
    pub tap: Option<String>,
    /// How the root disk was made, decided at create.
    pub storage: StorageStrategy,
    pub dir: PathBuf,
    /// The VMM's pid while running.
    pub pid: Option<u32>,
    /// The guest's vsock context id, allocated at create.
    pub vsock_cid: u32,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
    pub started_at: Option<Timestamp>,
    pub last_error: Option<String>,
    pub workspace: Option<WorkspaceInfo>,
    /// Host ports forwarded into the guest while it runs.
    #[serde(default)]
    pub ports: Vec<crate::publish::PortForward>,
}

impl Vm {
    pub fn paths(&self) -> VmPaths {
        VmPaths::new(&self.dir)
    }

    /// `<name>.vm`
    pub fn dns_name(&self) -> String {
        format!("{}.vm", self.name)
    }
}

/// The files in a VM's directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VmPaths {
    pub dir: PathBuf,
}

impl VmPaths {
    pub fn new(dir: &Path) -> Self {
        Self {
            dir: dir.to_owned(),
        }
    }

    /// Copy-on-write root disk (file strategies).
    pub fn root_disk(&self) -> PathBuf {
        self.dir.join("root.ext4")
    }

    /// The guest's /root.
    pub fn work_disk(&self) -> PathBuf {
        self.dir.join("work.ext4")
    }

    pub fn api_socket(&self) -> PathBuf {
        self.dir.join("api.sock")
    }

    /// Firecracker's hybrid vsock unix socket.
    pub fn vsock_socket(&self) -> PathBuf {
        self.dir.join("vsock.sock")
    }

    /// The VMM's stdout/stderr: the guest's serial console.
    pub fn console_log(&self) -> PathBuf {
        self.dir.join("console.log")
    }

    /// The VMM's own log (Firecracker's logger).
    pub fn vmm_log(&self) -> PathBuf {
        self.dir.join("vmm.log")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mac_is_derived_from_ip() {
        assert_eq!(
            NetworkAllocation::mac_for(Ipv4Addr::new(172, 30, 0, 5)),
            "02:fc:ac:1e:00:05"
        );
    }

    #[test]
    fn enums_round_trip_through_strings() {
        for state in [
            VmState::Creating,
            VmState::Starting,
            VmState::Running,
            VmState::Stopping,
            VmState::Stopped,
            VmState::Error,
            VmState::Deleting,
        ] {
            assert_eq!(VmState::parse(state.as_str()), Some(state));
            assert_eq!(
                serde_json::to_string(&state).unwrap(),
                format!("\"{state}\"")
            );
        }
        for kind in VmmKind::ALL {
            assert_eq!(VmmKind::parse(kind.as_str()), Some(kind));
        }
        for strategy in [
            StorageStrategy::Reflink,
            StorageStrategy::DmSnapshot,
            StorageStrategy::Copy,
        ] {
            assert_eq!(StorageStrategy::parse(strategy.as_str()), Some(strategy));
            assert_eq!(
                serde_json::to_string(&strategy).unwrap(),
                format!("\"{strategy}\"")
            );
        }
    }
}
