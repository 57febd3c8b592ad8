//! The daemon's network subsystem: the `.vm` DNS server (started with the
//! daemon), and the bridge with its warm TAP pool (set up on first need, so
//! a daemon that never runs a VM never touches host networking).
//!
//! DNS routing: on systemd-resolved hosts the daemon routes `~vm` to its DNS
//! server through the bridge link (`resolvectl dns br-banger
//! 127.0.0.1:42069`, `domain br-banger ~vm`, `default-route br-banger
//! false`). resolved sends queries for a loopback server through the
//! loopback interface whatever link it is configured on, so the server stays
//! on loopback (the host is never exposed) and nothing listens on the bridge. Routing is
//! applied in the background when the bridge comes up and again whenever a
//! record is published (cheap and idempotent; it heals a resolved restart),
//! and reverted at shutdown. A failure is logged and shown by `doctor`; it
//! never fails the daemon or a VM.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use banger_model::Name;
use banger_model::config::NetworkConfig;
use banger_net::routing::DnsRouting;
use banger_net::{DnsRecords, DnsServer, NetOps, TapPool};
use tokio::sync::{Mutex, OnceCell};
use tracing::{info, warn};

#[derive(Debug)]
pub struct Network {
    pub ops: Arc<dyn NetOps>,
    pub config: NetworkConfig,
    pub records: DnsRecords,
    dns: Mutex<Option<DnsServer>>,
    dns_status: DnsStatus,
    pool: OnceCell<TapPool>,
    /// The warm pool's TAP naming space (0 for root, the user's otherwise).
    pool_space: u8,
    /// How host networking is reached, for `daemon status` and doctor.
    via: Via,
    routing: Routing,
}

/// How a daemon reaches the host's network: as root, itself (netlink,
/// iptables); as any other uid, through banger-helper, whose answer names
/// the bridge, subnet and TAP naming space that are this user's.
#[derive(Debug)]
pub struct Access {
    pub ops: Arc<dyn NetOps>,
    /// `[network]` with the bridge, subnet and DNS port made this user's.
    pub config: NetworkConfig,
    /// The DNS routing seam when systemd-resolved is to be used.
    pub routing: Arc<dyn DnsRouting>,
    pub pool_space: u8,
    pub via: Via,
}

/// How a daemon reaches the host network.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Via {
    /// Itself, as root (netlink, iptables).
    Netlink,
    /// Through banger-helper at this socket.
    Helper(std::path::PathBuf),
    /// Itself, without root, because the helper could not be reached: VMs
    /// cannot get a network.
    Unprivileged {
        uid: u32,
        socket: std::path::PathBuf,
        error: String,
    },
}

impl std::fmt::Display for Via {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Netlink => f.write_str("netlink"),
            Self::Helper(socket) => write!(f, "banger-helper at {}", socket.display()),
            Self::Unprivileged { uid, socket, error } => write!(
                f,
                "netlink as uid {uid}, which lacks the privileges: banger-helper is not reachable \
                 at {} ({error})",
                socket.display()
            ),
        }
    }
}

impl Access {
    /// Asks the helper at `socket` which network is this user's. A DNS
    /// listener left at its default moves to a port of the user's own
    /// (the default plus the naming space), so that two users' daemons
    /// never fight over it.
    pub async fn through_helper(
        socket: &std::path::Path,
        mut config: NetworkConfig,
    ) -> Result<Self, banger_helper::HelperCallError> {
        let info = banger_helper::HelperClient::connect(socket)
            .await?
            .network()
            .await?;
        config.bridge = info.bridge;
        config.subnet = info.address;
        if config.dns_listen.to_string() == banger_model::config::DEFAULT_DNS_LISTEN {
            let port = config.dns_listen.port() + u16::from(info.pool_space);
            config.dns_listen.set_port(port);
        }
        Ok(Self {
            ops: Arc::new(banger_helper::HelperNetOps::new(socket)),
            config,
            routing: Arc::new(banger_helper::HelperDnsRouting::new(socket)),
            pool_space: info.pool_space,
            via: Via::Helper(socket.to_owned()),
        })
    }
}

/// Whether the calling thread shares systemd-resolved's network namespace.
/// `resolvectl` names a link by its index in the caller's namespace and
/// resolved applies the setting to the link with that index in its own, so
/// a daemon in a private namespace (every end-to-end test's) must not
/// route, or it would reconfigure an unrelated host link.
///
/// When PID 1's namespace can be read, it decides. Otherwise (sandboxes
/// deny it even to root) resolved's stub listener decides: 127.0.0.53:53
/// answers only in resolved's own namespace. A host with the stub disabled
/// (`DNSStubListener=no`) then gets no automatic routing, which is safe.
pub fn shares_resolved_network_namespace() -> bool {
    let ours = std::fs::read_link("/proc/thread-self/ns/net");
    let init = std::fs::read_link("/proc/1/ns/net");
    if let (Ok(ours), Ok(init)) = (ours, init) {
        return ours == init;
    }
    let stub = SocketAddr::from((Ipv4Addr::new(127, 0, 0, 53), 53));
    std::net::TcpStream::connect_timeout(&stub, std::time::Duration::from_millis(500)).is_ok()
}

/// Where `~vm` routing through the host resolver stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RoutingState {
    /// No routing seam (systemd-resolved is not running).
    Inactive,
    /// systemd-resolved runs but banger does not route through it (why).
    Skipped(String),
    /// Not applied yet: the bridge is not up.
    Pending,
    Applied {
        dns: SocketAddr,
    },
    Failed(String),
}

/// The routing seam and its state, shared with background apply tasks.
#[derive(Debug, Clone)]
struct Routing {
    seam: Option<Arc<dyn DnsRouting>>,
    state: Arc<std::sync::Mutex<RoutingState>>,
    /// Serialises apply and revert.
    gate: Arc<Mutex<()>>,
    /// An apply is queued and has not started yet (coalesces bursts).
    queued: Arc<AtomicBool>,
    /// Whether the bridge is up (set with the pool); nothing is applied before.
    bridge_up: Arc<AtomicBool>,
}

impl Routing {
    fn new(seam: Option<Arc<dyn DnsRouting>>) -> Self {
        let state = if seam.is_some() {
            RoutingState::Pending
        } else {
            RoutingState::Inactive
        };
        Self {
            seam,
            state: Arc::new(std::sync::Mutex::new(state)),
            gate: Arc::new(Mutex::new(())),
            queued: Arc::new(AtomicBool::new(false)),
            bridge_up: Arc::new(AtomicBool::new(false)),
        }
    }

    fn set(&self, state: RoutingState) {
        *self
            .state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner()) = state;
    }

    fn get(&self) -> RoutingState {
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone()
    }
}

/// What `daemon status` says about DNS.
#[derive(Debug, Clone)]
pub enum DnsStatus {
    Serving {
        udp: std::net::SocketAddr,
        tcp: std::net::SocketAddr,
    },
    Failed(String),
}

#[derive(Debug, thiserror::Error)]
pub enum PrepareNetworkError {
    #[error("setting up bridge {bridge}")]
    Bridge {
        bridge: String,
        #[source]
        source: banger_net::EnsureBridgeError,
    },
}

impl Network {
    /// Starts the DNS server; a bind failure is logged and reported by
    /// `daemon status`, not fatal: VMs still work by IP.
    pub async fn start(ops: Arc<dyn NetOps>, config: NetworkConfig) -> Self {
        let records = DnsRecords::new();
        let (dns, dns_status) = match DnsServer::start(config.dns_listen, records.clone()).await {
            Ok(server) => {
                let status = DnsStatus::Serving {
                    udp: server.udp_addr(),
                    tcp: server.tcp_addr(),
                };
                (Some(server), status)
            }
            Err(err) => {
                warn!(error = %err, "DNS server not started");
                (None, DnsStatus::Failed(err.to_string()))
            }
        };
        Self {
            ops,
            config,
            records,
            dns: Mutex::new(dns),
            dns_status,
            pool: OnceCell::new(),
            pool_space: 0,
            via: Via::Netlink,
            routing: Routing::new(None),
        }
    }

    /// Starts the network a daemon reaches through `access`.
    pub async fn start_with(access: Access) -> Self {
        let mut network = Self::start(access.ops, access.config).await;
        network.pool_space = access.pool_space;
        network.via = access.via;
        network
    }

    /// How this daemon reaches the host network.
    pub fn via(&self) -> &Via {
        &self.via
    }

    /// Routes `~vm` through `routing` (the daemon passes `resolvectl` when
    /// systemd-resolved runs, `None` otherwise).
    pub fn with_routing(mut self, routing: Option<Arc<dyn DnsRouting>>) -> Self {
        self.routing = Routing::new(routing);
        self
    }

    /// systemd-resolved runs, but routing through it would be wrong here
    /// (`reason` is shown by `doctor`).
    pub fn with_routing_skipped(mut self, reason: impl Into<String>) -> Self {
        self.routing = Routing::new(None);
        self.routing.set(RoutingState::Skipped(reason.into()));
        self
    }

    pub fn routing_state(&self) -> RoutingState {
        self.routing.get()
    }

    /// The address the host resolver should send `.vm` queries to: the DNS
    /// server's UDP address, with an unspecified IP made loopback.
    pub fn dns_server_addr(&self) -> Option<SocketAddr> {
        match &self.dns_status {
            DnsStatus::Serving { udp, .. } => {
                let mut addr = *udp;
                if addr.ip().is_unspecified() {
                    addr.set_ip(match addr.ip() {
                        IpAddr::V4(_) => IpAddr::V4(Ipv4Addr::LOCALHOST),
                        IpAddr::V6(_) => IpAddr::V6(std::net::Ipv6Addr::LOCALHOST),
                    });
                }
                Some(addr)
            }
            DnsStatus::Failed(_) => None,
        }
    }

    /// Queues a (re-)apply of `~vm` routing in the background, unless one is
    /// already queued. Nothing happens before the bridge is up or without a
    /// routing seam.
    fn refresh_routing(&self) {
        let Some(seam) = self.routing.seam.clone() else {
            return;
        };
        if !self.routing.bridge_up.load(Ordering::SeqCst) {
            return;
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        if self.routing.queued.swap(true, Ordering::SeqCst) {
            return;
        }
        let routing = self.routing.clone();
        let link = self.config.bridge.clone();
        let dns = self.dns_server_addr();
        runtime.spawn(async move {
            let _gate = routing.gate.lock().await;
            routing.queued.store(false, Ordering::SeqCst);
            let Some(dns) = dns else {
                routing.set(RoutingState::Failed(
                    "banger's DNS server is not serving".to_owned(),
                ));
                return;
            };
            match seam.apply(&link, dns).await {
                Ok(()) => routing.set(RoutingState::Applied { dns }),
                Err(err) => {
                    let detail = crate::errors::chain(&err);
                    warn!(error = %detail, %link, "cannot route .vm through systemd-resolved");
                    routing.set(RoutingState::Failed(detail));
                }
            }
        });
    }

    /// Waits until no routing change is queued or running (tests, shutdown).
    pub async fn routing_settled(&self) {
        loop {
            drop(self.routing.gate.lock().await);
            if !self.routing.queued.load(Ordering::SeqCst) {
                return;
            }
            tokio::task::yield_now().await;
        }
    }

    pub fn dns_status(&self) -> &DnsStatus {
        &self.dns_status
    }

    /// `udp://…` and `tcp://…`, or empty when DNS is not serving.
    pub fn dns_listeners(&self) -> Vec<String> {
        match &self.dns_status {
            DnsStatus::Serving { udp, tcp } => vec![format!("udp://{udp}"), format!("tcp://{tcp}")],
            DnsStatus::Failed(_) => Vec::new(),
        }
    }

    /// The bridge exists and the TAP pool runs (first call sets both up).
    pub async fn pool(&self) -> Result<&TapPool, PrepareNetworkError> {
        self.pool
            .get_or_try_init(|| async {
                let bridge = &self.config.bridge;
                let state = self
                    .ops
                    .ensure_bridge(bridge, self.config.subnet)
                    .await
                    .map_err(|source| PrepareNetworkError::Bridge {
                        bridge: bridge.clone(),
                        source,
                    })?;
                info!(%bridge, created = state.created, "bridge ready");
                self.routing.bridge_up.store(true, Ordering::SeqCst);
                self.refresh_routing();
                Ok(TapPool::start_in(
                    Arc::clone(&self.ops),
                    bridge.clone(),
                    self.config.tap_pool_size as usize,
                    self.pool_space,
                ))
            })
            .await
    }

    pub fn publish(&self, name: &Name, ip: Ipv4Addr) {
        self.records.set(name, ip);
        self.refresh_routing();
    }

    pub fn unpublish(&self, name: &Name) {
        self.records.remove(name);
    }

    /// Reverts DNS routing, stops DNS and deletes idle pool TAPs.
    pub async fn shutdown(&self) {
        self.routing_settled().await;
        if let Some(seam) = &self.routing.seam
            && matches!(
                self.routing.get(),
                RoutingState::Applied { .. } | RoutingState::Failed(_)
            )
        {
            let _gate = self.routing.gate.lock().await;
            let link = &self.config.bridge;
            match seam.revert(link).await {
                Ok(()) => self.routing.set(RoutingState::Pending),
                Err(err) => warn!(error = %err, %link, "cannot revert .vm routing"),
            }
        }
        if let Some(pool) = self.pool.get() {
            let deleted = pool.shutdown().await;
            info!(deleted, "TAP pool stopped");
        }
        if let Some(dns) = self.dns.lock().await.take()
            && let Err(err) = dns.shutdown().await
        {
            warn!(error = %err, "DNS server did not stop cleanly");
        }
    }
}
