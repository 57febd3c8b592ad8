use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::time::Duration;

use banger_model::Id;
use banger_net::{NetOps, RealNetOps};
use futures::TryStreamExt;
use rtnetlink::LinkUnspec;

use crate::support::{in_netns, in_ns, new_netns, random_hex, root_or_skip, sh, sh_async};

fn tagged_lines(save: &str, id: &Id) -> Vec<String> {
    save.lines()
        .filter(|line| line.contains(&format!("banger:{id}")))
        .map(str::to_owned)
        .collect()
}

#[test]
fn nat_rules_are_added_tagged_listed_and_removed_exactly() {
    if !root_or_skip("nat_rules_are_added_tagged_listed_and_removed_exactly") {
        return;
    }
    in_netns(|| async {
        let ops = RealNetOps::connect().unwrap();
        let br = format!("br-{}", random_hex(8));
        // Someone else's rules, which must survive ours coming and going.
        sh_async(&["iptables", "-w", "-P", "FORWARD", "DROP"]).await;
        sh_async(&[
            "iptables", "-w", "-A", "FORWARD", "-i", "docker0", "-j", "ACCEPT",
        ])
        .await;
        sh_async(&[
            "iptables",
            "-w",
            "-t",
            "nat",
            "-A",
            "POSTROUTING",
            "-s",
            "172.17.0.0/16",
            "-j",
            "MASQUERADE",
        ])
        .await;

        let a = Id::generate();
        let b = Id::generate();
        ops.add_vm_nat(&a, Ipv4Addr::new(172, 30, 0, 2), &br)
            .await
            .unwrap();
        ops.add_vm_nat(&b, Ipv4Addr::new(172, 30, 0, 3), &br)
            .await
            .unwrap();

        let save = sh_async(&["iptables-save"]).await;
        let lines_a = tagged_lines(&save, &a);
        assert_eq!(lines_a.len(), 3, "{save}");
        let expected = [
            format!(
                "-A POSTROUTING -s 172.30.0.2/32 ! -o {br} -m comment --comment \"banger:{a}\" -j MASQUERADE"
            ),
            format!(
                "-A FORWARD -s 172.30.0.2/32 -i {br} ! -o {br} -m comment --comment \"banger:{a}\" -j ACCEPT"
            ),
            format!(
                "-A FORWARD -d 172.30.0.2/32 -o {br} -m conntrack --ctstate RELATED,ESTABLISHED -m comment --comment \"banger:{a}\" -j ACCEPT"
            ),
        ];
        for rule in &expected {
            assert!(lines_a.contains(rule), "missing {rule}\n{save}");
        }
        assert_eq!(tagged_lines(&save, &b).len(), 3, "{save}");
        // Inserted above the existing rules, so a DROP policy host forwards.
        let forward = sh_async(&["iptables", "-w", "-S", "FORWARD"]).await;
        let appended: Vec<&str> = forward.lines().filter(|l| l.starts_with("-A")).collect();
        assert!(
            appended[..4].iter().all(|l| l.contains("banger:")),
            "{forward}"
        );
        assert!(appended[4].contains("docker0"), "{forward}");

        assert_eq!(
            ops.list_nat_tagged().await.unwrap(),
            BTreeSet::from([a.clone(), b.clone()])
        );

        // Adding again (a restart, a retry) replaces rather than duplicates.
        ops.add_vm_nat(&a, Ipv4Addr::new(172, 30, 0, 2), &br)
            .await
            .unwrap();
        let save = sh_async(&["iptables-save"]).await;
        assert_eq!(tagged_lines(&save, &a).len(), 3, "{save}");

        assert_eq!(ops.remove_vm_nat(&a).await.unwrap(), 3);
        let save = sh_async(&["iptables-save"]).await;
        assert!(tagged_lines(&save, &a).is_empty(), "{save}");
        assert_eq!(tagged_lines(&save, &b).len(), 3, "{save}");
        assert_eq!(
            ops.remove_vm_nat(&a).await.unwrap(),
            0,
            "already gone is fine"
        );
        assert_eq!(
            ops.list_nat_tagged().await.unwrap(),
            BTreeSet::from([b.clone()])
        );

        assert_eq!(ops.remove_vm_nat(&b).await.unwrap(), 3);
        let save = sh_async(&["iptables-save"]).await;
        assert!(!save.contains("banger:"), "{save}");
        assert!(save.contains("-A FORWARD -i docker0 -j ACCEPT"), "{save}");
        assert!(
            save.contains("-A POSTROUTING -s 172.17.0.0/16 -j MASQUERADE"),
            "{save}"
        );
        assert!(ops.list_nat_tagged().await.unwrap().is_empty());
    });
}

#[test]
fn ip_forward_is_enabled_in_the_namespace_only() {
    if !root_or_skip("ip_forward_is_enabled_in_the_namespace_only") {
        return;
    }
    let host_before = std::fs::read_to_string("/proc/sys/net/ipv4/ip_forward").unwrap();
    in_netns(|| async {
        let ops = RealNetOps::connect().unwrap();
        let path = "/proc/sys/net/ipv4/ip_forward";
        // A new namespace copies the host's IPv4 settings (unless
        // net.core.devconf_inherit_init_net says otherwise), so on a host
        // that forwards it starts at 1: start this one from 0.
        std::fs::write(path, "0\n").unwrap();
        assert_eq!(std::fs::read_to_string(path).unwrap().trim(), "0");
        assert!(ops.enable_ip_forward().await.unwrap());
        assert_eq!(std::fs::read_to_string(path).unwrap().trim(), "1");
        assert!(!ops.enable_ip_forward().await.unwrap());
    });
    let host_after = std::fs::read_to_string("/proc/sys/net/ipv4/ip_forward").unwrap();
    assert_eq!(host_before, host_after, "the host's setting was touched");
}

/// A guest behind the bridge reaches a server it has no route back from,
/// through a FORWARD chain whose policy is DROP, only while its NAT rules
/// exist; the server sees the NAT address, not the guest's.
#[test]
fn nat_lets_the_guest_out_through_a_drop_policy() {
    if !root_or_skip("nat_lets_the_guest_out_through_a_drop_policy") {
        return;
    }
    in_netns(|| async {
        let ops = RealNetOps::connect().unwrap();
        let br = format!("br-{}", random_hex(8));
        ops.ensure_bridge(&br, "172.30.0.1/24".parse().unwrap())
            .await
            .unwrap();
        ops.enable_ip_forward().await.unwrap();
        sh_async(&["iptables", "-w", "-P", "FORWARD", "DROP"]).await;

        // guest netns <-veth-> bridge (this netns) ; this netns <-veth-> outside netns
        let guest = new_netns();
        let outside = new_netns();
        sh_async(&[
            "ip", "link", "add", "vh0", "type", "veth", "peer", "name", "vg0",
        ])
        .await;
        sh_async(&["ip", "link", "set", "vh0", "master", &br, "up"]).await;
        sh_async(&[
            "ip", "link", "add", "vo0", "type", "veth", "peer", "name", "vo1",
        ])
        .await;
        sh_async(&["ip", "addr", "add", "10.99.0.1/24", "dev", "vo0"]).await;
        sh_async(&["ip", "link", "set", "vo0", "up"]).await;
        move_link("vg0", &guest).await;
        move_link("vo1", &outside).await;
        in_ns(&guest, || {
            sh(&["ip", "link", "set", "lo", "up"]);
            sh(&["ip", "addr", "add", "172.30.0.2/24", "dev", "vg0"]);
            sh(&["ip", "link", "set", "vg0", "up"]);
            sh(&["ip", "route", "add", "default", "via", "172.30.0.1"]);
        });
        // The outside has no route to 172.30.0.0/24: replies only come back
        // when the guest's traffic is masqueraded as 10.99.0.1.
        let listener = in_ns(&outside, || {
            sh(&["ip", "link", "set", "lo", "up"]);
            sh(&["ip", "addr", "add", "10.99.0.2/24", "dev", "vo1"]);
            sh(&["ip", "link", "set", "vo1", "up"]);
            TcpListener::bind("10.99.0.2:0").unwrap()
        });
        let server = listener.local_addr().unwrap();

        let vm = Id::generate();
        assert!(!guest_connects(&guest, server), "connected without NAT");

        ops.add_vm_nat(&vm, Ipv4Addr::new(172, 30, 0, 2), &br)
            .await
            .unwrap();
        let accept = std::thread::spawn(move || {
            let (mut stream, peer) = listener.accept().unwrap();
            stream.write_all(b"hi").unwrap();
            peer
        });
        assert!(guest_connects(&guest, server), "no connection through NAT");
        let peer = accept.join().unwrap();
        assert_eq!(peer.ip(), Ipv4Addr::new(10, 99, 0, 1), "not masqueraded");

        assert_eq!(ops.remove_vm_nat(&vm).await.unwrap(), 3);
        assert!(!sh_async(&["iptables-save"]).await.contains("banger:"));
    });
}

/// Moves link `name` from this namespace into `netns`.
async fn move_link(name: &str, netns: &std::os::fd::OwnedFd) {
    let (connection, handle, _) = rtnetlink::new_connection().unwrap();
    tokio::spawn(connection);
    let link = handle
        .link()
        .get()
        .match_name(name)
        .execute()
        .try_next()
        .await
        .unwrap()
        .unwrap();
    handle
        .link()
        .set(
            LinkUnspec::new_with_index(link.header.index)
                .setns_by_fd(netns.as_raw_fd())
                .build(),
        )
        .execute()
        .await
        .unwrap();
}

/// Whether the guest can open a TCP connection to `server` and read its
/// greeting (bounded wait: an unanswered SYN means no).
fn guest_connects(guest: &std::os::fd::OwnedFd, server: SocketAddr) -> bool {
    in_ns(guest, || {
        match TcpStream::connect_timeout(&server, Duration::from_secs(3)) {
            Ok(mut stream) => {
                stream
                    .set_read_timeout(Some(Duration::from_secs(3)))
                    .unwrap();
                let mut greeting = [0u8; 2];
                stream.read_exact(&mut greeting).is_ok() && &greeting == b"hi"
            }
            Err(_) => false,
        }
    })
}
