//! One user's TAPs and NAT rules cannot be touched by another, nor links
//! the helper did not make.

use std::net::Ipv4Addr;

use banger_helper::HelperClient;
use banger_helper::protocol::{
    AddNatParams, CreateTapParams, EnsureBridgeParams, ListTapsParams, NetworkInfo,
    RenameTapParams, TapParams, VmIdParams, method,
};
use banger_net::{NetOps, RealNetOps};
use banger_rpc::{ErrorCode, NoParams};

use crate::refusals::code;
use crate::support::{ALICE, BOB, TestHelper, in_netns, link_line, root_or_skip, sh, tap_name};

async fn with_bridge(helper: &TestHelper, who: (u32, u32)) -> (HelperClient, NetworkInfo) {
    let mut client = helper.client(who).await;
    let net = client.network().await.unwrap();
    client
        .call::<method::EnsureBridge>(EnsureBridgeParams {
            name: net.bridge.clone(),
            address: net.address,
        })
        .await
        .unwrap();
    (client, net)
}

fn guest(net: &NetworkInfo, host: u32) -> Ipv4Addr {
    Ipv4Addr::from(u32::from(net.address.trunc().network()) + host)
}

#[test]
fn another_users_tap_is_refused() {
    if !root_or_skip("another_users_tap_is_refused") {
        return;
    }
    in_netns(|| async {
        let helper = TestHelper::start().await;
        let (mut alice, alice_net) = with_bridge(&helper, ALICE).await;
        let (mut bob, bob_net) = with_bridge(&helper, BOB).await;
        let tap = tap_name();
        alice
            .call::<method::CreateTap>(CreateTapParams {
                name: tap.clone(),
                bridge: alice_net.bridge.clone(),
            })
            .await
            .unwrap();

        let deleted = bob
            .call::<method::DeleteTap>(TapParams { name: tap.clone() })
            .await;
        assert_eq!(code(deleted), ErrorCode::PermissionDenied);
        let renamed = bob
            .call::<method::RenameTap>(RenameTapParams {
                from: tap.clone(),
                to: tap_name(),
            })
            .await;
        assert_eq!(code(renamed), ErrorCode::PermissionDenied);
        let taken = bob
            .call::<method::CreateTap>(CreateTapParams {
                name: tap.clone(),
                bridge: bob_net.bridge.clone(),
            })
            .await;
        assert_eq!(code(taken), ErrorCode::PermissionDenied, "adopting it");
        let listed = bob
            .call::<method::ListTaps>(ListTapsParams {
                prefix: "btap-".into(),
            })
            .await
            .unwrap();
        assert!(listed.names.is_empty(), "{listed:?}");
        let line = link_line(&tap).expect("alice's TAP survives");
        assert!(
            line.contains(&format!("master {}", alice_net.bridge)),
            "{line}"
        );

        // Renaming onto someone else's name is refused too.
        let bobs = tap_name();
        bob.call::<method::CreateTap>(CreateTapParams {
            name: bobs.clone(),
            bridge: bob_net.bridge.clone(),
        })
        .await
        .unwrap();
        let onto = bob
            .call::<method::RenameTap>(RenameTapParams {
                from: bobs.clone(),
                to: tap.clone(),
            })
            .await;
        assert_eq!(code(onto), ErrorCode::Conflict);

        // A TAP the helper did not make (root's daemon made it directly).
        let ops = RealNetOps::connect().unwrap();
        let foreign = tap_name();
        ops.create_tap(&foreign, &alice_net.bridge).await.unwrap();
        let deleted = alice
            .call::<method::DeleteTap>(TapParams {
                name: foreign.clone(),
            })
            .await;
        assert_eq!(code(deleted), ErrorCode::PermissionDenied);
        assert!(link_line(&foreign).is_some());
        // A name alice once had, deleted behind the helper's back and made
        // again by someone else, is no longer hers.
        let reused = tap_name();
        alice
            .call::<method::CreateTap>(CreateTapParams {
                name: reused.clone(),
                bridge: alice_net.bridge.clone(),
            })
            .await
            .unwrap();
        ops.delete_tap(&reused).await.unwrap();
        ops.create_tap(&reused, &alice_net.bridge).await.unwrap();
        let deleted = alice
            .call::<method::DeleteTap>(TapParams {
                name: reused.clone(),
            })
            .await;
        assert_eq!(code(deleted), ErrorCode::PermissionDenied);
        assert!(link_line(&reused).is_some());

        // Root is no exception through the helper.
        let mut root = helper.root().await;
        let deleted = root
            .call::<method::DeleteTap>(TapParams { name: tap.clone() })
            .await;
        assert_eq!(code(deleted), ErrorCode::PermissionDenied);
    });
}

#[test]
fn another_users_nat_rules_are_refused() {
    if !root_or_skip("another_users_nat_rules_are_refused")
        || !banger_testkit::have_or_skip(
            "another_users_nat_rules_are_refused",
            "iptables",
            "iptables",
        )
    {
        return;
    }
    in_netns(|| async {
        let helper = TestHelper::start().await;
        let (mut alice, alice_net) = with_bridge(&helper, ALICE).await;
        let (mut bob, bob_net) = with_bridge(&helper, BOB).await;
        let vm = "00112233445566778899aabbccddeeff".to_owned();
        alice
            .call::<method::AddNat>(AddNatParams {
                vm_id: vm.clone(),
                guest_ip: guest(&alice_net, 5),
                bridge: alice_net.bridge.clone(),
            })
            .await
            .unwrap();
        let rules = || {
            let mut all = sh(&["iptables", "-w", "-t", "nat", "-S"]);
            all.push_str(&sh(&["iptables", "-w", "-t", "filter", "-S"]));
            all.lines()
                .filter(|line| line.contains(&format!("banger:{vm}")))
                .count()
        };
        assert_eq!(rules(), 3);

        let removed = bob
            .call::<method::RemoveNat>(VmIdParams { vm_id: vm.clone() })
            .await;
        assert_eq!(code(removed), ErrorCode::PermissionDenied);
        // Adding under the same tag would replace alice's rules: refused.
        let added = bob
            .call::<method::AddNat>(AddNatParams {
                vm_id: vm.clone(),
                guest_ip: guest(&bob_net, 5),
                bridge: bob_net.bridge.clone(),
            })
            .await;
        assert_eq!(code(added), ErrorCode::PermissionDenied);
        let listed = bob.call::<method::ListNat>(NoParams {}).await.unwrap();
        assert!(listed.vm_ids.is_empty(), "{listed:?}");
        assert_eq!(rules(), 3, "alice's rules survive");

        let listed = alice.call::<method::ListNat>(NoParams {}).await.unwrap();
        assert_eq!(listed.vm_ids, vec![vm.clone()]);
        let removed = alice
            .call::<method::RemoveNat>(VmIdParams { vm_id: vm.clone() })
            .await
            .unwrap();
        assert_eq!(removed.removed, 3);
        assert_eq!(rules(), 0);
    });
}
