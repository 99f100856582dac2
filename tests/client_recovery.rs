//! The client's side of room history and recovery, against a scripted peer that speaks the
//! wire format by hand (so these tests do not depend on the rooms server): stream positions on
//! room messages, `joined` with a position, rejoin with `since`, and `history` requests that
//! fill a gap. Subscribers must see each publication once, in offset order.

mod common;

use actix_ws_manager::client::{connect, Client, Event, Inbound, Position};
use actix_ws_manager::protocol::RoomMessage;
use common::peer::{Behaviour, Peer, PeerCmd, PeerEvent};
use common::{client_test_config, recv_until, recv_within, WAIT};
use serde_json::{json, Value};
use tokio::sync::mpsc::Receiver;

/// A peer that only does what the test says.
async fn quiet_peer() -> Peer {
    Peer::start(Behaviour {
        echo: false,
        ..Behaviour::default()
    })
    .await
}

/// Room message `offset` of room `r` in epoch `epoch`; its data is the offset.
fn publication(offset: u64, epoch: &str) -> Value {
    json!({"type":"message","room":"r","from":"s","data":offset,"timestamp":"t","offset":offset,"epoch":epoch})
}

fn send(peer: &Peer, v: Value) {
    peer.send(PeerCmd::Text(v.to_string()));
}

/// The next text the peer received, as JSON.
async fn next_json(peer: &mut Peer) -> Value {
    let text = peer.next_text().await;
    serde_json::from_str(&text).expect("the client sends JSON")
}

/// The next session's first message, which must be the join of `r`.
async fn next_join(peer: &mut Peer) -> Value {
    loop {
        match peer.next().await {
            PeerEvent::Connected(_) => continue,
            PeerEvent::Text(_, t) => {
                let v: Value = serde_json::from_str(&t).expect("JSON");
                assert_eq!(
                    (v["type"].as_str(), v["room"].as_str()),
                    (Some("join"), Some("r"))
                );
                return v;
            }
            other => panic!("expected a join, got {other:?}"),
        }
    }
}

/// Connect, join `r` and answer the join with position `offset` of epoch `e`.
async fn joined_client(
    peer: &mut Peer,
    offset: u64,
) -> (Client, Receiver<Inbound<RoomMessage>>, Receiver<Event>) {
    let client = connect(&peer.url, client_test_config()).expect("connect");
    let messages = client.subscribe::<RoomMessage>(1024);
    let events = client.subscribe_events(64);
    client.join("r").await.expect("join");
    let join = next_join(peer).await;
    assert!(
        join.get("since").is_none(),
        "a first join has no since: {join}"
    );
    send(
        peer,
        json!({"type":"joined","room":"r","data":{"offset":offset,"epoch":"e"}}),
    );
    (client, messages, events)
}

/// The offsets of the next `n` room messages the subscriber gets.
async fn offsets(rx: &mut Receiver<Inbound<RoomMessage>>, n: usize) -> Vec<u64> {
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        let m = recv_within(rx, WAIT, "a room message").await;
        assert_eq!(m.data.0.as_u64(), m.offset, "data and offset agree");
        out.push(m.offset.expect("an offset"));
    }
    out
}

async fn next_recovery(events: &mut Receiver<Event>) -> (bool, u64, Option<String>) {
    match recv_until(events, WAIT, "a recovery", |e| {
        matches!(e, Event::Recovery { .. })
    })
    .await
    {
        Event::Recovery {
            recovered,
            missed,
            reason,
            ..
        } => (recovered, missed, reason),
        _ => unreachable!(),
    }
}

#[actix_rt::test]
async fn a_gap_is_filled_from_history_in_order_and_duplicates_are_dropped() {
    let mut peer = quiet_peer().await;
    let (client, mut messages, mut events) = joined_client(&mut peer, 0).await;
    for o in [1, 2, 5] {
        send(&peer, publication(o, "e"));
    }
    let ask = next_json(&mut peer).await;
    assert_eq!(ask["type"], "history");
    assert_eq!(ask["room"], "r");
    assert_eq!(ask["since"], json!({"offset":2,"epoch":"e"}));
    assert_eq!(ask["limit"], 2);
    // More live messages arrive while the fill is under way: they wait behind it.
    send(&peer, publication(6, "e"));
    send(&peer, publication(5, "e"));
    let pubs = vec![publication(3, "e"), publication(4, "e")];
    send(
        &peer,
        json!({"type":"history","room":"r","id":ask["id"],"data":{"publications":pubs,"offset":6,"epoch":"e","complete":true}}),
    );
    send(&peer, publication(6, "e"));
    send(&peer, publication(7, "e"));
    assert_eq!(offsets(&mut messages, 7).await, vec![1, 2, 3, 4, 5, 6, 7]);
    assert_eq!(next_recovery(&mut events).await, (true, 2, None));
    let stats = client.stats();
    assert_eq!(
        (stats.recovered, stats.unrecoverable, stats.duplicates),
        (1, 0, 2)
    );
    client.close().await;
    peer.stop().await;
}

#[actix_rt::test]
async fn a_rejoin_sends_since_and_reports_the_answer() {
    let mut peer = quiet_peer().await;
    let (client, mut messages, mut events) = joined_client(&mut peer, 10).await;
    send(&peer, publication(11, "e"));
    assert_eq!(offsets(&mut messages, 1).await, vec![11]);

    peer.send(PeerCmd::Abort);
    let join = next_join(&mut peer).await;
    assert_eq!(join["since"], json!({"offset":11,"epoch":"e"}));
    send(
        &peer,
        json!({"type":"joined","room":"r","data":{"offset":13,"epoch":"e","recovered":true}}),
    );
    for o in [11, 12, 13, 14] {
        send(&peer, publication(o, "e"));
    }
    assert_eq!(offsets(&mut messages, 3).await, vec![12, 13, 14]);
    assert_eq!(next_recovery(&mut events).await, (true, 2, None));

    peer.send(PeerCmd::Abort);
    let join = next_join(&mut peer).await;
    assert_eq!(join["since"], json!({"offset":14,"epoch":"e"}));
    send(
        &peer,
        json!({"type":"joined","room":"r","data":{"offset":40,"epoch":"e","recovered":false,"reason":"too_old"}}),
    );
    send(&peer, publication(41, "e"));
    assert_eq!(offsets(&mut messages, 1).await, vec![41]);
    let lost = next_recovery(&mut events).await;
    assert_eq!(lost, (false, 26, Some("too_old".to_owned())));
    let stats = client.stats();
    assert_eq!(
        (stats.recovered, stats.unrecoverable, stats.duplicates),
        (1, 1, 1)
    );
    client.close().await;
    peer.stop().await;
}

#[actix_rt::test]
async fn another_epoch_on_a_live_message_is_reported_and_starts_over() {
    let mut peer = quiet_peer().await;
    let (client, mut messages, mut events) = joined_client(&mut peer, 5).await;
    send(&peer, publication(1, "f"));
    send(&peer, publication(2, "f"));
    assert_eq!(offsets(&mut messages, 2).await, vec![1, 2]);
    let (recovered, _, reason) = next_recovery(&mut events).await;
    assert!(!recovered);
    assert_eq!(reason.as_deref(), Some("epoch_changed"));
    client.close().await;
    peer.stop().await;
}

#[actix_rt::test]
async fn a_fill_the_server_cannot_answer_delivers_what_is_there_and_says_so() {
    let mut peer = quiet_peer().await;
    let (client, mut messages, mut events) = joined_client(&mut peer, 0).await;
    send(&peer, publication(3, "e"));
    let ask = next_json(&mut peer).await;
    assert_eq!(ask["type"], "history");
    send(
        &peer,
        json!({"type":"error","id":ask["id"],"data":{"code":"unknown_type","message":"no history here"}}),
    );
    assert_eq!(offsets(&mut messages, 1).await, vec![3]);
    let lost = next_recovery(&mut events).await;
    assert_eq!(lost, (false, 2, Some("unavailable".to_owned())));
    client.close().await;
    peer.stop().await;
}

#[actix_rt::test]
async fn without_positions_the_client_behaves_as_before() {
    let mut peer = quiet_peer().await;
    let client = connect(&peer.url, client_test_config()).expect("connect");
    let mut messages = client.subscribe::<RoomMessage>(64);
    client.join("r").await.expect("join");
    next_join(&mut peer).await;
    send(&peer, json!({"type":"joined","room":"r"}));
    for o in [1, 1, 7] {
        send(&peer, json!({"type":"message","room":"r","data":o}));
    }
    for want in [1, 1, 7] {
        let m = recv_within(&mut messages, WAIT, "a room message").await;
        assert_eq!((m.data.0.as_u64(), m.offset), (Some(want), None));
    }
    peer.send(PeerCmd::Abort);
    let join = next_join(&mut peer).await;
    assert!(join.get("since").is_none(), "{join}");
    let stats = client.stats();
    assert_eq!(
        (stats.recovered, stats.unrecoverable, stats.duplicates),
        (0, 0, 0)
    );
    client.close().await;
    peer.stop().await;
}

#[actix_rt::test]
async fn history_reads_a_rooms_publications() {
    let mut peer = quiet_peer().await;
    let client = connect(&peer.url, client_test_config()).expect("connect");
    client.wait_connected(WAIT).await.expect("connected");
    let since = Position {
        epoch: "e".into(),
        offset: 4,
    };
    let ask = {
        let client = client.clone();
        actix_rt::spawn(async move { client.history("r", Some(since), Some(2)).await })
    };
    let q = loop {
        match peer.next().await {
            PeerEvent::Text(_, t) => break serde_json::from_str::<Value>(&t).expect("JSON"),
            _ => continue,
        }
    };
    assert_eq!(
        (q["type"].as_str(), q["limit"].as_u64()),
        (Some("history"), Some(2))
    );
    assert_eq!(q["since"], json!({"offset":4,"epoch":"e"}));
    let pubs = vec![publication(5, "e"), publication(6, "e")];
    send(
        &peer,
        json!({"type":"history","room":"r","id":q["id"],"data":{"publications":pubs,"offset":9,"epoch":"e","complete":false}}),
    );
    let history = ask.await.expect("task").expect("history");
    let offsets: Vec<u64> = history.publications.iter().map(|p| p.offset).collect();
    assert_eq!(offsets, vec![5, 6]);
    assert_eq!(history.publications[0].envelope.room.as_deref(), Some("r"));
    assert_eq!((history.position.offset, history.complete), (9, false));
    client.close().await;
    peer.stop().await;
}

#[actix_rt::test]
async fn a_filled_gap_reaches_a_one_slot_backpressure_subscriber_in_order() {
    use actix_ws_manager::client::Overflow;
    let mut peer = quiet_peer().await;
    let client = connect(&peer.url, client_test_config()).expect("connect");
    let mut messages = client.subscribe_with::<RoomMessage>(1, Overflow::Backpressure);
    client.join("r").await.expect("join");
    next_join(&mut peer).await;
    send(
        &peer,
        json!({"type":"joined","room":"r","data":{"offset":0,"epoch":"e"}}),
    );
    send(&peer, publication(60, "e"));
    let ask = next_json(&mut peer).await;
    assert_eq!(
        (ask["since"]["offset"].as_u64(), ask["limit"].as_u64()),
        (Some(0), Some(59))
    );
    for o in 61..=80 {
        send(&peer, publication(o, "e"));
    }
    let pubs: Vec<Value> = (1..60).map(|o| publication(o, "e")).collect();
    send(
        &peer,
        json!({"type":"history","room":"r","id":ask["id"],"data":{"publications":pubs,"offset":80,"epoch":"e","complete":true}}),
    );
    assert_eq!(
        offsets(&mut messages, 80).await,
        (1..=80).collect::<Vec<_>>()
    );
    assert_eq!(client.stats().dropped_incoming, 0);
    client.close().await;
    peer.stop().await;
}

#[actix_rt::test]
async fn a_room_left_and_joined_again_rejoins_without_since() {
    let mut peer = quiet_peer().await;
    let (client, mut messages, _events) = joined_client(&mut peer, 0).await;
    send(&peer, publication(1, "e"));
    assert_eq!(offsets(&mut messages, 1).await, vec![1]);
    client.leave("r").await.expect("leave");
    assert_eq!(next_json(&mut peer).await["type"], "leave");
    client.join("r").await.expect("join");
    assert!(next_join(&mut peer).await.get("since").is_none());
    peer.send(PeerCmd::Abort);
    let join = next_join(&mut peer).await;
    assert!(join.get("since").is_none(), "{join}");
    client.close().await;
    peer.stop().await;
}
