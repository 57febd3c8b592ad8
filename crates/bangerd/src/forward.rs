//! Published ports: listeners on the host that forward each TCP connection
//! to a port of the guest (`vm run -p 8080:80`, `vm port-forward`). The
//! daemon itself forwards, over the bridge to the guest's address, so it
//! works the same for every engine and needs no firewall rule.
//!
//! Listeners are bound before anything else happens ([`bind`]), so a port
//! in use refuses a create or start before a VM exists or boots. They live
//! while the VM runs: a stop, delete or dead VMM closes them
//! ([`Forwards::stop`]), and so does the daemon's exit; a start, restart or
//! re-adopting daemon binds them again from the VM's record.

use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Mutex;
use std::time::Duration;

use banger_model::Id;
use banger_model::publish::PortForward;
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::errors::{Doing, ServiceError};

/// How long connecting to the guest may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Listeners bound for a VM, not forwarding yet.
#[derive(Debug)]
pub struct Bound {
    listeners: Vec<(PortForward, std::net::TcpListener)>,
}

impl Bound {
    pub fn is_empty(&self) -> bool {
        self.listeners.is_empty()
    }
}

/// Binds every forward's host address and port, all or none. A port in
/// use (by anything, another VM included) is an error naming it.
pub fn bind(forwards: &[PortForward]) -> Result<Bound, ServiceError> {
    let mut listeners = Vec::with_capacity(forwards.len());
    for (index, forward) in forwards.iter().enumerate() {
        if forwards[..index].iter().any(|other| {
            other.host_addr == forward.host_addr && other.host_port == forward.host_port
        }) {
            return Err(ServiceError::invalid(format!(
                "{}:{} is published twice",
                forward.host_addr, forward.host_port
            )));
        }
        let addr = SocketAddr::new(forward.host_addr, forward.host_port);
        let listener = std::net::TcpListener::bind(addr).map_err(|err| {
            let (message, hint) = match err.kind() {
                std::io::ErrorKind::AddrInUse => (
                    format!("port {addr} is already in use"),
                    "pick another host port (`-p OTHER:GUEST`), or stop what listens there",
                ),
                std::io::ErrorKind::PermissionDenied => (
                    format!("cannot listen on {addr}: {err}"),
                    "ports below 1024 need privileges banger does not have; pick a port above 1023",
                ),
                std::io::ErrorKind::AddrNotAvailable => (
                    format!("{} is not an address of this host", forward.host_addr),
                    "use 127.0.0.1 (the default), 0.0.0.0, or an address this host has",
                ),
                _ => (format!("cannot listen on {addr}: {err}"), ""),
            };
            let error = ServiceError::precondition(message);
            if hint.is_empty() {
                error
            } else {
                error.with_hint(hint)
            }
        })?;
        listener
            .set_nonblocking(true)
            .doing("preparing a published port")?;
        listeners.push((*forward, listener));
    }
    Ok(Bound { listeners })
}

/// The forwards running for each VM.
#[derive(Debug, Default)]
pub struct Forwards {
    active: Mutex<HashMap<Id, Vec<(PortForward, CancellationToken)>>>,
}

impl Forwards {
    /// Starts forwarding `bound` to `guest` for VM `vm`.
    pub fn start(&self, vm: &Id, guest: Ipv4Addr, bound: Bound) {
        let mut active = self.lock();
        let entry = active.entry(vm.clone()).or_default();
        for (forward, listener) in bound.listeners {
            let listener = match TcpListener::from_std(listener) {
                Ok(listener) => listener,
                Err(err) => {
                    warn!(%forward, error = %err, "cannot use a published port's listener");
                    continue;
                }
            };
            let cancel = CancellationToken::new();
            tokio::spawn(serve(listener, forward, guest, cancel.clone()));
            info!(vm = %vm, %forward, "publishing a port");
            entry.push((forward, cancel));
        }
    }

    /// Stops every forward of VM `vm` (and its open connections).
    pub fn stop(&self, vm: &Id) {
        for (forward, cancel) in self.lock().remove(vm).unwrap_or_default() {
            debug!(vm = %vm, %forward, "unpublishing a port");
            cancel.cancel();
        }
    }

    /// Stops the forwards of VM `vm` that are among `forwards`.
    pub fn stop_some(&self, vm: &Id, forwards: &[PortForward]) {
        if let Some(entry) = self.lock().get_mut(vm) {
            entry.retain(|(forward, cancel)| {
                let keep = !forwards.contains(forward);
                if !keep {
                    cancel.cancel();
                }
                keep
            });
        }
    }

    /// What VM `vm` publishes right now.
    pub fn running(&self, vm: &Id) -> Vec<PortForward> {
        self.lock()
            .get(vm)
            .map(|entry| entry.iter().map(|(forward, _)| *forward).collect())
            .unwrap_or_default()
    }

    fn lock(
        &self,
    ) -> std::sync::MutexGuard<'_, HashMap<Id, Vec<(PortForward, CancellationToken)>>> {
        self.active
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

impl Drop for Forwards {
    fn drop(&mut self) {
        for (_, cancel) in self.lock().values().flatten() {
            cancel.cancel();
        }
    }
}

/// Accepts until cancelled; each connection is copied both ways to the
/// guest's port until either side closes or the forward stops.
async fn serve(
    listener: TcpListener,
    forward: PortForward,
    guest: Ipv4Addr,
    cancel: CancellationToken,
) {
    loop {
        let accepted = tokio::select! {
            () = cancel.cancelled() => return,
            accepted = listener.accept() => accepted,
        };
        let (mut client, peer) = match accepted {
            Ok(accepted) => accepted,
            Err(err) => {
                warn!(%forward, error = %err, "accepting on a published port failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let cancel = cancel.clone();
        tokio::spawn(async move {
            let target = SocketAddr::from((guest, forward.guest_port));
            let connected = tokio::select! {
                () = cancel.cancelled() => return,
                connected = tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(target)) => connected,
            };
            let mut upstream = match connected {
                Ok(Ok(stream)) => stream,
                Ok(Err(err)) => {
                    debug!(%forward, %peer, error = %err, "the guest refused a forwarded connection");
                    return;
                }
                Err(_) => {
                    debug!(%forward, %peer, "the guest did not answer a forwarded connection");
                    return;
                }
            };
            tokio::select! {
                () = cancel.cancelled() => {}
                _ = tokio::io::copy_bidirectional(&mut client, &mut upstream) => {}
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    fn forward(host_port: u16, guest_port: u16) -> PortForward {
        PortForward {
            host_addr: PortForward::DEFAULT_HOST_ADDR,
            host_port,
            guest_port,
        }
    }

    fn free_port() -> u16 {
        std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port()
    }

    #[tokio::test]
    async fn connections_reach_the_guest_port_until_stopped() {
        // A "guest" echo server on loopback.
        let guest = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let guest_port = guest.local_addr().unwrap().port();
        tokio::spawn(async move {
            loop {
                let (mut stream, _) = guest.accept().await.unwrap();
                tokio::spawn(async move {
                    let mut buf = [0u8; 64];
                    let n = stream.read(&mut buf).await.unwrap();
                    stream.write_all(&buf[..n]).await.unwrap();
                });
            }
        });
        let host_port = free_port();
        let forwards = Forwards::default();
        let vm = Id::generate();
        let bound = bind(&[forward(host_port, guest_port)]).unwrap();
        forwards.start(&vm, Ipv4Addr::LOCALHOST, bound);
        assert_eq!(forwards.running(&vm), [forward(host_port, guest_port)]);

        let mut client = TcpStream::connect(("127.0.0.1", host_port)).await.unwrap();
        client.write_all(b"hello").await.unwrap();
        let mut answer = [0u8; 5];
        client.read_exact(&mut answer).await.unwrap();
        assert_eq!(&answer, b"hello");

        forwards.stop(&vm);
        assert!(forwards.running(&vm).is_empty());
        // The port is free again once the listener is gone.
        let rebound = tokio::time::timeout(Duration::from_secs(5), async {
            loop {
                if std::net::TcpListener::bind(("127.0.0.1", host_port)).is_ok() {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        })
        .await;
        assert!(rebound.is_ok(), "port {host_port} still held after stop");
    }

    #[test]
    fn a_port_in_use_or_published_twice_is_refused_and_nothing_stays_bound() {
        let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let taken_port = taken.local_addr().unwrap().port();
        let free = free_port();
        let err = bind(&[forward(free, 80), forward(taken_port, 81)]).unwrap_err();
        assert!(err.message().contains("already in use"), "{err:?}");
        assert!(err.to_wire().hint.is_some());
        // The first listener was released with the failed call.
        std::net::TcpListener::bind(("127.0.0.1", free)).expect("free port released");

        let err = bind(&[forward(free, 80), forward(free, 81)]).unwrap_err();
        assert!(err.message().contains("published twice"), "{err:?}");
    }
}
