//! Room history on one node, spoken raw: stream positions on every room message, `join` with
//! `since` (recovered, or why not), `history` requests, and the bounds (per room, the byte
//! budget across 10,000 rooms, the TTL). Real servers on 127.0.0.1:0, awc peers.

mod common;

use std::time::{Duration, Instant};

use actix_ws_manager::config::{HistoryConfig, ServerConfig};
use actix_ws_manager::server::{Rooms, Server};
use common::{start_server, test_config, Peer, WAIT};
use serde_json::Value;

/// Join `room` (optionally with `since`); answers the `joined` envelope.
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

/// The next `n` room messages' offsets (every frame must be a room message).
async fn offsets(peer: &mut Peer, n: usize) -> Vec<u64> {
    let mut seen = Vec::with_capacity(n);
    for _ in 0..n {
        let msg = peer.json().await;
        assert_eq!(msg["type"], "message", "{msg}");
        seen.push(msg["offset"].as_u64().expect("an offset"));
    }
    seen
}

/// Publish `n` messages to `room` from server code.
async fn publish(rooms: &Rooms, room: &str, n: usize) {
    for i in 0..n {
        rooms.publish_json(room, &i).await.expect("published");
    }
}

/// Wait until `done` holds for the server's metrics, polling within [`WAIT`].
async fn wait_metrics(server: &Server, what: &str, done: impl Fn(&ServerMetricsView) -> bool) {
    let deadline = Instant::now() + WAIT;
    loop {
        let m = server.rooms().metrics();
        let view = ServerMetricsView {
            bytes: m.history_bytes,
            rooms: m.history_rooms,
        };
        if done(&view) {
            return;
        }
        assert!(Instant::now() < deadline, "{what}: still {view:?}");
        // Expiry runs on the hub's timer; yield to it between looks.
        actix_rt::time::sleep(Duration::from_millis(10)).await;
    }
}

#[derive(Debug)]
struct ServerMetricsView {
    bytes: u64,
    rooms: u64,
}

/// A member away at offset 30 comes back with `since` while a publisher keeps publishing
/// through the join: `recovered:true`, then every publication after 30, once each, in offset
/// order, running on into the live ones without a gap.
#[actix_rt::test]
async fn a_member_recovers_everything_while_others_keep_publishing() {
    let history = HistoryConfig::default().size(1000).recover_limit(1000);
    let server = start_server(test_config().history(history));
    let (mut away, _) = Peer::rooms(&server.url()).await;
    let joined = join(&mut away, "lobby", None).await;
    assert_eq!(joined["data"]["offset"], 0);
    let epoch = joined["data"]["epoch"].as_str().expect("epoch").to_owned();
    publish(server.rooms(), "lobby", 30).await;
    assert_eq!(offsets(&mut away, 30).await, (1..=30).collect::<Vec<_>>());
    drop(away);

    publish(server.rooms(), "lobby", 50).await;
    // A publisher that keeps going while the member rejoins.
    let rooms = server.rooms().clone();
    let publisher = actix_rt::spawn(async move { publish(&rooms, "lobby", 200).await });
    let (mut back, _) = Peer::rooms(&server.url()).await;
    let joined = join(&mut back, "lobby", Some((30, &epoch))).await;
    assert_eq!(joined["data"]["recovered"], true, "{joined}");
    assert_eq!(joined["data"]["epoch"], epoch.as_str());
    let at_join = joined["data"]["offset"].as_u64().expect("offset");
    assert!(at_join >= 80, "{joined}");
    publisher.await.expect("publisher");
    let seen = offsets(&mut back, 250).await;
    assert_eq!(
        seen,
        (31..=280).collect::<Vec<_>>(),
        "no gap, no duplicate, in order"
    );
}

/// What a member is told when it cannot get everything back: too many missed, a server that
/// lost its history (a restart: another epoch), missed publications no longer kept.
#[actix_rt::test]
async fn unrecoverable_positions_say_why() {
    let history = HistoryConfig::default().size(10).recover_limit(20);
    let server = start_server(test_config().history(history));
    let (mut a, _) = Peer::rooms(&server.url()).await;
    let epoch = join(&mut a, "r", None).await["data"]["epoch"]
        .as_str()
        .expect("epoch")
        .to_owned();
    publish(server.rooms(), "r", 30).await;
    offsets(&mut a, 30).await;

    let (mut b, _) = Peer::rooms(&server.url()).await;
    let joined = join(&mut b, "r", Some((5, &epoch))).await;
    assert_eq!(joined["data"]["recovered"], false);
    assert_eq!(joined["data"]["reason"], "too_many", "25 missed, limit 20");
    let (mut c, _) = Peer::rooms(&server.url()).await;
    let joined = join(&mut c, "r", Some((15, &epoch))).await;
    assert_eq!(
        joined["data"]["reason"], "too_old",
        "15 missed, only 21..=30 kept"
    );
    let (mut d, _) = Peer::rooms(&server.url()).await;
    let joined = join(&mut d, "r", Some((25, &epoch))).await;
    assert_eq!(joined["data"]["recovered"], true);
    assert_eq!(offsets(&mut d, 5).await, vec![26, 27, 28, 29, 30]);
    // Then live only for the unrecovered: the next publication is 31 for everyone.
    publish(server.rooms(), "r", 1).await;
    for peer in [&mut b, &mut c, &mut d] {
        assert_eq!(offsets(peer, 1).await, vec![31]);
    }
    server.shutdown().await.expect("shutdown");

    // Another server (a restart without Redis): the history is gone, and the epoch says so.
    let server = start_server(test_config());
    let (mut e, _) = Peer::rooms(&server.url()).await;
    let joined = join(&mut e, "r", Some((30, &epoch))).await;
    assert_eq!(joined["data"]["recovered"], false);
    assert_eq!(joined["data"]["reason"], "epoch_changed");
    assert_ne!(joined["data"]["epoch"], epoch.as_str());
    assert_eq!(joined["data"]["offset"], 0);
}

/// Away longer than the TTL: the publications are gone (`too_old` while the room kept a
/// member; the room's position is kept); a room without members is forgotten at the TTL and
/// starts a new epoch.
#[actix_rt::test]
async fn the_ttl_expires_history() {
    let ttl = Duration::from_millis(300);
    let server = start_server(test_config().history(HistoryConfig::default().ttl(ttl)));
    let (mut stays, _) = Peer::rooms(&server.url()).await;
    let epoch = join(&mut stays, "kept", None).await["data"]["epoch"]
        .as_str()
        .expect("epoch")
        .to_owned();
    publish(server.rooms(), "kept", 3).await;
    publish(server.rooms(), "empty", 3).await;
    offsets(&mut stays, 3).await;
    wait_metrics(&server, "history expired", |m| m.rooms == 1).await;

    let (mut back, _) = Peer::rooms(&server.url()).await;
    let joined = join(&mut back, "kept", Some((1, &epoch))).await;
    assert_eq!(joined["data"]["reason"], "too_old", "{joined}");
    let joined = join(&mut back, "kept", Some((3, &epoch))).await;
    assert_eq!(
        joined["data"]["recovered"], true,
        "nothing missed: {joined}"
    );
    let joined = join(&mut back, "empty", Some((3, "any"))).await;
    assert_eq!(joined["data"]["offset"], 0, "a new stream: {joined}");
}

/// `history`: member or not, with and without `since` and `limit`, oldest first; the join
/// check applies; a bad `since` is `bad_position`; a server without history says so.
#[actix_rt::test]
async fn history_requests_by_the_table() {
    let server = start_server(test_config());
    let _checked = server
        .rooms()
        .clone()
        .with_join_check(|_, room: &str| room != "secret");
    publish(server.rooms(), "news", 12).await;
    let (mut p, _) = Peer::rooms(&server.url()).await;

    p.text(r#"{"type":"history","room":"news","id":7,"limit":5}"#)
        .await;
    let h = p.json().await;
    assert_eq!(
        (h["type"].as_str(), h["id"].as_u64()),
        (Some("history"), Some(7))
    );
    assert_eq!(h["room"], "news");
    let data = &h["data"];
    let got: Vec<u64> = data["publications"]
        .as_array()
        .expect("publications")
        .iter()
        .map(|m| m["offset"].as_u64().expect("offset"))
        .collect();
    assert_eq!(got, vec![8, 9, 10, 11, 12], "the latest 5, oldest first");
    assert_eq!(
        (data["offset"].as_u64(), data["complete"].as_bool()),
        (Some(12), Some(false))
    );
    let first = &data["publications"][0];
    assert_eq!(
        (first["type"].as_str(), first["room"].as_str()),
        (Some("message"), Some("news"))
    );
    let epoch = data["epoch"].as_str().expect("epoch").to_owned();

    let since = format!(
        r#"{{"type":"history","room":"news","id":8,"since":{{"offset":9,"epoch":"{epoch}"}}}}"#
    );
    p.text(&since).await;
    let h = p.json().await;
    assert_eq!(h["data"]["publications"].as_array().map(Vec::len), Some(3));
    assert_eq!(h["data"]["complete"], true);

    p.text(r#"{"type":"history","room":"secret","id":9}"#).await;
    let e = p.json().await;
    assert_eq!(
        (e["type"].as_str(), e["data"]["code"].as_str()),
        (Some("error"), Some("forbidden_room"))
    );
    p.text(r#"{"type":"history","room":"news","id":10,"since":{"offset":"x"}}"#)
        .await;
    assert_eq!(p.json().await["data"]["code"], "bad_position");
    p.text(r#"{"type":"join","room":"news","id":11,"since":[]}"#)
        .await;
    assert_eq!(p.json().await["data"]["code"], "bad_position");

    let off = start_server(test_config().no_history());
    let (mut q, _) = Peer::rooms(&off.url()).await;
    q.text(r#"{"type":"history","room":"news","id":12}"#).await;
    assert_eq!(q.json().await["data"]["code"], "history_off");
    let joined = join(&mut q, "news", Some((1, "x"))).await;
    assert!(
        joined.get("data").is_none(),
        "no history, no position: {joined}"
    );
    off.rooms().publish_json("news", &1).await.expect("publish");
    let msg = q.json().await;
    assert!(
        msg.get("offset").is_none() && msg.get("epoch").is_none(),
        "{msg}"
    );
}

/// 10,000 rooms, each published past its size, under an 8 MiB budget: the history never holds
/// more than the budget (20 publications of about 300 bytes in each room would be 60 MiB), and
/// once the TTL has passed with nobody in the rooms it holds nothing.
#[actix_rt::test]
async fn ten_thousand_full_rooms_stay_within_the_budget_and_expire() {
    let budget = 8 * 1024 * 1024;
    let history = HistoryConfig::default()
        .size(20)
        .total_bytes(budget)
        .ttl(Duration::from_secs(2));
    let config: ServerConfig = test_config().history(history);
    let server = start_server(config);
    let payload = "x".repeat(200);
    let rooms = server.rooms();
    let names: Vec<String> = (0..10_000).map(|r| format!("room-{r}")).collect();
    for round in 0..21 {
        // Ten publishers at a time, so the hub's queue stays busy.
        for chunk in names.chunks(10) {
            let sends = chunk.iter().map(|room| rooms.publish_json(room, &payload));
            for sent in futures_util::future::join_all(sends).await {
                sent.expect("published");
            }
        }
        let held = rooms.metrics().history_bytes;
        assert!(held <= budget as u64, "round {round}: {held} bytes held");
    }
    let m = rooms.metrics();
    assert!(
        m.history_bytes > budget as u64 / 2,
        "the budget was used: {}",
        m.history_bytes
    );
    assert_eq!(m.history_rooms, 10_000);
    wait_metrics(&server, "every room expired", |m| {
        m.rooms == 0 && m.bytes == 0
    })
    .await;
}
