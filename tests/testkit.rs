//! The fault-injection kit itself, measured: a throttled link moves about the bytes per second it
//! promises; a blackhole forwards nothing and keeps both sockets open, and lets everything
//! through once healed; a reset ends live connections; a refusing proxy turns new ones away;
//! `TestServer::restart` keeps the port, `kill` drops connections without a Close; the wait
//! helpers fail with the last state seen.

mod common;

use std::time::{Duration, Instant};

use actix_ws_manager::client::{connect, ConnectionState};
use actix_ws_manager::testkit::{next_message, FaultProxy, StateRecorder, TestServer};
use actix_ws_manager::Error;
use common::{client_test_config, start_server, test_config, WAIT};
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
    let server = TestServer::start(test_config()).expect("server");
    let proxy = FaultProxy::start(server.addr()).await.expect("proxy");
    let client = connect(&proxy.url("/ws"), client_test_config()).expect("client");
    let mut states = StateRecorder::attach(&client);
    states.wait_connected(WAIT).await.expect("connected");
    proxy.refuse(true);
    proxy.reset();
    states.wait_disconnected(WAIT).await.expect("disconnected");
    // While refusing, attempts fail (they are retried).
    states
        .wait_for(
            "a refused attempt",
            WAIT,
            |s| matches!(s, ConnectionState::Reconnecting { attempt, .. } if *attempt >= 2),
        )
        .await
        .expect("refused attempts");
    let accepted = proxy.connections();
    proxy.refuse(false);
    states.wait_connected(WAIT).await.expect("connected again");
    assert_eq!(proxy.connections(), accepted + 1);
    client.close().await;
}

/// `restart()` keeps the port: a client given the URL once is told 1001, reconnects to the same
/// address and finds a fresh server (its sessions counted from zero); `kill()` drops connections
/// without a Close frame (1006), and `resume()` brings the port back.
#[actix_rt::test]
async fn restart_keeps_the_port_and_kill_sends_no_close() {
    let mut server = TestServer::start(test_config()).expect("server");
    let addr = server.addr();
    let client = connect(&server.url(), client_test_config()).expect("client");
    let mut states = StateRecorder::attach(&client);
    states.wait_connected(WAIT).await.expect("connected");
    server.wait_sessions(1, WAIT).await.expect("one session");

    server.restart().await.expect("restart");
    assert_eq!((server.addr(), server.starts()), (addr, 2));
    assert_eq!(states.wait_disconnected(WAIT).await.expect("told"), 1001);
    states
        .wait_connected(WAIT)
        .await
        .expect("back on the same port");
    server
        .wait_sessions(1, WAIT)
        .await
        .expect("one session again");

    server.kill().await;
    assert!(!server.is_running());
    assert_eq!(server.sessions(), 0);
    assert_eq!(
        states.wait_disconnected(WAIT).await.expect("dropped"),
        1006,
        "a killed server sends no Close"
    );
    // Nothing listens while killed: attempts are refused.
    states
        .wait_for("a refused attempt", WAIT, |s| {
            matches!(s, ConnectionState::Reconnecting { cause, .. } if cause.contains("refused"))
        })
        .await
        .expect("refused while down");
    server.resume().await.expect("resume");
    assert_eq!((server.addr(), server.starts()), (addr, 3));
    states
        .wait_connected(WAIT)
        .await
        .expect("back after the kill");
    assert_eq!(client.stats().reconnects, 2);
    client.close().await;
    server.wait_sessions(0, WAIT).await.expect("closed");
    server.stop().await.expect("stop");
}

/// The wait helpers fail in time and say what they saw: a state never reached names the last
/// state; a message that never comes is a timeout, not a hang.
#[actix_rt::test]
async fn waits_time_out_with_what_they_saw() {
    let server = TestServer::start(test_config()).expect("server");
    let client = connect(&server.echo_url(), client_test_config()).expect("client");
    let mut states = StateRecorder::attach(&client);
    states.wait_connected(WAIT).await.expect("connected");
    let short = Duration::from_millis(200);
    match states.wait_disconnected(short).await {
        Err(Error::Timeout { what, within, last }) => {
            assert_eq!((what.as_str(), within), ("disconnected", short));
            assert_eq!(last, ConnectionState::Connected.to_string());
        }
        other => panic!("{other:?}"),
    }
    let mut texts = client.subscribe_text(4);
    assert!(matches!(
        next_message(&mut texts, short).await,
        Err(Error::Timeout { .. })
    ));
    client.send_text("back").await.expect("send");
    let echoed = next_message(&mut texts, WAIT).await.expect("echo");
    assert_eq!(&*echoed.data, "back");
    assert_eq!(states.connects(), 1);
    client.close().await;
}
