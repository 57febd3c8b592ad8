//! Pieces shared by the VM lifecycle services: preparing disks, booting
//! (network, VMM, readiness waits), tearing down, watching the VMM.
//!
//! Layout:
//! - [`disks`]: the copy-on-write root, the work disk, per-VM file edits.
//! - [`boot`]: TAP, NAT, VMM launch and configuration, agent and SSH waits.
//! - [`halt`]: stopping a VMM and releasing what a running VM holds.
//! - [`qemu`]: the qemu engine's programs and accelerator, resolved once.
//! - [`spec`]: a new VM's settings from the request, config and host.
//! - [`watch`]: noticing a VMM that exits on its own.

pub mod boot;
pub mod disks;
pub mod halt;
pub mod qemu;
pub mod spec;
pub mod watch;

use banger_model::Id;
use banger_model::vm::Vm;

use crate::daemon::Daemon;
use crate::errors::ServiceError;

/// A failed lifecycle step: the error for the client, and whether the VMM
/// had been launched (then the VM is kept, in `error`, for `vm logs`), or
/// is still booting (then it keeps running, to be looked at).
#[derive(Debug)]
pub struct Failure {
    pub error: ServiceError,
    pub launched: bool,
    /// The guest did not answer in time but its VMM (this process) runs:
    /// keep it running (a slow guest may still come up; `vm logs`/`vm ssh`
    /// can look).
    pub still_booting: Option<banger_firecracker::VmmProcess>,
}

impl Failure {
    pub fn before_launch(error: ServiceError) -> Self {
        Self {
            error,
            launched: false,
            still_booting: None,
        }
    }

    pub fn after_launch(error: ServiceError) -> Self {
        Self {
            error,
            launched: true,
            still_booting: None,
        }
    }

    /// A boot wait that timed out with the VMM `process` still running.
    pub fn still_booting(error: ServiceError, process: banger_firecracker::VmmProcess) -> Self {
        Self {
            error,
            launched: true,
            still_booting: Some(process),
        }
    }

    pub fn is_cancelled(&self) -> bool {
        self.error.is_cancelled()
    }
}

impl From<ServiceError> for Failure {
    fn from(error: ServiceError) -> Self {
        Self::before_launch(error)
    }
}

/// The refusal for an operation on a VM that is being deleted.
pub fn being_deleted(vm: &Vm) -> ServiceError {
    ServiceError::conflict(format!("VM {} is being deleted", vm.name))
        .with_hint(format!("`banger vm delete {}` finishes it", vm.name))
}

/// Reads a VM back from the store.
pub fn load(daemon: &Daemon, id: &Id) -> Result<Vm, ServiceError> {
    daemon
        .store
        .get_vm(id)?
        .ok_or_else(|| ServiceError::not_found(format!("VM {id} no longer exists")))
}

/// Writes a VM's fields to the store.
pub fn save(daemon: &Daemon, vm: &mut Vm) -> Result<(), ServiceError> {
    Ok(daemon.store.update_vm(vm)?)
}

/// Resolves a user's reference against the current VMs.
pub fn resolve(daemon: &Daemon, reference: &str) -> Result<Vm, ServiceError> {
    let vms = daemon.store.list_vms()?;
    Ok(banger_store::resolve(&vms, reference)?.clone())
}

/// Ends a create or start: on success the VM is running, published in DNS
/// and watched; on failure the rollback runs. `may_delete` (create) allows a
/// full rollback when the VMM never ran or the client cancelled; otherwise
/// the VM is kept in `error` (or `stopped` after a cancelled start). A guest
/// that did not answer in time keeps running, recorded as running with the
/// timeout as its last error, and the error says how to look and delete.
pub async fn finish(
    daemon: &std::sync::Arc<Daemon>,
    mut vm: Vm,
    outcome: Result<banger_firecracker::VmmProcess, Failure>,
    undo: crate::undo::Undo,
    ports: crate::forward::Bound,
    events: &crate::server::EventSink,
    may_delete: bool,
) -> Result<Vm, ServiceError> {
    use banger_model::vm::VmState;
    match outcome {
        Err(Failure {
            error,
            still_booting: Some(process),
            ..
        }) if !error.is_cancelled() => {
            vm.state = VmState::Running;
            vm.started_at = Some(jiff::Timestamp::now());
            vm.last_error = Some(error.message());
            if let Err(err) = save(daemon, &mut vm) {
                let failure = Failure::after_launch(err);
                return Box::pin(finish(
                    daemon,
                    vm,
                    Err(failure),
                    undo,
                    ports,
                    events,
                    may_delete,
                ))
                .await;
            }
            undo.disarm();
            daemon.network.publish(&vm.name, vm.network.ip);
            daemon.forwards.start(&vm.id, vm.network.ip, ports);
            daemon.put_process(&vm.id, process.clone());
            watch::spawn(daemon, vm.id.clone(), process);
            tracing::warn!(vm = %vm.name, error = %error.message(), "VM kept running although its guest did not answer in time");
            let name = &vm.name;
            Err(error.with_hint(format!(
                "the VM keeps running so you can look: `banger vm logs {name}` (console), `banger vm ssh {name}` (once sshd answers); `banger vm delete {name}` removes it. Raise boot_timeout_seconds in config.toml if the guest is just slow"
            )))
        }
        Ok(process) => {
            let stage = events.stage("ready");
            vm.state = VmState::Running;
            vm.started_at = Some(jiff::Timestamp::now());
            vm.last_error = None;
            if let Err(err) = save(daemon, &mut vm) {
                let failure = Failure::after_launch(err);
                return Box::pin(finish(
                    daemon,
                    vm,
                    Err(failure),
                    undo,
                    ports,
                    events,
                    may_delete,
                ))
                .await;
            }
            undo.disarm();
            daemon.checkpoint("record the VM as running");
            daemon.network.publish(&vm.name, vm.network.ip);
            daemon.forwards.start(&vm.id, vm.network.ip, ports);
            daemon.put_process(&vm.id, process.clone());
            watch::spawn(daemon, vm.id.clone(), process);
            stage.done();
            tracing::info!(vm = %vm.name, id = %vm.id, "VM running");
            Ok(vm)
        }
        Err(failure) => {
            let delete = may_delete && (!failure.launched || failure.is_cancelled());
            let problems = undo.rollback(!delete).await;
            let cancelled = failure.is_cancelled();
            let mut error = failure.error;
            if !problems.is_empty() {
                error = ServiceError::CleanupFailed {
                    error: Box::new(error),
                    problems,
                };
            }
            if !delete {
                vm.pid = None;
                vm.tap = None;
                if failure.launched || !may_delete {
                    daemon.network.unpublish(&vm.name);
                }
                vm.state = if cancelled && !may_delete {
                    VmState::Stopped
                } else {
                    VmState::Error
                };
                vm.last_error = (vm.state == VmState::Error).then(|| error.message());
                if let Err(err) = save(daemon, &mut vm) {
                    tracing::warn!(vm = %vm.name, error = %err, "cannot record the failure");
                }
                if vm.state == VmState::Error {
                    error = error.or_hint(format!(
                        "the VM is kept for `banger vm logs {}`; `banger vm delete {}` removes it",
                        vm.name, vm.name
                    ));
                }
            }
            let wire = error.to_wire();
            tracing::warn!(vm = %vm.name, code = %wire.code, error = %wire.message, deleted = delete, "VM did not boot");
            Err(error)
        }
    }
}
