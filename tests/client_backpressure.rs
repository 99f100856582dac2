//! With `Overflow::Backpressure` nothing is dropped: a raw server floods the client, the client
//! stops reading while its subscriber (an actor or a channel) is held, the server's writes
//! stall, and everything arrives in order once the subscriber catches up. And every ping gets
//! its pong, in order, even when a thousand arrive in one write. The floods are made by
//! `common::flood`; the tests take turns with one another (`SERIAL`).

mod common;

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use actix::prelude::*;
use actix_ws_manager::client::{connect, ConnectionState, Event, Overflow};
use actix_ws_manager::config::HeartbeatConfig;
use common::flood::{
    accept_raw, flood_config, flood_exactly, slow_actor, tick, wait_for_read_pause, Tick, SERIAL,
};
use common::{client_test_config, WAIT};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

/// With `Overflow::Backpressure`, a subscriber that is held still makes the client stop
/// reading: the server's writes stall (it cannot finish), `read_pauses` counts the pause, the
/// heartbeat does not declare the server dead although the pause outlasts its timeout, and once
/// the subscriber goes on, every message arrives, in order, none dropped.
#[actix_rt::test]
async fn backpressure_pauses_reading_and_delivers_everything_in_order() {
    let _turn = SERIAL.lock().await;
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("ws://{}/feed", listener.local_addr().unwrap());
    let arbiter = Arbiter::new();
    let (release, hold) = std::sync::mpsc::channel();
    let mut slow = slow_actor(&arbiter, Some(hold));
    // A heartbeat whose timeout the pause outlasts (the server here never answers pings; the
    // flood is what it sends).
    let config = flood_config().heartbeat(HeartbeatConfig::new(
        Duration::from_millis(100),
        Duration::from_millis(500),
    ));
    let client = connect(&url, config).unwrap();
    let mut events = client.subscribe_events(1024);
    client.subscribe_actor_with::<Tick>(slow.addr.clone().recipient(), Overflow::Backpressure);
    let tcp = accept_raw(&listener).await;

    // 4,000 ticks of 16 KiB: 64 MiB, far more than the socket buffers and the client's bounds.
    const N: u64 = 4_000;
    let frame = |seq: u64| tick(seq, 16 * 1024);
    let (server, progress, total) = flood_exactly(tcp, N, frame);

    // The client pauses (counted) and the server's writes stop progressing while the
    // subscriber is held: measured over a full heartbeat timeout and more.
    wait_for_read_pause(&client).await;
    let deadline = Instant::now() + WAIT;
    // The kernel's buffers take some more after the pause; then the server's writes must stop
    // for good: no progress over a window longer than the heartbeat's timeout (an observation
    // of something not happening, bounded by WAIT; not synchronisation).
    let mut last = progress.written.load(Ordering::Relaxed);
    let mut still_since = Instant::now();
    while still_since.elapsed() < Duration::from_millis(1500) {
        assert!(
            Instant::now() < deadline + WAIT,
            "the server's writes never stalled"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
        let now = progress.written.load(Ordering::Relaxed);
        if now != last {
            (last, still_since) = (now, Instant::now());
        }
    }
    assert!(
        !progress.done.load(Ordering::Relaxed),
        "the server finished writing although the client was held"
    );
    assert!(
        last < total,
        "the server wrote everything ({last} of {total})"
    );
    assert_eq!(slow.seen.load(Ordering::Relaxed), 0);

    release.send(()).unwrap();
    let all = tokio::time::timeout(WAIT * 3, slow.seen_rx.wait_for(|n| *n >= N)).await;
    assert!(
        matches!(all, Ok(Ok(_))),
        "only {} of {N} delivered: {:?}; the server wrote {} of {total} bytes, done {}",
        slow.seen.load(Ordering::Relaxed),
        client.stats(),
        progress.written.load(Ordering::Relaxed),
        progress.done.load(Ordering::Relaxed),
    );
    let stats = client.stats();
    assert_eq!(stats.dropped_incoming, 0, "{stats:?}");
    assert_eq!(slow.disorder.load(Ordering::Relaxed), 0, "out of order");
    assert_eq!(stats.messages_in, N);
    // The heartbeat never declared the (alive, flooding) server dead; the one disconnection
    // is the server's close after its last frame, read after everything else.
    while let Ok(ev) = events.try_recv() {
        if let Event::State(ConnectionState::Disconnected { reason, .. }) = &ev {
            assert!(!reason.contains("heartbeat"), "{ev:?}");
        }
    }
    let _ = server.await;
    client.close().await;
    arbiter.stop();
}

/// A masked-or-not ping frame: servers send unmasked frames.
fn ping_frame(payload: &[u8]) -> Vec<u8> {
    let mut f = vec![0x89, payload.len() as u8];
    f.extend_from_slice(payload);
    f
}

/// 1,000 pings in one write to the client: 1,000 pongs come back, payloads in order (the
/// control path holds 16; past that the client stops reading until its writer has caught up,
/// instead of skipping pongs).
#[actix_rt::test]
async fn thousand_pings_in_one_write_get_thousand_pongs_in_order() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("ws://{}/ping", listener.local_addr().unwrap());
    let client = connect(&url, client_test_config()).unwrap();
    let mut tcp = accept_raw(&listener).await;
    const N: u32 = 1_000;
    let mut burst = Vec::new();
    for i in 0..N {
        burst.extend_from_slice(&ping_frame(&i.to_be_bytes()));
    }
    tcp.write_all(&burst).await.unwrap();

    // Read the client's frames (masked): every one must be a pong with the next payload.
    let mut buf = Vec::new();
    let mut next = 0u32;
    let read = async {
        let mut chunk = vec![0u8; 64 * 1024];
        while next < N {
            let n = tcp.read(&mut chunk).await.expect("read");
            assert!(n > 0, "client closed after {next} pongs");
            buf.extend_from_slice(&chunk[..n]);
            while let Some((op, payload, used)) = parse_masked(&buf) {
                buf.drain(..used);
                assert_eq!(op, 0xA, "a pong, not opcode {op:#x}");
                assert_eq!(payload, next.to_be_bytes(), "pong {next} in order");
                next += 1;
            }
        }
    };
    tokio::time::timeout(WAIT, read)
        .await
        .unwrap_or_else(|_| panic!("only {next} of {N} pongs in time"));
    assert_eq!(next, N);
    client.close().await;
}

/// Parse one masked client frame with a short payload: (opcode, unmasked payload, bytes used).
fn parse_masked(buf: &[u8]) -> Option<(u8, Vec<u8>, usize)> {
    if buf.len() < 2 {
        return None;
    }
    let op = buf[0] & 0x0F;
    assert!(buf[1] & 0x80 != 0, "client frames are masked");
    let len = usize::from(buf[1] & 0x7F);
    assert!(len < 126, "short control frames only here");
    let used = 2 + 4 + len;
    if buf.len() < used {
        return None;
    }
    let mask = &buf[2..6];
    let payload = buf[6..used]
        .iter()
        .enumerate()
        .map(|(i, b)| b ^ mask[i % 4])
        .collect();
    Some((op, payload, used))
}

/// `Overflow::Backpressure` on a channel subscriber: while the channel is not read, the client
/// pauses reading and the server cannot finish; then every message is read, in order, none
/// dropped.
#[actix_rt::test]
async fn backpressure_channel_delivers_everything_in_order() {
    let _turn = SERIAL.lock().await;
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("ws://{}/feed", listener.local_addr().unwrap());
    let client = connect(&url, flood_config()).unwrap();
    let mut ticks = client.subscribe_with::<Tick>(16, Overflow::Backpressure);
    let tcp = accept_raw(&listener).await;
    const N: u64 = 2_000;
    let frame = |seq: u64| tick(seq, 16 * 1024);
    let (server, progress, _) = flood_exactly(tcp, N, frame);
    wait_for_read_pause(&client).await;
    assert!(
        !progress.done.load(Ordering::Relaxed),
        "32 MiB went through an unread channel"
    );
    for seq in 0..N {
        let tick = common::recv_within(&mut ticks, WAIT, "the next tick").await;
        assert_eq!(tick.data.seq, seq, "in order, none missing");
    }
    assert_eq!(client.stats().dropped_incoming, 0);
    let _ = server.await;
    client.close().await;
}
