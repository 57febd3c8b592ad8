//! The happy path: a user's bridge, a TAP it owns, gone after delete.

use banger_helper::protocol::{
    CreateTapParams, EnsureBridgeParams, ListTapsParams, RenameTapParams, TapParams, method,
};

use crate::support::{
    ALICE, BOB, TestHelper, in_netns, link_line, open_tap_as, root_or_skip, tap_name,
};

#[test]
fn a_user_gets_a_tap_it_owns_on_its_own_bridge_and_can_remove_it() {
    if !root_or_skip("a_user_gets_a_tap_it_owns_on_its_own_bridge_and_can_remove_it") {
        return;
    }
    in_netns(|| async {
        let helper = TestHelper::start().await;
        let mut alice = helper.client(ALICE).await;

        let net = alice.network().await.unwrap();
        assert_eq!(net.uid, ALICE.0);
        assert_eq!(net.bridge, format!("bbr-{}", ALICE.0));
        assert_ne!(
            net.pool_space, 0,
            "a user's pool TAPs are named apart from root's"
        );
        let ensured = alice
            .call::<method::EnsureBridge>(EnsureBridgeParams {
                name: net.bridge.clone(),
                address: net.address,
            })
            .await
            .unwrap();
        assert!(ensured.created);
        let bridge = link_line(&net.bridge).expect("bridge exists");
        assert!(bridge.contains("bridge"), "{bridge}");
        assert!(
            bridge.contains(&format!("alias banger-helper uid={}", ALICE.0)),
            "{bridge}"
        );
        let addresses = crate::support::sh(&["ip", "-o", "-4", "addr", "show", "dev", &net.bridge]);
        assert!(addresses.contains(&net.address.to_string()), "{addresses}");

        let tap = tap_name();
        let created = alice
            .call::<method::CreateTap>(CreateTapParams {
                name: tap.clone(),
                bridge: net.bridge.clone(),
            })
            .await
            .unwrap();
        assert!(created.created);
        let line = link_line(&tap).expect("TAP exists");
        assert!(line.contains(&format!("master {}", net.bridge)), "{line}");
        assert!(line.contains("tun type tap"), "{line}");
        assert!(line.contains("persist on"), "{line}");
        assert!(
            line.contains(&format!(" user {} ", ALICE.0)),
            "owned by the caller: {line}"
        );
        assert!(
            line.contains(&format!("alias banger-helper uid={}", ALICE.0)),
            "{line}"
        );

        // The owner opens it without any capability, as Firecracker will;
        // another user cannot.
        open_tap_as(&tap, ALICE.0, ALICE.1).expect("the owner opens its TAP");
        let err = open_tap_as(&tap, BOB.0, BOB.1).unwrap_err();
        assert_eq!(err.raw_os_error(), Some(libc::EPERM), "{err}");

        // Asking again adopts it.
        let again = alice
            .call::<method::CreateTap>(CreateTapParams {
                name: tap.clone(),
                bridge: net.bridge.clone(),
            })
            .await
            .unwrap();
        assert!(!again.created);

        let listed = alice
            .call::<method::ListTaps>(ListTapsParams {
                prefix: "btap-".into(),
            })
            .await
            .unwrap();
        assert_eq!(listed.names, vec![tap.clone()]);

        // A pool-style rename keeps the owner.
        let renamed = tap_name();
        alice
            .call::<method::RenameTap>(RenameTapParams {
                from: tap.clone(),
                to: renamed.clone(),
            })
            .await
            .unwrap();
        assert_eq!(link_line(&tap), None);
        let line = link_line(&renamed).expect("renamed TAP exists");
        assert!(line.contains(&format!(" user {} ", ALICE.0)), "{line}");
        assert!(line.contains(",UP"), "{line}");

        let deleted = alice
            .call::<method::DeleteTap>(TapParams {
                name: renamed.clone(),
            })
            .await
            .unwrap();
        assert!(deleted.existed);
        assert_eq!(link_line(&renamed), None);
        let again = alice
            .call::<method::DeleteTap>(TapParams { name: renamed })
            .await
            .unwrap();
        assert!(!again.existed, "deleting twice is fine");
        assert!(helper.helper.registered_taps().await.is_empty());
    });
}

#[test]
fn two_users_get_separate_bridges_and_subnets() {
    if !root_or_skip("two_users_get_separate_bridges_and_subnets") {
        return;
    }
    in_netns(|| async {
        let helper = TestHelper::start().await;
        let mut nets = Vec::new();
        for who in [ALICE, BOB] {
            let mut client = helper.client(who).await;
            let net = client.network().await.unwrap();
            client
                .call::<method::EnsureBridge>(EnsureBridgeParams {
                    name: net.bridge.clone(),
                    address: net.address,
                })
                .await
                .unwrap();
            nets.push(net);
        }
        let mut root = helper.root().await;
        let root_net = root.network().await.unwrap();
        assert_eq!(root_net.bridge, "br-banger");
        assert_eq!(root_net.address.to_string(), "172.30.0.1/24");
        assert_ne!(nets[0].bridge, nets[1].bridge);
        assert_ne!(nets[0].address.trunc(), nets[1].address.trunc());
        assert_ne!(nets[0].address.trunc(), root_net.address.trunc());
        for net in &nets {
            assert!(link_line(&net.bridge).is_some());
        }
    });
}
