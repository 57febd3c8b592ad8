//! Stopping a VM's VMM and releasing what a running VM holds on the host:
//! its TAP, its NAT rules, its DNS record, its dm devices. Every step runs
//! even when an earlier one failed, and each tolerates the resource already
//! being gone, so halting never hangs and never leaks.

use std::sync::Arc;
use std::time::Duration;

use banger_firecracker::VmmProcess;
use banger_model::image::Image;
use banger_model::vm::{StorageStrategy, Vm, VmmKind};
use tracing::{info, warn};

use super::{disks, save};
use crate::daemon::Daemon;
use crate::errors::{ServiceError, blocking};

/// How long a SIGKILLed VMM may take to disappear before we give up waiting.
const KILL_GRACE: Duration = Duration::from_secs(10);

/// How to stop the VMM.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Ctrl-Alt-Del, wait the grace window, then kill.
    Graceful,
    /// Kill at once.
    Kill,
}

/// The VM's VMM handle: the one we launched or adopted, else found again
/// by its API socket.
pub async fn find_process(daemon: &Daemon, vm: &Vm) -> Option<VmmProcess> {
    if let Some(process) = daemon.take_process(&vm.id) {
        return Some(process);
    }
    match daemon.vmm.adopt(&vm.paths().api_socket()).await {
        Ok(found) => found,
        Err(err) => {
            warn!(vm = %vm.name, error = %err, "cannot look for the VM's VMM");
            None
        }
    }
}

/// Stops the VMM, releases host resources and records the VM stopped (with
/// the other fields the caller changed). Problems met on the way are
/// returned; failing to record the result is an error: the host is then
/// stopped but the store may still say otherwise (`vm start` and the next
/// reconcile check the VMM, not only the record).
pub async fn halt(
    daemon: &Arc<Daemon>,
    vm: &mut Vm,
    mode: Mode,
) -> Result<Vec<String>, ServiceError> {
    let recorded_pid = daemon
        .store
        .get_vm(&vm.id)
        .ok()
        .flatten()
        .and_then(|stored| stored.pid);
    let problems = stop_and_release(daemon, vm, mode).await;
    vm.state = banger_model::vm::VmState::Stopped;
    if let Err(err) = save(daemon, vm) {
        // The host is stopped; the record catches up once it can be written.
        if let Some(pid) = recorded_pid {
            tokio::spawn(super::watch::record_gone(
                Arc::downgrade(daemon),
                vm.id.clone(),
                pid,
                None,
            ));
        }
        return Err(err);
    }
    daemon.checkpoint("record the VM as stopped");
    Ok(problems)
}

/// Stops the VMM and releases host resources, without recording a new
/// state. Every step tolerates its work already being done.
pub async fn stop_and_release(daemon: &Arc<Daemon>, vm: &mut Vm, mode: Mode) -> Vec<String> {
    stop_and_release_checked(daemon, vm, mode).await.problems
}

/// What [`stop_and_release_checked`] left.
#[derive(Debug)]
pub struct Released {
    pub problems: Vec<String>,
    /// A VMM that may still run: one that could not be killed, or could
    /// not be looked for (banger-helper started it and is down). Whoever
    /// forgets the VM now may orphan it.
    pub vmm_left: Option<String>,
}

/// [`stop_and_release`], saying whether the VMM may still run.
pub async fn stop_and_release_checked(daemon: &Arc<Daemon>, vm: &mut Vm, mode: Mode) -> Released {
    let mut problems = Vec::new();
    let mut vmm_left = None;
    let found = match daemon.take_process(&vm.id) {
        Some(process) => Ok(Some(process)),
        None => daemon.vmm.adopt(&vm.paths().api_socket()).await,
    };
    match found {
        Ok(Some(process)) => {
            stop_process(daemon, vm, &process, mode, &mut problems).await;
            daemon.checkpoint("stop the VMM");
            if process.exited().is_none() {
                vmm_left = Some(format!(
                    "its VMM (pid {}) could not be killed",
                    process.pid()
                ));
            }
        }
        Ok(None) => {}
        Err(err) => {
            warn!(vm = %vm.name, error = %err, "cannot look for the VM's VMM");
            vmm_left = Some(format!("its VMM could not be looked for: {err}"));
        }
    }
    problems.extend(release_host(daemon, vm).await);
    daemon.checkpoint("release the host");
    vm.pid = None;
    vm.tap = None;
    Released { problems, vmm_left }
}

async fn stop_process(
    daemon: &Daemon,
    vm: &mut Vm,
    process: &VmmProcess,
    mode: Mode,
    problems: &mut Vec<String>,
) {
    if mode == Mode::Graceful && process.exited().is_none() {
        vm.state = banger_model::vm::VmState::Stopping;
        if let Err(err) = save(daemon, vm) {
            problems.push(err.message());
        }
        match daemon.vmm.stop(process).await {
            Ok(()) => {
                let mut exit = process.exit_watch();
                match tokio::time::timeout(daemon.config.stop_grace, exit.wait()).await {
                    Ok(exit) => info!(vm = %vm.name, %exit, "guest shut down"),
                    Err(_) => warn!(
                        vm = %vm.name,
                        grace_s = daemon.config.stop_grace.as_secs(),
                        "guest ignored Ctrl-Alt-Del; killing the VMM"
                    ),
                }
            }
            Err(err) => warn!(vm = %vm.name, error = %err, "Ctrl-Alt-Del failed; killing the VMM"),
        }
    }
    if process.exited().is_none() {
        match tokio::time::timeout(KILL_GRACE, daemon.vmm.kill(process)).await {
            Ok(Ok(())) => info!(vm = %vm.name, pid = process.pid(), "VMM killed"),
            Ok(Err(err)) => problems.push(format!("killing the VMM: {err}")),
            Err(_) => problems.push(format!(
                "the VMM (pid {}) did not die within {KILL_GRACE:?}",
                process.pid()
            )),
        }
    }
}

/// Releases the TAP, NAT rules, DNS record and (dm) root devices.
pub async fn release_host(daemon: &Arc<Daemon>, vm: &Vm) -> Vec<String> {
    let mut problems = Vec::new();
    daemon.network.unpublish(&vm.name);
    daemon.forwards.stop(&vm.id);
    let tap = banger_net::vm_tap_name(&vm.id);
    if let Err(err) = daemon.network.ops.delete_tap(&tap).await {
        problems.push(format!("deleting TAP {tap}: {err}"));
    }
    if let Err(err) = daemon.network.ops.remove_vm_nat(&vm.id).await {
        problems.push(format!("removing NAT rules: {err}"));
    }
    if vm.vmm == VmmKind::Sim {
        // A killed banger-simvm's guest namespace (and the veth in it) is
        // freed by the kernel later; deleting the host end frees it now.
        let veth = banger_net::names::sim_veth_name(vm.id.as_str());
        if let Err(err) = daemon.network.ops.delete_sim_veth(&veth).await {
            problems.push(format!("deleting veth {veth}: {err}"));
        }
    }
    if vm.storage == StorageStrategy::DmSnapshot
        && let Ok(Some(image)) = daemon.store.get_image(&vm.image_id)
    {
        problems.extend(deactivate_root(daemon, vm, &image).await);
    }
    problems
}

async fn deactivate_root(daemon: &Daemon, vm: &Vm, image: &Image) -> Vec<String> {
    let overlay = disks::overlay_for(vm, image);
    let disk = Arc::clone(&daemon.disk);
    match blocking(move || disk.deactivate_root(&overlay)).await {
        Ok(Ok(_)) => Vec::new(),
        Ok(Err(err)) => vec![format!("deactivating the root disk: {err}")],
        Err(err) => vec![err.message()],
    }
}
