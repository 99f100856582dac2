//! The client against a real actix-web peer on 127.0.0.1: dead-peer detection. A silent peer,
//! and a blackholed link through the test kit's `FaultProxy`, are declared dead within the
//! heartbeat's bound; protocol and application-level heartbeats measure a round-trip time.
//! States are awaited with the test kit's `StateRecorder`, never with a sleep.

mod common;

use std::time::{Duration, Instant};

use actix_ws_manager::client::{connect, ConnectionState};
use actix_ws_manager::config::{HeartbeatConfig, PingMode};
use actix_ws_manager::testkit::{next_message, FaultProxy, StateRecorder};
use common::client::{chat, close_and_replay, is_reconnecting, peer_addr, Chat};
use common::peer::{Behaviour, Peer, PeerEvent};
use common::{client_test_config, WAIT};

/// Wait for the heartbeat to declare the peer dead: `Disconnected` with 1006 and a reason that
/// names the heartbeat. Answers how long after `since` it came.
async fn declared_dead(states: &mut StateRecorder, since: Instant) -> Duration {
    let state = states
        .wait_for("declared dead by the heartbeat", WAIT, |s| {
            matches!(s, ConnectionState::Disconnected { .. })
        })
        .await
        .expect("disconnected");
    let took = since.elapsed();
    assert!(
        matches!(&state, ConnectionState::Disconnected { code: 1006, reason } if reason.contains("heartbeat")),
        "{state:?}"
    );
    took
}

/// A peer that swallows pings and sends nothing is declared dead within timeout + one interval,
/// and reconnection starts.
#[actix_rt::test]
async fn silent_peer_is_declared_dead_and_reconnection_starts() {
    let mut peer = Peer::start(Behaviour {
        echo: false,
        answer_pings: false,
        ..Behaviour::default()
    })
    .await;
    let interval = Duration::from_millis(100);
    let timeout = Duration::from_millis(400);
    let client = connect(
        &peer.url,
        client_test_config().heartbeat(HeartbeatConfig::new(interval, timeout)),
    )
    .unwrap();
    let mut states = StateRecorder::attach(&client);
    states.wait_connected(WAIT).await.expect("connected");
    let since = Instant::now();
    assert!(matches!(peer.next().await, PeerEvent::Connected(0)));
    // The peer really receives pings and ignores them.
    assert!(matches!(
        peer.next_within(WAIT).await,
        PeerEvent::Ping(0, _)
    ));

    let took = declared_dead(&mut states, since).await;
    // The silence clock starts when the socket opens, a moment before `Connected` is seen here.
    assert_dead_in_time(took, timeout, interval);
    states
        .wait_for("reconnecting", WAIT, is_reconnecting)
        .await
        .expect("reconnecting");
    states.wait_connected(WAIT).await.expect("reconnected");
    second_connection(&mut peer).await;
    assert_eq!(client.stats().reconnects, 1);
    client.close().await;
}

/// The heartbeat's bound: not before `timeout - interval` (the silence may have begun up to an
/// interval before the clock here started), not after `timeout + interval` plus scheduling slack
/// on a loaded machine.
fn assert_dead_in_time(took: Duration, timeout: Duration, interval: Duration) {
    assert!(
        took >= timeout - interval,
        "declared dead after {took:?}, before the timeout"
    );
    assert!(
        took <= timeout + interval + Duration::from_millis(400),
        "declared dead only after {took:?}"
    );
}

/// Wait for the peer to see the client's second connection (the first may end before it).
async fn second_connection(peer: &mut Peer) {
    for _ in 0..4 {
        match peer.next().await {
            PeerEvent::Connected(1) => return,
            PeerEvent::Gone(0) | PeerEvent::Closed(0, _) => continue,
            other => panic!("expected the second connection, got {other:?}"),
        }
    }
    panic!("the peer saw no second connection");
}

/// The same through a `FaultProxy` whose link stops carrying packets (blackhole) while the peer
/// itself would answer: the heartbeat declares it dead within timeout + one interval of the
/// fault, the reconnect attempts cannot get through while it lasts, and once the link heals the
/// client connects again and messages flow both ways.
#[actix_rt::test]
async fn blackholed_link_is_declared_dead_and_reconnects_once_healed() {
    let mut peer = Peer::start(Behaviour::default()).await;
    let proxy = FaultProxy::start(peer_addr(&peer)).await.expect("proxy");
    let interval = Duration::from_millis(100);
    let timeout = Duration::from_millis(400);
    let client = connect(
        &proxy.url("/ws"),
        client_test_config().heartbeat(HeartbeatConfig::new(interval, timeout)),
    )
    .unwrap();
    let mut states = StateRecorder::attach(&client);
    let mut chats = client.subscribe::<Chat>(16);
    states.wait_connected(WAIT).await.expect("connected");
    assert!(matches!(peer.next().await, PeerEvent::Connected(0)));
    client.send(&chat("before")).await.unwrap();
    assert!(peer.next_text().await.contains("before"));
    assert_eq!(
        next_message(&mut chats, WAIT).await.expect("echo").data,
        chat("before")
    );

    proxy.blackhole();
    let since = Instant::now();
    let took = declared_dead(&mut states, since).await;
    // Pongs came every interval until the fault, so the silence began at most an interval
    // before it.
    assert_dead_in_time(took, timeout, interval);
    // Nothing crosses the blackhole from here on (any write under way when it began is done).
    let held = (proxy.bytes_up(), proxy.bytes_down());
    // The client retries at once (50 ms), but its handshake is held in the blackhole.
    states
        .wait_for("reconnecting", WAIT, is_reconnecting)
        .await
        .expect("reconnecting");
    states
        .wait_for(
            "a reconnect attempt",
            WAIT,
            |s| matches!(s, ConnectionState::Connecting { attempt } if *attempt >= 1),
        )
        .await
        .expect("connecting again");
    assert_ne!(client.state(), ConnectionState::Connected);
    assert_eq!((proxy.bytes_up(), proxy.bytes_down()), held);

    proxy.pass();
    states.wait_connected(WAIT).await.expect("reconnected");
    second_connection(&mut peer).await;
    client.send(&chat("after")).await.unwrap();
    assert_eq!(
        next_message(&mut chats, WAIT)
            .await
            .expect("echo after healing")
            .data,
        chat("after")
    );
    assert_eq!(client.stats().reconnects, 1);
    assert_eq!(proxy.connections(), 2);
    let seen = close_and_replay(&client, &mut states).await;
    assert_eq!(
        seen,
        [
            "connected",
            "disconnected 1006",
            "reconnecting 1",
            "connected",
            "disconnected 1000",
            "closed"
        ]
    );
}

/// With a peer that answers pings, the heartbeat measures a round-trip time.
#[actix_rt::test]
async fn heartbeat_measures_round_trip_time() {
    let mut peer = Peer::start(Behaviour::default()).await;
    let config = client_test_config().heartbeat(HeartbeatConfig::new(
        Duration::from_millis(50),
        Duration::from_secs(5),
    ));
    let client = connect(&peer.url, config).unwrap();
    let mut states = StateRecorder::attach(&client);
    states.wait_connected(WAIT).await.expect("connected");
    // By the third ping the first pong has long been processed.
    let mut pings = 0;
    while pings < 3 {
        if let PeerEvent::Ping(..) = peer.next_within(WAIT).await {
            pings += 1;
        }
    }
    let stats = client.stats();
    assert!(
        stats.last_rtt.is_some() && stats.smoothed_rtt.is_some(),
        "{stats:?}"
    );
    assert!(stats.last_rtt.unwrap() < Duration::from_secs(5));
    assert_eq!(
        close_and_replay(&client, &mut states).await,
        ["connected", "disconnected 1000", "closed"]
    );
}

/// In application mode the heartbeat sends `{"type":"ping"}` text messages and measures the
/// round-trip time from the `{"type":"pong"}` answers, which are not reported as unknown types.
#[actix_rt::test]
async fn application_level_heartbeat_measures_rtt() {
    let mut peer = Peer::start(Behaviour {
        echo: false,
        app_pong: true,
        ..Behaviour::default()
    })
    .await;
    let heartbeat = HeartbeatConfig::new(Duration::from_millis(50), Duration::from_secs(5))
        .mode(PingMode::Application);
    let client = connect(&peer.url, client_test_config().heartbeat(heartbeat)).unwrap();
    let mut states = StateRecorder::attach(&client);
    states.wait_connected(WAIT).await.expect("connected");
    peer.next().await;
    for _ in 0..3 {
        assert_eq!(peer.next_text().await, r#"{"type":"ping"}"#);
    }
    let stats = client.stats();
    assert!(stats.last_rtt.is_some(), "{stats:?}");
    assert_eq!(stats.unknown_types, 0);
    assert!(
        states.message_errors().is_empty(),
        "{:?}",
        states.message_errors()
    );
    client.close().await;
}
