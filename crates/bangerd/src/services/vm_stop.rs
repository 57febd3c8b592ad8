//! `vm.stop` (graceful, bounded) and `vm.kill` (immediate).

use std::sync::Arc;

use banger_model::vm::{Vm, VmState};

use crate::daemon::Daemon;
use crate::errors::ServiceError;
use crate::vm::halt::{self, Mode};
use crate::vm::{load, resolve};

pub async fn stop(daemon: &Arc<Daemon>, reference: &str, mode: Mode) -> Result<Vm, ServiceError> {
    let found = resolve(daemon, reference)?;
    let _lock = daemon.vm_locks.lock(&found.id).await;
    let mut vm = load(daemon, &found.id)?;
    match vm.state {
        VmState::Stopped => return Ok(vm),
        VmState::Creating => {
            return Err(ServiceError::conflict(format!(
                "VM {} is still being created",
                vm.name
            )));
        }
        VmState::Deleting => return Err(crate::vm::being_deleted(&vm)),
        _ => {}
    }
    let problems = halt::halt(daemon, &mut vm, mode).await?;
    if !problems.is_empty() {
        tracing::warn!(vm = %vm.name, ?problems, "stopped with problems");
    }
    tracing::info!(vm = %vm.name, ?mode, "VM stopped");
    Ok(vm)
}
