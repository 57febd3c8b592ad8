//! The helper's methods: each a type pairing its wire name, params and
//! result ([`banger_rpc::Method`]), and the [`HelperRequest`] enum the server
//! decodes, generated from one list.
//!
//! The frames are banger-rpc's (newline-delimited JSON with a protocol
//! version, [`banger_rpc::RpcError`] answers) with a much smaller size
//! limit, [`MAX_FRAME_BYTES`]: no helper request needs more than a few
//! hundred bytes. Every method acts for the connecting uid only, so no
//! params name a user.

use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;

use banger_rpc::NoParams;
use ipnet::Ipv4Net;
use serde::{Deserialize, Serialize};

/// Largest request frame the helper reads, in bytes.
pub const MAX_FRAME_BYTES: usize = 16 * 1024;

/// The caller's network: its bridge and the bridge's address with the
/// subnet's prefix.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NetworkInfo {
    /// The uid the helper saw on the connection.
    pub uid: u32,
    pub bridge: String,
    /// Host address and prefix, e.g. `172.30.1.1/24`.
    pub address: Ipv4Net,
    /// The naming space for the caller's warm-pool TAPs
    /// ([`banger_net::TapPool::start_in`]): the subnet's index, 0 for root.
    pub pool_space: u8,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EnsureBridgeParams {
    pub name: String,
    pub address: Ipv4Net,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BridgeEnsured {
    pub index: u32,
    pub created: bool,
    pub address_added: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateTapParams {
    pub name: String,
    pub bridge: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TapCreated {
    /// False when an idle TAP of the caller's with that name was adopted.
    pub created: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RenameTapParams {
    pub from: String,
    pub to: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TapParams {
    pub name: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Existed {
    /// Whether there was something to remove.
    pub existed: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListTapsParams {
    pub prefix: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Names {
    pub names: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AddNatParams {
    pub vm_id: String,
    pub guest_ip: Ipv4Addr,
    pub bridge: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VmIdParams {
    pub vm_id: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Removed {
    pub removed: usize,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VmIds {
    pub vm_ids: Vec<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IpForward {
    /// Whether forwarding was off before this call.
    pub was_off: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApplyDnsParams {
    pub link: String,
    pub dns: SocketAddr,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LinkParams {
    pub link: String,
}

/// A sim guest to start: `banger-simvm --engine sim` as root, its sockets
/// given to the caller. All paths are in one directory of the caller's.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StartSimParams {
    /// The VMM id (Firecracker's `--id` rule).
    pub id: String,
    /// `--api-sock`: must not exist yet.
    pub api_socket: PathBuf,
    /// The guest's console: an existing file of the caller's, appended to.
    pub console_log: PathBuf,
    /// `--log-path`: an existing file of the caller's.
    pub log_path: Option<PathBuf>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SimStarted {
    pub pid: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PidParams {
    pub pid: u32,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FindSimParams {
    pub api_socket: PathBuf,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SimFound {
    pub pid: Option<u32>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VethParams {
    pub name: String,
}

/// A tree to build with debootstrap for the caller (see
/// [`crate::bootstrap`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DebootstrapParams {
    /// e.g. `debian:bookworm`.
    pub distro: String,
    pub mirror: String,
    pub profile: banger_model::image::ImageProfile,
    /// Packages beyond the profile's.
    pub packages: Vec<String>,
    /// `<caller's dir>/<32 hex digits>.rootfs`: must not exist.
    pub target: PathBuf,
    /// An existing file of the caller's; debootstrap's output goes there.
    pub log: PathBuf,
    /// The caller's `http_proxy` (packages are still checked against the
    /// distribution's keyring).
    pub proxy: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DebootstrapDone {
    /// The owners (other than root) the tree's files had before they were
    /// given to the caller.
    pub owners: Vec<banger_bootstrap::TreeOwner>,
}

/// Nothing to report.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Done {}

banger_rpc::protocol! {
    enum HelperRequest, unknown = "banger-helper has no method";
    /// The caller's bridge and subnet (no side effect).
    Network = "helper.network", NoParams => NetworkInfo;
    /// Creates (or completes) the caller's bridge.
    EnsureBridge = "helper.bridge.ensure", EnsureBridgeParams => BridgeEnsured;
    /// Creates a TAP owned by the caller on the caller's bridge.
    CreateTap = "helper.tap.create", CreateTapParams => TapCreated;
    /// Renames one of the caller's TAPs (warm pool → VM).
    RenameTap = "helper.tap.rename", RenameTapParams => Done;
    /// Deletes one of the caller's TAPs.
    DeleteTap = "helper.tap.delete", TapParams => Existed;
    /// The caller's TAPs whose names start with a prefix.
    ListTaps = "helper.tap.list", ListTapsParams => Names;
    /// Adds NAT for a guest address in the caller's subnet.
    AddNat = "helper.nat.add", AddNatParams => Done;
    /// Removes a VM's NAT rules, when they are the caller's.
    RemoveNat = "helper.nat.remove", VmIdParams => Removed;
    /// VM ids with NAT rules in the caller's subnet.
    ListNat = "helper.nat.list", NoParams => VmIds;
    /// Turns on IPv4 forwarding.
    EnableIpForward = "helper.ip_forward.enable", NoParams => IpForward;
    /// Routes `.vm` on the caller's bridge to a loopback DNS server.
    ApplyDns = "helper.dns.apply", ApplyDnsParams => Done;
    /// Reverts the DNS routing of the caller's bridge.
    RevertDns = "helper.dns.revert", LinkParams => Done;
    /// Starts a sim guest (`banger-simvm`, as root) for the caller.
    StartSim = "helper.sim.start", StartSimParams => SimStarted;
    /// Kills one of the caller's sim guests.
    KillSim = "helper.sim.kill", PidParams => Existed;
    /// The caller's sim guest serving an API socket.
    FindSim = "helper.sim.find", FindSimParams => SimFound;
    /// Deletes the host end of a sim guest's veth on the caller's bridge.
    DeleteSimVeth = "helper.sim.veth.delete", VethParams => Existed;
    /// Builds a tree with debootstrap and gives it to the caller.
    Debootstrap = "helper.debootstrap", DebootstrapParams => DebootstrapDone;
}

#[cfg(test)]
mod tests {
    use super::*;
    use banger_rpc::ErrorCode;
    use serde_json::Value;

    #[test]
    fn decodes_known_methods_and_tells_failures_apart() {
        let request = HelperRequest::decode(
            "helper.tap.create",
            serde_json::json!({"name": "btap-1", "bridge": "bbr-1000"}),
        )
        .unwrap();
        assert_eq!(
            request,
            HelperRequest::CreateTap(CreateTapParams {
                name: "btap-1".into(),
                bridge: "bbr-1000".into()
            })
        );
        assert_eq!(request.method(), "helper.tap.create");
        assert_eq!(
            HelperRequest::decode("helper.network", Value::Null).unwrap(),
            HelperRequest::Network(NoParams {})
        );
        let err = HelperRequest::decode("helper.rm_rf", Value::Null).unwrap_err();
        assert_eq!(err.code, ErrorCode::UnknownMethod);
        let err = HelperRequest::decode(
            "helper.tap.delete",
            serde_json::json!({"name": "btap-1", "uid": 0}),
        )
        .unwrap_err();
        assert_eq!(err.code, ErrorCode::InvalidParams, "unknown fields refused");
        assert!(HelperRequest::NAMES.contains(&"helper.nat.add"));
    }
}
