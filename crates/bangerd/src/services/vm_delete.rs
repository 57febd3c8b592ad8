//! `vm.delete`: stop (kill) if needed, then remove disks, files, record and
//! the VM's known_hosts entry.

use std::sync::Arc;

use banger_model::vm::{Vm, VmState};
use banger_rpc::{ErrorCode, RpcError};

use crate::daemon::{Daemon, store_error};
use crate::vm::halt::{self, Mode};
use crate::vm::{disks, load, resolve};

pub async fn delete(daemon: &Arc<Daemon>, reference: &str) -> Result<Vm, RpcError> {
    let found = resolve(daemon, reference)?;
    let lock = daemon.vm_locks.lock(&found.id).await;
    let mut vm = load(daemon, &found.id)?;
    if vm.state == VmState::Creating {
        return Err(RpcError::new(
            ErrorCode::Conflict,
            format!("VM {} is still being created", vm.name),
        ));
    }
    let mut problems = halt::halt(daemon, &mut vm, Mode::Kill).await;
    let image = daemon.store.get_image(&vm.image_id).map_err(store_error)?;
    problems.extend(disks::destroy(daemon, &vm, image.as_ref()).await);
    daemon.store.delete_vm(&vm.id).map_err(store_error)?;
    let known_hosts = crate::ssh::known_hosts_file(&daemon.layout, vm.name.as_str());
    let _ = fs_err::remove_file(known_hosts);
    drop(lock);
    daemon.vm_locks.forget(&vm.id);
    if !problems.is_empty() {
        tracing::warn!(vm = %vm.name, ?problems, "deleted with problems; the next reconcile retries");
    }
    tracing::info!(vm = %vm.name, id = %vm.id, "VM deleted");
    Ok(vm)
}
