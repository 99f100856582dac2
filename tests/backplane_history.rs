//! Room history across nodes, kept in a real Redis (`RedisBackplane` with history on, the
//! default), spoken raw: a member recovers on another node everything published while it was
//! away, on any node, while publishers on two nodes keep going; offsets are consecutive across
//! publishing nodes and every node delivers in offset order; `history` requests read Redis;
//! Redis down answers `unavailable` within the timeout; flushed keys start a new epoch; a
//! flushed script cache is loaded again.

mod common;

use std::time::Instant;

use actix_ws_manager::config::{HistoryConfig, ServerConfig};
use actix_ws_manager::testkit::TestServer;
use common::cluster::{answer, node, raw_member, redis_conn, TIMEOUT};
use common::{test_config, Peer, RedisServer};
use serde_json::Value;

/// Nodes keeping up to 1,000 publications per room and recovering up to 1,000.
fn config() -> ServerConfig {
    let history = HistoryConfig::default().size(1000).recover_limit(1000);
    test_config().history(history).session_queue(65_536)
}

/// Join `room` with envelope id 1 (and `since`, if given); answers the `joined` envelope,
/// skipping room messages that arrive first (a member already in the room).
async fn join(peer: &mut Peer, room: &str, since: Option<(u64, &str)>) -> Value {
    let since = since.map_or(String::new(), |(offset, epoch)| {
        format!(r#","since":{{"offset":{offset},"epoch":"{epoch}"}}"#)
    });
    peer.text(&format!(
        r#"{{"type":"join","room":"{room}","id":1{since}}}"#
    ))
    .await;
    let joined = peer.json().await;
    assert_eq!(joined["type"], "joined", "{joined}");
    joined
}

/// Publish `n` from `first` on as `{"n":k}` to `room` through `peer` (a member), each with an
/// id, waiting for each `ack` (so Redis has taken it).
async fn publish_acked(peer: &mut Peer, room: &str, first: u64, n: u64) {
    for k in first..first + n {
        peer.text(&format!(
            r#"{{"type":"publish","room":"{room}","data":{{"n":{k}}},"id":{k}}}"#
        ))
        .await;
        let answer = answer(peer, k).await;
        assert_eq!(answer["type"], "ack", "{answer}");
    }
}

/// The next `n` room messages of `peer` (every frame must be one), as (offset, epoch, n).
async fn messages(peer: &mut Peer, n: u64) -> Vec<(u64, String, u64)> {
    let mut seen = Vec::new();
    for _ in 0..n {
        let m = peer.json().await;
        assert_eq!(m["type"], "message", "{m}");
        seen.push((
            m["offset"].as_u64().expect("an offset"),
            m["epoch"].as_str().expect("an epoch").to_owned(),
            m["data"]["n"].as_u64().expect("data.n"),
        ));
    }
    seen
}

/// Server-code publishes of `{"n":k}` for k in `from..to` on `server`, one after the other.
async fn publish_from_server(server: &TestServer, room: &'static str, from: u64, to: u64) {
    let rooms = server.rooms().expect("running").clone();
    for k in from..to {
        rooms
            .publish_json(room, &serde_json::json!({ "n": k }))
            .await
            .expect("published");
    }
}

/// Issue 20, test 4. A member on node A has a position; it goes away, A's publisher publishes
/// more, A stops, and publishers on B and C publish more. The member comes back on B with its
/// position while B and C keep publishing through the join: `recovered:true`, then every
/// publication after its position, once each, with consecutive offsets, running on into the
/// live ones.
#[actix_rt::test]
async fn a_member_recovers_on_another_node_while_two_nodes_keep_publishing() {
    let redis = RedisServer::start();
    let mut a = node(redis.url(), "a", TIMEOUT, config());
    let b = node(redis.url(), "b", TIMEOUT, config());
    let c = node(redis.url(), "c", TIMEOUT, config());
    let mut member = raw_member(&a.url(), "h").await;
    let mut on_a = raw_member(&a.url(), "h").await;
    let mut on_b = raw_member(&b.url(), "h").await;
    let mut on_c = raw_member(&c.url(), "h").await;
    publish_acked(&mut on_a, "h", 0, 10).await;
    publish_acked(&mut on_b, "h", 10, 10).await;
    publish_acked(&mut on_c, "h", 20, 10).await;
    let seen = messages(&mut member, 30).await;
    let offsets: Vec<u64> = seen.iter().map(|m| m.0).collect();
    assert_eq!(
        offsets,
        (1..=30).collect::<Vec<_>>(),
        "offset order everywhere"
    );
    let epoch = seen[29].1.clone();

    // Away: what A publishes after, then A stops, then what B and C publish.
    drop(member);
    publish_acked(&mut on_a, "h", 30, 20).await;
    a.stop().await.expect("node a stops");
    publish_acked(&mut on_b, "h", 50, 30).await;
    publish_acked(&mut on_c, "h", 80, 30).await;

    // Back on B, while B and C keep publishing.
    let keep_b = actix_rt::spawn({
        let b = b.rooms().expect("b").clone();
        async move {
            for k in 110..210u64 {
                b.publish_json("h", &serde_json::json!({ "n": k }))
                    .await
                    .expect("b");
            }
        }
    });
    let keep_c = publish_from_server(&c, "h", 210, 310);
    let (mut back, _) = Peer::rooms(&b.url()).await;
    let (joined, ()) = tokio::join!(join(&mut back, "h", Some((30, &epoch))), keep_c);
    keep_b.await.expect("b's publisher");
    assert_eq!(joined["data"]["recovered"], true, "{joined}");
    assert_eq!(joined["data"]["epoch"], epoch.as_str(), "{joined}");
    assert!(joined["data"]["offset"].as_u64() >= Some(110), "{joined}");
    let seen = messages(&mut back, 280).await;
    let offsets: Vec<u64> = seen.iter().map(|m| m.0).collect();
    assert_eq!(
        offsets,
        (31..=310).collect::<Vec<_>>(),
        "no gap, no duplicate, in offset order"
    );
    assert!(seen.iter().all(|m| m.1 == epoch), "one epoch");
    // Each publisher's messages in its order; everything published exactly once.
    let mut ns: Vec<u64> = seen.iter().map(|m| m.2).collect();
    for range in [30..110u64, 110..210, 210..310] {
        let mine: Vec<u64> = ns.iter().copied().filter(|n| range.contains(n)).collect();
        assert_eq!(mine, range.collect::<Vec<_>>(), "per-publisher order");
    }
    ns.sort_unstable();
    assert_eq!(ns, (30..310).collect::<Vec<_>>());
    let stats = b.stats().await.expect("stats");
    assert_eq!(stats.recovered, 1, "{stats:?}");
}

/// Two nodes publishing into one room at once: one offset sequence, and both nodes deliver the
/// same publications in the same (offset) order. A `history` request on either node reads
/// them from Redis.
#[actix_rt::test]
async fn offsets_are_consecutive_across_two_publishing_nodes() {
    let redis = RedisServer::start();
    let a = node(redis.url(), "a", TIMEOUT, config());
    let b = node(redis.url(), "b", TIMEOUT, config());
    let mut on_a = raw_member(&a.url(), "x").await;
    let mut on_b = raw_member(&b.url(), "x").await;
    tokio::join!(
        publish_from_server(&a, "x", 0, 200),
        publish_from_server(&b, "x", 200, 400)
    );
    let seen_a = messages(&mut on_a, 400).await;
    let seen_b = messages(&mut on_b, 400).await;
    let offsets: Vec<u64> = seen_a.iter().map(|m| m.0).collect();
    assert_eq!(offsets, (1..=400).collect::<Vec<_>>());
    assert_eq!(
        seen_a, seen_b,
        "the same publications in the same order on both nodes"
    );

    let (mut reader, _) = Peer::rooms(&b.url()).await;
    let epoch = &seen_a[0].1;
    reader
        .text(&format!(
            r#"{{"type":"history","room":"x","id":7,"since":{{"offset":390,"epoch":"{epoch}"}}}}"#
        ))
        .await;
    let history = reader.json().await;
    assert_eq!(history["type"], "history", "{history}");
    assert_eq!(history["data"]["complete"], true, "{history}");
    assert_eq!(history["data"]["offset"], 400, "{history}");
    let publications = history["data"]["publications"].as_array().expect("list");
    let got: Vec<u64> = publications
        .iter()
        .map(|p| p["offset"].as_u64().expect("offset"))
        .collect();
    assert_eq!(got, (391..=400).collect::<Vec<_>>());
    reader
        .text(r#"{"type":"history","room":"x","id":8,"limit":5}"#)
        .await;
    let latest = reader.json().await;
    assert_eq!(latest["data"]["complete"], false, "{latest}");
    let got: Vec<u64> = latest["data"]["publications"]
        .as_array()
        .expect("list")
        .iter()
        .map(|p| p["offset"].as_u64().expect("offset"))
        .collect();
    assert_eq!(
        got,
        (396..=400).collect::<Vec<_>>(),
        "the latest 5, oldest first"
    );
}

/// Redis stops: a join with `since` is answered `recovered:false`, reason `unavailable`, with
/// the client's own position, within the backplane's timeout; a plain join gets `joined`
/// without a position; a `history` request an error; a publish is refused and reaches nobody.
#[actix_rt::test]
async fn redis_down_recovery_is_unavailable_within_the_timeout() {
    let mut redis = RedisServer::start();
    let a = node(redis.url(), "a", TIMEOUT, config());
    let mut stays = raw_member(&a.url(), "d").await;
    let mut publisher = raw_member(&a.url(), "d").await;
    publish_acked(&mut publisher, "d", 0, 5).await;
    let seen = messages(&mut stays, 5).await;
    let epoch = seen[4].1.clone();

    redis.stop();
    let (mut back, _) = Peer::rooms(&a.url()).await;
    let started = Instant::now();
    let joined = join(&mut back, "d", Some((5, &epoch))).await;
    let took = started.elapsed();
    assert_eq!(joined["data"]["recovered"], false, "{joined}");
    assert_eq!(joined["data"]["reason"], "unavailable", "{joined}");
    assert_eq!(joined["data"]["offset"], 5, "{joined}");
    assert_eq!(joined["data"]["epoch"], epoch.as_str(), "{joined}");
    assert!(took < TIMEOUT * 4, "answered in {took:?}");

    let (mut plain, _) = Peer::rooms(&a.url()).await;
    let joined = join(&mut plain, "other", None).await;
    assert!(joined.get("data").is_none(), "no position known: {joined}");
    plain.text(r#"{"type":"history","room":"d","id":3}"#).await;
    let refused = plain.json().await;
    assert_eq!(
        refused["data"]["code"], "backplane_unavailable",
        "{refused}"
    );

    publisher
        .text(r#"{"type":"publish","room":"d","data":{"n":99},"id":99}"#)
        .await;
    let refused = answer(&mut publisher, 99).await;
    assert_eq!(refused["type"], "error", "{refused}");
    assert_eq!(
        refused["data"]["code"], "backplane_unavailable",
        "{refused}"
    );
    // Nobody got it: the other members read the answer to a later request next.
    for peer in [&mut back, &mut stays] {
        peer.text(r#"{"type":"echo","id":5}"#).await;
        assert_eq!(
            peer.json().await["type"],
            "echo",
            "no room message before the echo"
        );
    }
    let stats = a.stats().await.expect("stats");
    assert_eq!(stats.recovery_unavailable, 1, "{stats:?}");
}

/// The room's keys are flushed (Redis lost the history): a member coming back is told
/// `epoch_changed`, with the new epoch, and the next publication starts the new stream at 1.
#[actix_rt::test]
async fn flushed_keys_mean_epoch_changed() {
    let redis = RedisServer::start();
    let a = node(redis.url(), "a", TIMEOUT, config());
    let mut m = raw_member(&a.url(), "e").await;
    let mut publisher = raw_member(&a.url(), "e").await;
    publish_acked(&mut publisher, "e", 0, 3).await;
    let epoch = messages(&mut m, 3).await[2].1.clone();
    let mut conn = redis_conn(&redis);
    let mut keys: Vec<String> = redis::cmd("KEYS").arg("*").query(&mut conn).expect("KEYS");
    // The node's presence keys (liveness, room index per epoch: backplane_presence.rs) aside.
    keys.retain(|k| !k.starts_with("wsm:room:{node:a}:") && k != "wsm:room:presence:nodes");
    keys.sort();
    assert_eq!(
        keys,
        [
            "wsm:room:{e}:meta",
            "wsm:room:{e}:presence",
            "wsm:room:{e}:stream"
        ],
        "hash-tagged keys"
    );
    let () = redis::cmd("FLUSHALL").query(&mut conn).expect("FLUSHALL");

    let (mut back, _) = Peer::rooms(&a.url()).await;
    let joined = join(&mut back, "e", Some((3, &epoch))).await;
    assert_eq!(joined["data"]["recovered"], false, "{joined}");
    assert_eq!(joined["data"]["reason"], "epoch_changed", "{joined}");
    assert_eq!(joined["data"]["offset"], 0, "{joined}");
    let new_epoch = joined["data"]["epoch"].as_str().expect("epoch").to_owned();
    assert_ne!(new_epoch, epoch);
    publish_acked(&mut publisher, "e", 3, 1).await;
    let next = messages(&mut back, 1).await;
    assert_eq!(next, vec![(1, new_epoch, 3)]);
    let stats = a.stats().await.expect("stats");
    assert_eq!(stats.recovery_epoch_changed, 1, "{stats:?}");
}

/// Redis's script cache is flushed (`SCRIPT FLUSH`): a publish meets `NOSCRIPT` and is
/// refused, the node loads the scripts again on a new connection by itself, and the stream
/// goes on where it was (the refused publish never ran: no gap, no duplicate).
#[actix_rt::test]
async fn a_flushed_script_cache_is_loaded_again() {
    let redis = RedisServer::start();
    let a = node(redis.url(), "a", TIMEOUT, config());
    let mut m = raw_member(&a.url(), "s").await;
    let mut publisher = raw_member(&a.url(), "s").await;
    publish_acked(&mut publisher, "s", 0, 3).await;
    assert_eq!(messages(&mut m, 3).await[2].0, 3);
    let mut conn = redis_conn(&redis);
    let () = redis::cmd("SCRIPT")
        .arg("FLUSH")
        .query(&mut conn)
        .expect("SCRIPT FLUSH");

    let deadline = Instant::now() + common::WAIT;
    let mut refused = 0;
    for k in 3..10_003u64 {
        assert!(
            Instant::now() < deadline,
            "never acked again ({refused} refused)"
        );
        publisher
            .text(&format!(
                r#"{{"type":"publish","room":"s","data":{{"n":{k}}},"id":{k}}}"#
            ))
            .await;
        let reply = answer(&mut publisher, k).await;
        if reply["type"] == "ack" {
            break;
        }
        assert_eq!(reply["data"]["code"], "backplane_unavailable", "{reply}");
        refused += 1;
    }
    assert!(
        refused >= 1,
        "the first publish after the flush meets NOSCRIPT"
    );
    let next = messages(&mut m, 1).await;
    assert_eq!(
        next[0].0, 4,
        "the stream goes on at the next offset: {next:?}"
    );
}
