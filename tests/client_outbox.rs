//! The client against a real actix-web peer on 127.0.0.1: the outbox. Its overflow policies
//! (`Reject`, `DropOldest`, `DropNewest`) while the client waits to reconnect, and the bound on
//! memory when the peer stops reading. Waits use the test kit, never a sleep.

mod common;

use std::time::Duration;

use actix_ws_manager::client::{connect, ConnectionState};
use actix_ws_manager::config::{OutboxPolicy, Overflow, ReconnectPolicy};
use actix_ws_manager::testkit::{FaultProxy, StateRecorder};
use actix_ws_manager::Error;
use common::client::{chat, close_and_replay, is_reconnecting, peer_addr, seen};
use common::peer::{Behaviour, Peer, PeerCmd, PeerEvent};
use common::{client_test_config, WAIT};

/// Fill the outbox of a client that is waiting to reconnect, then let it connect: returns what
/// the peer received and the client's drop count. The first attempt is refused by a
/// `FaultProxy` in front of the peer; the next is two seconds away.
async fn overflow_outbox(overflow: Overflow) -> (Vec<String>, Vec<Result<(), Error>>, u64) {
    let mut peer = Peer::start(Behaviour {
        echo: false,
        ..Behaviour::default()
    })
    .await;
    let proxy = FaultProxy::start(peer_addr(&peer)).await.expect("proxy");
    proxy.refuse(true);
    let config = client_test_config()
        .outbox(OutboxPolicy::new(3, overflow))
        .reconnect(
            ReconnectPolicy::default()
                .backoff(Duration::from_secs(2), 2.0, Duration::from_secs(2))
                .jitter(0.0, None),
        );
    let client = connect(&proxy.url("/ws"), config).unwrap();
    let mut states = StateRecorder::attach(&client);
    states
        .wait_for("reconnecting", WAIT, is_reconnecting)
        .await
        .expect("the first attempt fails");
    let mut results = Vec::new();
    for i in 0..5 {
        results.push(client.send(&chat(&format!("m{i}"))).await);
    }
    let dropped = client.stats().dropped;
    proxy.refuse(false);
    states.wait_connected(WAIT).await.expect("connected");
    assert!(matches!(peer.next().await, PeerEvent::Connected(0)));
    assert_eq!(proxy.connections(), 1, "the refused attempt is not counted");
    let mut got = Vec::new();
    for _ in 0..3 {
        let v: serde_json::Value = serde_json::from_str(&peer.next_text().await).unwrap();
        got.push(v["data"]["text"].as_str().unwrap().to_owned());
    }
    assert_eq!(
        close_and_replay(&client, &mut states).await,
        ["reconnecting 1", "connected", "disconnected 1000", "closed"]
    );
    (got, results, dropped)
}

/// Under `Reject` the fourth and fifth sends fail with `OutboxFull` and nothing queued is lost.
#[actix_rt::test]
async fn outbox_reject_policy_errors_and_keeps_queued_messages() {
    let (got, results, dropped) = overflow_outbox(Overflow::Reject).await;
    assert!(results[..3].iter().all(Result::is_ok));
    assert!(
        results[3..]
            .iter()
            .all(|r| matches!(r, Err(Error::OutboxFull { capacity: 3 }))),
        "{results:?}"
    );
    assert_eq!(got, ["m0", "m1", "m2"]);
    assert_eq!(dropped, 0);
}

/// Under `DropOldest` every send succeeds, the two oldest are dropped and counted.
#[actix_rt::test]
async fn outbox_drop_oldest_policy_drops_and_counts() {
    let (got, results, dropped) = overflow_outbox(Overflow::DropOldest).await;
    assert!(results.iter().all(Result::is_ok));
    assert_eq!(got, ["m2", "m3", "m4"]);
    assert_eq!(dropped, 2);
}

/// Under `DropNewest` every send succeeds, the two newest are dropped and counted.
#[actix_rt::test]
async fn outbox_drop_newest_policy_drops_and_counts() {
    let (got, results, dropped) = overflow_outbox(Overflow::DropNewest).await;
    assert!(results.iter().all(Result::is_ok));
    assert_eq!(got, ["m0", "m1", "m2"]);
    assert_eq!(dropped, 2);
}

/// A peer that stops reading: the client's memory stays bounded by the writer queue plus the
/// outbox. Once both are full, `send` fails with `OutboxFull` (the default `Reject` policy)
/// instead of buffering without end, and the connection is still up.
#[actix_rt::test]
async fn slow_peer_bounds_client_memory() {
    let mut peer = Peer::start(Behaviour {
        echo: false,
        ..Behaviour::default()
    })
    .await;
    let config = client_test_config()
        .outbox(OutboxPolicy::new(8, Overflow::Reject))
        .write_queue(4);
    let client = connect(&peer.url, config).unwrap();
    let mut states = StateRecorder::attach(&client);
    states.wait_connected(WAIT).await.expect("connected");
    peer.next().await;
    peer.send(PeerCmd::Stall);
    assert_eq!(peer.next().await, PeerEvent::Stalled(0));

    let payload = chat(&"x".repeat(64 * 1024));
    // Bounded: at most 4000 x 64 KiB, far more than loopback socket buffers hold.
    let mut accepted = 0;
    let mut full = None;
    for _ in 0..4000 {
        match client.send(&payload).await {
            Ok(()) => accepted += 1,
            Err(e) => {
                full = Some(e);
                break;
            }
        }
        if accepted % 16 == 0 {
            // Let the writer task run so the socket buffers really fill.
            tokio::task::yield_now().await;
        }
    }
    assert!(
        matches!(full, Some(Error::OutboxFull { capacity: 8 })),
        "after {accepted} sends: {full:?}"
    );
    let stats = client.stats();
    assert_eq!(stats.outbox_len, 8);
    assert_eq!(stats.dropped, 0);
    assert_eq!(client.state(), ConnectionState::Connected);
    // Never disconnected while the peer stalled.
    assert_eq!(seen(&mut states), ["connected"]);
    client.close().await;
}
