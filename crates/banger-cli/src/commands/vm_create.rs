//! `banger vm create`, and the create step shared with `vm run`.

use banger_rpc::method;
use std::path::Path;
use std::process::ExitCode;
use std::time::Duration;

use banger_model::layout::Layout;
use banger_model::spec;
use banger_model::vm::Vm;
use banger_model::{Name, VmSpec};
use banger_rpc::request::{RefParams, VmCreateParams};
use banger_rpc::{CallError, ErrorCode};

use crate::args::{CreateFlags, VmCreateArgs};
use crate::daemon_client;
use crate::output::{EXIT_USAGE, ExitError, print_json};
use crate::progress::Progress;

use super::default_image;

pub(super) async fn run(layout: &Layout, args: &VmCreateArgs) -> anyhow::Result<ExitCode> {
    let vm = create(layout, &args.create).await?;
    if args.json {
        print_json(&vm)?;
    } else {
        println!("{}", vm.name);
    }
    Ok(ExitCode::SUCCESS)
}

/// Validates the flags, prints the `spec:` line, creates the VM with live
/// stages, and on Ctrl-C waits for the daemon's rollback.
pub(super) async fn create(layout: &Layout, flags: &CreateFlags) -> anyhow::Result<Vm> {
    let resolved = resolve(flags)?;
    create_resolved(layout, flags, &resolved, None).await
}

/// A VM's name, size and network, settled before the daemon is asked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Resolved {
    pub name: Name,
    pub spec: VmSpec,
    /// Outbound network through NAT.
    pub nat: bool,
}

impl std::fmt::Display for Resolved {
    /// `4 vcpu · 8192 MiB · 8G disk · NAT` (or `· no NAT`)
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} · {}",
            self.spec,
            if self.nat { "NAT" } else { "no NAT" }
        )
    }
}

/// [`create`] once the name and size are settled (`vm run` settles them
/// first so that it can clean up by name).
///
/// Without `--image` and without a default image (none configured, none in
/// the catalog, or the catalog unreachable), the default image is
/// bootstrapped from Debian's packages (asking first on a terminal) and the
/// create is tried once more.
pub(super) async fn create_resolved(
    layout: &Layout,
    flags: &CreateFlags,
    resolved: &Resolved,
    work_content: Option<&Path>,
) -> anyhow::Result<Vm> {
    eprintln!("spec: {resolved}");
    let vm = match create_once(layout, flags, resolved, work_content).await {
        Err(err) if flags.image.is_none() && default_image::is_no_default_image(&err) => {
            default_image::bootstrap_default_image(layout, flags).await?;
            create_once(layout, flags, resolved, work_content).await
        }
        outcome => outcome,
    }?;
    for forward in &vm.ports {
        eprintln!(
            "published {}",
            super::vm_ports::published_line(&vm, forward)
        );
    }
    Ok(vm)
}

async fn create_once(
    layout: &Layout,
    flags: &CreateFlags,
    resolved: &Resolved,
    work_content: Option<&Path>,
) -> anyhow::Result<Vm> {
    let Resolved { name, spec, nat } = resolved;
    let params = VmCreateParams {
        name: Some(name.to_string()),
        image: flags.image.clone(),
        vcpu: Some(i64::from(spec.vcpu)),
        memory_mib: Some(i64::from(spec.memory_mib)),
        disk_size: Some(spec.disk_size),
        nat: *nat,
        vmm: flags.vmm,
        allow_overcommit: flags.allow_overcommit,
        ports: flags.publish.clone(),
        work_content: work_content.map(Path::to_owned),
    };
    let mut client = daemon_client::connect(layout).await?;
    let mut progress = Progress::new();
    let outcome = {
        let call = client.call::<method::VmCreate>(params, |event| progress.on_event(event));
        tokio::select! {
            outcome = call => Some(outcome),
            _ = tokio::signal::ctrl_c() => None,
        }
    };
    progress.finish();
    match outcome {
        Some(Ok(vm)) => Ok(vm),
        Some(Err(err)) => Err(err.into()),
        None => {
            drop(client);
            eprintln!("cancelled; rolling back VM {name}…");
            wait_until_gone(layout, name).await;
            Err(ExitError {
                message: format!("creating VM {name} was cancelled"),
                code: 130,
            }
            .into())
        }
    }
}

/// Client-side checks (the daemon checks again) and defaults: size from
/// `[vm_defaults]` and the host, NAT from `--nat`/`--no-nat`, else
/// `[network] nat` (on unless set to false).
pub(super) fn resolve(flags: &CreateFlags) -> anyhow::Result<Resolved> {
    let usage = |message: String| {
        anyhow::Error::from(ExitError {
            message,
            code: EXIT_USAGE,
        })
    };
    let name = match &flags.name {
        Some(raw) => Name::parse(raw).map_err(|err| usage(err.to_string()))?,
        None => Name::random(),
    };
    let defaults = crate::vm_defaults();
    let spec = VmSpec {
        vcpu: spec::validate_vcpu(flags.vcpu.unwrap_or(i64::from(defaults.vcpu.value)))
            .map_err(|err| usage(err.to_string()))?,
        memory_mib: spec::validate_memory_mib(
            flags.memory.unwrap_or(i64::from(defaults.memory_mib.value)),
        )
        .map_err(|err| usage(err.to_string()))?,
        disk_size: spec::validate_disk(flags.disk_size.unwrap_or(defaults.disk_size.value))
            .map_err(|err| usage(err.to_string()))?,
    };
    let nat = nat_for(flags, crate::config().network.nat);
    Ok(Resolved { name, spec, nat })
}

/// `--nat`, `--no-nat`, else the configured default.
fn nat_for(flags: &CreateFlags, configured: bool) -> bool {
    if flags.no_nat {
        false
    } else {
        flags.nat || configured
    }
}

/// Polls until the daemon has rolled the VM back (bounded).
async fn wait_until_gone(layout: &Layout, name: &Name) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while tokio::time::Instant::now() < deadline {
        let Ok(Some(mut client)) = daemon_client::connect_existing(layout).await else {
            return;
        };
        match client
            .call::<method::VmShow>(RefParams::new(name.as_str()), |_| {})
            .await
        {
            Err(CallError::Rpc(err)) if err.code == ErrorCode::NotFound => {
                eprintln!("rolled back: nothing of VM {name} is left");
                return;
            }
            _ => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
    eprintln!("the daemon is still rolling back VM {name}; `banger vm list` shows when it is gone");
}

#[cfg(test)]
mod tests {
    use super::*;
    use banger_model::ByteSize;

    fn flags(nat: bool, no_nat: bool) -> CreateFlags {
        CreateFlags {
            name: None,
            image: None,
            vcpu: None,
            memory: None,
            disk_size: None,
            nat,
            no_nat,
            allow_overcommit: false,
            publish: Vec::new(),
            vmm: None,
        }
    }

    #[test]
    fn nat_is_on_unless_turned_off() {
        assert!(nat_for(&flags(false, false), true));
        assert!(!nat_for(&flags(false, false), false));
        assert!(nat_for(&flags(true, false), false));
        assert!(!nat_for(&flags(false, true), true));
    }

    #[test]
    fn the_spec_line_says_whether_the_vm_has_nat() {
        let resolved = Resolved {
            name: Name::parse("box").unwrap(),
            spec: VmSpec {
                vcpu: 2,
                memory_mib: 2048,
                disk_size: ByteSize::gib(8),
            },
            nat: true,
        };
        assert_eq!(resolved.to_string(), "2 vcpu · 2048 MiB · 8G disk · NAT");
        let isolated = Resolved {
            nat: false,
            ..resolved
        };
        assert_eq!(isolated.to_string(), "2 vcpu · 2048 MiB · 8G disk · no NAT");
    }
}
