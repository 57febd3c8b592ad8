//! `vm.start` and `vm.restart`.

use std::sync::Arc;

use banger_model::vm::{Vm, VmState};
use tokio_util::sync::CancellationToken;

use crate::daemon::Daemon;
use crate::errors::ServiceError;
use crate::server::EventSink;
use crate::undo::Undo;
use crate::vm::boot::{self, BootInput};
use crate::vm::halt::{self, Mode};
use crate::vm::{disks, finish, load, resolve};

pub async fn start(
    daemon: &Arc<Daemon>,
    reference: &str,
    events: &EventSink,
    cancel: &CancellationToken,
) -> Result<Vm, ServiceError> {
    let found = resolve(daemon, reference)?;
    let _lock = daemon.vm_locks.lock(&found.id).await;
    let vm = load(daemon, &found.id)?;
    start_locked(daemon, vm, events, cancel).await
}

pub async fn restart(
    daemon: &Arc<Daemon>,
    reference: &str,
    events: &EventSink,
    cancel: &CancellationToken,
) -> Result<Vm, ServiceError> {
    let found = resolve(daemon, reference)?;
    let _lock = daemon.vm_locks.lock(&found.id).await;
    let mut vm = load(daemon, &found.id)?;
    match vm.state {
        VmState::Creating => return Err(creating(&vm)),
        VmState::Deleting => return Err(crate::vm::being_deleted(&vm)),
        _ => {}
    }
    let stage = events.stage("stop");
    for problem in halt::halt(daemon, &mut vm, Mode::Graceful).await? {
        events.log("warning", problem);
    }
    stage.done();
    start_locked(daemon, vm, events, cancel).await
}

/// Starts a VM whose lock the caller holds.
async fn start_locked(
    daemon: &Arc<Daemon>,
    mut vm: Vm,
    events: &EventSink,
    cancel: &CancellationToken,
) -> Result<Vm, ServiceError> {
    let requested_at = std::time::Instant::now();
    match vm.state {
        // Running with its VMM alive. A record that says running over a
        // VMM that is gone (its exit could not be recorded, e.g. on a full
        // disk) is cleaned up and started again.
        VmState::Running if daemon.has_live_process(&vm.id) => return Ok(vm),
        VmState::Creating => return Err(creating(&vm)),
        VmState::Deleting => return Err(crate::vm::being_deleted(&vm)),
        // Leftovers of an interrupted operation or a failed boot: clean first.
        VmState::Running | VmState::Starting | VmState::Stopping | VmState::Error => {
            for problem in halt::halt(daemon, &mut vm, Mode::Kill).await? {
                events.log("warning", problem);
            }
        }
        VmState::Stopped => {}
    }
    let image = daemon
        .store
        .get_image(&vm.image_id)?
        .ok_or_else(|| ServiceError::not_found(format!("the image of VM {} is gone", vm.name)))?;
    let kernel = match &image.kernel_id {
        Some(id) => daemon.store.get_kernel(id)?,
        None => None,
    };
    if vm.vmm.boots_kernel() && kernel.is_none() {
        return Err(ServiceError::precondition(format!(
            "image {} has no kernel",
            image.name
        )));
    }

    let ports = crate::forward::bind(&vm.ports)?;
    let mut undo = Undo::default();
    let outcome = async {
        let key = daemon.keys.ensure().await.map_err(ServiceError::from)?;
        let snapshot = vm.clone();
        let prepare = disks::prepare_existing(daemon, &snapshot, &image, &key, events);
        let input = BootInput {
            image: &image,
            kernel: kernel.as_ref(),
            requested_at,
        };
        boot::boot(daemon, &mut vm, input, prepare, events, cancel, &mut undo).await
    }
    .await;
    finish(daemon, vm, outcome, undo, ports, events, false).await
}

fn creating(vm: &Vm) -> ServiceError {
    ServiceError::conflict(format!("VM {} is still being created", vm.name))
}
