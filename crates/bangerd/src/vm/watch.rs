//! Noticing a VMM that exits on its own (guest poweroff, crash, someone's
//! `kill`): the VM becomes stopped (clean exit) or error, and what it held
//! on the host is released. Recording that is retried while the store
//! cannot be written (a full disk), so the record catches up by itself
//! once there is room.

use std::sync::{Arc, Weak};
use std::time::Duration;

use banger_firecracker::VmmProcess;
use banger_firecracker::launch::VmmExit;
use banger_model::Id;
use banger_model::vm::VmState;
use banger_rpc::RpcError;
use tracing::{info, warn};

use super::{halt, load, save};
use crate::daemon::Daemon;

/// How often a record that could not be written is tried again.
const RETRY: Duration = Duration::from_secs(2);

/// Watches `process` for the VM `id` until it exits.
pub fn spawn(daemon: &Arc<Daemon>, id: Id, process: VmmProcess) {
    let weak = Arc::downgrade(daemon);
    tokio::spawn(async move {
        let exit = process.exit_watch().wait().await;
        let Some(daemon) = weak.upgrade() else {
            return;
        };
        // A stop, kill or delete takes the process out of the table before
        // it ends it: then the exit was asked for, whatever its status.
        let unexpected = daemon.take_process_if(&id, process.pid());
        drop(daemon);
        record_gone(weak, id, process.pid(), unexpected.then_some(exit)).await;
    });
}

/// Records that the VMM `pid` of VM `id` is gone — `exit` is how it ended,
/// `None` when banger stopped it — unless another operation already has.
/// Retries every [`RETRY`] while the store refuses the write; gives up when
/// the daemon shuts down (the next one's reconcile does it then).
pub async fn record_gone(daemon: Weak<Daemon>, id: Id, pid: u32, exit: Option<VmmExit>) {
    let mut warned = false;
    loop {
        let Some(daemon) = daemon.upgrade() else {
            return;
        };
        match record_once(&daemon, &id, pid, exit).await {
            Ok(()) => {
                if warned {
                    info!(id = %id, "recorded the VMM's exit now that the store can be written");
                }
                return;
            }
            Err(err) if !warned => {
                warn!(id = %id, error = %err, "cannot record the VMM's exit; retrying until the store can be written");
                warned = true;
            }
            Err(_) => {}
        }
        drop(daemon);
        tokio::time::sleep(RETRY).await;
    }
}

async fn record_once(
    daemon: &Arc<Daemon>,
    id: &Id,
    pid: u32,
    exit: Option<VmmExit>,
) -> Result<(), RpcError> {
    let _lock = daemon.vm_locks.lock(id).await;
    let Ok(mut vm) = load(daemon, id) else {
        return Ok(());
    };
    // Another operation (stop, start, delete) already dealt with it.
    if vm.pid != Some(pid)
        || !matches!(
            vm.state,
            VmState::Running | VmState::Starting | VmState::Stopping
        )
    {
        return Ok(());
    }
    let problems = halt::release_host(daemon, &vm).await;
    if !problems.is_empty() {
        warn!(vm = %vm.name, ?problems, "releasing host resources after the VMM exited");
    }
    vm.pid = None;
    vm.tap = None;
    match exit {
        None | Some(VmmExit::Code(0) | VmmExit::Unknown) => {
            info!(vm = %vm.name, exit = ?exit, "VMM gone; the VM is stopped");
            vm.state = VmState::Stopped;
        }
        Some(other) => {
            warn!(vm = %vm.name, exit = %other, "VMM died");
            vm.state = VmState::Error;
            vm.last_error = Some(format!(
                "the VMM exited unexpectedly ({other}); see `banger vm logs {}`",
                vm.name
            ));
        }
    }
    save(daemon, &mut vm)
}
