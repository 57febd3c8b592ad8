//! One refusal each: names outside banger's prefixes, another caller's
//! bridge, addresses outside the caller's subnet.

use banger_helper::HelperCallError;
use banger_helper::protocol::{
    AddNatParams, ApplyDnsParams, CreateTapParams, EnsureBridgeParams, RenameTapParams, TapParams,
    method,
};
use banger_rpc::ErrorCode;

use crate::support::{ALICE, TestHelper, in_netns, link_line, root_or_skip, sh, tap_name};

pub(crate) fn code<T: std::fmt::Debug>(result: Result<T, HelperCallError>) -> ErrorCode {
    let error = result.expect_err("the helper must refuse");
    error
        .rpc()
        .unwrap_or_else(|| panic!("expected an answer from the helper, got {error:?}"))
        .code
}

async fn alice_with_bridge(helper: &TestHelper) -> (banger_helper::HelperClient, String) {
    let mut alice = helper.client(ALICE).await;
    let net = alice.network().await.unwrap();
    alice
        .call::<method::EnsureBridge>(EnsureBridgeParams {
            name: net.bridge.clone(),
            address: net.address,
        })
        .await
        .unwrap();
    (alice, net.bridge)
}

#[test]
fn tap_names_outside_bangers_prefix_are_refused() {
    if !root_or_skip("tap_names_outside_bangers_prefix_are_refused") {
        return;
    }
    in_netns(|| async {
        let helper = TestHelper::start().await;
        let (mut alice, bridge) = alice_with_bridge(&helper).await;
        sh(&["ip", "link", "add", "other0", "type", "bridge"]);
        for name in [
            "other0",
            "eth0",
            "lo",
            "btap-",
            "tap-0123456789",
            "btap-x/y",
            "btap-%d",
        ] {
            let created = alice
                .call::<method::CreateTap>(CreateTapParams {
                    name: name.into(),
                    bridge: bridge.clone(),
                })
                .await;
            assert_eq!(code(created), ErrorCode::InvalidArgument, "create {name}");
            let deleted = alice
                .call::<method::DeleteTap>(TapParams { name: name.into() })
                .await;
            assert_eq!(code(deleted), ErrorCode::InvalidArgument, "delete {name}");
        }
        let renamed = alice
            .call::<method::RenameTap>(RenameTapParams {
                from: "other0".into(),
                to: tap_name(),
            })
            .await;
        assert_eq!(code(renamed), ErrorCode::InvalidArgument);
        assert!(link_line("other0").is_some(), "other0 untouched");
        assert!(link_line("lo").is_some());
    });
}

#[test]
fn bridges_other_than_the_callers_are_refused() {
    if !root_or_skip("bridges_other_than_the_callers_are_refused") {
        return;
    }
    in_netns(|| async {
        let helper = TestHelper::start().await;
        let mut alice = helper.client(ALICE).await;
        let net = alice.network().await.unwrap();
        for (name, address) in [
            ("br-banger", "172.30.0.1/24"),
            ("docker0", "172.17.0.1/16"),
            ("bbr-60002", "172.30.0.1/24"),
            (net.bridge.as_str(), "172.30.0.1/24"),
            (net.bridge.as_str(), "10.0.0.1/8"),
        ] {
            let ensured = alice
                .call::<method::EnsureBridge>(EnsureBridgeParams {
                    name: name.into(),
                    address: address.parse().unwrap(),
                })
                .await;
            assert_eq!(
                code(ensured),
                ErrorCode::InvalidArgument,
                "{name} {address}"
            );
            if name != net.bridge {
                assert_eq!(link_line(name), None, "{name} was not created");
            }
        }
        // A TAP on someone else's bridge.
        let (mut alice, _) = alice_with_bridge(&helper).await;
        let created = alice
            .call::<method::CreateTap>(CreateTapParams {
                name: tap_name(),
                bridge: "br-banger".into(),
            })
            .await;
        assert_eq!(code(created), ErrorCode::InvalidArgument);
    });
}

#[test]
fn addresses_outside_the_callers_subnet_are_refused() {
    if !root_or_skip("addresses_outside_the_callers_subnet_are_refused") {
        return;
    }
    in_netns(|| async {
        let helper = TestHelper::start().await;
        let (mut alice, bridge) = alice_with_bridge(&helper).await;
        let net = alice.network().await.unwrap();
        let gateway = net.address.addr();
        let subnet = net.address.trunc();
        for ip in [
            "10.0.0.5".parse().unwrap(),
            "172.30.0.5".parse().unwrap(),
            gateway,
            subnet.network(),
            subnet.broadcast(),
        ] {
            let added = alice
                .call::<method::AddNat>(AddNatParams {
                    vm_id: "0123456789abcdef".into(),
                    guest_ip: ip,
                    bridge: bridge.clone(),
                })
                .await;
            assert_eq!(code(added), ErrorCode::InvalidArgument, "{ip}");
        }
        let added = alice
            .call::<method::AddNat>(AddNatParams {
                vm_id: "not-hex; -j DROP".into(),
                guest_ip: std::net::Ipv4Addr::from(u32::from(subnet.network()) + 9),
                bridge: bridge.clone(),
            })
            .await;
        assert_eq!(code(added), ErrorCode::InvalidArgument, "vm id");
        let applied = alice
            .call::<method::ApplyDns>(ApplyDnsParams {
                link: bridge.clone(),
                dns: "192.0.2.1:53".parse().unwrap(),
            })
            .await;
        assert_eq!(
            code(applied),
            ErrorCode::InvalidArgument,
            "non-loopback DNS"
        );
        let applied = alice
            .call::<method::ApplyDns>(ApplyDnsParams {
                link: "br-banger".into(),
                dns: "127.0.0.1:42069".parse().unwrap(),
            })
            .await;
        assert_eq!(
            code(applied),
            ErrorCode::InvalidArgument,
            "someone else's bridge"
        );
        // Its own bridge and a loopback server are fine.
        alice
            .call::<method::ApplyDns>(ApplyDnsParams {
                link: bridge,
                dns: "127.0.0.1:42069".parse().unwrap(),
            })
            .await
            .unwrap();
    });
}
