//! A thin typed client for the Firecracker API: HTTP/1.1 over one
//! connection, generic over the stream so tests can drive it over a socket
//! pair.

use std::fmt;
use std::path::{Path, PathBuf};

use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper::client::conn::http1::{self, SendRequest};
use hyper::{Method, Request, StatusCode, header};
use hyper_util::rt::TokioIo;
use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::UnixStream;

use crate::api::{
    ActionType, BootSource, Drive, Error as FaultBody, InstanceActionInfo, InstanceInfo, Logger,
    MachineConfiguration, MachineConfigurationUpdate, Metrics, NetworkInterface, Vm, VmState,
    Vsock,
};

/// Could not open a connection to the API socket.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error("could not connect to the vmm api socket {path}")]
    Connect {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("http handshake with the vmm api failed")]
    Handshake(#[source] hyper::Error),
}

/// One API request failed.
#[derive(Debug, thiserror::Error)]
pub enum ApiRequestError {
    #[error("could not encode the body of {method} {path}")]
    Encode {
        method: Method,
        path: String,
        #[source]
        source: serde_json::Error,
    },
    #[error("vmm api connection failed during {method} {path}")]
    Transport {
        method: Method,
        path: String,
        #[source]
        source: hyper::Error,
    },
    /// The VMM answered with an error status; `fault_message` is its
    /// explanation (Firecracker's `{"fault_message": …}` body).
    #[error("vmm refused {method} {path} with {status}: {fault_message}")]
    Fault {
        method: Method,
        path: String,
        status: StatusCode,
        fault_message: String,
    },
    #[error("vmm answered {method} {path} with a body that does not decode")]
    Decode {
        method: Method,
        path: String,
        #[source]
        source: serde_json::Error,
    },
}

impl ApiRequestError {
    /// The HTTP status when the VMM answered with an error.
    pub fn status(&self) -> Option<StatusCode> {
        match self {
            Self::Fault { status, .. } => Some(*status),
            _ => None,
        }
    }

    /// Firecracker's `fault_message` when the VMM answered with an error.
    pub fn fault_message(&self) -> Option<&str> {
        match self {
            Self::Fault { fault_message, .. } => Some(fault_message),
            _ => None,
        }
    }
}

/// A raw answer: status and body bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawResponse {
    pub status: StatusCode,
    pub body: Bytes,
}

/// A connection to one VMM's API.
pub struct ApiClient {
    sender: SendRequest<Full<Bytes>>,
}

impl fmt::Debug for ApiClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ApiClient").finish_non_exhaustive()
    }
}

impl ApiClient {
    /// Connects to the API unix socket at `path`.
    pub async fn connect(path: &Path) -> Result<Self, ConnectError> {
        let stream = UnixStream::connect(path)
            .await
            .map_err(|source| ConnectError::Connect {
                path: path.to_owned(),
                source,
            })?;
        Self::handshake(stream).await
    }

    /// Speaks HTTP/1.1 over an already connected stream. The connection is
    /// driven by a spawned task that ends when the client is dropped.
    pub async fn handshake<S>(stream: S) -> Result<Self, ConnectError>
    where
        S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let (sender, connection) = http1::handshake(TokioIo::new(stream))
            .await
            .map_err(ConnectError::Handshake)?;
        tokio::spawn(async move {
            if let Err(error) = connection.await {
                tracing::debug!(%error, "vmm api connection ended");
            }
        });
        Ok(Self { sender })
    }

    /// Sends one request and returns the status and body, whatever the
    /// status. `body` is sent as JSON.
    pub async fn raw(
        &mut self,
        method: Method,
        path: &str,
        body: Option<Bytes>,
    ) -> Result<RawResponse, ApiRequestError> {
        let transport = |source| ApiRequestError::Transport {
            method: method.clone(),
            path: path.to_owned(),
            source,
        };
        let mut request = Request::builder()
            .method(method.clone())
            .uri(path)
            .header(header::HOST, "localhost")
            .header(header::ACCEPT, "application/json");
        if body.is_some() {
            request = request.header(header::CONTENT_TYPE, "application/json");
        }
        let request = request
            .body(Full::new(body.unwrap_or_default()))
            .expect("method, path and headers are valid");
        self.sender.ready().await.map_err(transport)?;
        let response = self.sender.send_request(request).await.map_err(transport)?;
        let status = response.status();
        let body = response
            .into_body()
            .collect()
            .await
            .map_err(transport)?
            .to_bytes();
        Ok(RawResponse { status, body })
    }

    async fn call(
        &mut self,
        method: Method,
        path: &str,
        body: Option<&(dyn ErasedSerialize + Sync)>,
    ) -> Result<Bytes, ApiRequestError> {
        let encoded = body
            .map(|b| b.to_json())
            .transpose()
            .map_err(|source| ApiRequestError::Encode {
                method: method.clone(),
                path: path.to_owned(),
                source,
            })?
            .map(Bytes::from);
        let response = self.raw(method.clone(), path, encoded).await?;
        if response.status.is_success() {
            return Ok(response.body);
        }
        let fault_message = serde_json::from_slice::<FaultBody>(&response.body)
            .map(|f| f.fault_message)
            .unwrap_or_else(|_| String::from_utf8_lossy(&response.body).into_owned());
        Err(ApiRequestError::Fault {
            method,
            path: path.to_owned(),
            status: response.status,
            fault_message,
        })
    }

    async fn get<T: DeserializeOwned>(&mut self, path: &str) -> Result<T, ApiRequestError> {
        let body = self.call(Method::GET, path, None).await?;
        serde_json::from_slice(&body).map_err(|source| ApiRequestError::Decode {
            method: Method::GET,
            path: path.to_owned(),
            source,
        })
    }

    /// `GET /`.
    pub async fn describe_instance(&mut self) -> Result<InstanceInfo, ApiRequestError> {
        self.get("/").await
    }

    /// `GET /machine-config`.
    pub async fn machine_config(&mut self) -> Result<MachineConfiguration, ApiRequestError> {
        self.get("/machine-config").await
    }

    /// `PUT /machine-config`.
    pub async fn put_machine_config(
        &mut self,
        config: &MachineConfiguration,
    ) -> Result<(), ApiRequestError> {
        self.call(Method::PUT, "/machine-config", Some(config))
            .await
            .map(drop)
    }

    /// `PATCH /machine-config`.
    pub async fn patch_machine_config(
        &mut self,
        update: &MachineConfigurationUpdate,
    ) -> Result<(), ApiRequestError> {
        self.call(Method::PATCH, "/machine-config", Some(update))
            .await
            .map(drop)
    }

    /// `PUT /boot-source`.
    pub async fn put_boot_source(&mut self, boot: &BootSource) -> Result<(), ApiRequestError> {
        self.call(Method::PUT, "/boot-source", Some(boot))
            .await
            .map(drop)
    }

    /// `PUT /drives/{drive_id}`.
    pub async fn put_drive(&mut self, drive: &Drive) -> Result<(), ApiRequestError> {
        let path = format!("/drives/{}", drive.drive_id);
        self.call(Method::PUT, &path, Some(drive)).await.map(drop)
    }

    /// `PUT /network-interfaces/{iface_id}`.
    pub async fn put_network_interface(
        &mut self,
        iface: &NetworkInterface,
    ) -> Result<(), ApiRequestError> {
        let path = format!("/network-interfaces/{}", iface.iface_id);
        self.call(Method::PUT, &path, Some(iface)).await.map(drop)
    }

    /// `PUT /vsock`.
    pub async fn put_vsock(&mut self, vsock: &Vsock) -> Result<(), ApiRequestError> {
        self.call(Method::PUT, "/vsock", Some(vsock))
            .await
            .map(drop)
    }

    /// `PUT /logger`.
    pub async fn put_logger(&mut self, logger: &Logger) -> Result<(), ApiRequestError> {
        self.call(Method::PUT, "/logger", Some(logger))
            .await
            .map(drop)
    }

    /// `PUT /metrics`.
    pub async fn put_metrics(&mut self, metrics: &Metrics) -> Result<(), ApiRequestError> {
        self.call(Method::PUT, "/metrics", Some(metrics))
            .await
            .map(drop)
    }

    /// `PUT /actions`.
    pub async fn action(&mut self, action_type: ActionType) -> Result<(), ApiRequestError> {
        let body = InstanceActionInfo { action_type };
        self.call(Method::PUT, "/actions", Some(&body))
            .await
            .map(drop)
    }

    /// `PUT /actions` `InstanceStart`.
    pub async fn instance_start(&mut self) -> Result<(), ApiRequestError> {
        self.action(ActionType::InstanceStart).await
    }

    /// `PUT /actions` `SendCtrlAltDel`.
    pub async fn send_ctrl_alt_del(&mut self) -> Result<(), ApiRequestError> {
        self.action(ActionType::SendCtrlAltDel).await
    }

    /// `PATCH /vm`.
    pub async fn set_vm_state(&mut self, state: VmState) -> Result<(), ApiRequestError> {
        self.call(Method::PATCH, "/vm", Some(&Vm { state }))
            .await
            .map(drop)
    }
}

/// Object-safe JSON encoding for the request bodies.
trait ErasedSerialize {
    fn to_json(&self) -> Result<Vec<u8>, serde_json::Error>;
}

impl<T: Serialize> ErasedSerialize for T {
    fn to_json(&self) -> Result<Vec<u8>, serde_json::Error> {
        serde_json::to_vec(self)
    }
}

#[cfg(test)]
mod tests {
    use std::convert::Infallible;
    use std::sync::{Arc, Mutex};

    use hyper::body::Incoming;
    use hyper::server::conn::http1 as server;
    use hyper::service::service_fn;
    use hyper::{Response, Uri};

    use super::*;
    use crate::api::InstanceState;

    type Seen = Arc<Mutex<Vec<(Method, Uri, String)>>>;

    /// A tiny API server on one end of a socket pair: records each request
    /// and answers 204, except a few canned paths.
    async fn pair() -> (ApiClient, Seen) {
        let (client_end, server_end) = UnixStream::pair().unwrap();
        let seen: Seen = Arc::default();
        let log = seen.clone();
        tokio::spawn(async move {
            let service = service_fn(move |req: hyper::Request<Incoming>| {
                let log = log.clone();
                async move {
                    let method = req.method().clone();
                    let uri = req.uri().clone();
                    let body = req.into_body().collect().await.unwrap().to_bytes();
                    let body = String::from_utf8(body.to_vec()).unwrap();
                    log.lock()
                        .unwrap()
                        .push((method.clone(), uri.clone(), body));
                    let (status, body) = match (method, uri.path()) {
                        (Method::GET, "/") => (
                            200,
                            r#"{"id":"vm1","state":"Not started","vmm_version":"1.16.1","app_name":"Firecracker"}"#,
                        ),
                        (Method::PUT, "/boot-source") => (
                            400,
                            r#"{"fault_message":"Boot source error: The kernel file cannot be opened: No such file or directory (os error 2)"}"#,
                        ),
                        (Method::GET, "/machine-config") => (200, "not json"),
                        (Method::PATCH, "/vm") => (500, "plain text"),
                        _ => (204, ""),
                    };
                    let response = Response::builder()
                        .status(status)
                        .body(Full::new(Bytes::from(body)))
                        .unwrap();
                    Ok::<_, Infallible>(response)
                }
            });
            server::Builder::new()
                .serve_connection(TokioIo::new(server_end), service)
                .await
                .unwrap();
        });
        (ApiClient::handshake(client_end).await.unwrap(), seen)
    }

    #[tokio::test]
    async fn typed_calls_encode_paths_and_bodies() {
        let (mut client, seen) = pair().await;
        let info = client.describe_instance().await.unwrap();
        assert_eq!(info.state, InstanceState::NotStarted);
        client
            .put_machine_config(&MachineConfiguration::new(2, 256))
            .await
            .unwrap();
        client
            .put_drive(&Drive::virtio("rootfs", "/r.ext4", true))
            .await
            .unwrap();
        client
            .put_network_interface(&NetworkInterface::new("eth0", "tap-x", None))
            .await
            .unwrap();
        client.instance_start().await.unwrap();

        let seen = seen.lock().unwrap();
        let paths: Vec<String> = seen.iter().map(|(m, u, _)| format!("{m} {u}")).collect();
        assert_eq!(
            paths,
            [
                "GET /",
                "PUT /machine-config",
                "PUT /drives/rootfs",
                "PUT /network-interfaces/eth0",
                "PUT /actions"
            ]
        );
        assert_eq!(seen[0].2, "");
        let machine: serde_json::Value = serde_json::from_str(&seen[1].2).unwrap();
        assert_eq!(machine["vcpu_count"], 2);
        assert_eq!(seen[4].2, r#"{"action_type":"InstanceStart"}"#);
    }

    #[tokio::test]
    async fn faults_carry_status_and_message() {
        let (mut client, _) = pair().await;
        let err = client
            .put_boot_source(&BootSource {
                kernel_image_path: "/nope".into(),
                ..Default::default()
            })
            .await
            .unwrap_err();
        assert_eq!(err.status(), Some(StatusCode::BAD_REQUEST));
        assert!(
            err.fault_message()
                .unwrap()
                .starts_with("Boot source error: The kernel file cannot be opened"),
            "{err}"
        );
        assert!(err.to_string().contains("PUT /boot-source"), "{err}");

        let err = client.set_vm_state(VmState::Paused).await.unwrap_err();
        assert_eq!(err.status(), Some(StatusCode::INTERNAL_SERVER_ERROR));
        assert_eq!(err.fault_message(), Some("plain text"));

        let err = client.machine_config().await.unwrap_err();
        assert!(matches!(err, ApiRequestError::Decode { .. }), "{err:?}");
    }

    #[tokio::test]
    async fn connect_names_the_socket() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("missing.sock");
        let err = ApiClient::connect(&path).await.unwrap_err();
        assert!(err.to_string().contains("missing.sock"), "{err}");
    }
}
