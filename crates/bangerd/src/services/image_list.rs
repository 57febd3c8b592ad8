//! `image.list` and `image.show`.

use banger_model::image::Image;
use banger_rpc::RpcError;
use banger_rpc::response::ImageListResult;

use crate::daemon::{Daemon, resolve_error, store_error};

pub fn list(daemon: &Daemon) -> Result<ImageListResult, RpcError> {
    Ok(ImageListResult {
        images: daemon.store.list_images().map_err(store_error)?,
    })
}

pub fn show(daemon: &Daemon, reference: &str) -> Result<Image, RpcError> {
    let images = daemon.store.list_images().map_err(store_error)?;
    banger_store::resolve(&images, reference)
        .cloned()
        .map_err(resolve_error)
}
