//! VM size defaults in three layers: `[vm_defaults]` in config, then host
//! heuristics (vcpu = cpus/4 capped at 4, memory = ram/8 capped at 8 GiB),
//! then built-in floors. Each resolved value remembers where it came from so
//! `banger doctor` can show it, and [`ResolvedSpec`] is what a new VM gets
//! once the daemon has laid what the user typed over these defaults.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::config::VmDefaultsConfig;
use crate::name::Name;
use crate::size::{ByteSize, MIB};
use crate::spec::VmSpec;
use crate::vm::VmmKind;

pub const FLOOR_VCPU: u32 = 1;
pub const FLOOR_MEMORY_MIB: u32 = 1024;
pub const FLOOR_DISK: ByteSize = ByteSize::gib(8);
pub const CAP_VCPU: u32 = 4;
pub const CAP_MEMORY_MIB: u32 = 8192;

/// Where a value came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Provenance {
    /// Given in the request: a flag the user typed.
    Flag,
    /// `config.toml`.
    Config,
    /// Derived from the host's size.
    Host,
    /// banger's own value.
    Builtin,
}

impl fmt::Display for Provenance {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Flag => "flag",
            Self::Config => "config",
            Self::Host => "host",
            Self::Builtin => "builtin",
        })
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Resolved<T> {
    pub value: T,
    pub provenance: Provenance,
}

impl<T> Resolved<T> {
    /// A value given in the request.
    pub fn flag(value: T) -> Self {
        Self {
            value,
            provenance: Provenance::Flag,
        }
    }
}

/// What a new VM gets, each setting with where it came from: the daemon
/// resolves it once from the request, `config.toml` and the host, and sends
/// it as the first event of `vm.create`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ResolvedSpec {
    /// `builtin` when the daemon picked a random one.
    pub name: Resolved<Name>,
    pub vcpu: Resolved<u32>,
    pub memory_mib: Resolved<u32>,
    pub disk_size: Resolved<ByteSize>,
    /// Outbound network through NAT.
    pub nat: Resolved<bool>,
    pub vmm: Resolved<VmmKind>,
}

impl ResolvedSpec {
    /// The size alone.
    pub fn spec(&self) -> VmSpec {
        VmSpec {
            vcpu: self.vcpu.value,
            memory_mib: self.memory_mib.value,
            disk_size: self.disk_size.value,
        }
    }
}

/// What the heuristics need to know about the host.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HostFacts {
    pub cpus: u32,
    pub memory_bytes: u64,
}

impl HostFacts {
    /// Reads the CPU count and `MemTotal` from `/proc/meminfo`.
    pub fn detect() -> Option<Self> {
        let cpus = std::thread::available_parallelism().ok()?.get() as u32;
        let meminfo = std::fs::read_to_string("/proc/meminfo").ok()?;
        let memory_bytes = parse_mem_total(&meminfo)?;
        Some(Self { cpus, memory_bytes })
    }
}

fn parse_mem_total(meminfo: &str) -> Option<u64> {
    let line = meminfo.lines().find(|line| line.starts_with("MemTotal:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// The resolved defaults, one per field.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct VmDefaults {
    pub vcpu: Resolved<u32>,
    pub memory_mib: Resolved<u32>,
    pub disk_size: Resolved<ByteSize>,
}

impl VmDefaults {
    pub fn resolve(config: &VmDefaultsConfig, host: Option<HostFacts>) -> Self {
        let vcpu = layer(
            config.vcpu,
            host.map(|facts| (facts.cpus / 4).min(CAP_VCPU)),
            FLOOR_VCPU,
        );
        let memory_mib = layer(
            config.memory_mib,
            host.map(|facts| {
                let eighth_mib = facts.memory_bytes / 8 / MIB;
                // Round down to a multiple of 256 MiB so the number reads well.
                let rounded = eighth_mib / 256 * 256;
                rounded.min(u64::from(CAP_MEMORY_MIB)) as u32
            }),
            FLOOR_MEMORY_MIB,
        );
        let disk_size = match config.disk_size {
            Some(value) => Resolved {
                value,
                provenance: Provenance::Config,
            },
            None => Resolved {
                value: FLOOR_DISK,
                provenance: Provenance::Builtin,
            },
        };
        Self {
            vcpu,
            memory_mib,
            disk_size,
        }
    }

    pub fn spec(&self) -> VmSpec {
        VmSpec {
            vcpu: self.vcpu.value,
            memory_mib: self.memory_mib.value,
            disk_size: self.disk_size.value,
        }
    }
}

fn layer(config: Option<u32>, host: Option<u32>, floor: u32) -> Resolved<u32> {
    if let Some(value) = config {
        return Resolved {
            value,
            provenance: Provenance::Config,
        };
    }
    match host {
        Some(value) if value >= floor => Resolved {
            value,
            provenance: Provenance::Host,
        },
        _ => Resolved {
            value: floor,
            provenance: Provenance::Builtin,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::size::GIB;

    const BIG_HOST: HostFacts = HostFacts {
        cpus: 32,
        memory_bytes: 128 * GIB,
    };
    const MID_HOST: HostFacts = HostFacts {
        cpus: 8,
        memory_bytes: 16 * GIB,
    };
    const SMALL_HOST: HostFacts = HostFacts {
        cpus: 2,
        memory_bytes: 4 * GIB,
    };

    #[test]
    fn config_wins() {
        let config = VmDefaultsConfig {
            vcpu: Some(6),
            memory_mib: Some(3000),
            disk_size: Some(ByteSize::gib(20)),
        };
        let defaults = VmDefaults::resolve(&config, Some(BIG_HOST));
        assert_eq!(
            defaults.vcpu,
            Resolved {
                value: 6,
                provenance: Provenance::Config
            }
        );
        assert_eq!(
            defaults.memory_mib,
            Resolved {
                value: 3000,
                provenance: Provenance::Config
            }
        );
        assert_eq!(defaults.disk_size.provenance, Provenance::Config);
    }

    #[test]
    fn host_heuristics_are_capped() {
        let defaults = VmDefaults::resolve(&VmDefaultsConfig::default(), Some(BIG_HOST));
        assert_eq!(
            defaults.vcpu,
            Resolved {
                value: 4,
                provenance: Provenance::Host
            }
        );
        assert_eq!(
            defaults.memory_mib,
            Resolved {
                value: 8192,
                provenance: Provenance::Host
            }
        );
        assert_eq!(
            defaults.disk_size,
            Resolved {
                value: FLOOR_DISK,
                provenance: Provenance::Builtin
            }
        );
    }

    #[test]
    fn host_heuristics_scale() {
        let defaults = VmDefaults::resolve(&VmDefaultsConfig::default(), Some(MID_HOST));
        assert_eq!(
            defaults.vcpu,
            Resolved {
                value: 2,
                provenance: Provenance::Host
            }
        );
        assert_eq!(
            defaults.memory_mib,
            Resolved {
                value: 2048,
                provenance: Provenance::Host
            }
        );
    }

    #[test]
    fn floors_catch_small_hosts_and_unknown_hosts() {
        for host in [Some(SMALL_HOST), None] {
            let defaults = VmDefaults::resolve(&VmDefaultsConfig::default(), host);
            assert_eq!(
                defaults.vcpu,
                Resolved {
                    value: FLOOR_VCPU,
                    provenance: Provenance::Builtin
                }
            );
            assert_eq!(
                defaults.memory_mib,
                Resolved {
                    value: FLOOR_MEMORY_MIB,
                    provenance: Provenance::Builtin
                }
            );
        }
    }

    #[test]
    fn parses_meminfo() {
        let meminfo = "MemTotal:       24576000 kB\nMemFree:        100 kB\n";
        assert_eq!(parse_mem_total(meminfo), Some(24_576_000 * 1024));
        assert_eq!(parse_mem_total("garbage"), None);
    }
}
