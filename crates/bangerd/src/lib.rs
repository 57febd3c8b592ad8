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
//! - [`errors`]: `ServiceError`, what every service returns, and its one
//!   mapping to wire errors (codes, messages, hints; a full disk).
//! - [`disk_space`]: free space against what VM disks may grow to.
//! - [`services`]: one module per operation (`vm_list`, `daemon_status`, …).
//! - [`instance`]: the single-instance lock and socket binding.
//! - [`binaries`]: finding the agent and simvm binaries.
//! - [`guest_install`]: banger's guest files into ext4 images.
//! - [`images`]: HTTP, catalog, staging and naming shared by image services.
//! - [`logging`]: JSON logs to the daemon's log file.
//! - [`network`]: DNS server, bridge and TAP pool.
//! - [`reconcile`]: store and host brought back into agreement at start.
//! - [`vm_locks`]: per-VM locks.
//! - [`vm`]: disks, boot, halt and exit watching shared by the VM services.
//! - [`undo`]: rollback of multi-step setups.
//! - [`ssh`]: the managed SSH key and banger's ssh_config.
//! - [`file_sync`]: `[[file_sync]]` entries into the work disk.
//! - [`forward`]: published ports, forwarded from the host into guests.
//! - [`git_identity`]: the host's git identity into the guest's `.gitconfig`.
//! - [`exec`]: the processes the daemon starts itself.

pub mod binaries;
pub mod daemon;
pub mod disk_space;
pub mod errors;
pub mod exec;
pub mod file_sync;
pub mod forward;
pub mod git_identity;
pub mod guest_install;
pub mod images;
pub mod instance;
pub mod logging;
pub mod network;
pub mod reconcile;
pub mod server;
pub mod services;
pub mod ssh;
pub mod undo;
pub mod vm;
pub mod vm_locks;

pub use daemon::Daemon;
pub use server::{EventSink, Handler, serve};
