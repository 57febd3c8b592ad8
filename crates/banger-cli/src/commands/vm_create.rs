//! `banger vm create`, and the create step shared with `vm run`.

use banger_rpc::method;
use std::process::ExitCode;
use std::time::Duration;

use banger_model::Name;
use banger_model::defaults::{Provenance, Resolved, ResolvedSpec};
use banger_model::layout::Layout;
use banger_model::spec;
use banger_model::vm::Vm;
use banger_rpc::request::{RefParams, VmCreateParams};
use banger_rpc::{CallError, ErrorCode, Event};

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

/// Checks the flags, creates the VM with the daemon's `spec:` line and live
/// stages, and on Ctrl-C waits for the daemon's rollback.
pub(super) async fn create(layout: &Layout, flags: &CreateFlags) -> anyhow::Result<Vm> {
    let params = request(flags)?;
    create_requested(layout, params).await.outcome
}

/// What a create came to, and the spec the daemon announced for it (the
/// VM's name among it: `vm run` cleans up by it). No spec: the daemon
/// refused the request before settling one, so no VM exists.
#[derive(Debug)]
pub(super) struct Attempt {
    pub spec: Option<ResolvedSpec>,
    pub outcome: anyhow::Result<Vm>,
}

/// The flags as `vm.create` params: what was typed and nothing else (the
/// daemon fills in the rest, once). Typed values are checked here too, so
/// that a bad one is a usage error before the daemon is asked.
pub(super) fn request(flags: &CreateFlags) -> anyhow::Result<VmCreateParams> {
    fn usage(err: impl ToString) -> anyhow::Error {
        ExitError {
            message: err.to_string(),
            code: EXIT_USAGE,
        }
        .into()
    }
    if let Some(raw) = &flags.name {
        Name::parse(raw).map_err(usage)?;
    }
    if let Some(vcpu) = flags.vcpu {
        spec::validate_vcpu(vcpu).map_err(usage)?;
    }
    if let Some(memory) = flags.memory {
        spec::validate_memory_mib(memory).map_err(usage)?;
    }
    if let Some(disk) = flags.disk_size {
        spec::validate_disk(disk).map_err(usage)?;
    }
    Ok(VmCreateParams {
        name: flags.name.clone(),
        image: flags.image.clone(),
        vcpu: flags.vcpu,
        memory_mib: flags.memory,
        disk_size: flags.disk_size,
        nat: typed_nat(flags),
        vmm: flags.vmm,
        allow_overcommit: flags.allow_overcommit,
        ports: flags.publish.clone(),
        work_content: None,
        work_host_files: None,
    })
}

/// `--nat` or `--no-nat`; neither leaves it to the daemon's config.
fn typed_nat(flags: &CreateFlags) -> Option<bool> {
    if flags.no_nat {
        Some(false)
    } else if flags.nat {
        Some(true)
    } else {
        None
    }
}

/// [`create`] with `params` already made (`vm run` adds its workspace).
///
/// Without `--image` and without a default image (none configured, none in
/// the catalog, or the catalog unreachable), the default image is
/// bootstrapped from Debian's packages (asking first on a terminal) and the
/// create is tried once more.
pub(super) async fn create_requested(layout: &Layout, params: VmCreateParams) -> Attempt {
    // The retry announces its spec again: the line is printed once.
    let mut printed = None;
    let mut attempt = create_once(layout, &params, &mut printed).await;
    // The daemon announces the spec before it looks for the image, so the
    // bootstrap knows which VMM the image is for.
    if let Err(err) = &attempt.outcome
        && params.image.is_none()
        && default_image::is_no_default_image(err)
        && let Some(spec) = &attempt.spec
    {
        attempt = match default_image::bootstrap_default_image(layout, spec.vmm.value).await {
            Ok(()) => create_once(layout, &params, &mut printed).await,
            Err(err) => Attempt {
                spec: None,
                outcome: Err(err),
            },
        };
    }
    if let Ok(vm) = &attempt.outcome {
        for forward in &vm.ports {
            eprintln!("published {}", super::vm_ports::published_line(vm, forward));
        }
    }
    attempt
}

/// One `vm.create` call: prints the `spec:` line when the daemon announces
/// it (unless it is `printed` already), then the stages.
async fn create_once(
    layout: &Layout,
    params: &VmCreateParams,
    printed: &mut Option<String>,
) -> Attempt {
    let mut spec = None;
    let outcome = call(layout, params, printed, &mut spec).await;
    Attempt { spec, outcome }
}

/// The call itself, filling in `spec` when it is announced: on Ctrl-C, the
/// VM it names is waited for until the daemon has rolled it back.
async fn call(
    layout: &Layout,
    params: &VmCreateParams,
    printed: &mut Option<String>,
    spec: &mut Option<ResolvedSpec>,
) -> anyhow::Result<Vm> {
    let mut client = daemon_client::connect(layout).await?;
    let mut progress = Progress::new();
    let outcome = {
        let call = client.call::<method::VmCreate>(params.clone(), |event| match event {
            Event::Spec { spec: announced } => {
                let line = format!("spec: {}", spec_line(&announced));
                if printed.as_ref() != Some(&line) {
                    progress.println(&line);
                    *printed = Some(line);
                }
                *spec = Some(announced);
            }
            event => progress.on_event(event),
        });
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
            let Some(spec) = spec else {
                // Cancelled before the daemon named the VM: there is
                // nothing to wait for by name.
                let message =
                    "creating the VM was cancelled; the daemon rolls back what it started";
                return Err(ExitError {
                    message: message.into(),
                    code: 130,
                }
                .into());
            };
            let name = &spec.name.value;
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

/// `4 vcpu · 8192 MiB · 8G disk · NAT` (or `· no NAT`). A setting taken from
/// `config.toml` says so, e.g. `3 vcpu (config)`: nothing typed asked for
/// it, and the file may be long forgotten. Flags, the host's sizes and
/// banger's own values go unmarked.
fn spec_line(spec: &ResolvedSpec) -> String {
    fn marked<T>(text: String, setting: &Resolved<T>) -> String {
        match setting.provenance {
            Provenance::Config => format!("{text} ({})", Provenance::Config),
            Provenance::Flag | Provenance::Host | Provenance::Builtin => text,
        }
    }
    let nat = if spec.nat.value { "NAT" } else { "no NAT" };
    [
        marked(format!("{} vcpu", spec.vcpu.value), &spec.vcpu),
        marked(format!("{} MiB", spec.memory_mib.value), &spec.memory_mib),
        marked(format!("{} disk", spec.disk_size.value), &spec.disk_size),
        marked(nat.to_owned(), &spec.nat),
    ]
    .join(" · ")
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
    use banger_model::vm::VmmKind;

    fn flags() -> CreateFlags {
        CreateFlags {
            name: None,
            image: None,
            vcpu: None,
            memory: None,
            disk_size: None,
            nat: false,
            no_nat: false,
            allow_overcommit: false,
            publish: Vec::new(),
            vmm: None,
        }
    }

    fn exit_code(err: &anyhow::Error) -> Option<u8> {
        err.downcast_ref::<ExitError>().map(|err| err.code)
    }

    #[test]
    fn only_typed_flags_are_sent() {
        assert_eq!(request(&flags()).unwrap(), VmCreateParams::default());
        let typed = CreateFlags {
            name: Some("web".into()),
            vcpu: Some(2),
            memory: Some(512),
            disk_size: Some(ByteSize::gib(16)),
            ..flags()
        };
        let params = request(&typed).unwrap();
        assert_eq!(params.name.as_deref(), Some("web"));
        assert_eq!(
            (params.vcpu, params.memory_mib, params.disk_size),
            (Some(2), Some(512), Some(ByteSize::gib(16)))
        );
    }

    #[test]
    fn nat_is_sent_only_when_typed() {
        assert_eq!(typed_nat(&flags()), None);
        let nat = CreateFlags {
            nat: true,
            ..flags()
        };
        assert_eq!(typed_nat(&nat), Some(true));
        let no_nat = CreateFlags {
            no_nat: true,
            ..flags()
        };
        assert_eq!(typed_nat(&no_nat), Some(false));
    }

    #[test]
    fn bad_flags_are_usage_errors() {
        for bad in [
            CreateFlags {
                vcpu: Some(0),
                ..flags()
            },
            CreateFlags {
                memory: Some(-512),
                ..flags()
            },
            CreateFlags {
                disk_size: Some(ByteSize::mib(1)),
                ..flags()
            },
            CreateFlags {
                name: Some("Not A Label".into()),
                ..flags()
            },
        ] {
            let err = request(&bad).unwrap_err();
            assert_eq!(exit_code(&err), Some(EXIT_USAGE), "{bad:?}: {err}");
        }
    }

    fn resolved(nat: Resolved<bool>) -> ResolvedSpec {
        let host = |value| Resolved {
            value,
            provenance: Provenance::Host,
        };
        ResolvedSpec {
            name: Resolved::flag(Name::parse("box").unwrap()),
            vcpu: host(2),
            memory_mib: host(2048),
            disk_size: Resolved {
                value: ByteSize::gib(8),
                provenance: Provenance::Builtin,
            },
            nat,
            vmm: Resolved::flag(VmmKind::Sim),
        }
    }

    #[test]
    fn the_spec_line_says_whether_the_vm_has_nat() {
        let builtin = Resolved {
            value: true,
            provenance: Provenance::Builtin,
        };
        assert_eq!(
            spec_line(&resolved(builtin)),
            "2 vcpu · 2048 MiB · 8G disk · NAT"
        );
        assert_eq!(
            spec_line(&resolved(Resolved::flag(false))),
            "2 vcpu · 2048 MiB · 8G disk · no NAT"
        );
    }

    #[test]
    fn the_spec_line_marks_what_config_toml_chose() {
        let mut spec = resolved(Resolved {
            value: false,
            provenance: Provenance::Config,
        });
        spec.vcpu = Resolved {
            value: 3,
            provenance: Provenance::Config,
        };
        spec.memory_mib = Resolved::flag(512);
        assert_eq!(
            spec_line(&spec),
            "3 vcpu (config) · 512 MiB · 8G disk · no NAT (config)"
        );
    }
}
