//! Where the agent listens: `vsock:PORT` in a Firecracker guest,
//! `unix:PATH` in a banger-simvm guest (and in tests).

use std::fmt;
use std::future::Future;
use std::io;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use axum::Router;
use tokio::net::UnixListener;
use tokio_vsock::{VMADDR_CID_ANY, VsockAddr, VsockListener};

/// A `--listen` address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ListenAddr {
    /// `vsock:PORT`: any CID, this port.
    Vsock {
        /// The vsock port.
        port: u32,
    },
    /// `unix:PATH`: a unix stream socket.
    Unix {
        /// The socket path.
        path: PathBuf,
    },
}

/// A `--listen` value that is neither `vsock:PORT` nor `unix:PATH`.
#[derive(Debug, thiserror::Error)]
#[error("invalid listen address {input:?}: expected vsock:PORT or unix:PATH")]
pub struct ParseListenAddrError {
    input: String,
}

impl FromStr for ListenAddr {
    type Err = ParseListenAddrError;

    fn from_str(input: &str) -> Result<Self, Self::Err> {
        let err = || ParseListenAddrError {
            input: input.to_owned(),
        };
        if let Some(port) = input.strip_prefix("vsock:") {
            return port
                .parse()
                .map(|port| ListenAddr::Vsock { port })
                .map_err(|_| err());
        }
        if let Some(path) = input.strip_prefix("unix:") {
            if path.is_empty() {
                return Err(err());
            }
            return Ok(ListenAddr::Unix {
                path: PathBuf::from(path),
            });
        }
        Err(err())
    }
}

impl fmt::Display for ListenAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ListenAddr::Vsock { port } => write!(f, "vsock:{port}"),
            ListenAddr::Unix { path } => write!(f, "unix:{}", path.display()),
        }
    }
}

/// Binding the listen address failed.
#[derive(Debug, thiserror::Error)]
pub enum BindError {
    /// The vsock socket could not be bound (no vsock device or transport?).
    #[error("binding vsock port {port}")]
    Vsock {
        /// The port.
        port: u32,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// The unix socket's directory could not be created.
    #[error("creating the directory of unix socket {path}")]
    CreateDir {
        /// The socket path.
        path: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// Something that is not a stale socket is in the way.
    #[error("cannot listen on {path}: {reason}")]
    InTheWay {
        /// The socket path.
        path: PathBuf,
        /// What is there.
        reason: &'static str,
    },
    /// Removing a stale socket failed.
    #[error("removing stale unix socket {path}")]
    RemoveStale {
        /// The socket path.
        path: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// The unix socket could not be bound.
    #[error("binding unix socket {path}")]
    Unix {
        /// The socket path.
        path: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },
}

/// Serving stopped with an error.
#[derive(Debug, thiserror::Error)]
#[error("serving on {addr}")]
pub struct ServeError {
    addr: ListenAddr,
    #[source]
    source: io::Error,
}

/// A bound listener, ready to serve.
#[derive(Debug)]
pub struct BoundListener {
    addr: ListenAddr,
    inner: Inner,
}

#[derive(Debug)]
enum Inner {
    Vsock(VsockListener),
    Unix(UnixListener),
}

impl ListenAddr {
    /// Binds the address. For `unix:PATH`, creates the parent directories and
    /// replaces a stale socket (one nobody accepts on); anything else at the
    /// path is an error.
    pub async fn bind(&self) -> Result<BoundListener, BindError> {
        let inner = match self {
            ListenAddr::Vsock { port } => {
                let listener = VsockListener::bind(VsockAddr::new(VMADDR_CID_ANY, *port)).map_err(
                    |source| BindError::Vsock {
                        port: *port,
                        source,
                    },
                )?;
                Inner::Vsock(listener)
            }
            ListenAddr::Unix { path } => {
                prepare_unix_path(path)?;
                let listener = UnixListener::bind(path).map_err(|source| BindError::Unix {
                    path: path.clone(),
                    source,
                })?;
                Inner::Unix(listener)
            }
        };
        Ok(BoundListener {
            addr: self.clone(),
            inner,
        })
    }
}

fn prepare_unix_path(path: &Path) -> Result<(), BindError> {
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        fs_err::create_dir_all(parent).map_err(|source| BindError::CreateDir {
            path: path.to_owned(),
            source,
        })?;
    }
    let meta = match fs_err::symlink_metadata(path) {
        Ok(meta) => meta,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(source) => {
            return Err(BindError::Unix {
                path: path.to_owned(),
                source,
            });
        }
    };
    use std::os::unix::fs::FileTypeExt;
    if !meta.file_type().is_socket() {
        return Err(BindError::InTheWay {
            path: path.to_owned(),
            reason: "the path exists and is not a socket",
        });
    }
    match std::os::unix::net::UnixStream::connect(path) {
        Ok(_) => Err(BindError::InTheWay {
            path: path.to_owned(),
            reason: "another process is listening there",
        }),
        Err(_) => fs_err::remove_file(path).map_err(|source| BindError::RemoveStale {
            path: path.to_owned(),
            source,
        }),
    }
}

impl BoundListener {
    /// The address this listener was bound from.
    pub fn addr(&self) -> &ListenAddr {
        &self.addr
    }

    /// Serves `router` until `shutdown` completes; then removes a unix socket.
    pub async fn serve(
        self,
        router: Router,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Result<(), ServeError> {
        let addr = self.addr;
        let result = match self.inner {
            Inner::Vsock(listener) => {
                axum::serve(listener, router)
                    .with_graceful_shutdown(shutdown)
                    .await
            }
            Inner::Unix(listener) => {
                axum::serve(listener, router)
                    .with_graceful_shutdown(shutdown)
                    .await
            }
        };
        if let ListenAddr::Unix { path } = &addr {
            // Best effort: a leftover socket is replaced on the next start anyway.
            let _ = std::fs::remove_file(path);
        }
        result.map_err(|source| ServeError { addr, source })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_both_forms() {
        assert_eq!(
            "vsock:1024".parse::<ListenAddr>().expect("vsock"),
            ListenAddr::Vsock { port: 1024 }
        );
        assert_eq!(
            "unix:/run/banger/vsock/1024.sock"
                .parse::<ListenAddr>()
                .expect("unix"),
            ListenAddr::Unix {
                path: "/run/banger/vsock/1024.sock".into()
            }
        );
        for bad in [
            "", "vsock:", "vsock:-1", "vsock:x", "unix:", "tcp:80", "1024",
        ] {
            let err = bad.parse::<ListenAddr>().expect_err(bad);
            assert!(err.to_string().contains("expected vsock:PORT or unix:PATH"));
        }
    }

    #[tokio::test]
    async fn unix_bind_creates_dirs_and_replaces_only_stale_sockets() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("a/b/agent.sock");
        let addr = ListenAddr::Unix { path: path.clone() };

        let live = addr.bind().await.expect("first bind");
        let err = addr.bind().await.expect_err("second bind while live");
        assert!(matches!(err, BindError::InTheWay { .. }), "{err:?}");
        drop(live); // the socket file stays behind, now stale
        assert!(path.exists());
        let _again = addr.bind().await.expect("bind over a stale socket");

        let file = dir.path().join("plain-file");
        fs_err::write(&file, "x").expect("file");
        let err = ListenAddr::Unix { path: file.clone() }
            .bind()
            .await
            .expect_err("regular file in the way");
        assert!(err.to_string().contains("is not a socket"), "{err}");
        assert!(file.exists(), "a regular file is never removed");
    }
}
