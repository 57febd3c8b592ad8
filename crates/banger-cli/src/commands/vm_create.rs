//! `banger vm create`, and the create step shared with `vm run`.

use banger_rpc::method;
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
    let (name, spec) = resolve(flags)?;
    create_resolved(layout, flags, &name, spec).await
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
    name: &Name,
    spec: VmSpec,
) -> anyhow::Result<Vm> {
    eprintln!("spec: {spec}");
    let vm = match create_once(layout, flags, name, spec).await {
        Err(err) if flags.image.is_none() && default_image::is_no_default_image(&err) => {
            default_image::bootstrap_default_image(layout, flags).await?;
            create_once(layout, flags, name, spec).await
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
    name: &Name,
    spec: VmSpec,
) -> anyhow::Result<Vm> {
    let params = VmCreateParams {
        name: Some(name.to_string()),
        image: flags.image.clone(),
        vcpu: Some(i64::from(spec.vcpu)),
        memory_mib: Some(i64::from(spec.memory_mib)),
        disk_size: Some(spec.disk_size),
        nat: flags.nat,
        vmm: flags.vmm,
        allow_overcommit: flags.allow_overcommit,
        ports: flags.publish.clone(),
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

/// Client-side checks (the daemon checks again) and defaults.
pub(super) fn resolve(flags: &CreateFlags) -> anyhow::Result<(Name, VmSpec)> {
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
    Ok((name, spec))
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
