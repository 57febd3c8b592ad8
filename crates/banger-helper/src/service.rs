//! [`Helper`]: the privileged operations, each validated against what the
//! calling uid may touch, performed through banger-net's own code.
//!
//! What a caller owns is read from the kernel, not from a file: a TAP the
//! helper made has the caller as its TUN owner (set before the TAP is made
//! persistent, so no TAP of the helper's ever lacks it) and the alias
//! `banger-helper uid=<uid>` for people reading `ip link`; a user's bridge
//! is named after its uid; a NAT rule belongs to whoever's subnet its guest
//! address is in. The in-memory registry of TAPs is rebuilt from those
//! marks when the helper starts, so a helper killed with `kill -9`, even in
//! the middle of making a TAP, recognises everything it made. banger's own
//! root daemon makes TAPs without an owner: those are never a caller's.

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;
use std::sync::Arc;

use banger_model::Id;
use banger_net::link::{LinkStatus, ListLinksError};
use banger_net::names::{
    InvalidIfName, SIM_VETH_PREFIX, TAP_PREFIX, validate_sim_veth_name, validate_tap_name,
};
use banger_net::nat::Rule;
use banger_net::routing::{ApplyDnsRoutingError, DnsRouting, RevertDnsRoutingError};
use banger_net::{
    AddNatError, CreateTapError, DeleteTapError, EnsureBridgeError, IpForwardError, ListNatError,
    NetOps, RealNetOps, RemoveNatError, RenameTapError, TapOwner,
};
use banger_rpc::{ErrorCode, Method, NoParams, RpcError};
use serde_json::Value;
use tokio::sync::Mutex;

use crate::bootstrap::{BootstrapError, Bootstraps};
use crate::caller::{
    Caller, USER_BRIDGE_PREFIX, UserNetwork, alias_uid, owner_alias, user_bridge_uid,
};
use crate::protocol::{
    AddNatParams, ApplyDnsParams, BridgeEnsured, CreateTapParams, Done, EnsureBridgeParams,
    Existed, HelperRequest, IpForward, LinkParams, ListTapsParams, Names, NetworkInfo, Removed,
    RenameTapParams, TapCreated, TapParams, VethParams, VmIdParams, VmIds, method,
};
use crate::sim::{SimError, SimGuests};

/// Why the helper refused or failed a request. [`HelperError::to_rpc`] is
/// the one place these become wire errors.
#[derive(Debug, thiserror::Error)]
pub enum HelperError {
    #[error("invalid interface name")]
    InvalidName(#[source] InvalidIfName),
    #[error("bridge {got:?} is not uid {uid}'s; its bridge is {expected}")]
    WrongBridge {
        uid: u32,
        got: String,
        expected: String,
    },
    #[error("address {got} is not uid {uid}'s bridge address {expected}")]
    WrongBridgeAddress {
        uid: u32,
        got: ipnet::Ipv4Net,
        expected: ipnet::Ipv4Net,
    },
    #[error("address {ip} is not a guest address of uid {uid}'s subnet {subnet}")]
    OutsideSubnet {
        uid: u32,
        ip: Ipv4Addr,
        subnet: ipnet::Ipv4Net,
    },
    #[error("TAP name {0:?} has characters other than letters, digits and '-'")]
    TapNameCharacters(String),
    #[error("vm id {0:?} is not a hex id")]
    InvalidVmId(String),
    #[error("DNS server {0} is not on loopback")]
    DnsNotLoopback(std::net::SocketAddr),
    #[error("TAP {name} belongs to uid {owner}, not to uid {uid}")]
    NotYourTap { name: String, owner: u32, uid: u32 },
    #[error("link {name} exists and banger-helper did not make it for uid {uid}")]
    ForeignLink { name: String, uid: u32 },
    #[error("link {name} already exists")]
    LinkExists { name: String },
    #[error("uid {uid} already has {limit} TAPs, the most banger-helper makes for one user")]
    TooManyTaps { uid: u32, limit: usize },
    #[error("NAT rules tagged for vm {vm_id} are outside uid {uid}'s subnet {subnet}")]
    NotYourRules {
        vm_id: String,
        uid: u32,
        subnet: ipnet::Ipv4Net,
    },
    #[error(
        "uid {uid}'s subnet {subnet} is in use by uid {other}'s bridge {bridge} (uids 255 apart share a subnet)"
    )]
    SubnetTaken {
        uid: u32,
        subnet: ipnet::Ipv4Net,
        other: u32,
        bridge: String,
    },
    #[error("cannot look up link {name}")]
    LookUp {
        name: String,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot mark bridge {name} as uid {uid}'s")]
    MarkBridge {
        name: String,
        uid: u32,
        #[source]
        source: std::io::Error,
    },
    #[error("veth {name} is not on uid {uid}'s bridge {bridge}")]
    NotYourVeth {
        name: String,
        uid: u32,
        bridge: String,
    },
    #[error(transparent)]
    Sim(#[from] SimError),
    #[error(transparent)]
    Bootstrap(#[from] BootstrapError),
    #[error(transparent)]
    ListLinks(#[from] ListLinksError),
    #[error(transparent)]
    EnsureBridge(#[from] EnsureBridgeError),
    #[error(transparent)]
    CreateTap(#[from] CreateTapError),
    #[error(transparent)]
    RenameTap(#[from] RenameTapError),
    #[error(transparent)]
    DeleteTap(#[from] DeleteTapError),
    #[error(transparent)]
    AddNat(Box<AddNatError>),
    #[error(transparent)]
    RemoveNat(Box<RemoveNatError>),
    #[error(transparent)]
    ListNat(Box<ListNatError>),
    #[error(transparent)]
    IpForward(#[from] IpForwardError),
    #[error(transparent)]
    ApplyDns(Box<ApplyDnsRoutingError>),
    #[error(transparent)]
    RevertDns(Box<RevertDnsRoutingError>),
}

impl From<AddNatError> for HelperError {
    fn from(error: AddNatError) -> Self {
        Self::AddNat(Box::new(error))
    }
}

impl From<RemoveNatError> for HelperError {
    fn from(error: RemoveNatError) -> Self {
        Self::RemoveNat(Box::new(error))
    }
}

impl From<ListNatError> for HelperError {
    fn from(error: ListNatError) -> Self {
        Self::ListNat(Box::new(error))
    }
}

impl From<ApplyDnsRoutingError> for HelperError {
    fn from(error: ApplyDnsRoutingError) -> Self {
        Self::ApplyDns(Box::new(error))
    }
}

impl From<RevertDnsRoutingError> for HelperError {
    fn from(error: RevertDnsRoutingError) -> Self {
        Self::RevertDns(Box::new(error))
    }
}

impl HelperError {
    /// The wire error: a stable code, the whole cause chain as the message
    /// (the caller cannot see our sources), and a hint where one helps.
    pub fn to_rpc(&self) -> RpcError {
        let code = match self {
            Self::InvalidName(_)
            | Self::WrongBridge { .. }
            | Self::WrongBridgeAddress { .. }
            | Self::OutsideSubnet { .. }
            | Self::TapNameCharacters(_)
            | Self::InvalidVmId(_)
            | Self::DnsNotLoopback(_) => ErrorCode::InvalidArgument,
            Self::NotYourTap { .. }
            | Self::ForeignLink { .. }
            | Self::NotYourRules { .. }
            | Self::NotYourVeth { .. } => ErrorCode::PermissionDenied,
            Self::Sim(error) => error.code(),
            Self::Bootstrap(error) => error.code(),
            Self::LinkExists { .. } | Self::SubnetTaken { .. } => ErrorCode::Conflict,
            Self::TooManyTaps { .. } => ErrorCode::ResourceExhausted,
            Self::CreateTap(CreateTapError::BridgeMissing { .. }) => ErrorCode::FailedPrecondition,
            Self::CreateTap(CreateTapError::InvalidName(_))
            | Self::RenameTap(RenameTapError::InvalidName(_))
            | Self::DeleteTap(DeleteTapError::InvalidName(_))
            | Self::EnsureBridge(EnsureBridgeError::InvalidName(_)) => ErrorCode::InvalidArgument,
            Self::RenameTap(RenameTapError::NotFound { .. }) => ErrorCode::NotFound,
            _ => ErrorCode::Internal,
        };
        let mut message = self.to_string();
        let mut source = std::error::Error::source(self);
        while let Some(cause) = source {
            message.push_str(": ");
            message.push_str(&cause.to_string());
            source = cause.source();
        }
        let error = RpcError::new(code, message);
        match self {
            Self::SubnetTaken { other, .. } => error.with_hint(format!(
                "one of the two users must stop banger so its bridge {USER_BRIDGE_PREFIX}{other} goes away, or run banger as another uid"
            )),
            Self::WrongBridge { .. } | Self::WrongBridgeAddress { .. } => error.with_hint(
                "ask banger-helper for your network (helper.network) instead of configuring one",
            ),
            Self::Sim(SimError::Disabled(_)) => error.with_hint(
                "use --vmm qemu or firecracker, run banger as root, or ask the host's admin to run banger-helper with banger-simvm beside it (and without --no-sim)",
            ),
            _ => error,
        }
    }
}

/// The most TAPs the helper keeps for one uid (a VM needs one; the warm
/// pool a few), so no member can exhaust the host's interfaces.
pub const MAX_TAPS_PER_UID: usize = 1024;

/// Who a TAP of a given name belongs to, as far as the helper can tell.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum TapState {
    Absent,
    /// Made by the helper for this uid.
    Made(u32),
    /// Exists, but the helper did not make it (root's daemon, another tool).
    Foreign,
}

/// The helper's operations. Cheap to share behind an `Arc`.
#[derive(Debug)]
pub struct Helper {
    ops: RealNetOps,
    routing: Arc<dyn DnsRouting>,
    /// TAP name → the uid it was made for. Held across each TAP operation,
    /// so checks and effects do not interleave.
    taps: Mutex<BTreeMap<String, u32>>,
    /// Held across each NAT operation, for the same reason.
    nat: Mutex<()>,
    sims: SimGuests,
    bootstraps: Bootstraps,
}

/// Where the helper keeps debootstrap's `.deb` cache unless told otherwise.
pub const DEFAULT_CACHE_DIR: &str = "/var/cache/banger-helper";

/// The uid a link was made for by the helper: its TUN owner, else its
/// alias (a bridge).
fn made_for(link: &LinkStatus) -> Option<u32> {
    link.tun_owner
        .or_else(|| link.alias.as_deref().and_then(alias_uid))
}

/// Checks a TAP name a caller sent: banger's prefix, and nothing but
/// letters, digits and `-` (the kernel would expand a `%d` in a new
/// device's name, making a TAP under a name nobody asked for).
fn tap_name(name: &str) -> Result<(), HelperError> {
    validate_tap_name(name).map_err(HelperError::InvalidName)?;
    if !name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-') {
        return Err(HelperError::TapNameCharacters(name.to_owned()));
    }
    Ok(())
}

fn reply<M: Method>(result: M::Result) -> Value {
    serde_json::to_value(result).expect("results always serialise")
}

fn rule_address(rule: &Rule) -> Option<Ipv4Addr> {
    let mut words = rule.spec.iter();
    while let Some(word) = words.next() {
        if word == "-s" || word == "-d" {
            let value = words.next()?;
            let ip = value.split('/').next()?;
            return ip.parse().ok();
        }
    }
    None
}

impl Helper {
    /// A helper acting in the calling thread's network namespace through
    /// `ops`, and routing DNS through `routing`. Rebuilds the registry from
    /// the TAPs an earlier helper left.
    pub async fn start(
        ops: RealNetOps,
        routing: Arc<dyn DnsRouting>,
    ) -> Result<Self, ListLinksError> {
        let mut taps = BTreeMap::new();
        for link in ops.netlink().links().await? {
            if !link.name.starts_with(TAP_PREFIX) {
                continue;
            }
            if let Some(uid) = made_for(&link) {
                taps.insert(link.name, uid);
            }
        }
        if !taps.is_empty() {
            tracing::info!(
                count = taps.len(),
                "recognised TAPs made by an earlier helper"
            );
        }
        Ok(Self {
            ops,
            routing,
            taps: Mutex::new(taps),
            nat: Mutex::new(()),
            sims: SimGuests::disabled("started without banger-simvm"),
            bootstraps: Bootstraps::new(DEFAULT_CACHE_DIR),
        })
    }

    /// Keeps debootstrap's `.deb` cache in `cache_dir`.
    pub fn with_cache_dir(mut self, cache_dir: impl Into<std::path::PathBuf>) -> Self {
        self.bootstraps = Bootstraps::new(cache_dir);
        self
    }

    /// Starts sim guests for callers with `sims`.
    pub fn with_sims(mut self, sims: SimGuests) -> Self {
        self.sims = sims;
        self
    }

    /// The TAPs the helper knows it made, with their uids.
    pub async fn registered_taps(&self) -> BTreeMap<String, u32> {
        self.taps.lock().await.clone()
    }

    /// Performs `request` for `caller` and returns its typed result as JSON.
    #[tracing::instrument(skip_all, fields(uid = caller.uid, method = request.method()))]
    pub async fn handle(
        &self,
        caller: &Caller,
        request: HelperRequest,
    ) -> Result<Value, HelperError> {
        let result = match request {
            HelperRequest::Network(NoParams {}) => reply::<method::Network>(self.network(caller)),
            HelperRequest::EnsureBridge(params) => {
                reply::<method::EnsureBridge>(self.ensure_bridge(caller, params).await?)
            }
            HelperRequest::CreateTap(params) => {
                reply::<method::CreateTap>(self.create_tap(caller, params).await?)
            }
            HelperRequest::RenameTap(params) => {
                reply::<method::RenameTap>(self.rename_tap(caller, params).await?)
            }
            HelperRequest::DeleteTap(params) => {
                reply::<method::DeleteTap>(self.delete_tap(caller, params).await?)
            }
            HelperRequest::ListTaps(params) => {
                reply::<method::ListTaps>(self.list_taps(caller, params).await?)
            }
            HelperRequest::AddNat(params) => {
                reply::<method::AddNat>(self.add_nat(caller, params).await?)
            }
            HelperRequest::RemoveNat(params) => {
                reply::<method::RemoveNat>(self.remove_nat(caller, params).await?)
            }
            HelperRequest::ListNat(NoParams {}) => {
                reply::<method::ListNat>(self.list_nat(caller).await?)
            }
            HelperRequest::EnableIpForward(NoParams {}) => {
                reply::<method::EnableIpForward>(IpForward {
                    was_off: self.ops.enable_ip_forward().await?,
                })
            }
            HelperRequest::ApplyDns(params) => {
                reply::<method::ApplyDns>(self.apply_dns(caller, params).await?)
            }
            HelperRequest::RevertDns(params) => {
                reply::<method::RevertDns>(self.revert_dns(caller, params).await?)
            }
            HelperRequest::StartSim(params) => {
                reply::<method::StartSim>(self.sims.start(caller, params).await?)
            }
            HelperRequest::KillSim(params) => {
                reply::<method::KillSim>(self.sims.kill(caller, params.pid)?)
            }
            HelperRequest::FindSim(params) => {
                reply::<method::FindSim>(self.sims.find(caller, params)?)
            }
            HelperRequest::Debootstrap(params) => {
                reply::<method::Debootstrap>(self.bootstraps.run(caller, params).await?)
            }
            HelperRequest::DeleteSimVeth(params) => {
                reply::<method::DeleteSimVeth>(self.delete_sim_veth(caller, params).await?)
            }
        };
        Ok(result)
    }

    fn network(&self, caller: &Caller) -> NetworkInfo {
        let net = UserNetwork::for_uid(caller.uid);
        NetworkInfo {
            uid: caller.uid,
            bridge: net.bridge,
            address: net.address,
            pool_space: UserNetwork::index(caller.uid),
        }
    }

    fn own_bridge(caller: &Caller, bridge: &str) -> Result<UserNetwork, HelperError> {
        let net = UserNetwork::for_uid(caller.uid);
        if bridge != net.bridge {
            return Err(HelperError::WrongBridge {
                uid: caller.uid,
                got: bridge.to_owned(),
                expected: net.bridge,
            });
        }
        Ok(net)
    }

    async fn ensure_bridge(
        &self,
        caller: &Caller,
        params: EnsureBridgeParams,
    ) -> Result<BridgeEnsured, HelperError> {
        let net = Self::own_bridge(caller, &params.name)?;
        if params.address != net.address {
            return Err(HelperError::WrongBridgeAddress {
                uid: caller.uid,
                got: params.address,
                expected: net.address,
            });
        }
        if caller.uid != 0 {
            let index = UserNetwork::index(caller.uid);
            for bridge in self.ops.list_links(USER_BRIDGE_PREFIX).await? {
                if let Some(other) = user_bridge_uid(&bridge)
                    && other != caller.uid
                    && UserNetwork::index(other) == index
                {
                    return Err(HelperError::SubnetTaken {
                        uid: caller.uid,
                        subnet: net.subnet(),
                        other,
                        bridge,
                    });
                }
            }
        }
        let state = self.ops.ensure_bridge(&net.bridge, net.address).await?;
        if caller.uid != 0 {
            self.ops
                .netlink()
                .set_alias(&net.bridge, &owner_alias(caller.uid))
                .await
                .map_err(|source| HelperError::MarkBridge {
                    name: net.bridge.clone(),
                    uid: caller.uid,
                    source,
                })?;
        }
        tracing::info!(bridge = net.bridge, created = state.created, "bridge ready");
        Ok(BridgeEnsured {
            index: state.index,
            created: state.created,
            address_added: state.address_added,
        })
    }

    /// Who TAP `name` belongs to, from the link's marks (which also covers
    /// a TAP made by an earlier helper instance); keeps the registry in step.
    async fn tap_state(
        &self,
        taps: &mut BTreeMap<String, u32>,
        name: &str,
    ) -> Result<TapState, HelperError> {
        let link = self
            .ops
            .netlink()
            .link(name)
            .await
            .map_err(|source| HelperError::LookUp {
                name: name.to_owned(),
                source,
            })?;
        let Some(link) = link else {
            taps.remove(name);
            return Ok(TapState::Absent);
        };
        // The link's mark is what counts: a registered name may since have
        // been deleted and made again by someone else.
        match made_for(&link) {
            Some(uid) => {
                taps.insert(name.to_owned(), uid);
                Ok(TapState::Made(uid))
            }
            None => {
                taps.remove(name);
                Ok(TapState::Foreign)
            }
        }
    }

    /// Refuses unless TAP `name` is absent or the caller's.
    fn check_tap(caller: &Caller, name: &str, state: TapState) -> Result<(), HelperError> {
        match state {
            TapState::Absent => Ok(()),
            TapState::Made(uid) if uid == caller.uid => Ok(()),
            TapState::Made(owner) => Err(HelperError::NotYourTap {
                name: name.to_owned(),
                owner,
                uid: caller.uid,
            }),
            TapState::Foreign => Err(HelperError::ForeignLink {
                name: name.to_owned(),
                uid: caller.uid,
            }),
        }
    }

    async fn create_tap(
        &self,
        caller: &Caller,
        params: CreateTapParams,
    ) -> Result<TapCreated, HelperError> {
        tap_name(&params.name)?;
        let net = Self::own_bridge(caller, &params.bridge)?;
        let mut taps = self.taps.lock().await;
        let state = self.tap_state(&mut taps, &params.name).await?;
        Self::check_tap(caller, &params.name, state)?;
        if state == TapState::Absent
            && taps.values().filter(|uid| **uid == caller.uid).count() >= MAX_TAPS_PER_UID
        {
            return Err(HelperError::TooManyTaps {
                uid: caller.uid,
                limit: MAX_TAPS_PER_UID,
            });
        }
        let owner = TapOwner {
            uid: caller.uid,
            alias: owner_alias(caller.uid),
        };
        let created = self
            .ops
            .netlink()
            .create_tap_for(&params.name, &net.bridge, Some(&owner))
            .await?;
        taps.insert(params.name.clone(), caller.uid);
        tracing::info!(tap = params.name, bridge = net.bridge, created, "TAP ready");
        Ok(TapCreated { created })
    }

    async fn rename_tap(
        &self,
        caller: &Caller,
        params: RenameTapParams,
    ) -> Result<Done, HelperError> {
        tap_name(&params.from)?;
        tap_name(&params.to)?;
        let mut taps = self.taps.lock().await;
        let state = self.tap_state(&mut taps, &params.from).await?;
        if state == TapState::Absent {
            return Err(RenameTapError::NotFound { name: params.from }.into());
        }
        Self::check_tap(caller, &params.from, state)?;
        if self.tap_state(&mut taps, &params.to).await? != TapState::Absent {
            return Err(HelperError::LinkExists { name: params.to });
        }
        self.ops.rename_tap(&params.from, &params.to).await?;
        taps.remove(&params.from);
        taps.insert(params.to.clone(), caller.uid);
        Ok(Done {})
    }

    async fn delete_tap(&self, caller: &Caller, params: TapParams) -> Result<Existed, HelperError> {
        tap_name(&params.name)?;
        let mut taps = self.taps.lock().await;
        let state = self.tap_state(&mut taps, &params.name).await?;
        Self::check_tap(caller, &params.name, state)?;
        if state == TapState::Absent {
            return Ok(Existed { existed: false });
        }
        let existed = self.ops.delete_tap(&params.name).await?;
        taps.remove(&params.name);
        tracing::info!(tap = params.name, "TAP deleted");
        Ok(Existed { existed })
    }

    async fn list_taps(
        &self,
        caller: &Caller,
        params: ListTapsParams,
    ) -> Result<Names, HelperError> {
        let mut taps = self.taps.lock().await;
        taps.clear();
        for link in self.ops.netlink().links().await? {
            if link.name.starts_with(TAP_PREFIX)
                && let Some(uid) = made_for(&link)
            {
                taps.insert(link.name, uid);
            }
        }
        let mut names: Vec<String> = taps
            .iter()
            .filter(|(name, uid)| **uid == caller.uid && name.starts_with(&params.prefix))
            .map(|(name, _)| name.clone())
            .collect();
        if SIM_VETH_PREFIX.starts_with(&params.prefix) || params.prefix.starts_with(SIM_VETH_PREFIX)
        {
            names.extend(
                self.sim_veths(caller)
                    .await?
                    .into_iter()
                    .filter(|name| name.starts_with(&params.prefix)),
            );
        }
        Ok(Names { names })
    }

    /// The sim guests' veths (host ends) on the caller's bridge.
    async fn sim_veths(&self, caller: &Caller) -> Result<Vec<String>, HelperError> {
        let bridge = UserNetwork::for_uid(caller.uid).bridge;
        let links = self.ops.netlink().links().await?;
        let Some(index) = links.iter().find(|l| l.name == bridge).map(|l| l.index) else {
            return Ok(Vec::new());
        };
        Ok(links
            .into_iter()
            .filter(|l| l.name.starts_with(SIM_VETH_PREFIX) && l.controller == Some(index))
            .map(|l| l.name)
            .collect())
    }

    /// Deletes a sim guest's veth, when its host end is on the caller's
    /// bridge.
    async fn delete_sim_veth(
        &self,
        caller: &Caller,
        params: VethParams,
    ) -> Result<Existed, HelperError> {
        validate_sim_veth_name(&params.name).map_err(HelperError::InvalidName)?;
        if !self.sim_veths(caller).await?.contains(&params.name) {
            let exists = self
                .ops
                .netlink()
                .link(&params.name)
                .await
                .map_err(|source| HelperError::LookUp {
                    name: params.name.clone(),
                    source,
                })?
                .is_some();
            if !exists {
                return Ok(Existed { existed: false });
            }
            return Err(HelperError::NotYourVeth {
                name: params.name,
                uid: caller.uid,
                bridge: UserNetwork::for_uid(caller.uid).bridge,
            });
        }
        let existed = self.ops.delete_sim_veth(&params.name).await?;
        Ok(Existed { existed })
    }

    fn parse_vm_id(vm_id: &str) -> Result<Id, HelperError> {
        if vm_id.is_empty() || !vm_id.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(HelperError::InvalidVmId(vm_id.to_owned()));
        }
        Ok(Id::from_stored(vm_id))
    }

    /// Refuses unless every rule tagged for `vm_id` is in the caller's subnet.
    async fn check_rules(&self, caller: &Caller, vm_id: &Id) -> Result<(), HelperError> {
        let net = UserNetwork::for_uid(caller.uid);
        let subnet = net.subnet();
        let rules = self.ops.iptables().tagged_rules().await?;
        let foreign = rules
            .iter()
            .filter(|rule| rule.tag_id() == Some(vm_id.as_str()))
            .any(|rule| !rule_address(rule).is_some_and(|ip| subnet.contains(&ip)));
        if foreign {
            return Err(HelperError::NotYourRules {
                vm_id: vm_id.to_string(),
                uid: caller.uid,
                subnet,
            });
        }
        Ok(())
    }

    async fn add_nat(&self, caller: &Caller, params: AddNatParams) -> Result<Done, HelperError> {
        let vm_id = Self::parse_vm_id(&params.vm_id)?;
        let net = Self::own_bridge(caller, &params.bridge)?;
        if !net.is_guest_address(params.guest_ip) {
            return Err(HelperError::OutsideSubnet {
                uid: caller.uid,
                ip: params.guest_ip,
                subnet: net.subnet(),
            });
        }
        let _nat = self.nat.lock().await;
        self.check_rules(caller, &vm_id).await?;
        self.ops
            .add_vm_nat(&vm_id, params.guest_ip, &net.bridge)
            .await?;
        Ok(Done {})
    }

    async fn remove_nat(
        &self,
        caller: &Caller,
        params: VmIdParams,
    ) -> Result<Removed, HelperError> {
        let vm_id = Self::parse_vm_id(&params.vm_id)?;
        let _nat = self.nat.lock().await;
        self.check_rules(caller, &vm_id).await?;
        let removed = self.ops.remove_vm_nat(&vm_id).await?;
        Ok(Removed { removed })
    }

    async fn list_nat(&self, caller: &Caller) -> Result<VmIds, HelperError> {
        let subnet = UserNetwork::for_uid(caller.uid).subnet();
        let mut mine = BTreeSet::new();
        let mut foreign = BTreeSet::new();
        for rule in self.ops.iptables().tagged_rules().await? {
            let Some(id) = rule.tag_id() else { continue };
            if rule_address(&rule).is_some_and(|ip| subnet.contains(&ip)) {
                mine.insert(id.to_owned());
            } else {
                foreign.insert(id.to_owned());
            }
        }
        Ok(VmIds {
            vm_ids: mine.difference(&foreign).cloned().collect(),
        })
    }

    async fn apply_dns(
        &self,
        caller: &Caller,
        params: ApplyDnsParams,
    ) -> Result<Done, HelperError> {
        let net = Self::own_bridge(caller, &params.link)?;
        if !params.dns.ip().is_loopback() {
            return Err(HelperError::DnsNotLoopback(params.dns));
        }
        self.routing.apply(&net.bridge, params.dns).await?;
        Ok(Done {})
    }

    async fn revert_dns(&self, caller: &Caller, params: LinkParams) -> Result<Done, HelperError> {
        let net = Self::own_bridge(caller, &params.link)?;
        self.routing.revert(&net.bridge).await?;
        Ok(Done {})
    }
}

#[cfg(test)]
mod tests {
    use banger_net::nat::Table;

    use super::*;

    #[test]
    fn rule_addresses_are_read_from_source_or_destination() {
        let rule = |spec: &[&str]| Rule {
            table: Table::Filter,
            chain: "FORWARD".into(),
            spec: spec.iter().map(|word| (*word).to_owned()).collect(),
        };
        assert_eq!(
            rule_address(&rule(&["-s", "172.30.1.5/32", "-j", "ACCEPT"])),
            Some(Ipv4Addr::new(172, 30, 1, 5))
        );
        assert_eq!(
            rule_address(&rule(&["-d", "172.30.2.9/32", "-o", "bbr-1001"])),
            Some(Ipv4Addr::new(172, 30, 2, 9))
        );
        assert_eq!(rule_address(&rule(&["-j", "ACCEPT"])), None);
        assert_eq!(rule_address(&rule(&["-s"])), None);
    }

    #[test]
    fn tap_names_are_plain() {
        tap_name("btap-0123456789").unwrap();
        tap_name("btap-pool97-3").unwrap();
        for bad in ["btap-%d", "btap-a.b", "btap-é", "eth0", "btap-"] {
            assert!(tap_name(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn refusals_map_to_stable_codes() {
        let err = HelperError::NotYourTap {
            name: "btap-x".into(),
            owner: 1,
            uid: 2,
        };
        assert_eq!(err.to_rpc().code, ErrorCode::PermissionDenied);
        let err = HelperError::InvalidName(InvalidIfName::NotBangerTap("eth0".into()));
        let rpc = err.to_rpc();
        assert_eq!(rpc.code, ErrorCode::InvalidArgument);
        assert!(rpc.message.contains("eth0"), "{}", rpc.message);
        let err = HelperError::OutsideSubnet {
            uid: 1000,
            ip: Ipv4Addr::new(10, 0, 0, 2),
            subnet: "172.30.1.0/24".parse().unwrap(),
        };
        assert_eq!(err.to_rpc().code, ErrorCode::InvalidArgument);
    }
}
