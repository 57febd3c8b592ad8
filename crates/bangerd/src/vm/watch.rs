//! Noticing a VMM that exits on its own (guest poweroff, crash, someone's
//! `kill`): the VM becomes stopped (clean exit) or error, and what it held
//! on the host is released.

use std::sync::Arc;

use banger_firecracker::VmmProcess;
use banger_firecracker::launch::VmmExit;
use banger_model::Id;
use banger_model::vm::VmState;
use tracing::{info, warn};

use super::{halt, load, save};
use crate::daemon::Daemon;

/// Watches `process` for the VM `id` until it exits.
pub fn spawn(daemon: &Arc<Daemon>, id: Id, process: VmmProcess) {
    let weak = Arc::downgrade(daemon);
    tokio::spawn(async move {
        let exit = process.exit_watch().wait().await;
        // The daemon may be shutting down; then there is nothing to update.
        let Some(daemon) = weak.upgrade() else { return };
        let _lock = daemon.vm_locks.lock(&id).await;
        let Ok(mut vm) = load(&daemon, &id) else {
            return;
        };
        // A stop, kill or delete already handled it (they clear the pid).
        if vm.pid != Some(process.pid())
            || !matches!(vm.state, VmState::Running | VmState::Starting)
        {
            return;
        }
        daemon.take_process(&id);
        let problems = halt::release_host(&daemon, &vm).await;
        if !problems.is_empty() {
            warn!(vm = %vm.name, ?problems, "releasing host resources after the VMM exited");
        }
        vm.pid = None;
        vm.tap = None;
        match exit {
            VmmExit::Code(0) | VmmExit::Unknown => {
                info!(vm = %vm.name, %exit, "VMM exited; the VM is stopped");
                vm.state = VmState::Stopped;
            }
            other => {
                warn!(vm = %vm.name, exit = %other, "VMM died");
                vm.state = VmState::Error;
                vm.last_error = Some(format!(
                    "the VMM exited unexpectedly ({other}); see `banger vm logs {}`",
                    vm.name
                ));
            }
        }
        if let Err(err) = save(&daemon, &mut vm) {
            warn!(vm = %vm.name, error = %err, "cannot record the VMM's exit");
        }
    });
}
