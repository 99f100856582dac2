//! Faults of the Redis backplane (issue 18), against a real `redis-server`: a join/leave flood
//! across Redis resets leaks no channel, a publish flood from another node keeps a node's
//! memory bounded (the excess dropped and counted), and out-of-range settings are refused with
//! the setting named. The throttled link and order across a stall or a late link are in
//! tests/backplane_order.rs.

mod common;

use std::cell::Cell;
use std::time::{Duration, Instant};

use actix_ws_manager::client::Inbound;
use actix_ws_manager::server::backplane::{RedisBackplane, RedisConfig};
use actix_ws_manager::testkit::{next_matching, FaultProxy};
use actix_ws_manager::Error;
use awc::ws::{Frame, Message};
use common::cluster::{
    answer, eventually, member, proxied_pair, raw_member, redis_addr, redis_conn, redis_flood,
    room_channels, rss_kb, subscribers, text, PeakRss, Seq,
};
use common::{assert_flag_refused, prom, spawn_wsm_serve_lines, Peer, RedisServer, WAIT};
use futures_util::{SinkExt, StreamExt};

/// Publish `Seq` messages (numbered from `n`) from `publisher` to `room` until one is
/// acknowledged (bounded: a reconnecting node refuses with `backplane_unavailable` for a
/// while); then that one must reach `to`, the member on the other node.
async fn publish_reaches(
    publisher: &mut Peer,
    room: &str,
    n: u64,
    to: &mut tokio::sync::mpsc::Receiver<Inbound<Seq>>,
    what: &str,
) {
    let deadline = Instant::now() + WAIT;
    for n in n..n + 1000 {
        assert!(Instant::now() < deadline, "{what}: no publish acknowledged");
        publisher
            .text(&format!(
                r#"{{"type":"publish","room":"{room}","event":"seq","data":{{"n":{n}}},"id":{n}}}"#
            ))
            .await;
        let answered = answer(publisher, n).await;
        if answered["type"] != "ack" {
            actix_rt::time::sleep(Duration::from_millis(50)).await;
            continue;
        }
        let got = next_matching(to, what, WAIT, |m| m.data.n >= n)
            .await
            .unwrap_or_else(|e| panic!("{what}: acknowledged publish {n} not delivered: {e}"));
        assert_eq!(got.data.n, n, "{what}");
        return;
    }
    panic!("{what}: 1000 publishes refused");
}

/// The most join/leave pairs one flood client sends.
const FLOOD_PAIRS: u64 = 10_000;
/// How long the join/leave flood lasts at most.
const FLOOD_FOR: Duration = Duration::from_millis(2_500);

/// One flood client on `url`: joins and leaves fresh rooms `f-<k>-<i>`, pipelined, until
/// `until` (at most [`FLOOD_PAIRS`] pairs), reading the answers as they come; then waits
/// (bounded) for every answer and closes. Answers (pairs sent, answers read).
async fn flood(url: &str, k: usize, until: Instant) -> (u64, u64) {
    let (peer, _) = Peer::rooms(url).await;
    let (mut sink, mut stream) = peer.framed.split();
    let sent = Cell::new(0u64);
    let mut answers = 0u64;
    let write = async {
        for i in 0..FLOOD_PAIRS {
            if Instant::now() >= until {
                break;
            }
            let (join, leave) = (
                format!(r#"{{"type":"join","room":"f-{k}-{i}","id":{}}}"#, 2 * i),
                format!(
                    r#"{{"type":"leave","room":"f-{k}-{i}","id":{}}}"#,
                    2 * i + 1
                ),
            );
            sink.feed(text(join)).await.expect("flood: send a join");
            sink.feed(text(leave)).await.expect("flood: send a leave");
            sent.set(i + 1);
            if i % 32 == 31 {
                sink.flush().await.expect("flood: flush");
            }
        }
        sink.flush().await.expect("flood: flush");
    };
    let read = async {
        loop {
            match stream.next().await {
                Some(Ok(Frame::Text(_))) => answers += 1,
                Some(Ok(_)) => {}
                Some(Err(e)) => return format!("flood client {k}: {e}"),
                None => return format!("flood client {k}: the server ended the stream"),
            }
        }
    };
    tokio::select! {
        () = write => {}
        ended = read => panic!("{ended} while flooding"),
    }
    // Every join and leave is answered (`joined` waits for the subscription; bounded).
    let deadline = until + WAIT;
    while answers < 2 * sent.get() {
        match tokio::time::timeout_at(deadline.into(), stream.next()).await {
            Ok(Some(Ok(Frame::Text(_)))) => answers += 1,
            Ok(Some(Ok(_))) => {}
            Ok(Some(Err(e))) => panic!("flood client {k}: {e}"),
            Ok(None) => panic!("flood client {k}: the server ended the stream"),
            Err(_) => break,
        }
    }
    let _ = sink.send(Message::Close(None)).await;
    (sent.get(), answers)
}

/// Run 4 flood clients against `url` for [`FLOOD_FOR`] while `proxy` resets A's Redis link at a
/// third and two thirds of it. Answers each client's (pairs sent, answers) and the start.
async fn flood_across_two_resets(proxy: &FaultProxy, url: &str) -> (Vec<(u64, u64)>, Instant) {
    let start = Instant::now();
    let until = start + FLOOD_FOR;
    let resets = async {
        for at in [FLOOD_FOR / 3, FLOOD_FOR * 2 / 3] {
            // The fault schedule, not a synchronisation: the link resets mid-flood.
            actix_rt::time::sleep_until((start + at).into()).await;
            proxy.reset();
        }
    };
    let clients = futures_util::future::join_all((0..4).map(|k| flood(url, k, until)));
    let ((), counts) = tokio::join!(resets, clients);
    (counts, start)
}

/// Wait (within [`WAIT`]) until the only room channel in Redis is `wsm:room:stay` and both
/// nodes subscribe to it; the error says what Redis has instead.
async fn only_stay_channel_with_both_nodes(conn: &mut redis::Connection) -> Result<(), String> {
    eventually(WAIT, async || {
        let channels = room_channels(conn);
        let both = subscribers(conn, "wsm:room:stay");
        (channels == ["wsm:room:stay"] && both == 2)
            .then_some(())
            .ok_or_else(|| {
                format!(
                    "{} room channels in Redis (first: {:?}), wsm:room:stay has {both} \
                     subscribers",
                    channels.len(),
                    &channels[..channels.len().min(5)]
                )
            })
    })
    .await
}

/// Two nodes on one Redis; A reaches it through a proxy. A member of "stay" on each node
/// stays joined all along while 4 clients on A join and leave fresh rooms as fast as they
/// can (thousands of pairs, pipelined), and A's Redis link is reset twice meanwhile. Then the
/// only room channel left in Redis is `wsm:room:stay`, subscribed by both nodes, A counts one
/// channel, and "stay" still carries messages both ways.
#[actix_rt::test]
async fn join_leave_flood_across_resets_leaks_no_channel() {
    let redis = RedisServer::start();
    let (proxy, a, b) = proxied_pair(&redis).await;
    let (_a_stay, mut a_in) = member::<Seq>(&a, "stay", 65_536).await;
    let (_b_stay, mut b_in) = member::<Seq>(&b, "stay", 65_536).await;
    let mut conn = redis_conn(&redis);
    assert_eq!(room_channels(&mut conn), ["wsm:room:stay"], "before");

    let (counts, start) = flood_across_two_resets(&proxy, &a.url()).await;
    let pairs: u64 = counts.iter().map(|c| c.0).sum();
    let answers: u64 = counts.iter().map(|c| c.1).sum();
    eprintln!(
        "join/leave flood: {pairs} pairs in {:?}, {answers} answers, {} connections to Redis \
         through the proxy",
        start.elapsed(),
        proxy.connections()
    );
    for (k, (sent, answered)) in counts.iter().enumerate() {
        assert_eq!(
            *answered,
            2 * sent,
            "flood client {k}: every join and leave answered"
        );
    }
    assert!(
        pairs >= 2_000,
        "the flood was too small to prove anything: {pairs} pairs"
    );
    assert!(
        proxy.connections() >= 3,
        "the resets reached A's link and A reconnected: {} connections",
        proxy.connections()
    );

    let stats = eventually(WAIT, async || {
        let s = a.stats().await.map_err(|e| e.to_string())?;
        (s.rooms == 1 && s.members == 1 && s.sessions == 1)
            .then_some(s)
            .ok_or_else(|| format!("node a still has {s:?}"))
    })
    .await
    .unwrap_or_else(|e| panic!("the flood clients' rooms are gone locally: {e}"));
    eprintln!("node a after the flood: {stats:?}");

    let channels = only_stay_channel_with_both_nodes(&mut conn).await;
    channels.unwrap_or_else(|e| panic!("Redis converges to the one room with members: {e}"));

    // NEW (issue 18): `HubStats::backplane_channels`, the channels this node is subscribed to in
    // Redis (confirmed).
    for (name, server) in [("a", &a), ("b", &b)] {
        eventually(WAIT, async || {
            let s = server.stats().await.map_err(|e| e.to_string())?;
            (s.backplane_channels == 1)
                .then_some(())
                .ok_or_else(|| format!("backplane_channels {}", s.backplane_channels))
        })
        .await
        .unwrap_or_else(|e| panic!("node {name} counts one channel: {e}"));
    }

    let mut on_a = raw_member(&a.url(), "stay").await;
    let mut on_b = raw_member(&b.url(), "stay").await;
    publish_reaches(&mut on_b, "stay", 1_000, &mut a_in, "b to a's member").await;
    publish_reaches(&mut on_a, "stay", 2_000, &mut b_in, "a to b's member").await;
}

/// Read and discard what `stream` (a rooms client's) receives until `stop` or the end of the
/// stream (bounded by `bound`). Answers (frames read, close code if the server closed).
async fn drain(
    mut stream: impl futures_util::Stream<Item = Result<Frame, awc::error::WsProtocolError>> + Unpin,
    mut stop: tokio::sync::watch::Receiver<bool>,
    bound: Duration,
) -> (u64, Option<u16>) {
    let mut frames = 0;
    let deadline = tokio::time::Instant::now() + bound;
    loop {
        tokio::select! {
            _ = stop.wait_for(|s| *s) => return (frames, None),
            () = tokio::time::sleep_until(deadline) => return (frames, None),
            next = stream.next() => match next {
                Some(Ok(Frame::Close(reason))) => return (frames, reason.map(|r| u16::from(r.code))),
                Some(Ok(_)) => frames += 1,
                Some(Err(_)) | None => return (frames, None),
            }
        }
    }
}

/// Start a `wsm serve` node "flooded" sharing rooms through the Redis at `url`, with metrics,
/// small session queues and a small Redis inbound buffer; answers the child, its rooms URL and
/// its metrics URL.
fn spawn_flooded_node(url: &str) -> (common::KillOnDrop, String, String) {
    let (child, lines) = spawn_wsm_serve_lines(
        &[
            "--bind",
            "127.0.0.1:0",
            "--redis",
            url,
            "--node-id",
            "flooded",
            "--metrics-bind",
            "127.0.0.1:0",
            "--session-queue-bytes",
            "262144",
            "--redis-buffer",
            "1024",
            "--redis-buffer-bytes",
            "1048576",
        ],
        3,
    );
    let (rooms_url, metrics_url) = (lines[0].clone(), lines[2].clone());
    (child, rooms_url, metrics_url)
}

/// A reader task of [`drain`].
type Reader = actix_rt::task::JoinHandle<(u64, Option<u16>)>;

/// Eight members of "hot" and two of "busy" on the node at `rooms_url`, each drained until
/// `stop`; answers their readers and one more member of "busy", not drained, to publish with.
async fn flooded_members(
    rooms_url: &str,
    stop: &tokio::sync::watch::Receiver<bool>,
) -> (Vec<Reader>, Peer) {
    let mut readers = Vec::new();
    for _ in 0..8 {
        let peer = raw_member(rooms_url, "hot").await;
        readers.push(actix_rt::spawn(drain(peer.framed, stop.clone(), WAIT * 3)));
    }
    for _ in 0..2 {
        let peer = raw_member(rooms_url, "busy").await;
        readers.push(actix_rt::spawn(drain(peer.framed, stop.clone(), WAIT * 3)));
    }
    (readers, raw_member(rooms_url, "busy").await)
}

/// What "another node" publishes on room "hot"'s channel: its node id, then a 1 KiB room
/// message.
fn other_node_payload() -> Vec<u8> {
    let frame = format!(
        r#"{{"type":"message","room":"hot","from":"x","data":{{"n":1,"pad":"{}"}},"timestamp":"2026-01-01T00:00:00Z"}}"#,
        "p".repeat(900)
    );
    format!("other-node\n{frame}").into_bytes()
}

/// Publish to "busy" through `sink` as fast as it takes them until `done` (at most 10 million);
/// answers how many were sent. The node may close this member as a slow consumer (its own
/// copies come back to a reader that a busy machine can leave behind), which ends the
/// publishing early: the flood is what is measured, not this member.
async fn publish_busy_until(
    sink: &mut (impl futures_util::Sink<Message, Error = awc::error::WsProtocolError> + Unpin),
    done: &Cell<bool>,
) -> u64 {
    let mut n = 0u64;
    while !done.get() && n < 10_000_000 {
        let publish = format!(r#"{{"type":"publish","room":"busy","data":{{"n":{n}}}}}"#);
        if sink.feed(text(publish)).await.is_err() {
            break;
        }
        n += 1;
        if n.is_multiple_of(32) && sink.flush().await.is_err() {
            break;
        }
    }
    n
}

/// Wait (bounded) until the node has accounted for every message Redis delivered to it, or,
/// when Redis cut the node off (a subscriber too slow for Redis's output buffer limit, whose
/// backlog Redis then drops), until its figures stop moving. The same when the node closed every
/// member of "hot" as a slow consumer (on a busy machine): it then left the room and ignores what
/// Redis still had in flight for it, which nobody here wants. Answers whether it settled, the
/// last (received, dropped, reconnects) read from its metrics, and whether it left the room.
async fn settle(metrics_url: &str, delivered: u64) -> (Result<(), String>, (f64, f64, f64), bool) {
    let mut figures = (0.0, 0.0, 0.0);
    let mut left = false;
    let mut last_sum = -1.0;
    let settled = eventually(WAIT, async || {
        let (m, _) = prom::scrape(metrics_url).await;
        figures = (
            prom::get(&m, "wsm_server_backplane_received_total"),
            prom::get(&m, "wsm_server_backplane_dropped_total"),
            prom::get(&m, "wsm_server_backplane_reconnects_total"),
        );
        let (received, dropped, reconnects) = figures;
        // "hot" and "busy" while both have members.
        left = prom::get(&m, "wsm_server_backplane_channels") < 2.0;
        let sum = received + dropped;
        let still = sum == last_sum;
        last_sum = sum;
        (sum >= delivered as f64 || ((reconnects > 0.0 || left) && still))
            .then_some(())
            .ok_or_else(|| format!("received {received} + dropped {dropped}"))
    })
    .await;
    (settled, figures, left)
}

/// Stop the readers; answers how many of them the server had closed.
async fn closed_readers(stop_tx: tokio::sync::watch::Sender<bool>, readers: Vec<Reader>) -> usize {
    let _ = stop_tx.send(true);
    let mut closed = 0;
    for reader in readers {
        if let Ok((_, Some(_))) = reader.await {
            closed += 1;
        }
    }
    closed
}

/// A publish flood on a room's channel from "another node" (about 100,000 publishes of 1 KiB
/// a second for 3 s, about 300 MB) into a `wsm serve` node with 8 members on that room and a
/// busy local room besides: the node's resident memory grows by less than 96 MiB, and what it
/// could not fan out is dropped and counted (`wsm_server_backplane_dropped`).
#[actix_rt::test]
async fn publish_flood_from_another_node_keeps_memory_bounded() {
    const MAX_GROWTH_KB: u64 = 96 * 1024;
    const FLOOD: Duration = Duration::from_secs(3);
    let redis = RedisServer::start();
    let (child, rooms_url, metrics_url) = spawn_flooded_node(&redis.url());
    let pid = child.0.as_ref().expect("the child").id();

    let (stop_tx, stop) = tokio::sync::watch::channel(false);
    let (mut readers, busy) = flooded_members(&rooms_url, &stop).await;
    let baseline = rss_kb(pid);

    // RSS every 100 ms until told to stop (bounded).
    let sampler = PeakRss::start(pid);

    let payload = other_node_payload();
    let (flood_tx, flood_rx) = tokio::sync::oneshot::channel();
    let addr = redis_addr(&redis);
    std::thread::spawn(move || {
        let _ = flood_tx.send(redis_flood(addr, "wsm:room:hot", &payload, FLOOD));
    });

    // The busy local room: a member publishing as fast as it can while the flood lasts.
    let (mut sink, stream) = busy.framed.split();
    readers.push(actix_rt::spawn(drain(stream, stop.clone(), WAIT * 3)));
    let flood_done = Cell::new(false);
    let flood = async {
        let flooded = flood_rx.await.expect("the flood thread");
        flood_done.set(true);
        flooded
    };
    let (flooded, busy_sent) = tokio::join!(flood, publish_busy_until(&mut sink, &flood_done));
    drop(sink);

    let (settled, figures, left) = settle(&metrics_url, flooded.delivered).await;
    let peak = sampler.stop();
    let closed = closed_readers(stop_tx, readers).await;
    let (received, dropped, reconnects) = figures;
    eprintln!(
        "publish flood: {} published in {:?} ({:.0}/s), {} delivered by Redis to the node; \
         node received {received}, dropped {dropped}, reconnects {reconnects}, left the \
         room {left}; RSS baseline \
         {baseline} kB, peak {peak} kB (+{} kB); {busy_sent} busy publishes; {closed} clients \
         closed by the node",
        flooded.published,
        flooded.took,
        flooded.published as f64 / flooded.took.as_secs_f64(),
        flooded.delivered,
        peak.saturating_sub(baseline),
    );
    assert_eq!(flooded.replies, flooded.published, "every PUBLISH answered");
    assert!(
        peak.saturating_sub(baseline) <= MAX_GROWTH_KB,
        "RSS grew by {} kB (baseline {baseline} kB, peak {peak} kB), more than {MAX_GROWTH_KB} kB",
        peak.saturating_sub(baseline)
    );
    assert!(
        received + dropped >= 2_000.0,
        "the node took at least 2,000 messages (2 MB) of the flood: {flooded:?}"
    );
    // Unless Redis cut the node off or the node left the room, every message Redis delivered to
    // it is fanned out or dropped and counted.
    settled.unwrap_or_else(|e| {
        panic!(
            "{} messages delivered by Redis, the node accounts for fewer: {e}",
            flooded.delivered
        )
    });
    // A node that could not keep up dropped and counted the excess, or was cut off by Redis
    // (its output buffer limit for subscribers; Redis drops that backlog) and counted the
    // reconnect.
    if received < flooded.delivered as f64 && !left {
        assert!(
            dropped > 0.0 || reconnects > 0.0,
            "the node did not keep up ({received} of {}) and counted neither a drop nor a \
             reconnect",
            flooded.delivered
        );
    }
}

/// Out-of-range Redis settings are configuration errors naming the setting, never a panic
/// later: the timeout (10 ms to 365 days), the inbound buffer and the publish queue (1 to
/// 1,048,576 messages, 64 KiB to 1 GiB); the limits themselves are accepted.
#[test]
fn out_of_range_settings_are_refused_by_name() {
    const URL: &str = "redis://127.0.0.1:6379";
    const MIB: usize = 1 << 20;
    const GIB: usize = 1 << 30;
    let year = Duration::from_secs(365 * 24 * 3600);
    let cfg = || RedisConfig::new(URL);
    // NEW (issue 18): `buffer_bytes`, `publish_queue`, `publish_queue_bytes` and the limits.
    let refused = [
        (cfg().buffer(usize::MAX), "buffer"),
        (cfg().buffer(0), "buffer"),
        (cfg().buffer(MIB + 1), "buffer"),
        (cfg().timeout(Duration::from_nanos(1)), "timeout"),
        (cfg().timeout(Duration::ZERO), "timeout"),
        (cfg().timeout(Duration::from_millis(9)), "timeout"),
        (cfg().timeout(year + Duration::from_secs(1)), "timeout"),
        (cfg().timeout(Duration::MAX), "timeout"),
        (cfg().buffer_bytes(0), "buffer"),
        (cfg().buffer_bytes(65_535), "buffer"),
        (cfg().buffer_bytes(GIB + 1), "buffer"),
        (cfg().publish_queue(0), "publish queue"),
        (cfg().publish_queue(MIB + 1), "publish queue"),
        (cfg().publish_queue(usize::MAX), "publish queue"),
        (cfg().publish_queue_bytes(0), "publish queue"),
        (cfg().publish_queue_bytes(65_535), "publish queue"),
        (cfg().publish_queue_bytes(usize::MAX), "publish queue"),
    ];
    for (config, words) in refused {
        let shown = format!("{config:?}");
        match RedisBackplane::new(config) {
            Err(Error::Config(why)) => assert!(why.contains(words), "{shown}: {why}"),
            other => {
                panic!("{shown}: expected a configuration error naming {words:?}, got {other:?}")
            }
        }
    }
    let accepted = [
        cfg().timeout(Duration::from_millis(10)),
        cfg().timeout(year),
        cfg().buffer(1),
        cfg().buffer(MIB),
        cfg().buffer_bytes(65_536),
        cfg().buffer_bytes(GIB),
        cfg().publish_queue(1),
        cfg().publish_queue(MIB),
        cfg().publish_queue_bytes(65_536),
        cfg().publish_queue_bytes(GIB),
    ];
    for config in accepted {
        let shown = format!("{config:?}");
        RedisBackplane::new(config).unwrap_or_else(|e| panic!("{shown} is within limits: {e}"));
    }
}

/// `wsm serve` refuses out-of-range Redis flags before starting, with clap's one line naming
/// the flag: a 1 ns timeout, an empty inbound buffer (in messages or in bytes).
#[cfg(unix)]
#[test]
fn serve_refuses_out_of_range_redis_flags() {
    let serve = [
        "serve",
        "--bind",
        "127.0.0.1:0",
        "--redis",
        "redis://127.0.0.1:1",
    ];
    for (flag, value) in [
        ("--redis-timeout", "1ns"),
        ("--redis-buffer", "0"),
        // NEW (issue 18).
        ("--redis-buffer-bytes", "0"),
    ] {
        let mut args = serve.to_vec();
        args.extend([flag, value]);
        assert_flag_refused(&args, flag);
    }
}
