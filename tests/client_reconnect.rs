//! The client against a real actix-web peer on 127.0.0.1: reconnecting. Backoff and on-connect
//! replay across a server restart, the user's close, final and retried close codes and HTTP
//! statuses, bad URLs and configs, and the attempt counter's reset after a stable connection.
//! States are awaited with the test kit's `StateRecorder`, never with a sleep.

mod common;

use std::time::Duration;

use actix_ws_manager::client::{connect, ConnectionState};
use actix_ws_manager::config::{ClientConfig, HeartbeatConfig, ReconnectPolicy};
use actix_ws_manager::testkit::StateRecorder;
use actix_ws_manager::{Error, Outgoing};
use common::client::{assert_events_end, chat, close_and_replay, is_reconnecting, seen};
use common::peer::{Behaviour, Peer, PeerCmd, PeerEvent};
use common::{client_test_config, WAIT};

/// A peer that does not echo.
fn no_echo() -> Behaviour {
    Behaviour {
        echo: false,
        ..Behaviour::default()
    }
}

/// The text of the next `count` chat messages `peer` receives.
async fn chat_texts(peer: &mut Peer, count: usize) -> Vec<String> {
    let mut got = Vec::new();
    for _ in 0..count {
        let v: serde_json::Value = serde_json::from_str(&peer.next_text().await).unwrap();
        got.push(v["data"]["text"].as_str().unwrap().to_owned());
    }
    got
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

    let mut peer = Peer::start_on(port, no_echo()).await;
    states.wait_connected(WAIT).await.expect("reconnected");
    assert!(matches!(peer.next().await, PeerEvent::Connected(0)));
    let got = chat_texts(&mut peer, 7).await;
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

/// Pings every 50 ms (5 s timeout), reconnection from 50 ms without jitter, and the attempt
/// counter reset after 100 ms of stable connection.
fn stable_after_100ms_config() -> ClientConfig {
    client_test_config()
        .heartbeat(HeartbeatConfig::new(
            Duration::from_millis(50),
            Duration::from_secs(5),
        ))
        .reconnect(
            ReconnectPolicy::default()
                .backoff(Duration::from_millis(50), 2.0, Duration::from_secs(1))
                .jitter(0.0, None)
                .stable_after(Duration::from_millis(100)),
        )
}

/// The index in `seen` of the third `reconnecting` state.
fn third_reconnecting(seen: &[String]) -> usize {
    seen.iter()
        .enumerate()
        .filter(|(_, s)| s.starts_with("reconnecting"))
        .nth(2)
        .map(|(i, _)| i)
        .expect("three reconnecting states")
}

/// Read `peer`'s events until it has seen `count` pings.
async fn wait_pings(peer: &mut Peer, count: usize) {
    let mut pings = 0;
    while pings < count {
        if let PeerEvent::Ping(..) = peer.next_within(WAIT).await {
            pings += 1;
        }
    }
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
    let third = third_reconnecting(&seen);
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
    let client = connect(&peer.url, stable_after_100ms_config()).unwrap();
    let mut states = StateRecorder::attach(&client);
    states.wait_connected(WAIT).await.expect("connected");
    for round in 0..2 {
        wait_pings(&mut peer, 5).await;
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
