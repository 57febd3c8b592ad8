//! Firecracker's hybrid vsock, host-initiated side: simvm listens on the
//! configured `uds_path`; a client writes `CONNECT <port>\n`, gets
//! `OK <host-port>\n`, then a byte stream to the guest's listener on that
//! port. A request that does not parse, or a port nobody listens on, gets
//! the connection closed, as Firecracker does. Where the stream goes is the
//! guest's [`VsockUpstream`]:
//!
//! - the namespace engine: the listener for port P is the unix socket
//!   `/run/banger/vsock/<P>.sock` inside the guest;
//! - the qemu engine: vhost-device-vsock's own hybrid socket, which
//!   reaches the guest over virtio-vsock. vhost-device-vsock 0.3.0 is
//!   fragile in two ways simvm shields it from: a host connection that
//!   arrives while QEMU is still setting up its rings can end its worker
//!   thread (the device then never answers again), so simvm connects only
//!   once the guest's driver has started the device
//!   ([`VsockUpstream::NotReady`] before); and it panics when the `OK` it
//!   writes meets a closed socket, so simvm finishes every handshake it
//!   starts, even for a client that gave up.

use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use banger_firecracker::api::Vsock;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::controller::{Guest, VsockUpstream};

/// Where, inside the guest, the listener for vsock port P lives, as
/// `<P>.sock` (banger-guest's contract with the agent).
pub use banger_guest::agent::SIM_VSOCK_DIR as GUEST_VSOCK_DIR;
/// Firecracker waits this long for the guest to accept a connection.
const CONNECT_TIMEOUT: Duration = Duration::from_millis(2000);
/// How long a client may take to send its `CONNECT` line.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// Longest `CONNECT` line Firecracker reads.
const MAX_REQUEST_LEN: usize = 32;
/// Shortest valid request, `connect 0\n`.
const MIN_REQUEST_LEN: usize = 10;
/// How long simvm waits for an upstream hybrid socket to answer `CONNECT`
/// (the guest may still be booting; see the module docs for why this is
/// not the client's patience).
const UPSTREAM_ANSWER_TIMEOUT: Duration = Duration::from_secs(120);

/// A configured vsock device: the listening socket and its accept loop.
#[derive(Debug)]
pub struct VsockDevice {
    config: Vsock,
    path: PathBuf,
    task: JoinHandle<()>,
}

impl VsockDevice {
    /// Binds `config.uds_path` (which must not exist) and starts accepting.
    pub fn bind(config: Vsock, guest: watch::Receiver<Option<Arc<dyn Guest>>>) -> io::Result<Self> {
        let path = PathBuf::from(&config.uds_path);
        let listener = std::os::unix::net::UnixListener::bind(&path)?;
        listener.set_nonblocking(true)?;
        let listener = UnixListener::from_std(listener)?;
        let task = tokio::spawn(accept_loop(listener, guest));
        Ok(Self { config, path, task })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn config(&self) -> &Vsock {
        &self.config
    }

    /// Stops accepting and removes the socket file (Firecracker does this
    /// when the device is replaced).
    pub fn remove(self) -> io::Result<()> {
        self.task.abort();
        fs_err::remove_file(&self.path)
    }
}

impl Drop for VsockDevice {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn accept_loop(listener: UnixListener, guest: watch::Receiver<Option<Arc<dyn Guest>>>) {
    let ports = Arc::new(HostPorts::default());
    loop {
        match listener.accept().await {
            Ok((stream, _)) => {
                let guest = guest.borrow().clone();
                let ports = ports.clone();
                tokio::spawn(async move {
                    if let Err(error) = proxy(stream, guest, &ports).await {
                        tracing::debug!(%error, "vsock connection closed");
                    }
                });
            }
            Err(error) => {
                tracing::warn!(%error, "vsock accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

/// Host-side port numbers handed out in `OK <port>`, like Firecracker's:
/// counting up from 2^30 and staying below 2^31.
#[derive(Debug)]
struct HostPorts(AtomicU32);

impl Default for HostPorts {
    fn default() -> Self {
        Self(AtomicU32::new((1 << 30) - 1))
    }
}

impl HostPorts {
    fn next(&self) -> u32 {
        let next = |last: u32| (last.wrapping_add(1) & !(1 << 31)) | (1 << 30);
        let previous = self
            .0
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |last| {
                Some(next(last))
            })
            .unwrap_or_else(|last| last);
        next(previous)
    }
}

#[derive(Debug, thiserror::Error)]
enum ProxyError {
    #[error("reading the connect request failed")]
    Read(#[source] io::Error),
    #[error("the client sent no connect request in time")]
    RequestTimeout,
    #[error("invalid connect request {0:?}")]
    BadRequest(String),
    #[error("the guest is not running")]
    NoGuest,
    #[error("the guest's vsock device is not ready yet")]
    NotReady,
    #[error("the vsock device refused port {port}: {answer:?}")]
    Refused { port: u32, answer: String },
    #[error("nothing listens on guest vsock port {port}")]
    NoListener {
        port: u32,
        #[source]
        source: io::Error,
    },
    #[error("proxying vsock port {port} failed")]
    Copy {
        port: u32,
        #[source]
        source: io::Error,
    },
}

/// Reads `CONNECT <port>\n` the way Firecracker does: ten bytes, then one
/// at a time until a newline or 32 bytes.
async fn read_request(stream: &mut UnixStream) -> Result<u32, ProxyError> {
    let mut buf = [0u8; MAX_REQUEST_LEN];
    stream
        .read_exact(&mut buf[..MIN_REQUEST_LEN])
        .await
        .map_err(ProxyError::Read)?;
    let mut len = MIN_REQUEST_LEN;
    while buf[len - 1] != b'\n' && len < buf.len() {
        stream
            .read_exact(&mut buf[len..=len])
            .await
            .map_err(ProxyError::Read)?;
        len += 1;
    }
    let text = String::from_utf8_lossy(&buf[..len]).into_owned();
    parse_request(&text).ok_or(ProxyError::BadRequest(text))
}

fn parse_request(text: &str) -> Option<u32> {
    let mut words = text.split_whitespace();
    let verb = words.next()?;
    if !verb.eq_ignore_ascii_case("connect") {
        return None;
    }
    words.next()?.parse().ok()
}

async fn proxy(
    mut client: UnixStream,
    guest: Option<Arc<dyn Guest>>,
    ports: &HostPorts,
) -> Result<(), ProxyError> {
    let port = tokio::time::timeout(REQUEST_TIMEOUT, read_request(&mut client))
        .await
        .map_err(|_| ProxyError::RequestTimeout)??;
    let guest = guest.ok_or(ProxyError::NoGuest)?;
    let mut upstream = match guest.vsock_upstream() {
        VsockUpstream::Dir(dir) => {
            let target = dir.join(format!("{port}.sock"));
            tokio::time::timeout(CONNECT_TIMEOUT, UnixStream::connect(&target))
                .await
                .unwrap_or_else(|_| Err(io::Error::from(io::ErrorKind::TimedOut)))
                .map_err(|source| ProxyError::NoListener { port, source })?
        }
        VsockUpstream::Hybrid(socket) => hybrid_connect(&socket, port).await?,
        VsockUpstream::NotReady => return Err(ProxyError::NotReady),
    };
    let host_port = ports.next();
    client
        .write_all(format!("OK {host_port}\n").as_bytes())
        .await
        .map_err(|source| ProxyError::Copy { port, source })?;
    tracing::debug!(port, host_port, "vsock connection established");
    tokio::io::copy_bidirectional(&mut client, &mut upstream)
        .await
        .map_err(|source| ProxyError::Copy { port, source })?;
    Ok(())
}

/// `CONNECT port` on another hybrid socket; returns the stream once it
/// answered `OK`. Waits for the answer however long the client waits.
async fn hybrid_connect(socket: &Path, port: u32) -> Result<UnixStream, ProxyError> {
    let mut stream = UnixStream::connect(socket)
        .await
        .map_err(|source| ProxyError::NoListener { port, source })?;
    stream
        .write_all(format!("CONNECT {port}\n").as_bytes())
        .await
        .map_err(|source| ProxyError::NoListener { port, source })?;
    let answer = tokio::time::timeout(UPSTREAM_ANSWER_TIMEOUT, read_line(&mut stream))
        .await
        .unwrap_or_else(|_| Err(io::Error::from(io::ErrorKind::TimedOut)))
        .map_err(|source| ProxyError::NoListener { port, source })?;
    if !answer.starts_with("OK ") {
        return Err(ProxyError::Refused { port, answer });
    }
    Ok(stream)
}

/// Reads one `\n`-terminated line byte by byte (nothing after it is
/// consumed) and returns it without the newline.
async fn read_line(stream: &mut UnixStream) -> io::Result<String> {
    let mut line = Vec::new();
    loop {
        let mut byte = [0u8; 1];
        if stream.read(&mut byte).await? == 0 {
            return Err(io::Error::from(io::ErrorKind::UnexpectedEof));
        }
        if byte[0] == b'\n' {
            return Ok(String::from_utf8_lossy(&line).into_owned());
        }
        line.push(byte[0]);
        if line.len() > MAX_REQUEST_LEN {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "answer too long",
            ));
        }
    }
}

#[cfg(test)]
mod tests {
    use tokio::io::{AsyncBufReadExt, BufReader};

    use super::*;

    #[derive(Debug)]
    struct DirGuest(PathBuf);

    impl Guest for DirGuest {
        fn vsock_upstream(&self) -> VsockUpstream {
            VsockUpstream::Dir(self.0.clone())
        }
        fn ctrl_alt_del(&self) -> Result<(), String> {
            Ok(())
        }
        fn pause(&self) -> Result<(), String> {
            Ok(())
        }
        fn resume(&self) -> Result<(), String> {
            Ok(())
        }
        fn exited(&self) -> watch::Receiver<bool> {
            watch::channel(false).1
        }
    }

    #[test]
    fn request_parsing() {
        assert_eq!(parse_request("CONNECT 1024\n"), Some(1024));
        assert_eq!(parse_request("connect 52\n"), Some(52));
        assert_eq!(parse_request("CONNECT\n"), None);
        assert_eq!(parse_request("CONNECT -1\n"), None);
        assert_eq!(parse_request("HELLO 1024\n"), None);
    }

    #[test]
    fn host_ports_count_from_two_to_the_thirty() {
        let ports = HostPorts::default();
        assert_eq!(ports.next(), 1 << 30);
        assert_eq!(ports.next(), (1 << 30) + 1);
        let wrapped = HostPorts(AtomicU32::new(u32::MAX >> 1));
        assert_eq!(wrapped.next(), 1 << 30);
    }

    async fn exchange(path: &Path, request: &[u8]) -> (String, UnixStream) {
        let mut stream = UnixStream::connect(path).await.unwrap();
        stream.write_all(request).await.unwrap();
        let mut reader = BufReader::new(stream);
        let mut line = String::new();
        reader.read_line(&mut line).await.unwrap();
        (line, reader.into_inner())
    }

    #[tokio::test]
    async fn proxies_to_the_guest_listener() {
        let dir = tempfile::tempdir().unwrap();
        let guest_dir = dir.path().join("guest");
        fs_err::create_dir(&guest_dir).unwrap();
        let echo = UnixListener::bind(guest_dir.join("1024.sock")).unwrap();
        tokio::spawn(async move {
            while let Ok((mut s, _)) = echo.accept().await {
                tokio::spawn(async move {
                    let (mut r, mut w) = s.split();
                    let _ = tokio::io::copy(&mut r, &mut w).await;
                });
            }
        });
        let guest: Arc<dyn Guest> = Arc::new(DirGuest(guest_dir));
        let (slot, rx) = watch::channel(None);
        let config = Vsock {
            vsock_id: None,
            guest_cid: 3,
            uds_path: dir.path().join("v.sock").display().to_string(),
        };
        let device = VsockDevice::bind(config, rx).unwrap();
        let path = device.path().to_owned();

        // Before boot there is nobody to talk to.
        let (line, _) = exchange(&path, b"CONNECT 1024\n").await;
        assert_eq!(line, "", "closed without an answer");

        slot.send_replace(Some(guest));
        let (line, mut stream) = exchange(&path, b"CONNECT 1024\n").await;
        assert_eq!(line, format!("OK {}\n", 1u32 << 30));
        stream.write_all(b"ping\n").await.unwrap();
        let mut buf = [0u8; 5];
        stream.read_exact(&mut buf).await.unwrap();
        assert_eq!(&buf, b"ping\n");

        let (line, _) = exchange(&path, b"CONNECT 9999\n").await;
        assert_eq!(line, "", "unknown port: closed");
        let (line, _) = exchange(&path, b"GARBAGE 1024\n").await;
        assert_eq!(line, "", "bad request: closed");

        device.remove().unwrap();
        assert!(!path.exists());
    }

    #[derive(Debug)]
    struct HybridGuest(PathBuf);

    impl Guest for HybridGuest {
        fn vsock_upstream(&self) -> VsockUpstream {
            VsockUpstream::Hybrid(self.0.clone())
        }
        fn ctrl_alt_del(&self) -> Result<(), String> {
            Ok(())
        }
        fn pause(&self) -> Result<(), String> {
            Ok(())
        }
        fn resume(&self) -> Result<(), String> {
            Ok(())
        }
        fn exited(&self) -> watch::Receiver<bool> {
            watch::channel(false).1
        }
    }

    /// A slow upstream hybrid socket (like vhost-device-vsock with an
    /// emulated guest): its `OK` reaches an open socket even when the
    /// client gave up first, and a patient client gets simvm's `OK` and the
    /// stream.
    #[tokio::test]
    async fn hybrid_upstream_handshakes_are_finished_even_for_clients_that_left() {
        let dir = tempfile::tempdir().unwrap();
        let upstream = UnixListener::bind(dir.path().join("device.sock")).unwrap();
        let (results_tx, mut results) = tokio::sync::mpsc::unbounded_channel();
        tokio::spawn(async move {
            while let Ok((mut s, _)) = upstream.accept().await {
                let results_tx = results_tx.clone();
                tokio::spawn(async move {
                    let mut request = [0u8; 13];
                    s.read_exact(&mut request).await.unwrap();
                    assert_eq!(&request, b"CONNECT 1024\n");
                    tokio::time::sleep(Duration::from_millis(300)).await;
                    let wrote = s.write_all(b"OK 77\n").await.is_ok();
                    let _ = results_tx.send(wrote);
                    let (mut r, mut w) = s.split();
                    let _ = tokio::io::copy(&mut r, &mut w).await;
                });
            }
        });
        let guest: Arc<dyn Guest> = Arc::new(HybridGuest(dir.path().join("device.sock")));
        let (_slot, rx) = watch::channel(Some(guest));
        let config = Vsock {
            vsock_id: None,
            guest_cid: 3,
            uds_path: dir.path().join("v.sock").display().to_string(),
        };
        let device = VsockDevice::bind(config, rx).unwrap();

        // A client that gives up before the device answers.
        let mut impatient = UnixStream::connect(device.path()).await.unwrap();
        impatient.write_all(b"CONNECT 1024\n").await.unwrap();
        drop(impatient);
        assert!(
            results.recv().await.unwrap(),
            "the device's OK met a closed socket"
        );

        let (line, mut stream) = exchange(device.path(), b"CONNECT 1024\n").await;
        assert_eq!(line, format!("OK {}\n", (1u32 << 30) + 1));
        assert!(results.recv().await.unwrap());
        stream.write_all(b"ping\n").await.unwrap();
        let mut buf = [0u8; 5];
        stream.read_exact(&mut buf).await.unwrap();
        assert_eq!(&buf, b"ping\n");
    }
}
