//! `~vm` routing through the host resolver, wired into the network
//! subsystem, against the recording `FakeDnsRouting`.

use std::sync::Arc;

use banger_model::Name;
use banger_model::config::NetworkConfig;
use banger_net::fake::FakeNetOps;
use banger_net::routing::{DnsRouting, FakeDnsRouting, RoutingCall};
use bangerd::network::{Network, RoutingState};

fn config() -> NetworkConfig {
    NetworkConfig {
        dns_listen: "127.0.0.1:0".parse().unwrap(),
        tap_pool_size: 0,
        ..NetworkConfig::default()
    }
}

async fn network(routing: Option<Arc<FakeDnsRouting>>) -> Network {
    Network::start(Arc::new(FakeNetOps::new()), config())
        .await
        .with_routing(routing.map(|fake| fake as Arc<dyn DnsRouting>))
}

#[tokio::test]
async fn applied_when_the_bridge_comes_up_and_on_publish_then_reverted() {
    let fake = Arc::new(FakeDnsRouting::new());
    let network = network(Some(fake.clone())).await;
    let dns = network.dns_server_addr().unwrap();
    assert!(dns.ip().is_loopback() && dns.port() != 0, "{dns}");

    // Nothing is routed before the bridge exists, even when records change.
    network.publish(
        &Name::parse("early").unwrap(),
        "172.30.0.2".parse().unwrap(),
    );
    network.routing_settled().await;
    assert!(fake.calls().is_empty(), "{:?}", fake.calls());
    assert_eq!(network.routing_state(), RoutingState::Pending);

    network.pool().await.unwrap();
    network.routing_settled().await;
    let apply = RoutingCall::Apply {
        link: "br-banger".into(),
        dns,
    };
    assert_eq!(fake.calls(), vec![apply.clone()]);
    assert_eq!(network.routing_state(), RoutingState::Applied { dns });

    network.publish(&Name::parse("web").unwrap(), "172.30.0.3".parse().unwrap());
    network.routing_settled().await;
    assert_eq!(fake.calls(), vec![apply.clone(), apply.clone()]);

    network.shutdown().await;
    assert_eq!(
        fake.calls().last(),
        Some(&RoutingCall::Revert {
            link: "br-banger".into()
        })
    );
    assert!(fake.active().is_empty());
}

#[tokio::test]
async fn a_failing_resolver_is_reported_never_fatal_and_retried() {
    let fake = Arc::new(FakeDnsRouting::new());
    fake.fail_apply_nth(1);
    let network = network(Some(fake.clone())).await;
    // The bridge (and so the first VM) comes up although routing fails.
    network.pool().await.unwrap();
    network.routing_settled().await;
    let RoutingState::Failed(error) = network.routing_state() else {
        panic!("{:?}", network.routing_state());
    };
    assert!(error.contains("br-banger"), "{error}");
    assert!(error.contains("injected failure"), "{error}");

    // The next record change retries, and succeeds.
    network.publish(&Name::parse("web").unwrap(), "172.30.0.3".parse().unwrap());
    network.routing_settled().await;
    assert!(matches!(
        network.routing_state(),
        RoutingState::Applied { .. }
    ));

    // A failing revert at shutdown is logged, not fatal.
    fake.fail_revert_nth(1);
    network.shutdown().await;
    assert_eq!(fake.active().len(), 1);
}

#[tokio::test]
async fn bursts_of_records_coalesce() {
    let fake = Arc::new(FakeDnsRouting::new());
    let network = network(Some(fake.clone())).await;
    network.pool().await.unwrap();
    network.routing_settled().await;
    for n in 0..50 {
        network.publish(
            &Name::parse(&format!("vm{n}")).unwrap(),
            "172.30.0.9".parse().unwrap(),
        );
    }
    network.routing_settled().await;
    let applies = fake.calls().len();
    assert!((2..=51).contains(&applies), "{applies}");
    assert!(applies < 51, "50 publishes in one tick were not coalesced");
    network.shutdown().await;
}

#[tokio::test]
async fn without_resolved_nothing_is_routed() {
    let network = network(None).await;
    network.pool().await.unwrap();
    network.publish(&Name::parse("web").unwrap(), "172.30.0.3".parse().unwrap());
    network.routing_settled().await;
    assert_eq!(network.routing_state(), RoutingState::Inactive);
    network.shutdown().await;
}

/// A daemon in its own network namespace (like every end-to-end test's)
/// must never route through the host's resolved: link indexes differ.
#[test]
fn a_private_network_namespace_does_not_route() {
    if !nix::unistd::geteuid().is_root() {
        eprintln!("skipped: needs root to unshare a network namespace");
        return;
    }
    let inside = std::thread::spawn(|| {
        nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNET).unwrap();
        bangerd::network::shares_resolved_network_namespace()
    })
    .join()
    .unwrap();
    assert!(!inside);
}

#[tokio::test]
async fn skipped_routing_is_reported_and_never_applied() {
    let network = Network::start(Arc::new(FakeNetOps::new()), config())
        .await
        .with_routing_skipped("another network namespace");
    network.pool().await.unwrap();
    network.publish(&Name::parse("web").unwrap(), "172.30.0.3".parse().unwrap());
    network.routing_settled().await;
    assert_eq!(
        network.routing_state(),
        RoutingState::Skipped("another network namespace".into())
    );
    network.shutdown().await;
}

/// A daemon that reaches the network through banger-helper keeps its warm
/// TAPs in its user's naming space, so two users' pools never collide.
#[tokio::test]
async fn a_pool_reached_through_access_names_taps_in_its_space() {
    let ops = Arc::new(FakeNetOps::new());
    let network = Network::start_with(bangerd::network::Access {
        ops: ops.clone(),
        config: NetworkConfig {
            tap_pool_size: 1,
            ..config()
        },
        routing: Arc::new(FakeDnsRouting::new()),
        pool_space: 7,
        via: bangerd::network::Via::Helper("/run/banger/helper.sock".into()),
    })
    .await;
    assert_eq!(
        network.via().to_string(),
        "banger-helper at /run/banger/helper.sock"
    );
    network.pool().await.unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while ops.taps().is_empty() {
        assert!(std::time::Instant::now() < deadline, "the pool made no TAP");
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    let taps: Vec<String> = ops.taps().into_keys().collect();
    assert!(
        taps.iter().all(|tap| tap.starts_with("btap-pool7-")),
        "{taps:?}"
    );
    network.shutdown().await;
}
