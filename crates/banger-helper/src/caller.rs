//! Who is calling, and what that caller may touch: its own bridge and
//! subnet (derived from its uid, so two users never share one), and the
//! alias that marks the links the helper made for it.

use std::net::Ipv4Addr;

use banger_model::config::{DEFAULT_BRIDGE, DEFAULT_SUBNET};
use ipnet::Ipv4Net;

/// Prefix of the bridge of a user other than root: `bbr-<uid>` (at most
/// 14 bytes for any u32, within Linux's 15).
pub const USER_BRIDGE_PREFIX: &str = "bbr-";

/// Start of the alias the helper puts on every link it makes for a user.
const ALIAS_PREFIX: &str = "banger-helper uid=";

/// The credentials of a connection, as `SO_PEERCRED` reported them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Caller {
    pub uid: u32,
    pub gid: u32,
    pub pid: Option<i32>,
}

/// A caller's bridge and its address (host address and prefix).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserNetwork {
    pub bridge: String,
    pub address: Ipv4Net,
}

impl UserNetwork {
    /// The network of `uid`.
    ///
    /// Root keeps banger's defaults (`br-banger`, `172.30.0.1/24`). Any other
    /// uid gets bridge `bbr-<uid>` and one of the 255 other /24s of
    /// 172.30.0.0/16, chosen so that uid 1000 (the first user on most
    /// distributions) gets 172.30.1.0/24, 1001 the next, and so on. Two uids
    /// 255 apart map to the same subnet; the helper refuses the second one's
    /// bridge while the first's exists ([`UserNetwork::index`] tells them
    /// apart).
    pub fn for_uid(uid: u32) -> Self {
        if uid == 0 {
            return Self {
                bridge: DEFAULT_BRIDGE.to_owned(),
                address: DEFAULT_SUBNET.parse().expect("default subnet parses"),
            };
        }
        let index = Self::index(uid);
        Self {
            bridge: format!("{USER_BRIDGE_PREFIX}{uid}"),
            address: Ipv4Net::new(Ipv4Addr::new(172, 30, index, 1), 24)
                .expect("a /24 is a valid prefix"),
        }
    }

    /// The third octet of `uid`'s subnet: 0 for root, 1..=255 otherwise.
    pub fn index(uid: u32) -> u8 {
        if uid == 0 {
            return 0;
        }
        // 1 + (uid - 1000) mod 255, computed without underflow.
        let offset = (uid % 255 + 255 - 1000 % 255) % 255;
        u8::try_from(offset + 1).expect("1..=255 fits in a u8")
    }

    /// The subnet (network address and prefix).
    pub fn subnet(&self) -> Ipv4Net {
        self.address.trunc()
    }

    /// Whether `ip` is a guest address of this network: inside the subnet
    /// and neither its network, broadcast nor the bridge's own address.
    pub fn is_guest_address(&self, ip: Ipv4Addr) -> bool {
        let subnet = self.subnet();
        subnet.contains(&ip)
            && ip != subnet.network()
            && ip != subnet.broadcast()
            && ip != self.address.addr()
    }
}

/// The uid a user bridge name (`bbr-<uid>`) is for.
pub fn user_bridge_uid(name: &str) -> Option<u32> {
    let digits = name.strip_prefix(USER_BRIDGE_PREFIX)?;
    if digits.is_empty() || digits.starts_with('0') || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

/// The alias marking a link as made by the helper for `uid`.
pub fn owner_alias(uid: u32) -> String {
    format!("{ALIAS_PREFIX}{uid}")
}

/// The uid a link alias names, when the helper wrote it.
pub fn alias_uid(alias: &str) -> Option<u32> {
    let digits = alias.strip_prefix(ALIAS_PREFIX)?;
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn root_keeps_the_defaults() {
        let net = UserNetwork::for_uid(0);
        assert_eq!(net.bridge, "br-banger");
        assert_eq!(net.address.to_string(), "172.30.0.1/24");
    }

    #[test]
    fn users_get_their_own_bridge_and_subnet() {
        let a = UserNetwork::for_uid(1000);
        let b = UserNetwork::for_uid(1001);
        assert_eq!(a.bridge, "bbr-1000");
        assert_eq!(a.address.to_string(), "172.30.1.1/24");
        assert_eq!(b.bridge, "bbr-1001");
        assert_eq!(b.address.to_string(), "172.30.2.1/24");
        assert_eq!(
            UserNetwork::for_uid(1254).address.to_string(),
            "172.30.255.1/24"
        );
        assert_eq!(
            UserNetwork::for_uid(1255).address.to_string(),
            "172.30.1.1/24"
        );
        let nobody = UserNetwork::for_uid(65534);
        assert!(nobody.bridge.len() <= 15);
        assert_ne!(UserNetwork::index(65534), 0);
        assert!(UserNetwork::for_uid(u32::MAX).bridge.len() <= 15);
        for uid in 1..5000 {
            assert_ne!(
                UserNetwork::index(uid),
                0,
                "uid {uid} must not get root's subnet"
            );
        }
    }

    #[test]
    fn guest_addresses_are_inside_and_not_reserved() {
        let net = UserNetwork::for_uid(1000);
        assert!(net.is_guest_address("172.30.1.2".parse().unwrap()));
        assert!(net.is_guest_address("172.30.1.254".parse().unwrap()));
        assert!(!net.is_guest_address("172.30.1.1".parse().unwrap()));
        assert!(!net.is_guest_address("172.30.1.0".parse().unwrap()));
        assert!(!net.is_guest_address("172.30.1.255".parse().unwrap()));
        assert!(!net.is_guest_address("172.30.0.2".parse().unwrap()));
        assert!(!net.is_guest_address("8.8.8.8".parse().unwrap()));
    }

    #[test]
    fn names_and_aliases_round_trip() {
        assert_eq!(user_bridge_uid("bbr-1000"), Some(1000));
        assert_eq!(user_bridge_uid("bbr-01000"), None);
        assert_eq!(user_bridge_uid("bbr-"), None);
        assert_eq!(user_bridge_uid("br-banger"), None);
        assert_eq!(alias_uid(&owner_alias(1001)), Some(1001));
        assert_eq!(alias_uid("banger-helper uid="), None);
        assert_eq!(alias_uid("something else"), None);
    }
}
