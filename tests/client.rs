//! The client against a real actix-web peer on 127.0.0.1: messages and their limits. Typed round
//! trips, fragments, the size and UTF-8 limits, request/reply, bad input, verbatim and injected
//! text, and frames that arrive with the handshake response. Reconnecting is in
//! `client_reconnect.rs`, the outbox in `client_outbox.rs`, dead-peer detection in
//! `client_heartbeat.rs`. States and messages are awaited with the test kit (`StateRecorder`,
//! `next_message`), never with a sleep.

mod common;

use std::time::{Duration, Instant};

use actix_ws::Item;
use actix_ws_manager::client::{connect, ConnectionState, MessageErrorKind};
use actix_ws_manager::testkit::{next_message, StateRecorder};
use actix_ws_manager::{Error, WireMessage};
use bytes::Bytes;
use common::client::{chat, close_and_replay, Chat};
use common::peer::{Behaviour, Peer, PeerCmd, PeerEvent};
use common::{client_test_config, WAIT};
use serde::{Deserialize, Serialize};

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
