//! `image.list` and `image.show`.

use banger_model::image::Image;
use banger_rpc::response::ImageListResult;

use crate::daemon::Daemon;
use crate::errors::ServiceError;

pub fn list(daemon: &Daemon) -> Result<ImageListResult, ServiceError> {
    Ok(ImageListResult {
        images: daemon.store.list_images()?,
    })
}

pub fn show(daemon: &Daemon, reference: &str) -> Result<Image, ServiceError> {
    let images = daemon.store.list_images()?;
    Ok(banger_store::resolve(&images, reference)?.clone())
}
