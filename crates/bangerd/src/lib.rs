//! `bangerd`: the per-user daemon that owns banger's state and host
//! resources and serves the CLI over a unix socket.
//!
//! [`server::serve`] takes an already-bound listener and a shutdown token, so
//! tests can run a daemon in-process on a temp socket. The protocol itself is
//! `banger_rpc`; [`daemon::Daemon`] implements one handler over its enums.
//!
//! Layout:
//! - [`server`]: accept loop, peer credential check, framing, per-request
//!   cancellation when the client disconnects.
//! - [`daemon`]: the shared context and request dispatch.
//! - [`services`]: one module per operation (`vm_list`, `daemon_status`, …).
//! - [`instance`]: the single-instance lock and socket binding.
//! - [`binaries`]: finding the agent and simvm binaries.
//! - [`guest_install`]: banger's guest files into ext4 images.
//! - [`logging`]: JSON logs to the daemon's log file.
//! - [`network`]: DNS server, bridge and TAP pool.
//! - [`vm_locks`]: per-VM locks.

pub mod binaries;
pub mod daemon;
pub mod guest_install;
pub mod instance;
pub mod logging;
pub mod network;
pub mod server;
pub mod services;
pub mod vm_locks;

pub use daemon::Daemon;
pub use server::{EventSink, Handler, serve};
