//! The fault-injection kit itself, measured: a throttled link moves about the bytes per second it
//! promises; a blackhole forwards nothing and keeps both sockets open, and lets everything
//! through once healed; a reset ends live connections; a refusing proxy turns new ones away.

mod common;

use std::time::{Duration, Instant};

use actix_ws_manager::client::{connect, ConnectionState};
use actix_ws_manager::testkit::FaultProxy;
use common::{client_test_config, start_server, test_config, wait_state, WAIT};
use futures_util::{SinkExt, StreamExt};
use tokio_tungstenite::tungstenite::Message;

/// 64 KiB echoed through a link throttled to 32 KiB/s each way take about 2 s, not about 0.
#[actix_rt::test]
async fn throttle_moves_about_the_promised_rate() {
    let server = start_server(test_config().max_message_size(128 * 1024));
    let proxy = FaultProxy::start(server.local_addr()).await.expect("proxy");
    let (mut ws, _) = tokio_tungstenite::connect_async(proxy.url("/echo"))
        .await
        .expect("connect");
    proxy.throttle(32 * 1024);
    let started = Instant::now();
    ws.send(Message::binary(vec![7u8; 64 * 1024]))
        .await
        .expect("send");
    let back = tokio::time::timeout(Duration::from_secs(20), ws.next())
        .await
        .expect("echo in time");
    assert!(matches!(back, Some(Ok(Message::Binary(b))) if b.len() == 64 * 1024));
    let took = started.elapsed();
    // Each way is paced (the halves overlap): about 2 s at 32 KiB/s, allowing for scheduling.
    assert!(
        took >= Duration::from_millis(1_500) && took <= Duration::from_secs(6),
        "64 KiB each way at 32 KiB/s took {took:?}"
    );
    assert!(proxy.bytes_up() >= 64 * 1024 && proxy.bytes_down() >= 64 * 1024);
    server.shutdown().await.expect("shutdown");
}

/// A blackholed link forwards zero bytes (waiting here is the thing under test) while both
/// sockets stay open; `pass()` lets what was held through, in order.
#[actix_rt::test]
async fn blackhole_forwards_nothing_then_heals() {
    let server = start_server(test_config());
    let proxy = FaultProxy::start(server.local_addr()).await.expect("proxy");
    let (mut ws, _) = tokio_tungstenite::connect_async(proxy.url("/echo"))
        .await
        .expect("connect");
    proxy.blackhole();
    let (up, down) = (proxy.bytes_up(), proxy.bytes_down());
    for i in 0..3 {
        ws.send(Message::text(format!("held {i}")))
            .await
            .expect("send");
    }
    assert!(
        tokio::time::timeout(Duration::from_millis(500), ws.next())
            .await
            .is_err(),
        "nothing may come back through a blackhole"
    );
    assert_eq!((proxy.bytes_up(), proxy.bytes_down()), (up, down));
    assert_eq!(
        server.rooms().sessions(),
        1,
        "the server's socket stays open"
    );
    proxy.pass();
    for i in 0..3 {
        match tokio::time::timeout(WAIT, ws.next()).await.expect("healed") {
            Some(Ok(Message::Text(t))) => assert_eq!(t.as_str(), format!("held {i}")),
            other => panic!("{other:?}"),
        }
    }
    server.shutdown().await.expect("shutdown");
}

/// `reset()` ends a live connection (the client sees it lost and reconnects through the proxy);
/// `refuse(true)` turns new connections away until `refuse(false)`.
#[actix_rt::test]
async fn reset_and_refuse() {
    let server = start_server(test_config());
    let proxy = FaultProxy::start(server.local_addr()).await.expect("proxy");
    let client = connect(&proxy.url("/ws"), client_test_config()).expect("client");
    let mut events = client.subscribe_events(64);
    wait_state(&mut events, "Connected", |s| {
        *s == ConnectionState::Connected
    })
    .await;
    proxy.refuse(true);
    proxy.reset();
    wait_state(&mut events, "Disconnected", |s| {
        matches!(s, ConnectionState::Disconnected { .. })
    })
    .await;
    // While refusing, attempts fail (they are retried).
    wait_state(
        &mut events,
        "a refused attempt",
        |s| matches!(s, ConnectionState::Reconnecting { attempt, .. } if *attempt >= 2),
    )
    .await;
    let accepted = proxy.connections();
    proxy.refuse(false);
    wait_state(&mut events, "Connected again", |s| {
        *s == ConnectionState::Connected
    })
    .await;
    assert_eq!(proxy.connections(), accepted + 1);
    client.close().await;
    server.shutdown().await.expect("shutdown");
}
