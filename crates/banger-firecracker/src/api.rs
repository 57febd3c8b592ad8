//! Request and response bodies of the Firecracker v1.16 HTTP API.
//!
//! Field names, required fields, defaults and value limits follow
//! Firecracker's swagger (`src/firecracker/swagger/firecracker.yaml`) and,
//! where the swagger is looser than the server, what Firecracker v1.16
//! actually accepts on x86_64: every body below rejects unknown fields except
//! [`Metrics`] and [`TokenBucket`], which Firecracker parses leniently too.
//!
//! The same types are used by [`crate::client`] to encode requests and by
//! `banger-simvm` to decode them, so both sides agree by construction.

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Most vCPUs Firecracker gives a guest.
pub const MAX_VCPUS: u8 = 32;
/// Memory Firecracker assumes before `PUT /machine-config`.
pub const DEFAULT_MEM_SIZE_MIB: usize = 128;
/// Longest kernel command line Firecracker accepts on x86_64, including the
/// terminating NUL.
pub const CMDLINE_MAX_SIZE: usize = 2048;

/// `GET /` response.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InstanceInfo {
    /// The `--id` the VMM was started with.
    pub id: String,
    pub state: InstanceState,
    pub vmm_version: String,
    /// `Firecracker` for the real VMM.
    pub app_name: String,
}

/// `InstanceInfo.state`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum InstanceState {
    #[serde(rename = "Not started")]
    NotStarted,
    Running,
    Paused,
}

impl InstanceState {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::NotStarted => "Not started",
            Self::Running => "Running",
            Self::Paused => "Paused",
        }
    }
}

impl fmt::Display for InstanceState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// `PUT /machine-config` body and `GET /machine-config` response.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MachineConfiguration {
    /// 1..=32; 1 or even when `smt` is on.
    pub vcpu_count: u8,
    /// Non-zero; even with 2M huge pages.
    pub mem_size_mib: usize,
    #[serde(default)]
    pub smt: bool,
    /// Deprecated by Firecracker. `None` in a request clears the template;
    /// Firecracker's responses omit the field when no template is set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu_template: Option<CpuTemplate>,
    #[serde(default)]
    pub track_dirty_pages: bool,
    #[serde(default)]
    pub huge_pages: HugePages,
}

impl Default for MachineConfiguration {
    /// What Firecracker reports before any `PUT /machine-config`.
    fn default() -> Self {
        Self {
            vcpu_count: 1,
            mem_size_mib: DEFAULT_MEM_SIZE_MIB,
            smt: false,
            cpu_template: None,
            track_dirty_pages: false,
            huge_pages: HugePages::None,
        }
    }
}

impl MachineConfiguration {
    /// A configuration with `vcpu_count` vCPUs and `mem_size_mib` MiB, other
    /// fields at Firecracker's defaults.
    pub fn new(vcpu_count: u8, mem_size_mib: usize) -> Self {
        Self {
            vcpu_count,
            mem_size_mib,
            ..Self::default()
        }
    }

    /// Applies `update` the way Firecracker does: unspecified fields keep
    /// their current value, then the result is validated as a whole.
    pub fn updated(
        &self,
        update: &MachineConfigurationUpdate,
    ) -> Result<Self, InvalidMachineConfig> {
        let cpu_template = match update.cpu_template {
            None => self.cpu_template,
            Some(CpuTemplate::None) => None,
            Some(other) => Some(other),
        };
        let next = Self {
            vcpu_count: update.vcpu_count.unwrap_or(self.vcpu_count),
            mem_size_mib: update.mem_size_mib.unwrap_or(self.mem_size_mib),
            smt: update.smt.unwrap_or(self.smt),
            cpu_template,
            track_dirty_pages: update.track_dirty_pages.unwrap_or(self.track_dirty_pages),
            huge_pages: update.huge_pages.unwrap_or(self.huge_pages),
        };
        next.validate()?;
        Ok(next)
    }

    /// Firecracker's value checks: vCPU count in 1..=32 (1 or even with
    /// SMT), memory non-zero and a multiple of the huge page size.
    pub fn validate(&self) -> Result<(), InvalidMachineConfig> {
        if self.vcpu_count == 0 || self.vcpu_count > MAX_VCPUS {
            return Err(InvalidMachineConfig::VcpuCount);
        }
        if self.smt && self.vcpu_count > 1 && self.vcpu_count % 2 == 1 {
            return Err(InvalidMachineConfig::VcpuCount);
        }
        if self.mem_size_mib == 0 || !self.mem_size_mib.is_multiple_of(self.huge_pages.mib()) {
            return Err(InvalidMachineConfig::MemorySize);
        }
        Ok(())
    }
}

impl From<&MachineConfiguration> for MachineConfigurationUpdate {
    /// A `PUT` replaces every field, so it is an update that sets all of them.
    fn from(config: &MachineConfiguration) -> Self {
        Self {
            vcpu_count: Some(config.vcpu_count),
            mem_size_mib: Some(config.mem_size_mib),
            smt: Some(config.smt),
            cpu_template: Some(config.cpu_template.unwrap_or(CpuTemplate::None)),
            track_dirty_pages: Some(config.track_dirty_pages),
            huge_pages: Some(config.huge_pages),
        }
    }
}

/// `PATCH /machine-config` body: only the given fields change.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MachineConfigurationUpdate {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vcpu_count: Option<u8>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mem_size_mib: Option<usize>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub smt: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu_template: Option<CpuTemplate>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub track_dirty_pages: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub huge_pages: Option<HugePages>,
}

impl MachineConfigurationUpdate {
    /// Firecracker answers an empty `PATCH` with "Empty PATCH request.".
    pub fn is_empty(&self) -> bool {
        self == &Self::default()
    }
}

/// Why Firecracker refuses a machine configuration. The messages are
/// Firecracker's own (after its `Machine config error: ` prefix).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum InvalidMachineConfig {
    #[error(
        "The number of vCPUs must be greater than 0, less than 32 and must be 1 or an even number if SMT is enabled."
    )]
    VcpuCount,
    #[error("The memory size (MiB) is either 0, or not a multiple of the configured page size.")]
    MemorySize,
}

/// Deprecated static CPU templates Firecracker still parses on x86_64
/// (`V1N1` from the swagger is aarch64-only and refused on x86_64).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum CpuTemplate {
    C3,
    T2,
    T2S,
    None,
    T2CL,
    T2A,
}

/// Memory backing: 4K pages or 2M hugetlbfs pages.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum HugePages {
    #[default]
    None,
    #[serde(rename = "2M")]
    Hugetlbfs2M,
}

impl HugePages {
    /// Memory sizes must be a multiple of this many MiB.
    fn mib(self) -> usize {
        match self {
            Self::None => 1,
            Self::Hugetlbfs2M => 2,
        }
    }
}

/// `PUT /boot-source` body.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BootSource {
    pub kernel_image_path: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub initrd_path: Option<String>,
    /// Firecracker uses its own default command line when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub boot_args: Option<String>,
}

/// Why Firecracker refuses a kernel command line at `PUT /boot-source`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum InvalidCmdline {
    /// `linux-loader`'s message for a command line over the capacity.
    #[error("Invalid cmdline capacity provided.")]
    TooLong,
}

/// The check Firecracker makes when the boot source is set: the command
/// line (boot arguments, then ` -- ` and init arguments, each trimmed) must
/// fit in [`CMDLINE_MAX_SIZE`] with its terminating NUL. The characters
/// are not checked until Firecracker appends its own parameters at boot.
pub fn validate_cmdline(cmdline: &str) -> Result<(), InvalidCmdline> {
    const SEPARATOR: &str = " -- ";
    let (boot, init) = match cmdline.find(SEPARATOR) {
        Some(i) => (&cmdline[..i], &cmdline[i + SEPARATOR.len()..]),
        None => (cmdline, ""),
    };
    let (boot, init) = (boot.trim(), init.trim());
    let mut size = boot.len() + 1;
    if !init.is_empty() {
        size += SEPARATOR.len() + init.len();
    }
    if size > CMDLINE_MAX_SIZE {
        return Err(InvalidCmdline::TooLong);
    }
    Ok(())
}

/// `PUT /drives/{drive_id}` body.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Drive {
    /// Must equal the id in the path.
    pub drive_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub partuuid: Option<String>,
    /// The guest's root; Firecracker appends `root=/dev/vda rw` (or `ro`,
    /// or `root=PARTUUID=…`) to the kernel command line for it.
    pub is_root_device: bool,
    #[serde(default)]
    pub cache_type: CacheType,
    /// Required (with `path_on_host`) for virtio-block.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub is_read_only: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path_on_host: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate_limiter: Option<RateLimiter>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub io_engine: Option<IoEngine>,
    /// vhost-user-block socket; excludes `path_on_host`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub socket: Option<String>,
}

impl Drive {
    /// A virtio-block drive backed by the file or block device at `path`.
    pub fn virtio(id: impl Into<String>, path: impl Into<String>, is_root_device: bool) -> Self {
        Self {
            drive_id: id.into(),
            is_root_device,
            is_read_only: Some(false),
            path_on_host: Some(path.into()),
            ..Self::default()
        }
    }
}

/// `PATCH /drives/{drive_id}` body (post-boot only).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PartialDrive {
    pub drive_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path_on_host: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate_limiter: Option<RateLimiter>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum CacheType {
    #[default]
    Unsafe,
    Writeback,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum IoEngine {
    Async,
    #[default]
    Sync,
}

/// An I/O rate limiter: independent bandwidth and operations buckets.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RateLimiter {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bandwidth: Option<TokenBucket>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ops: Option<TokenBucket>,
}

/// A token bucket. Firecracker does not reject unknown fields here.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenBucket {
    pub size: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub one_time_burst: Option<u64>,
    /// Milliseconds to refill the bucket.
    pub refill_time: u64,
}

/// `PUT /network-interfaces/{iface_id}` body.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NetworkInterface {
    /// Must equal the id in the path.
    pub iface_id: String,
    /// The host TAP device.
    pub host_dev_name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub guest_mac: Option<MacAddr>,
    /// 68..=65535 when given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mtu: Option<u16>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rx_rate_limiter: Option<RateLimiter>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tx_rate_limiter: Option<RateLimiter>,
}

impl NetworkInterface {
    pub fn new(iface_id: impl Into<String>, tap: impl Into<String>, mac: Option<MacAddr>) -> Self {
        Self {
            iface_id: iface_id.into(),
            host_dev_name: tap.into(),
            guest_mac: mac,
            mtu: None,
            rx_rate_limiter: None,
            tx_rate_limiter: None,
        }
    }
}

/// `PATCH /network-interfaces/{iface_id}` body (post-boot only).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PartialNetworkInterface {
    pub iface_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rx_rate_limiter: Option<RateLimiter>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tx_rate_limiter: Option<RateLimiter>,
}

/// Smallest and largest MTU Firecracker advertises.
pub const MTU_RANGE: std::ops::RangeInclusive<u16> = 68..=65535;

/// A MAC address in `aa:bb:cc:dd:ee:ff` form (two hex digits per byte,
/// either case), as Firecracker parses it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct MacAddr(pub [u8; 6]);

/// Firecracker's message for a malformed `guest_mac`.
pub const INVALID_MAC_MESSAGE: &str = "The provided MAC address is invalid.";

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid MAC address {0:?}")]
pub struct ParseMacError(pub String);

impl FromStr for MacAddr {
    type Err = ParseMacError;

    fn from_str(raw: &str) -> Result<Self, Self::Err> {
        let err = || ParseMacError(raw.to_owned());
        let mut bytes = [0u8; 6];
        let mut parts = raw.split(':');
        for byte in &mut bytes {
            let part = parts.next().ok_or_else(err)?;
            if part.len() != 2 || !part.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Err(err());
            }
            *byte = u8::from_str_radix(part, 16).map_err(|_| err())?;
        }
        if parts.next().is_some() {
            return Err(err());
        }
        Ok(Self(bytes))
    }
}

impl fmt::Display for MacAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let [a, b, c, d, e, g] = self.0;
        write!(f, "{a:02x}:{b:02x}:{c:02x}:{d:02x}:{e:02x}:{g:02x}")
    }
}

impl Serialize for MacAddr {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for MacAddr {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let raw = String::deserialize(deserializer)?;
        raw.parse()
            .map_err(|_| serde::de::Error::custom(INVALID_MAC_MESSAGE))
    }
}

/// `PUT /vsock` body: a hybrid vsock device backed by a unix socket.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Vsock {
    /// Deprecated by Firecracker; accepted and ignored.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vsock_id: Option<String>,
    /// The guest's context id (the swagger says at least 3).
    pub guest_cid: u32,
    /// Where the VMM listens for host-initiated connections
    /// (`CONNECT <port>\n`).
    pub uds_path: String,
}

/// `PUT /logger` body.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Logger {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub log_path: Option<PathBuf>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub level: Option<LogLevel>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub show_level: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub show_log_origin: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub module: Option<String>,
}

/// Logger level. Parsed case-insensitively; `Warn` and `Warning` both work.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum LogLevel {
    Off,
    Trace,
    Debug,
    Info,
    Warning,
    Error,
}

impl LogLevel {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Off => "Off",
            Self::Trace => "Trace",
            Self::Debug => "Debug",
            Self::Info => "Info",
            Self::Warning => "Warning",
            Self::Error => "Error",
        }
    }
}

/// Firecracker's message for an unknown log level.
pub const INVALID_LEVEL_MESSAGE: &str = "Invalid LevelFilter";

impl FromStr for LogLevel {
    type Err = String;

    fn from_str(raw: &str) -> Result<Self, Self::Err> {
        Ok(match raw.to_ascii_lowercase().as_str() {
            "off" => Self::Off,
            "trace" => Self::Trace,
            "debug" => Self::Debug,
            "info" => Self::Info,
            "warn" | "warning" => Self::Warning,
            "error" => Self::Error,
            _ => return Err(INVALID_LEVEL_MESSAGE.to_owned()),
        })
    }
}

impl Serialize for LogLevel {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for LogLevel {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let raw = String::deserialize(deserializer)?;
        raw.parse().map_err(serde::de::Error::custom)
    }
}

/// `PUT /metrics` body. Firecracker does not reject unknown fields here.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Metrics {
    pub metrics_path: PathBuf,
}

/// `PUT /actions` body.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InstanceActionInfo {
    pub action_type: ActionType,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum ActionType {
    FlushMetrics,
    InstanceStart,
    SendCtrlAltDel,
}

/// `PATCH /vm` body.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Vm {
    pub state: VmState,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum VmState {
    Paused,
    Resumed,
}

/// Body of every error response.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Error {
    pub fault_message: String,
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn parse<T: serde::de::DeserializeOwned>(value: serde_json::Value) -> Result<T, String> {
        serde_json::from_value(value).map_err(|e| e.to_string())
    }

    #[test]
    fn machine_config_defaults_and_strictness() {
        let config: MachineConfiguration =
            parse(json!({"vcpu_count": 2, "mem_size_mib": 1024})).unwrap();
        assert_eq!(config, MachineConfiguration::new(2, 1024));
        assert!(
            parse::<MachineConfiguration>(json!({"vcpu_count": 2}))
                .unwrap_err()
                .contains("missing field `mem_size_mib`")
        );
        assert!(
            parse::<MachineConfiguration>(json!({"vcpu_count": 2, "mem_size_mib": 1, "x": 1}))
                .unwrap_err()
                .contains("unknown field `x`")
        );
        assert!(
            parse::<MachineConfiguration>(json!({"vcpu_count": 300, "mem_size_mib": 1}))
                .unwrap_err()
                .contains("invalid value: integer `300`, expected u8")
        );
        // Responses omit an unset template, like Firecracker's.
        let body = serde_json::to_value(MachineConfiguration::default()).unwrap();
        assert_eq!(
            body,
            json!({"vcpu_count": 1, "mem_size_mib": 128, "smt": false,
                   "track_dirty_pages": false, "huge_pages": "None"})
        );
    }

    #[test]
    fn machine_config_value_limits() {
        let check = |vcpu, mem, smt, huge| {
            MachineConfiguration {
                smt,
                huge_pages: huge,
                ..MachineConfiguration::new(vcpu, mem)
            }
            .validate()
        };
        assert_eq!(check(1, 128, false, HugePages::None), Ok(()));
        assert_eq!(check(32, 128, false, HugePages::None), Ok(()));
        assert_eq!(
            check(0, 128, false, HugePages::None),
            Err(InvalidMachineConfig::VcpuCount)
        );
        assert_eq!(
            check(33, 128, false, HugePages::None),
            Err(InvalidMachineConfig::VcpuCount)
        );
        assert_eq!(check(3, 128, false, HugePages::None), Ok(()));
        assert_eq!(
            check(3, 128, true, HugePages::None),
            Err(InvalidMachineConfig::VcpuCount)
        );
        assert_eq!(check(1, 128, true, HugePages::None), Ok(()));
        assert_eq!(check(4, 128, true, HugePages::None), Ok(()));
        assert_eq!(
            check(1, 0, false, HugePages::None),
            Err(InvalidMachineConfig::MemorySize)
        );
        assert_eq!(
            check(1, 129, false, HugePages::Hugetlbfs2M),
            Err(InvalidMachineConfig::MemorySize)
        );
        assert_eq!(check(1, 130, false, HugePages::Hugetlbfs2M), Ok(()));
    }

    #[test]
    fn machine_config_update_keeps_unset_fields() {
        let base = MachineConfiguration {
            cpu_template: Some(CpuTemplate::T2),
            ..MachineConfiguration::new(2, 512)
        };
        let next = base
            .updated(&MachineConfigurationUpdate {
                mem_size_mib: Some(1024),
                ..Default::default()
            })
            .unwrap();
        assert_eq!(next.vcpu_count, 2);
        assert_eq!(next.mem_size_mib, 1024);
        assert_eq!(next.cpu_template, Some(CpuTemplate::T2));
        let cleared = next
            .updated(&MachineConfigurationUpdate {
                cpu_template: Some(CpuTemplate::None),
                ..Default::default()
            })
            .unwrap();
        assert_eq!(cleared.cpu_template, None);
        assert!(MachineConfigurationUpdate::default().is_empty());
        assert_eq!(
            next.updated(&MachineConfigurationUpdate {
                smt: Some(true),
                vcpu_count: Some(3),
                ..Default::default()
            }),
            Err(InvalidMachineConfig::VcpuCount)
        );
    }

    #[test]
    fn drive_requires_id_and_root_flag() {
        let drive: Drive = parse(json!({
            "drive_id": "rootfs", "is_root_device": true,
            "path_on_host": "/r.ext4", "is_read_only": false
        }))
        .unwrap();
        assert_eq!(drive, Drive::virtio("rootfs", "/r.ext4", true));
        assert!(
            parse::<Drive>(json!({"drive_id": "a"}))
                .unwrap_err()
                .contains("missing field `is_root_device`")
        );
        assert!(
            parse::<Drive>(json!({"drive_id": "a", "is_root_device": false, "cache_type": "x"}))
                .unwrap_err()
                .contains("unknown variant `x`")
        );
        let encoded = serde_json::to_value(Drive::virtio("work", "/w.ext4", false)).unwrap();
        assert_eq!(
            encoded,
            json!({"drive_id": "work", "is_root_device": false, "cache_type": "Unsafe",
                   "is_read_only": false, "path_on_host": "/w.ext4"})
        );
    }

    #[test]
    fn mac_addresses_parse_like_firecracker() {
        let mac: MacAddr = "02:FC:ac:1e:00:02".parse().unwrap();
        assert_eq!(mac.to_string(), "02:fc:ac:1e:00:02");
        for bad in [
            "02:fc:ac:1e:00",
            "02:fc:ac:1e:00:02:03",
            "2:fc:ac:1e:00:002",
            "zz:fc:ac:1e:00:02",
            "+1:fc:ac:1e:00:02",
            "",
        ] {
            assert!(bad.parse::<MacAddr>().is_err(), "{bad}");
        }
        let err = parse::<NetworkInterface>(
            json!({"iface_id": "eth0", "host_dev_name": "tap0", "guest_mac": "nope"}),
        )
        .unwrap_err();
        assert!(err.contains(INVALID_MAC_MESSAGE), "{err}");
    }

    #[test]
    fn log_levels_are_case_insensitive() {
        for (raw, level) in [
            ("info", LogLevel::Info),
            ("WARN", LogLevel::Warning),
            ("Warning", LogLevel::Warning),
            ("off", LogLevel::Off),
        ] {
            let logger: Logger = parse(json!({ "level": raw })).unwrap();
            assert_eq!(logger.level, Some(level));
        }
        assert!(
            parse::<Logger>(json!({"level": "loud"}))
                .unwrap_err()
                .contains(INVALID_LEVEL_MESSAGE)
        );
        assert_eq!(
            serde_json::to_value(LogLevel::Warning).unwrap(),
            json!("Warning")
        );
    }

    #[test]
    fn metrics_and_token_buckets_tolerate_unknown_fields() {
        parse::<Metrics>(json!({"metrics_path": "/m", "extra": 1})).unwrap();
        parse::<TokenBucket>(json!({"size": 1, "refill_time": 1, "extra": 1})).unwrap();
        assert!(parse::<RateLimiter>(json!({"extra": 1})).is_err());
    }

    #[test]
    fn instance_info_state_names() {
        let info = InstanceInfo {
            id: "x".into(),
            state: InstanceState::NotStarted,
            vmm_version: "1.16.1".into(),
            app_name: "Firecracker".into(),
        };
        let value = serde_json::to_value(&info).unwrap();
        assert_eq!(value["state"], "Not started");
        let back: InstanceInfo = serde_json::from_value(value).unwrap();
        assert_eq!(back, info);
    }

    #[test]
    fn actions_and_vm_state() {
        let action: InstanceActionInfo = parse(json!({"action_type": "InstanceStart"})).unwrap();
        assert_eq!(action.action_type, ActionType::InstanceStart);
        assert!(
            parse::<InstanceActionInfo>(json!({"action_type": "Reboot"}))
                .unwrap_err()
                .contains("unknown variant `Reboot`")
        );
        let vm: Vm = parse(json!({"state": "Paused"})).unwrap();
        assert_eq!(vm.state, VmState::Paused);
    }

    #[test]
    fn cmdline_checks() {
        assert_eq!(validate_cmdline("console=ttyS0 reboot=k"), Ok(()));
        assert_eq!(
            validate_cmdline(&"a".repeat(CMDLINE_MAX_SIZE)),
            Err(InvalidCmdline::TooLong)
        );
        assert_eq!(validate_cmdline(&"a".repeat(CMDLINE_MAX_SIZE - 1)), Ok(()));
        assert_eq!(
            validate_cmdline(&format!("  {}  ", "a".repeat(CMDLINE_MAX_SIZE - 1))),
            Ok(())
        );
        let with_init = format!("{} -- {}", "a".repeat(1000), "b".repeat(1044));
        assert_eq!(validate_cmdline(&with_init), Err(InvalidCmdline::TooLong));
    }
}
