//! The daemon's side: [`HelperClient`] calls the helper's methods over one
//! connection; [`HelperNetOps`] and [`HelperDnsRouting`] implement
//! banger-net's seams over it, so a daemon that is not root only has to
//! choose them instead of [`banger_net::RealNetOps`] and
//! [`banger_net::routing::Resolvectl`].
//!
//! The seams connect afresh for every call: a helper restarted meanwhile
//! (or killed and started again) is simply reached on the next call.

use std::collections::BTreeSet;
use std::io;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};

use async_trait::async_trait;
use banger_model::Id;
use banger_net::link::{BridgeState, ListLinksError};
use banger_net::names::{validate_sim_veth_name, validate_tap_name};
use banger_net::routing::{ApplyDnsRoutingError, DnsRouting, RevertDnsRoutingError};
use banger_net::{
    AddNatError, CreateTapError, DeleteTapError, EnsureBridgeError, IpForwardError, ListNatError,
    NetOps, RemoveNatError, RenameTapError,
};
use banger_rpc::{CallError, Client, Method, NoParams};
use ipnet::Ipv4Net;
use tokio::net::UnixStream;

use crate::protocol::{
    AddNatParams, ApplyDnsParams, BridgeEnsured, CreateTapParams, EnsureBridgeParams, LinkParams,
    ListTapsParams, NetworkInfo, RenameTapParams, TapParams, VethParams, VmIdParams, method,
};

/// Where `banger-helper serve` listens unless told otherwise.
pub const DEFAULT_SOCKET: &str = banger_model::config::DEFAULT_HELPER_SOCKET;

/// Why a call to the helper failed.
#[derive(Debug, thiserror::Error)]
pub enum HelperCallError {
    #[error("cannot connect to banger-helper at {path}")]
    Connect {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("banger-helper: {method}")]
    Call {
        method: &'static str,
        #[source]
        source: CallError,
    },
}

impl HelperCallError {
    /// The helper's own error, when it answered with one.
    pub fn rpc(&self) -> Option<&banger_rpc::RpcError> {
        match self {
            Self::Call {
                source: CallError::Rpc(error),
                ..
            } => Some(error),
            _ => None,
        }
    }
}

/// One connection to the helper.
#[derive(Debug)]
pub struct HelperClient<S = UnixStream> {
    client: Client<S>,
}

impl HelperClient<UnixStream> {
    /// Connects to the helper's socket.
    pub async fn connect(path: &Path) -> Result<Self, HelperCallError> {
        let stream =
            UnixStream::connect(path)
                .await
                .map_err(|source| HelperCallError::Connect {
                    path: path.to_owned(),
                    source,
                })?;
        Ok(Self::new(stream))
    }
}

impl<S: tokio::io::AsyncRead + tokio::io::AsyncWrite> HelperClient<S> {
    /// A client over an established stream (a socket pair in tests).
    pub fn new(stream: S) -> Self {
        Self {
            client: Client::new(stream),
        }
    }

    /// Calls method `M`.
    pub async fn call<M: Method>(
        &mut self,
        params: M::Params,
    ) -> Result<M::Result, HelperCallError> {
        self.client
            .call::<M>(params, |_| {})
            .await
            .map_err(|source| HelperCallError::Call {
                method: M::NAME,
                source,
            })
    }

    /// The caller's bridge and subnet.
    pub async fn network(&mut self) -> Result<NetworkInfo, HelperCallError> {
        self.call::<method::Network>(NoParams {}).await
    }
}

/// [`NetOps`] through the helper at a socket path.
#[derive(Debug, Clone)]
pub struct HelperNetOps {
    socket: PathBuf,
}

/// [`DnsRouting`] through the helper at a socket path.
#[derive(Debug, Clone)]
pub struct HelperDnsRouting {
    socket: PathBuf,
}

fn io_error(error: HelperCallError) -> io::Error {
    let kind = match error.rpc().map(|rpc| rpc.code) {
        Some(banger_rpc::ErrorCode::PermissionDenied) => io::ErrorKind::PermissionDenied,
        Some(banger_rpc::ErrorCode::InvalidArgument) => io::ErrorKind::InvalidInput,
        _ => io::ErrorKind::Other,
    };
    io::Error::new(kind, error)
}

impl HelperNetOps {
    pub fn new(socket: impl Into<PathBuf>) -> Self {
        Self {
            socket: socket.into(),
        }
    }

    async fn call<M: Method>(&self, params: M::Params) -> Result<M::Result, io::Error> {
        let mut client = HelperClient::connect(&self.socket)
            .await
            .map_err(io_error)?;
        client.call::<M>(params).await.map_err(io_error)
    }
}

impl HelperDnsRouting {
    pub fn new(socket: impl Into<PathBuf>) -> Self {
        Self {
            socket: socket.into(),
        }
    }
}

#[async_trait]
impl NetOps for HelperNetOps {
    async fn ensure_bridge(
        &self,
        name: &str,
        address: Ipv4Net,
    ) -> Result<BridgeState, EnsureBridgeError> {
        let state: BridgeEnsured = self
            .call::<method::EnsureBridge>(EnsureBridgeParams {
                name: name.to_owned(),
                address,
            })
            .await
            .map_err(|source| EnsureBridgeError::Netlink {
                name: name.to_owned(),
                step: "ask banger-helper to make",
                source,
            })?;
        Ok(BridgeState {
            index: state.index,
            created: state.created,
            address_added: state.address_added,
        })
    }

    async fn create_tap(&self, name: &str, bridge: &str) -> Result<bool, CreateTapError> {
        validate_tap_name(name).map_err(CreateTapError::InvalidName)?;
        let created = self
            .call::<method::CreateTap>(CreateTapParams {
                name: name.to_owned(),
                bridge: bridge.to_owned(),
            })
            .await
            .map_err(|source| CreateTapError::Netlink {
                name: name.to_owned(),
                step: "ask banger-helper to create",
                source,
            })?;
        Ok(created.created)
    }

    async fn rename_tap(&self, from: &str, to: &str) -> Result<(), RenameTapError> {
        self.call::<method::RenameTap>(RenameTapParams {
            from: from.to_owned(),
            to: to.to_owned(),
        })
        .await
        .map_err(|source| RenameTapError::Netlink {
            from: from.to_owned(),
            to: to.to_owned(),
            step: "ask banger-helper to rename",
            source,
        })?;
        Ok(())
    }

    async fn delete_tap(&self, name: &str) -> Result<bool, DeleteTapError> {
        validate_tap_name(name).map_err(DeleteTapError::InvalidName)?;
        let existed = self
            .call::<method::DeleteTap>(TapParams {
                name: name.to_owned(),
            })
            .await
            .map_err(|source| DeleteTapError::Netlink {
                name: name.to_owned(),
                source,
            })?;
        Ok(existed.existed)
    }

    async fn delete_sim_veth(&self, name: &str) -> Result<bool, DeleteTapError> {
        validate_sim_veth_name(name).map_err(DeleteTapError::InvalidName)?;
        let existed = self
            .call::<method::DeleteSimVeth>(VethParams {
                name: name.to_owned(),
            })
            .await
            .map_err(|source| DeleteTapError::Netlink {
                name: name.to_owned(),
                source,
            })?;
        Ok(existed.existed)
    }

    /// The caller's own TAPs only: other users' links are none of its
    /// business (and the helper would refuse to touch them).
    async fn list_links(&self, prefix: &str) -> Result<Vec<String>, ListLinksError> {
        let names = self
            .call::<method::ListTaps>(ListTapsParams {
                prefix: prefix.to_owned(),
            })
            .await
            .map_err(ListLinksError::Netlink)?;
        Ok(names.names)
    }

    async fn add_vm_nat(
        &self,
        vm_id: &Id,
        guest_ip: Ipv4Addr,
        bridge: &str,
    ) -> Result<(), AddNatError> {
        self.call::<method::AddNat>(AddNatParams {
            vm_id: vm_id.to_string(),
            guest_ip,
            bridge: bridge.to_owned(),
        })
        .await
        .map_err(|source| AddNatError::Helper {
            vm_id: vm_id.to_string(),
            source,
        })?;
        Ok(())
    }

    async fn remove_vm_nat(&self, vm_id: &Id) -> Result<usize, RemoveNatError> {
        let removed = self
            .call::<method::RemoveNat>(VmIdParams {
                vm_id: vm_id.to_string(),
            })
            .await
            .map_err(|source| RemoveNatError::Helper {
                vm_id: vm_id.to_string(),
                source,
            })?;
        Ok(removed.removed)
    }

    async fn list_nat_tagged(&self) -> Result<BTreeSet<Id>, ListNatError> {
        let ids = self
            .call::<method::ListNat>(NoParams {})
            .await
            .map_err(ListNatError::Helper)?;
        Ok(ids.vm_ids.into_iter().map(Id::from_stored).collect())
    }

    async fn enable_ip_forward(&self) -> Result<bool, IpForwardError> {
        let answer = self
            .call::<method::EnableIpForward>(NoParams {})
            .await
            .map_err(IpForwardError::Write)?;
        Ok(answer.was_off)
    }
}

#[async_trait]
impl DnsRouting for HelperDnsRouting {
    async fn apply(&self, link: &str, dns: SocketAddr) -> Result<(), ApplyDnsRoutingError> {
        let result = async {
            let mut client = HelperClient::connect(&self.socket).await?;
            client
                .call::<method::ApplyDns>(ApplyDnsParams {
                    link: link.to_owned(),
                    dns,
                })
                .await
        }
        .await;
        result
            .map(|_| ())
            .map_err(|error| ApplyDnsRoutingError::Helper {
                link: link.to_owned(),
                dns,
                source: io_error(error),
            })
    }

    async fn revert(&self, link: &str) -> Result<(), RevertDnsRoutingError> {
        let result = async {
            let mut client = HelperClient::connect(&self.socket).await?;
            client
                .call::<method::RevertDns>(LinkParams {
                    link: link.to_owned(),
                })
                .await
        }
        .await;
        result
            .map(|_| ())
            .map_err(|error| RevertDnsRoutingError::Helper {
                link: link.to_owned(),
                source: io_error(error),
            })
    }
}
