//! The daemon's network subsystem: the `.vm` DNS server (started with the
//! daemon), and the bridge with its warm TAP pool (set up on first need, so
//! a daemon that never runs a VM never touches host networking).

use std::net::Ipv4Addr;
use std::sync::Arc;

use banger_model::Name;
use banger_model::config::NetworkConfig;
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
                Ok(TapPool::start(
                    Arc::clone(&self.ops),
                    bridge.clone(),
                    self.config.tap_pool_size as usize,
                ))
            })
            .await
    }

    pub fn publish(&self, name: &Name, ip: Ipv4Addr) {
        self.records.set(name, ip);
    }

    pub fn unpublish(&self, name: &Name) {
        self.records.remove(name);
    }

    /// Stops DNS and deletes idle pool TAPs.
    pub async fn shutdown(&self) {
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
