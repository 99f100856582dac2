//! Every path from the socket to user code is bounded: a raw server floods the client as fast
//! as TCP takes it, and whatever the subscriber does (an actor that takes 1 ms per message on
//! its own arbiter, a channel nobody reads, a Router busy decoding 64 KiB messages into a typed
//! struct), the client's resident memory stays bounded and what was not delivered is counted.
//! With `Overflow::Backpressure` nothing is dropped: the client stops reading, the server's
//! writes stall, and everything arrives in order once the subscriber catches up. And every ping
//! gets its pong, in order, even when a thousand arrive in one write.
//!
//! The tests measure this process's RSS, so they take turns (`SERIAL`).

mod common;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::prelude::*;
use actix_ws_manager::client::{connect, Client, ConnectionState, Event, Inbound, Overflow};
use actix_ws_manager::config::{ClientConfig, HeartbeatConfig};
use actix_ws_manager::WireMessage;
use common::oversize::vm_rss_kb;
use common::{client_test_config, WAIT};
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// One test at a time: they measure the whole process's memory.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Peak RSS growth allowed while a flood runs.
const MAX_GROWTH_KB: u64 = 64 * 1024;

/// A tick: `{"type":"tick","data":{"seq":N,"pad":"..."}}`.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Tick {
    seq: u64,
    #[serde(default)]
    pad: String,
}
impl WireMessage for Tick {
    const TYPE: &'static str = "tick";
}

/// A large typed message: 64 KiB of numbers the Router decodes.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Bulk {
    seq: u64,
    values: Vec<u32>,
}
impl WireMessage for Bulk {
    const TYPE: &'static str = "bulk";
}

/// An unmasked server text frame holding `payload`.
fn text_frame(payload: &[u8]) -> Vec<u8> {
    let mut f = vec![0x81];
    match payload.len() {
        n if n < 126 => f.push(n as u8),
        n if n <= u16::MAX as usize => {
            f.push(126);
            f.extend_from_slice(&(n as u16).to_be_bytes());
        }
        n => {
            f.push(127);
            f.extend_from_slice(&(n as u64).to_be_bytes());
        }
    }
    f.extend_from_slice(payload);
    f
}

/// Accept one WebSocket client on `listener` and hand back the raw TCP stream after the
/// handshake (tokio-tungstenite does the handshake; the flood is written as raw bytes).
async fn accept_raw(listener: &TcpListener) -> TcpStream {
    let (tcp, _) = tokio::time::timeout(WAIT, listener.accept())
        .await
        .expect("no client in time")
        .expect("accept");
    let ws = tokio::time::timeout(WAIT, tokio_tungstenite::accept_async(tcp))
        .await
        .expect("no handshake in time")
        .expect("handshake");
    ws.into_inner()
}

/// What the flooding server did.
#[derive(Debug, Default)]
struct Flood {
    written: AtomicU64,
    done: AtomicBool,
}

/// Write frames made by `frame(i)` to `tcp` (with `constant`, the first chunk's frames again and
/// again) until `total` bytes, `bound` time, or an empty frame, in chunks of about 256 KiB, counting the bytes written; then close the socket (the
/// client sees it lost). Client frames (its pongs, its close) are read and thrown away, so the
/// client's writes never stall.
async fn flood(
    tcp: TcpStream,
    total: u64,
    bound: Duration,
    progress: Arc<Flood>,
    constant: bool,
    mut frame: impl FnMut(u64) -> Vec<u8>,
) {
    let (mut rd, mut wr) = tcp.into_split();
    let drain = tokio::spawn(async move {
        let mut buf = vec![0u8; 64 * 1024];
        while let Ok(n) = rd.read(&mut buf).await {
            if n == 0 {
                break;
            }
        }
    });
    let deadline = Instant::now() + bound;
    let mut i = 0;
    let mut chunk = Vec::with_capacity(300 * 1024);
    let mut last = false;
    // A generator that answers the same frame twice in a row is asked once per chunk: the
    // chunk is then that frame repeated (cheap to make in a debug build).
    while !last && progress.written.load(Ordering::Relaxed) < total && Instant::now() < deadline {
        if !constant || chunk.is_empty() {
            chunk.clear();
            while chunk.len() < 256 * 1024 {
                let f = frame(i);
                i += 1;
                if f.is_empty() {
                    last = true;
                    break;
                }
                chunk.extend_from_slice(&f);
            }
        }
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, wr.write_all(&chunk)).await {
            Ok(Ok(())) => {
                progress
                    .written
                    .fetch_add(chunk.len() as u64, Ordering::Relaxed);
            }
            Ok(Err(_)) | Err(_) => break,
        }
    }
    progress.done.store(true, Ordering::Relaxed);
    // A FIN, then read on until the client closes too: closing a socket with unread bytes
    // sends a reset, which can discard what the client has not read yet.
    let _ = wr.shutdown().await;
    let _ = tokio::time::timeout(WAIT * 3, drain).await;
}

/// Spawn a server that writes exactly `frame(0)` .. `frame(n - 1)` to `tcp`, then closes it;
/// answers its task, its progress and the bytes it will write in all.
fn flood_exactly(
    tcp: TcpStream,
    n: u64,
    frame: impl Fn(u64) -> Vec<u8> + 'static,
) -> (actix_rt::task::JoinHandle<()>, Arc<Flood>, u64) {
    let total: u64 = (0..n).map(|i| frame(i).len() as u64).sum();
    let progress = Arc::new(Flood::default());
    let mut i = 0u64;
    let more = move |_| {
        i += 1;
        if i <= n {
            frame(i - 1)
        } else {
            Vec::new() // the end: `flood` stops at an empty frame
        }
    };
    let server = actix_rt::spawn(flood(tcp, total, WAIT * 6, progress.clone(), false, more));
    (server, progress, total)
}

/// Wait, within [`WAIT`], until `client` has paused reading its socket at least once (a
/// counter, polled: there is no event for it).
async fn wait_for_read_pause(client: &Client) {
    let deadline = Instant::now() + WAIT;
    while client.stats().read_pauses == 0 {
        assert!(Instant::now() < deadline, "the client never paused reading");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Sample this process's RSS every 10 ms until `stop` is set; answers the peak in kB.
fn sample_peak_rss(stop: Arc<AtomicBool>) -> std::thread::JoinHandle<u64> {
    std::thread::spawn(move || {
        let mut peak = vm_rss_kb();
        while !stop.load(Ordering::Relaxed) {
            peak = peak.max(vm_rss_kb());
            std::thread::sleep(Duration::from_millis(10));
        }
        peak.max(vm_rss_kb())
    })
}

/// A subscriber that takes 1 ms per message (a handler that writes to a database, say), on an
/// arbiter of its own. With `hold`, it first waits until the test lets it go.
struct SlowActor {
    seen: Arc<AtomicU64>,
    /// The count of messages handled, for waiting on.
    seen_tx: tokio::sync::watch::Sender<u64>,
    /// Sequence numbers out of order or missing (only checked for `Tick`s).
    disorder: Arc<AtomicU64>,
    next: u64,
    hold: Option<std::sync::mpsc::Receiver<()>>,
    per_message: Duration,
}

impl Actor for SlowActor {
    type Context = Context<Self>;
}

impl Handler<Inbound<Tick>> for SlowActor {
    type Result = ();
    fn handle(&mut self, msg: Inbound<Tick>, _: &mut Context<Self>) {
        if let Some(hold) = self.hold.take() {
            // Blocks this actor's own arbiter only: the client's stops being read meanwhile.
            let _ = hold.recv_timeout(Duration::from_secs(30));
        }
        if msg.data.seq != self.next {
            self.disorder.fetch_add(1, Ordering::Relaxed);
        }
        self.next = msg.data.seq + 1;
        // The simulated work of the handler.
        std::thread::sleep(self.per_message);
        let n = self.seen.fetch_add(1, Ordering::Relaxed) + 1;
        self.seen_tx.send_replace(n);
    }
}

impl Handler<Inbound<Bulk>> for SlowActor {
    type Result = ();
    fn handle(&mut self, msg: Inbound<Bulk>, _: &mut Context<Self>) {
        assert_eq!(msg.data.values.len(), BULK_VALUES);
        std::thread::sleep(self.per_message);
        self.seen.fetch_add(1, Ordering::Relaxed);
    }
}

/// A started [`SlowActor`] and what the test reads of it.
struct Slow {
    addr: Addr<SlowActor>,
    seen: Arc<AtomicU64>,
    seen_rx: tokio::sync::watch::Receiver<u64>,
    disorder: Arc<AtomicU64>,
}

/// Start a `SlowActor` on an arbiter of its own.
fn slow_actor(arbiter: &Arbiter, hold: Option<std::sync::mpsc::Receiver<()>>) -> Slow {
    let seen = Arc::new(AtomicU64::new(0));
    let disorder = Arc::new(AtomicU64::new(0));
    let (seen_tx, seen_rx) = tokio::sync::watch::channel(0);
    let (s, d) = (seen.clone(), disorder.clone());
    let addr = SlowActor::start_in_arbiter(&arbiter.handle(), move |_| SlowActor {
        seen_tx,
        seen: s,
        disorder: d,
        next: 0,
        hold,
        per_message: Duration::from_millis(1),
    });
    Slow {
        addr,
        seen,
        seen_rx,
        disorder,
    }
}

/// A tick frame with sequence number `seq` and `pad` bytes of padding.
fn tick(seq: u64, pad: usize) -> Vec<u8> {
    let text = format!(
        r#"{{"type":"tick","data":{{"seq":{seq},"pad":"{}"}}}}"#,
        "x".repeat(pad)
    );
    text_frame(text.as_bytes())
}

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

fn flood_config() -> ClientConfig {
    // The flood is the only traffic; nothing to reconnect to afterwards.
    client_test_config().reconnect(actix_ws_manager::config::ReconnectPolicy::never())
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

/// Numbers in one [`Bulk`] message (about 64 KiB of JSON).
const BULK_VALUES: usize = 9_000;
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

/// The server closed after its flood: wait until the client has ended (reconnection is off),
/// then until its Router has routed everything the Connection read (a request to the Router is
/// answered after every message queued before it), and answer the final counters.
async fn routed(client: &Client) -> actix_ws_manager::client::Stats {
    tokio::time::timeout(WAIT, client.closed())
        .await
        .expect("the client saw the server close");
    // The Router stops after the terminal state; before that it routed all it was handed.
    let _ = tokio::time::timeout(WAIT, client.subscriber_count()).await;
    client.stats()
}

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
