//! banger-net's seams over the helper: what bangerd will use when it does
//! not run as root.

use std::sync::Arc;

use banger_helper::{HelperDnsRouting, HelperNetOps};
use banger_model::Id;
use banger_net::routing::DnsRouting;
use banger_net::{NetOps, TapPool};

use crate::support::{TestHelper, in_netns, link_line, root_or_skip, tap_name};

#[test]
fn net_ops_over_the_helper_drive_bridge_taps_and_the_pool() {
    if !root_or_skip("net_ops_over_the_helper_drive_bridge_taps_and_the_pool") {
        return;
    }
    in_netns(|| async {
        let helper = TestHelper::start().await;
        let ops = HelperNetOps::new(&helper.socket);
        let net = helper.root().await.network().await.unwrap();

        let state = ops.ensure_bridge(&net.bridge, net.address).await.unwrap();
        assert!(state.created);
        let tap = tap_name();
        assert!(ops.create_tap(&tap, &net.bridge).await.unwrap());
        assert!(
            link_line(&tap)
                .unwrap()
                .contains(&format!("master {}", net.bridge))
        );
        assert_eq!(ops.list_links("btap-").await.unwrap(), vec![tap.clone()]);
        assert!(ops.delete_tap(&tap).await.unwrap());
        assert!(!ops.delete_tap(&tap).await.unwrap());
        assert!(ops.list_links("btap-").await.unwrap().is_empty());

        // A refusal keeps the helper's words.
        let err = ops.create_tap("btap-x", "docker0").await.unwrap_err();
        let chain = format!("{:?}", anyhow_chain(&err));
        assert!(chain.contains("docker0"), "{chain}");

        // banger-net's warm pool works unchanged on top, in the caller's
        // naming space.
        let pool = TapPool::start_in(Arc::new(ops.clone()), net.bridge.clone(), 2, net.pool_space);
        let vm_tap = banger_net::vm_tap_name(&Id::generate());
        let acquired = pool.acquire(&vm_tap).await.unwrap();
        assert_eq!(acquired.name, vm_tap);
        assert!(link_line(&vm_tap).is_some());
        assert!(ops.delete_tap(&vm_tap).await.unwrap());
        pool.shutdown().await;

        let routing = HelperDnsRouting::new(&helper.socket);
        routing
            .apply(&net.bridge, "127.0.0.1:42069".parse().unwrap())
            .await
            .unwrap();
        routing.revert(&net.bridge).await.unwrap();
        assert!(
            routing
                .apply("eth0", "127.0.0.1:53".parse().unwrap())
                .await
                .is_err()
        );
    });
}

fn anyhow_chain(error: &dyn std::error::Error) -> Vec<String> {
    let mut chain = vec![error.to_string()];
    let mut source = error.source();
    while let Some(cause) = source {
        chain.push(cause.to_string());
        source = cause.source();
    }
    chain
}
