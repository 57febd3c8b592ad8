//! `vm.workspace.record`: the CLI copied a checkout into the VM (over SSH,
//! as the user); the daemon keeps what export needs, the base commit.

use std::sync::Arc;

use banger_model::vm::Vm;
use banger_rpc::request::WorkspaceRecordParams;

use crate::daemon::Daemon;
use crate::errors::ServiceError;
use crate::vm::{load, resolve, save};

pub async fn record(
    daemon: &Arc<Daemon>,
    params: WorkspaceRecordParams,
) -> Result<Vm, ServiceError> {
    let found = resolve(daemon, &params.reference)?;
    let _lock = daemon.vm_locks.lock(&found.id).await;
    let mut vm = load(daemon, &found.id)?;
    vm.workspace = Some(params.workspace);
    save(daemon, &mut vm)?;
    Ok(vm)
}
