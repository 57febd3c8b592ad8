//! banger's host networking: the bridge, per-VM TAPs and their warm pool,
//! guest IP allocation, per-VM NAT rules, and the `.vm` DNS server.
//!
//! The daemon drives the privileged parts through [`NetOps`]
//! ([`RealNetOps`] on the host, [`fake::FakeNetOps`] in unit tests), keeps a
//! [`TapPool`] on top of it, serves names with [`DnsServer`], and routes the
//! host resolver to it through a [`routing::DnsRouting`]. Everything acts on
//! the network namespace of the calling thread, which is how tests isolate
//! themselves (one fresh namespace per test).
//!
//! Layout:
//! - [`names`]: interface-name validation, `btap-<id>` / `btap-pool-<n>` naming.
//! - [`ipalloc`]: picking the next free guest address (pure).
//! - [`link`]: bridge and TAP operations over rtnetlink.
//! - `tun`: the `/dev/net/tun` ioctls that create persistent TAPs.
//! - [`nat`]: tagged MASQUERADE/FORWARD rules with `iptables`, and `ip_forward`.
//! - [`ops`]: the [`NetOps`] trait and [`RealNetOps`].
//! - [`fake`]: [`fake::FakeNetOps`], recording with failure injection.
//! - [`pool`]: the warm [`TapPool`].
//! - [`dns`]: the `.vm` [`DnsServer`] and its [`DnsRecords`].
//! - [`routing`]: the [`routing::DnsRouting`] seam (systemd-resolved).
//! - [`exec`]: the only module that starts processes.

pub mod dns;
pub mod exec;
pub mod fake;
pub mod ipalloc;
pub mod link;
pub mod names;
pub mod nat;
pub mod ops;
pub mod pool;
pub mod routing;
mod tun;

pub use dns::{DnsRecords, DnsServer, StartDnsError};
pub use ipalloc::{AllocateIpError, next_free_ip};
pub use link::{
    BridgeState, CreateTapError, DeleteTapError, EnsureBridgeError, ListLinksError, Netlink,
    RenameTapError, TapOwner,
};
pub use names::{pool_tap_name, vm_tap_name};
pub use nat::{AddNatError, IpForwardError, ListNatError, RemoveNatError};
pub use ops::{NetOps, RealNetOps};
pub use pool::{AcquireTapError, AcquiredTap, TapPool};
