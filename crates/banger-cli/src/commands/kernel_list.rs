//! `banger kernel list` and `banger kernel show`

use banger_rpc::{NoParams, method};
use std::process::ExitCode;

use banger_model::kernel::Kernel;
use banger_model::layout::Layout;
use banger_rpc::request::RefParams;
use banger_rpc::response::KernelListResult;

use crate::args::{JsonFlag, RefJsonArgs};
use crate::daemon_client;
use crate::output::{ago, print_json, print_table, table};

pub(super) async fn list(layout: &Layout, args: &JsonFlag) -> anyhow::Result<ExitCode> {
    let mut client = daemon_client::connect(layout).await?;
    let result: KernelListResult = client
        .call::<method::KernelList>(NoParams {}, |_| {})
        .await?;
    if args.json {
        print_json(&result.kernels)?;
        return Ok(ExitCode::SUCCESS);
    }
    if result.kernels.is_empty() {
        eprintln!(
            "no kernels yet; `banger kernel import`, `kernel pull` or `kernel bootstrap` add one"
        );
        return Ok(ExitCode::SUCCESS);
    }
    let mut rows = table(&["NAME", "ID", "VERSION", "INITRD", "CREATED"]);
    for kernel in &result.kernels {
        rows.add_row(vec![
            kernel.name.to_string(),
            kernel.id.short().to_owned(),
            kernel.version.clone().unwrap_or_else(|| "-".into()),
            if kernel.initrd_path.is_some() {
                "yes".into()
            } else {
                "no".into()
            },
            ago(kernel.created_at),
        ]);
    }
    print_table(&mut rows);
    Ok(ExitCode::SUCCESS)
}

pub(super) async fn show(layout: &Layout, args: &RefJsonArgs) -> anyhow::Result<ExitCode> {
    let mut client = daemon_client::connect(layout).await?;
    let kernel: Kernel = client
        .call::<method::KernelShow>(RefParams::new(&args.reference), |_| {})
        .await?;
    if args.json {
        print_json(&kernel)?;
        return Ok(ExitCode::SUCCESS);
    }
    println!("name        {}", kernel.name);
    println!("id          {}", kernel.id);
    println!("version     {}", kernel.version.as_deref().unwrap_or("-"));
    println!("vmlinux     {}", kernel.vmlinux_path.display());
    println!(
        "initrd      {}",
        kernel
            .initrd_path
            .as_ref()
            .map_or("-".into(), |p| p.display().to_string())
    );
    println!(
        "created     {} ({})",
        kernel.created_at,
        ago(kernel.created_at)
    );
    Ok(ExitCode::SUCCESS)
}
