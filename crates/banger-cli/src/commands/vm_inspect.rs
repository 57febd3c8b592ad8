//! `banger vm logs|stats|health`

use std::io::{Read, Seek, SeekFrom, Write};
use std::path::Path;
use std::process::ExitCode;
use std::time::Duration;

use banger_model::layout::Layout;
use banger_model::vm::Vm;
use banger_rpc::Request;
use banger_rpc::request::RefParams;
use banger_rpc::response::{VmHealth, VmStats};

use crate::args::{RefJsonArgs, VmLogsArgs};
use crate::daemon_client;
use crate::output::print_json;

pub(super) async fn logs(layout: &Layout, args: &VmLogsArgs) -> anyhow::Result<ExitCode> {
    let mut client = daemon_client::connect(layout).await?;
    let vm: Vm = client
        .call(&Request::VmShow(RefParams::new(&args.reference)), |_| {})
        .await?;
    drop(client);
    let paths = vm.paths();
    let files = [
        ("console", paths.console_log()),
        ("vmm log", paths.vmm_log()),
    ];
    let mut offsets = [0u64; 2];
    for (index, (label, path)) in files.iter().enumerate() {
        eprintln!("==> {label}: {} <==", path.display());
        offsets[index] = copy_from(path, 0)?;
    }
    if !args.follow {
        return Ok(ExitCode::SUCCESS);
    }
    loop {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => return Ok(ExitCode::SUCCESS),
            () = tokio::time::sleep(Duration::from_millis(200)) => {}
        }
        for (index, (_, path)) in files.iter().enumerate() {
            offsets[index] = copy_from(path, offsets[index])?;
        }
    }
}

/// Copies `path` from `offset` to stdout; returns the new offset. A missing
/// file is empty; a truncated one starts over.
fn copy_from(path: &Path, offset: u64) -> anyhow::Result<u64> {
    let mut file = match std::fs::File::open(path) {
        Ok(file) => file,
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => return Ok(0),
        Err(err) => return Err(anyhow::anyhow!("reading {}: {err}", path.display())),
    };
    let len = file.metadata()?.len();
    let start = if len < offset { 0 } else { offset };
    file.seek(SeekFrom::Start(start))?;
    let mut bytes = Vec::new();
    file.read_to_end(&mut bytes)?;
    let mut stdout = std::io::stdout().lock();
    stdout.write_all(&bytes)?;
    stdout.flush()?;
    Ok(start + bytes.len() as u64)
}

pub(super) async fn stats(layout: &Layout, args: &RefJsonArgs) -> anyhow::Result<ExitCode> {
    let mut client = daemon_client::connect(layout).await?;
    let stats: VmStats = client
        .call(&Request::VmStats(RefParams::new(&args.reference)), |_| {})
        .await?;
    if args.json {
        print_json(&stats)?;
        return Ok(ExitCode::SUCCESS);
    }
    println!("vm          {}", stats.name);
    println!("vmm pid     {}", stats.pid);
    println!("cpu         {:.1}%", stats.cpu_percent);
    println!(
        "memory      {} (rss)",
        banger_model::ByteSize(stats.rss_bytes).human()
    );
    println!("threads     {}", stats.threads);
    println!("uptime      {}s", stats.uptime_seconds);
    println!("disks       {}", super::vm_list::disks_line(&stats.disks));
    Ok(ExitCode::SUCCESS)
}

pub(super) async fn health(layout: &Layout, args: &RefJsonArgs) -> anyhow::Result<ExitCode> {
    let mut client = daemon_client::connect(layout).await?;
    let health: VmHealth = client
        .call(&Request::VmHealth(RefParams::new(&args.reference)), |_| {})
        .await?;
    if args.json {
        print_json(&health)?;
    } else if health.agent_ok {
        println!(
            "{}: healthy (agent {})",
            health.name,
            health.agent_version.as_deref().unwrap_or("?")
        );
    } else {
        println!(
            "{}: unhealthy: {}",
            health.name,
            health.agent_error.as_deref().unwrap_or("no answer")
        );
    }
    Ok(if health.agent_ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}
