//! `banger-helper`: the small root daemon that performs the few privileged
//! network effects for banger daemons running as their users, and the
//! client those daemons use to reach it.
//!
//! The helper listens on a root-owned socket (`/run/banger/helper.sock`,
//! mode 0660, group `banger`), checks each peer with `SO_PEERCRED` (root, or
//! a member of the group), and serves a narrow typed protocol: the caller's
//! bridge (per uid: `br-banger` for root, `bbr-<uid>` with a /24 of its own
//! for anyone else), TAPs owned by the caller (`TUNSETOWNER`) on that
//! bridge, NAT for guest addresses in the caller's subnet, IPv4
//! forwarding, DNS routing for the caller's bridge, and sim guests
//! (`banger-simvm` as root, its sockets given to the caller). Every argument is
//! checked against what that caller may touch; the effects themselves are
//! banger-net's code. It keeps no user data: what it made is marked in the
//! kernel (link aliases, subnets), so it survives its callers' deaths and
//! recognises its own objects after its own.
//!
//! Layout:
//! - [`protocol`]: the methods ([`banger_rpc::Method`] types), their params
//!   and results, [`protocol::HelperRequest`], the frame limit.
//! - [`caller`]: a caller's credentials, per-uid network, ownership marks.
//! - [`access`]: who may connect (root and the group).
//! - [`service`]: [`Helper`], the validated operations and their one
//!   error→wire mapping.
//! - [`serve`]: `banger-helper serve`: the socket, signals.
//! - [`server`]: the accept loop over an injected listener.
//! - [`sim`]: [`SimGuests`], sim guests (`banger-simvm`, as root) for
//!   callers.
//! - [`bootstrap`]: debootstrap into a caller's directory, the tree then
//!   given to the caller; [`bootstrap_client`]: [`HelperBootstrap`], the
//!   daemon's side.
//! - [`paths`]: paths a caller names, checked as the caller's.
//! - [`client`]: [`HelperClient`], and banger-net's [`banger_net::NetOps`]
//!   and [`banger_net::routing::DnsRouting`] over it.
//! - [`vmm`]: [`HelperVmm`], banger-firecracker's `Vmm` for a daemon that
//!   is not root (sim guests through the helper).

pub mod access;
pub mod bootstrap;
pub mod bootstrap_client;
pub mod caller;
pub mod client;
pub mod paths;
pub mod protocol;
pub mod serve;
pub mod server;
pub mod service;
pub mod sim;
pub mod vmm;

pub use access::{Access, DEFAULT_GROUP};
pub use bootstrap_client::HelperBootstrap;
pub use caller::{Caller, UserNetwork};
pub use client::{DEFAULT_SOCKET, HelperCallError, HelperClient, HelperDnsRouting, HelperNetOps};
pub use service::{Helper, HelperError};
pub use sim::SimGuests;
pub use vmm::HelperVmm;
