//! The client library's own recovery across nodes (issue 20, test 4 with the real client): a
//! client whose node stops reconnects, through a switch that now leads to another node, rejoins
//! with its last position by itself, and gets from the room history in Redis everything
//! published meanwhile, once each, in order, while a publisher keeps going. (When the replay
//! is larger than the member's session queue, the queue drops some of it and the client fills
//! those gaps with `history` requests: more `Event::Recovery`s, each `recovered`.)

mod common;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use actix_ws_manager::client::{self, Inbound};
use actix_ws_manager::config::{HistoryConfig, ServerConfig};
use actix_ws_manager::protocol::{Joined, RoomMessage};
use actix_ws_manager::testkit::{next_matching, TestServer};
use common::cluster::{node, TIMEOUT};
use common::{client_test_config, test_config, RedisServer, WAIT};
use serde_json::json;
use tokio::sync::mpsc::Receiver;

/// A TCP forwarder whose target can change: what a load balancer does when a node is gone.
struct Switch {
    addr: SocketAddr,
    target: Arc<Mutex<SocketAddr>>,
}

impl Switch {
    /// Listen on a free 127.0.0.1 port, forwarding each new connection to `target`.
    async fn start(target: SocketAddr) -> Switch {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let target = Arc::new(Mutex::new(target));
        let to = target.clone();
        actix_rt::spawn(async move {
            while let Ok((mut inbound, _)) = listener.accept().await {
                let now = *to.lock().expect("target");
                actix_rt::spawn(async move {
                    if let Ok(mut outbound) = tokio::net::TcpStream::connect(now).await {
                        let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                    }
                });
            }
        });
        Switch { addr, target }
    }

    /// New connections go to `target` from now on.
    fn to(&self, target: SocketAddr) {
        *self.target.lock().expect("target") = target;
    }
}

/// Numbers `{"n":k}` of the room messages up to the one numbered `last`, each checked to be at
/// offset k.
async fn numbers_until(rx: &mut Receiver<Inbound<RoomMessage>>, last: u64) -> Vec<u64> {
    let mut got = Vec::new();
    while got.last() != Some(&last) {
        let m = next_matching(rx, "the next room message", WAIT, |_| true)
            .await
            .unwrap_or_else(|e| panic!("{e}; got {got:?}"));
        let n = m.data.0["n"].as_u64().expect("numbered");
        assert_eq!(m.offset, Some(n), "offsets count the room's publications");
        got.push(n);
    }
    got
}

#[actix_rt::test]
async fn the_client_recovers_on_another_node_by_itself() {
    const LAST: u64 = 3000;
    let history = HistoryConfig::default().size(5000).recover_limit(5000);
    let config: ServerConfig = test_config().history(history);
    let redis = RedisServer::start();
    let mut a: TestServer = node(redis.url(), "a", TIMEOUT, config.clone());
    let b = node(redis.url(), "b", TIMEOUT, config);
    let switch = Switch::start(a.addr()).await;
    let client =
        client::connect(&format!("ws://{}/ws", switch.addr), client_test_config()).expect("client");
    let mut messages = client.subscribe::<RoomMessage>(8192);
    let mut events = client.subscribe_events(256);
    let mut joined = client.subscribe::<Joined>(8);
    client.join("c").await.expect("join");
    next_matching(&mut joined, "joined", WAIT, |j| {
        j.room.as_deref() == Some("c")
    })
    .await
    .expect("joined");
    let rooms = b.rooms().expect("b").clone();
    for n in 1..=10u64 {
        rooms
            .publish_json("c", &json!({ "n": n }))
            .await
            .expect("publish");
    }
    assert_eq!(
        numbers_until(&mut messages, 10).await,
        (1..=10).collect::<Vec<_>>()
    );

    // Node A goes; the client's next connection leads to B. B's publisher keeps going, through
    // the client's reconnect and rejoin.
    switch.to(b.addr());
    let publisher = actix_rt::spawn(async move {
        for n in 11..=LAST {
            rooms
                .publish_json("c", &json!({ "n": n }))
                .await
                .expect("publish");
        }
    });
    a.stop().await.expect("node a stops");
    assert_eq!(
        numbers_until(&mut messages, LAST).await,
        (11..=LAST).collect::<Vec<_>>(),
        "every publication once, in order, across the node change"
    );
    publisher.await.expect("publisher");
    let recoveries = common::client::recoveries(&mut events);
    eprintln!("recoveries (recovered, missed, reason): {recoveries:?}");
    assert!(!recoveries.is_empty(), "the rejoin recovered");
    assert!(recoveries.iter().all(|r| r.0), "{recoveries:?}");
    assert_eq!(client.stats().unrecoverable, 0);
    assert!(b.stats().await.expect("stats").recovered >= 1);
    client.close().await;
}
