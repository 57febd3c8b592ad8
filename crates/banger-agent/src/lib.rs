//! `banger-vsock-agent`: the small HTTP server inside every banger guest.
//!
//! It answers `GET /healthz` (the agent is up, and its version) and
//! `GET /ports` (listening TCP and bound UDP sockets with their processes,
//! read from `/proc`), over vsock in a Firecracker guest or over a unix socket
//! in a banger-simvm guest. The wire types live in `banger_guest::agent`.
//!
//! Layout:
//! - [`listen`]: `--listen vsock:PORT | unix:PATH`, binding and serving.
//! - [`server`]: the axum router.
//! - [`ports`]: listening sockets from `/proc/net/*` and `/proc/<pid>/fd`.
//! - [`session`]: `banger-session`, the guard around an SSH session's command.
//! - [`exec`]: the only module that starts processes.

mod exec;
pub mod listen;
pub mod ports;
pub mod server;
pub mod session;

pub use listen::{BindError, BoundListener, ListenAddr, ParseListenAddrError, ServeError};
