//! Memory given back after a large message (issue 17, test 4): 50 connections each move one
//! 8 MiB message, then go idle, and the process under test returns to within 10 % of the RSS it
//! had with the same 50 connections idle before the big messages.
//!
//! RSS is per process, so the side under test runs in a child process of its own and is read
//! from `/proc/<pid>/status`: the built `wsm serve` for the server side, and this test binary
//! re-executed as a child running 50 library clients for the client side. The peers (raw
//! tokio-tungstenite) stay in the test process, whose memory is not measured.
#![cfg(target_os = "linux")]

mod common;

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::Message;

use common::{KillOnDrop, WAIT};

/// Connections, each moving one big message.
const CONNECTIONS: usize = 50;
/// The big message.
const BIG: usize = 8 * 1024 * 1024;
/// The message limit given to both sides (above [`BIG`]).
const LIMIT: usize = 16 * 1024 * 1024;
/// RSS after the big messages may exceed the idle figure by at most this fraction.
const TOLERANCE: f64 = 0.10;
/// How long the process under test may take to settle after the last big message.
const SETTLE: Duration = Duration::from_secs(10);
/// Names another `wsm` binary to measure (`target/release/wsm` for `BENCHMARKS.md`); the one
/// built with the tests otherwise.
const WSM_BIN: &str = "WSM_MEMORY_TEST_BIN";
/// Set in the re-executed child of the client test: the URL its clients connect to.
const CHILD_URL: &str = "WSM_MEMORY_TEST_CHILD_URL";

/// The big payload: a pattern that is not all zeros (so a message that came back wrong is
/// noticed), built once and shared by every sender.
fn big_payload() -> Bytes {
    (0..BIG)
        .map(|i| (i % 251) as u8)
        .collect::<Vec<u8>>()
        .into()
}

/// The warm-up message, small: the idle figure is that of connections that have carried next to
/// nothing, so whatever a big message leaves behind shows.
fn warm() -> Bytes {
    Bytes::from_static(b"warm")
}

/// A line of `/proc/<pid>/status` in kB.
fn status_kb(pid: u32, field: &str) -> u64 {
    let path = format!("/proc/{pid}/status");
    let status = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("read {path}: {e}"));
    status
        .lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or_else(|| panic!("no {field} line in kB in {path}"))
}

/// The resident set size of process `pid`, in kB.
fn rss_kb(pid: u32) -> u64 {
    status_kb(pid, "VmRSS")
}

/// Poll the RSS of `pid` until it is within [`TOLERANCE`] of `idle` or [`SETTLE`] has passed;
/// answers the last figure. This is not synchronisation (every message was already delivered
/// and checked when it is called): it measures a settling process, the allocator giving pages
/// back, which has no event to wait on.
async fn settled_rss_kb(pid: u32, idle: u64) -> u64 {
    let bound = (idle as f64 * (1.0 + TOLERANCE)) as u64;
    let deadline = Instant::now() + SETTLE;
    loop {
        let rss = rss_kb(pid);
        if rss <= bound || Instant::now() >= deadline {
            return rss;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Start `wsm serve` with `args`; answers the child and its echo URL (second stdout line).
fn spawn_serve(args: &[&str]) -> (KillOnDrop, String) {
    let bin = std::env::var_os(WSM_BIN).unwrap_or_else(|| env!("CARGO_BIN_EXE_wsm").into());
    let (child, mut lines) = common::process::spawn_serve_of(&bin, args, 2);
    (child, lines.remove(1))
}

/// Samples the RSS of `pid` every 10 ms on a thread until [`finish`](Self::finish): the peak
/// while the big messages are in flight, which shows that they were really held (`VmHWM` is
/// not kept up to date for memory that is unmapped again).
struct PeakSampler {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    thread: std::thread::JoinHandle<u64>,
}

impl PeakSampler {
    fn start(pid: u32) -> Self {
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::spawn(move || {
            let mut peak = 0;
            while !flag.load(std::sync::atomic::Ordering::Relaxed) {
                peak = peak.max(rss_kb(pid));
                std::thread::sleep(Duration::from_millis(10));
            }
            peak.max(rss_kb(pid))
        });
        Self { stop, thread }
    }

    fn finish(self) -> u64 {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        self.thread.join().expect("sampler")
    }
}

fn ws_config() -> WebSocketConfig {
    WebSocketConfig::default()
        .max_message_size(Some(LIMIT))
        .max_frame_size(Some(LIMIT))
}

/// Print the figures and check the settled one. `peak` (sampled) shows that the big messages
/// were really held at some point.
fn check_figures(side: &str, idle: u64, peak: u64, after: u64) {
    let per_connection = |kb: u64| (kb as f64 - idle as f64) / CONNECTIONS as f64;
    eprintln!(
        "{side}: idle {idle} kB, peak {peak} kB ({:+.0} kB per connection), then idle again \
         {after} kB ({:+.1} kB per connection)",
        per_connection(peak),
        per_connection(after),
    );
    assert!(
        peak >= idle + (BIG / 1024) as u64,
        "{side}: the peak {peak} kB never held even one big message over the idle {idle} kB"
    );
    assert!(
        after as f64 <= idle as f64 * (1.0 + TOLERANCE),
        "{side}: RSS {after} kB stayed more than {:.0} % above its idle {idle} kB",
        TOLERANCE * 100.0
    );
}

/// 50 `wsm serve` sessions each echo one 8 MiB binary message back intact, then idle: the
/// server's RSS returns to within 10 % of its figure with the same 50 sessions idle before.
#[actix_rt::test]
async fn server_gives_memory_back_after_large_echoes() {
    let limit = LIMIT.to_string();
    let (child, echo_url) = spawn_serve(&[
        "--bind",
        "127.0.0.1:0",
        "--max-message-size",
        &limit,
        // No pings during the test: an idle session must give memory back by itself, not
        // because a pong arrived.
        "--heartbeat-interval",
        "5m",
        "--heartbeat-timeout",
        "10m",
    ]);
    let pid = child.0.as_ref().expect("child").id();

    let mut peers = Vec::with_capacity(CONNECTIONS);
    for _ in 0..CONNECTIONS {
        let (ws, _) = tokio_tungstenite::connect_async_with_config(
            echo_url.as_str(),
            Some(ws_config()),
            false,
        )
        .await
        .expect("handshake");
        peers.push(ws);
    }
    // Every session has echoed a small message: started, and warm.
    for ws in &mut peers {
        ws.send(Message::Binary(warm())).await.expect("send");
        let back = tokio::time::timeout(WAIT, ws.next()).await.expect("echo");
        assert_eq!(back.expect("open").expect("echo"), Message::Binary(warm()));
    }
    let idle = rss_kb(pid);

    let big = big_payload();
    let sampler = PeakSampler::start(pid);
    let echoes = peers.iter_mut().map(|ws| {
        let big = big.clone();
        async move {
            ws.send(Message::Binary(big.clone())).await.expect("send");
            let back = tokio::time::timeout(WAIT * 2, ws.next())
                .await
                .expect("the big echo within 20 s");
            match back.expect("open").expect("echo") {
                Message::Binary(b) => assert!(b == big, "the echo differs"),
                other => panic!("expected the binary echo, got {other:?}"),
            }
        }
    });
    futures_util::future::join_all(echoes).await;
    let peak = sampler.finish();
    let after = settled_rss_kb(pid, idle).await;
    check_figures("server", idle, peak, after);
    drop(peers);
}

/// The client test's child process: 50 library clients connect to the URL in [`CHILD_URL`]
/// and say on stdout when they are ready (each received a small warm-up message) and when each
/// has received its big message (length and content checked, then dropped). It lives until
/// stdin closes.
fn client_child(url: &str) {
    use actix_ws_manager::client;
    actix_rt::System::new().block_on(async move {
        let mut clients = Vec::with_capacity(CONNECTIONS);
        for _ in 0..CONNECTIONS {
            let config = common::client_test_config().max_message_size(LIMIT);
            let c = client::connect(url, config).expect("client");
            let rx = c.subscribe_binary(2);
            clients.push((c, rx));
        }
        for (_, rx) in &mut clients {
            let warm = common::recv_within(rx, WAIT, "the warm-up message").await;
            assert_eq!(warm.data, crate::warm());
        }
        println!("wsm-memory: ready");
        let big = big_payload();
        for (_, rx) in &mut clients {
            let got = common::recv_within(rx, WAIT * 2, "the big message").await;
            assert!(got.data == big, "the big message differs");
        }
        drop(big);
        println!("wsm-memory: received");
        // Stay up, connected and idle, until the parent closes stdin.
        let (tx, rx) = tokio::sync::oneshot::channel();
        std::thread::spawn(move || {
            let _ = std::io::stdin().lines().count();
            let _ = tx.send(());
        });
        let _ = rx.await;
        drop(clients);
    });
}

/// 50 library clients each receive one 8 MiB binary message intact, then idle: the client
/// process's RSS returns to within 10 % of its figure with the same 50 connections idle before.
#[test]
fn client_gives_memory_back_after_large_messages() {
    if let Ok(url) = std::env::var(CHILD_URL) {
        return client_child(&url);
    }
    actix_rt::System::new().block_on(async {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let url = format!("ws://{}/", listener.local_addr().expect("addr"));
        let mut child = KillOnDrop(Some(
            Command::new(std::env::current_exe().expect("test binary"))
                .args([
                    "--exact",
                    "client_gives_memory_back_after_large_messages",
                    "--nocapture",
                    "--test-threads",
                    "1",
                ])
                .env(CHILD_URL, &url)
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .spawn()
                .expect("re-execute the test binary"),
        ));
        let process = child.0.as_mut().expect("child");
        let pid = process.id();
        let stdin = process.stdin.take().expect("stdin");
        // The child's progress lines, read on a thread (std pipes block).
        let (lines_tx, mut lines) = tokio::sync::mpsc::channel(16);
        let stdout = process.stdout.take().expect("stdout");
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                // libtest's "test <name> ... " may come first on the line.
                if let Some((_, event)) = line.split_once("wsm-memory: ") {
                    if lines_tx.blocking_send(event.to_owned()).is_err() {
                        break;
                    }
                }
            }
        });

        let mut peers = Vec::with_capacity(CONNECTIONS);
        for _ in 0..CONNECTIONS {
            let (tcp, _) = tokio::time::timeout(WAIT, listener.accept())
                .await
                .expect("the child connects")
                .expect("accept");
            let ws = tokio_tungstenite::accept_async_with_config(tcp, Some(ws_config()))
                .await
                .expect("handshake");
            peers.push(ws);
        }
        for ws in &mut peers {
            ws.send(Message::Binary(warm())).await.expect("send");
        }
        let ready = common::recv_within(&mut lines, WAIT, "the child's clients ready").await;
        assert_eq!(ready, "ready");
        let idle = rss_kb(pid);

        let big = big_payload();
        let sampler = PeakSampler::start(pid);
        let sends = peers
            .iter_mut()
            .map(|ws| ws.send(Message::Binary(big.clone())));
        for sent in futures_util::future::join_all(sends).await {
            sent.expect("send the big message");
        }
        drop(big);
        let received = common::recv_within(&mut lines, WAIT * 2, "every big message").await;
        assert_eq!(received, "received");
        let peak = sampler.finish();
        let after = settled_rss_kb(pid, idle).await;
        drop(stdin);
        let _ = std::io::stderr().flush();
        check_figures("client", idle, peak, after);
        drop(peers);
    });
}
