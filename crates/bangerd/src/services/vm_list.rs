//! `vm.list` and `vm.show`.

use banger_rpc::RpcError;
use banger_rpc::response::{VmDetails, VmListResult};

use crate::daemon::{Daemon, resolve_error, store_error};
use crate::disk_space;

pub fn list(daemon: &Daemon) -> Result<VmListResult, RpcError> {
    Ok(VmListResult {
        vms: daemon.store.list_vms().map_err(store_error)?,
        warnings: disk_space::low_space_warning(daemon).into_iter().collect(),
    })
}

pub fn show(daemon: &Daemon, reference: &str) -> Result<VmDetails, RpcError> {
    let vms = daemon.store.list_vms().map_err(store_error)?;
    let vm = banger_store::resolve(&vms, reference)
        .cloned()
        .map_err(resolve_error)?;
    let image = daemon.store.get_image(&vm.image_id).map_err(store_error)?;
    let disks = disk_space::vm_disks(&vm, image.as_ref());
    Ok(VmDetails { vm, disks })
}
