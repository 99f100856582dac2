//! Several server nodes sharing rooms through a real Redis (`RedisBackplane`): cross-node
//! delivery exactly once and in per-publisher order, a Redis restart (local delivery goes on,
//! publishes are told `backplane_unavailable` and counted, the nodes resubscribe by themselves),
//! and the loss of a node.

mod common;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use actix_ws_manager::client::Client;
use actix_ws_manager::config::ServerConfig;
use actix_ws_manager::server::backplane::{RedisBackplane, RedisConfig};
use actix_ws_manager::testkit::{next_matching, StateRecorder};
use actix_ws_manager::{Error, WireMessage};
use common::cluster::{answer, member, node, TIMEOUT};
use common::{test_config, Peer, RedisServer, WAIT};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Seq {
    n: u32,
}
impl WireMessage for Seq {
    const TYPE: &'static str = "seq";
}

/// The nodes' rooms configuration: a hub queue of 2, so that the hub is saturated on purpose and
/// messages from Redis wait for room in it (in order) as often as sessions do.
fn saturated_hub() -> ServerConfig {
    test_config().hub_queue(2)
}

/// Two nodes on one Redis; a member on A and two on B. A's member and one of B's each publish
/// 1,000 numbered messages at once. Every member gets each publisher's 1,000 exactly once and
/// in order (its own node's too: a node never delivers its own publish twice), then the end
/// markers, and nothing else. With room history (the default) in Redis.
#[actix_rt::test]
async fn two_nodes_deliver_across_exactly_once_in_order() {
    // Every publication comes through Redis, the node's own included.
    deliver_across_exactly_once_in_order(saturated_hub(), 2).await;
}

/// [`two_nodes_deliver_across_exactly_once_in_order`] without room history: a node delivers
/// its own publications at once and receives only the other node's.
#[actix_rt::test]
async fn two_nodes_deliver_across_exactly_once_in_order_without_history() {
    deliver_across_exactly_once_in_order(saturated_hub().no_history(), 1).await;
}

/// The body of the two tests above; `through_redis` is how many nodes' publications each
/// node receives from Redis.
async fn deliver_across_exactly_once_in_order(config: ServerConfig, through_redis: u64) {
    const N: u32 = 1000;
    let redis = RedisServer::start();
    let a = node(redis.url(), "a", TIMEOUT, config.clone());
    let b = node(redis.url(), "b", TIMEOUT, config);
    let (a1, mut a1_in) = member::<Seq>(&a, "x", 8192).await;
    let (b1, mut b1_in) = member::<Seq>(&b, "x", 8192).await;
    let (_b2, mut b2_in) = member::<Seq>(&b, "x", 8192).await;

    let send_all = |c: Client| async move {
        for n in 0..=N {
            c.publish("x", &Seq { n }).await.expect("publish");
        }
    };
    tokio::join!(send_all(a1.clone()), send_all(b1.clone()));

    for (who, rx) in [("a1", &mut a1_in), ("b1", &mut b1_in), ("b2", &mut b2_in)] {
        let mut by_sender: BTreeMap<String, Vec<u32>> = BTreeMap::new();
        while by_sender.len() < 2 || by_sender.values().any(|v| v.last() != Some(&N)) {
            let m = next_matching(rx, "the next message", WAIT, |_| true)
                .await
                .unwrap_or_else(|e| {
                    panic!(
                        "{who}: {e}; got {:?}",
                        by_sender.values().map(Vec::len).collect::<Vec<_>>()
                    )
                });
            by_sender
                .entry(m.from.expect("from"))
                .or_default()
                .push(m.data.n);
        }
        assert_eq!(by_sender.len(), 2, "{who}: {:?}", by_sender.keys());
        for (from, seqs) in &by_sender {
            assert_eq!(
                seqs,
                &(0..=N).collect::<Vec<_>>(),
                "{who} from {from}: every message once, in order"
            );
        }
        assert!(
            by_sender.keys().any(|k| k.starts_with("a."))
                && by_sender.keys().any(|k| k.starts_with("b.")),
            "session names carry the node id: {:?}",
            by_sender.keys()
        );
    }
    let (sa, sb) = (a.stats().await.expect("a"), b.stats().await.expect("b"));
    assert_eq!(
        (sa.hub_queue_high_water, sb.hub_queue_high_water),
        (2, 2),
        "saturated"
    );
    let received = through_redis * u64::from(N + 1);
    assert_eq!(sa.backplane_received, received, "{sa:?}");
    assert_eq!(sb.backplane_received, received, "{sb:?}");
    assert_eq!(
        (sa.backplane_publish_errors, sb.backplane_publish_errors),
        (0, 0)
    );
}

/// Publish into "y" from `b1` until one is acknowledged and reaches `a1_in` (a member on
/// the other node), asserting that the first thing `a1_in` gets is that publish.
async fn publish_until_cross_node_delivery_resumes(
    b1: &mut Peer,
    a1_in: &mut tokio::sync::mpsc::Receiver<actix_ws_manager::client::Inbound<Seq>>,
) {
    // Publish until one is acknowledged and reaches the other node: both nodes must have
    // reconnected and subscribed again (bounded: the nodes probe every 125 ms).
    let deadline = Instant::now() + WAIT;
    let mut id = 10;
    loop {
        assert!(
            Instant::now() < deadline,
            "cross-node delivery did not resume"
        );
        id += 1;
        b1.text(&format!(
            r#"{{"type":"publish","room":"y","event":"seq","data":{{"n":{id}}},"id":{id}}}"#
        ))
        .await;
        if answer(b1, id).await["type"] != "ack" {
            continue;
        }
        // The first thing the other node delivers after the restart is this one: what was
        // published while Redis was down never reaches it later.
        match next_matching(
            a1_in,
            "a message from the other node",
            Duration::from_secs(1),
            |_| true,
        )
        .await
        {
            Ok(m) => {
                assert_eq!(m.data.n, id as u32, "nothing from the outage arrives late");
                break;
            }
            Err(Error::Timeout { .. }) => continue,
            Err(e) => panic!("{e}"),
        }
    }
}

/// Without room history, Redis goes down: members on the same node still get a publish, the
/// publisher is told `backplane_unavailable` (and it is counted); Redis comes back on the same
/// port: the nodes reconnect and subscribe again by themselves, and cross-node delivery
/// resumes. (With history in Redis a publish Redis did not take reaches nobody:
/// tests/backplane_history.rs.)
#[actix_rt::test]
async fn redis_restart_keeps_local_delivery_and_resubscribes() {
    let mut redis = RedisServer::start();
    let a = node(redis.url(), "a", TIMEOUT, saturated_hub().no_history());
    let b = node(redis.url(), "b", TIMEOUT, saturated_hub().no_history());
    let (_a1, mut a1_in) = member::<Seq>(&a, "y", 8192).await;
    let (_b2, mut b2_in) = member::<Seq>(&b, "y", 8192).await;
    let (mut b1, _) = Peer::rooms(&b.url()).await;
    b1.text(r#"{"type":"join","room":"y"}"#).await;
    assert_eq!(b1.json().await["type"], "joined");

    b1.text(r#"{"type":"publish","room":"y","event":"seq","data":{"n":1},"id":1}"#)
        .await;
    assert_eq!(answer(&mut b1, 1).await["type"], "ack");
    for rx in [&mut a1_in, &mut b2_in] {
        let m = next_matching(rx, "n=1", WAIT, |_| true)
            .await
            .expect("before");
        assert_eq!(m.data.n, 1);
    }

    redis.stop();
    b1.text(r#"{"type":"publish","room":"y","event":"seq","data":{"n":2},"id":2}"#)
        .await;
    let refused = answer(&mut b1, 2).await;
    assert_eq!(refused["type"], "error", "{refused}");
    assert_eq!(
        refused["data"]["code"], "backplane_unavailable",
        "{refused}"
    );
    let local = next_matching(&mut b2_in, "n=2 on the same node", WAIT, |_| true)
        .await
        .expect("local delivery goes on");
    assert_eq!(local.data.n, 2);
    let stats = b.stats().await.expect("stats");
    assert!(stats.backplane_publish_errors >= 1, "{stats:?}");
    assert!(stats.backplane_disconnects >= 1, "{stats:?}");
    // The same figures on the Prometheus page operators scrape.
    let page = actix_ws_manager::metrics::render(&{
        let mut registry =
            actix_ws_manager::metrics::prometheus_client::registry::Registry::default();
        b.rooms().expect("running").register_metrics(&mut registry);
        registry
    })
    .expect("render");
    let value = |name: &str| -> u64 {
        page.lines()
            .find_map(|l| l.strip_prefix(name)?.trim().parse().ok())
            .unwrap_or_else(|| panic!("{name} missing in\n{page}"))
    };
    assert_eq!(
        value("wsm_server_backplane_publish_errors_total "),
        stats.backplane_publish_errors
    );
    assert!(value("wsm_server_backplane_reconnects_total ") >= 1);

    redis.restart();
    publish_until_cross_node_delivery_resumes(&mut b1, &mut a1_in).await;
    let stats = a.stats().await.expect("stats");
    assert!(stats.backplane_disconnects >= 1, "{stats:?}");
}

/// A node stops: the other keeps serving, its members lose nothing, and its publishes still
/// go through Redis (acknowledged).
#[actix_rt::test]
async fn node_loss_leaves_the_other_node_serving() {
    let redis = RedisServer::start();
    let mut a = node(redis.url(), "a", TIMEOUT, saturated_hub());
    let b = node(redis.url(), "b", TIMEOUT, saturated_hub());
    let (a1, _a1_in) = member::<Seq>(&a, "z", 8192).await;
    let (_b2, mut b2_in) = member::<Seq>(&b, "z", 8192).await;
    let (mut b1, _) = Peer::rooms(&b.url()).await;
    b1.text(r#"{"type":"join","room":"z"}"#).await;
    assert_eq!(b1.json().await["type"], "joined");
    let mut a1_states = StateRecorder::attach(&a1);

    a.stop().await.expect("node a stops");
    assert_eq!(
        a1_states.wait_disconnected(WAIT).await.expect("a1 told"),
        1001
    );
    for n in 0..100u64 {
        b1.text(&format!(
            r#"{{"type":"publish","room":"z","event":"seq","data":{{"n":{n}}},"id":{n}}}"#
        ))
        .await;
        assert_eq!(answer(&mut b1, n).await["type"], "ack");
    }
    for n in 0..100 {
        let m = next_matching(&mut b2_in, "every message on node b", WAIT, |_| true)
            .await
            .expect("delivered");
        assert_eq!(m.data.n, n);
    }
    a1.close().await;
}

/// Bad backplane settings are configuration errors that name the setting.
#[test]
fn bad_settings_are_named() {
    for (config, words) in [
        (
            RedisConfig::new("redis://127.0.0.1:6379").node_id(""),
            "node id",
        ),
        (
            RedisConfig::new("redis://127.0.0.1:6379").node_id("a b"),
            "node id",
        ),
        (RedisConfig::new("http://x"), "invalid Redis URL"),
        (
            RedisConfig::new("redis://127.0.0.1:6379").channel_prefix("a b"),
            "channel prefix",
        ),
    ] {
        match RedisBackplane::new(config) {
            Err(Error::Config(why)) => assert!(why.contains(words), "{why}"),
            other => panic!("{other:?}"),
        }
    }
}
