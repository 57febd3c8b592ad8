//! `banger vm ports REF`

use std::process::ExitCode;

use banger_model::layout::Layout;
use banger_rpc::Request;
use banger_rpc::request::RefParams;
use banger_rpc::response::PortsResult;

use crate::args::RefJsonArgs;
use crate::daemon_client;
use crate::output::{print_json, print_table, table};

pub(super) async fn run(layout: &Layout, args: &RefJsonArgs) -> anyhow::Result<ExitCode> {
    let mut client = daemon_client::connect(layout).await?;
    let result: PortsResult = client
        .call(&Request::VmPorts(RefParams::new(&args.reference)), |_| {})
        .await?;
    if args.json {
        print_json(&result.ports)?;
        return Ok(ExitCode::SUCCESS);
    }
    if result.ports.is_empty() {
        eprintln!("nothing listens in {}", result.name);
        return Ok(ExitCode::SUCCESS);
    }
    let mut rows = table(&["PROTO", "ENDPOINT", "PROCESS", "COMMAND"]);
    for port in &result.ports {
        rows.add_row(vec![
            port.proto.clone(),
            port.endpoint.clone(),
            port.process.clone().unwrap_or_else(|| "-".into()),
            port.command
                .clone()
                .map(|command| shorten(&command, 60))
                .unwrap_or_else(|| "-".into()),
        ]);
    }
    print_table(&mut rows);
    Ok(ExitCode::SUCCESS)
}

fn shorten(text: &str, max: usize) -> String {
    if text.chars().count() <= max {
        return text.to_owned();
    }
    let mut short: String = text.chars().take(max - 1).collect();
    short.push('…');
    short
}
