//! Host-side client of the guest agent.
//!
//! [`AgentClient`] connects to Firecracker's hybrid vsock unix socket, does
//! the `CONNECT <port>\n` / `OK <n>\n` handshake and sends one HTTP/1.1 GET
//! per connection. Each step has its own timeout and its own error, so a
//! failure says whether the socket, the handshake or the agent was at fault.
//! The steps are also public and generic over the stream
//! ([`vsock_handshake`], [`get_health`], [`get_ports`]).

use std::fmt;
use std::future::Future;
use std::io;
use std::path::{Path, PathBuf};
use std::time::Duration;

use http_body_util::{BodyExt, Empty, Limited};
use hyper::body::Bytes;
use hyper_util::rt::TokioIo;
use serde::de::DeserializeOwned;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::UnixStream;

use super::{HEALTHZ_ROUTE, Health, Listener, PORTS_ROUTE};

/// Default timeout of each step.
pub const DEFAULT_STEP_TIMEOUT: Duration = Duration::from_secs(5);
/// Largest response body accepted from the agent.
const MAX_BODY_BYTES: usize = 4 << 20;
/// Longest handshake reply accepted (`OK 4294967295\n` is 14 bytes).
const MAX_REPLY_BYTES: usize = 64;

/// Where the agent is reached.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AgentEndpoint {
    /// Firecracker's (or banger-simvm's) hybrid vsock unix socket, and the
    /// guest vsock port to `CONNECT` to.
    HybridVsock {
        /// The VM's vsock `uds_path`.
        uds_path: PathBuf,
        /// The guest port.
        port: u32,
    },
    /// A unix socket the agent listens on directly (`--listen unix:PATH`).
    Unix {
        /// The socket path.
        path: PathBuf,
    },
}

impl AgentEndpoint {
    /// The unix socket path the client connects to.
    pub fn socket_path(&self) -> &Path {
        match self {
            AgentEndpoint::HybridVsock { uds_path, .. } => uds_path,
            AgentEndpoint::Unix { path } => path,
        }
    }
}

/// One step of an agent request, named in errors.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AgentStep {
    /// Connecting to the unix socket.
    Connect,
    /// The hybrid vsock `CONNECT <port>` handshake.
    VsockHandshake {
        /// The guest port.
        port: u32,
    },
    /// The HTTP request and response.
    Get {
        /// The route requested.
        route: String,
    },
}

impl fmt::Display for AgentStep {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AgentStep::Connect => f.write_str("connect"),
            AgentStep::VsockHandshake { port } => write!(f, "vsock handshake (CONNECT {port})"),
            AgentStep::Get { route } => write!(f, "GET {route}"),
        }
    }
}

/// The hybrid vsock handshake failed.
#[derive(Debug, thiserror::Error)]
pub enum VsockHandshakeError {
    /// Writing `CONNECT <port>` failed.
    #[error("writing CONNECT {port}")]
    Write {
        /// The guest port.
        port: u32,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// Reading the reply failed.
    #[error("reading the reply to CONNECT {port}")]
    Read {
        /// The guest port.
        port: u32,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// The VMM closed the connection instead of answering `OK`.
    #[error(
        "connection closed before the reply to CONNECT {port}: nothing listens on guest vsock port {port} yet"
    )]
    Closed {
        /// The guest port.
        port: u32,
    },
    /// The reply was not `OK <n>`.
    #[error("unexpected reply to CONNECT {port}: {reply:?}")]
    BadReply {
        /// The guest port.
        port: u32,
        /// What was read.
        reply: String,
    },
}

/// A request to the guest agent failed.
#[derive(Debug, thiserror::Error)]
pub enum AgentRequestError {
    /// The unix socket could not be connected.
    #[error("connecting to agent socket {path}")]
    Connect {
        /// The socket path.
        path: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// The hybrid vsock handshake failed.
    #[error("vsock handshake on {path}")]
    Handshake {
        /// The socket path.
        path: PathBuf,
        /// The cause.
        #[source]
        source: VsockHandshakeError,
    },
    /// The HTTP exchange failed.
    #[error("GET {route} to the agent")]
    Http {
        /// The route requested.
        route: String,
        /// The cause.
        #[source]
        source: hyper::Error,
    },
    /// The response body could not be read (or was too large).
    #[error("reading the agent's response to GET {route}")]
    Body {
        /// The route requested.
        route: String,
        /// The cause.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// The agent answered with a status other than 200.
    #[error("agent answered GET {route} with {status}: {body}")]
    Status {
        /// The route requested.
        route: String,
        /// The HTTP status code.
        status: u16,
        /// The start of the response body.
        body: String,
    },
    /// The response was not the expected JSON.
    #[error("decoding the agent's response to GET {route}")]
    Decode {
        /// The route requested.
        route: String,
        /// The cause.
        #[source]
        source: serde_json::Error,
    },
    /// A step took longer than the client's timeout.
    #[error("agent {step} on {path} timed out after {after:?}")]
    Timeout {
        /// The step that timed out.
        step: AgentStep,
        /// The socket path.
        path: PathBuf,
        /// The timeout.
        after: Duration,
    },
}

impl AgentRequestError {
    /// The step that failed.
    pub fn step(&self) -> AgentStep {
        match self {
            AgentRequestError::Connect { .. } => AgentStep::Connect,
            AgentRequestError::Handshake { source, .. } => AgentStep::VsockHandshake {
                port: match source {
                    VsockHandshakeError::Write { port, .. }
                    | VsockHandshakeError::Read { port, .. }
                    | VsockHandshakeError::Closed { port }
                    | VsockHandshakeError::BadReply { port, .. } => *port,
                },
            },
            AgentRequestError::Http { route, .. }
            | AgentRequestError::Body { route, .. }
            | AgentRequestError::Status { route, .. }
            | AgentRequestError::Decode { route, .. } => AgentStep::Get {
                route: route.clone(),
            },
            AgentRequestError::Timeout { step, .. } => step.clone(),
        }
    }
}

/// A client of one guest's agent. Each request opens a new connection.
#[derive(Debug, Clone)]
pub struct AgentClient {
    endpoint: AgentEndpoint,
    step_timeout: Duration,
}

impl AgentClient {
    /// Reaches the agent through a hybrid vsock socket (`uds_path`) on guest
    /// vsock `port` (normally [`super::AGENT_VSOCK_PORT`]).
    pub fn hybrid_vsock(uds_path: impl Into<PathBuf>, port: u32) -> Self {
        Self::new(AgentEndpoint::HybridVsock {
            uds_path: uds_path.into(),
            port,
        })
    }

    /// Reaches an agent listening directly on the unix socket `path`.
    pub fn unix(path: impl Into<PathBuf>) -> Self {
        Self::new(AgentEndpoint::Unix { path: path.into() })
    }

    /// A client of `endpoint` with the default step timeout.
    pub fn new(endpoint: AgentEndpoint) -> Self {
        Self {
            endpoint,
            step_timeout: DEFAULT_STEP_TIMEOUT,
        }
    }

    /// Sets the timeout of each step (connect, handshake, request).
    pub fn with_step_timeout(mut self, timeout: Duration) -> Self {
        self.step_timeout = timeout;
        self
    }

    /// Where this client connects.
    pub fn endpoint(&self) -> &AgentEndpoint {
        &self.endpoint
    }

    /// `GET /healthz`.
    pub async fn health(&self) -> Result<Health, AgentRequestError> {
        let stream = self.connect().await?;
        self.step(
            AgentStep::Get {
                route: HEALTHZ_ROUTE.into(),
            },
            get_health(stream),
        )
        .await?
    }

    /// `GET /ports`.
    pub async fn ports(&self) -> Result<Vec<Listener>, AgentRequestError> {
        let stream = self.connect().await?;
        self.step(
            AgentStep::Get {
                route: PORTS_ROUTE.into(),
            },
            get_ports(stream),
        )
        .await?
    }

    /// Connects and, for hybrid vsock, completes the handshake.
    pub async fn connect(&self) -> Result<UnixStream, AgentRequestError> {
        let path = self.endpoint.socket_path();
        let mut stream = self
            .step(AgentStep::Connect, UnixStream::connect(path))
            .await?
            .map_err(|source| AgentRequestError::Connect {
                path: path.to_owned(),
                source,
            })?;
        if let AgentEndpoint::HybridVsock { port, .. } = self.endpoint {
            let host_port = self
                .step(
                    AgentStep::VsockHandshake { port },
                    vsock_handshake(&mut stream, port),
                )
                .await?
                .map_err(|source| AgentRequestError::Handshake {
                    path: path.to_owned(),
                    source,
                })?;
            tracing::trace!(path = %path.display(), port, host_port, "vsock connected");
        }
        Ok(stream)
    }

    async fn step<T>(
        &self,
        step: AgentStep,
        fut: impl Future<Output = T>,
    ) -> Result<T, AgentRequestError> {
        tokio::time::timeout(self.step_timeout, fut)
            .await
            .map_err(|_| AgentRequestError::Timeout {
                step,
                path: self.endpoint.socket_path().to_owned(),
                after: self.step_timeout,
            })
    }
}

/// Firecracker's hybrid vsock handshake on a freshly connected stream: writes
/// `CONNECT <port>\n`, reads `OK <n>\n` and returns `n` (the host-side port
/// Firecracker assigned). Reads byte by byte so nothing after the reply line
/// is consumed.
pub async fn vsock_handshake<S>(stream: &mut S, port: u32) -> Result<u32, VsockHandshakeError>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    stream
        .write_all(format!("CONNECT {port}\n").as_bytes())
        .await
        .map_err(|source| VsockHandshakeError::Write { port, source })?;
    stream
        .flush()
        .await
        .map_err(|source| VsockHandshakeError::Write { port, source })?;

    let mut reply = Vec::with_capacity(16);
    loop {
        let byte = match stream.read_u8().await {
            Ok(byte) => byte,
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => {
                return Err(if reply.is_empty() {
                    VsockHandshakeError::Closed { port }
                } else {
                    VsockHandshakeError::BadReply {
                        port,
                        reply: String::from_utf8_lossy(&reply).into_owned(),
                    }
                });
            }
            Err(source) => return Err(VsockHandshakeError::Read { port, source }),
        };
        if byte == b'\n' {
            break;
        }
        reply.push(byte);
        if reply.len() > MAX_REPLY_BYTES {
            return Err(VsockHandshakeError::BadReply {
                port,
                reply: String::from_utf8_lossy(&reply).into_owned(),
            });
        }
    }
    let text = String::from_utf8_lossy(&reply);
    text.strip_prefix("OK ")
        .and_then(|n| n.trim_end_matches('\r').parse::<u32>().ok())
        .ok_or_else(|| VsockHandshakeError::BadReply {
            port,
            reply: text.into_owned(),
        })
}

/// `GET /healthz` over a connected stream (after any handshake).
pub async fn get_health<S>(stream: S) -> Result<Health, AgentRequestError>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    get_json(stream, HEALTHZ_ROUTE).await
}

/// `GET /ports` over a connected stream (after any handshake).
pub async fn get_ports<S>(stream: S) -> Result<Vec<Listener>, AgentRequestError>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    get_json(stream, PORTS_ROUTE).await
}

/// One HTTP/1.1 GET of `route` over `stream`, expecting 200 and JSON `T`.
pub async fn get_json<T, S>(stream: S, route: &str) -> Result<T, AgentRequestError>
where
    T: DeserializeOwned,
    S: AsyncRead + AsyncWrite + Unpin,
{
    let http = |source| AgentRequestError::Http {
        route: route.to_owned(),
        source,
    };
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(http)?;

    let request = hyper::Request::get(route)
        .header(hyper::header::HOST, "banger-vsock-agent")
        .body(Empty::<Bytes>::new())
        .expect("a GET with a static route and header is a valid request");

    let exchange = async {
        let response = sender.send_request(request).await.map_err(http)?;
        let status = response.status();
        let body = Limited::new(response.into_body(), MAX_BODY_BYTES)
            .collect()
            .await
            .map_err(|source| AgentRequestError::Body {
                route: route.to_owned(),
                source,
            })?
            .to_bytes();
        Ok::<_, AgentRequestError>((status, body))
    };

    // Drive the connection and the exchange together; the connection may
    // finish first (the server closed after answering), then the exchange
    // still completes from what was buffered.
    tokio::pin!(conn, exchange);
    let (status, body) = tokio::select! {
        result = &mut exchange => result?,
        conn_result = &mut conn => {
            conn_result.map_err(http)?;
            exchange.await?
        }
    };

    if status != hyper::StatusCode::OK {
        let text = String::from_utf8_lossy(&body);
        return Err(AgentRequestError::Status {
            route: route.to_owned(),
            status: status.as_u16(),
            body: text.chars().take(200).collect(),
        });
    }
    serde_json::from_slice(&body).map_err(|source| AgentRequestError::Decode {
        route: route.to_owned(),
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncBufReadExt, BufReader, duplex};

    /// A one-request HTTP server on the far end of a duplex pipe.
    async fn serve_once(
        server: tokio::io::DuplexStream,
        status_line: &'static str,
        body: &'static str,
    ) -> String {
        let mut reader = BufReader::new(server);
        let mut request_line = String::new();
        reader
            .read_line(&mut request_line)
            .await
            .expect("request line");
        loop {
            let mut line = String::new();
            reader.read_line(&mut line).await.expect("header line");
            if line == "\r\n" || line.is_empty() {
                break;
            }
        }
        let response = format!(
            "HTTP/1.1 {status_line}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
            body.len()
        );
        let mut server = reader.into_inner();
        server.write_all(response.as_bytes()).await.expect("write");
        server.shutdown().await.expect("shutdown");
        request_line
    }

    #[tokio::test]
    async fn handshake_reads_only_the_reply_line() {
        let (mut client, mut server) = duplex(256);
        let guest = tokio::spawn(async move {
            let mut buf = [0u8; 13];
            server.read_exact(&mut buf).await.expect("connect line");
            assert_eq!(&buf, b"CONNECT 1024\n");
            server
                .write_all(b"OK 1073741824\nHTTP")
                .await
                .expect("reply");
            server
        });
        let host_port = vsock_handshake(&mut client, 1024).await.expect("handshake");
        assert_eq!(host_port, 1_073_741_824);
        let mut rest = [0u8; 4];
        client
            .read_exact(&mut rest)
            .await
            .expect("bytes after reply");
        assert_eq!(&rest, b"HTTP");
        drop(guest.await.expect("guest task"));
    }

    #[tokio::test]
    async fn handshake_reports_a_closed_connection_and_bad_replies() {
        let (mut client, server) = duplex(64);
        drop(server);
        let err = vsock_handshake(&mut client, 52).await.expect_err("closed");
        // The write fails or the read sees EOF, depending on timing; both name the port.
        assert!(err.to_string().contains("52"), "{err}");

        let (mut client, mut server) = duplex(64);
        server.write_all(b"NO\n").await.expect("reply");
        let err = vsock_handshake(&mut client, 52)
            .await
            .expect_err("bad reply");
        assert!(
            matches!(&err, VsockHandshakeError::BadReply { reply, .. } if reply == "NO"),
            "{err:?}"
        );

        let (mut client, mut server) = duplex(64);
        let guest = tokio::spawn(async move {
            let mut buf = [0u8; 11];
            server.read_exact(&mut buf).await.expect("connect line");
            drop(server);
        });
        let err = vsock_handshake(&mut client, 52).await.expect_err("eof");
        assert!(
            matches!(err, VsockHandshakeError::Closed { port: 52 }),
            "{err:?}"
        );
        guest.await.expect("guest task");
    }

    #[tokio::test]
    async fn health_over_a_socket_pair() {
        let (client, server) = duplex(4096);
        let server = tokio::spawn(serve_once(
            server,
            "200 OK",
            r#"{"status":"ok","version":"9.9.9"}"#,
        ));
        let health = get_health(client).await.expect("health");
        assert_eq!(health, Health::ok("9.9.9"));
        assert_eq!(server.await.expect("server"), "GET /healthz HTTP/1.1\r\n");
    }

    #[tokio::test]
    async fn non_200_and_bad_json_name_the_route() {
        let (client, server) = duplex(4096);
        tokio::spawn(serve_once(server, "404 Not Found", "nope"));
        let err = get_ports(client).await.expect_err("404");
        assert!(
            matches!(&err, AgentRequestError::Status { status: 404, .. }),
            "{err:?}"
        );
        assert_eq!(err.to_string(), "agent answered GET /ports with 404: nope");

        let (client, server) = duplex(4096);
        tokio::spawn(serve_once(server, "200 OK", r#"{"not":"a list"}"#));
        let err = get_ports(client).await.expect_err("bad json");
        assert!(matches!(err, AgentRequestError::Decode { .. }), "{err:?}");
        assert_eq!(
            err.step(),
            AgentStep::Get {
                route: "/ports".into()
            }
        );
    }

    #[tokio::test]
    async fn client_errors_say_which_step_failed() {
        let dir = tempfile::tempdir().expect("tempdir");
        let missing = dir.path().join("missing.sock");
        let err = AgentClient::hybrid_vsock(&missing, 1024)
            .health()
            .await
            .expect_err("no socket");
        assert_eq!(err.step(), AgentStep::Connect);
        assert!(err.to_string().contains("missing.sock"), "{err}");

        // A VMM that accepts and never answers the handshake.
        let silent = dir.path().join("silent.sock");
        let listener = tokio::net::UnixListener::bind(&silent).expect("bind");
        let accept = tokio::spawn(async move { listener.accept().await.map(|(s, _)| s) });
        let err = AgentClient::hybrid_vsock(&silent, 1024)
            .with_step_timeout(Duration::from_millis(200))
            .health()
            .await
            .expect_err("timeout");
        assert!(
            matches!(
                &err,
                AgentRequestError::Timeout {
                    step: AgentStep::VsockHandshake { port: 1024 },
                    ..
                }
            ),
            "{err:?}"
        );
        assert!(
            err.to_string().contains("vsock handshake (CONNECT 1024)"),
            "{err}"
        );
        drop(accept.await);
    }

    #[tokio::test]
    async fn client_speaks_hybrid_vsock_then_http() {
        let dir = tempfile::tempdir().expect("tempdir");
        let uds = dir.path().join("v.sock");
        let listener = tokio::net::UnixListener::bind(&uds).expect("bind");
        let vmm = tokio::spawn(async move {
            let (stream, _) = listener.accept().await.expect("accept");
            let mut reader = BufReader::new(stream);
            let mut line = String::new();
            reader.read_line(&mut line).await.expect("connect line");
            assert_eq!(line, "CONNECT 1024\n");
            reader.get_mut().write_all(b"OK 5\n").await.expect("ok");
            let (client_end, server_end) = duplex(4096);
            // Splice: forward the rest of the unix stream through a duplex server.
            let server = tokio::spawn(serve_once(server_end, "200 OK", "[]"));
            let mut client_end = client_end;
            let mut stream = reader;
            let _ = tokio::io::copy_bidirectional(&mut stream, &mut client_end).await;
            server.await.expect("server")
        });
        let ports = AgentClient::hybrid_vsock(&uds, 1024)
            .ports()
            .await
            .expect("ports");
        assert!(ports.is_empty());
        assert_eq!(vmm.await.expect("vmm"), "GET /ports HTTP/1.1\r\n");
    }
}
