use std::collections::BTreeSet;
use std::sync::Arc;

use banger_net::{NetOps, RealNetOps, TapPool};

use crate::support::{in_netns, link_line, links_with_prefix, random_hex, root_or_skip, sh_async};

async fn setup() -> (Arc<RealNetOps>, String) {
    let ops = Arc::new(RealNetOps::connect().unwrap());
    let br = format!("br-{}", random_hex(8));
    ops.ensure_bridge(&br, "172.30.0.1/24".parse().unwrap())
        .await
        .unwrap();
    (ops, br)
}

fn vm_tap() -> String {
    format!("btap-{}", random_hex(10))
}

fn assert_attached(name: &str, bridge: &str) {
    let line = link_line(name).unwrap_or_else(|| panic!("{name} does not exist"));
    assert!(line.contains(&format!("master {bridge}")), "{line}");
    assert!(line.contains(",UP"), "{line}");
}

#[test]
fn pool_fills_hands_out_by_rename_refills_and_cleans_up() {
    if !root_or_skip("pool_fills_hands_out_by_rename_refills_and_cleans_up") {
        return;
    }
    in_netns(|| async {
        let (ops, br) = setup().await;
        let pool = TapPool::start(ops.clone(), br.clone(), 2);
        pool.wait_filled().await.unwrap();
        let idle = pool.idle_taps();
        assert_eq!(links_with_prefix("btap-pool-"), idle);
        for name in &idle {
            assert_attached(name, &br);
        }

        let name = vm_tap();
        let acquired = pool.acquire(&name).await.unwrap();
        assert!(acquired.from_pool);
        assert_attached(&name, &br);
        assert_eq!(link_line(&idle[0]), None, "{} was renamed", idle[0]);

        pool.wait_filled().await.unwrap();
        assert_eq!(links_with_prefix("btap-pool-").len(), 2);
        assert_eq!(pool.status().idle, 2);

        assert!(pool.release(&name).await.unwrap());
        assert_eq!(link_line(&name), None);
        assert!(!pool.release(&name).await.unwrap());

        assert_eq!(pool.shutdown().await, 2);
        assert!(links_with_prefix("btap-").is_empty());

        // After shutdown, acquiring still works (directly, without the pool).
        let late = vm_tap();
        assert!(!pool.acquire(&late).await.unwrap().from_pool);
        assert_attached(&late, &br);
        ops.delete_tap(&late).await.unwrap();
    });
}

#[test]
fn concurrent_acquires_get_distinct_working_taps() {
    if !root_or_skip("concurrent_acquires_get_distinct_working_taps") {
        return;
    }
    in_netns(|| async {
        let (ops, br) = setup().await;
        let pool = Arc::new(TapPool::start(ops.clone(), br.clone(), 3));
        pool.wait_filled().await.unwrap();

        let names: Vec<String> = (0..8).map(|_| vm_tap()).collect();
        let mut tasks = Vec::new();
        for name in names.clone() {
            let pool = pool.clone();
            tasks.push(tokio::spawn(async move { pool.acquire(&name).await }));
        }
        let mut from_pool = 0;
        for task in tasks {
            if task.await.unwrap().unwrap().from_pool {
                from_pool += 1;
            }
        }
        assert!((1..=8).contains(&from_pool), "{from_pool}");
        for name in &names {
            assert_attached(name, &br);
        }
        // Every acquired TAP is distinct, and pool TAPs are all pool-named.
        let vm_links: BTreeSet<String> = links_with_prefix("btap-")
            .into_iter()
            .filter(|n| !n.starts_with("btap-pool-"))
            .collect();
        assert_eq!(vm_links, names.iter().cloned().collect());

        for name in &names {
            assert!(pool.release(name).await.unwrap());
        }
        pool.wait_filled().await.unwrap();
        pool.shutdown().await;
        assert!(links_with_prefix("btap-").is_empty());
    });
}

#[test]
fn pool_adopts_leftovers_from_an_earlier_daemon() {
    if !root_or_skip("pool_adopts_leftovers_from_an_earlier_daemon") {
        return;
    }
    in_netns(|| async {
        let (ops, br) = setup().await;
        // Leftovers: one detached from any bridge, two more than the pool wants.
        for name in ["btap-pool-4", "btap-pool-8", "btap-pool-9"] {
            ops.create_tap(name, &br).await.unwrap();
        }
        sh_async(&["ip", "link", "set", "btap-pool-4", "nomaster"]).await;
        sh_async(&["ip", "link", "set", "btap-pool-4", "down"]).await;

        let pool = TapPool::start(ops.clone(), br.clone(), 1);
        pool.wait_filled().await.unwrap();
        // wait_filled returned once btap-pool-4, the lowest, was adopted:
        // re-attached and up. It is the one handed out.
        let name = vm_tap();
        assert!(pool.acquire(&name).await.unwrap().from_pool);
        assert_attached(&name, &br);
        assert_eq!(link_line("btap-pool-4"), None);
        pool.wait_filled().await.unwrap();
        // The pool is back at one idle TAP and the surplus is gone. Which
        // one depends on when the acquire landed during adoption: btap-pool-8
        // or -9 adopted, or a new btap-pool-10 numbered after the leftovers.
        let idle = pool.idle_taps();
        assert_eq!(idle.len(), 1);
        assert!(
            ["btap-pool-8", "btap-pool-9", "btap-pool-10"].contains(&idle[0].as_str()),
            "{idle:?}"
        );
        assert_eq!(links_with_prefix("btap-pool-"), idle);
        assert_attached(&idle[0], &br);

        ops.delete_tap(&name).await.unwrap();
        pool.shutdown().await;
        assert!(links_with_prefix("btap-").is_empty());
    });
}
