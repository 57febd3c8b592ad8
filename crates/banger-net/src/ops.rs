//! [`NetOps`]: the privileged network operations the daemon performs, behind
//! one narrow trait, and [`RealNetOps`], which performs them on the host.
//!
//! The daemon holds an `Arc<dyn NetOps>`; its unit tests pass a
//! [`FakeNetOps`](crate::fake::FakeNetOps) instead and inject failures to
//! exercise rollback paths without root.

use std::collections::BTreeSet;
use std::fmt;
use std::net::Ipv4Addr;

use async_trait::async_trait;
use banger_model::Id;
use ipnet::Ipv4Net;

use crate::link::{
    BridgeState, ConnectError, CreateTapError, DeleteTapError, EnsureBridgeError, ListLinksError,
    Netlink, RenameTapError,
};
use crate::nat::{self, AddNatError, IpForwardError, Iptables, ListNatError, RemoveNatError};

/// The privileged network operations banger performs.
///
/// Every TAP name must carry banger's `btap-` prefix; implementations refuse
/// anything else.
#[async_trait]
pub trait NetOps: Send + Sync + fmt::Debug {
    /// Makes sure the bridge exists with `address` (host address + prefix)
    /// and is up; idempotent.
    async fn ensure_bridge(
        &self,
        name: &str,
        address: Ipv4Net,
    ) -> Result<BridgeState, EnsureBridgeError>;

    /// Creates persistent TAP `name` (adopting an unused one of that name),
    /// attaches it to `bridge` and sets it up. Returns whether it was created.
    async fn create_tap(&self, name: &str, bridge: &str) -> Result<bool, CreateTapError>;

    /// Renames TAP `from` to `to` (down, rename, up).
    async fn rename_tap(&self, from: &str, to: &str) -> Result<(), RenameTapError>;

    /// Deletes TAP `name`; `Ok(false)` when it did not exist.
    async fn delete_tap(&self, name: &str) -> Result<bool, DeleteTapError>;

    /// Deletes the host end of a banger-simvm veth (`bsv…`); `Ok(false)`
    /// when it did not exist.
    async fn delete_sim_veth(&self, name: &str) -> Result<bool, DeleteTapError>;

    /// Names of links starting with `prefix`, sorted.
    async fn list_links(&self, prefix: &str) -> Result<Vec<String>, ListLinksError>;

    /// Adds the VM's MASQUERADE and FORWARD rules, tagged `banger:<vm-id>`,
    /// replacing any it already had.
    async fn add_vm_nat(
        &self,
        vm_id: &Id,
        guest_ip: Ipv4Addr,
        bridge: &str,
    ) -> Result<(), AddNatError>;

    /// Removes the VM's tagged rules; returns how many. None left is `Ok(0)`.
    async fn remove_vm_nat(&self, vm_id: &Id) -> Result<usize, RemoveNatError>;

    /// VM ids that have tagged rules.
    async fn list_nat_tagged(&self) -> Result<BTreeSet<Id>, ListNatError>;

    /// Turns on `net.ipv4.ip_forward`; returns whether it was off.
    async fn enable_ip_forward(&self) -> Result<bool, IpForwardError>;
}

/// [`NetOps`] on the host: rtnetlink and TUN ioctls for links, the
/// `iptables` binary for NAT, `/proc/sys` for forwarding.
///
/// Everything happens in the network namespace of the thread that called
/// [`RealNetOps::connect`] (netlink) or that runs the call (iptables
/// children, `/proc/sys`); the daemon keeps both the same.
#[derive(Debug, Clone)]
pub struct RealNetOps {
    netlink: Netlink,
    iptables: Iptables,
}

impl RealNetOps {
    /// Opens the netlink socket in the calling thread's network namespace,
    /// spawns its connection task (call it from within a tokio runtime), and
    /// uses `iptables` from `PATH`.
    pub fn connect() -> Result<Self, ConnectError> {
        Ok(Self {
            netlink: Netlink::connect()?,
            iptables: Iptables::default(),
        })
    }

    /// Uses another `iptables` program (e.g. a configured absolute path).
    pub fn with_iptables(mut self, iptables: Iptables) -> Self {
        self.iptables = iptables;
        self
    }

    /// The netlink connection, for look-ups beyond [`NetOps`].
    pub fn netlink(&self) -> &Netlink {
        &self.netlink
    }

    pub fn iptables(&self) -> &Iptables {
        &self.iptables
    }
}

#[async_trait]
impl NetOps for RealNetOps {
    async fn ensure_bridge(
        &self,
        name: &str,
        address: Ipv4Net,
    ) -> Result<BridgeState, EnsureBridgeError> {
        self.netlink.ensure_bridge(name, address).await
    }

    async fn create_tap(&self, name: &str, bridge: &str) -> Result<bool, CreateTapError> {
        self.netlink.create_tap(name, bridge).await
    }

    async fn rename_tap(&self, from: &str, to: &str) -> Result<(), RenameTapError> {
        self.netlink.rename_tap(from, to).await
    }

    async fn delete_tap(&self, name: &str) -> Result<bool, DeleteTapError> {
        self.netlink.delete_tap(name).await
    }

    async fn delete_sim_veth(&self, name: &str) -> Result<bool, DeleteTapError> {
        self.netlink.delete_sim_veth(name).await
    }

    async fn list_links(&self, prefix: &str) -> Result<Vec<String>, ListLinksError> {
        self.netlink.list_links(prefix).await
    }

    async fn add_vm_nat(
        &self,
        vm_id: &Id,
        guest_ip: Ipv4Addr,
        bridge: &str,
    ) -> Result<(), AddNatError> {
        self.iptables.add_vm_nat(vm_id, guest_ip, bridge).await
    }

    async fn remove_vm_nat(&self, vm_id: &Id) -> Result<usize, RemoveNatError> {
        self.iptables.remove_vm_nat(vm_id).await
    }

    async fn list_nat_tagged(&self) -> Result<BTreeSet<Id>, ListNatError> {
        self.iptables.list_tagged().await
    }

    async fn enable_ip_forward(&self) -> Result<bool, IpForwardError> {
        nat::enable_ip_forward()
    }
}
