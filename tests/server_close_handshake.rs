//! The server's closing handshake: when the server closes a session (shutdown, slow consumer) it
//! keeps reading until the client's Close arrives (or `close_timeout` passes), so a client that
//! is still sending sees the server's close code, not a reset connection.

mod common;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use actix_ws_manager::config::SlowConsumerPolicy;
use common::raw::{masked, RawWs};
use common::{start_server, test_config, WAIT};
use futures_util::{SinkExt, StreamExt};
use tokio_tungstenite::tungstenite::Message as TMessage;

type Raw =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// Split `ws` and keep sending `text` from a task until the connection refuses it (at most
/// `limit` messages). Answers the read half, a counter of messages sent, and a stop flag.
fn keep_sending(
    ws: Raw,
    text: String,
    limit: u64,
) -> (
    futures_util::stream::SplitStream<Raw>,
    Arc<AtomicU64>,
    Arc<AtomicBool>,
) {
    let (mut tx, rx) = ws.split();
    let sent = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let (s, st) = (sent.clone(), stop.clone());
    actix_rt::spawn(async move {
        while s.load(Ordering::Relaxed) < limit && !st.load(Ordering::Relaxed) {
            if tx.send(TMessage::text(text.clone())).await.is_err() {
                break;
            }
            s.fetch_add(1, Ordering::Relaxed);
        }
    });
    (rx, sent, stop)
}

/// Read until a Close frame arrives; answers its code, or `None` when the connection ended
/// without one (a reset, which is what this file proves does not happen).
async fn close_code(rx: &mut futures_util::stream::SplitStream<Raw>) -> Option<u16> {
    let deadline = tokio::time::Instant::now() + WAIT;
    for _ in 0..10_000_000u64 {
        match tokio::time::timeout_at(deadline, rx.next()).await {
            Err(_) => panic!("no close frame within {WAIT:?}"),
            Ok(Some(Ok(TMessage::Close(f)))) => return f.map(|f| u16::from(f.code)),
            Ok(Some(Ok(_))) => continue,
            Ok(Some(Err(e))) => {
                eprintln!("read error before any close frame: {e}");
                return None;
            }
            Ok(None) => return None,
        }
    }
    panic!("endless stream");
}

/// A client that keeps sending while the server shuts down reads the server's 1001.
#[actix_rt::test]
async fn shutdown_reaches_a_client_that_is_still_sending() {
    for round in 0..5 {
        let server = start_server(test_config().close_timeout(Duration::from_secs(3)));
        let (ws, _) = tokio_tungstenite::connect_async(server.url())
            .await
            .expect("connect");
        // Unknown-type messages: each is answered with an error, so data flows both ways.
        let (mut rx, sent, stop) = keep_sending(
            ws,
            format!(r#"{{"type":"x{}"}}"#, "y".repeat(10_000)),
            2_000_000,
        );
        // Let traffic build up in both directions.
        let mut seen = 0;
        while seen < 200 {
            match tokio::time::timeout(WAIT, rx.next()).await {
                Ok(Some(Ok(_))) => seen += 1,
                other => panic!("no traffic: {other:?}"),
            }
        }
        let rooms = server.rooms().clone();
        let shutdown = actix_rt::spawn(async move { rooms.shutdown().await });
        let code = close_code(&mut rx).await;
        stop.store(true, Ordering::Relaxed);
        assert_eq!(
            code,
            Some(1001),
            "round {round}: sent {}",
            sent.load(Ordering::Relaxed)
        );
        let left = shutdown.await.expect("join").expect("shutdown");
        assert_eq!(left, 0, "every session gone after the handshake");
    }
}

/// A slow consumer that is still sending, and reads again within `close_timeout`, finds the
/// server's 1013 behind what was already on its way.
#[actix_rt::test]
async fn slow_consumer_close_reaches_a_client_that_is_still_sending() {
    let config = test_config()
        .session_queue(8)
        .slow_consumer(SlowConsumerPolicy::Disconnect)
        .close_timeout(Duration::from_secs(5));
    let server = start_server(config);
    let (mut ws, _) = tokio_tungstenite::connect_async(server.url())
        .await
        .expect("connect");
    ws.send(TMessage::text(r#"{"type":"join","room":"r","id":1}"#))
        .await
        .expect("join");
    // welcome, joined
    for _ in 0..2 {
        tokio::time::timeout(WAIT, ws.next()).await.expect("reply");
    }
    // The client stops reading and publishes without end: its own copies overflow its queue.
    let pad = "p".repeat(4000);
    let (mut rx, _sent, stop) = keep_sending(
        ws,
        format!(r#"{{"type":"publish","room":"r","data":"{pad}"}}"#),
        200_000,
    );
    let rooms = server.rooms().clone();
    // The close frame is the event: the hub counts the eviction before it tells the session.
    let code = close_code(&mut rx).await;
    stop.store(true, Ordering::Relaxed);
    assert_eq!(code, Some(1013));
    let stats = rooms.stats().await.expect("stats");
    assert!(
        stats.slow_consumer_disconnects >= 1,
        "never evicted: {stats:?}"
    );
}

/// After a protocol violation the server sends its Close 1002 and still reads the client's
/// answering Close (skipping every other frame after the bad one, without buffering it): the
/// handshake completes and the server ends the TCP connection with an orderly FIN at once, not
/// after `close_timeout` (5 s here). A bad frame's boundary is known from its header, so the
/// frames after it are found: reserved bits (Autobahn 3.*), reserved opcodes (4.*), an oversize
/// or fragmented ping (2.5, 5.1), a continuation with nothing to continue (5.9). A Close whose
/// own payload is bad (7.3.2, 7.3.6, 7.5.1, 7.9.*) is the client's Close already: answered with 1002,
/// then the end. Before the frame layer resumed parsing after a violation, every byte after
/// the bad frame was discarded and the connection ended only when `close_timeout` cut it.
#[actix_rt::test]
async fn after_a_violation_the_clients_close_completes_the_handshake() {
    const CLOSE_TIMEOUT: Duration = Duration::from_secs(5);
    const ENDED_WITHIN: Duration = Duration::from_secs(1);
    let server = start_server(test_config().close_timeout(CLOSE_TIMEOUT));
    let mut rsv = masked(0x1, b"Hello, world!");
    rsv[0] |= 0x40;
    let then_close = |bad: Vec<u8>| {
        let mut wire = bad;
        // Frames the client sent before it read our Close: skipped.
        wire.extend_from_slice(&masked(0x1, b"after the fault"));
        wire.extend_from_slice(&masked(0x9, b"ping"));
        wire.extend_from_slice(&masked(0x8, &1000u16.to_be_bytes()));
        wire
    };
    let mut fragmented_ping = masked(0x9, b"p");
    fragmented_ping[0] &= 0x7f;
    let cases = [
        ("reserved bits", then_close(rsv)),
        ("reserved opcode 3", then_close(masked(0x3, b""))),
        ("reserved opcode 11", then_close(masked(0xB, b"x"))),
        ("ping of 126 bytes", then_close(masked(0x9, &[b'*'; 126]))),
        ("fragmented ping", then_close(fragmented_ping)),
        ("stray continuation", then_close(masked(0x0, b"c"))),
        ("close of one byte", masked(0x8, &[0x03])),
        ("close code 1005", masked(0x8, &1005u16.to_be_bytes())),
        ("close of 126 bytes", masked(0x8, &[b'*'; 126])),
        ("close reason not UTF-8", masked(0x8, &[0x03, 0xe8, 0xff])),
    ];
    for (what, wire) in cases {
        let mut ws = RawWs::connect(server.local_addr(), "/echo").await;
        let t = std::time::Instant::now();
        ws.write(&wire).await;
        let close = ws.frame().await.expect("the server's close");
        assert_eq!(close.close_code(), Some(1002), "{what}: {close:?}");
        let end = ws.end().await;
        let took = t.elapsed();
        assert!(end.is_ok(), "{what}: the connection was reset: {end:?}");
        assert!(took < ENDED_WITHIN, "{what}: ended after {took:?}");
    }
    server.shutdown().await.expect("shutdown");
}
