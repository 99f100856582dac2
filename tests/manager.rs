//! The client `Manager`: many connections over several arbiters, the connect-rate limit, and
//! closing. Each test starts its own rooms server on 127.0.0.1:0.

mod common;

use std::time::{Duration, Instant};

use actix_ws_manager::client::{ConnectionState, Manager, ManagerConfig};
use actix_ws_manager::config::{ClientConfig, ServerConfig};
use actix_ws_manager::testkit::TestServer;
use actix_ws_manager::Error;

const WAIT: Duration = Duration::from_secs(10);

/// The kit's server: rooms at `/ws`, echo at `/echo`, on 127.0.0.1.
fn start_server() -> TestServer {
    TestServer::start(ServerConfig::default()).expect("server starts")
}

/// More than awc's default pool limit of 100 (150 connections, spread over 2 arbiters) all
/// reach `Connected`, and the aggregate stats count them.
#[actix_rt::test]
async fn opens_more_than_100_connections() {
    let mut server = start_server();
    let manager = Manager::new(
        ManagerConfig::default()
            .arbiters(Some(2))
            .connect_rate(None),
    )
    .unwrap();
    let mut clients = Vec::new();
    for i in 0..150 {
        clients.push(
            manager
                .connect(format!("c{i}"), &server.url())
                .await
                .unwrap(),
        );
    }
    let waits = clients.iter().map(|c| c.wait_connected(WAIT));
    for r in futures_util::future::join_all(waits).await {
        r.unwrap();
    }
    let stats = manager.stats();
    assert_eq!(stats.connections, 150);
    assert_eq!(stats.states.connected, 150);
    assert_eq!(manager.len(), 150);
    assert_eq!(manager.arbiter_count(), 2);
    assert!(manager.get("c149").is_some());
    assert_eq!(manager.shutdown().await, 150);
    server.stop().await.unwrap();
}

/// The rate limit paces connections: 40 connections at 100 per second cannot all start in
/// less than ~0.39 s (only a lower bound is asserted).
#[actix_rt::test]
async fn connect_rate_is_limited() {
    let mut server = start_server();
    let manager = Manager::new(
        ManagerConfig::default()
            .arbiters(Some(2))
            .connect_rate(Some(100.0)),
    )
    .unwrap();
    let started = Instant::now();
    for i in 0..40 {
        manager
            .connect(format!("c{i}"), &server.url())
            .await
            .unwrap();
    }
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(350),
        "40 at 100/s took {took:?}"
    );
    manager.shutdown().await;
    server.stop().await.unwrap();
}

/// `close(name)` closes one connection, `close_all` closes the rest: every handle ends in
/// `Closed` and the manager tracks none.
#[actix_rt::test]
async fn close_one_and_close_all() {
    let mut server = start_server();
    let manager = Manager::new(ManagerConfig::default().connect_rate(None)).unwrap();
    let mut clients = Vec::new();
    for i in 0..20 {
        clients.push(
            manager
                .connect(format!("c{i}"), &server.url())
                .await
                .unwrap(),
        );
    }
    for c in &clients {
        c.wait_connected(WAIT).await.unwrap();
    }
    assert!(manager.close("c0").await);
    assert!(!manager.close("c0").await, "already gone");
    assert_eq!(clients[0].state(), ConnectionState::Closed);
    assert_eq!(manager.len(), 19);

    assert_eq!(manager.close_all().await, 19);
    assert!(manager.is_empty());
    for c in &clients {
        assert_eq!(c.state(), ConnectionState::Closed, "{}", c.name());
    }
    manager.shutdown().await;
    server.stop().await.unwrap();
}

/// Names are unique, bad URLs fail before connecting, and a bad config is refused.
#[actix_rt::test]
async fn bad_input_is_an_error_not_a_panic() {
    let mut server = start_server();
    let manager = Manager::new(ManagerConfig::default()).unwrap();
    manager.connect("a", &server.url()).await.unwrap();
    assert!(matches!(
        manager.connect("a", &server.url()).await,
        Err(Error::NameTaken(n)) if n == "a"
    ));
    assert!(matches!(
        manager.connect("b", "http://127.0.0.1:1/").await,
        Err(Error::InvalidUrl { .. })
    ));
    assert!(matches!(
        Manager::new(ManagerConfig::default().arbiters(Some(0))),
        Err(Error::Config(_))
    ));
    assert!(matches!(
        Manager::new(ManagerConfig::default().connect_rate(Some(0.0))),
        Err(Error::Config(_))
    ));
    // A rate so small its gap overflows a Duration is a config error, not a panic.
    assert!(matches!(
        Manager::new(ManagerConfig::default().connect_rate(Some(1e-300))),
        Err(Error::Config(_))
    ));
    assert!(matches!(
        Manager::new(
            ManagerConfig::default()
                .client(ClientConfig::default().connect_timeout(Duration::ZERO))
        ),
        Err(Error::Config(_))
    ));
    manager.shutdown().await;
    server.stop().await.unwrap();
}

/// Connections go round-robin over the arbiters (c0 and c2 share a thread, c0 and c1 do not,
/// none is the caller's), `spawn_on` runs a task on a connection's arbiter, and `stats()` sums
/// the per-connection counters.
#[actix_rt::test]
async fn spreads_over_arbiters_and_sums_stats() {
    use actix_ws_manager::protocol;
    let mut server = start_server();
    let manager = Manager::new(
        ManagerConfig::default()
            .arbiters(Some(2))
            .connect_rate(None),
    )
    .unwrap();
    for i in 0..4 {
        let c = manager
            .connect(format!("c{i}"), &server.url())
            .await
            .unwrap();
        c.wait_connected(WAIT).await.unwrap();
    }
    let mut threads = Vec::new();
    for i in 0..4 {
        let (tx, rx) = tokio::sync::oneshot::channel();
        assert!(manager.spawn_on(&format!("c{i}"), async move {
            let _ = tx.send(std::thread::current().id());
        }));
        threads.push(actix_rt::time::timeout(WAIT, rx).await.unwrap().unwrap());
    }
    let me = std::thread::current().id();
    assert!(threads.iter().all(|t| *t != me));
    assert_eq!(threads[0], threads[2]);
    assert_eq!(threads[1], threads[3]);
    assert_ne!(threads[0], threads[1]);
    assert!(!manager.spawn_on("nobody", async {}));

    let before = manager.stats();
    for name in manager.names() {
        let c = manager.get(&name).unwrap();
        let reply = c
            .request_envelope(protocol::echo(&"hi").unwrap(), WAIT)
            .await
            .unwrap();
        assert_eq!(reply.data_as::<String>().unwrap(), "hi");
    }
    let after = manager.stats();
    assert!(after.messages_out >= before.messages_out + 4, "{after:?}");
    assert!(after.messages_in >= before.messages_in + 4, "{after:?}");
    assert!(after.bytes_out > before.bytes_out);
    assert_eq!(after.states.connected, 4);
    manager.shutdown().await;
    server.stop().await.unwrap();
}

/// A connection that fails for good (the server closes with the final code 1008) is forgotten:
/// its name is free again at once, and it is counted in `forgotten`.
#[actix_rt::test]
async fn failed_connections_are_forgotten_and_their_names_reused() {
    use common::peer::{Behaviour, Peer, PeerCmd, PeerEvent};
    let mut peer = Peer::start(Behaviour::default()).await;
    let manager = Manager::new(ManagerConfig::default().arbiters(Some(1))).unwrap();
    let client = manager.connect("feed", &peer.url).await.unwrap();
    client.wait_connected(common::WAIT).await.unwrap();
    assert!(matches!(peer.next().await, PeerEvent::Connected(_)));
    peer.send(PeerCmd::Close(1008));
    let ended = tokio::time::timeout(common::WAIT, client.closed())
        .await
        .expect("client ended");
    assert!(matches!(ended, ConnectionState::Failed { .. }), "{ended:?}");
    // The name is free again right away.
    let again = manager.connect("feed", &peer.url).await.unwrap();
    again.wait_connected(common::WAIT).await.unwrap();
    assert_eq!(manager.len(), 1);
    let stats = manager.stats();
    assert_eq!(stats.forgotten, 1, "{stats:?}");
    assert_eq!(stats.states.connected, 1, "{stats:?}");
    manager.shutdown().await;
    peer.stop().await;
}
