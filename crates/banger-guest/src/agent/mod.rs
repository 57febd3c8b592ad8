//! The guest agent's protocol, shared by `banger-vsock-agent` and the host.
//!
//! The agent serves HTTP/1.1 on vsock port [`AGENT_VSOCK_PORT`]:
//! - `GET /healthz` → 200, [`Health`]
//! - `GET /ports` → 200, a JSON array of [`Listener`]
//!
//! The host reaches it through Firecracker's hybrid vsock unix socket
//! ([`client::AgentClient::hybrid_vsock`]). banger-simvm serves the same host
//! socket and forwards port `P` to the guest's unix socket
//! [`sim_guest_listener_path`]`(P)`.

use serde::{Deserialize, Serialize};
use std::fmt;
use std::net::IpAddr;

pub mod client;

pub use client::{AgentClient, AgentEndpoint, AgentRequestError, AgentStep, VsockHandshakeError};

/// The vsock port the agent listens on in every guest.
pub const AGENT_VSOCK_PORT: u32 = 1024;
/// Route of the health check.
pub const HEALTHZ_ROUTE: &str = "/healthz";
/// Route of the listening-sockets list.
pub const PORTS_ROUTE: &str = "/ports";
pub use banger_model::contract::{SIM_VSOCK_DIR, sim_guest_listener_path};

/// `GET /healthz`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Health {
    /// `ok` when the agent serves requests.
    pub status: String,
    /// The agent's version (banger's crate version).
    pub version: String,
}

impl Health {
    /// A healthy agent of `version`.
    pub fn ok(version: impl Into<String>) -> Self {
        Self {
            status: "ok".to_owned(),
            version: version.into(),
        }
    }

    /// Whether the agent reported `ok`.
    pub fn is_ok(&self) -> bool {
        self.status == "ok"
    }
}

/// Transport protocol of a [`Listener`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Proto {
    /// A listening TCP socket.
    Tcp,
    /// A bound, unconnected UDP socket.
    Udp,
}

impl fmt::Display for Proto {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Proto::Tcp => "tcp",
            Proto::Udp => "udp",
        })
    }
}

/// One socket that accepts traffic in the guest, from `GET /ports`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Listener {
    /// TCP or UDP.
    pub proto: Proto,
    /// Local address: `0.0.0.0` / `::` for every address.
    pub address: IpAddr,
    /// Local port.
    pub port: u16,
    /// The (lowest) pid of the processes holding the socket, when one was found.
    pub pid: Option<u32>,
    /// That process's name (`/proc/<pid>/comm`).
    pub process: Option<String>,
    /// That process's command line, arguments joined by spaces.
    pub command: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listener_json_shape() {
        let listener = Listener {
            proto: Proto::Udp,
            address: "::".parse().expect("valid address"),
            port: 53,
            pid: Some(7),
            process: Some("dnsd".into()),
            command: Some("dnsd -f".into()),
        };
        let json = serde_json::to_value(&listener).expect("serialises");
        assert_eq!(
            json,
            serde_json::json!({
                "proto": "udp", "address": "::", "port": 53, "pid": 7,
                "process": "dnsd", "command": "dnsd -f"
            })
        );
        let back: Listener = serde_json::from_value(json).expect("deserialises");
        assert_eq!(back, listener);
    }

    #[test]
    fn sim_listener_path_names_the_port() {
        assert_eq!(
            sim_guest_listener_path(AGENT_VSOCK_PORT),
            std::path::PathBuf::from("/run/banger/vsock/1024.sock")
        );
    }
}
