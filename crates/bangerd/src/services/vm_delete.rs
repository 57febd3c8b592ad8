//! `vm.delete`: record the VM as `deleting`, then stop (kill) it, remove
//! its disks, files, known_hosts entry and finally its record. Each step
//! tolerates its work already being done, so a delete that a crash
//! interrupted is finished by running the steps again: the next daemon's
//! reconcile does, and so does another `vm delete`. A VM is never listed as
//! usable with its disks gone.

use std::sync::Arc;

use banger_model::vm::{Vm, VmState};

use crate::daemon::Daemon;
use crate::errors::ServiceError;
use crate::vm::halt::{self, Mode};
use crate::vm::{disks, load, resolve, save};

pub async fn delete(daemon: &Arc<Daemon>, reference: &str) -> Result<Vm, ServiceError> {
    let found = resolve(daemon, reference)?;
    let lock = daemon.vm_locks.lock(&found.id).await;
    let mut vm = load(daemon, &found.id)?;
    if vm.state == VmState::Creating {
        return Err(ServiceError::conflict(format!(
            "VM {} is still being created",
            vm.name
        )));
    }
    if vm.state != VmState::Deleting {
        vm.state = VmState::Deleting;
        save(daemon, &mut vm)?;
        daemon.checkpoint("record the VM as deleting");
    }
    let problems = finish(daemon, &mut vm).await?;
    drop(lock);
    daemon.vm_locks.forget(&vm.id);
    if !problems.is_empty() {
        tracing::warn!(vm = %vm.name, ?problems, "deleted with problems; the next reconcile sweeps what is left");
    }
    tracing::info!(vm = %vm.name, id = %vm.id, "VM deleted");
    Ok(vm)
}

/// The steps of a delete once the VM is recorded `deleting`. The record
/// goes last; until then the VM stays listed as `deleting`. A VMM that
/// may still run (banger-helper started it and is down) keeps the
/// record: forgetting the VM would orphan its VMM, so the delete fails and
/// is finished later, by another `vm delete` or the next daemon start.
pub async fn finish(daemon: &Arc<Daemon>, vm: &mut Vm) -> Result<Vec<String>, ServiceError> {
    let released = halt::stop_and_release_checked(daemon, vm, Mode::Kill).await;
    if let Some(left) = released.vmm_left {
        return Err(ServiceError::internal(format!(
            "{}: {left}; the VM stays `deleting`",
            vm.name
        ))
        .with_hint(format!(
            "check that banger-helper runs (banger doctor), then run `banger vm delete {}` again; \
             the next daemon start also finishes it",
            vm.name
        )));
    }
    let mut problems = released.problems;
    let image = daemon.store.get_image(&vm.image_id)?;
    problems.extend(disks::destroy(daemon, vm, image.as_ref()).await);
    daemon.checkpoint("remove the disks");
    let known_hosts = crate::ssh::known_hosts_file(&daemon.layout, vm.name.as_str());
    match fs_err::remove_file(&known_hosts) {
        Ok(()) => {}
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => {}
        Err(err) => problems.push(err.to_string()),
    }
    daemon.checkpoint("forget the host key");
    daemon.store.delete_vm(&vm.id)?;
    daemon.checkpoint("delete the record");
    Ok(problems)
}
