//! What a new VM gets, resolved once: each setting from the request (what
//! the user typed), else `config.toml`, else the host's size, else banger's
//! own value — and which of those it was. `vm.create` announces the result
//! before anything else; nothing after it looks at a default again.

use banger_model::Name;
use banger_model::config::{Config, NetworkConfig};
use banger_model::defaults::{HostFacts, Provenance, Resolved, ResolvedSpec, VmDefaults};
use banger_model::name::NameError;
use banger_model::spec::{self, SpecError};
use banger_model::vm::Vm;
use banger_rpc::request::VmCreateParams;

use crate::errors::ServiceError;

/// Why a request's settings were refused.
#[derive(Debug, thiserror::Error)]
pub enum ResolveSpecError {
    #[error(transparent)]
    Name(#[from] NameError),
    #[error(transparent)]
    Size(#[from] SpecError),
    #[error("a VM named {0} already exists")]
    NameTaken(Name),
}

impl From<ResolveSpecError> for ServiceError {
    fn from(err: ResolveSpecError) -> Self {
        match err {
            ResolveSpecError::NameTaken(_) => ServiceError::already_exists(err.to_string())
                .with_hint("pick another --name, or delete it with `banger vm delete`"),
            ResolveSpecError::Name(_) | ResolveSpecError::Size(_) => {
                ServiceError::invalid(err.to_string())
            }
        }
    }
}

/// Lays `params` over `config` and the `host`'s defaults. A typed value is
/// checked, never dropped; a name must be free among `existing`, and a
/// random one is picked free.
pub fn resolve(
    params: &VmCreateParams,
    config: &Config,
    host: Option<HostFacts>,
    existing: &[Vm],
) -> Result<ResolvedSpec, ResolveSpecError> {
    let name = match &params.name {
        Some(raw) => {
            let name = Name::parse(raw)?;
            if existing.iter().any(|vm| vm.name == name) {
                return Err(ResolveSpecError::NameTaken(name));
            }
            Resolved::flag(name)
        }
        None => Resolved {
            value: unused_random_name(existing),
            provenance: Provenance::Builtin,
        },
    };
    let defaults = VmDefaults::resolve(&config.vm_defaults, host);
    let builtin = Config::default();
    Ok(ResolvedSpec {
        name,
        vcpu: typed_or(params.vcpu, defaults.vcpu, spec::validate_vcpu)?,
        memory_mib: typed_or(
            params.memory_mib,
            defaults.memory_mib,
            spec::validate_memory_mib,
        )?,
        disk_size: typed_or(params.disk_size, defaults.disk_size, spec::validate_disk)?,
        nat: typed_or(
            params.nat,
            configured(config.network.nat, NetworkConfig::default().nat),
            Ok,
        )?,
        vmm: typed_or(params.vmm, configured(config.vmm, builtin.vmm), Ok)?,
    })
}

/// The typed value, checked, else the default.
fn typed_or<R, T>(
    typed: Option<R>,
    default: Resolved<T>,
    check: impl FnOnce(R) -> Result<T, SpecError>,
) -> Result<Resolved<T>, SpecError> {
    match typed {
        Some(raw) => Ok(Resolved::flag(check(raw)?)),
        None => Ok(default),
    }
}

/// A config value: `config` when it differs from banger's own, else
/// `builtin` (a file that spells out the built-in value changes nothing).
fn configured<T: PartialEq>(value: T, builtin: T) -> Resolved<T> {
    let provenance = if value == builtin {
        Provenance::Builtin
    } else {
        Provenance::Config
    };
    Resolved { value, provenance }
}

fn unused_random_name(existing: &[Vm]) -> Name {
    loop {
        let name = Name::random();
        if !existing.iter().any(|vm| vm.name == name) {
            return name;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use banger_model::ByteSize;
    use banger_model::config::VmDefaultsConfig;
    use banger_model::size::GIB;
    use banger_model::vm::VmmKind;
    use banger_rpc::ErrorCode;

    const HOST: HostFacts = HostFacts {
        cpus: 8,
        memory_bytes: 16 * GIB,
    };

    /// `[vm_defaults] vcpu = 3` and `[network] nat = false`.
    fn config() -> Config {
        let mut config = Config {
            vm_defaults: VmDefaultsConfig {
                vcpu: Some(3),
                ..Default::default()
            },
            ..Default::default()
        };
        config.network.nat = false;
        config
    }

    #[test]
    fn untyped_settings_come_from_config_host_and_builtin() {
        let spec = resolve(&VmCreateParams::default(), &config(), Some(HOST), &[]).unwrap();
        assert_eq!(spec.name.provenance, Provenance::Builtin);
        assert!(Name::parse(spec.name.value.as_str()).is_ok());
        assert_eq!(
            (spec.vcpu.value, spec.vcpu.provenance),
            (3, Provenance::Config)
        );
        assert_eq!(
            (spec.memory_mib.value, spec.memory_mib.provenance),
            (2048, Provenance::Host)
        );
        assert_eq!(
            (spec.disk_size.value, spec.disk_size.provenance),
            (ByteSize::gib(8), Provenance::Builtin)
        );
        assert_eq!(
            (spec.nat.value, spec.nat.provenance),
            (false, Provenance::Config)
        );
        assert_eq!(
            (spec.vmm.value, spec.vmm.provenance),
            (VmmKind::Firecracker, Provenance::Builtin)
        );
    }

    #[test]
    fn typed_settings_say_flag() {
        let params = VmCreateParams {
            name: Some("web".into()),
            vcpu: Some(2),
            memory_mib: Some(512),
            disk_size: Some(ByteSize::gib(16)),
            nat: Some(true),
            vmm: Some(VmmKind::Sim),
            ..Default::default()
        };
        let spec = resolve(&params, &config(), Some(HOST), &[]).unwrap();
        assert_eq!(spec.name, Resolved::flag(Name::parse("web").unwrap()));
        assert_eq!(spec.vcpu, Resolved::flag(2));
        assert_eq!(spec.memory_mib, Resolved::flag(512));
        assert_eq!(spec.disk_size, Resolved::flag(ByteSize::gib(16)));
        assert_eq!(spec.nat, Resolved::flag(true));
        assert_eq!(spec.vmm, Resolved::flag(VmmKind::Sim));
    }

    #[test]
    fn an_unknown_host_falls_back_to_builtin_floors() {
        let spec = resolve(&VmCreateParams::default(), &Config::default(), None, &[]).unwrap();
        assert_eq!(spec.vcpu.provenance, Provenance::Builtin);
        assert_eq!(spec.memory_mib.provenance, Provenance::Builtin);
        assert_eq!(
            (spec.nat.value, spec.nat.provenance),
            (true, Provenance::Builtin)
        );
    }

    #[test]
    fn bad_input_is_refused_not_dropped() {
        let refused = |params: VmCreateParams| {
            ServiceError::from(resolve(&params, &Config::default(), Some(HOST), &[]).unwrap_err())
                .to_wire()
        };
        for params in [
            VmCreateParams {
                vcpu: Some(0),
                ..Default::default()
            },
            VmCreateParams {
                vcpu: Some(i64::from(u32::MAX) + 1),
                ..Default::default()
            },
            VmCreateParams {
                memory_mib: Some(-1),
                ..Default::default()
            },
            VmCreateParams {
                disk_size: Some(ByteSize::mib(1)),
                ..Default::default()
            },
            VmCreateParams {
                name: Some("Not A Label".into()),
                ..Default::default()
            },
        ] {
            let err = refused(params.clone());
            assert_eq!(err.code, ErrorCode::InvalidArgument, "{params:?}: {err:?}");
        }
    }
}
