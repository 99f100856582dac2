//! Helpers of the Redis backplane tests (tests/backplane*.rs): in-process nodes sharing rooms
//! through a real `redis-server`, their members, a look at Redis from outside the nodes, polling
//! with a deadline, a child's resident memory, and a raw PUBLISH flood that acts as another node.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix_ws_manager::client::{self, Client, Inbound};
use actix_ws_manager::config::{ClientConfig, ServerConfig};
use actix_ws_manager::protocol::Joined;
use actix_ws_manager::server::backplane::{RedisBackplane, RedisConfig};
use actix_ws_manager::server::Rooms;
use actix_ws_manager::testkit::{next_matching, FaultProxy, TestServer};
use actix_ws_manager::WireMessage;
use awc::ws::Message;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::{test_config, Peer, RedisServer, WAIT};

/// A numbered message, as members decode it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Seq {
    pub n: u64,
}
impl WireMessage for Seq {
    const TYPE: &'static str = "seq";
}

/// The Redis operation timeout of the in-process nodes.
pub const TIMEOUT: Duration = Duration::from_millis(500);

/// A rooms server configuration with session queues long enough for the bursts that follow a
/// stalled or late backplane link (a member is not cut for them).
pub fn long_session_queues() -> ServerConfig {
    test_config().session_queue(65_536)
}

/// A node named `id` sharing rooms through the Redis at `url`, with Redis operation timeout
/// `timeout` and the rooms server configured by `config`.
pub fn node(url: String, id: &str, timeout: Duration, config: ServerConfig) -> TestServer {
    let id = id.to_owned();
    TestServer::start_with(move || {
        let backplane = RedisBackplane::new(
            RedisConfig::new(url.clone())
                .node_id(id.clone())
                .timeout(timeout),
        )?;
        Rooms::start_with_backplane(config.clone(), backplane)
    })
    .expect("node starts")
}

/// Two nodes on `redis` with [`TIMEOUT`] and [`long_session_queues`]: "a" reaches it through
/// a [`FaultProxy`] (answered first, to inject faults on A's link), "b" directly.
pub async fn proxied_pair(redis: &RedisServer) -> (FaultProxy, TestServer, TestServer) {
    proxied_pair_with(redis, TIMEOUT).await
}

/// [`proxied_pair`] with another Redis `timeout`.
pub async fn proxied_pair_with(
    redis: &RedisServer,
    timeout: Duration,
) -> (FaultProxy, TestServer, TestServer) {
    let proxy = FaultProxy::start(redis_addr(redis))
        .await
        .expect("proxy starts");
    let a = node(
        format!("redis://{}", proxy.addr()),
        "a",
        timeout,
        long_session_queues(),
    );
    let b = node(redis.url(), "b", timeout, long_session_queues());
    (proxy, a, b)
}

/// A client of `server` in `room`, subscribed to `T` (a queue of `capacity` messages);
/// `joined` (which, with a backplane, means this node receives the room) has arrived.
pub async fn member<T: WireMessage + Clone + std::fmt::Debug>(
    server: &TestServer,
    room: &str,
    capacity: usize,
) -> (Client, tokio::sync::mpsc::Receiver<Inbound<T>>) {
    let c = client::connect(&server.url(), ClientConfig::default()).expect("client");
    let seqs = c.subscribe::<T>(capacity);
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
pub async fn raw_member(url: &str, room: &str) -> Peer {
    let (mut peer, _) = Peer::rooms(url).await;
    peer.text(&format!(r#"{{"type":"join","room":"{room}","id":1}}"#))
        .await;
    let joined = peer.json().await;
    assert_eq!(joined["type"], "joined", "{joined}");
    peer
}

/// Read from `peer` until the `ack` or `error` answering envelope `id` (within [`WAIT`] and
/// 100,000 frames).
pub async fn answer(peer: &mut Peer, id: u64) -> Value {
    let deadline = Instant::now() + WAIT;
    for _ in 0..100_000 {
        assert!(Instant::now() < deadline, "no answer to publish {id}");
        let v = peer.json().await;
        if v["id"] == id && (v["type"] == "ack" || v["type"] == "error") {
            return v;
        }
    }
    panic!("no answer to publish {id} within 100000 frames");
}

/// `text` as a WebSocket text message.
pub fn text(text: String) -> Message {
    Message::Text(text.into())
}

/// The address of `redis` (for a `FaultProxy` in front of it, or a raw connection).
pub fn redis_addr(redis: &RedisServer) -> SocketAddr {
    redis
        .url()
        .strip_prefix("redis://")
        .and_then(|a| a.parse().ok())
        .expect("redis://host:port")
}

/// A sync connection to `redis`, to look at it from outside the nodes.
pub fn redis_conn(redis: &RedisServer) -> redis::Connection {
    redis::Client::open(redis.url())
        .expect("redis URL")
        .get_connection()
        .expect("a connection to redis-server")
}

/// `PUBSUB CHANNELS wsm:room:*`, sorted: the room channels some node subscribes.
pub fn room_channels(conn: &mut redis::Connection) -> Vec<String> {
    let mut channels: Vec<String> = redis::cmd("PUBSUB")
        .arg("CHANNELS")
        .arg("wsm:room:*")
        .query(conn)
        .expect("PUBSUB CHANNELS");
    channels.sort();
    channels
}

/// `PUBSUB NUMSUB channel`: how many connections subscribe `channel`.
pub fn subscribers(conn: &mut redis::Connection, channel: &str) -> u64 {
    let answer: Vec<(String, u64)> = redis::cmd("PUBSUB")
        .arg("NUMSUB")
        .arg(channel)
        .query(conn)
        .expect("PUBSUB NUMSUB");
    answer.first().map_or(0, |(_, n)| *n)
}

/// Poll `check` every 50 ms until it answers `Ok`, for at most `within`; the last `Err` says
/// what was still wrong.
pub async fn eventually<T>(
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

/// The resident set size (VmRSS) of process `pid` (a child), in kB.
pub fn rss_kb(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("/proc/pid/status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("a VmRSS line in kB")
}

/// The peak resident memory of a child process, sampled on a thread of its own.
pub struct PeakRss {
    sampling: Arc<AtomicBool>,
    sampler: std::thread::JoinHandle<u64>,
}

impl PeakRss {
    /// Sample the RSS of `pid` every 100 ms until [`stop`](Self::stop) (bounded: 600 samples).
    pub fn start(pid: u32) -> PeakRss {
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
        PeakRss { sampling, sampler }
    }

    /// Stop sampling; the highest RSS seen, in kB.
    pub fn stop(self) -> u64 {
        self.sampling.store(false, Ordering::Release);
        self.sampler.join().expect("the RSS sampler")
    }
}

/// What [`redis_flood`] did.
#[derive(Debug, Default)]
pub struct Flooded {
    /// PUBLISH commands written.
    pub published: u64,
    /// Replies read.
    pub replies: u64,
    /// The sum of the replies: deliveries Redis made to subscribers.
    pub delivered: u64,
    /// How long the publishing took.
    pub took: Duration,
}

/// Act as another node: PUBLISH `payload` to `channel` on a raw, pipelined connection to
/// `addr`, in batches of 100 every millisecond (about 100,000 a second) for `duration`, and
/// read every reply (bounded by [`WAIT`] after the end).
pub fn redis_flood(addr: SocketAddr, channel: &str, payload: &[u8], duration: Duration) -> Flooded {
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
    let input = out.try_clone().expect("clone the socket");
    let published = Arc::new(AtomicU64::new(0));
    let done = Arc::new(AtomicBool::new(false));
    let reader = {
        let (published, done) = (published.clone(), done.clone());
        std::thread::spawn(move || read_publish_replies(input, &published, &done))
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

/// The reader of [`redis_flood`]: read `:<receivers>` replies from `input` until `done` and
/// every one of `published` is answered (bounded by [`WAIT`] after `done`). Answers (replies,
/// the sum of the receivers).
fn read_publish_replies(
    mut input: TcpStream,
    published: &AtomicU64,
    done: &AtomicBool,
) -> (u64, u64) {
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
}
