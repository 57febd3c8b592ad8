use banger_net::{EnsureBridgeError, NetOps, RealNetOps};
use ipnet::Ipv4Net;

use crate::support::{in_netns, link_line, random_hex, root_or_skip, sh, sh_async};

fn subnet() -> Ipv4Net {
    "172.30.0.1/24".parse().unwrap()
}

#[test]
fn bridge_is_created_addressed_up_and_then_left_alone() {
    if !root_or_skip("bridge_is_created_addressed_up_and_then_left_alone") {
        return;
    }
    in_netns(|| async {
        let ops = RealNetOps::connect().unwrap();
        let name = format!("br-{}", random_hex(8));

        let first = ops.ensure_bridge(&name, subnet()).await.unwrap();
        assert!(first.created);
        assert!(first.address_added);
        let line = link_line(&name).expect("bridge exists");
        assert!(line.contains("bridge"), "{line}");
        assert!(line.contains("<BROADCAST,MULTICAST,UP"), "{line}");
        let addrs = sh(&["ip", "-o", "-4", "addr", "show", "dev", &name]);
        assert!(addrs.contains("inet 172.30.0.1/24"), "{addrs}");
        // Its subnet's route acknowledges TCP at once (ssh to guests waits
        // on delayed ACKs otherwise), and stays the kernel's one route.
        let routes = sh(&["ip", "-4", "route", "show", "dev", &name]);
        assert_eq!(
            routes.trim(),
            "172.30.0.0/24 proto kernel scope link src 172.30.0.1 quickack 1",
            "{routes}"
        );

        let second = ops.ensure_bridge(&name, subnet()).await.unwrap();
        assert!(!second.created);
        assert!(!second.address_added);
        assert_eq!(second.index, first.index);
        let addrs = sh(&["ip", "-o", "-4", "addr", "show", "dev", &name]);
        assert_eq!(addrs.lines().count(), 1, "{addrs}");

        // Someone took it down and removed the address: the next call repairs it.
        sh_async(&["ip", "link", "set", &name, "down"]).await;
        sh_async(&["ip", "addr", "flush", "dev", &name]).await;
        let third = ops.ensure_bridge(&name, subnet()).await.unwrap();
        assert!(!third.created);
        assert!(third.address_added);
        let line = link_line(&name).unwrap();
        assert!(line.contains(",UP"), "{line}");
        let addrs = sh(&["ip", "-o", "-4", "addr", "show", "dev", &name]);
        assert!(addrs.contains("inet 172.30.0.1/24"), "{addrs}");
        let routes = sh(&["ip", "-4", "route", "show", "dev", &name]);
        assert!(routes.contains("quickack 1"), "{routes}");

        sh_async(&["ip", "link", "del", &name]).await;
    });
}

#[test]
fn a_non_bridge_link_with_the_name_is_refused() {
    if !root_or_skip("a_non_bridge_link_with_the_name_is_refused") {
        return;
    }
    in_netns(|| async {
        let ops = RealNetOps::connect().unwrap();
        let name = format!("br-{}", random_hex(8));
        let peer = format!("vp-{}", random_hex(8));
        sh_async(&[
            "ip", "link", "add", &name, "type", "veth", "peer", "name", &peer,
        ])
        .await;
        let err = ops.ensure_bridge(&name, subnet()).await.unwrap_err();
        assert!(
            matches!(&err, EnsureBridgeError::NotABridge { kind, .. } if kind == "veth"),
            "{err:?}"
        );
        assert!(err.to_string().contains(&name), "{err}");
        // Nothing was changed on it.
        let addrs = sh(&["ip", "-o", "-4", "addr", "show", "dev", &name]);
        assert!(addrs.is_empty(), "{addrs}");
        sh_async(&["ip", "link", "del", &name]).await;
    });
}

#[test]
fn invalid_bridge_names_are_refused_before_netlink() {
    if !root_or_skip("invalid_bridge_names_are_refused_before_netlink") {
        return;
    }
    in_netns(|| async {
        let ops = RealNetOps::connect().unwrap();
        let err = ops
            .ensure_bridge("a-name-far-too-long", subnet())
            .await
            .unwrap_err();
        assert!(matches!(err, EnsureBridgeError::InvalidName(_)), "{err:?}");
    });
}
