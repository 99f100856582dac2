//! Faults of the Redis backplane (issue 18), against a real `redis-server`: a join/leave flood
//! across Redis resets leaks no channel, a publish flood from another node keeps a node's
//! memory bounded (the excess dropped and counted), a slow but live link is not declared dead,
//! one publisher's order survives a stall, or a link that delivers late, and a reconnect, and
//! out-of-range settings are refused with the setting named.

mod common;

use std::cell::{Cell, RefCell};
use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix_ws_manager::client::{self, Client, Inbound};
use actix_ws_manager::config::ClientConfig;
use actix_ws_manager::protocol::Joined;
use actix_ws_manager::server::backplane::{RedisBackplane, RedisConfig};
use actix_ws_manager::server::Rooms;
use actix_ws_manager::testkit::{next_matching, Fault, FaultProxy, TestServer};
use actix_ws_manager::{Error, WireMessage};
use awc::ws::{Frame, Message};
use common::{
    assert_flag_refused, prom, spawn_wsm_serve_lines, test_config, Peer, RedisServer, WAIT,
};
use futures_util::{SinkExt, StreamExt};
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// A numbered message, as members decode it.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Seq {
    n: u64,
}
impl WireMessage for Seq {
    const TYPE: &'static str = "seq";
}

/// A numbered message with padding.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Big {
    n: u64,
    pad: String,
}
impl WireMessage for Big {
    const TYPE: &'static str = "big";
}

/// The Redis operation timeout of the in-process nodes.
const TIMEOUT: Duration = Duration::from_millis(500);

/// The address of `redis` (for a [`FaultProxy`] in front of it).
fn redis_addr(redis: &RedisServer) -> SocketAddr {
    redis
        .url()
        .strip_prefix("redis://")
        .and_then(|a| a.parse().ok())
        .expect("redis://host:port")
}

/// A node named `id` sharing rooms through the Redis at `url`, with a 500 ms Redis timeout and
/// session queues long enough for the bursts that follow a stall (a member is not cut for them).
fn node(url: String, id: &str) -> TestServer {
    let id = id.to_owned();
    TestServer::start_with(move || {
        let backplane = RedisBackplane::new(
            RedisConfig::new(url.clone())
                .node_id(id.clone())
                .timeout(TIMEOUT),
        )?;
        Rooms::start_with_backplane(test_config().session_queue(65_536), backplane)
    })
    .expect("node starts")
}

/// A client of `server` in `room`, subscribed to `T`; `joined` (which, with a backplane, means
/// this node receives the room) has arrived.
async fn member<T: WireMessage + Clone + std::fmt::Debug>(
    server: &TestServer,
    room: &str,
) -> (Client, tokio::sync::mpsc::Receiver<Inbound<T>>) {
    let c = client::connect(&server.url(), ClientConfig::default()).expect("client");
    let seqs = c.subscribe::<T>(65_536);
    let mut joined = c.subscribe::<Joined>(4);
    c.wait_connected(WAIT).await.expect("connected");
    c.join(room).await.expect("join");
    next_matching(&mut joined, "joined", WAIT, |j| {
        j.room.as_deref() == Some(room)
    })
    .await
    .expect("joined");
    (c, seqs)
}

/// A raw client of the rooms endpoint at `url`, joined to `room` (answered `joined`).
async fn raw_member(url: &str, room: &str) -> Peer {
    let (mut peer, _) = Peer::rooms(url).await;
    peer.text(&format!(r#"{{"type":"join","room":"{room}","id":1}}"#))
        .await;
    let joined = peer.json().await;
    assert_eq!(joined["type"], "joined", "{joined}");
    peer
}

/// Read from `peer` until the `ack` or `error` answering envelope `id`.
async fn answer(peer: &mut Peer, id: u64) -> Value {
    for _ in 0..100_000 {
        let v = peer.json().await;
        if v["id"] == id && (v["type"] == "ack" || v["type"] == "error") {
            return v;
        }
    }
    panic!("no answer to publish {id} within 100000 frames");
}

/// `text` as a WebSocket text message.
fn text(text: String) -> Message {
    Message::Text(text.into())
}

/// A sync connection to `redis`, to look at it from outside the nodes.
fn redis_conn(redis: &RedisServer) -> redis::Connection {
    redis::Client::open(redis.url())
        .expect("redis URL")
        .get_connection()
        .expect("a connection to redis-server")
}

/// `PUBSUB CHANNELS wsm:room:*`, sorted.
fn room_channels(conn: &mut redis::Connection) -> Vec<String> {
    let mut channels: Vec<String> = redis::cmd("PUBSUB")
        .arg("CHANNELS")
        .arg("wsm:room:*")
        .query(conn)
        .expect("PUBSUB CHANNELS");
    channels.sort();
    channels
}

/// `PUBSUB NUMSUB channel`: how many connections subscribe `channel`.
fn subscribers(conn: &mut redis::Connection, channel: &str) -> u64 {
    let answer: Vec<(String, u64)> = redis::cmd("PUBSUB")
        .arg("NUMSUB")
        .arg(channel)
        .query(conn)
        .expect("PUBSUB NUMSUB");
    answer.first().map_or(0, |(_, n)| *n)
}

/// Poll `check` every 50 ms until it answers `Ok`, for at most `within`; the last `Err` says
/// what was still wrong.
async fn eventually<T>(
    within: Duration,
    mut check: impl AsyncFnMut() -> Result<T, String>,
) -> Result<T, String> {
    let deadline = Instant::now() + within;
    for _ in 0..10_000 {
        match check().await {
            Ok(v) => return Ok(v),
            Err(why) if Instant::now() >= deadline => return Err(why),
            Err(_) => actix_rt::time::sleep(Duration::from_millis(50)).await,
        }
    }
    Err("more than 10000 polls".into())
}

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

/// Two nodes on one Redis; A reaches it through a proxy. A member of "stay" on each node
/// stays joined all along while 4 clients on A join and leave fresh rooms as fast as they
/// can (thousands of pairs, pipelined), and A's Redis link is reset twice meanwhile. Then the
/// only room channel left in Redis is `wsm:room:stay`, subscribed by both nodes, A counts one
/// channel, and "stay" still carries messages both ways.
#[actix_rt::test]
async fn join_leave_flood_across_resets_leaks_no_channel() {
    let redis = RedisServer::start();
    let proxy = FaultProxy::start(redis_addr(&redis))
        .await
        .expect("proxy starts");
    let a = node(format!("redis://{}", proxy.addr()), "a");
    let b = node(redis.url(), "b");
    let (_a_stay, mut a_in) = member::<Seq>(&a, "stay").await;
    let (_b_stay, mut b_in) = member::<Seq>(&b, "stay").await;
    let mut conn = redis_conn(&redis);
    assert_eq!(room_channels(&mut conn), ["wsm:room:stay"], "before");

    let start = Instant::now();
    let until = start + FLOOD_FOR;
    let resets = async {
        for at in [FLOOD_FOR / 3, FLOOD_FOR * 2 / 3] {
            // The fault schedule, not a synchronisation: the link resets mid-flood.
            actix_rt::time::sleep_until((start + at).into()).await;
            proxy.reset();
        }
    };
    let url = a.url();
    let clients = futures_util::future::join_all((0..4).map(|k| flood(&url, k, until)));
    let ((), counts) = tokio::join!(resets, clients);
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

    let channels = eventually(WAIT, async || {
        let channels = room_channels(&mut conn);
        let both = subscribers(&mut conn, "wsm:room:stay");
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
    .await;
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

/// The child's resident set size (VmRSS), in kB.
fn rss_kb(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("/proc/pid/status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("a VmRSS line in kB")
}

/// What [`redis_flood`] did.
#[derive(Debug, Default)]
struct Flooded {
    /// PUBLISH commands written.
    published: u64,
    /// Replies read.
    replies: u64,
    /// The sum of the replies: deliveries Redis made to subscribers.
    delivered: u64,
    /// How long the publishing took.
    took: Duration,
}

/// Act as another node: PUBLISH `payload` to `channel` on a raw, pipelined connection to
/// `addr`, in batches of 100 every millisecond (about 100,000 a second) for `duration`, and
/// read every reply (bounded by [`WAIT`] after the end).
fn redis_flood(addr: SocketAddr, channel: &str, payload: &[u8], duration: Duration) -> Flooded {
    const BATCH: u64 = 100;
    let one = {
        let mut c = Vec::new();
        c.extend_from_slice(b"*3\r\n$7\r\nPUBLISH\r\n");
        c.extend_from_slice(format!("${}\r\n{channel}\r\n", channel.len()).as_bytes());
        c.extend_from_slice(format!("${}\r\n", payload.len()).as_bytes());
        c.extend_from_slice(payload);
        c.extend_from_slice(b"\r\n");
        c
    };
    let batch = one.repeat(BATCH as usize);
    let mut out = TcpStream::connect(addr).expect("connect to redis-server");
    let mut input = out.try_clone().expect("clone the socket");
    let published = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let done = Arc::new(AtomicBool::new(false));
    let reader = {
        let (published, done) = (published.clone(), done.clone());
        std::thread::spawn(move || {
            input
                .set_read_timeout(Some(Duration::from_millis(100)))
                .expect("read timeout");
            let (mut replies, mut delivered, mut number) = (0u64, 0u64, 0u64);
            let mut buf = vec![0u8; 64 * 1024];
            let mut deadline: Option<Instant> = None;
            for _ in 0..10_000_000u64 {
                if done.load(Ordering::Acquire) {
                    if replies >= published.load(Ordering::Acquire) {
                        break;
                    }
                    let d = *deadline.get_or_insert_with(|| Instant::now() + WAIT);
                    if Instant::now() >= d {
                        break;
                    }
                }
                let n = match input.read(&mut buf) {
                    Ok(0) => break,
                    Ok(n) => n,
                    Err(e)
                        if matches!(
                            e.kind(),
                            std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                        ) =>
                    {
                        continue
                    }
                    Err(e) => panic!("reading PUBLISH replies: {e}"),
                };
                // Replies are `:<receivers>\r\n`.
                for &b in &buf[..n] {
                    match b {
                        b'0'..=b'9' => number = number * 10 + u64::from(b - b'0'),
                        b'\n' => {
                            replies += 1;
                            delivered += number;
                            number = 0;
                        }
                        b':' | b'\r' => {}
                        other => panic!("unexpected reply byte {other:?}"),
                    }
                }
            }
            (replies, delivered)
        })
    };
    let start = Instant::now();
    for i in 0..duration.as_millis() as u64 {
        let at = start + Duration::from_millis(i);
        let now = Instant::now();
        if now >= start + duration {
            break;
        }
        if at > now {
            std::thread::sleep(at - now); // pacing the load, not synchronising
        }
        out.write_all(&batch).expect("write PUBLISH commands");
        published.fetch_add(BATCH, Ordering::Release);
    }
    let took = start.elapsed();
    done.store(true, Ordering::Release);
    let (replies, delivered) = reader.join().expect("the reply reader");
    Flooded {
        published: published.load(Ordering::Acquire),
        replies,
        delivered,
        took,
    }
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

/// A publish flood on a room's channel from "another node" (about 100,000 publishes of 1 KiB
/// a second for 3 s, about 300 MB) into a `wsm serve` node with 8 members on that room and a
/// busy local room besides: the node's resident memory grows by less than 96 MiB, and what it
/// could not fan out is dropped and counted (`wsm_server_backplane_dropped`).
#[actix_rt::test]
async fn publish_flood_from_another_node_keeps_memory_bounded() {
    const MAX_GROWTH_KB: u64 = 96 * 1024;
    const FLOOD: Duration = Duration::from_secs(3);
    let redis = RedisServer::start();
    let url = redis.url();
    let (child, lines) = spawn_wsm_serve_lines(
        &[
            "--bind",
            "127.0.0.1:0",
            "--redis",
            &url,
            "--node-id",
            "flooded",
            "--metrics-bind",
            "127.0.0.1:0",
            "--session-queue-bytes",
            "262144",
            "--redis-buffer",
            "1024",
            // NEW (issue 18).
            "--redis-buffer-bytes",
            "1048576",
        ],
        3,
    );
    let pid = child.0.as_ref().expect("the child").id();
    let (rooms_url, metrics_url) = (lines[0].clone(), lines[2].clone());

    let (stop_tx, stop) = tokio::sync::watch::channel(false);
    let mut readers = Vec::new();
    for _ in 0..8 {
        let peer = raw_member(&rooms_url, "hot").await;
        readers.push(actix_rt::spawn(drain(peer.framed, stop.clone(), WAIT * 3)));
    }
    for _ in 0..2 {
        let peer = raw_member(&rooms_url, "busy").await;
        readers.push(actix_rt::spawn(drain(peer.framed, stop.clone(), WAIT * 3)));
    }
    let busy = raw_member(&rooms_url, "busy").await;
    let baseline = rss_kb(pid);

    // RSS every 100 ms until told to stop (bounded).
    let sampling = Arc::new(AtomicBool::new(true));
    let sampler = {
        let sampling = sampling.clone();
        std::thread::spawn(move || {
            let mut peak = 0;
            for _ in 0..600 {
                peak = peak.max(rss_kb(pid));
                if !sampling.load(Ordering::Acquire) {
                    break;
                }
                std::thread::sleep(Duration::from_millis(100)); // the sampling period
            }
            peak
        })
    };

    let frame = format!(
        r#"{{"type":"message","room":"hot","from":"x","data":{{"n":1,"pad":"{}"}},"timestamp":"2026-01-01T00:00:00Z"}}"#,
        "p".repeat(900)
    );
    let payload = format!("other-node\n{frame}").into_bytes();
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
    let publish_busy = async {
        let mut n = 0u64;
        while !flood_done.get() && n < 10_000_000 {
            let publish = format!(r#"{{"type":"publish","room":"busy","data":{{"n":{n}}}}}"#);
            sink.feed(text(publish)).await.expect("busy: publish");
            n += 1;
            if n.is_multiple_of(32) {
                sink.flush().await.expect("busy: flush");
            }
        }
        n
    };
    let (flooded, busy_sent) = tokio::join!(flood, publish_busy);
    drop(sink);

    // Wait (bounded) until the node has accounted for every message Redis delivered to it, or,
    // when Redis cut the node off (a subscriber too slow for Redis's output buffer limit, whose
    // backlog Redis then drops), until its figures stop moving.
    let mut figures = (0.0, 0.0, 0.0);
    let mut last_sum = -1.0;
    let settled = eventually(WAIT, async || {
        let (m, _) = prom::scrape(&metrics_url).await;
        figures = (
            prom::get(&m, "wsm_server_backplane_received_total"),
            prom::get(&m, "wsm_server_backplane_dropped_total"),
            prom::get(&m, "wsm_server_backplane_reconnects_total"),
        );
        let (received, dropped, reconnects) = figures;
        let sum = received + dropped;
        let still = sum == last_sum;
        last_sum = sum;
        (sum >= flooded.delivered as f64 || (reconnects > 0.0 && still))
            .then_some(())
            .ok_or_else(|| format!("received {received} + dropped {dropped}"))
    })
    .await;
    sampling.store(false, Ordering::Release);
    let peak = sampler.join().expect("the RSS sampler");
    let _ = stop_tx.send(true);
    let mut closed = 0;
    for reader in readers {
        if let Ok((_, Some(_))) = reader.await {
            closed += 1;
        }
    }
    let (received, dropped, reconnects) = figures;
    eprintln!(
        "publish flood: {} published in {:?} ({:.0}/s), {} delivered by Redis to the node; \
         node received {received}, dropped {dropped}, reconnects {reconnects}; RSS baseline \
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
    // Unless Redis cut the node off, every message Redis delivered to it is fanned out or
    // dropped and counted.
    settled.unwrap_or_else(|e| {
        panic!(
            "{} messages delivered by Redis, the node accounts for fewer: {e}",
            flooded.delivered
        )
    });
    // A node that could not keep up dropped and counted the excess, or was cut off by Redis
    // (its output buffer limit for subscribers; Redis drops that backlog) and counted the
    // reconnect.
    if received < flooded.delivered as f64 {
        assert!(
            dropped > 0.0 || reconnects > 0.0,
            "the node did not keep up ({received} of {}) and counted neither a drop nor a \
             reconnect",
            flooded.delivered
        );
    }
}

/// Node A reaches Redis through a link throttled to about 200 KB/s each way (slow, but
/// live), with a 500 ms Redis timeout; a client on A publishes 150 messages of 10 KB at once
/// (1.5 MB: about 7.5 s on that link). Every publish is acknowledged (none
/// `backplane_unavailable`), A never counts its link lost, and B's member gets all 150 in
/// order.
#[actix_rt::test]
async fn throttled_link_is_slow_not_dead() {
    const N: u64 = 150;
    let redis = RedisServer::start();
    let proxy = FaultProxy::start(redis_addr(&redis))
        .await
        .expect("proxy starts");
    let a = node(format!("redis://{}", proxy.addr()), "a");
    let b = node(redis.url(), "b");
    let (_b1, mut b_in) = member::<Big>(&b, "r").await;
    let publisher = raw_member(&a.url(), "r").await;
    proxy.throttle(200_000);

    let start = Instant::now();
    let (mut sink, mut stream) = publisher.framed.split();
    let pad = "x".repeat(10_000);
    for n in 0..N {
        let publish = format!(
            r#"{{"type":"publish","room":"r","event":"big","id":{n},"data":{{"n":{n},"pad":"{pad}"}}}}"#
        );
        sink.feed(text(publish)).await.expect("publish");
    }
    sink.flush().await.expect("flush");
    // The answers, in any order with the publisher's own copies (bounded: 1.5 MB at 200 KB/s
    // is 7.5 s; allow for a busy machine).
    let deadline = start + Duration::from_secs(30);
    let mut answers: BTreeMap<u64, Value> = BTreeMap::new();
    while (answers.len() as u64) < N {
        let next = tokio::time::timeout_at(deadline.into(), stream.next())
            .await
            .unwrap_or_else(|_| {
                panic!(
                    "{} of {N} publishes answered after {:?}",
                    answers.len(),
                    start.elapsed()
                )
            });
        match next {
            Some(Ok(Frame::Text(t))) => {
                let v: Value = serde_json::from_slice(&t).expect("JSON");
                if v["type"] == "ack" || v["type"] == "error" {
                    answers.insert(v["id"].as_u64().expect("an id"), v);
                }
            }
            Some(Ok(_)) => {}
            other => panic!("the publisher's stream ended: {other:?}"),
        }
    }
    let took = start.elapsed();
    let refused: Vec<&Value> = answers.values().filter(|v| v["type"] != "ack").collect();
    let stats = a.stats().await.expect("stats of a");
    eprintln!(
        "throttled link: {N} publishes of 10 KB answered in {took:?}, {} refused (first: {:?}); \
         {} bytes up through the proxy; node a: {stats:?}",
        refused.len(),
        refused.first(),
        proxy.bytes_up(),
    );
    assert!(
        refused.is_empty(),
        "{} of {N} refused, first {:?}",
        refused.len(),
        refused[0]
    );
    assert_eq!(
        stats.backplane_disconnects, 0,
        "a slow link is not a lost one"
    );
    assert_eq!(stats.backplane_publish_errors, 0);
    for n in 0..N {
        let m = next_matching(&mut b_in, "the next message on b", WAIT, |_| true)
            .await
            .unwrap_or_else(|e| panic!("b's member got {n} of {N}: {e}"));
        assert_eq!(m.data.n, n, "b's member gets every message once, in order");
    }
}

/// Receive from `rx` into `got` until `pred` accepts a message's `n` (answers true) or
/// `deadline` passes (answers false).
async fn receive_until(
    rx: &mut tokio::sync::mpsc::Receiver<Inbound<Seq>>,
    got: &RefCell<Vec<u64>>,
    deadline: Instant,
    pred: &dyn Fn(u64) -> bool,
) -> bool {
    for _ in 0..1_000_000 {
        let left = deadline.saturating_duration_since(Instant::now());
        match next_matching(rx, "a message on b", left, |_| true).await {
            Ok(m) => {
                got.borrow_mut().push(m.data.n);
                if pred(m.data.n) {
                    return true;
                }
            }
            Err(Error::Timeout { .. }) => return false,
            Err(e) => panic!("b's member: {e}"),
        }
    }
    false
}

/// Node A reaches Redis through a proxy, B directly, both with a 500 ms Redis timeout. A
/// client on A publishes numbered messages without waiting for answers; A's link stalls
/// (nothing passes, every socket stays open) for 1.3 s, longer than the timeout, then comes
/// back; publishing goes on until B's member gets messages published after that. B's member
/// gets one publisher's messages in strictly increasing order (what was published during the
/// stall may be lost, never duplicated or reordered), and every acknowledged one.
#[actix_rt::test]
async fn order_survives_a_stall_and_reconnect() {
    order_across(Fault::Blackhole, "stall").await;
}

/// As [`order_survives_a_stall_and_reconnect`], but for 1.3 s A's link carries everything
/// 3 s late instead of nothing (as when the old connection's retransmissions back off while a
/// new connection gets through at once): what the old connection sent before the node gave up
/// on it reaches Redis up to 3 s after the link is healthy again, after the new connection's
/// publishes. B's member still gets one publisher's messages in strictly increasing order, and
/// every acknowledged one.
#[actix_rt::test]
async fn order_survives_a_late_link_and_reconnect() {
    order_across(Fault::Delay(Duration::from_secs(3)), "late link").await;
}

/// The body of the order tests: `fault` on A's link for 1.3 s mid-stream.
async fn order_across(fault: Fault, label: &str) {
    const MAX: u64 = 20_000;
    const STALL: Duration = Duration::from_millis(1_300);
    let redis = RedisServer::start();
    let proxy = FaultProxy::start(redis_addr(&redis))
        .await
        .expect("proxy starts");
    let a = node(format!("redis://{}", proxy.addr()), "a");
    let b = node(redis.url(), "b");
    let (_b1, mut b_in) = member::<Seq>(&b, "seq").await;
    let publisher = raw_member(&a.url(), "seq").await;
    let (mut sink, mut stream) = publisher.framed.split();

    let sent = Cell::new(0u64);
    let stop = Cell::new(false);
    let answers: RefCell<BTreeMap<u64, String>> = RefCell::new(BTreeMap::new());
    let got: RefCell<Vec<u64>> = RefCell::new(Vec::new());
    // Bursts of 20 every 5 ms (about 4,000 a second), until told to stop.
    let write = async {
        let mut tick = tokio::time::interval(Duration::from_millis(5));
        while !stop.get() && sent.get() < MAX {
            tick.tick().await;
            for _ in 0..20 {
                let n = sent.get();
                let publish = format!(
                    r#"{{"type":"publish","room":"seq","event":"seq","id":{n},"data":{{"n":{n}}}}}"#
                );
                sink.feed(text(publish)).await.expect("publish");
                sent.set(n + 1);
            }
            sink.flush().await.expect("flush");
        }
    };
    let read = async {
        loop {
            match stream.next().await {
                Some(Ok(Frame::Text(t))) => {
                    let v: Value = serde_json::from_slice(&t).expect("JSON");
                    if v["type"] == "ack" || v["type"] == "error" {
                        let code = v["data"]["code"].as_str().unwrap_or("ack").to_owned();
                        answers
                            .borrow_mut()
                            .insert(v["id"].as_u64().expect("an id"), code);
                    }
                }
                Some(Ok(_)) => {}
                other => panic!("the publisher's stream ended: {other:?}"),
            }
        }
    };
    let mut sent_before_pass = 0;
    let control = async {
        assert!(
            receive_until(&mut b_in, &got, Instant::now() + WAIT, &|n| n >= 200).await,
            "b gets a's messages before the stall"
        );
        match fault {
            Fault::Blackhole => proxy.blackhole(),
            Fault::Delay(by) => proxy.delay(by),
            Fault::Throttle(rate) => proxy.throttle(rate),
            Fault::Pass => proxy.pass(),
        }
        // The fault lasts STALL; B's member is read meanwhile.
        assert!(!receive_until(&mut b_in, &got, Instant::now() + STALL, &|_| false).await);
        sent_before_pass = sent.get();
        proxy.pass();
        let passed = Instant::now();
        let resumed =
            receive_until(&mut b_in, &got, passed + WAIT, &|n| n >= sent_before_pass).await;
        // What the proxy had read before the fault ended reaches Redis up to `late` after it;
        // publishing goes on until then (and a little), so B's member gets it among newer ones.
        let late = match fault {
            Fault::Delay(by) => by,
            _ => Duration::ZERO,
        };
        let landed = passed + late + Duration::from_millis(300);
        receive_until(&mut b_in, &got, landed, &|_| false).await;
        stop.set(true);
        resumed
    };
    let resumed = tokio::select! {
        ((), resumed) = async { tokio::join!(write, control) } => resumed,
        () = read => unreachable!(),
    };
    // Every publish answered (bounded), then B has everything up to the last acknowledged.
    let deadline = Instant::now() + WAIT;
    while (answers.borrow().len() as u64) < sent.get() {
        let next = tokio::time::timeout_at(deadline.into(), stream.next())
            .await
            .unwrap_or_else(|_| panic!("{} of {} answered", answers.borrow().len(), sent.get()));
        if let Some(Ok(Frame::Text(t))) = next {
            let v: Value = serde_json::from_slice(&t).expect("JSON");
            if v["type"] == "ack" || v["type"] == "error" {
                let code = v["data"]["code"].as_str().unwrap_or("ack").to_owned();
                answers
                    .borrow_mut()
                    .insert(v["id"].as_u64().expect("an id"), code);
            }
        }
    }
    let answers = answers.into_inner();
    let last_acked = answers
        .iter()
        .rev()
        .find(|(_, c)| *c == "ack")
        .map(|(n, _)| *n);
    if let Some(last) = last_acked {
        if got.borrow().last().is_none_or(|n| *n < last) {
            receive_until(&mut b_in, &got, Instant::now() + WAIT, &|n| n >= last).await;
        }
    }
    let got = got.into_inner();
    let mut codes: BTreeMap<&str, u64> = BTreeMap::new();
    for code in answers.values() {
        *codes.entry(code).or_default() += 1;
    }
    let refused_but_delivered = got
        .iter()
        .filter(|n| answers.get(n).is_some_and(|c| c != "ack"))
        .count();
    let stats = a.stats().await.expect("stats of a");
    let b_stats = b.stats().await.expect("stats of b");
    let backwards: Vec<(u64, u64)> = got
        .windows(2)
        .filter(|w| w[1] <= w[0])
        .map(|w| (w[0], w[1]))
        .take(10)
        .collect();
    eprintln!(
        "{label}: {} published ({sent_before_pass} before the link came back), answers {codes:?}; \
         b got {} (first after the stall {:?}), {refused_but_delivered} of them answered as \
         refused; out of order (first 10): {backwards:?}; node a: disconnects {}, publish \
         errors {}; node b: slow consumers cut {}",
        sent.get(),
        got.len(),
        got.iter().find(|n| **n >= sent_before_pass),
        stats.backplane_disconnects,
        stats.backplane_publish_errors,
        b_stats.slow_consumer_disconnects,
    );
    assert!(resumed, "b gets what a publishes after the link is back");
    assert!(
        backwards.is_empty(),
        "b's member gets a's messages in strictly increasing order: {backwards:?}"
    );
    let missing: Vec<u64> = answers
        .iter()
        .filter(|(n, c)| *c == "ack" && got.binary_search(n).is_err())
        .map(|(n, _)| *n)
        .take(10)
        .collect();
    assert!(
        missing.is_empty(),
        "acknowledged but never delivered: {missing:?}"
    );
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
