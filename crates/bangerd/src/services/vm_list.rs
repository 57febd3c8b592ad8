//! `vm.list` and `vm.show`.

use banger_rpc::response::{VmDetails, VmListResult};

use crate::daemon::Daemon;
use crate::disk_space;
use crate::errors::ServiceError;

pub fn list(daemon: &Daemon) -> Result<VmListResult, ServiceError> {
    Ok(VmListResult {
        vms: daemon.store.list_vms()?,
        warnings: disk_space::low_space_warning(daemon).into_iter().collect(),
    })
}

pub fn show(daemon: &Daemon, reference: &str) -> Result<VmDetails, ServiceError> {
    let vms = daemon.store.list_vms()?;
    let vm = banger_store::resolve(&vms, reference).cloned()?;
    let image = daemon.store.get_image(&vm.image_id)?;
    let disks = disk_space::vm_disks(&vm, image.as_ref());
    Ok(VmDetails { vm, disks })
}
