//! `vm.ports`: the guest's listeners from the agent's `/ports`, each TCP one
//! probed from the host — TLS first (so a TLS service that answers plain
//! text with an HTTP error is not taken for HTTP), then HTTP — and shown at
//! `<name>.vm`. Dual-stack binds (`0.0.0.0` and `::`) show once.

use std::collections::HashSet;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use banger_guest::agent::{AGENT_VSOCK_PORT, AgentClient, Listener, Proto};
use banger_model::publish::PortForward;
use banger_model::vm::VmState;
use banger_rpc::response::{PortRow, PortsResult};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::daemon::Daemon;
use crate::errors::{Doing, Hint, ServiceError};
use crate::vm::resolve;

/// Bound on each probe.
const PROBE_TIMEOUT: Duration = Duration::from_millis(800);

pub async fn ports(daemon: &Daemon, reference: &str) -> Result<PortsResult, ServiceError> {
    let vm = resolve(daemon, reference)?;
    if vm.state != VmState::Running {
        return Err(
            ServiceError::precondition(format!("VM {} is {}", vm.name, vm.state))
                .with_hint(format!("start it with `banger vm start {}`", vm.name)),
        );
    }
    let ip = vm.network.ip;
    let listeners = AgentClient::hybrid_vsock(vm.paths().vsock_socket(), AGENT_VSOCK_PORT)
        .with_step_timeout(Duration::from_secs(3))
        .ports()
        .await
        .unavailable("the guest agent did not answer")
        .hint(format!("`banger vm health {}` checks the agent", vm.name))?;
    let host = vm.dns_name();
    let rows =
        futures::future::join_all(listeners.iter().map(|listener| row(listener, ip, &host))).await;
    let mut seen = HashSet::new();
    let mut ports: Vec<PortRow> = rows
        .into_iter()
        .filter(|row| seen.insert((row.proto.clone(), row.endpoint.clone())))
        .collect();
    add_published(&mut ports, &vm.ports);
    ports.sort_by(|a, b| (a.port, &a.proto).cmp(&(b.port, &b.proto)));
    Ok(PortsResult {
        name: vm.name.to_string(),
        ip: Some(ip.to_string()),
        ports,
    })
}

async fn row(listener: &Listener, ip: Ipv4Addr, host: &str) -> PortRow {
    let port = listener.port;
    let guest_only = listener.address.is_loopback();
    let (proto, endpoint) = match listener.proto {
        Proto::Udp if guest_only => ("udp", format!("udp localhost:{port} (guest only)")),
        Proto::Udp => ("udp", format!("udp {host}:{port}")),
        Proto::Tcp if guest_only => ("tcp", format!("tcp localhost:{port} (guest only)")),
        Proto::Tcp if !reachable(listener.address, ip) => (
            "tcp",
            format!("tcp {}:{port} (guest only)", listener.address),
        ),
        Proto::Tcp => {
            let target = SocketAddr::from((ip, port));
            if speaks_tls(target).await {
                ("https", format!("https://{host}:{port}"))
            } else if speaks_http(target, host).await {
                ("http", format!("http://{host}:{port}"))
            } else {
                ("tcp", format!("tcp {host}:{port}"))
            }
        }
    };
    let address = endpoint.replace(host, &ip.to_string());
    PortRow {
        proto: proto.to_owned(),
        endpoint,
        address,
        port,
        process: listener.process.clone(),
        command: listener.command.clone(),
        published: Vec::new(),
    }
}

/// Adds each published port to the TCP row of its guest port, or as a row
/// of its own when nothing listens there (yet).
fn add_published(ports: &mut Vec<PortRow>, published: &[PortForward]) {
    for forward in published {
        let host = match forward.host_addr {
            IpAddr::V4(addr) => format!("{addr}:{}", forward.host_port),
            IpAddr::V6(addr) => format!("[{addr}]:{}", forward.host_port),
        };
        match ports
            .iter_mut()
            .find(|row| row.port == forward.guest_port && row.proto != "udp")
        {
            Some(row) => row.published.push(host),
            None => ports.push(PortRow {
                proto: "tcp".into(),
                endpoint: format!("nothing listens on {} yet", forward.guest_port),
                port: forward.guest_port,
                process: None,
                command: None,
                published: vec![host],
                address: String::new(),
            }),
        }
    }
}

/// Bound to every address, or to the guest's own.
fn reachable(bound: IpAddr, guest: Ipv4Addr) -> bool {
    bound.is_unspecified() || bound == IpAddr::V4(guest)
}

/// The server answered a ClientHello with a TLS record (handshake or alert).
async fn speaks_tls(target: SocketAddr) -> bool {
    let probe = async {
        let mut stream = tokio::net::TcpStream::connect(target).await.ok()?;
        stream.write_all(&client_hello()).await.ok()?;
        let mut head = [0u8; 2];
        stream.read_exact(&mut head).await.ok()?;
        Some(matches!(head, [0x15 | 0x16, 0x03]))
    };
    tokio::time::timeout(PROBE_TIMEOUT, probe)
        .await
        .ok()
        .flatten()
        .unwrap_or(false)
}

/// The server answered a request with an HTTP status line.
async fn speaks_http(target: SocketAddr, host: &str) -> bool {
    let probe = async {
        let mut stream = tokio::net::TcpStream::connect(target).await.ok()?;
        let request = format!("HEAD / HTTP/1.0\r\nHost: {host}\r\nUser-Agent: banger\r\n\r\n");
        stream.write_all(request.as_bytes()).await.ok()?;
        let mut head = [0u8; 5];
        stream.read_exact(&mut head).await.ok()?;
        Some(&head == b"HTTP/")
    };
    tokio::time::timeout(PROBE_TIMEOUT, probe)
        .await
        .ok()
        .flatten()
        .unwrap_or(false)
}

/// A minimal TLS ClientHello offering TLS 1.3 and 1.2 with common suites;
/// enough for any TLS server to answer with a handshake record or an alert.
fn client_hello() -> Vec<u8> {
    let mut hello = vec![0x03, 0x03];
    hello.extend((0u8..32).map(|i| i.wrapping_mul(37).wrapping_add(11)));
    hello.push(0); // no session id
    let suites: [u16; 13] = [
        0x1301, 0x1302, 0x1303, 0xc02b, 0xc02f, 0xc02c, 0xc030, 0xcca9, 0xcca8, 0x009c, 0x009d,
        0x002f, 0x0035,
    ];
    hello.extend(((suites.len() * 2) as u16).to_be_bytes());
    for suite in suites {
        hello.extend(suite.to_be_bytes());
    }
    hello.extend([1, 0]); // compression: null
    let mut extensions = Vec::new();
    let mut extension = |kind: u16, data: &[u8]| {
        extensions.extend(kind.to_be_bytes());
        extensions.extend((data.len() as u16).to_be_bytes());
        extensions.extend(data);
    };
    extension(0x002b, &[4, 0x03, 0x04, 0x03, 0x03]); // supported_versions
    extension(0x000a, &[0, 4, 0x00, 0x1d, 0x00, 0x17]); // supported_groups
    extension(0x000b, &[1, 0]); // ec_point_formats
    extension(
        0x000d,
        &[
            0, 10, 0x04, 0x03, 0x08, 0x04, 0x04, 0x01, 0x05, 0x03, 0x08, 0x05,
        ],
    ); // signature_algorithms
    extension(0x0033, &[0, 0]); // key_share: none (a 1.3 server asks for one)
    hello.extend((extensions.len() as u16).to_be_bytes());
    hello.extend(extensions);
    let mut handshake = vec![0x01];
    handshake.extend(&(hello.len() as u32).to_be_bytes()[1..]);
    handshake.extend(hello);
    let mut record = vec![0x16, 0x03, 0x01];
    record.extend((handshake.len() as u16).to_be_bytes());
    record.extend(handshake);
    record
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn client_hello_lengths_are_consistent() {
        let record = client_hello();
        assert_eq!(&record[..3], &[0x16, 0x03, 0x01]);
        let record_len = u16::from_be_bytes([record[3], record[4]]) as usize;
        assert_eq!(record_len, record.len() - 5);
        let handshake_len = u32::from_be_bytes([0, record[6], record[7], record[8]]) as usize;
        assert_eq!(handshake_len, record.len() - 9);
    }

    #[tokio::test]
    async fn probes_tell_http_from_plain_tcp() {
        let http = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let http_addr = http.local_addr().unwrap();
        tokio::spawn(async move {
            while let Ok((mut stream, _)) = http.accept().await {
                let mut buf = [0u8; 256];
                let _ = stream.read(&mut buf).await;
                let _ = stream.write_all(b"HTTP/1.0 200 OK\r\n\r\n").await;
            }
        });
        let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let silent_addr = silent.local_addr().unwrap();
        tokio::spawn(async move {
            let mut held = Vec::new();
            while let Ok((stream, _)) = silent.accept().await {
                held.push(stream);
            }
        });
        assert!(
            !speaks_tls(http_addr).await,
            "plain HTTP answers are not TLS"
        );
        assert!(speaks_http(http_addr, "x.vm").await);
        assert!(!speaks_tls(silent_addr).await);
        assert!(!speaks_http(silent_addr, "x.vm").await);
    }
}
