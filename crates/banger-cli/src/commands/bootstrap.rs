//! `banger image bootstrap` and `banger kernel bootstrap`: an image or a
//! kernel built here from the distribution's own packages.

use banger_rpc::{Method, method};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use banger_model::image::{Image, ImageSource};
use banger_model::kernel::Kernel;
use banger_model::layout::Layout;
use banger_rpc::request::{ImageBootstrapParams, KernelBootstrapParams};

use crate::args::{ImageBootstrapArgs, KernelBootstrapArgs};
use crate::daemon_client;
use crate::output::ExitError;
use crate::progress::Progress;

pub(super) async fn image(layout: &Layout, args: &ImageBootstrapArgs) -> anyhow::Result<ExitCode> {
    let params = ImageBootstrapParams {
        distro: args.distro.clone(),
        name: args.name.clone(),
        profile: Some(args.profile),
        packages: args.packages.clone(),
        mirror: args.mirror.clone(),
        kernel_ref: args.kernel_ref.clone(),
    };
    let started = Instant::now();
    let image = bootstrap_image(layout, params).await?;
    eprintln!("{}", bootstrapped_line(&image, started.elapsed()));
    if image.kernel_id.is_none() {
        eprintln!(
            "note: no kernel attached; Firecracker VMs need one: `banger kernel bootstrap`, then bootstrap the image again with --kernel-ref (sim VMs need none)"
        );
    }
    Ok(ExitCode::SUCCESS)
}

pub(super) async fn kernel(
    layout: &Layout,
    args: &KernelBootstrapArgs,
) -> anyhow::Result<ExitCode> {
    let params = KernelBootstrapParams {
        distro: args.distro.clone(),
        name: args.name.clone(),
    };
    let started = Instant::now();
    let kernel = bootstrap_kernel(layout, params).await?;
    eprintln!(
        "kernel {} bootstrapped in {} ({}{}, with initrd)",
        kernel.name,
        elapsed(started.elapsed()),
        kernel.id.short(),
        kernel
            .version
            .as_deref()
            .map(|version| format!(", Linux {version}"))
            .unwrap_or_default(),
    );
    Ok(ExitCode::SUCCESS)
}

/// `image debian-bookworm (developer profile) bootstrapped from
/// debian:bookworm in 6 min 02 s: 1.4 GiB installed (id, rootfs.ext4
/// 5.6 GiB sparse), now the default image`.
pub(crate) fn bootstrapped_line(image: &Image, took: Duration) -> String {
    let (distro, profile, installed) = match &image.source {
        ImageSource::Bootstrap {
            distro,
            profile,
            installed_size,
            ..
        } => (distro.as_str(), profile.as_str(), *installed_size),
        _ => ("packages", "unknown", None),
    };
    format!(
        "image {} ({profile} profile) bootstrapped from {distro} in {}: {} installed ({}, rootfs.ext4 {} sparse){}",
        image.name,
        elapsed(took),
        installed.map_or_else(|| "?".to_owned(), |size| size.human()),
        image.id.short(),
        image.rootfs_size.human(),
        if image.is_default {
            ", now the default image"
        } else {
            ""
        }
    )
}

/// `image.bootstrap` with live stages; Ctrl-C cancels (the daemon rolls back).
pub(crate) async fn bootstrap_image(
    layout: &Layout,
    params: ImageBootstrapParams,
) -> anyhow::Result<Image> {
    let what = format!("bootstrapping {}", params.distro);
    call_with_progress::<method::ImageBootstrap>(layout, params, &what).await
}

/// `kernel.bootstrap` with live stages; Ctrl-C cancels.
pub(crate) async fn bootstrap_kernel(
    layout: &Layout,
    params: KernelBootstrapParams,
) -> anyhow::Result<Kernel> {
    let what = format!("bootstrapping the {} kernel", params.distro);
    call_with_progress::<method::KernelBootstrap>(layout, params, &what).await
}

async fn call_with_progress<M: Method>(
    layout: &Layout,
    params: M::Params,
    what: &str,
) -> anyhow::Result<M::Result> {
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
        None => {
            // Closing the connection cancels the request; the daemon stops
            // debootstrap/apt and removes what it had built.
            drop(client);
            Err(ExitError {
                message: format!("{what} was cancelled; nothing was registered"),
                code: 130,
            }
            .into())
        }
    }
}

/// `42 s`, `3 min 05 s`.
pub(crate) fn elapsed(duration: Duration) -> String {
    let seconds = duration.as_secs();
    if seconds < 60 {
        format!("{:.1} s", duration.as_secs_f64())
    } else {
        format!("{} min {:02} s", seconds / 60, seconds % 60)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(elapsed(Duration::from_millis(4200)), "4.2 s");
        assert_eq!(elapsed(Duration::from_secs(185)), "3 min 05 s");
    }
}
