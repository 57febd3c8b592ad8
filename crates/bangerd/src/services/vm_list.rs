//! `vm.list` and `vm.show`.

use banger_model::vm::Vm;
use banger_rpc::RpcError;
use banger_rpc::response::VmListResult;

use crate::daemon::{Daemon, resolve_error, store_error};

pub fn list(daemon: &Daemon) -> Result<VmListResult, RpcError> {
    Ok(VmListResult {
        vms: daemon.store.list_vms().map_err(store_error)?,
    })
}

pub fn show(daemon: &Daemon, reference: &str) -> Result<Vm, RpcError> {
    let vms = daemon.store.list_vms().map_err(store_error)?;
    banger_store::resolve(&vms, reference)
        .cloned()
        .map_err(resolve_error)
}
