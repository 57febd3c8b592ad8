//! `banger vm start|stop|restart|delete|kill|set REF...`

use std::process::ExitCode;

use banger_model::layout::Layout;
use banger_model::spec;
use banger_model::vm::Vm;
use banger_rpc::method;
use banger_rpc::request::{RefParams, VmSetParams};

use super::vm_batch::{self, Batch};
use crate::args::VmSetArgs;
use crate::output::ExitError;

fn by_id(vm: &Vm) -> RefParams {
    RefParams::new(vm.id.as_str())
}

fn state_line(vm: &Vm) -> String {
    format!("{}: {}", vm.name, vm.state)
}

pub(super) async fn start(layout: &Layout, refs: &[String]) -> anyhow::Result<ExitCode> {
    vm_batch::run::<method::VmStart>(
        layout,
        refs,
        Batch {
            params: &by_id,
            describe: &state_line,
        },
    )
    .await
}

pub(super) async fn stop(layout: &Layout, refs: &[String]) -> anyhow::Result<ExitCode> {
    vm_batch::run::<method::VmStop>(
        layout,
        refs,
        Batch {
            params: &by_id,
            describe: &state_line,
        },
    )
    .await
}

pub(super) async fn restart(layout: &Layout, refs: &[String]) -> anyhow::Result<ExitCode> {
    vm_batch::run::<method::VmRestart>(
        layout,
        refs,
        Batch {
            params: &by_id,
            describe: &state_line,
        },
    )
    .await
}

pub(super) async fn kill(layout: &Layout, refs: &[String]) -> anyhow::Result<ExitCode> {
    vm_batch::run::<method::VmKill>(
        layout,
        refs,
        Batch {
            params: &by_id,
            describe: &state_line,
        },
    )
    .await
}

pub(super) async fn delete(layout: &Layout, refs: &[String]) -> anyhow::Result<ExitCode> {
    let describe = |vm: &Vm| format!("{}: deleted", vm.name);
    vm_batch::run::<method::VmDelete>(
        layout,
        refs,
        Batch {
            params: &by_id,
            describe: &describe,
        },
    )
    .await
}

pub(super) async fn set(layout: &Layout, args: &VmSetArgs) -> anyhow::Result<ExitCode> {
    if args.vcpu.is_none() && args.memory.is_none() && args.disk_size.is_none() {
        return Err(usage(
            "nothing to change: give --vcpu, --memory or --disk-size",
        ));
    }
    // Refuse nonsense here; the daemon checks again.
    if let Some(vcpu) = args.vcpu {
        spec::validate_vcpu(vcpu).map_err(|err| usage(&err.to_string()))?;
    }
    if let Some(memory) = args.memory {
        spec::validate_memory_mib(memory).map_err(|err| usage(&err.to_string()))?;
    }
    if let Some(disk) = args.disk_size {
        spec::validate_disk(disk).map_err(|err| usage(&err.to_string()))?;
    }
    let params = |vm: &Vm| VmSetParams {
        reference: vm.id.to_string(),
        vcpu: args.vcpu,
        memory_mib: args.memory,
        disk_size: args.disk_size,
    };
    let describe = |vm: &Vm| format!("{}: {} ({})", vm.name, vm.spec, vm.state);
    vm_batch::run::<method::VmSet>(
        layout,
        &args.refs,
        Batch {
            params: &params,
            describe: &describe,
        },
    )
    .await
}

fn usage(message: &str) -> anyhow::Error {
    ExitError {
        message: message.to_owned(),
        code: crate::output::EXIT_USAGE,
    }
    .into()
}
