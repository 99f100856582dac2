//! The client against a real actix-web peer on 127.0.0.1: typed round trips, fragments and
//! limits, reconnect with backoff and on-connect replay, outbox policies, dead-peer detection
//! (a silent peer, and a blackholed link through the test kit's `FaultProxy`), request/reply,
//! bad input, and closing. States and messages are awaited with the test kit
//! (`StateRecorder`, `next_message`), never with a sleep.

mod common;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use actix_ws::Item;
use actix_ws_manager::client::{connect, Client, ConnectionState, MessageErrorKind};
use actix_ws_manager::config::{
    ClientConfig, HeartbeatConfig, OutboxPolicy, Overflow, PingMode, ReconnectPolicy,
};
use actix_ws_manager::testkit::{next_message, FaultProxy, StateRecorder};
use actix_ws_manager::{Error, Outgoing, WireMessage};
use bytes::Bytes;
use common::peer::{Behaviour, Peer, PeerCmd, PeerEvent};
use common::{client_test_config, WAIT};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Chat {
    text: String,
}
impl WireMessage for Chat {
    const TYPE: &'static str = "chat";
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Quote {
    symbol: String,
    price: f64,
}
impl WireMessage for Quote {
    const TYPE: &'static str = "quote";
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Ask(u32);
impl WireMessage for Ask {
    const TYPE: &'static str = "ask";
}

/// The peer's answer to [`Ask`]: the same number back.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
struct Answer(u32);
impl WireMessage for Answer {
    const TYPE: &'static str = "answer";
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Slow;
impl WireMessage for Slow {
    const TYPE: &'static str = "slow";
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Fail;
impl WireMessage for Fail {
    const TYPE: &'static str = "fail";
}

fn chat(text: &str) -> Chat {
    Chat { text: text.into() }
}

/// The scripted peer's address, for a `FaultProxy` in front of it.
fn peer_addr(peer: &Peer) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], peer.port))
}

fn is_reconnecting(s: &ConnectionState) -> bool {
    matches!(s, ConnectionState::Reconnecting { .. })
}

/// The states a recorder saw, in short words: `connected`, `disconnected 1009`,
/// `reconnecting 1`, `failed`, `closed`. `Connecting` is left out: the recorder's first state is
/// the snapshot taken when it was attached, which the first `Connecting` event may repeat.
fn seen(states: &mut StateRecorder) -> Vec<String> {
    states
        .states()
        .iter()
        .filter_map(|s| match s {
            ConnectionState::Connecting { .. } => None,
            ConnectionState::Connected => Some("connected".to_owned()),
            ConnectionState::Disconnected { code, .. } => Some(format!("disconnected {code}")),
            ConnectionState::Reconnecting { attempt, .. } => {
                Some(format!("reconnecting {attempt}"))
            }
            ConnectionState::Failed { .. } => Some("failed".to_owned()),
            ConnectionState::Closed => Some("closed".to_owned()),
        })
        .collect()
}

/// Close the client, wait for `Closed`, and answer every state it went through ([`seen`]); a
/// close while connected ends in `disconnected 1000`, `closed`.
/// The client's event stream ends once it has stopped (its Router is gone): waiting for any
/// further state answers `ClientClosed` rather than timing out.
async fn assert_events_end(states: &mut StateRecorder) {
    match states
        .wait_for("the end of the events", WAIT, |_| false)
        .await
    {
        Err(Error::ClientClosed) => {}
        other => panic!("the event stream did not end: {other:?}"),
    }
}

async fn close_and_replay(client: &Client, states: &mut StateRecorder) -> Vec<String> {
    client.close().await;
    states
        .wait_for("closed", WAIT, |s| *s == ConnectionState::Closed)
        .await
        .expect("closed");
    seen(states)
}

/// Typed messages go out as `{"type":..,"data":..}` envelopes, come back decoded as the same Rust
/// type with their envelope fields, and binary frames pass through byte for byte.
#[actix_rt::test]
async fn typed_round_trip_both_ways_and_binary_passthrough() {
    let mut peer = Peer::start(Behaviour::default()).await;
    let client = connect(&peer.url, client_test_config()).unwrap();
    let mut states = StateRecorder::attach(&client);
    let mut chats = client.subscribe::<Chat>(16);
    let mut quotes = client.subscribe::<Quote>(16);
    let mut binary = client.subscribe_binary(16);
    states.wait_connected(WAIT).await.expect("connected");
    assert!(matches!(peer.next().await, PeerEvent::Connected(_)));

    client.send(&chat("hi")).await.unwrap();
    let wire: serde_json::Value = serde_json::from_str(&peer.next_text().await).unwrap();
    assert_eq!(
        wire,
        serde_json::json!({"type": "chat", "data": {"text": "hi"}})
    );
    let got = next_message(&mut chats, WAIT).await.expect("echoed chat");
    assert_eq!(got.data, chat("hi"));
    assert_eq!(&*got.connection, peer.url.as_str());

    peer.send(PeerCmd::Text(
        r#"{"type":"quote","room":"fx","timestamp":"2026-11-24T18:00:00.000Z","data":{"symbol":"EURUSD","price":1.05}}"#.into(),
    ));
    let q = next_message(&mut quotes, WAIT).await.expect("server quote");
    assert_eq!(
        q.data,
        Quote {
            symbol: "EURUSD".into(),
            price: 1.05
        }
    );
    assert_eq!(q.room.as_deref(), Some("fx"));
    assert_eq!(q.timestamp.as_deref(), Some("2026-11-24T18:00:00.000Z"));
    assert!(
        chats.try_recv().is_err(),
        "a quote must not reach chat subscribers"
    );

    let bytes = Bytes::from_static(&[0, 1, 2, 254, 255]);
    client.send_binary(bytes.clone()).await.unwrap();
    assert_eq!(peer.next().await, PeerEvent::Binary(0, bytes.clone()));
    assert_eq!(
        next_message(&mut binary, WAIT)
            .await
            .expect("echoed binary")
            .data,
        bytes
    );

    let stats = client.stats();
    assert_eq!(stats.messages_out, 2);
    assert_eq!(stats.messages_in, 3);
    assert!(
        states.message_errors().is_empty(),
        "{:?}",
        states.message_errors()
    );
    assert_eq!(
        close_and_replay(&client, &mut states).await,
        ["connected", "disconnected 1000", "closed"]
    );
}

/// A message split into continuation frames (with a UTF-8 character split across fragments and a
/// ping in between) arrives whole, and the ping is answered.
#[actix_rt::test]
async fn fragmented_message_arrives_whole() {
    let mut peer = Peer::start(Behaviour::default()).await;
    let client = connect(&peer.url, client_test_config()).unwrap();
    let mut states = StateRecorder::attach(&client);
    let mut chats = client.subscribe::<Chat>(16);
    states.wait_connected(WAIT).await.expect("connected");
    peer.next().await;

    let text = r#"{"type":"chat","data":{"text":"héllo wörld"}}"#.as_bytes();
    let split_in_e_acute = text.iter().position(|b| *b == 0xC3).unwrap() + 1;
    peer.send(PeerCmd::Fragment(Item::FirstText(Bytes::copy_from_slice(
        &text[..split_in_e_acute],
    ))));
    peer.send(PeerCmd::Ping(Bytes::from_static(b"mid")));
    let second = split_in_e_acute + 5;
    peer.send(PeerCmd::Fragment(Item::Continue(Bytes::copy_from_slice(
        &text[split_in_e_acute..second],
    ))));
    peer.send(PeerCmd::Fragment(Item::Last(Bytes::copy_from_slice(
        &text[second..],
    ))));
    assert_eq!(
        next_message(&mut chats, WAIT)
            .await
            .expect("reassembled chat")
            .data,
        chat("héllo wörld")
    );
    let pong = loop {
        match peer.next_within(WAIT).await {
            PeerEvent::Pong(_, p) => break p,
            PeerEvent::Ping(..) => continue,
            other => panic!("expected the pong, got {other:?}"),
        }
    };
    assert_eq!(pong, Bytes::from_static(b"mid"));
    assert_eq!(client.state(), ConnectionState::Connected);
    // The interleaved ping did not cost the connection.
    assert_eq!(
        close_and_replay(&client, &mut states).await,
        ["connected", "disconnected 1000", "closed"]
    );
}

/// The peer receives a Close with `code` (the client's answer) and the client reports
/// `Disconnected` with that code.
async fn expect_close(peer: &mut Peer, states: &mut StateRecorder, code: u16) {
    loop {
        match peer.next().await {
            PeerEvent::Closed(_, got) => {
                assert_eq!(got, Some(code));
                break;
            }
            PeerEvent::Text(..) | PeerEvent::Binary(..) => continue,
            other => panic!("expected close {code}, got {other:?}"),
        }
    }
    assert_eq!(
        states.wait_disconnected(WAIT).await.expect("disconnected"),
        code
    );
}

/// A single frame over the size limit closes the connection with 1009, a fragmented message over
/// the limit does too, and the client reconnects afterwards.
#[actix_rt::test]
async fn oversize_messages_close_with_1009() {
    let mut peer = Peer::start(Behaviour::default()).await;
    let client = connect(&peer.url, client_test_config().max_message_size(1024)).unwrap();
    let mut states = StateRecorder::attach(&client);
    states.wait_connected(WAIT).await.expect("connected");
    peer.next().await;

    peer.send(PeerCmd::Text(format!(
        r#"{{"type":"chat","data":{{"text":"{}"}}}}"#,
        "x".repeat(2000)
    )));
    expect_close(&mut peer, &mut states, 1009).await;

    states.wait_connected(WAIT).await.expect("reconnected");
    assert!(matches!(peer.next().await, PeerEvent::Connected(1)));
    for item in [
        Item::FirstText(Bytes::from(vec![b'a'; 600])),
        Item::Continue(Bytes::from(vec![b'a'; 600])),
        Item::Last(Bytes::from_static(b"a")),
    ] {
        peer.send(PeerCmd::Fragment(item));
    }
    expect_close(&mut peer, &mut states, 1009).await;
    let seen = close_and_replay(&client, &mut states).await;
    // What follows the second 1009 (a reconnect, maybe) depends on when `close` came.
    assert_eq!(
        seen[..5],
        [
            "connected",
            "disconnected 1009",
            "reconnecting 1",
            "connected",
            "disconnected 1009"
        ],
        "{seen:?}"
    );
}

/// Invalid UTF-8 in a text message closes with 1007, detected in the first fragment that holds
/// it, not at the end of the message.
#[actix_rt::test]
async fn invalid_utf8_closes_with_1007() {
    let mut peer = Peer::start(Behaviour::default()).await;
    let client = connect(&peer.url, client_test_config()).unwrap();
    let mut states = StateRecorder::attach(&client);
    states.wait_connected(WAIT).await.expect("connected");
    peer.next().await;
    // No Last fragment follows: the 1007 must come from the first one.
    peer.send(PeerCmd::Fragment(Item::FirstText(Bytes::from_static(
        b"{\"type\":\"chat\xff\xfe",
    ))));
    expect_close(&mut peer, &mut states, 1007).await;
    client.close().await;
}

/// The server stops and restarts on the same port: the client reconnects with growing delays,
/// replays its on-connect messages first, then delivers what was sent while offline, in order.
#[actix_rt::test]
async fn reconnects_with_backoff_and_replays_on_connect_before_outbox() {
    let mut peer = Peer::start(Behaviour::default()).await;
    let port = peer.port;
    let client = connect(&peer.url, client_test_config()).unwrap();
    let mut states = StateRecorder::attach(&client);
    client
        .send_on_connect(Outgoing::new(&chat("join lobby")).unwrap())
        .await
        .unwrap();
    client
        .send_on_connect(Outgoing::new(&chat("join news")).unwrap())
        .await
        .unwrap();
    states.wait_connected(WAIT).await.expect("connected");
    assert!(matches!(peer.next().await, PeerEvent::Connected(0)));
    assert!(peer.next_text().await.contains("join lobby"));
    assert!(peer.next_text().await.contains("join news"));

    peer.stop().await;
    states.wait_disconnected(WAIT).await.expect("disconnected");
    let mut delays = Vec::new();
    for want_attempt in 1..=3 {
        match states
            .wait_for("reconnecting", WAIT, is_reconnecting)
            .await
            .expect("reconnecting")
        {
            ConnectionState::Reconnecting { attempt, delay, .. } => {
                assert_eq!(attempt, want_attempt);
                delays.push(delay);
            }
            other => unreachable!("{other:?}"),
        }
    }
    assert_eq!(
        delays,
        vec![
            Duration::from_millis(50),
            Duration::from_millis(100),
            Duration::from_millis(200)
        ]
    );

    for i in 0..5 {
        client.send(&chat(&format!("offline {i}"))).await.unwrap();
    }
    assert_eq!(client.stats().outbox_len, 5);

    let mut peer = Peer::start_on(
        port,
        Behaviour {
            echo: false,
            ..Behaviour::default()
        },
    )
    .await;
    states.wait_connected(WAIT).await.expect("reconnected");
    assert!(matches!(peer.next().await, PeerEvent::Connected(0)));
    let mut got = Vec::new();
    for _ in 0..7 {
        let v: serde_json::Value = serde_json::from_str(&peer.next_text().await).unwrap();
        got.push(v["data"]["text"].as_str().unwrap().to_owned());
    }
    let want: Vec<String> = ["join lobby", "join news"]
        .into_iter()
        .map(String::from)
        .chain((0..5).map(|i| format!("offline {i}")))
        .collect();
    assert_eq!(got, want);
    assert_eq!(client.stats().reconnects, 1);
    assert_eq!(client.stats().outbox_len, 0);
    // Connected before the stop and after the restart, with only failed attempts in between
    // (at least the three above; more while the peer was starting), numbered from 1.
    let seen = close_and_replay(&client, &mut states).await;
    let retries = seen.len().saturating_sub(5);
    assert!(retries >= 3, "{seen:?}");
    let want: Vec<String> = ["connected", "disconnected 1006"]
        .into_iter()
        .map(String::from)
        .chain((1..=retries).map(|i| format!("reconnecting {i}")))
        .chain(["connected", "disconnected 1000", "closed"].map(String::from))
        .collect();
    assert_eq!(seen, want);
}

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

/// Replies are matched by id (several requests in flight), a request with no reply times out, an
/// error reply becomes `Error::Remote`, and a pending request fails promptly when the connection
/// is lost.
#[actix_rt::test]
async fn request_reply_timeout_remote_error_and_failure_on_disconnect() {
    let mut peer = Peer::start(Behaviour {
        reply: true,
        ..Behaviour::default()
    })
    .await;
    let client = connect(&peer.url, client_test_config()).unwrap();
    let mut states = StateRecorder::attach(&client);
    states.wait_connected(WAIT).await.expect("connected");

    let (a, b, c) = tokio::join!(
        client.request::<_, Answer>(&Ask(1), WAIT),
        client.request::<_, Answer>(&Ask(2), WAIT),
        client.request::<_, Answer>(&Ask(3), WAIT)
    );
    for (reply, n) in [(a, 1), (b, 2), (c, 3)] {
        assert_eq!(
            reply.unwrap(),
            Answer(n),
            "each request gets its own reply, typed"
        );
    }
    // A reply of another type than the one asked for is a decode error, not a panic.
    match client.request::<_, Ask>(&Ask(4), WAIT).await {
        Err(Error::Decode(why)) => assert!(why.contains("answer"), "{why}"),
        other => panic!("{other:?}"),
    }

    let timeout = Duration::from_millis(200);
    match client.request::<_, Answer>(&Slow, timeout).await {
        Err(Error::RequestTimeout { timeout: t, .. }) => assert_eq!(t, timeout),
        other => panic!("expected a timeout, got {other:?}"),
    }

    match client.request::<_, Answer>(&Fail, WAIT).await {
        Err(Error::Remote { code, .. }) => assert_eq!(code, "nope"),
        other => panic!("expected a remote error, got {other:?}"),
    }

    let pending = {
        let client = client.clone();
        actix_rt::spawn(async move {
            client
                .request::<_, Answer>(&Slow, Duration::from_secs(60))
                .await
        })
    };
    loop {
        if let PeerEvent::Text(_, t) = peer.next().await {
            if t.contains("\"slow\"") && !t.contains(&format!("\"id\":{}", 4)) {
                break;
            }
        }
    }
    let since = Instant::now();
    peer.send(PeerCmd::Abort);
    let result = tokio::time::timeout(WAIT, pending)
        .await
        .expect("pending request not failed")
        .unwrap();
    let lost = states.wait_disconnected(WAIT).await.expect("disconnected");
    assert!(
        matches!(result, Err(Error::ConnectionLost { code, .. }) if code == lost),
        "{result:?} (disconnected with {lost})"
    );
    assert!(since.elapsed() < Duration::from_secs(5));
    client.close().await;
}

/// Malformed JSON, an unknown type and a payload of the wrong shape each produce a counted error
/// event, and the connection stays usable in both directions.
#[actix_rt::test]
async fn bad_input_produces_error_events_and_the_connection_stays_up() {
    let mut peer = Peer::start(Behaviour {
        echo: false,
        ..Behaviour::default()
    })
    .await;
    let client = connect(&peer.url, client_test_config()).unwrap();
    let mut states = StateRecorder::attach(&client);
    let mut chats = client.subscribe::<Chat>(16);
    states.wait_connected(WAIT).await.expect("connected");
    peer.next().await;

    peer.send(PeerCmd::Text("this is not json".into()));
    peer.send(PeerCmd::Text(r#"{"type":"mystery","data":1}"#.into()));
    peer.send(PeerCmd::Text(r#"{"type":"chat","data":{"txt":5}}"#.into()));
    peer.send(PeerCmd::Text(
        r#"{"type":"chat","data":{"text":"still here"}}"#.into(),
    ));

    // The Router handles frames in order and reports an error while it handles the frame, so
    // once the valid chat is delivered the three error events have been sent.
    assert_eq!(
        next_message(&mut chats, WAIT)
            .await
            .expect("valid chat")
            .data,
        chat("still here")
    );
    let kinds: Vec<_> = states
        .message_errors()
        .iter()
        .map(|e| (e.kind, e.message_type.clone()))
        .collect();
    assert_eq!(
        kinds,
        vec![
            (MessageErrorKind::Malformed, None),
            (MessageErrorKind::UnknownType, Some("mystery".into())),
            (MessageErrorKind::BadData, Some("chat".into())),
        ]
    );
    client.send(&chat("me too")).await.unwrap();
    assert!(peer.next_text().await.contains("me too"));
    let stats = client.stats();
    assert_eq!((stats.decode_errors, stats.unknown_types), (2, 1));
    assert_eq!(client.state(), ConnectionState::Connected);
    assert_eq!(
        close_and_replay(&client, &mut states).await,
        ["connected", "disconnected 1000", "closed"]
    );
}

/// The user's close sends 1000, ends in `Closed`, and nothing reconnects; sends then fail.
#[actix_rt::test]
async fn user_close_never_reconnects() {
    let mut peer = Peer::start(Behaviour::default()).await;
    let client = connect(&peer.url, client_test_config()).unwrap();
    let mut states = StateRecorder::attach(&client);
    states.wait_connected(WAIT).await.expect("connected");
    peer.next().await;
    client.close().await;
    assert_eq!(peer.next().await, PeerEvent::Closed(0, Some(1000)));
    states
        .wait_for("closed", WAIT, |s| *s == ConnectionState::Closed)
        .await
        .expect("closed");
    // The router stops after `Closed`: no later state can be published.
    assert_events_end(&mut states).await;
    assert_eq!(
        seen(&mut states),
        ["connected", "disconnected 1000", "closed"]
    );
    assert_eq!(client.state(), ConnectionState::Closed);
    assert!(matches!(
        client.send(&chat("late")).await,
        Err(Error::ClientClosed)
    ));
}

/// A close code configured as final (1008 by default, 4xxx when added) ends in `Failed`, with no
/// reconnect; so does a handshake refused with 403.
#[actix_rt::test]
async fn final_close_codes_and_statuses_end_in_failed() {
    for code in [1008u16, 4001] {
        let mut peer = Peer::start(Behaviour::default()).await;
        let config = client_test_config().reconnect(
            ReconnectPolicy::default()
                .backoff(Duration::from_millis(10), 2.0, Duration::from_millis(100))
                .final_close_codes(4000..=4999),
        );
        let client = connect(&peer.url, config).unwrap();
        let mut states = StateRecorder::attach(&client);
        states.wait_connected(WAIT).await.expect("connected");
        peer.next().await;
        peer.send(PeerCmd::Close(code));
        let state = states
            .wait_for("failed", WAIT, ConnectionState::is_terminal)
            .await
            .expect("failed");
        assert!(
            matches!(&state, ConnectionState::Failed { reason } if reason.contains(&code.to_string())),
            "{state:?}"
        );
        assert_events_end(&mut states).await;
        // No reconnect between the close and `Failed`.
        assert_eq!(
            seen(&mut states),
            [
                "connected".to_owned(),
                format!("disconnected {code}"),
                "failed".to_owned()
            ]
        );
        // The client echoes the code; actix-ws may already have shut the TCP connection after its
        // own close frame, in which case the peer sees the stream end instead.
        let answer = peer.next().await;
        assert!(
            matches!(answer, PeerEvent::Closed(0, Some(c)) if c == code)
                || answer == PeerEvent::Gone(0),
            "{answer:?}"
        );
    }

    let peer = Peer::start(Behaviour::default()).await;
    let url = format!("ws://127.0.0.1:{}/forbidden", peer.port);
    let client = connect(&url, client_test_config()).unwrap();
    let mut states = StateRecorder::attach(&client);
    let state = states
        .wait_for("failed", WAIT, ConnectionState::is_terminal)
        .await
        .expect("failed");
    assert!(
        matches!(&state, ConnectionState::Failed { reason } if reason.contains("403")),
        "{state:?}"
    );
    assert_eq!(
        seen(&mut states),
        ["failed"],
        "never connected, never retried"
    );
}

/// A non-final close code (1001 going away) and a 503 refusal are retried.
#[actix_rt::test]
async fn non_final_close_and_503_are_retried() {
    let mut peer = Peer::start(Behaviour::default()).await;
    let client = connect(&peer.url, client_test_config()).unwrap();
    let mut states = StateRecorder::attach(&client);
    states.wait_connected(WAIT).await.expect("connected");
    peer.next().await;
    peer.send(PeerCmd::Close(1001));
    assert_eq!(
        states.wait_disconnected(WAIT).await.expect("disconnected"),
        1001
    );
    states
        .wait_for("reconnecting", WAIT, is_reconnecting)
        .await
        .expect("reconnecting");
    states.wait_connected(WAIT).await.expect("reconnected");
    assert_eq!(
        close_and_replay(&client, &mut states).await,
        [
            "connected",
            "disconnected 1001",
            "reconnecting 1",
            "connected",
            "disconnected 1000",
            "closed"
        ]
    );

    let url = format!("ws://127.0.0.1:{}/unavailable", peer.port);
    let client = connect(&url, client_test_config()).unwrap();
    let mut states = StateRecorder::attach(&client);
    let state = states
        .wait_for("reconnecting", WAIT, is_reconnecting)
        .await
        .expect("reconnecting");
    assert!(
        matches!(&state, ConnectionState::Reconnecting { attempt: 1, cause, .. } if cause.contains("503")),
        "{state:?}"
    );
    client.close().await;
    states
        .wait_for("closed", WAIT, |s| *s == ConnectionState::Closed)
        .await
        .expect("closed");
    assert_eq!(states.connects(), 0);
}

/// Bad URLs and bad configs are errors from `connect`, never panics.
#[actix_rt::test]
async fn bad_urls_and_configs_are_errors() {
    for url in [
        "",
        "not a url",
        "http://127.0.0.1/ws",
        "ws://",
        "ftp://example.invalid/ws",
        "ws:///path",
    ] {
        assert!(
            matches!(
                connect(url, ClientConfig::default()),
                Err(Error::InvalidUrl { .. })
            ),
            "{url:?}"
        );
    }
    let bad =
        ClientConfig::default().heartbeat(HeartbeatConfig::new(Duration::ZERO, Duration::ZERO));
    assert!(matches!(
        connect("ws://127.0.0.1:1/ws", bad),
        Err(Error::Config(_))
    ));
    // An extra TLS root that is not a certificate is a config error naming the field.
    let bad = ClientConfig::default().tls_root_pem("not a certificate");
    match connect("wss://127.0.0.1:1/ws", bad) {
        Err(Error::Config(msg)) => assert!(msg.contains("tls_roots"), "{msg}"),
        other => panic!("{other:?}"),
    }
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

/// A server that accepts and drops at once still sees growing delays: the attempt counter is
/// reset only by a connection that stays up for `stable_after`.
#[actix_rt::test]
async fn attempts_reset_only_after_a_stable_connection() {
    let peer = Peer::start(Behaviour {
        drop_at_once: true,
        ..Behaviour::default()
    })
    .await;
    let client = connect(&peer.url, client_test_config()).unwrap();
    let mut states = StateRecorder::attach(&client);
    let mut delays = Vec::new();
    for _ in 0..3 {
        match states
            .wait_for("reconnecting", WAIT, is_reconnecting)
            .await
            .expect("reconnecting")
        {
            ConnectionState::Reconnecting { delay, .. } => delays.push(delay),
            other => unreachable!("{other:?}"),
        }
    }
    // Connections counted up to the third `Reconnecting`.
    let seen = seen(&mut states);
    let third = seen
        .iter()
        .enumerate()
        .filter(|(_, s)| s.starts_with("reconnecting"))
        .nth(2)
        .map(|(i, _)| i)
        .expect("three reconnecting states");
    let connects = seen[..third].iter().filter(|s| *s == "connected").count();
    assert!(connects >= 2, "the peer accepted the connections: {seen:?}");
    assert_eq!(
        delays,
        vec![
            Duration::from_millis(50),
            Duration::from_millis(100),
            Duration::from_millis(200)
        ]
    );
    client.close().await;

    // A connection that stays up past `stable_after` resets the counter: the next delay is the
    // initial one again. The peer's pings serve as the clock (no sleeping).
    let mut peer = Peer::start(Behaviour::default()).await;
    let config = client_test_config()
        .heartbeat(HeartbeatConfig::new(
            Duration::from_millis(50),
            Duration::from_secs(5),
        ))
        .reconnect(
            ReconnectPolicy::default()
                .backoff(Duration::from_millis(50), 2.0, Duration::from_secs(1))
                .jitter(0.0, None)
                .stable_after(Duration::from_millis(100)),
        );
    let client = connect(&peer.url, config).unwrap();
    let mut states = StateRecorder::attach(&client);
    states.wait_connected(WAIT).await.expect("connected");
    for round in 0..2 {
        let mut pings = 0;
        while pings < 5 {
            if let PeerEvent::Ping(..) = peer.next_within(WAIT).await {
                pings += 1;
            }
        }
        peer.send(PeerCmd::Abort);
        let state = states
            .wait_for("reconnecting", WAIT, is_reconnecting)
            .await
            .expect("reconnecting");
        assert!(
            matches!(
                &state,
                ConnectionState::Reconnecting { attempt: 1, delay, cause }
                    if *delay == Duration::from_millis(50) && cause.contains("1006")
            ),
            "round {round}: {state:?}"
        );
        states.wait_connected(WAIT).await.expect("reconnected");
    }
    assert_eq!(
        close_and_replay(&client, &mut states).await,
        [
            "connected",
            "disconnected 1006",
            "reconnecting 1",
            "connected",
            "disconnected 1006",
            "reconnecting 1",
            "connected",
            "disconnected 1000",
            "closed"
        ]
    );
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

/// Verbatim text: `send_text` goes out unwrapped, and a text subscriber gets every frame as sent,
/// JSON or not, with no error events.
#[actix_rt::test]
async fn verbatim_text_passthrough() {
    let mut peer = Peer::start(Behaviour::default()).await;
    let client = connect(&peer.url, client_test_config()).unwrap();
    let mut states = StateRecorder::attach(&client);
    let mut text = client.subscribe_text(16);
    states.wait_connected(WAIT).await.expect("connected");
    peer.next().await;
    client.send_text("plain words, not JSON").await.unwrap();
    assert_eq!(peer.next_text().await, "plain words, not JSON");
    assert_eq!(
        &*next_message(&mut text, WAIT)
            .await
            .expect("echoed text")
            .data,
        "plain words, not JSON"
    );
    peer.send(PeerCmd::Text(r#"{"type":"nobody-listens"}"#.into()));
    assert_eq!(
        &*next_message(&mut text, WAIT)
            .await
            .expect("envelope as text")
            .data,
        r#"{"type":"nobody-listens"}"#
    );
    let stats = client.stats();
    assert_eq!((stats.decode_errors, stats.unknown_types), (0, 0));
    assert!(
        states.message_errors().is_empty(),
        "{:?}",
        states.message_errors()
    );
    client.close().await;
}

/// `inject_text` routes a text frame through the Router as if the peer had sent it: typed
/// subscribers get it decoded, the peer sees nothing, and the receive counters do not move.
#[actix_rt::test]
async fn injected_text_is_routed_like_a_received_frame() {
    let mut peer = Peer::start(Behaviour::default()).await;
    let client = connect(&peer.url, client_test_config()).unwrap();
    let mut states = StateRecorder::attach(&client);
    let mut quotes = client.subscribe::<Quote>(16);
    states.wait_connected(WAIT).await.expect("connected");
    assert!(matches!(peer.next().await, PeerEvent::Connected(_)));

    client.inject_text(r#"{"type":"quote","room":"fx","data":{"symbol":"EURUSD","price":1.05}}"#);
    let q = next_message(&mut quotes, WAIT)
        .await
        .expect("injected quote");
    assert_eq!(q.data.symbol, "EURUSD");
    assert_eq!(q.room.as_deref(), Some("fx"));
    assert_eq!(client.stats().messages_in, 0);
    client.close().await;
}

/// A server that speaks first, in the same write as its handshake response: the frames that
/// arrive with the `101` (awc reads them along with the head) are delivered first and whole,
/// and so is what follows, at several sizes that cross the client's read buffer.
#[actix_rt::test]
async fn frames_sent_with_the_handshake_response_are_not_lost() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("ws://{}/", listener.local_addr().unwrap());
    // Text frames of 5 bytes, 3 KiB, 20 KiB and 100 KiB (over the 4 KiB read buffer).
    let sizes = [5usize, 3 * 1024, 20 * 1024, 100 * 1024];
    let frame = |n: usize| {
        let body = "x".repeat(n);
        let mut out = vec![0x81u8];
        match n {
            0..=125 => out.push(n as u8),
            126..=65535 => {
                out.push(126);
                out.extend_from_slice(&(n as u16).to_be_bytes());
            }
            _ => {
                out.push(127);
                out.extend_from_slice(&(n as u64).to_be_bytes());
            }
        }
        out.extend_from_slice(body.as_bytes());
        out
    };
    let server = actix_rt::spawn(async move {
        let (mut tcp, _) = listener.accept().await.unwrap();
        let mut head = Vec::new();
        let mut byte = [0u8; 1];
        while !head.ends_with(b"\r\n\r\n") {
            assert_eq!(tcp.read(&mut byte).await.unwrap(), 1, "request head");
            head.push(byte[0]);
        }
        let head = String::from_utf8(head).unwrap();
        let key = head
            .lines()
            .find_map(|l| {
                let (name, value) = l.split_once(':')?;
                name.eq_ignore_ascii_case("sec-websocket-key")
                    .then(|| value.trim().to_owned())
            })
            .expect("a key");
        let accept = actix_http::ws::hash_key(key.as_bytes());
        let mut out = format!(
            "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: {}\r\n\r\n",
            std::str::from_utf8(&accept).unwrap()
        )
        .into_bytes();
        // The first two frames go in the same write as the response head.
        out.extend(frame(sizes[0]));
        out.extend(frame(sizes[1]));
        tcp.write_all(&out).await.unwrap();
        for &n in &sizes[2..] {
            tcp.write_all(&frame(n)).await.unwrap();
        }
        // Hold the connection until the client has read everything and goes away.
        let mut rest = Vec::new();
        let _ = tcp.read_to_end(&mut rest).await;
    });
    let client = connect(&url, client_test_config()).unwrap();
    let mut texts = client.subscribe_text(8);
    for n in sizes {
        let got = next_message(&mut texts, WAIT).await.expect("a frame");
        assert_eq!(got.data.len(), n);
    }
    client.close().await;
    let _ = actix_rt::time::timeout(WAIT, server).await;
}
