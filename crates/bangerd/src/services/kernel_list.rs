//! `kernel.list` and `kernel.show`.

use banger_model::kernel::Kernel;
use banger_rpc::response::KernelListResult;

use crate::daemon::Daemon;
use crate::errors::ServiceError;

pub fn list(daemon: &Daemon) -> Result<KernelListResult, ServiceError> {
    Ok(KernelListResult {
        kernels: daemon.store.list_kernels()?,
    })
}

pub fn show(daemon: &Daemon, reference: &str) -> Result<Kernel, ServiceError> {
    let kernels = daemon.store.list_kernels()?;
    Ok(banger_store::resolve(&kernels, reference)?.clone())
}
