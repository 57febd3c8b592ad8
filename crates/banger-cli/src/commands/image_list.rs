//! `banger image list` and `banger image show`

use banger_rpc::{NoParams, method};
use std::process::ExitCode;

use banger_model::image::{Image, ImageSource};
use banger_model::layout::Layout;
use banger_rpc::request::RefParams;
use banger_rpc::response::ImageListResult;

use crate::args::{JsonFlag, RefJsonArgs};
use crate::daemon_client;
use crate::output::{ago, print_json, print_table, table};

pub(super) async fn list(layout: &Layout, args: &JsonFlag) -> anyhow::Result<ExitCode> {
    let mut client = daemon_client::connect(layout).await?;
    let result: ImageListResult = client
        .call::<method::ImageList>(NoParams {}, |_| {})
        .await?;
    if args.json {
        print_json(&result.images)?;
        return Ok(ExitCode::SUCCESS);
    }
    if result.images.is_empty() {
        eprintln!(
            "no images yet; `banger image pull`, `image import` or `image bootstrap` make one"
        );
        return Ok(ExitCode::SUCCESS);
    }
    let mut rows = table(&[
        "NAME", "ID", "DEFAULT", "KERNEL", "SOURCE", "SIZE", "CREATED",
    ]);
    for image in &result.images {
        rows.add_row(vec![
            image.name.to_string(),
            image.id.short().to_owned(),
            if image.is_default {
                "*".into()
            } else {
                String::new()
            },
            image.kernel_name.clone().unwrap_or_else(|| "-".into()),
            image.source.kind().to_owned(),
            image.rootfs_size.human(),
            ago(image.created_at),
        ]);
    }
    print_table(&mut rows);
    Ok(ExitCode::SUCCESS)
}

pub(super) async fn show(layout: &Layout, args: &RefJsonArgs) -> anyhow::Result<ExitCode> {
    let mut client = daemon_client::connect(layout).await?;
    let image: Image = client
        .call::<method::ImageShow>(RefParams::new(&args.reference), |_| {})
        .await?;
    if args.json {
        print_json(&image)?;
        return Ok(ExitCode::SUCCESS);
    }
    println!("name        {}", image.name);
    println!("id          {}", image.id);
    println!(
        "default     {}",
        if image.is_default { "yes" } else { "no" }
    );
    println!(
        "kernel      {}",
        image.kernel_name.as_deref().unwrap_or("-")
    );
    println!(
        "rootfs      {} ({})",
        image.rootfs_path.display(),
        image.rootfs_size.human()
    );
    if let Some(seed) = &image.work_seed_path {
        println!("work seed   {}", seed.display());
    }
    match &image.source {
        ImageSource::Import { path } => println!("source      import of {}", path.display()),
        ImageSource::Register => println!("source      registered files"),
        ImageSource::Pull {
            reference,
            manifest_digest,
            layer_digests,
        } => {
            println!("source      pull of {reference}");
            println!("manifest    {manifest_digest}");
            for digest in layer_digests {
                println!("layer       {digest}");
            }
        }
        ImageSource::Catalog { name, sha256 } => {
            println!("source      catalog {name} (sha256 {sha256})")
        }
        ImageSource::Bootstrap {
            distro,
            mirror,
            profile,
            extra_packages,
            installed_size,
        } => {
            println!("source      bootstrap of {distro} from {mirror}");
            println!("profile     {profile}");
            if !extra_packages.is_empty() {
                println!("packages    + {}", extra_packages.join(", "));
            }
            if let Some(size) = installed_size {
                println!("installed   {}", size.human());
            }
        }
    }
    println!(
        "created     {} ({})",
        image.created_at,
        ago(image.created_at)
    );
    Ok(ExitCode::SUCCESS)
}
