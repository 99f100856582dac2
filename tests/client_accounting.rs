//! The client's accounting rule and control path, against raw tokio-tungstenite peers that stop
//! reading, drop connections and send control frames while the client's queues are full.
//! Every message accepted ends written, failed or dropped (and counted); nothing is written twice
//! or after its caller was told it failed; pongs and close frames never wait behind data.

mod common;

use std::time::Duration;

use actix_ws_manager::client::{connect, Client, ConnectionState, Event, MessageErrorKind};
use actix_ws_manager::config::{OutboxPolicy, Overflow};
use actix_ws_manager::{Error, Outgoing};
use common::{client_test_config, wait_state, WAIT};
use futures_util::{SinkExt, StreamExt};
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;

type Ws = WebSocketStream<TcpStream>;

/// A listener whose accepted sockets have a tiny receive buffer, so that a peer that stops
/// reading stalls the client's writes after a few megabytes at most.
fn small_listener() -> (TcpListener, String) {
    let sock = TcpSocket::new_v4().expect("socket");
    sock.set_recv_buffer_size(4096).expect("rcvbuf");
    sock.bind("127.0.0.1:0".parse().expect("addr"))
        .expect("bind");
    let listener = sock.listen(16).expect("listen");
    let url = format!("ws://{}/raw", listener.local_addr().expect("addr"));
    (listener, url)
}

async fn accept(listener: &TcpListener) -> Ws {
    let (tcp, _) = tokio::time::timeout(WAIT, listener.accept())
        .await
        .expect("no client")
        .expect("accept");
    tokio_tungstenite::accept_async(tcp)
        .await
        .expect("handshake")
}

/// The sequence number of a `{"type":"m","data":[seq,pad]}` message, if it is one.
fn seq_of(text: &str) -> Option<u64> {
    let v: serde_json::Value = serde_json::from_str(text).ok()?;
    (v["type"] == "m").then(|| v["data"][0].as_u64()).flatten()
}

fn message(seq: u64, pad: &str) -> Outgoing {
    Outgoing::dynamic("m", Some(&serde_json::json!([seq, pad]))).expect("envelope")
}

/// A config for these tests: an outbox big enough for every message (so nothing is refused),
/// fast reconnects, no heartbeat.
fn config(capacity: usize) -> actix_ws_manager::config::ClientConfig {
    client_test_config().outbox(OutboxPolicy::new(capacity, Overflow::Reject))
}

/// Send messages 0..total, each padded with 1000 bytes; every one is accepted.
async fn send_padded(client: &Client, total: u64) {
    let pad = "x".repeat(1000);
    for seq in 0..total {
        client
            .send_envelope(message(seq, &pad))
            .await
            .expect("accepted");
    }
}

/// Read text frames from `peer` until `count` sequence numbers have arrived; answers them.
async fn read_seqs(peer: &mut Ws, count: usize) -> Vec<u64> {
    let mut seen = Vec::new();
    while seen.len() < count {
        match tokio::time::timeout(WAIT, peer.next())
            .await
            .expect("frame")
        {
            Some(Ok(Message::Text(t))) => seen.extend(seq_of(&t)),
            other => panic!("{other:?}"),
        }
    }
    seen
}

/// Read from `peer` until the sequence number `last` has arrived (skipping non-text frames);
/// answers every sequence number seen. `lost` is the disconnect, for the timeout's message.
async fn read_seqs_up_to(peer: &mut Ws, last: u64, lost: &dyn std::fmt::Debug) -> Vec<u64> {
    let mut seen_second = Vec::new();
    while seen_second.last() != Some(&last) {
        match tokio::time::timeout(WAIT, peer.next())
            .await
            .unwrap_or_else(|_| panic!("only {} arrived after {lost:?}", seen_second.len()))
        {
            Some(Ok(Message::Text(t))) => seen_second.extend(seq_of(&t)),
            Some(Ok(_)) => {}
            other => panic!("{other:?}"),
        }
    }
    seen_second
}

/// Test 1 of the issue: a peer reads 100 messages, stops reading while the client sends 10,000
/// of 1 KiB, then drops the connection. After the reconnect the new peer receives the rest:
/// nothing twice, nothing out of order, and `written + failed + dropped == accepted` with
/// `stats()` agreeing with what the peers saw.
#[actix_rt::test]
async fn every_message_is_written_failed_or_dropped_across_a_lost_connection() {
    const TOTAL: u64 = 10_000;
    let (listener, url) = small_listener();
    let client = connect(&url, config(TOTAL as usize)).expect("client");
    let mut events = client.subscribe_events(256);
    let mut first = accept(&listener).await;
    wait_state(&mut events, "Connected", |s| {
        *s == ConnectionState::Connected
    })
    .await;

    send_padded(&client, TOTAL).await;
    // The first peer reads 100, then stops reading.
    let seen_first = read_seqs(&mut first, 100).await;
    assert!(
        client.stats().outbox_len > 0,
        "the client never backed up: {:?}",
        client.stats()
    );
    // Drop the connection with the client's writes stalled.
    drop(first);
    let lost = wait_state(&mut events, "Disconnected", |s| {
        matches!(s, ConnectionState::Disconnected { .. })
    })
    .await;
    let at_loss = client.stats();
    let mut second = accept(&listener).await;
    wait_state(&mut events, "Connected again", |s| {
        *s == ConnectionState::Connected
    })
    .await;

    let seen_second = read_seqs_up_to(&mut second, TOTAL - 1, &lost).await;
    let stats = client.stats();
    assert!(
        seen_first.windows(2).all(|w| w[0] < w[1]),
        "first peer out of order"
    );
    assert!(
        seen_second.windows(2).all(|w| w[0] < w[1]),
        "second peer out of order"
    );
    assert!(
        seen_first.last() < seen_second.first(),
        "a message arrived twice or out of order across the reconnect"
    );
    assert_eq!(stats.accepted, TOTAL);
    assert_eq!(stats.outbox_len, 0);
    assert_eq!(
        stats.messages_out + stats.failed + stats.dropped,
        stats.accepted,
        "{stats:?}"
    );
    // What was written after the loss is exactly what the second peer received.
    assert_eq!(
        stats.messages_out - at_loss.messages_out,
        seen_second.len() as u64,
        "at loss {at_loss:?}, now {stats:?}"
    );
    // The gap between the peers is what the first peer never read plus the counted drops.
    client.close().await;
}

/// Test 2 of the issue: a request whose frame still waits in the outbox when it fails (the
/// connection is lost, or its timeout passes) is never written afterwards.
#[actix_rt::test]
async fn a_failed_request_is_never_written_later() {
    let (listener, url) = small_listener();
    let client = connect(&url, config(20_000)).expect("client");
    let mut events = client.subscribe_events(256);
    let first = accept(&listener).await;
    wait_state(&mut events, "Connected", |s| {
        *s == ConnectionState::Connected
    })
    .await;

    // Back the client up: the peer never reads.
    let pad = "x".repeat(1000);
    for seq in 0..8_000 {
        client
            .send_envelope(message(seq, &pad))
            .await
            .expect("accepted");
    }
    assert!(client.stats().outbox_len > 0);
    let timed = client.request_envelope(
        Outgoing::dynamic("timed", None).expect("envelope"),
        Duration::from_millis(200),
    );
    assert!(matches!(timed.await, Err(Error::RequestTimeout { .. })));
    let lost = {
        let c = client.clone();
        actix_rt::spawn(async move {
            c.request_envelope(
                Outgoing::dynamic("lost", None).expect("envelope"),
                Duration::from_secs(60),
            )
            .await
        })
    };
    // Let the request reach the outbox before the connection goes.
    let marker = client.stats().accepted;
    for _ in 0..1000 {
        if client.stats().accepted > marker {
            break;
        }
        actix_rt::task::yield_now().await;
    }
    drop(first);
    let failed = tokio::time::timeout(WAIT, lost)
        .await
        .expect("request ended")
        .expect("task");
    assert!(
        matches!(failed, Err(Error::ConnectionLost { .. })),
        "{failed:?}"
    );

    let mut second = accept(&listener).await;
    let mut last = None;
    while last != Some(7_999) {
        match tokio::time::timeout(WAIT, second.next())
            .await
            .expect("frame")
        {
            Some(Ok(Message::Text(t))) => {
                assert!(
                    !t.contains("\"timed\"") && !t.contains("\"lost\""),
                    "a failed request was written: {t}"
                );
                last = seq_of(&t).or(last);
            }
            Some(Ok(_)) => {}
            other => panic!("{other:?}"),
        }
    }
    let stats = client.stats();
    assert_eq!(stats.failed, 2, "{stats:?}");
    assert_eq!(
        stats.messages_out + stats.failed + stats.dropped,
        stats.accepted,
        "{stats:?}"
    );
    client.close().await;
}

/// Back `client` up against a peer that does not read: 5,000 messages of 1 KiB.
async fn back_up(client: &Client) {
    let pad = "x".repeat(1000);
    for seq in 0..5_000 {
        client
            .send_envelope(message(seq, &pad))
            .await
            .expect("accepted");
    }
    assert!(client.stats().outbox_len > 0, "{:?}", client.stats());
}

/// Read until `pred` matches a frame; answers how many data messages came before it.
async fn read_until(ws: &mut Ws, what: &str, pred: impl Fn(&Message) -> bool) -> usize {
    let mut data = 0;
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        match tokio::time::timeout_at(deadline, ws.next()).await {
            Err(_) => panic!("no {what} after {data} data messages"),
            Ok(Some(Ok(m))) if pred(&m) => return data,
            Ok(Some(Ok(Message::Text(_)))) => data += 1,
            Ok(Some(Ok(_))) => {}
            Ok(other) => panic!("no {what} after {data} data messages: {other:?}"),
        }
    }
}

/// Test 3 of the issue: with thousands of messages waiting, a ping from the peer is answered and
/// `client.close()` sends a Close frame (1000), each ahead of the waiting data; a peer's Close
/// is echoed.
#[actix_rt::test]
async fn control_frames_are_never_starved_by_data() {
    let (listener, url) = small_listener();
    let client = connect(&url, config(20_000)).expect("client");
    let mut events = client.subscribe_events(256);
    let mut ws = accept(&listener).await;
    wait_state(&mut events, "Connected", |s| {
        *s == ConnectionState::Connected
    })
    .await;
    back_up(&client).await;
    ws.send(Message::Ping(b"are you there".to_vec().into()))
        .await
        .expect("ping");
    let before_pong = read_until(
        &mut ws,
        "pong",
        |m| matches!(m, Message::Pong(p) if &p[..] == b"are you there"),
    )
    .await;
    assert!(before_pong < 5_000, "the pong waited behind every message");
    // Now close while thousands still wait: the Close frame goes out ahead of them.
    let backlog = client.stats().outbox_len;
    assert!(backlog > 0);
    let closing = {
        let c = client.clone();
        actix_rt::spawn(async move { c.close().await })
    };
    let before_close = read_until(&mut ws, "close", |m| matches!(m, Message::Close(_))).await;
    assert!(before_close < 5_000);
    closing.await.expect("close");
    assert_eq!(client.state(), ConnectionState::Closed);
    let stats = client.stats();
    assert!(
        stats.dropped > 0,
        "the backlog was dropped and counted: {stats:?}"
    );
    assert_eq!(
        stats.messages_out + stats.failed + stats.dropped,
        stats.accepted
    );

    // A peer's Close is echoed with its code while the outbox is full.
    let (listener, url) = small_listener();
    let client = connect(&url, config(20_000)).expect("client");
    let mut events = client.subscribe_events(256);
    let mut ws = accept(&listener).await;
    wait_state(&mut events, "Connected", |s| {
        *s == ConnectionState::Connected
    })
    .await;
    back_up(&client).await;
    ws.send(Message::Close(Some(CloseFrame {
        code: CloseCode::from(4000),
        reason: "bye".into(),
    })))
    .await
    .expect("close");
    let echoed = read_until(
        &mut ws,
        "close echo",
        |m| matches!(m, Message::Close(Some(f)) if u16::from(f.code) == 4000),
    )
    .await;
    assert!(echoed < 5_000);
    client.close().await;
}

/// Test 6 of the issue: dropping the last handle closes the socket with 1000 and stops the
/// client's actors (its event channel ends after `Closed`).
#[actix_rt::test]
async fn dropping_the_last_handle_closes_with_1000() {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let url = format!("ws://{}/raw", listener.local_addr().expect("addr"));
    let client = connect(&url, client_test_config()).expect("client");
    let mut events = client.subscribe_events(16);
    let mut ws = accept(&listener).await;
    wait_state(&mut events, "Connected", |s| {
        *s == ConnectionState::Connected
    })
    .await;
    let copy = client.clone();
    drop(client);
    // Another handle still exists: nothing happens.
    assert_eq!(copy.state(), ConnectionState::Connected);
    drop(copy);
    let code = tokio::time::timeout(WAIT, async {
        loop {
            match ws.next().await {
                Some(Ok(Message::Close(f))) => return f.map(|f| u16::from(f.code)),
                Some(Ok(_)) => continue,
                other => panic!("{other:?}"),
            }
        }
    })
    .await
    .expect("close frame");
    assert_eq!(code, Some(1000));
    wait_state(&mut events, "Closed", |s| *s == ConnectionState::Closed).await;
    assert!(
        tokio::time::timeout(WAIT, events.recv())
            .await
            .expect("event channel ends")
            .is_none(),
        "the actors stopped"
    );
}

/// A `join` made while thousands of messages wait goes out after them (it keeps its place among
/// the user's messages), and a `leave` after that, in order.
#[actix_rt::test]
async fn join_and_leave_keep_their_place_behind_waiting_messages() {
    let (listener, url) = small_listener();
    let client = connect(&url, config(20_000)).expect("client");
    let mut events = client.subscribe_events(256);
    let mut ws = accept(&listener).await;
    wait_state(&mut events, "Connected", |s| {
        *s == ConnectionState::Connected
    })
    .await;
    back_up(&client).await;
    client.join("late").await.expect("join");
    client.leave("late").await.expect("leave");
    let before_join = read_until(
        &mut ws,
        "join",
        |m| matches!(m, Message::Text(t) if t.contains(r#""type":"join""#)),
    )
    .await;
    assert_eq!(before_join, 5_000, "the join overtook waiting messages");
    let between = read_until(
        &mut ws,
        "leave",
        |m| matches!(m, Message::Text(t) if t.contains(r#""type":"leave""#)),
    )
    .await;
    assert_eq!(between, 0);
    client.close().await;
}

/// Under a drop policy a full outbox refuses a request (`OutboxFull`) instead of dropping it
/// where its caller would only learn of it at its timeout; plain messages are dropped and
/// counted. Incoming messages a full subscriber misses are counted apart, so the outgoing sum
/// still holds.
#[actix_rt::test]
async fn requests_are_refused_not_dropped_and_incoming_drops_are_counted_apart() {
    let (listener, url) = small_listener();
    let client = connect(
        &url,
        client_test_config().outbox(OutboxPolicy::new(4, Overflow::DropNewest)),
    )
    .expect("client");
    let mut events = client.subscribe_events(256);
    let mut ws = accept(&listener).await;
    wait_state(&mut events, "Connected", |s| {
        *s == ConnectionState::Connected
    })
    .await;
    // Fill: the peer does not read, so the socket backs up and then the outbox.
    let pad = "x".repeat(1000);
    let mut seq = 0;
    while client.stats().dropped == 0 {
        assert!(seq < 100_000, "the outbox never filled");
        client
            .send_envelope(message(seq, &pad))
            .await
            .expect("accepted");
        seq += 1;
    }
    let refused = client
        .request_envelope(Outgoing::dynamic("q", None).expect("envelope"), WAIT)
        .await;
    assert!(
        matches!(refused, Err(Error::OutboxFull { capacity: 4 })),
        "{refused:?}"
    );

    // A subscriber of capacity 1 that never reads misses all but one message from the peer:
    // counted in `dropped_incoming`, never in the outgoing `dropped`.
    let dropped_out = client.stats().dropped;
    let _slow = client.subscribe_text(1);
    for i in 0..5 {
        ws.send(Message::text(format!("in {i}")))
            .await
            .expect("send");
    }
    for _ in 0..4 {
        common::recv_until(
            &mut events,
            WAIT,
            "SubscriberFull",
            |e| matches!(e, Event::MessageError(m) if m.kind == MessageErrorKind::SubscriberFull),
        )
        .await;
    }
    let stats = client.stats();
    assert_eq!(stats.dropped_incoming, 4, "{stats:?}");
    assert_eq!(stats.dropped, dropped_out, "{stats:?}");
    assert!(in_flight(&stats) <= 256);
    client.close().await;
}

/// The batch the writer holds: accepted, and not yet written, failed, dropped or waiting.
fn in_flight(stats: &actix_ws_manager::client::Stats) -> u64 {
    let settled = stats.messages_out + stats.failed + stats.dropped + stats.outbox_len;
    stats
        .accepted
        .checked_sub(settled)
        .expect("more settled than accepted")
}
