//! Nothing in the client grows without bound, and the on-connect set can shrink: waits and
//! dropped subscriptions leave nothing behind, `leave` stops a room from being rejoined, and a
//! duplicate `join` is replayed once.

mod common;

use actix_ws_manager::client::{connect, ConnectionState};
use actix_ws_manager::protocol::RoomMessage;
use common::peer::{Behaviour, Peer, PeerCmd, PeerEvent};
use common::{client_test_config, WAIT};

/// Test 4 of the issue: 10,000 calls of `wait_connected` and 10,000 subscribe-then-drop
/// receivers (typed, raw, text, binary, events) leave the subscription count where it started.
#[actix_rt::test]
async fn waits_and_dropped_subscriptions_leave_nothing_behind() {
    let peer = Peer::start(Behaviour::default()).await;
    let client = connect(&peer.url, client_test_config()).expect("client");
    client.wait_connected(WAIT).await.expect("connected");
    let _kept = client.subscribe::<RoomMessage>(8);
    let start = client.subscriber_count().await.expect("count");
    assert_eq!(start, 1);
    for _ in 0..10_000 {
        client.wait_connected(WAIT).await.expect("connected");
    }
    for i in 0..10_000 {
        match i % 5 {
            0 => drop(client.subscribe::<RoomMessage>(1)),
            1 => drop(client.subscribe_raw(1)),
            2 => drop(client.subscribe_text(1)),
            3 => drop(client.subscribe_binary(1)),
            _ => drop(client.subscribe_events(1)),
        }
    }
    assert_eq!(client.subscriber_count().await.expect("count"), start);
    client.close().await;
    peer.stop().await;
}

/// The next text the peer receives (skipping everything else), within [`WAIT`].
async fn next_text(peer: &mut Peer) -> (usize, String) {
    for _ in 0..100 {
        match peer.next().await {
            PeerEvent::Text(n, t) => return (n, t),
            _ => continue,
        }
    }
    panic!("no text message among 100 events");
}

/// Test 5 of the issue: after `join a`, `join a` again, `join b` and `leave b`, a reconnect
/// replays `join a` once and nothing for `b`.
#[actix_rt::test]
async fn leave_is_not_replayed_and_duplicate_joins_replay_once() {
    let mut peer = Peer::start(Behaviour {
        echo: false,
        ..Behaviour::default()
    })
    .await;
    let client = connect(&peer.url, client_test_config()).expect("client");
    client.wait_connected(WAIT).await.expect("connected");
    client.join("a").await.expect("join");
    client.join("a").await.expect("join again");
    client.join("b").await.expect("join b");
    client.leave("b").await.expect("leave b");
    let mut first = Vec::new();
    for _ in 0..3 {
        first.push(next_text(&mut peer).await.1);
    }
    assert_eq!(
        first,
        [
            r#"{"type":"join","room":"a"}"#,
            r#"{"type":"join","room":"b"}"#,
            r#"{"type":"leave","room":"b"}"#
        ]
    );
    let mut events = client.subscribe_events(64);
    peer.send(PeerCmd::Abort);
    common::recv_until(&mut events, WAIT, "Connected again", |e| {
        matches!(
            e,
            actix_ws_manager::client::Event::State(ConnectionState::Connected)
        )
    })
    .await;
    client.send_text("marker").await.expect("marker");
    let (session, replay) = next_text(&mut peer).await;
    assert_eq!(replay, r#"{"type":"join","room":"a"}"#);
    let (same, next) = next_text(&mut peer).await;
    assert_eq!(
        (same, next.as_str()),
        (session, "marker"),
        "nothing else replayed"
    );
    client.close().await;
    peer.stop().await;
}
