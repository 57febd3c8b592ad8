//! `banger image import|delete|promote` and `banger kernel import|rm`.

use std::path::Path;
use std::process::ExitCode;

use anyhow::Context;
use banger_model::image::Image;
use banger_model::kernel::Kernel;
use banger_model::layout::Layout;
use banger_rpc::Request;
use banger_rpc::request::{ImageImportParams, KernelImportParams, RefParams};
use banger_rpc::response::Empty;

use crate::args::{ImageImportArgs, KernelImportArgs, RefArg};
use crate::daemon_client;
use crate::progress::Progress;

/// The daemon may run in another directory: send absolute paths.
pub(super) fn absolute(path: &Path) -> anyhow::Result<std::path::PathBuf> {
    fs_err::canonicalize(path).with_context(|| format!("cannot use {}", path.display()))
}

pub(super) async fn image_import(
    layout: &Layout,
    args: &ImageImportArgs,
) -> anyhow::Result<ExitCode> {
    let params = ImageImportParams {
        path: absolute(&args.path)?,
        name: args.name.clone(),
        kernel_ref: args.kernel_ref.clone(),
    };
    let mut client = daemon_client::connect(layout).await?;
    let mut progress = Progress::new();
    let image: Result<Image, _> = client
        .call(&Request::ImageImport(params), |event| {
            progress.on_event(event)
        })
        .await;
    progress.finish();
    let image = image?;
    eprintln!(
        "image {} imported ({}, {}){}",
        image.name,
        image.id.short(),
        image.rootfs_size.human(),
        if image.is_default {
            ", now the default image"
        } else {
            ""
        }
    );
    if image.kernel_id.is_none() {
        eprintln!(
            "note: no kernel attached; Firecracker VMs need one (`banger kernel import`), sim VMs do not"
        );
    }
    Ok(ExitCode::SUCCESS)
}

pub(super) async fn image_delete(layout: &Layout, args: &RefArg) -> anyhow::Result<ExitCode> {
    let mut client = daemon_client::connect(layout).await?;
    let _: Empty = client
        .call(
            &Request::ImageDelete(RefParams::new(&args.reference)),
            |_| {},
        )
        .await?;
    eprintln!("image {} deleted", args.reference);
    Ok(ExitCode::SUCCESS)
}

pub(super) async fn image_promote(layout: &Layout, args: &RefArg) -> anyhow::Result<ExitCode> {
    let mut client = daemon_client::connect(layout).await?;
    let image: Image = client
        .call(
            &Request::ImagePromote(RefParams::new(&args.reference)),
            |_| {},
        )
        .await?;
    eprintln!("image {} is now the default", image.name);
    Ok(ExitCode::SUCCESS)
}

pub(super) async fn kernel_import(
    layout: &Layout,
    args: &KernelImportArgs,
) -> anyhow::Result<ExitCode> {
    let params = KernelImportParams {
        dir: absolute(&args.dir)?,
        name: args.name.clone(),
    };
    let mut client = daemon_client::connect(layout).await?;
    let kernel: Kernel = client.call(&Request::KernelImport(params), |_| {}).await?;
    eprintln!(
        "kernel {} imported ({}{}{})",
        kernel.name,
        kernel.id.short(),
        kernel
            .version
            .as_deref()
            .map(|v| format!(", Linux {v}"))
            .unwrap_or_default(),
        if kernel.initrd_path.is_some() {
            ", with initrd"
        } else {
            ""
        }
    );
    Ok(ExitCode::SUCCESS)
}

pub(super) async fn kernel_rm(layout: &Layout, args: &RefArg) -> anyhow::Result<ExitCode> {
    let mut client = daemon_client::connect(layout).await?;
    let _: Empty = client
        .call(&Request::KernelRm(RefParams::new(&args.reference)), |_| {})
        .await?;
    eprintln!("kernel {} removed", args.reference);
    Ok(ExitCode::SUCCESS)
}
