//! Guest IP allocation: a pure computation over the subnet and the addresses
//! already handed out. The store keeps the allocations; this module only
//! picks the next one.

use std::collections::HashSet;
use std::net::Ipv4Addr;

use ipnet::Ipv4Net;

/// Why no guest address could be allocated.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AllocateIpError {
    #[error(
        "subnet {subnet} has no free guest address left ({used} in use); delete a VM or configure a larger network.subnet"
    )]
    SubnetFull { subnet: Ipv4Net, used: usize },
}

/// The lowest address of `subnet` that is not the network address, the
/// broadcast address, `gateway`, or in `in_use`.
///
/// `subnet` may be given in the config's form (the bridge's own address
/// with the prefix, `172.30.0.1/24`); only its network part matters here.
pub fn next_free_ip(
    subnet: Ipv4Net,
    gateway: Ipv4Addr,
    in_use: impl IntoIterator<Item = Ipv4Addr>,
) -> Result<Ipv4Addr, AllocateIpError> {
    let in_use: HashSet<Ipv4Addr> = in_use.into_iter().collect();
    let network = u32::from(subnet.network());
    let broadcast = u32::from(subnet.broadcast());
    // /31 and /32 have no room for a guest next to a gateway; the range is
    // then empty and the subnet reported full.
    let first = network.saturating_add(1);
    let last = broadcast.saturating_sub(1);
    (first..=last)
        .map(Ipv4Addr::from)
        .find(|ip| *ip != gateway && !in_use.contains(ip))
        .ok_or(AllocateIpError::SubnetFull {
            subnet: subnet.trunc(),
            used: in_use.len(),
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn net(raw: &str) -> Ipv4Net {
        raw.parse().unwrap()
    }

    #[test]
    fn first_guest_skips_network_and_gateway() {
        let ip = next_free_ip(net("172.30.0.1/24"), Ipv4Addr::new(172, 30, 0, 1), []).unwrap();
        assert_eq!(ip, Ipv4Addr::new(172, 30, 0, 2));
    }

    #[test]
    fn skips_addresses_in_use_and_fills_holes() {
        let gw = Ipv4Addr::new(10, 0, 0, 1);
        let used = [Ipv4Addr::new(10, 0, 0, 2), Ipv4Addr::new(10, 0, 0, 4)];
        assert_eq!(
            next_free_ip(net("10.0.0.1/24"), gw, used).unwrap(),
            Ipv4Addr::new(10, 0, 0, 3)
        );
    }

    #[test]
    fn gateway_in_the_middle_is_skipped() {
        let gw = Ipv4Addr::new(10, 0, 0, 2);
        assert_eq!(
            next_free_ip(net("10.0.0.2/24"), gw, [Ipv4Addr::new(10, 0, 0, 1)]).unwrap(),
            Ipv4Addr::new(10, 0, 0, 3)
        );
    }

    #[test]
    fn never_hands_out_broadcast_and_reports_full() {
        // /29: network .0, hosts .1-.6, broadcast .7; gateway .1.
        let subnet = net("192.168.5.1/29");
        let gw = Ipv4Addr::new(192, 168, 5, 1);
        let mut used = Vec::new();
        for _ in 0..5 {
            let ip = next_free_ip(subnet, gw, used.iter().copied()).unwrap();
            assert_ne!(ip, Ipv4Addr::new(192, 168, 5, 7));
            assert!(subnet.contains(&ip));
            used.push(ip);
        }
        assert_eq!(used.last(), Some(&Ipv4Addr::new(192, 168, 5, 6)));
        let err = next_free_ip(subnet, gw, used.iter().copied()).unwrap_err();
        assert_eq!(
            err,
            AllocateIpError::SubnetFull {
                subnet: net("192.168.5.0/29"),
                used: 5
            }
        );
        assert!(err.to_string().contains("192.168.5.0/29"), "{err}");
    }

    #[test]
    fn tiny_subnets_are_full() {
        for raw in ["10.0.0.1/31", "10.0.0.1/32", "10.0.0.1/30"] {
            let subnet = net(raw);
            let gw = subnet.addr();
            let result = next_free_ip(subnet, gw, []);
            if raw.ends_with("/30") {
                // .0 network, .1 gateway, .2 guest, .3 broadcast.
                assert_eq!(result.unwrap(), Ipv4Addr::new(10, 0, 0, 2));
            } else {
                assert!(result.is_err(), "{raw}");
            }
        }
    }

    #[test]
    fn addresses_outside_the_subnet_do_not_matter() {
        let ip = next_free_ip(
            net("172.30.0.1/24"),
            Ipv4Addr::new(172, 30, 0, 1),
            [Ipv4Addr::new(10, 0, 0, 2)],
        )
        .unwrap();
        assert_eq!(ip, Ipv4Addr::new(172, 30, 0, 2));
    }

    #[test]
    fn every_address_of_a_24_is_allocatable_once() {
        let subnet = net("172.30.0.1/24");
        let gw = subnet.addr();
        let mut used = HashSet::new();
        while let Ok(ip) = next_free_ip(subnet, gw, used.iter().copied()) {
            assert!(used.insert(ip), "{ip} handed out twice");
        }
        assert_eq!(used.len(), 253);
    }
}
