//! Bridge and TAP management over rtnetlink (and the TUN ioctls in
//! the private `tun` module for creating TAPs).
//!
//! A [`Netlink`] connection is bound to the network namespace of the thread
//! that opened it; every request goes to that namespace.

use std::io;
use std::net::{IpAddr, Ipv4Addr};

use futures::TryStreamExt;
use ipnet::Ipv4Net;
use rtnetlink::packet_route::address::AddressAttribute;
use rtnetlink::packet_route::link::{
    InfoData, InfoKind, LinkAttribute, LinkFlags, LinkInfo, LinkMessage,
};
use rtnetlink::packet_route::route::{
    RouteAttribute, RouteMessage, RouteMetric, RouteProtocol, RouteScope,
};
use rtnetlink::{Handle, LinkBridge, LinkUnspec, RouteMessageBuilder};

use crate::names::{InvalidIfName, validate_ifname, validate_tap_name};
use crate::tun;

/// Why the netlink socket could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error("cannot open a netlink route socket")]
    Socket(#[source] io::Error),
}

/// What [`Netlink::ensure_bridge`] found or did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BridgeState {
    /// The bridge's interface index.
    pub index: u32,
    /// Whether this call created the bridge (false: it already existed).
    pub created: bool,
    /// Whether this call added the configured address to it.
    pub address_added: bool,
}

/// Why the bridge could not be made ready.
#[derive(Debug, thiserror::Error)]
pub enum EnsureBridgeError {
    #[error("invalid bridge name")]
    InvalidName(#[source] InvalidIfName),
    #[error(
        "link {name} exists but is a {kind} device, not a bridge; rename it or set network.bridge"
    )]
    NotABridge { name: String, kind: String },
    #[error("cannot {step} bridge {name}")]
    Netlink {
        name: String,
        step: &'static str,
        #[source]
        source: io::Error,
    },
}

/// Why a TAP could not be created and attached.
#[derive(Debug, thiserror::Error)]
pub enum CreateTapError {
    #[error("invalid TAP or bridge name")]
    InvalidName(#[source] InvalidIfName),
    #[error("bridge {bridge} for TAP {name} does not exist")]
    BridgeMissing { name: String, bridge: String },
    #[error("cannot {step} TAP {name}")]
    Tun {
        name: String,
        step: &'static str,
        #[source]
        source: io::Error,
    },
    #[error("cannot {step} TAP {name}")]
    Netlink {
        name: String,
        step: &'static str,
        #[source]
        source: io::Error,
    },
}

/// Why a TAP could not be renamed.
#[derive(Debug, thiserror::Error)]
pub enum RenameTapError {
    #[error("invalid TAP name")]
    InvalidName(#[source] InvalidIfName),
    #[error("TAP {name} does not exist")]
    NotFound { name: String },
    #[error("cannot {step} while renaming TAP {from} to {to}")]
    Netlink {
        from: String,
        to: String,
        step: &'static str,
        #[source]
        source: io::Error,
    },
}

/// Why a TAP could not be deleted.
#[derive(Debug, thiserror::Error)]
pub enum DeleteTapError {
    #[error("invalid TAP name")]
    InvalidName(#[source] InvalidIfName),
    #[error("cannot delete TAP {name}")]
    Netlink {
        name: String,
        #[source]
        source: io::Error,
    },
}

/// Why links could not be listed.
#[derive(Debug, thiserror::Error)]
pub enum ListLinksError {
    #[error("cannot list network links")]
    Netlink(#[source] io::Error),
}

/// A netlink route connection in one network namespace.
#[derive(Debug, Clone)]
pub struct Netlink {
    handle: Handle,
}

/// The interesting parts of a link.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LinkStatus {
    pub name: String,
    pub index: u32,
    pub up: bool,
    /// Index of the bridge (or other controller) it is attached to.
    pub controller: Option<u32>,
    /// `bridge`, `tun`, `veth`, … when the kernel reports a kind.
    pub kind: Option<String>,
    /// The link's alias (`ip link set NAME alias …`), when it has one.
    pub alias: Option<String>,
    /// For a TUN/TAP device made with an owner (`TUNSETOWNER`), that uid.
    pub tun_owner: Option<u32>,
}

/// `IFLA_TUN_OWNER` in a tun link's info data (linux/if_link.h).
const IFLA_TUN_OWNER: u16 = 1;

/// The owner uid in a tun link's info data; the kernel reports
/// `(uid_t)-1` for a TAP without one.
fn tun_owner(nlas: &[rtnetlink::packet_route::link::InfoTun]) -> Option<u32> {
    use rtnetlink::packet_core::Nla;
    use rtnetlink::packet_route::link::InfoTun;
    nlas.iter().find_map(|nla| {
        let InfoTun::Other(nla) = nla else {
            return None;
        };
        if nla.kind() != IFLA_TUN_OWNER || nla.value_len() != 4 {
            return None;
        }
        let mut value = [0u8; 4];
        nla.emit_value(&mut value);
        let uid = u32::from_ne_bytes(value);
        (uid != u32::MAX).then_some(uid)
    })
}

/// Who a TAP is made for, when it is not root's: the uid that may open it
/// without `CAP_NET_ADMIN` (`TUNSETOWNER`) and an alias recording it, so
/// whoever made the TAP can recognise it later (`banger-helper` does after a
/// restart).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TapOwner {
    pub uid: u32,
    pub alias: String,
}

fn to_io(error: rtnetlink::Error) -> io::Error {
    match error {
        rtnetlink::Error::NetlinkError(message) => message.to_io(),
        other => io::Error::other(other),
    }
}

fn is_errno(error: &io::Error, errno: i32) -> bool {
    error.raw_os_error() == Some(errno)
}

impl LinkStatus {
    fn from_message(message: &LinkMessage) -> Self {
        let mut status = Self {
            name: String::new(),
            index: message.header.index,
            up: message.header.flags.contains(LinkFlags::Up),
            controller: None,
            kind: None,
            alias: None,
            tun_owner: None,
        };
        for attribute in &message.attributes {
            match attribute {
                LinkAttribute::IfName(name) => status.name.clone_from(name),
                LinkAttribute::Controller(index) if *index != 0 => status.controller = Some(*index),
                LinkAttribute::IfAlias(alias) if !alias.is_empty() => {
                    status.alias = Some(alias.clone());
                }
                LinkAttribute::LinkInfo(infos) => {
                    for info in infos {
                        match info {
                            LinkInfo::Kind(kind) => status.kind = Some(kind_name(kind)),
                            LinkInfo::Data(InfoData::Tun(nlas)) => {
                                status.tun_owner = tun_owner(nlas);
                            }
                            _ => {}
                        }
                    }
                }
                _ => {}
            }
        }
        status
    }
}

fn kind_name(kind: &InfoKind) -> String {
    match kind {
        InfoKind::Bridge => "bridge".to_owned(),
        other => other.to_string(),
    }
}

impl Netlink {
    /// Opens a netlink socket in the calling thread's network namespace and
    /// spawns its connection task on the current tokio runtime (panics when
    /// called outside one).
    pub fn connect() -> Result<Self, ConnectError> {
        let (connection, handle, _) = rtnetlink::new_connection().map_err(ConnectError::Socket)?;
        tokio::spawn(connection);
        Ok(Self { handle })
    }

    /// The link called `name`, or `None` when there is none.
    pub async fn link(&self, name: &str) -> io::Result<Option<LinkStatus>> {
        Ok(self
            .link_message(name)
            .await?
            .map(|m| LinkStatus::from_message(&m)))
    }

    async fn link_message(&self, name: &str) -> io::Result<Option<LinkMessage>> {
        let mut replies = self.handle.link().get().match_name(name).execute();
        match replies.try_next().await {
            Ok(found) => Ok(found),
            Err(error) => {
                let error = to_io(error);
                if is_errno(&error, libc::ENODEV) {
                    Ok(None)
                } else {
                    Err(error)
                }
            }
        }
    }

    /// Every link, in kernel order.
    pub async fn links(&self) -> Result<Vec<LinkStatus>, ListLinksError> {
        let messages: Vec<LinkMessage> = self
            .handle
            .link()
            .get()
            .execute()
            .try_collect()
            .await
            .map_err(|e| ListLinksError::Netlink(to_io(e)))?;
        Ok(messages.iter().map(LinkStatus::from_message).collect())
    }

    /// Names of the links whose name starts with `prefix`, sorted.
    pub async fn list_links(&self, prefix: &str) -> Result<Vec<String>, ListLinksError> {
        let mut names: Vec<String> = self
            .links()
            .await?
            .into_iter()
            .map(|link| link.name)
            .filter(|name| name.starts_with(prefix))
            .collect();
        names.sort();
        Ok(names)
    }

    /// Makes sure bridge `name` exists, carries `address` (host address and
    /// prefix, e.g. `172.30.0.1/24`) and is up. Other addresses on it are left
    /// alone.
    pub async fn ensure_bridge(
        &self,
        name: &str,
        address: Ipv4Net,
    ) -> Result<BridgeState, EnsureBridgeError> {
        validate_ifname(name).map_err(EnsureBridgeError::InvalidName)?;
        let failed = |step: &'static str| {
            move |source: io::Error| EnsureBridgeError::Netlink {
                name: name.to_owned(),
                step,
                source,
            }
        };

        let mut created = false;
        let existing = self.link(name).await.map_err(failed("look up"))?;
        let link = match existing {
            Some(link) => link,
            None => {
                match self
                    .handle
                    .link()
                    .add(LinkBridge::new(name).build())
                    .execute()
                    .await
                    .map_err(to_io)
                {
                    Ok(()) => created = true,
                    // Someone made it between our look-up and now: use theirs.
                    Err(error) if is_errno(&error, libc::EEXIST) => {}
                    Err(error) => return Err(failed("create")(error)),
                }
                self.link(name)
                    .await
                    .map_err(failed("look up"))?
                    .ok_or_else(|| failed("look up")(io::Error::from_raw_os_error(libc::ENODEV)))?
            }
        };
        if link.kind.as_deref() != Some("bridge") {
            return Err(EnsureBridgeError::NotABridge {
                name: name.to_owned(),
                kind: link.kind.unwrap_or_else(|| "non-bridge".to_owned()),
            });
        }

        let addresses: Vec<_> = self
            .handle
            .address()
            .get()
            .set_link_index_filter(link.index)
            .execute()
            .try_collect()
            .await
            .map_err(|e| failed("list addresses of")(to_io(e)))?;
        let wanted = IpAddr::V4(address.addr());
        let has_address = addresses.iter().any(|message| {
            message.header.prefix_len == address.prefix_len()
                && message.attributes.iter().any(|attribute| {
                    matches!(attribute, AddressAttribute::Local(ip) | AddressAttribute::Address(ip) if *ip == wanted)
                })
        });
        let mut address_added = false;
        if !has_address {
            match self
                .handle
                .address()
                .add(link.index, wanted, address.prefix_len())
                .execute()
                .await
                .map_err(to_io)
            {
                Ok(()) => address_added = true,
                Err(error) if is_errno(&error, libc::EEXIST) => {}
                Err(error) => return Err(failed("add address to")(error)),
            }
        }

        if !link.up {
            self.handle
                .link()
                .set(LinkUnspec::new_with_index(link.index).up().build())
                .execute()
                .await
                .map_err(|e| failed("bring up")(to_io(e)))?;
        }
        // A speed-up, not a need: a bridge without it still works.
        if let Err(error) = self.quick_acks(link.index, address).await {
            tracing::warn!(bridge = name, %address, %error, "cannot set quickack on the bridge's route");
        }
        tracing::debug!(bridge = name, %address, created, address_added, "bridge ready");
        Ok(BridgeState {
            index: link.index,
            created,
            address_added,
        })
    }

    /// Makes the route to the bridge's subnet acknowledge TCP at once
    /// (`quickack 1`, as `ip route change … quickack 1` would). Without it,
    /// every ssh connection to a guest waits on the 40 ms delayed ACK:
    /// Nagle holds ssh's second small message until the first is
    /// acknowledged, twice per handshake.
    async fn quick_acks(&self, index: u32, address: Ipv4Net) -> io::Result<()> {
        self.handle
            .route()
            .add(quick_ack_route(index, address.addr(), address.prefix_len()))
            .replace()
            .execute()
            .await
            .map_err(to_io)
    }

    /// Creates the persistent TAP `name` (or adopts it when it exists and
    /// nobody has it open), attaches it to `bridge` and sets it up.
    /// Returns whether the TAP was created by this call.
    pub async fn create_tap(&self, name: &str, bridge: &str) -> Result<bool, CreateTapError> {
        self.create_tap_for(name, bridge, None).await
    }

    /// Like [`Netlink::create_tap`], and with `owner` the TAP is that uid's
    /// (an adopted TAP too) and carries the owner's alias.
    pub async fn create_tap_for(
        &self,
        name: &str,
        bridge: &str,
        owner: Option<&TapOwner>,
    ) -> Result<bool, CreateTapError> {
        validate_tap_name(name).map_err(CreateTapError::InvalidName)?;
        validate_ifname(bridge).map_err(CreateTapError::InvalidName)?;
        let netlink_failed = |step: &'static str| {
            move |source: io::Error| CreateTapError::Netlink {
                name: name.to_owned(),
                step,
                source,
            }
        };

        let bridge_link = self
            .link(bridge)
            .await
            .map_err(netlink_failed("look up the bridge for"))?
            .ok_or_else(|| CreateTapError::BridgeMissing {
                name: name.to_owned(),
                bridge: bridge.to_owned(),
            })?;

        let created =
            tun::create_persistent_tap(name, owner.map(|owner| owner.uid)).map_err(|error| {
                CreateTapError::Tun {
                    name: name.to_owned(),
                    step: error.step,
                    source: error.source,
                }
            })?;

        let attach = async {
            let tap = self
                .link(name)
                .await?
                .ok_or_else(|| io::Error::from_raw_os_error(libc::ENODEV))?;
            let mut message = LinkUnspec::new_with_index(tap.index)
                .controller(bridge_link.index)
                .up();
            if let Some(owner) = owner {
                message = message.alias(owner.alias.clone());
            }
            self.handle
                .link()
                .set(message.build())
                .execute()
                .await
                .map_err(to_io)
        };
        if let Err(error) = attach.await {
            if created && let Err(cleanup) = self.delete_tap(name).await {
                tracing::warn!(tap = name, error = %cleanup, "cannot remove half-created TAP");
            }
            return Err(netlink_failed("attach to bridge and bring up")(error));
        }
        tracing::debug!(tap = name, bridge, created, "TAP ready");
        Ok(created)
    }

    /// Renames TAP `from` to `to`: link down, rename, up (the kernel refuses
    /// to rename a link that is up).
    pub async fn rename_tap(&self, from: &str, to: &str) -> Result<(), RenameTapError> {
        validate_tap_name(from).map_err(RenameTapError::InvalidName)?;
        validate_tap_name(to).map_err(RenameTapError::InvalidName)?;
        let failed = |step: &'static str| {
            move |source: io::Error| RenameTapError::Netlink {
                from: from.to_owned(),
                to: to.to_owned(),
                step,
                source,
            }
        };
        let link = self
            .link(from)
            .await
            .map_err(failed("look up"))?
            .ok_or_else(|| RenameTapError::NotFound {
                name: from.to_owned(),
            })?;
        self.handle
            .link()
            .set(LinkUnspec::new_with_index(link.index).down().build())
            .execute()
            .await
            .map_err(|e| failed("bring down")(to_io(e)))?;
        // The kernel applies the new name before the flags, so one message
        // renames and brings the link back up.
        let renamed = self
            .handle
            .link()
            .set(LinkUnspec::new_with_index(link.index).name(to).up().build())
            .execute()
            .await
            .map_err(to_io);
        if let Err(error) = renamed {
            // Leave the TAP as we found it: up under its old name.
            let restore = self
                .handle
                .link()
                .set(LinkUnspec::new_with_index(link.index).up().build())
                .execute()
                .await;
            if let Err(restore) = restore {
                tracing::warn!(tap = from, error = %restore, "cannot bring TAP back up after failed rename");
            }
            return Err(failed("rename")(error));
        }
        tracing::debug!(from, to, "TAP renamed");
        Ok(())
    }

    /// Sets the alias of link `name` (e.g. to mark a bridge as made for
    /// someone).
    pub async fn set_alias(&self, name: &str, alias: &str) -> io::Result<()> {
        validate_ifname(name)
            .map_err(|error| io::Error::new(io::ErrorKind::InvalidInput, error))?;
        let link = self
            .link(name)
            .await?
            .ok_or_else(|| io::Error::from_raw_os_error(libc::ENODEV))?;
        self.handle
            .link()
            .set(LinkUnspec::new_with_index(link.index).alias(alias).build())
            .execute()
            .await
            .map_err(to_io)
    }

    /// Deletes TAP `name`. Returns false when there was no such link.
    pub async fn delete_tap(&self, name: &str) -> Result<bool, DeleteTapError> {
        validate_tap_name(name).map_err(DeleteTapError::InvalidName)?;
        self.delete_by_name(name).await
    }

    /// Deletes the host end of a banger-simvm guest's veth pair (which
    /// removes both ends at once); `Ok(false)` when it is already gone.
    pub async fn delete_sim_veth(&self, name: &str) -> Result<bool, DeleteTapError> {
        crate::names::validate_sim_veth_name(name).map_err(DeleteTapError::InvalidName)?;
        self.delete_by_name(name).await
    }

    async fn delete_by_name(&self, name: &str) -> Result<bool, DeleteTapError> {
        let failed = |source: io::Error| DeleteTapError::Netlink {
            name: name.to_owned(),
            source,
        };
        // Delete by name, not by a looked-up index that could be reused.
        match self
            .handle
            .link()
            .del_with_message(LinkUnspec::new_with_name(name).build())
            .execute()
            .await
            .map_err(to_io)
        {
            Ok(()) => {
                tracing::debug!(link = name, "link deleted");
                Ok(true)
            }
            Err(error) if is_errno(&error, libc::ENODEV) => Ok(false),
            Err(error) => Err(failed(error)),
        }
    }
}

/// The route the kernel makes for address `local/prefix_len` on link
/// `index`, with `quickack 1`: to be added with replace, as `ip route change
/// … quickack 1` would. TCP over it acknowledges at once instead of after
/// the 40 ms delayed ACK, which ssh's handshake otherwise waits on twice
/// (Nagle holds its second small message until the first is acknowledged).
pub fn quick_ack_route(index: u32, local: Ipv4Addr, prefix_len: u8) -> RouteMessage {
    let subnet = Ipv4Net::new(local, prefix_len)
        .map(|net| net.network())
        .unwrap_or(local);
    let mut route = RouteMessageBuilder::<Ipv4Addr>::new()
        .destination_prefix(subnet, prefix_len)
        .output_interface(index)
        .pref_source(local)
        .protocol(RouteProtocol::Kernel)
        .scope(RouteScope::Link)
        .build();
    route
        .attributes
        .push(RouteAttribute::Metrics(vec![RouteMetric::QuickAck(1)]));
    route
}
