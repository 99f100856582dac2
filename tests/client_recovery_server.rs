//! The client's recovery against the real rooms server (`TestServer`, room history on), through
//! the test kit's `FaultProxy`: a member cut off (blackhole, then reset) while others publish gets every publication
//! once, in order, when it rejoins; a member whose session queue dropped messages under
//! `DropNewest` gets them through the gap fill; more missed than a rejoin replays are read from
//! the history; a restart is told `epoch_changed`; a publisher that keeps going during the
//! rejoin causes no gap and no duplicate (issue 20, scenarios 1, 3 and 5 from the client's
//! side).

mod common;

use std::time::Duration;

use actix_ws_manager::client::{self, Client, Event, Inbound};
use actix_ws_manager::config::{HistoryConfig, ServerConfig, SlowConsumerPolicy};
use actix_ws_manager::protocol::{Joined, RoomMessage};
use actix_ws_manager::testkit::{next_matching, FaultProxy, TestServer};
use common::client::recoveries;
use common::{client_test_config, WAIT};
use serde_json::json;
use tokio::sync::mpsc::Receiver;

/// A member of `room` through `proxy`, with its room messages and events.
async fn member(
    proxy: &FaultProxy,
    room: &str,
) -> (Client, Receiver<Inbound<RoomMessage>>, Receiver<Event>) {
    let client = client::connect(&proxy.url("/ws"), client_test_config()).expect("client");
    let messages = client.subscribe::<RoomMessage>(8192);
    let events = client.subscribe_events(256);
    let mut joined = client.subscribe::<Joined>(8);
    client.join(room).await.expect("join");
    next_matching(&mut joined, "joined", WAIT, |j| {
        j.room.as_deref() == Some(room)
    })
    .await
    .expect("joined");
    (client, messages, events)
}

/// Receive room messages into `got` until the one numbered `last` (true), or until none comes
/// `within` (false).
async fn receive_until(
    rx: &mut Receiver<Inbound<RoomMessage>>,
    got: &mut Vec<u64>,
    last: u64,
    within: Duration,
) -> bool {
    loop {
        let Ok(Some(m)) = tokio::time::timeout(within, rx.recv()).await else {
            return false;
        };
        let n = m.data.0["n"].as_u64().expect("numbered");
        assert_eq!(
            m.offset,
            Some(n),
            "the room's offsets count its publications"
        );
        got.push(n);
        if n >= last {
            return true;
        }
    }
}

/// The numbers of the room messages up to the one numbered `last`.
async fn numbers_until(rx: &mut Receiver<Inbound<RoomMessage>>, last: u64) -> Vec<u64> {
    let mut got = Vec::new();
    assert!(
        receive_until(rx, &mut got, last, WAIT).await,
        "got only {got:?}"
    );
    got
}

#[actix_rt::test]
async fn a_member_cut_off_gets_every_publication_once_in_order_after_it_rejoins() {
    let mut server = TestServer::start(ServerConfig::default()).expect("server");
    let proxy = FaultProxy::start(server.addr()).await.expect("proxy");
    let (client, mut messages, mut events) = member(&proxy, "r").await;
    let rooms = server.rooms().expect("running");
    for n in 1..=10u64 {
        rooms
            .publish_json("r", &json!({ "n": n }))
            .await
            .expect("publish");
    }
    assert_eq!(
        numbers_until(&mut messages, 10).await,
        (1..=10).collect::<Vec<_>>()
    );

    // Cut off: the link goes silent while 80 are published (the server's writes vanish), then
    // it is reset; reconnecting is refused until the proxy passes traffic again.
    proxy.blackhole();
    for n in 11..=90u64 {
        rooms
            .publish_json("r", &json!({ "n": n }))
            .await
            .expect("publish");
    }
    proxy.refuse(true);
    proxy.reset();
    // The old connection is gone before traffic passes again (nothing of 11..=90 reaches it).
    common::wait_state(&mut events, "reconnecting", common::client::is_reconnecting).await;
    proxy.pass();
    proxy.refuse(false);
    assert_eq!(
        numbers_until(&mut messages, 90).await,
        (11..=90).collect::<Vec<_>>()
    );
    // Live ones after the replay follow on.
    rooms
        .publish_json("r", &json!({ "n": 91 }))
        .await
        .expect("publish");
    assert_eq!(numbers_until(&mut messages, 91).await, vec![91]);
    let seen = recoveries(&mut events);
    assert!(seen.contains(&(true, 80, None)), "{seen:?}");
    let stats = client.stats();
    assert_eq!(stats.unrecoverable, 0, "{stats:?}");
    client.close().await;
    server.stop().await.expect("stop");
}

#[actix_rt::test]
async fn a_member_whose_queue_dropped_messages_gets_them_through_the_gap_fill() {
    let config = ServerConfig::default()
        .session_queue(4)
        .slow_consumer(SlowConsumerPolicy::DropNewest)
        .tcp_send_buffer(Some(16 * 1024))
        .history(HistoryConfig::default().size(5000).max_bytes(16 << 20));
    let mut server = TestServer::start(config).expect("server");
    let proxy = FaultProxy::start(server.addr()).await.expect("proxy");
    let (client, mut messages, mut events) = member(&proxy, "r").await;
    let rooms = server.rooms().expect("running");
    // Incompressible: with permessage-deflate a repeated pad shrinks about 30 times, so the
    // socket buffers would hold over a thousand publications, more than the client holds
    // back behind a gap (1024) while its fill is on the way, and it would give the fill up.
    let pad = common::incompressible(1024, 3);

    // The link stops carrying: socket buffers fill, then the session queue, which drops.
    proxy.blackhole();
    let mut last = 0u64;
    for _batch in 0..20 {
        for _ in 0..200 {
            last += 1;
            rooms
                .publish_json("r", &json!({ "n": last, "pad": pad }))
                .await
                .expect("publish");
        }
        // More than one `history` answer carries (`recover_limit`, 300): the fill asks again.
        if server.stats().await.expect("stats").dropped > 700 {
            break;
        }
    }
    assert!(
        server.stats().await.expect("stats").dropped > 0,
        "the member's queue dropped"
    );
    proxy.pass();

    // The newest were dropped too: a later publication shows the gap. (It may itself be
    // dropped while the queue still drains, so publish until one arrives.)
    let mut got = Vec::new();
    for _attempt in 0..20 {
        last += 1;
        rooms
            .publish_json("r", &json!({ "n": last }))
            .await
            .expect("publish");
        if receive_until(&mut messages, &mut got, last, Duration::from_secs(2)).await {
            break;
        }
    }
    assert_eq!(
        got,
        (1..=last).collect::<Vec<_>>(),
        "every publication once, in order"
    );
    let stats = client.stats();
    let hub = server.stats().await.expect("stats");
    eprintln!(
        "DropNewest member: {last} published, {} dropped by its session queue, recovered through {} gap fill(s), {} duplicates",
        hub.dropped, stats.recovered, stats.duplicates
    );
    assert!(stats.recovered > 0, "{stats:?}");
    assert_eq!(stats.unrecoverable, 0, "{stats:?}");
    assert!(recoveries(&mut events).iter().all(|r| r.0));
    client.close().await;
    server.stop().await.expect("stop");
}

#[actix_rt::test]
async fn after_a_server_restart_the_member_is_told_epoch_changed_and_counts_from_the_new_epoch() {
    let mut server = TestServer::start(ServerConfig::default()).expect("server");
    let proxy = FaultProxy::start(server.addr()).await.expect("proxy");
    let (client, mut messages, mut events) = member(&proxy, "r").await;
    for n in 1..=5u64 {
        let rooms = server.rooms().expect("running");
        rooms
            .publish_json("r", &json!({ "n": n }))
            .await
            .expect("publish");
    }
    assert_eq!(
        numbers_until(&mut messages, 5).await,
        (1..=5).collect::<Vec<_>>()
    );

    server.restart().await.expect("restart");
    let lost = common::recv_until(&mut events, WAIT, "the rejoin's answer", |e| {
        matches!(e, Event::Recovery { .. })
    })
    .await;
    match lost {
        Event::Recovery {
            recovered, reason, ..
        } => assert_eq!(
            (recovered, reason.as_deref()),
            (false, Some("epoch_changed"))
        ),
        _ => unreachable!(),
    }
    // The new history counts from 1 again, and its first publication is not taken for a
    // duplicate of the old one.
    let rooms = server.rooms().expect("running");
    rooms
        .publish_json("r", &json!({ "n": 1 }))
        .await
        .expect("publish");
    assert_eq!(numbers_until(&mut messages, 1).await, vec![1]);
    assert_eq!(client.stats().unrecoverable, 1);
    client.close().await;
    server.stop().await.expect("stop");
}

#[actix_rt::test]
async fn more_missed_than_a_rejoin_replays_are_read_from_the_history_page_by_page() {
    // 500 missed: more than `recover_limit` (300), within `size`. The rejoin is answered
    // `too_many`; the client reads the 500 with two `history` requests.
    let config = ServerConfig::default().history(HistoryConfig::default().size(1000));
    let mut server = TestServer::start(config).expect("server");
    let proxy = FaultProxy::start(server.addr()).await.expect("proxy");
    let (client, mut messages, mut events) = member(&proxy, "r").await;
    let rooms = server.rooms().expect("running").clone();
    rooms
        .publish_json("r", &json!({ "n": 1 }))
        .await
        .expect("publish");
    assert_eq!(numbers_until(&mut messages, 1).await, vec![1]);

    proxy.refuse(true);
    proxy.reset();
    for n in 2..=501u64 {
        rooms
            .publish_json("r", &json!({ "n": n }))
            .await
            .expect("publish");
    }
    proxy.refuse(false);
    assert_eq!(
        numbers_until(&mut messages, 501).await,
        (2..=501).collect::<Vec<_>>()
    );
    rooms
        .publish_json("r", &json!({ "n": 502 }))
        .await
        .expect("publish");
    assert_eq!(numbers_until(&mut messages, 502).await, vec![502]);
    let seen = recoveries(&mut events);
    assert!(seen.contains(&(true, 500, None)), "{seen:?}");
    let stats = client.stats();
    assert_eq!(
        (stats.unrecoverable, stats.accepted),
        (0, 2),
        "two pages: {stats:?}"
    );
    client.close().await;
    server.stop().await.expect("stop");
}

#[actix_rt::test]
async fn a_member_cut_off_while_a_publisher_keeps_going_misses_nothing_and_repeats_nothing() {
    const N: u64 = 2000;
    // A history that holds everything, so that what the member misses depends on nothing but
    // the client's recovery.
    let history = HistoryConfig::default().size(5000).recover_limit(5000);
    let config = ServerConfig::default().history(history);
    let mut server = TestServer::start(config).expect("server");
    let proxy = FaultProxy::start(server.addr()).await.expect("proxy");
    let (client, mut messages, _events) = member(&proxy, "r").await;
    let rooms = server.rooms().expect("running").clone();
    let publisher = actix_rt::spawn(async move {
        for n in 1..=N {
            rooms
                .publish_json("r", &json!({ "n": n }))
                .await
                .expect("publish");
            if n % 50 == 0 {
                // Let the member's session write between bursts.
                actix_rt::task::yield_now().await;
            }
        }
    });
    let mut got = Vec::new();
    assert!(receive_until(&mut messages, &mut got, 100, WAIT).await);
    // Cut while publishing goes on; the reconnect (50 ms) rejoins from the last delivered.
    proxy.reset();
    assert!(
        receive_until(&mut messages, &mut got, N, WAIT).await,
        "got {} of {N}",
        got.len()
    );
    publisher.await.expect("publisher");
    let stats = client.stats();
    eprintln!(
        "publisher kept going: {N} received once each, in order, over {} reconnect(s), {} recovered",
        stats.reconnects, stats.recovered
    );
    let first_wrong = (1..=N).zip(&got).find(|(want, n)| want != *n);
    assert_eq!((got.len(), first_wrong), (N as usize, None), "{stats:?}");
    assert!(
        stats.reconnects >= 1 && stats.unrecoverable == 0,
        "{stats:?}"
    );
    client.close().await;
    server.stop().await.expect("stop");
}
