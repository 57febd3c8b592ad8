//! The real agent on a unix socket, queried with banger-guest's client.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpListener, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use banger_guest::agent::client::{AgentRequestError, get_json};
use banger_guest::agent::{AgentClient, Health, Listener, Proto};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};

/// A running agent process, killed and reaped on drop.
struct Agent {
    child: Child,
    socket: PathBuf,
    _dir: tempfile::TempDir,
}

impl Agent {
    fn start() -> Agent {
        let dir = tempfile::tempdir().expect("tempdir");
        // A nested path: the agent creates the parent directories itself.
        let socket = dir.path().join("run/banger/vsock/1024.sock");
        let child = Command::new(env!("CARGO_BIN_EXE_banger-vsock-agent"))
            .arg("--listen")
            .arg(format!("unix:{}", socket.display()))
            .stdin(Stdio::null())
            .spawn()
            .expect("spawn banger-vsock-agent");
        let mut agent = Agent {
            child,
            socket,
            _dir: dir,
        };
        agent.wait_until_listening();
        agent
    }

    fn wait_until_listening(&mut self) {
        // Generous: this only bounds a hang, it does not time the agent.
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if std::os::unix::net::UnixStream::connect(&self.socket).is_ok() {
                return;
            }
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                panic!("banger-vsock-agent exited early: {status}");
            }
            assert!(
                Instant::now() < deadline,
                "banger-vsock-agent never listened on {}",
                self.socket.display()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn client(&self) -> AgentClient {
        AgentClient::unix(&self.socket)
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn own_comm() -> String {
    fs_err::read_to_string("/proc/self/comm")
        .expect("read /proc/self/comm")
        .trim_end()
        .to_owned()
}

fn find(listeners: &[Listener], proto: Proto, addr: SocketAddr) -> &Listener {
    listeners
        .iter()
        .find(|l| l.proto == proto && l.address == addr.ip() && l.port == addr.port())
        .unwrap_or_else(|| panic!("{proto} {addr} not in /ports: {listeners:#?}"))
}

#[tokio::test]
async fn ports_lists_this_processs_tcp_and_udp_sockets_v4_and_v6() {
    let agent = Agent::start();
    let tcp4 = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("tcp4");
    let tcp6 = TcpListener::bind((Ipv6Addr::LOCALHOST, 0)).expect("tcp6");
    let udp4 = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).expect("udp4");
    let udp6 = UdpSocket::bind((Ipv6Addr::LOCALHOST, 0)).expect("udp6");
    // A connected UDP socket is a client, not a listener.
    let udp_client = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).expect("udp client");
    udp_client
        .connect(udp4.local_addr().expect("addr"))
        .expect("connect");

    let listeners = agent.client().ports().await.expect("GET /ports");

    let me = std::process::id();
    let comm = own_comm();
    let exe_name = std::env::current_exe()
        .expect("current exe")
        .file_name()
        .expect("exe name")
        .to_string_lossy()
        .into_owned();
    for (proto, addr) in [
        (Proto::Tcp, tcp4.local_addr().expect("addr")),
        (Proto::Tcp, tcp6.local_addr().expect("addr")),
        (Proto::Udp, udp4.local_addr().expect("addr")),
        (Proto::Udp, udp6.local_addr().expect("addr")),
    ] {
        let listener = find(&listeners, proto, addr);
        assert_eq!(listener.pid, Some(me), "{listener:?}");
        assert_eq!(
            listener.process.as_deref(),
            Some(comm.as_str()),
            "{listener:?}"
        );
        let command = listener.command.as_deref().expect("command line");
        assert!(command.contains(&exe_name), "{command:?} lacks {exe_name}");
    }
    let client_addr = udp_client.local_addr().expect("addr");
    assert!(
        !listeners
            .iter()
            .any(|l| l.proto == Proto::Udp && l.port == client_addr.port()),
        "connected UDP socket {client_addr} listed as a listener"
    );
    // The agent's own socket is a unix socket, never in the list; closed
    // sockets disappear.
    let closed = tcp4.local_addr().expect("addr");
    drop(tcp4);
    let listeners = agent.client().ports().await.expect("GET /ports again");
    assert!(
        !listeners.iter().any(|l| l.proto == Proto::Tcp
            && l.address == IpAddr::V4(Ipv4Addr::LOCALHOST)
            && l.port == closed.port()),
        "closed listener {closed} still listed"
    );
}

#[tokio::test]
async fn healthz_reports_the_version() {
    let agent = Agent::start();
    let health = agent.client().health().await.expect("GET /healthz");
    assert_eq!(health, Health::ok(env!("CARGO_PKG_VERSION")));
}

#[tokio::test]
async fn unknown_paths_are_404() {
    let agent = Agent::start();
    let stream = UnixStream::connect(&agent.socket).await.expect("connect");
    let err = get_json::<serde_json::Value, _>(stream, "/nope")
        .await
        .expect_err("404");
    assert!(
        matches!(err, AgentRequestError::Status { status: 404, .. }),
        "{err:?}"
    );
}

/// A stand-in for Firecracker's hybrid vsock socket: answers `CONNECT 1024`
/// with `OK`, then splices the connection to the agent's unix socket, as
/// banger-simvm does.
async fn fake_vmm(uds: &Path, agent_socket: PathBuf) -> tokio::task::JoinHandle<String> {
    let listener = UnixListener::bind(uds).expect("bind fake vmm");
    tokio::spawn(async move {
        let (stream, _) = listener.accept().await.expect("accept");
        let mut reader = BufReader::new(stream);
        let mut line = String::new();
        reader.read_line(&mut line).await.expect("CONNECT line");
        reader
            .get_mut()
            .write_all(b"OK 1073741824\n")
            .await
            .expect("OK");
        let mut guest = UnixStream::connect(agent_socket).await.expect("agent");
        let _ = tokio::io::copy_bidirectional(&mut reader, &mut guest).await;
        line
    })
}

#[tokio::test]
async fn client_reaches_the_agent_through_a_hybrid_vsock_socket() {
    let agent = Agent::start();
    let dir = tempfile::tempdir().expect("tempdir");
    let uds = dir.path().join("vsock.sock");
    let vmm = fake_vmm(&uds, agent.socket.clone()).await;
    let health = AgentClient::hybrid_vsock(&uds, 1024)
        .health()
        .await
        .expect("health through hybrid vsock");
    assert!(health.is_ok());
    assert_eq!(vmm.await.expect("vmm task"), "CONNECT 1024\n");
}
