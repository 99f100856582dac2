//! The server's closing handshake: when the server closes a session (shutdown, slow consumer) it
//! keeps reading until the client's Close arrives (or `close_timeout` passes), so a client that
//! is still sending sees the server's close code, not a reset connection.

mod common;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use actix_ws_manager::config::SlowConsumerPolicy;
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
