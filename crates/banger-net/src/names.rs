//! Interface names: validation and banger's TAP naming scheme.
//!
//! Every TAP banger makes starts with [`TAP_PREFIX`]. A VM's TAP is
//! `btap-<first 10 hex characters of the VM id>` (15 characters, the most a
//! Linux interface name may have); an idle TAP of the warm pool is
//! `btap-pool-<n>`, so nobody mistakes it for a leaked VM TAP. `pool` is not
//! hex, so the two forms never collide.
//!
//! Interface names are shared by every user of the host, so a daemon that
//! runs as its user (through `banger-helper`) names its pool TAPs in a
//! naming space of its own, the index of its subnet: `btap-pool<space>-<n>`
//! (space 1..=255). Space 0 is today's `btap-pool-<n>` (root).

use banger_model::Id;
pub use banger_model::contract::{MAX_IFNAME_LEN, SIM_VETH_PREFIX, sim_veth_name};

/// Prefix of every TAP banger creates.
pub const TAP_PREFIX: &str = "btap-";

/// Prefix of idle warm-pool TAPs.
pub const POOL_TAP_PREFIX: &str = "btap-pool-";

/// How many hex characters of the VM id a VM TAP name carries.
const VM_TAP_ID_CHARS: usize = 10;

/// Why a string is not a usable interface name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InvalidIfName {
    #[error("interface name is empty")]
    Empty,
    #[error("interface name {0:?} is longer than {MAX_IFNAME_LEN} bytes")]
    TooLong(String),
    #[error("interface name {0:?} contains '/', ':', whitespace or a control character")]
    BadCharacter(String),
    #[error("interface name {0:?} is reserved")]
    Reserved(String),
    #[error("TAP name {0:?} does not start with {TAP_PREFIX:?}; banger only touches its own TAPs")]
    NotBangerTap(String),
    #[error(
        "veth name {0:?} does not start with {SIM_VETH_PREFIX:?}; banger only touches its own links"
    )]
    NotSimVeth(String),
}

/// Checks that `name` is an interface name the kernel accepts.
pub fn validate_ifname(name: &str) -> Result<(), InvalidIfName> {
    if name.is_empty() {
        return Err(InvalidIfName::Empty);
    }
    if name.len() > MAX_IFNAME_LEN {
        return Err(InvalidIfName::TooLong(name.to_owned()));
    }
    if name == "." || name == ".." {
        return Err(InvalidIfName::Reserved(name.to_owned()));
    }
    if name
        .chars()
        .any(|c| c == '/' || c == ':' || c.is_whitespace() || c.is_control())
    {
        return Err(InvalidIfName::BadCharacter(name.to_owned()));
    }
    Ok(())
}

/// Checks that `name` is a valid interface name carrying banger's TAP prefix.
///
/// Every TAP operation checks this first, so a bug elsewhere can never make
/// banger delete or rename an interface it does not own.
pub fn validate_tap_name(name: &str) -> Result<(), InvalidIfName> {
    validate_ifname(name)?;
    if !name.starts_with(TAP_PREFIX) || name.len() == TAP_PREFIX.len() {
        return Err(InvalidIfName::NotBangerTap(name.to_owned()));
    }
    Ok(())
}

/// Checks that `name` is a banger-simvm veth host end.
pub fn validate_sim_veth_name(name: &str) -> Result<(), InvalidIfName> {
    validate_ifname(name)?;
    if !name.starts_with(SIM_VETH_PREFIX) || name.len() == SIM_VETH_PREFIX.len() {
        return Err(InvalidIfName::NotSimVeth(name.to_owned()));
    }
    Ok(())
}

/// The TAP name of a VM: `btap-` and the first 10 characters of its id.
pub fn vm_tap_name(vm_id: &Id) -> String {
    let id = vm_id.as_str();
    let short = id.get(..VM_TAP_ID_CHARS).unwrap_or(id);
    format!("{TAP_PREFIX}{short}")
}

/// The name of the idle pool TAP number `index`, e.g. `btap-pool-3`.
///
/// Indices wrap below 100 000 so the name always fits in 15 bytes.
pub fn pool_tap_name(index: u32) -> String {
    pool_tap_name_in(0, index)
}

/// The prefix of the pool TAP names of naming space `space`:
/// `btap-pool-` for 0, `btap-pool<space>-` otherwise.
pub fn pool_tap_prefix(space: u8) -> String {
    if space == 0 {
        POOL_TAP_PREFIX.to_owned()
    } else {
        format!("btap-pool{space}-")
    }
}

/// The name of pool TAP `index` in naming space `space`, e.g.
/// `btap-pool-3` (space 0) or `btap-pool97-3` (space 97).
///
/// Indices wrap so the name always fits in 15 bytes: below 100 000 in
/// space 0, below 100 in the others (a pool keeps a handful of TAPs).
pub fn pool_tap_name_in(space: u8, index: u32) -> String {
    let wrap = if space == 0 { 100_000 } else { 100 };
    format!("{}{}", pool_tap_prefix(space), index % wrap)
}

/// Whether `name` is an idle warm-pool TAP (of any naming space).
pub fn is_pool_tap(name: &str) -> bool {
    pool_tap_index(name).is_some()
}

/// The index of a pool TAP name of naming space 0, if `name` is one.
pub fn pool_tap_index(name: &str) -> Option<u32> {
    if let Some(index) = pool_tap_index_in(0, name) {
        return Some(index);
    }
    // Another naming space: `btap-pool<1..=255>-<n>`.
    let rest = name.strip_prefix("btap-pool")?;
    let (space, _) = rest.split_once('-')?;
    let space: u8 = space.parse().ok().filter(|space| *space != 0)?;
    if space.to_string() != rest.split_once('-')?.0 {
        return None;
    }
    pool_tap_index_in(space, name)
}

/// The index of a pool TAP name of naming space `space`, if `name` is one.
pub fn pool_tap_index_in(space: u8, name: &str) -> Option<u32> {
    let digits = name.strip_prefix(&pool_tap_prefix(space))?;
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

/// The id prefix a VM TAP carries, if `name` is a VM TAP (not a pool TAP).
///
/// Reconcile uses it to match TAPs on the host against VMs in the store:
/// a VM owns the TAP when its id starts with the returned prefix.
pub fn vm_tap_id_prefix(name: &str) -> Option<&str> {
    let rest = name.strip_prefix(TAP_PREFIX)?;
    (rest.len() == VM_TAP_ID_CHARS && rest.bytes().all(|b| b.is_ascii_hexdigit())).then_some(rest)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vm_tap_names_fit_and_round_trip() {
        let id = Id::from_stored("0123456789abcdef0123456789abcdef");
        let name = vm_tap_name(&id);
        assert_eq!(name, "btap-0123456789");
        assert_eq!(name.len(), MAX_IFNAME_LEN);
        validate_tap_name(&name).unwrap();
        assert_eq!(vm_tap_id_prefix(&name), Some("0123456789"));
        assert!(id.as_str().starts_with(vm_tap_id_prefix(&name).unwrap()));
        assert!(!is_pool_tap(&name));
    }

    #[test]
    fn generated_ids_make_valid_tap_names() {
        for _ in 0..100 {
            let name = vm_tap_name(&Id::generate());
            validate_tap_name(&name).unwrap();
            assert!(vm_tap_id_prefix(&name).is_some());
        }
    }

    #[test]
    fn pool_names_are_distinct_from_vm_names() {
        let name = pool_tap_name(7);
        assert_eq!(name, "btap-pool-7");
        assert!(is_pool_tap(&name));
        assert_eq!(pool_tap_index(&name), Some(7));
        assert_eq!(vm_tap_id_prefix(&name), None);
        validate_tap_name(&name).unwrap();
        let largest = pool_tap_name(u32::MAX);
        assert!(largest.len() <= MAX_IFNAME_LEN, "{largest}");
        validate_tap_name(&largest).unwrap();
    }

    #[test]
    fn pool_index_parsing_rejects_lookalikes() {
        assert_eq!(pool_tap_index("btap-pool-"), None);
        assert_eq!(pool_tap_index("btap-pool-1a"), None);
        assert_eq!(pool_tap_index("btap-pool--1"), None);
        assert_eq!(pool_tap_index("xbtap-pool-1"), None);
        assert_eq!(pool_tap_index("btap-pool-00042"), Some(42));
    }

    #[test]
    fn pool_names_of_other_spaces_fit_and_stay_apart() {
        for space in 1..=255u8 {
            let name = pool_tap_name_in(space, u32::MAX);
            assert!(name.len() <= MAX_IFNAME_LEN, "{name}");
            validate_tap_name(&name).unwrap();
            assert!(is_pool_tap(&name), "{name}");
            assert_eq!(vm_tap_id_prefix(&name), None);
            assert_eq!(pool_tap_index_in(0, &name), None, "{name}");
        }
        let name = pool_tap_name_in(97, 3);
        assert_eq!(name, "btap-pool97-3");
        assert_eq!(pool_tap_index_in(97, &name), Some(3));
        assert_eq!(pool_tap_index_in(9, &name), None);
        assert_eq!(pool_tap_index(&name), Some(3));
        assert_eq!(pool_tap_name_in(0, 3), pool_tap_name(3));
        assert_eq!(pool_tap_index("btap-pool097-3"), None);
        assert_eq!(pool_tap_index("btap-pool0-3"), None);
        assert_eq!(pool_tap_index("btap-pool256-3"), None);
        assert_eq!(pool_tap_index("btap-pool97-"), None);
    }

    #[test]
    fn vm_tap_prefix_rejects_other_shapes() {
        assert_eq!(vm_tap_id_prefix("btap-012345678"), None);
        assert_eq!(vm_tap_id_prefix("btap-0123456789a"), None);
        assert_eq!(vm_tap_id_prefix("btap-012345678g"), None);
        assert_eq!(vm_tap_id_prefix("tap-0123456789"), None);
    }

    #[test]
    fn ifname_validation() {
        validate_ifname("br-banger").unwrap();
        assert_eq!(validate_ifname(""), Err(InvalidIfName::Empty));
        assert!(matches!(
            validate_ifname("a-very-long-bridge"),
            Err(InvalidIfName::TooLong(_))
        ));
        assert!(matches!(
            validate_ifname("br/0"),
            Err(InvalidIfName::BadCharacter(_))
        ));
        assert!(matches!(
            validate_ifname("br 0"),
            Err(InvalidIfName::BadCharacter(_))
        ));
        assert!(matches!(
            validate_ifname("eth0:1"),
            Err(InvalidIfName::BadCharacter(_))
        ));
        assert!(matches!(
            validate_ifname(".."),
            Err(InvalidIfName::Reserved(_))
        ));
    }

    #[test]
    fn tap_validation_requires_banger_prefix() {
        assert!(matches!(
            validate_tap_name("eth0"),
            Err(InvalidIfName::NotBangerTap(_))
        ));
        assert!(matches!(
            validate_tap_name("btap-"),
            Err(InvalidIfName::NotBangerTap(_))
        ));
        validate_tap_name("btap-x").unwrap();
    }
}
