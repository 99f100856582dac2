//! Every path from the socket to user code is bounded: a raw server floods the client as fast
//! as TCP takes it, and whatever the subscriber does (an actor that takes 1 ms per message on
//! its own arbiter, a channel nobody reads, a Router busy decoding 64 KiB messages into a typed
//! struct), the client's resident memory stays bounded and what was not delivered is counted.
//! Subscriptions are bounded by bytes as well as by count, and so is the set of on-connect
//! messages. Backpressure and the control path are in `client_backpressure.rs`.
//!
//! The tests measure this process's RSS, so they take turns (`SERIAL`).

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::prelude::*;
use actix_ws_manager::client::{connect, Overflow};
use common::flood::{
    accept_raw, flood, flood_config, flood_exactly, routed, sample_peak_rss, slow_actor,
    text_frame, tick, wait_for_read_pause, Bulk, Flood, Tick, BULK_VALUES, SERIAL,
};
use common::oversize::vm_rss_kb;
use common::{client_test_config, WAIT};
use tokio::net::TcpListener;

/// Peak RSS growth allowed while a flood runs.
const MAX_GROWTH_KB: u64 = 64 * 1024;

/// The flood's frames: 1 KiB ticks.
fn tick_frame(seq: u64) -> Vec<u8> {
    tick(seq, 1000)
}

const GIB: u64 = 1 << 30;
/// A flood that has not finished after this long fails the test; it is the loops' bound, far
/// above what a busy machine needs (the flood is fixed in size: how much is sent never depends
/// on the machine's speed).
const FLOOD_LIMIT: Duration = Duration::from_secs(180);

/// Flood `client` (connected through `listener`) with `total` bytes of `frame(0)` again and
/// again; answers the peak RSS growth in kB. Fails unless the whole flood was written (the
/// client read it all, but for what the kernel buffers).
async fn flood_and_measure(
    listener: &TcpListener,
    total: u64,
    frame: impl FnMut(u64) -> Vec<u8>,
) -> u64 {
    let tcp = accept_raw(listener).await;
    let base = vm_rss_kb();
    let stop = Arc::new(AtomicBool::new(false));
    let sampler = sample_peak_rss(stop.clone());
    let progress = Arc::new(Flood::default());
    let started = Instant::now();
    flood(tcp, total, FLOOD_LIMIT, progress.clone(), true, frame).await;
    stop.store(true, Ordering::Relaxed);
    let peak = sampler.join().expect("sampler");
    let written = progress.written.load(Ordering::Relaxed);
    eprintln!("flooded {written} bytes in {:?}", started.elapsed());
    assert!(
        written >= total,
        "only {written} of {total} bytes flooded within {FLOOD_LIMIT:?}"
    );
    peak.saturating_sub(base)
}

/// 1 GiB of 1 KiB ticks into a client whose actor subscriber takes 1 ms per message
/// (`subscribe_actor`, the default `DropNewest`): RSS growth stays under 64 MiB, the messages
/// the actor had no room for are counted in `dropped_incoming`, and the actor saw the rest.
/// (Before this was bounded, RSS grew by about 1.8 GB in 8 s: `do_send` to the actor.)
#[actix_rt::test]
async fn flood_into_a_slow_actor_stays_bounded_and_counts_drops() {
    let _turn = SERIAL.lock().await;
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("ws://{}/feed", listener.local_addr().unwrap());
    let arbiter = Arbiter::new();
    let slow = slow_actor(&arbiter, None);
    let seen = slow.seen.clone();
    let client = connect(&url, flood_config()).unwrap();
    client.subscribe_actor::<Tick>(slow.addr.recipient());
    let growth_kb = flood_and_measure(&listener, GIB, tick_frame).await;
    let stats = routed(&client).await;
    eprintln!(
        "slow actor: peak RSS growth {growth_kb} kB, {} in, {} dropped, {} seen",
        stats.messages_in,
        stats.dropped_incoming,
        seen.load(Ordering::Relaxed)
    );
    assert!(
        growth_kb < MAX_GROWTH_KB,
        "RSS grew by {growth_kb} kB with a slow actor subscriber"
    );
    assert!(stats.dropped_incoming > 0, "{stats:?}");
    assert!(stats.dropped_incoming < stats.messages_in, "{stats:?}");
    // Every message was handled, or counted dropped, or is still in the actor's mailbox (16,
    // one past it for the client's sender, one being handled).
    assert!(
        stats.dropped_incoming + seen.load(Ordering::Relaxed) + 18 >= stats.messages_in,
        "{stats:?}, seen {}",
        seen.load(Ordering::Relaxed)
    );
    client.close().await;
    arbiter.stop();
}

/// The same flood into a channel subscriber that is never read: bounded, the drops counted.
#[actix_rt::test]
async fn flood_into_an_unread_channel_stays_bounded_and_counts_drops() {
    let _turn = SERIAL.lock().await;
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("ws://{}/feed", listener.local_addr().unwrap());
    let client = connect(&url, flood_config()).unwrap();
    let _unread = client.subscribe::<Tick>(16);
    let growth_kb = flood_and_measure(&listener, GIB, tick_frame).await;
    let stats = routed(&client).await;
    eprintln!("unread channel: peak RSS growth {growth_kb} kB, {stats:?}");
    assert!(growth_kb < MAX_GROWTH_KB, "RSS grew by {growth_kb} kB");
    assert_eq!(
        stats.dropped_incoming + 16,
        stats.messages_in,
        "all but the 16 the channel holds are counted dropped"
    );
    client.close().await;
}

/// The typed flood: 256 MiB of them (4,000 messages; the Router decodes each one).
const TYPED_FLOOD: u64 = 256 * 1024 * 1024;

/// 64 KiB JSON messages decoded into a typed struct: the Router's own work is the slow part,
/// and the Connection must not read ahead of it without bound. RSS growth stays under 64 MiB
/// with a slow actor subscriber; drops are counted.
#[actix_rt::test]
async fn flood_of_large_typed_messages_stays_bounded() {
    let _turn = SERIAL.lock().await;
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("ws://{}/feed", listener.local_addr().unwrap());
    let arbiter = Arbiter::new();
    let slow = slow_actor(&arbiter, None);
    let seen = slow.seen.clone();
    let client = connect(&url, flood_config()).unwrap();
    client.subscribe_actor::<Bulk>(slow.addr.recipient());
    let values: Vec<u32> = (0..BULK_VALUES as u32).map(|v| 1_000_000 + v).collect();
    let bulk = |seq: u64| {
        let msg = serde_json::json!({"type": "bulk", "data": {"seq": seq, "values": values}});
        text_frame(msg.to_string().as_bytes())
    };
    assert!(bulk(0).len() >= 64 * 1024, "{}", bulk(0).len());
    let growth_kb = flood_and_measure(&listener, TYPED_FLOOD, bulk).await;
    let stats = routed(&client).await;
    eprintln!(
        "typed 64 KiB: peak RSS growth {growth_kb} kB, {} in, {} dropped, {} seen",
        stats.messages_in,
        stats.dropped_incoming,
        seen.load(Ordering::Relaxed)
    );
    assert!(growth_kb < MAX_GROWTH_KB, "RSS grew by {growth_kb} kB");
    client.close().await;
    arbiter.stop();
}

/// The on-connect set is bounded: `max_on_connect` distinct joins are kept (a repeat is not
/// counted twice, and 10,000 repeats stay cheap), one more fails with `OnConnectFull` in words,
/// and leaving a room makes room again. Every one of them is replayed on connect, in order,
/// ahead of the outbox, against a real server.
#[actix_rt::test]
async fn on_connect_set_is_bounded_and_replayed_in_order() {
    use actix_ws_manager::Error;
    const LIMIT: usize = 50;
    let server = common::start_server(common::test_config().max_rooms_per_session(LIMIT + 1));
    let client = connect(&server.url(), client_test_config().max_on_connect(LIMIT)).unwrap();
    let mut raw = client.subscribe_raw(1024);
    for i in 0..LIMIT {
        client.join(&format!("room-{i}")).await.unwrap();
    }
    // Repeats are no new entries (and each is an O(1) check).
    for _ in 0..10_000 {
        client.join("room-0").await.unwrap();
    }
    let err = client.join("one-too-many").await.unwrap_err();
    assert!(
        matches!(err, Error::OnConnectFull { limit: LIMIT }),
        "{err:?}"
    );
    assert!(err.to_string().contains("max_on_connect"), "{err}");
    client.leave("room-0").await.unwrap();
    client.join("one-too-many").await.unwrap();

    // The server answers every join, in registration order (replayed on connect, or sent at
    // once if the client connected meanwhile; room-0 may have been joined and left live).
    client.wait_connected(WAIT).await.unwrap();
    let mut joined = Vec::new();
    while joined.len() < LIMIT {
        let msg = common::recv_within(&mut raw, WAIT, "joined").await;
        let room = msg.data.room.clone().unwrap_or_default();
        if msg.data.kind == "joined" && room != "room-0" {
            joined.push(room);
        }
    }
    let mut expected: Vec<String> = (1..LIMIT).map(|i| format!("room-{i}")).collect();
    expected.push("one-too-many".into());
    assert_eq!(joined, expected);
    client.close().await;
}

/// A tick of about 1 MB.
fn megabyte_tick(seq: u64) -> Vec<u8> {
    tick(seq, 1_000_000)
}

/// Subscriptions are bounded by bytes as well as by count: a channel of 1,024 that nobody reads,
/// with `subscriber_bytes` of 4 MiB, holds four 1 MB messages, not 40 MB; the other 36 are
/// dropped and counted. With `Overflow::Backpressure` the client instead waits (and stops
/// reading) until the subscriber gives bytes back, and all 40 arrive in order.
#[actix_rt::test]
async fn subscriptions_are_bounded_by_bytes_too() {
    let _turn = SERIAL.lock().await;
    const N: u64 = 40;
    for overflow in [Overflow::DropNewest, Overflow::Backpressure] {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("ws://{}/feed", listener.local_addr().unwrap());
        let config = flood_config().subscriber_bytes(4 << 20);
        let client = connect(&url, config).unwrap();
        let mut ticks = client.subscribe_with::<Tick>(1024, overflow);
        let tcp = accept_raw(&listener).await;
        let (server, _, _) = flood_exactly(tcp, N, megabyte_tick);
        if overflow == Overflow::DropNewest {
            let stats = routed(&client).await;
            assert_eq!(stats.messages_in, N, "{stats:?}");
            assert_eq!(stats.dropped_incoming, N - 4, "{stats:?}");
            for seq in 0..4 {
                let tick = common::recv_within(&mut ticks, WAIT, "a held tick").await;
                assert_eq!(tick.data.seq, seq);
            }
            assert!(ticks.try_recv().is_err(), "only four were held");
        } else {
            wait_for_read_pause(&client).await;
            for seq in 0..N {
                let tick = common::recv_within(&mut ticks, WAIT, "the next tick").await;
                assert_eq!(tick.data.seq, seq, "in order, none missing");
            }
            assert_eq!(client.stats().dropped_incoming, 0);
        }
        let _ = server.await;
        client.close().await;
    }
}
