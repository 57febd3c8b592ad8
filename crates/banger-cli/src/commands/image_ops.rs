//! `banger image import|delete|promote` and `banger kernel import|rm`.

use banger_rpc::{Method, method};
use std::path::Path;
use std::process::ExitCode;

use anyhow::Context;
use banger_model::image::Image;
use banger_model::kernel::Kernel;
use banger_model::layout::Layout;
use banger_rpc::request::{ImageImportParams, KernelImportParams, RefParams};
use banger_rpc::response::{Empty, PullOutcome};

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
    let image = with_progress::<method::ImageImport>(layout, params).await?;
    report_image(&image, "imported");
    Ok(ExitCode::SUCCESS)
}

pub(super) async fn image_delete(layout: &Layout, args: &RefArg) -> anyhow::Result<ExitCode> {
    let mut client = daemon_client::connect(layout).await?;
    let _: Empty = client
        .call::<method::ImageDelete>(RefParams::new(&args.reference), |_| {})
        .await?;
    eprintln!("image {} deleted", args.reference);
    Ok(ExitCode::SUCCESS)
}

pub(super) async fn image_promote(layout: &Layout, args: &RefArg) -> anyhow::Result<ExitCode> {
    let mut client = daemon_client::connect(layout).await?;
    let image: Image = client
        .call::<method::ImagePromote>(RefParams::new(&args.reference), |_| {})
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
    let kernel: Kernel = client.call::<method::KernelImport>(params, |_| {}).await?;
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
        .call::<method::KernelRm>(RefParams::new(&args.reference), |_| {})
        .await?;
    eprintln!("kernel {} removed", args.reference);
    Ok(ExitCode::SUCCESS)
}

pub(super) async fn image_pull(
    layout: &Layout,
    args: &crate::args::ImagePullArgs,
) -> anyhow::Result<ExitCode> {
    let params = banger_rpc::request::ImagePullParams {
        reference: args.reference.clone(),
        name: args.name.clone(),
        kernel_ref: args.kernel_ref.clone(),
    };
    let pulled = with_progress::<method::ImagePull>(layout, params).await?;
    let image = &pulled.image;
    match &pulled.outcome {
        PullOutcome::Pulled => report_image(image, "pulled"),
        PullOutcome::UpToDate { digest } => {
            eprintln!("image {} is up to date ({digest})", image.name)
        }
        PullOutcome::Replaced {
            previous_digest,
            digest,
            vms,
        } => {
            eprintln!(
                "image {} replaced in place: {previous_digest} → {digest} ({}, {})",
                image.name,
                image.id.short(),
                image.rootfs_size.human()
            );
            if !vms.is_empty() {
                eprintln!(
                    "VMs made from the previous version keep their disks: {}; new VMs get the new one",
                    vms.join(", ")
                );
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

pub(super) async fn image_register(
    layout: &Layout,
    args: &crate::args::ImageRegisterArgs,
) -> anyhow::Result<ExitCode> {
    let params = banger_rpc::request::ImageRegisterParams {
        name: args.name.clone(),
        rootfs: absolute(&args.rootfs)?,
        work_seed: args.work_seed.as_deref().map(absolute).transpose()?,
        kernel_ref: args.kernel_ref.clone(),
    };
    let image = with_progress::<method::ImageRegister>(layout, params).await?;
    report_image(&image, "registered");
    Ok(ExitCode::SUCCESS)
}

pub(super) async fn kernel_pull(
    layout: &Layout,
    args: &crate::args::KernelPullArgs,
) -> anyhow::Result<ExitCode> {
    let params = banger_rpc::request::KernelPullParams {
        name: args.name.clone(),
    };
    let mut client = daemon_client::connect(layout).await?;
    let mut progress = Progress::new();
    let kernel: Result<Kernel, _> = client
        .call::<method::KernelPull>(params, |event| progress.on_event(event))
        .await;
    progress.finish();
    let kernel = kernel?;
    eprintln!("kernel {} pulled ({})", kernel.name, kernel.id.short());
    Ok(ExitCode::SUCCESS)
}

/// Runs an image request, rendering its progress; Ctrl-C cancels it (the
/// daemon removes what it staged).
async fn with_progress<M: Method>(layout: &Layout, params: M::Params) -> anyhow::Result<M::Result> {
    let mut client = daemon_client::connect(layout).await?;
    let mut progress = Progress::new();
    let outcome = {
        let call = client.call::<M>(params, |event| progress.on_event(event));
        tokio::select! {
            outcome = call => Some(outcome),
            _ = tokio::signal::ctrl_c() => None,
        }
    };
    progress.finish();
    match outcome {
        Some(result) => Ok(result?),
        None => Err(crate::output::ExitError {
            message: "cancelled; nothing was registered".into(),
            code: 130,
        }
        .into()),
    }
}

fn report_image(image: &Image, verb: &str) {
    eprintln!(
        "image {} {verb} ({}, {}){}",
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
}
