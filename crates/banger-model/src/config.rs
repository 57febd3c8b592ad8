//! `config.toml`: parsing and validation.
//!
//! Every key is optional. Unknown keys are errors that name the key (serde's
//! `deny_unknown_fields` with toml's line-and-column reports); values that
//! parse but make no sense are errors that name the key too.

use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use ipnet::Ipv4Net;
use serde::{Deserialize, Serialize};

use crate::file_sync::{self, FileSync, RawFileSync};
use crate::size::ByteSize;
use crate::spec;
use crate::vm::VmmKind;

pub const DEFAULT_BRIDGE: &str = "br-banger";
pub const DEFAULT_SUBNET: &str = "172.30.0.1/24";
pub const DEFAULT_DNS_LISTEN: &str = "127.0.0.1:42069";
/// Where banger-helper listens; a daemon that is not root does its
/// network through it.
pub const DEFAULT_HELPER_SOCKET: &str = "/run/banger/helper.sock";
pub const DEFAULT_TAP_POOL: u32 = 2;
pub const DEFAULT_STOP_GRACE: Duration = Duration::from_secs(10);
pub const DEFAULT_BOOT_TIMEOUT: Duration = Duration::from_secs(120);

/// Daemon log verbosity.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogLevel {
    Error,
    Warn,
    #[default]
    Info,
    Debug,
    Trace,
}

impl LogLevel {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Error => "error",
            Self::Warn => "warn",
            Self::Info => "info",
            Self::Debug => "debug",
            Self::Trace => "trace",
        }
    }
}

/// `qemu_accel`: what runs qemu guests' vCPUs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum QemuAccel {
    /// KVM when the guest's kernel boots under it (probed), else TCG.
    #[default]
    Auto,
    Kvm,
    /// Software emulation, always.
    Tcg,
}

impl QemuAccel {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Auto => "auto",
            Self::Kvm => "kvm",
            Self::Tcg => "tcg",
        }
    }
}

/// `config.toml` as written.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    log_level: Option<LogLevel>,
    vmm: Option<VmmKind>,
    firecracker_bin: Option<PathBuf>,
    simvm_bin: Option<PathBuf>,
    qemu_bin: Option<PathBuf>,
    vhost_vsock_bin: Option<PathBuf>,
    helper_socket: Option<PathBuf>,
    qemu_accel: Option<QemuAccel>,
    ssh_key_path: Option<String>,
    default_image: Option<String>,
    stop_grace_seconds: Option<u64>,
    boot_timeout_seconds: Option<u64>,
    catalog_url: Option<String>,
    update_url: Option<String>,
    /// Retired: refused with an explanation instead of as an unknown key.
    allow_device_nodes: Option<bool>,
    vm_defaults: Option<RawVmDefaults>,
    network: Option<RawNetwork>,
    file_sync: Option<Vec<RawFileSync>>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawVmDefaults {
    vcpu: Option<i64>,
    memory_mib: Option<i64>,
    disk_size: Option<String>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawNetwork {
    bridge: Option<String>,
    subnet: Option<String>,
    dns_listen: Option<String>,
    tap_pool_size: Option<i64>,
    nat: Option<bool>,
}

/// Validated configuration with defaults applied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    pub log_level: LogLevel,
    pub vmm: VmmKind,
    pub firecracker_bin: Option<PathBuf>,
    pub simvm_bin: Option<PathBuf>,
    /// `qemu-system-x86_64` for `vmm = "qemu"` (else found in `PATH`).
    pub qemu_bin: Option<PathBuf>,
    /// `vhost-device-vsock` for `vmm = "qemu"` (else found in `PATH`).
    pub vhost_vsock_bin: Option<PathBuf>,
    /// banger-helper's socket, for a daemon that is not root (default
    /// [`DEFAULT_HELPER_SOCKET`]).
    pub helper_socket: PathBuf,
    /// What runs qemu guests' vCPUs.
    pub qemu_accel: QemuAccel,
    /// As written; `~/` is expanded by [`Config::ssh_key_path`].
    pub ssh_key_path: Option<String>,
    pub default_image: Option<String>,
    pub stop_grace: Duration,
    /// How long each boot wait (agent, then SSH) may take.
    pub boot_timeout: Duration,
    pub catalog_url: Option<String>,
    pub update_url: Option<String>,
    pub vm_defaults: VmDefaultsConfig,
    pub network: NetworkConfig,
    pub file_sync: Vec<FileSync>,
    /// [`fingerprint`] of the text this config was read from: a daemon
    /// reports it, so that the CLI notices an edited file.
    pub fingerprint: u64,
}

/// A hash of a config file's text (`None`: no file), stable within one
/// build of banger — the CLI and daemon it compares are the same build.
pub fn fingerprint(text: Option<&str>) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut hasher = std::hash::DefaultHasher::new();
    text.hash(&mut hasher);
    hasher.finish()
}

/// The fingerprint of the file at `path` as it is now.
pub fn fingerprint_of(path: &Path) -> u64 {
    fingerprint(std::fs::read_to_string(path).ok().as_deref())
}

/// `[vm_defaults]`: each field is the first layer of the defaults resolver.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct VmDefaultsConfig {
    pub vcpu: Option<u32>,
    pub memory_mib: Option<u32>,
    pub disk_size: Option<ByteSize>,
}

/// `[network]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetworkConfig {
    pub bridge: String,
    /// The bridge's own address and the subnet's prefix, e.g. `172.30.0.1/24`.
    pub subnet: Ipv4Net,
    pub dns_listen: SocketAddr,
    pub tap_pool_size: u32,
    /// Whether new VMs reach the outside through NAT unless `--nat` or
    /// `--no-nat` says otherwise.
    pub nat: bool,
}

impl NetworkConfig {
    /// The gateway (the bridge's address) that guests route through.
    pub fn gateway(&self) -> Ipv4Addr {
        self.subnet.addr()
    }
}

impl Default for NetworkConfig {
    fn default() -> Self {
        Self {
            bridge: DEFAULT_BRIDGE.to_owned(),
            subnet: DEFAULT_SUBNET.parse().expect("default subnet parses"),
            dns_listen: DEFAULT_DNS_LISTEN
                .parse()
                .expect("default DNS address parses"),
            tap_pool_size: DEFAULT_TAP_POOL,
            nat: true,
        }
    }
}

impl Default for Config {
    fn default() -> Self {
        Self {
            log_level: LogLevel::default(),
            vmm: VmmKind::Firecracker,
            firecracker_bin: None,
            simvm_bin: None,
            qemu_bin: None,
            vhost_vsock_bin: None,
            helper_socket: PathBuf::from(DEFAULT_HELPER_SOCKET),
            qemu_accel: QemuAccel::Auto,
            ssh_key_path: None,
            default_image: None,
            stop_grace: DEFAULT_STOP_GRACE,
            boot_timeout: DEFAULT_BOOT_TIMEOUT,
            catalog_url: None,
            update_url: None,
            vm_defaults: VmDefaultsConfig::default(),
            network: NetworkConfig::default(),
            file_sync: Vec::new(),
            fingerprint: fingerprint(None),
        }
    }
}

/// Why `config.toml` was refused.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("{path}: {key}: {problem}")]
    Invalid {
        path: PathBuf,
        key: String,
        problem: String,
    },
}

impl Config {
    /// Reads and validates `path`; a missing file means all defaults.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        match std::fs::read_to_string(path) {
            Ok(text) => Ok(Self {
                fingerprint: fingerprint(Some(&text)),
                ..Self::parse(&text, path)?
            }),
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => Ok(Self::default()),
            Err(source) => Err(ConfigError::Read {
                path: path.to_owned(),
                source,
            }),
        }
    }

    /// Parses `text`; `path` only labels errors.
    pub fn parse(text: &str, path: &Path) -> Result<Self, ConfigError> {
        let raw: RawConfig = toml::from_str(text).map_err(|err| ConfigError::Parse {
            path: path.to_owned(),
            message: err.to_string().trim_end().to_owned(),
        })?;
        let invalid = |key: &str, problem: String| ConfigError::Invalid {
            path: path.to_owned(),
            key: key.to_owned(),
            problem,
        };

        let mut config = Config {
            log_level: raw.log_level.unwrap_or_default(),
            vmm: raw.vmm.unwrap_or(VmmKind::Firecracker),
            firecracker_bin: raw.firecracker_bin,
            simvm_bin: raw.simvm_bin,
            qemu_bin: raw.qemu_bin,
            vhost_vsock_bin: raw.vhost_vsock_bin,
            helper_socket: raw
                .helper_socket
                .unwrap_or_else(|| PathBuf::from(DEFAULT_HELPER_SOCKET)),
            qemu_accel: raw.qemu_accel.unwrap_or_default(),
            ssh_key_path: raw.ssh_key_path,
            default_image: raw.default_image,
            stop_grace: DEFAULT_STOP_GRACE,
            catalog_url: raw.catalog_url,
            update_url: raw.update_url,
            ..Config::default()
        };
        if raw.allow_device_nodes.is_some() {
            return Err(invalid(
                "allow_device_nodes",
                "is no longer used: device nodes and FIFOs in images are always skipped (a guest's /dev is a devtmpfs); delete this line".to_owned(),
            ));
        }

        for (key, value) in [
            ("firecracker_bin", &config.firecracker_bin),
            ("simvm_bin", &config.simvm_bin),
            ("qemu_bin", &config.qemu_bin),
            ("vhost_vsock_bin", &config.vhost_vsock_bin),
            ("helper_socket", &Some(config.helper_socket.clone())),
        ] {
            if let Some(path) = value
                && !path.is_absolute()
            {
                return Err(invalid(
                    key,
                    format!("{} must be an absolute path", path.display()),
                ));
            }
        }
        if let Some(key_path) = &config.ssh_key_path
            && !(key_path.starts_with('/') || key_path.starts_with("~/"))
        {
            return Err(invalid(
                "ssh_key_path",
                format!("{key_path:?} must be absolute or start with ~/"),
            ));
        }
        if let Some(image) = &config.default_image {
            crate::Name::parse(image).map_err(|err| invalid("default_image", err.to_string()))?;
        }
        if let Some(seconds) = raw.stop_grace_seconds {
            if !(1..=600).contains(&seconds) {
                return Err(invalid(
                    "stop_grace_seconds",
                    format!("must be between 1 and 600, got {seconds}"),
                ));
            }
            config.stop_grace = Duration::from_secs(seconds);
        }
        if let Some(seconds) = raw.boot_timeout_seconds {
            if !(1..=3600).contains(&seconds) {
                return Err(invalid(
                    "boot_timeout_seconds",
                    format!("must be between 1 and 3600, got {seconds}"),
                ));
            }
            config.boot_timeout = Duration::from_secs(seconds);
        }
        for (key, value) in [
            ("catalog_url", &config.catalog_url),
            ("update_url", &config.update_url),
        ] {
            if let Some(url) = value
                && !(url.starts_with("http://") || url.starts_with("https://"))
            {
                return Err(invalid(
                    key,
                    format!("{url:?} must be an http:// or https:// URL"),
                ));
            }
        }

        if let Some(defaults) = raw.vm_defaults {
            if let Some(vcpu) = defaults.vcpu {
                let vcpu = spec::validate_vcpu(vcpu)
                    .map_err(|err| invalid("vm_defaults.vcpu", err.to_string()))?;
                config.vm_defaults.vcpu = Some(vcpu);
            }
            if let Some(memory) = defaults.memory_mib {
                let memory = spec::validate_memory_mib(memory)
                    .map_err(|err| invalid("vm_defaults.memory_mib", err.to_string()))?;
                config.vm_defaults.memory_mib = Some(memory);
            }
            if let Some(disk) = defaults.disk_size {
                let disk: ByteSize = disk.parse().map_err(|err: crate::size::SizeError| {
                    invalid("vm_defaults.disk_size", err.to_string())
                })?;
                let disk = spec::validate_disk(disk)
                    .map_err(|err| invalid("vm_defaults.disk_size", err.to_string()))?;
                config.vm_defaults.disk_size = Some(disk);
            }
        }

        if let Some(network) = raw.network {
            if let Some(bridge) = network.bridge {
                validate_ifname(&bridge).map_err(|problem| invalid("network.bridge", problem))?;
                config.network.bridge = bridge;
            }
            if let Some(subnet) = network.subnet {
                config.network.subnet =
                    parse_subnet(&subnet).map_err(|problem| invalid("network.subnet", problem))?;
            }
            if let Some(listen) = network.dns_listen {
                let addr: SocketAddr = listen.parse().map_err(|_| {
                    invalid(
                        "network.dns_listen",
                        format!("{listen:?} is not an address like 127.0.0.1:42069"),
                    )
                })?;
                if !addr.ip().is_loopback() {
                    return Err(invalid(
                        "network.dns_listen",
                        format!(
                            "{addr} is not a loopback address; banger's DNS listens on loopback only"
                        ),
                    ));
                }
                config.network.dns_listen = addr;
            }
            if let Some(pool) = network.tap_pool_size {
                if !(0..=64).contains(&pool) {
                    return Err(invalid(
                        "network.tap_pool_size",
                        format!("must be between 0 and 64, got {pool}"),
                    ));
                }
                config.network.tap_pool_size = pool as u32;
            }
            if let Some(nat) = network.nat {
                config.network.nat = nat;
            }
        }

        if let Some(entries) = raw.file_sync {
            config.file_sync =
                file_sync::validate_all(&entries).map_err(|err| ConfigError::Invalid {
                    path: path.to_owned(),
                    key: format!("file_sync[{}]", err.index),
                    problem: err.problem,
                })?;
        }
        Ok(config)
    }

    /// The configured SSH key path with `~/` expanded against `home`.
    pub fn ssh_key_path(&self, home: &Path) -> Option<PathBuf> {
        self.ssh_key_path
            .as_deref()
            .map(|raw| match raw.strip_prefix("~/") {
                Some(rest) => home.join(rest),
                None => PathBuf::from(raw),
            })
    }
}

/// Linux interface names: 1–15 bytes, no '/', ':' or whitespace.
pub fn validate_ifname(name: &str) -> Result<(), String> {
    if name.is_empty() || name.len() > 15 {
        return Err(format!(
            "{name:?} must be 1 to 15 characters (a Linux interface name)"
        ));
    }
    if name
        .chars()
        .any(|c| c == '/' || c == ':' || c.is_whitespace())
    {
        return Err(format!("{name:?} must not contain '/', ':' or spaces"));
    }
    Ok(())
}

fn parse_subnet(raw: &str) -> Result<Ipv4Net, String> {
    let net: Ipv4Net = raw
        .parse()
        .map_err(|_| format!("{raw:?} is not an IPv4 address with prefix, like 172.30.0.1/24"))?;
    if !(16..=29).contains(&net.prefix_len()) {
        return Err(format!("{raw:?}: prefix must be between /16 and /29"));
    }
    if net.addr() == net.network() || net.addr() == net.broadcast() {
        return Err(format!(
            "{raw:?}: give the bridge's own address, e.g. {}/{}",
            Ipv4Addr::from(u32::from(net.network()) + 1),
            net.prefix_len()
        ));
    }
    Ok(net)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Config, ConfigError> {
        Config::parse(text, Path::new("/cfg/config.toml"))
    }

    #[test]
    fn empty_config_is_all_defaults() {
        assert_eq!(parse("").unwrap(), Config::default());
        let missing = Config::load(Path::new("/nonexistent/banger/config.toml")).unwrap();
        assert_eq!(missing, Config::default());
    }

    #[test]
    fn full_config_parses() {
        let config = parse(
            r#"
            log_level = "debug"
            vmm = "sim"
            firecracker_bin = "/opt/fc/firecracker"
            ssh_key_path = "~/.ssh/id_banger"
            default_image = "debian-bookworm"
            stop_grace_seconds = 3
            catalog_url = "http://127.0.0.1:8000/catalog.json"

            [vm_defaults]
            vcpu = 2
            memory_mib = 2048
            disk_size = "16G"

            [network]
            bridge = "br-test"
            subnet = "10.77.0.1/24"
            dns_listen = "127.0.0.1:5353"
            tap_pool_size = 0
            nat = false

            [[file_sync]]
            host = "~/.aws"
            guest = "~/.aws"
            "#,
        )
        .unwrap();
        assert_eq!(config.log_level, LogLevel::Debug);
        assert_eq!(config.vmm, VmmKind::Sim);
        assert_eq!(config.stop_grace, Duration::from_secs(3));
        assert_eq!(config.vm_defaults.vcpu, Some(2));
        assert_eq!(config.vm_defaults.memory_mib, Some(2048));
        assert_eq!(config.vm_defaults.disk_size, Some(ByteSize::gib(16)));
        assert_eq!(config.network.bridge, "br-test");
        assert_eq!(config.network.gateway(), Ipv4Addr::new(10, 77, 0, 1));
        assert_eq!(config.network.tap_pool_size, 0);
        assert!(!config.network.nat);
        assert!(Config::default().network.nat, "NAT is on by default");
        assert_eq!(config.file_sync.len(), 1);
        assert_eq!(
            config.ssh_key_path(Path::new("/home/me")),
            Some(PathBuf::from("/home/me/.ssh/id_banger"))
        );
    }

    /// One case per bad shape; each error must name the key involved.
    #[test]
    fn bad_configs_name_the_key() {
        let cases = [
            ("surprise = 1", "surprise"),
            ("allow_device_nodes = true", "allow_device_nodes"),
            ("[vm_defaults]\ncpus = 2", "cpus"),
            ("[network]\nbridge_name = \"x\"", "bridge_name"),
            (
                "[[file_sync]]\nhost = \"~/a\"\nguest = \"~/a\"\nowner = \"me\"",
                "owner",
            ),
            ("log_level = \"loud\"", "log_level"),
            ("vmm = \"bochs\"", "vmm"),
            ("qemu_accel = \"hvf\"", "qemu_accel"),
            ("vhost_vsock_bin = \"relative\"", "vhost_vsock_bin"),
            ("helper_socket = \"helper.sock\"", "helper_socket"),
            ("firecracker_bin = \"firecracker\"", "firecracker_bin"),
            ("ssh_key_path = \"id_ed25519\"", "ssh_key_path"),
            ("default_image = \"Debian\"", "default_image"),
            ("stop_grace_seconds = 0", "stop_grace_seconds"),
            ("boot_timeout_seconds = 0", "boot_timeout_seconds"),
            ("catalog_url = \"ftp://x\"", "catalog_url"),
            ("[vm_defaults]\nvcpu = 0", "vm_defaults.vcpu"),
            ("[vm_defaults]\nvcpu = -1", "vm_defaults.vcpu"),
            ("[vm_defaults]\nvcpu = \"four\"", "vcpu"),
            ("[vm_defaults]\nmemory_mib = 0", "vm_defaults.memory_mib"),
            ("[vm_defaults]\ndisk_size = \"8\"", "vm_defaults.disk_size"),
            ("[vm_defaults]\ndisk_size = \"1M\"", "vm_defaults.disk_size"),
            (
                "[network]\nbridge = \"a-very-long-bridge-name\"",
                "network.bridge",
            ),
            ("[network]\nsubnet = \"172.30.0.0/24\"", "network.subnet"),
            ("[network]\nsubnet = \"172.30.0.1/8\"", "network.subnet"),
            ("[network]\nsubnet = \"nonsense\"", "network.subnet"),
            (
                "[network]\ndns_listen = \"0.0.0.0:53\"",
                "network.dns_listen",
            ),
            ("[network]\ntap_pool_size = 1000", "network.tap_pool_size"),
            (
                "[[file_sync]]\nhost = \"rel\"\nguest = \"~/a\"",
                "file_sync[0]",
            ),
            ("not toml at all [", "config.toml"),
        ];
        for (text, key) in cases {
            let err = parse(text).expect_err(text).to_string();
            assert!(
                err.contains(key),
                "config {text:?} gave {err:?}, which does not name {key:?}"
            );
            assert!(err.starts_with("/cfg/config.toml"), "{err}");
        }
    }
}
