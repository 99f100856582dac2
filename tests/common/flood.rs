//! Helpers of the bounded-client tests (tests/client_bounded.rs, tests/client_backpressure.rs):
//! a raw server that floods a client with unmasked frames as fast as TCP takes them, a slow
//! actor subscriber, the messages they carry, and this process's peak RSS.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::prelude::*;
use actix_ws_manager::client::{connect, Client, ConnectionState, Event, Inbound, Overflow};
use actix_ws_manager::config::{ClientConfig, HeartbeatConfig};
use actix_ws_manager::WireMessage;
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use super::oversize::vm_rss_kb;
use super::{client_test_config, WAIT};

/// One test at a time: they measure the whole process's memory.
pub static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// A tick: `{"type":"tick","data":{"seq":N,"pad":"..."}}`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Tick {
    pub seq: u64,
    #[serde(default)]
    pub pad: String,
}
impl WireMessage for Tick {
    const TYPE: &'static str = "tick";
}

/// A large typed message: 64 KiB of numbers the Router decodes.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Bulk {
    pub seq: u64,
    pub values: Vec<u32>,
}
impl WireMessage for Bulk {
    const TYPE: &'static str = "bulk";
}

/// An unmasked server text frame holding `payload`.
pub fn text_frame(payload: &[u8]) -> Vec<u8> {
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
pub async fn accept_raw(listener: &TcpListener) -> TcpStream {
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
pub struct Flood {
    pub written: AtomicU64,
    pub done: AtomicBool,
}

/// Write frames made by `frame(i)` to `tcp` (with `constant`, the first chunk's frames again and
/// again) until `total` bytes, `bound` time, or an empty frame, in chunks of about 256 KiB, counting the bytes written; then close the socket (the
/// client sees it lost). Client frames (its pongs, its close) are read and thrown away, so the
/// client's writes never stall.
pub async fn flood(
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
pub fn flood_exactly(
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
pub async fn wait_for_read_pause(client: &Client) {
    let deadline = Instant::now() + WAIT;
    while client.stats().read_pauses == 0 {
        assert!(Instant::now() < deadline, "the client never paused reading");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Sample this process's RSS every 10 ms until `stop` is set; answers the peak in kB.
pub fn sample_peak_rss(stop: Arc<AtomicBool>) -> std::thread::JoinHandle<u64> {
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
pub struct SlowActor {
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
pub struct Slow {
    pub addr: Addr<SlowActor>,
    pub seen: Arc<AtomicU64>,
    pub seen_rx: tokio::sync::watch::Receiver<u64>,
    pub disorder: Arc<AtomicU64>,
}

/// Start a `SlowActor` on an arbiter of its own.
pub fn slow_actor(arbiter: &Arbiter, hold: Option<std::sync::mpsc::Receiver<()>>) -> Slow {
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
pub fn tick(seq: u64, pad: usize) -> Vec<u8> {
    let text = format!(
        r#"{{"type":"tick","data":{{"seq":{seq},"pad":"{}"}}}}"#,
        "x".repeat(pad)
    );
    text_frame(text.as_bytes())
}

/// A client for a flood: the test configuration, never reconnecting.
pub fn flood_config() -> ClientConfig {
    // The flood is the only traffic; nothing to reconnect to afterwards.
    client_test_config().reconnect(actix_ws_manager::config::ReconnectPolicy::never())
}

/// Numbers in one [`Bulk`] message (about 64 KiB of JSON).
pub const BULK_VALUES: usize = 9_000;

/// The server closed after its flood: wait until the client has ended (reconnection is off),
/// then until its Router has routed everything the Connection read (a request to the Router is
/// answered after every message queued before it), and answer the final counters.
pub async fn routed(client: &Client) -> actix_ws_manager::client::Stats {
    tokio::time::timeout(WAIT, client.closed())
        .await
        .expect("the client saw the server close");
    // The Router stops after the terminal state; before that it routed all it was handed.
    let _ = tokio::time::timeout(WAIT, client.subscriber_count()).await;
    client.stats()
}
