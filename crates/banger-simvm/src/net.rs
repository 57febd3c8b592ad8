//! The guest's network: a veth pair whose host end joins the bridge the
//! configured TAP belongs to, and whose other end is created directly in the
//! guest's network namespace as `eth0` (so no half-made pair ever sits in
//! the host namespace). The pair disappears with the guest's namespace.

use std::net::{IpAddr, Ipv4Addr};
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};

use banger_firecracker::api::MacAddr;
use banger_firecracker::boot_args::{GUEST_DEVICE, IpConfig};
use futures::TryStreamExt;
use rtnetlink::packet_route::link::{InfoData, InfoVeth, LinkAttribute};
use rtnetlink::{Handle, LinkMessageBuilder, LinkUnspec, LinkVeth, RouteMessageBuilder};

/// Host-end veth names start with [`VETH_PREFIX`], so leaks are
/// recognisable; the name is shared with the daemon, which deletes the veth
/// of a VMM it kills.
pub use banger_model::contract::{SIM_VETH_PREFIX as VETH_PREFIX, sim_veth_name as host_veth_name};

/// The bridge a TAP is attached to (its controller link), asked over
/// netlink so it is right in whatever network namespace simvm runs in, even
/// when /sys was mounted elsewhere.
pub async fn bridge_of(tap: &str) -> Result<String, NetError> {
    let handle = connect()?;
    let link = match handle
        .link()
        .get()
        .match_name(tap.to_owned())
        .execute()
        .try_next()
        .await
    {
        Ok(Some(link)) => link,
        Ok(None) => return Err(NetError::NoTap(tap.to_owned())),
        Err(rtnetlink::Error::NetlinkError(e)) if e.raw_code() == -libc::ENODEV => {
            return Err(NetError::NoTap(tap.to_owned()));
        }
        Err(source) => {
            return Err(NetError::Netlink {
                what: format!("looking up {tap}"),
                source,
            });
        }
    };
    let controller = link
        .attributes
        .iter()
        .find_map(|a| match a {
            LinkAttribute::Controller(index) => Some(*index),
            _ => None,
        })
        .ok_or_else(|| NetError::NoBridge(tap.to_owned()))?;
    let bridge = handle
        .link()
        .get()
        .match_index(controller)
        .execute()
        .try_next()
        .await
        .map_err(netlink(format!("looking up the controller of {tap}")))?
        .ok_or_else(|| NetError::NoBridge(tap.to_owned()))?;
    bridge
        .attributes
        .iter()
        .find_map(|a| match a {
            LinkAttribute::IfName(name) => Some(name.clone()),
            _ => None,
        })
        .ok_or_else(|| NetError::NoBridge(tap.to_owned()))
}

#[derive(Debug, thiserror::Error)]
pub enum NetError {
    #[error("TAP {0} does not exist in simvm's network namespace")]
    NoTap(String),
    #[error("TAP {0} is not attached to a bridge")]
    NoBridge(String),
    #[error("netlink connection failed")]
    Connect(#[source] std::io::Error),
    #[error("netlink request failed: {what}")]
    Netlink {
        what: String,
        #[source]
        source: rtnetlink::Error,
    },
    #[error("link {0} not found")]
    NoLink(String),
    #[error("could not enter the guest network namespace {path}")]
    Setns {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("guest network thread failed")]
    Thread,
}

fn netlink(what: impl Into<String>) -> impl FnOnce(rtnetlink::Error) -> NetError {
    let what = what.into();
    move |source| NetError::Netlink { what, source }
}

async fn link_index(handle: &Handle, name: &str) -> Result<u32, NetError> {
    let mut links = handle.link().get().match_name(name.to_owned()).execute();
    match links.try_next().await {
        Ok(Some(link)) => Ok(link.header.index),
        Ok(None) => Err(NetError::NoLink(name.to_owned())),
        Err(rtnetlink::Error::NetlinkError(e)) if e.raw_code() == -libc::ENODEV => {
            Err(NetError::NoLink(name.to_owned()))
        }
        Err(source) => Err(NetError::Netlink {
            what: format!("looking up {name}"),
            source,
        }),
    }
}

fn connect() -> Result<Handle, NetError> {
    let (connection, handle, _) = rtnetlink::new_connection().map_err(NetError::Connect)?;
    tokio::spawn(connection);
    Ok(handle)
}

/// Creates the veth pair: `host` on `bridge`, up; its peer `eth0` (with
/// `mac`) inside the network namespace of `guest_pid`.
pub async fn create_veth(
    host: &str,
    bridge: &str,
    guest_pid: u32,
    mac: Option<MacAddr>,
) -> Result<(), NetError> {
    let handle = connect()?;
    let bridge_index = link_index(&handle, bridge).await?;
    let mut peer = LinkMessageBuilder::<LinkUnspec>::new()
        .name(GUEST_DEVICE.to_owned())
        .setns_by_pid(guest_pid);
    if let Some(mac) = mac {
        peer = peer.address(mac.0.to_vec());
    }
    let message = LinkVeth::new(host, GUEST_DEVICE)
        .set_info_data(InfoData::Veth(InfoVeth::Peer(peer.build())))
        .build();
    handle
        .link()
        .add(message)
        .execute()
        .await
        .map_err(netlink(format!("creating veth {host}")))?;
    let index = link_index(&handle, host).await?;
    handle
        .link()
        .set(
            LinkUnspec::new_with_index(index)
                .controller(bridge_index)
                .up()
                .build(),
        )
        .execute()
        .await
        .map_err(netlink(format!("attaching {host} to {bridge}")))?;
    Ok(())
}

/// Configures the guest's side from inside its network namespace: `lo` up,
/// `eth0` up with the address, prefix and default route from `ip=`.
///
/// Runs on a fresh thread that enters the namespace (never a pooled thread,
/// which would stay in it) with its own small runtime, so the netlink socket
/// belongs to the guest's namespace and is closed when the thread ends.
pub async fn configure_guest(
    guest_pid: u32,
    ip: Option<IpConfig>,
    with_eth0: bool,
) -> Result<(), NetError> {
    let ns_path = PathBuf::from(format!("/proc/{guest_pid}/ns/net"));
    let (tx, rx) = tokio::sync::oneshot::channel();
    std::thread::Builder::new()
        .name("guest-net".into())
        .spawn(move || {
            let _ = tx.send(configure_in_namespace(&ns_path, ip, with_eth0));
        })
        .map_err(|_| NetError::Thread)?;
    rx.await.map_err(|_| NetError::Thread)?
}

fn configure_in_namespace(
    ns_path: &Path,
    ip: Option<IpConfig>,
    with_eth0: bool,
) -> Result<(), NetError> {
    let setns_err = |source| NetError::Setns {
        path: ns_path.to_owned(),
        source,
    };
    let ns = fs_err::File::open(ns_path).map_err(setns_err)?;
    nix::sched::setns(ns.file().as_fd(), nix::sched::CloneFlags::CLONE_NEWNET)
        .map_err(|e| setns_err(e.into()))?;
    drop(ns);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .build()
        .map_err(NetError::Connect)?;
    runtime.block_on(async move {
        let handle = connect()?;
        let lo = link_index(&handle, "lo").await?;
        handle
            .link()
            .set(LinkUnspec::new_with_index(lo).up().build())
            .execute()
            .await
            .map_err(netlink("bringing lo up"))?;
        if !with_eth0 {
            return Ok(());
        }
        let eth0 = link_index(&handle, GUEST_DEVICE).await?;
        handle
            .link()
            .set(LinkUnspec::new_with_index(eth0).up().build())
            .execute()
            .await
            .map_err(netlink("bringing eth0 up"))?;
        let Some(ip) = ip else {
            return Ok(());
        };
        handle
            .address()
            .add(eth0, IpAddr::V4(ip.client), ip.prefix_len())
            .execute()
            .await
            .map_err(netlink(format!("adding {}/{}", ip.client, ip.prefix_len())))?;
        // The subnet's route acknowledges TCP at once, as the host's side
        // of the bridge does (see banger-net): ssh's handshake would
        // otherwise wait on delayed ACKs. A speed-up, not a need.
        let route = banger_net::link::quick_ack_route(eth0, ip.client, ip.prefix_len());
        if let Err(error) = handle.route().add(route).replace().execute().await {
            tracing::warn!(client = %ip.client, %error, "cannot set quickack on the guest's route");
        }
        if let Some(gateway) = ip.gateway {
            let route = RouteMessageBuilder::<Ipv4Addr>::new()
                .output_interface(eth0)
                .gateway(gateway)
                .build();
            handle
                .route()
                .add(route)
                .execute()
                .await
                .map_err(netlink(format!("adding the default route via {gateway}")))?;
        }
        Ok(())
    })
}

/// Whether a link named `name` exists in the calling thread's network
/// namespace.
pub fn link_exists(name: &str) -> bool {
    nix::net::if_::if_nametoindex(name).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn veth_names_fit_and_are_stable() {
        assert_eq!(host_veth_name("vm1"), "bsvvm1");
        assert_eq!(host_veth_name("abcdef012345"), "bsvabcdef012345");
        let long = host_veth_name("0123456789abcdef0123456789abcdef");
        assert_eq!(long.len(), 15);
        assert!(long.starts_with("bsv0123"), "{long}");
        assert_eq!(long, host_veth_name("0123456789abcdef0123456789abcdef"));
        assert_ne!(long, host_veth_name("0123456789abcdef0123456789abcdee"));
        let dashed = host_veth_name("vm-1");
        assert!(
            dashed.starts_with("bsvvm1") && dashed.len() == 14,
            "{dashed}"
        );
        assert_ne!(dashed, host_veth_name("vm1"));
        for id in ["a", "x".repeat(64).as_str(), "anonymous-instance", "ÄÖ"] {
            let name = host_veth_name(id);
            assert!(name.len() <= 15 && name.starts_with(VETH_PREFIX), "{name}");
            assert!(name.bytes().all(|b| b.is_ascii_alphanumeric()), "{name}");
        }
    }
}
