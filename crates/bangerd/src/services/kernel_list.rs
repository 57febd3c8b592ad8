//! `kernel.list` and `kernel.show`.

use banger_model::kernel::Kernel;
use banger_rpc::RpcError;
use banger_rpc::response::KernelListResult;

use crate::daemon::{Daemon, resolve_error, store_error};

pub fn list(daemon: &Daemon) -> Result<KernelListResult, RpcError> {
    Ok(KernelListResult {
        kernels: daemon.store.list_kernels().map_err(store_error)?,
    })
}

pub fn show(daemon: &Daemon, reference: &str) -> Result<Kernel, RpcError> {
    let kernels = daemon.store.list_kernels().map_err(store_error)?;
    banger_store::resolve(&kernels, reference)
        .cloned()
        .map_err(resolve_error)
}
