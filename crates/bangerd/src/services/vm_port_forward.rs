//! `vm.port_forward`: publish host ports into a VM or stop publishing them.
//! A running VM forwards the new ports at once (bound first, so a port in
//! use changes nothing); a stopped one forwards them from its next start.

use std::sync::Arc;

use banger_model::publish::PortForward;
use banger_model::vm::{Vm, VmState};
use banger_rpc::request::PortForwardParams;

use crate::daemon::Daemon;
use crate::errors::ServiceError;
use crate::vm::{load, resolve, save};

pub async fn port_forward(
    daemon: &Arc<Daemon>,
    params: PortForwardParams,
) -> Result<Vm, ServiceError> {
    let found = resolve(daemon, &params.reference)?;
    let _lock = daemon.vm_locks.lock(&found.id).await;
    let mut vm = load(daemon, &found.id)?;
    if vm.state == VmState::Deleting {
        return Err(crate::vm::being_deleted(&vm));
    }
    for forward in &params.remove {
        if !vm.ports.contains(forward) {
            return Err(ServiceError::not_found(format!(
                "VM {} does not publish {forward}",
                vm.name
            ))
            .with_hint(format!(
                "`banger vm ports {}` lists what it publishes",
                vm.name
            )));
        }
    }
    let kept: Vec<PortForward> = vm
        .ports
        .iter()
        .filter(|forward| !params.remove.contains(forward))
        .copied()
        .collect();
    let mut added = Vec::new();
    for forward in &params.add {
        if kept.contains(forward) || added.contains(forward) {
            continue;
        }
        if let Some(other) = kept.iter().find(|other| {
            other.host_addr == forward.host_addr && other.host_port == forward.host_port
        }) {
            return Err(ServiceError::invalid(format!(
                "VM {} already publishes {}:{} (as {other})",
                vm.name, forward.host_addr, forward.host_port
            ))
            .with_hint("remove it first with `banger vm port-forward --remove`"));
        }
        added.push(*forward);
    }
    let running = vm.state == VmState::Running;
    // Bound before anything changes: a port in use changes nothing.
    let bound = if running {
        Some(crate::forward::bind(&added)?)
    } else {
        None
    };
    let previous = std::mem::replace(&mut vm.ports, kept.into_iter().chain(added).collect());
    if let Err(err) = save(daemon, &mut vm) {
        vm.ports = previous;
        return Err(err);
    }
    if running {
        daemon.forwards.stop_some(&vm.id, &params.remove);
        if let Some(bound) = bound {
            daemon.forwards.start(&vm.id, vm.network.ip, bound);
        }
    }
    tracing::info!(vm = %vm.name, ports = ?vm.ports, "published ports changed");
    Ok(vm)
}
