//! `banger daemon start|stop|status`

use banger_rpc::{NoParams, method};
use std::process::ExitCode;

use banger_model::layout::Layout;
use banger_rpc::response::StatusResult;

use crate::args::JsonFlag;
use crate::daemon_client;
use crate::output::print_json;

/// Exit code of `daemon status` when no daemon runs (like `systemctl status`).
const EXIT_NOT_RUNNING: u8 = 3;

pub(super) async fn start(layout: &Layout) -> anyhow::Result<ExitCode> {
    let mut client = daemon_client::connect(layout).await?;
    let status: StatusResult = client.call::<method::Status>(NoParams {}, |_| {}).await?;
    eprintln!(
        "bangerd is running (pid {}, build {})",
        status.pid,
        status.build.summary()
    );
    Ok(ExitCode::SUCCESS)
}

pub(super) async fn stop(layout: &Layout) -> anyhow::Result<ExitCode> {
    if daemon_client::stop(layout).await? {
        eprintln!("bangerd stopped; running VMs keep running and are re-adopted at next start");
    } else {
        eprintln!("bangerd is not running");
    }
    Ok(ExitCode::SUCCESS)
}

pub(super) async fn status(layout: &Layout, args: &JsonFlag) -> anyhow::Result<ExitCode> {
    let Some(mut client) = daemon_client::connect_existing(layout).await? else {
        if args.json {
            print_json(&serde_json::json!({ "running": false, "socket": layout.socket() }))?;
        } else {
            println!(
                "bangerd is not running (socket {})",
                layout.socket().display()
            );
        }
        return Ok(ExitCode::from(EXIT_NOT_RUNNING));
    };
    let status: StatusResult = client.call::<method::Status>(NoParams {}, |_| {}).await?;
    if args.json {
        let mut value = serde_json::to_value(&status)?;
        value["running"] = serde_json::Value::Bool(true);
        print_json(&value)?;
        return Ok(ExitCode::SUCCESS);
    }
    let own = banger_buildinfo::BuildInfo::current();
    println!("bangerd     running (pid {})", status.pid);
    println!("version     {}", status.build.summary());
    if status.build.build_id != own.build_id {
        println!(
            "            (differs from this CLI, {}; it restarts on the next command)",
            own.summary()
        );
    }
    println!("started     {}", status.started_at);
    println!("socket      {}", status.socket.display());
    println!(
        "log         {} (level {})",
        status.log_path.display(),
        status.log_level
    );
    println!("state       {}", status.state_dir.display());
    println!("config      {}", status.config_path.display());
    let dns = if status.dns_listeners.is_empty() {
        "not serving".to_owned()
    } else {
        status.dns_listeners.join(", ")
    };
    println!("dns         {dns}");
    println!(
        "network     {} {} ({})",
        status.network.bridge, status.network.subnet, status.network.via
    );
    println!(
        "vms         {} running, {} total",
        status.vms_running, status.vms_total
    );
    Ok(ExitCode::SUCCESS)
}
