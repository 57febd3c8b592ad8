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
use banger_model::vm::{Vm, VmState};
use tracing::{info, warn};

use super::{halt, load, save};
use crate::daemon::Daemon;
use crate::errors::ServiceError;

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
) -> Result<(), ServiceError> {
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
        None => {
            info!(vm = %vm.name, "VMM stopped; the VM is stopped");
            vm.state = VmState::Stopped;
        }
        Some(exit) => record_unasked_exit(&mut vm, Some(exit)),
    }
    save(daemon, &mut vm)
}

/// The record of a VMM that ended without banger asking, the same however
/// the VMM was started: `exit` is its status when this daemon started it,
/// `None` when it cannot be known (re-adopted from an earlier daemon, or
/// gone while no daemon ran). A guest that shut itself down leaves the VM
/// stopped; anything else is an error with the reason.
pub fn record_unasked_exit(vm: &mut Vm, exit: Option<VmmExit>) {
    let clean = match exit {
        Some(VmmExit::Code(0)) => true,
        Some(VmmExit::Unknown) | None => guest_shut_down(vm),
        Some(_) => false,
    };
    if clean {
        info!(vm = %vm.name, ?exit, "the guest shut down; the VM is stopped");
        vm.state = VmState::Stopped;
        vm.last_error = None;
        return;
    }
    let how = match exit {
        Some(VmmExit::Unknown) | None => {
            "its exit status is unknown: it was started by an earlier daemon, or died while none ran"
                .to_owned()
        }
        Some(other) => other.to_string(),
    };
    warn!(vm = %vm.name, how = %how, "VMM died");
    vm.state = VmState::Error;
    vm.last_error = Some(format!(
        "the VMM exited unexpectedly ({how}); see `banger vm logs {}`, `banger vm start {}` boots it again",
        vm.name, vm.name
    ));
}

/// Whether the VM's console or VMM log ends with the guest shutting itself
/// down (the kernel's last words, or the VMM saying the guest left).
fn guest_shut_down(vm: &Vm) -> bool {
    const MARKERS: [&str; 5] = [
        "reboot: Power down",
        "reboot: Restarting system",
        "reboot: System halted",
        "guest is gone, exiting",
        "Firecracker exiting successfully",
    ];
    let paths = vm.paths();
    [paths.console_log(), paths.vmm_log()].iter().any(|path| {
        tail(path, 16 << 10).is_some_and(|text| MARKERS.iter().any(|marker| text.contains(marker)))
    })
}

/// The last `bytes` of a file, as text.
fn tail(path: &std::path::Path, bytes: u64) -> Option<String> {
    use std::io::{Read, Seek, SeekFrom};
    let mut file = std::fs::File::open(path).ok()?;
    let len = file.metadata().ok()?.len();
    file.seek(SeekFrom::Start(len.saturating_sub(bytes))).ok()?;
    let mut buf = Vec::new();
    file.read_to_end(&mut buf).ok()?;
    Some(String::from_utf8_lossy(&buf).into_owned())
}
