//! `banger vm ports REF`

use banger_rpc::method;
use std::process::ExitCode;

use banger_model::layout::Layout;
use banger_rpc::request::RefParams;
use banger_rpc::response::PortsResult;

use banger_model::publish::PortForward;
use banger_model::vm::{Vm, VmState};
use banger_rpc::request::PortForwardParams;

use crate::args::{PortForwardArgs, RefJsonArgs};
use crate::daemon_client;
use crate::output::{print_json, print_table, table};

pub(super) async fn run(layout: &Layout, args: &RefJsonArgs) -> anyhow::Result<ExitCode> {
    let mut client = daemon_client::connect(layout).await?;
    let result: PortsResult = client
        .call::<method::VmPorts>(RefParams::new(&args.reference), |_| {})
        .await?;
    if args.json {
        print_json(&result.ports)?;
        return Ok(ExitCode::SUCCESS);
    }
    if result.ports.is_empty() {
        eprintln!("nothing listens in {}", result.name);
        return Ok(ExitCode::SUCCESS);
    }
    let host = format!("{}.vm", result.name);
    let by_name = match &result.ip {
        Some(ip) => resolves_to(&host, ip).await,
        None => true,
    };
    if !by_name {
        eprintln!(
            "{host} does not resolve on this host, so endpoints show its address (`banger doctor` checks .vm names; docs/dns-routing.md sets them up)"
        );
    }
    let mut rows = table(&["PROTO", "ENDPOINT", "PUBLISHED", "PROCESS", "COMMAND"]);
    for port in &result.ports {
        let endpoint = if by_name || port.address.is_empty() {
            &port.endpoint
        } else {
            &port.address
        };
        rows.add_row(vec![
            port.proto.clone(),
            endpoint.clone(),
            if port.published.is_empty() {
                "-".into()
            } else {
                port.published.join(", ")
            },
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

/// `banger vm port-forward REF PORTS... [--remove]`
pub(super) async fn port_forward(
    layout: &Layout,
    args: &PortForwardArgs,
) -> anyhow::Result<ExitCode> {
    let (add, remove) = if args.remove {
        (Vec::new(), args.ports.clone())
    } else {
        (args.ports.clone(), Vec::new())
    };
    let mut client = daemon_client::connect(layout).await?;
    let vm: Vm = client
        .call::<method::VmPortForward>(
            PortForwardParams {
                reference: args.reference.clone(),
                add,
                remove,
            },
            |_| {},
        )
        .await?;
    let when = if vm.state == VmState::Running {
        ""
    } else {
        " (from its next start)"
    };
    if vm.ports.is_empty() {
        println!("{} publishes no ports", vm.name);
    }
    for forward in &vm.ports {
        println!("{}{when}", published_line(&vm, forward));
    }
    Ok(ExitCode::SUCCESS)
}

/// `127.0.0.1:8080 → web:80`
pub(super) fn published_line(vm: &Vm, forward: &PortForward) -> String {
    let host = match forward.host_addr {
        std::net::IpAddr::V4(addr) => format!("{addr}:{}", forward.host_port),
        std::net::IpAddr::V6(addr) => format!("[{addr}]:{}", forward.host_port),
    };
    format!("{host} → {}:{}", vm.name, forward.guest_port)
}

/// Whether this host's resolver answers `host` with `ip` (bounded: a
/// resolver that hangs counts as no).
async fn resolves_to(host: &str, ip: &str) -> bool {
    use std::net::ToSocketAddrs;
    let Ok(ip) = ip.parse::<std::net::IpAddr>() else {
        return false;
    };
    let host = host.to_owned();
    let lookup = tokio::task::spawn_blocking(move || {
        (host.as_str(), 0)
            .to_socket_addrs()
            .map(|mut addrs| addrs.any(|addr| addr.ip() == ip))
            .unwrap_or(false)
    });
    matches!(
        tokio::time::timeout(std::time::Duration::from_secs(2), lookup).await,
        Ok(Ok(true))
    )
}

fn shorten(text: &str, max: usize) -> String {
    if text.chars().count() <= max {
        return text.to_owned();
    }
    let mut short: String = text.chars().take(max - 1).collect();
    short.push('…');
    short
}
