//! `vm.set`: change vcpu, memory or disk size. vcpu and memory apply at the
//! next start; the disk grows now when the VM is stopped, else at its next
//! start. The disk never shrinks.

use std::sync::Arc;

use banger_model::spec;
use banger_model::vm::{Vm, VmState};
use banger_rpc::request::VmSetParams;

use crate::daemon::Daemon;
use crate::errors::{Doing, ServiceError, blocking};
use crate::vm::{load, resolve, save};

pub async fn set(daemon: &Arc<Daemon>, params: VmSetParams) -> Result<Vm, ServiceError> {
    let vcpu = params.vcpu.map(spec::validate_vcpu).transpose()?;
    let memory = params
        .memory_mib
        .map(spec::validate_memory_mib)
        .transpose()?;
    let disk = params.disk_size.map(spec::validate_disk).transpose()?;

    let found = resolve(daemon, &params.reference)?;
    let _lock = daemon.vm_locks.lock(&found.id).await;
    let mut vm = load(daemon, &found.id)?;
    if vm.state == VmState::Deleting {
        return Err(crate::vm::being_deleted(&vm));
    }
    if let Some(disk) = disk
        && disk < vm.spec.disk_size
    {
        return Err(ServiceError::invalid(format!(
            "the disk only grows: {} has {}, asked for {disk}",
            vm.name, vm.spec.disk_size
        )));
    }
    if let Some(vcpu) = vcpu {
        vm.spec.vcpu = vcpu;
    }
    if let Some(memory) = memory {
        vm.spec.memory_mib = memory;
    }
    if let Some(disk) = disk {
        vm.spec.disk_size = disk;
        if vm.state == VmState::Stopped {
            let disk_ops = Arc::clone(&daemon.disk);
            let path = vm.paths().work_disk();
            blocking(move || disk_ops.grow_work_disk(&path, disk))
                .await?
                .doing("growing the work disk")?;
        }
    }
    save(daemon, &mut vm)?;
    Ok(vm)
}
