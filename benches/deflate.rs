//! permessage-deflate figures (issue 23), each as deflate against plain in the same run.
//!
//! Run: `cargo bench --bench deflate` (about a minute on 2 cores), `cargo bench --bench
//! deflate -- --quick` for a smoke run. Scale with environment variables:
//!
//! | variable | default (quick) | meaning |
//! | --- | --- | --- |
//! | `DEFLATE_MSGS` | 30000 (2000) | feed messages echoed per variant (1 snapshot : 4 trades) |
//! | `DEFLATE_FEED_CONNS` | 4 | connections sharing the feed |
//! | `DEFLATE_WINDOW` | 8 | feed messages in flight per connection |
//! | `DEFLATE_MEMBERS` | 1000 (200) | room members for the broadcast point |
//! | `DEFLATE_BCAST_SECS` | 10 (3) | seconds of publishing for the broadcast point |
//! | `DEFLATE_RATE` | 20 | publishes per second for the broadcast point |
//! | `DEFLATE_IDLE` | 1000 (200) | idle connections for the memory point |
//! | `DEFLATE_MEM_RUNS` | 3 (1) | memory runs per variant, alternating; the table shows medians |
//! | `DEFLATE_ONLY` | all | comma-separated points: `feed`, `broadcast`, `memory` |
//!
//! Every server is [`server::serve`] with the default [`ServerConfig`] (deflate on; rooms at
//! `/ws`, echo at `/echo`) in a child process (this bench binary re-executed with `__serve`),
//! so that its CPU and RSS are measured apart; the clients are [`Manager`] clients, with the
//! default [`DeflateConfig`] ("deflate") or [`DeflateConfig::off`] ("plain"), against the same
//! server. Everything targets 127.0.0.1 and every wait is bounded.
//!
//! 1. Feed: market-data-like JSON (order-book snapshots of about 2 KiB, trades of 200-400
//!    bytes, prices and sizes moving per message) echoed by `/echo` through a
//!    [`FaultProxy`] in a child process of its own (`__proxy`), which counts the bytes each
//!    way; snapshots and trades run as separate phases so each gets its own bytes per message.
//!    CPU per message: this process (the clients) from `/proc/self/stat`, and the server
//!    child's from `/proc/<pid>/stat` (10 ms ticks).
//! 2. Broadcast: members join one room; member 0 publishes a feed message carrying its send
//!    time (`"t"`, µs) `DEFLATE_RATE` times a second; latency = publish to each member's
//!    receipt, all members, p50/p99, and how many receipts never came.
//! 3. Memory: a fresh server child per variant, and a client child (`__client-idle`) that
//!    connects `DEFLATE_IDLE` Manager clients to it and reports its own VmRSS delta; the server's
//!    delta is read by this process. Measured idle right after connecting, and again after one
//!    2 KiB echo each way per connection (compressed with deflate; one connection at a time, so
//!    the figure is what a connection keeps, not the peak of many messages at once) and a
//!    second of rest, which is where a compressor or inflater kept per connection would show. The issue's bar: with
//!    deflate no more than 1 KB per connection above plain.

use std::io::{BufRead, BufReader, Write};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{mpsc as std_mpsc, Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use actix_ws_manager::client::{Client, Inbound, Manager, ManagerConfig};
use actix_ws_manager::config::{ClientConfig, DeflateConfig, ServerConfig};
use actix_ws_manager::server;
use actix_ws_manager::testkit::FaultProxy;
use bytestring::ByteString;
use tokio::sync::mpsc;

// The `/proc` readers of `wsm load` (as in `benches/e2e`).
#[path = "../src/bin/wsm/procfs.rs"]
mod procfs;

/// How long any connect phase may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(30);
/// How long one echo reply may take.
const REPLY_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a child may take to answer a line (connect phases included).
const CHILD_TIMEOUT: Duration = Duration::from_secs(90);
/// Receipts are awaited this long after the last publish.
const BCAST_GRACE: Duration = Duration::from_secs(2);

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn cores() -> usize {
    std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
}

/// Microseconds since the first call; one clock for every thread.
fn now_us() -> u64 {
    static BASE: OnceLock<Instant> = OnceLock::new();
    BASE.get_or_init(Instant::now).elapsed().as_micros() as u64
}

/// Resident set size of `pid` (`None`: this process) in bytes, 0 when unknown.
fn rss_of(pid: Option<u32>) -> u64 {
    procfs::rss_bytes(pid).unwrap_or(0)
}

/// CPU time (user + system) of `pid` (`None`: this process) in µs, 10 ms resolution.
fn cpu_us(pid: Option<u32>) -> u64 {
    procfs::cpu_ticks(pid)
        .map(|t| t * (1_000_000 / procfs::TICKS_PER_SECOND))
        .unwrap_or(0)
}

fn raise_nofile() {
    if let Ok((_, hard)) = rlimit::Resource::NOFILE.get() {
        let _ = rlimit::Resource::NOFILE.set(hard, hard);
    }
}

fn main() {
    raise_nofile();
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("__serve") => serve_child(),
        Some("__proxy") => proxy_child(&args[1..]),
        Some("__client-idle") => client_idle_child(&args[1..]),
        _ => parent(args.iter().any(|a| a == "--quick")),
    }
}

// ---------------------------------------------------------------------------------------------
// The feed: market-data-like JSON.

/// A deterministic market-data feed: order-book snapshots (about 2 KiB) and trades (200-400
/// bytes), prices walking and sizes varying per message.
struct Feed {
    rng: fastrand::Rng,
    price: f64,
    seq: u64,
    trade_id: u64,
    ts: u64,
}

impl Feed {
    fn new(seed: u64) -> Feed {
        Feed {
            rng: fastrand::Rng::with_seed(seed),
            price: 43_012.51,
            seq: 7_310_442_019,
            trade_id: 581_220_173,
            ts: 1_764_754_000_000,
        }
    }

    fn step(&mut self) {
        self.price *= 1.0 + (self.rng.f64() - 0.5) * 0.0008;
        self.seq += 1 + self.rng.u64(0..40);
        self.ts += self.rng.u64(0..120);
    }

    fn uuid(&mut self) -> String {
        let hex = |rng: &mut fastrand::Rng, n: usize| -> String {
            (0..n)
                .map(|_| char::from_digit(rng.u32(0..16), 16).unwrap_or('0'))
                .collect()
        };
        let r = &mut self.rng;
        format!(
            "{}-{}-4{}-{}-{}",
            hex(r, 8),
            hex(r, 4),
            hex(r, 3),
            hex(r, 4),
            hex(r, 12)
        )
    }

    fn size(&mut self) -> String {
        format!("{:.8}", self.rng.f64() * self.rng.f64() * 4.0 + 0.0001)
    }

    /// An order-book snapshot, 35 levels a side: about 2 KiB.
    fn snapshot(&mut self) -> String {
        self.step();
        let mut bids = Vec::with_capacity(35);
        let mut asks = Vec::with_capacity(35);
        let (mut bid, mut ask) = (self.price - 0.01, self.price + 0.01);
        for _ in 0..35 {
            bids.push(format!(r#"["{bid:.2}","{}"]"#, self.size()));
            asks.push(format!(r#"["{ask:.2}","{}"]"#, self.size()));
            bid -= 0.01 * (1 + self.rng.u32(0..4)) as f64;
            ask += 0.01 * (1 + self.rng.u32(0..4)) as f64;
        }
        format!(
            r#"{{"type":"snapshot","product_id":"BTC-USD","sequence":{},"time":{},"bids":[{}],"asks":[{}]}}"#,
            self.seq,
            self.ts,
            bids.join(","),
            asks.join(",")
        )
    }

    /// A trade with its order ids: 200-400 bytes.
    fn trade(&mut self) -> String {
        self.step();
        self.trade_id += 1 + self.rng.u64(0..3);
        let side = if self.rng.bool() { "buy" } else { "sell" };
        let mut extra = String::new();
        if self.rng.u32(0..10) < 7 {
            extra.push_str(&format!(r#","taker_order_id":"{}""#, self.uuid()));
        }
        if self.rng.bool() {
            extra.push_str(&format!(r#","client_oid":"{}""#, self.uuid()));
        }
        if self.rng.u32(0..10) < 3 {
            extra.push_str(&format!(r#","profile_id":"{}""#, self.uuid()));
        }
        let (size, maker) = (self.size(), self.uuid());
        format!(
            r#"{{"type":"match","product_id":"BTC-USD","trade_id":{},"sequence":{},"time":{},"price":"{:.2}","size":"{size}","side":"{side}","maker_order_id":"{maker}"{extra}}}"#,
            self.trade_id, self.seq, self.ts, self.price
        )
    }

    /// The next message of a feed of one snapshot to four trades.
    fn next_message(&mut self) -> String {
        if self.rng.u32(0..5) == 0 {
            self.snapshot()
        } else {
            self.trade()
        }
    }
}

/// `msg` (a JSON object) with `"t":t` as its first field.
fn with_send_time(msg: &str, t: u64) -> String {
    format!(r#"{{"t":{t},{}"#, &msg[1..])
}

/// The send time (`"t"`) a received frame carries.
fn send_time(text: &str) -> Option<u64> {
    let pos = text.find("\"t\":")?;
    let digits: String = text[pos + 4..]
        .chars()
        .take_while(char::is_ascii_digit)
        .collect();
    digits.parse().ok()
}

// ---------------------------------------------------------------------------------------------
// Children: the server, the byte-counting proxy, the idle client.

/// Lines of stdin, for a child's command loop; the child exits when stdin closes.
fn stdin_lines() -> mpsc::UnboundedReceiver<String> {
    let (tx, rx) = mpsc::unbounded_channel();
    std::thread::spawn(move || {
        let stdin = std::io::stdin();
        let mut line = String::new();
        loop {
            line.clear();
            match stdin.lock().read_line(&mut line) {
                Ok(0) | Err(_) => std::process::exit(0),
                Ok(_) => {
                    if tx.send(line.trim().to_owned()).is_err() {
                        std::process::exit(0);
                    }
                }
            }
        }
    });
    rx
}

/// Print one line for the parent.
fn say(line: &str) {
    let mut out = std::io::stdout();
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
}

/// `__serve`: the default server (deflate on); prints `PORT <n>`, answers `STATS` with
/// `STATS <sessions> <members> <deflate_compressions>`, exits when stdin closes.
fn serve_child() {
    let sys = actix_rt::System::new();
    sys.block_on(async {
        let config = ServerConfig::default().max_sessions(100_000);
        let srv = match server::serve("127.0.0.1:0", "/ws", "/echo", config) {
            Ok(s) => s,
            Err(e) => panic!("serve: {e}"),
        };
        let rooms = srv.rooms().clone();
        let mut lines = stdin_lines();
        say(&format!("PORT {}", srv.local_addr().port()));
        while let Some(line) = lines.recv().await {
            if line == "STATS" {
                match rooms.stats().await {
                    Ok(s) => say(&format!(
                        "STATS {} {} {}",
                        s.sessions, s.members, s.deflate_compressions
                    )),
                    Err(e) => say(&format!("ERR {e}")),
                }
            } else {
                say("ERR unknown command");
            }
        }
    });
}

/// `__proxy PORT`: a [`FaultProxy`] in front of 127.0.0.1:PORT; prints `PORT <n>`, answers
/// `BYTES` with `BYTES <up> <down>`, exits when stdin closes.
fn proxy_child(args: &[String]) {
    let target: u16 = args.first().and_then(|p| p.parse().ok()).unwrap_or(0);
    let sys = actix_rt::System::new();
    sys.block_on(async move {
        let proxy = match FaultProxy::start(([127, 0, 0, 1], target).into()).await {
            Ok(p) => p,
            Err(e) => panic!("proxy: {e}"),
        };
        let mut lines = stdin_lines();
        say(&format!("PORT {}", proxy.addr().port()));
        while let Some(line) = lines.recv().await {
            if line == "BYTES" {
                say(&format!(
                    "BYTES {} {}",
                    proxy.bytes_up(),
                    proxy.bytes_down()
                ));
            } else {
                say("ERR unknown command");
            }
        }
    });
}

/// The client config of a variant.
fn client_config(deflate: bool) -> ClientConfig {
    ClientConfig::default().deflate(if deflate {
        DeflateConfig::default()
    } else {
        DeflateConfig::off()
    })
}

/// A Manager whose clients use the variant's config.
fn manager(deflate: bool) -> Manager {
    let config = ManagerConfig::default()
        .connect_rate(Some(5000.0))
        .client(client_config(deflate));
    match Manager::new(config) {
        Ok(m) => m,
        Err(e) => panic!("manager: {e}"),
    }
}

/// Connect `n` clients named `<prefix><i>` to `url`: the handles, and how many connected
/// within [`CONNECT_TIMEOUT`].
async fn connect_all(manager: &Manager, prefix: &str, url: &str, n: usize) -> (Vec<Client>, usize) {
    let mut clients = Vec::with_capacity(n);
    for i in 0..n {
        match manager.connect(format!("{prefix}{i}"), url).await {
            Ok(c) => clients.push(c),
            Err(e) => eprintln!("  connect {prefix}{i}: {e}"),
        }
    }
    let deadline = Instant::now() + CONNECT_TIMEOUT;
    let mut up = 0;
    for c in &clients {
        if c.wait_connected(deadline.saturating_duration_since(Instant::now()))
            .await
            .is_ok()
        {
            up += 1;
        }
    }
    (clients, up)
}

/// `__client-idle URL N deflate|plain`: connect N Manager clients to URL (the rooms endpoint),
/// rest a second, print `IDLE <bytes per connection> <connected>`; on `NEXT`, one 2 KiB echo
/// request per connection (one connection after the other), rest a second, print `WARM <bytes per connection> <replies>`;
/// exit when stdin closes.
fn client_idle_child(args: &[String]) {
    let url = args.first().cloned().unwrap_or_default();
    let n: usize = args.get(1).and_then(|v| v.parse().ok()).unwrap_or(100);
    let deflate = args.get(2).map(String::as_str) != Some("plain");
    let sys = actix_rt::System::new();
    sys.block_on(async move {
        let mut lines = stdin_lines();
        let manager = manager(deflate);
        let before = rss_of(None);
        let (clients, up) = connect_all(&manager, "c", &url, n).await;
        actix_rt::time::sleep(Duration::from_secs(1)).await;
        let idle = rss_of(None).saturating_sub(before) / up.max(1) as u64;
        say(&format!("IDLE {idle} {up}"));
        if lines.recv().await.as_deref() != Some("NEXT") {
            return;
        }
        // One connection at a time, so that what is measured is what each connection keeps
        // afterwards, not the peak of a thousand messages in flight at once.
        let mut feed = Feed::new(99);
        let mut replies = 0;
        let deadline = Instant::now() + CHILD_TIMEOUT / 2;
        for c in &clients {
            if Instant::now() > deadline {
                eprintln!("  client-idle: echoes stopped at the deadline");
                break;
            }
            let request = format!(r#"{{"type":"echo","data":{},"id":1}}"#, feed.snapshot());
            let mut rx = c.subscribe_text(8);
            if c.send_text(request).await.is_err() {
                continue;
            }
            let reply = async {
                while let Some(m) = rx.recv().await {
                    if m.data.contains("\"echo\"") {
                        return true;
                    }
                }
                false
            };
            if let Ok(true) = actix_rt::time::timeout(REPLY_TIMEOUT, reply).await {
                replies += 1;
            }
        }
        actix_rt::time::sleep(Duration::from_secs(1)).await;
        let warm = rss_of(None).saturating_sub(before) / up.max(1) as u64;
        say(&format!("WARM {warm} {replies}"));
        // Keep every connection open until the parent has read the server's RSS.
        while lines.recv().await.is_some() {}
        drop(clients);
    });
}

/// A child process of this bench, spoken to by lines; killed (and reaped) when dropped.
struct Proc {
    what: String,
    child: Child,
    stdin: Option<ChildStdin>,
    lines: std_mpsc::Receiver<String>,
}

impl Proc {
    fn start(args: &[&str]) -> Proc {
        let what = args.join(" ");
        let exe = match std::env::current_exe() {
            Ok(e) => e,
            Err(e) => panic!("current_exe: {e}"),
        };
        let mut child = match Command::new(exe)
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
        {
            Ok(c) => c,
            Err(e) => panic!("spawn {what}: {e}"),
        };
        let (tx, lines) = std_mpsc::channel();
        if let Some(out) = child.stdout.take() {
            std::thread::spawn(move || {
                for line in BufReader::new(out).lines() {
                    let Ok(line) = line else { break };
                    if tx.send(line).is_err() {
                        break;
                    }
                }
            });
        }
        let stdin = child.stdin.take();
        Proc {
            what,
            child,
            stdin,
            lines,
        }
    }

    /// A server or proxy child and the port it announced.
    fn start_listening(args: &[&str]) -> (Proc, u16) {
        let p = Proc::start(args);
        let line = p.line(CHILD_TIMEOUT);
        let port = line
            .strip_prefix("PORT ")
            .and_then(|p| p.parse().ok())
            .unwrap_or_else(|| panic!("{} announced no port: {line:?}", p.what));
        // Let the workers settle before any baseline is read.
        std::thread::sleep(Duration::from_millis(300));
        (p, port)
    }

    /// The next line, or an empty one after `within`.
    fn line(&self, within: Duration) -> String {
        match self.lines.recv_timeout(within) {
            Ok(l) => l,
            Err(_) => {
                eprintln!("  {}: no answer within {within:?}", self.what);
                String::new()
            }
        }
    }

    /// Send `line`, return the answer's numbers after its first word (zeros when none came).
    fn ask(&mut self, line: &str, within: Duration) -> Vec<u64> {
        if let Some(stdin) = self.stdin.as_mut() {
            let _ = writeln!(stdin, "{line}");
            let _ = stdin.flush();
        }
        self.numbers(within)
    }

    /// The next line's numbers after its first word.
    fn numbers(&self, within: Duration) -> Vec<u64> {
        let answer = self.line(within);
        let v: Vec<u64> = answer
            .split_whitespace()
            .skip(1)
            .filter_map(|w| w.parse().ok())
            .collect();
        if v.is_empty() {
            eprintln!("  {}: unexpected answer {answer:?}", self.what);
        }
        v
    }

    fn pid(&self) -> Option<u32> {
        Some(self.child.id())
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        drop(self.stdin.take());
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The server's `STATS`: (sessions, members, deflate_compressions).
fn server_stats(srv: &mut Proc) -> (u64, u64, u64) {
    let v = srv.ask("STATS", Duration::from_secs(10));
    (
        v.first().copied().unwrap_or(0),
        v.get(1).copied().unwrap_or(0),
        v.get(2).copied().unwrap_or(0),
    )
}

/// Wait (bounded) until the server has no sessions left.
fn wait_no_sessions(srv: &mut Proc) {
    let deadline = Instant::now() + Duration::from_secs(15);
    while server_stats(srv).0 > 0 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn name(deflate: bool) -> &'static str {
    if deflate {
        "deflate"
    } else {
        "plain"
    }
}

// ---------------------------------------------------------------------------------------------
// The parent.

struct Settings {
    msgs: usize,
    feed_conns: usize,
    window: usize,
    members: usize,
    bsecs: u64,
    rate: u64,
    idle: usize,
    mem_runs: usize,
    only: String,
}

impl Settings {
    fn from_env(quick: bool) -> Settings {
        let (msgs, members, bsecs, idle, mem_runs) = if quick {
            (2000, 200, 3, 200, 1)
        } else {
            (30_000, 1000, 10, 1000, 3)
        };
        Settings {
            msgs: env_usize("DEFLATE_MSGS", msgs).max(10),
            feed_conns: env_usize("DEFLATE_FEED_CONNS", 4).max(1),
            window: env_usize("DEFLATE_WINDOW", 8).max(1),
            members: env_usize("DEFLATE_MEMBERS", members).max(1),
            bsecs: env_usize("DEFLATE_BCAST_SECS", bsecs).max(1) as u64,
            rate: env_usize("DEFLATE_RATE", 20).max(1) as u64,
            idle: env_usize("DEFLATE_IDLE", idle).max(1),
            mem_runs: env_usize("DEFLATE_MEM_RUNS", mem_runs).max(1),
            only: std::env::var("DEFLATE_ONLY").unwrap_or_else(|_| "feed,broadcast,memory".into()),
        }
    }

    fn want(&self, p: &str) -> bool {
        self.only.split(',').any(|o| o.trim() == p)
    }
}

/// One line of the table: a figure with deflate and plain, from the same run.
struct Row {
    figure: String,
    deflate: f64,
    plain: f64,
    unit: &'static str,
    note: String,
}

fn parent(quick: bool) {
    let s = Settings::from_env(quick);
    println!(
        "deflate: {} cores, feed {} msgs over {} conns x {} in flight, broadcast {} members x {}s at {}/s, idle {} x {} runs",
        cores(),
        s.msgs,
        s.feed_conns,
        s.window,
        s.members,
        s.bsecs,
        s.rate,
        s.idle,
        s.mem_runs
    );
    let mut rows = Vec::new();
    if s.want("feed") {
        feed_point(&s, &mut rows);
    }
    if s.want("broadcast") {
        broadcast_point(&s, &mut rows);
    }
    if s.want("memory") {
        memory_point(&s, &mut rows);
    }
    println!();
    println!("| figure | deflate | plain | deflate / plain | note |");
    println!("| --- | --- | --- | --- | --- |");
    for r in &rows {
        let prec = if r.plain.abs() < 100.0 { 2 } else { 0 };
        let ratio = if r.plain > 0.0 {
            format!("{:.2}", r.deflate / r.plain)
        } else {
            "-".into()
        };
        println!(
            "| {} | {:.prec$} {} | {:.prec$} {} | {ratio} | {} |",
            r.figure, r.deflate, r.unit, r.plain, r.unit, r.note
        );
    }
}

// ---------------------------------------------------------------------------------------------
// 1. The feed: bytes on the wire and CPU per message.

/// One phase of the feed (snapshots or trades) with one variant.
#[derive(Default, Clone, Copy)]
struct Phase {
    msgs: u64,
    replies: u64,
    mismatched: u64,
    json_bytes: u64,
    up: u64,
    down: u64,
    client_cpu_us: u64,
    server_cpu_us: u64,
    compressions: u64,
    secs: f64,
}

impl Phase {
    fn per(&self, v: u64) -> f64 {
        v as f64 / self.replies.max(1) as f64
    }
}

fn feed_point(s: &Settings, rows: &mut Vec<Row>) {
    let mut feed = Feed::new(1);
    let n_snap = (s.msgs / 5).max(1);
    let snaps: Vec<ByteString> = (0..n_snap).map(|_| feed.snapshot().into()).collect();
    let trades: Vec<ByteString> = (0..s.msgs - n_snap).map(|_| feed.trade().into()).collect();
    let warm: Vec<ByteString> = (0..200).map(|_| feed.next_message().into()).collect();
    let (min_t, max_t) = trades.iter().fold((usize::MAX, 0), |(lo, hi), t| {
        (lo.min(t.len()), hi.max(t.len()))
    });
    println!(
        "feed: {} snapshots (mean {} B), {} trades ({min_t}-{max_t} B, mean {} B)",
        snaps.len(),
        mean_len(&snaps),
        trades.len(),
        mean_len(&trades)
    );
    let (mut srv, port) = Proc::start_listening(&["__serve"]);
    let (mut proxy, proxy_port) = Proc::start_listening(&["__proxy", &port.to_string()]);
    let url = format!("ws://127.0.0.1:{proxy_port}/echo");
    let mut results = Vec::new();
    for deflate in [true, false] {
        let phases = feed_variant(
            s,
            deflate,
            &url,
            &mut srv,
            &mut proxy,
            [&warm, &snaps, &trades],
        );
        for (kind, p) in ["snapshots", "trades"].iter().zip(&phases) {
            println!(
                "  {} {kind}: {} msgs, {} replies ({} mismatched), up {:.0} B/msg, down {:.0} B/msg, client {:.1} us/msg, server {:.1} us/msg, {} compressions, {:.0} msg/s",
                name(deflate),
                p.msgs,
                p.replies,
                p.mismatched,
                p.per(p.up),
                p.per(p.down),
                p.per(p.client_cpu_us),
                p.per(p.server_cpu_us),
                p.compressions,
                p.replies as f64 / p.secs.max(1e-9)
            );
        }
        results.push(phases);
    }
    let [d, p] = [&results[0], &results[1]];
    for (i, kind) in ["snapshot", "trade"].iter().enumerate() {
        let (dd, pp) = (&d[i], &p[i]);
        rows.push(Row {
            figure: format!("feed: wire bytes per {kind}, client -> server"),
            deflate: dd.per(dd.up),
            plain: pp.per(pp.up),
            unit: "B",
            note: format!(
                "JSON {:.0} B; through a FaultProxy, framing included",
                pp.per(pp.json_bytes)
            ),
        });
        rows.push(Row {
            figure: format!("feed: wire bytes per {kind}, server -> client"),
            deflate: dd.per(dd.down),
            plain: pp.per(pp.down),
            unit: "B",
            note: format!(
                "echo of `/echo`; server compressed {} of {} with deflate",
                dd.compressions, dd.replies
            ),
        });
    }
    // The whole feed, one snapshot to four trades.
    let total = |ph: &Vec<Phase>, f: &dyn Fn(&Phase) -> u64| -> f64 {
        let n: u64 = ph.iter().map(|x| x.replies).sum();
        ph.iter().map(f).sum::<u64>() as f64 / n.max(1) as f64
    };
    rows.push(Row {
        figure: "feed (1 snapshot : 4 trades): wire bytes per message, both ways".into(),
        deflate: total(d, &|x| x.up + x.down),
        plain: total(p, &|x| x.up + x.down),
        unit: "B",
        note: format!(
            "JSON {:.0} B per message each way",
            total(p, &|x| x.json_bytes)
        ),
    });
    rows.push(Row {
        figure: "feed: client CPU per message (send + receive its echo)".into(),
        deflate: total(d, &|x| x.client_cpu_us),
        plain: total(p, &|x| x.client_cpu_us),
        unit: "us",
        note: format!(
            "this process (Manager, {} conns); snapshots {:.1} vs {:.1} us, trades {:.1} vs {:.1} us",
            s.feed_conns,
            d[0].per(d[0].client_cpu_us),
            p[0].per(p[0].client_cpu_us),
            d[1].per(d[1].client_cpu_us),
            p[1].per(p[1].client_cpu_us)
        ),
    });
    rows.push(Row {
        figure: "feed: server CPU per message (receive + echo)".into(),
        deflate: total(d, &|x| x.server_cpu_us),
        plain: total(p, &|x| x.server_cpu_us),
        unit: "us",
        note: format!(
            "server child; snapshots {:.1} vs {:.1} us, trades {:.1} vs {:.1} us",
            d[0].per(d[0].server_cpu_us),
            p[0].per(p[0].server_cpu_us),
            d[1].per(d[1].server_cpu_us),
            p[1].per(p[1].server_cpu_us)
        ),
    });
    let rate = |ph: &Vec<Phase>| {
        ph.iter().map(|x| x.replies).sum::<u64>() as f64
            / ph.iter().map(|x| x.secs).sum::<f64>().max(1e-9)
    };
    let mismatched: u64 = results.iter().flatten().map(|x| x.mismatched).sum();
    let missing: u64 = results
        .iter()
        .flatten()
        .map(|x| x.msgs - x.replies.min(x.msgs))
        .sum();
    rows.push(Row {
        figure: "feed: echo rate".into(),
        deflate: rate(d),
        plain: rate(p),
        unit: "msg/s",
        note: format!("2 cores shared by client, proxy and server; {missing} missing, {mismatched} not echoed verbatim"),
    });
}

fn mean_len(v: &[ByteString]) -> usize {
    v.iter().map(|m| m.len()).sum::<usize>() / v.len().max(1)
}

/// The feed with one variant: a warm-up, then each phase's figures (snapshots, trades).
fn feed_variant(
    s: &Settings,
    deflate: bool,
    url: &str,
    srv: &mut Proc,
    proxy: &mut Proc,
    [warm, snaps, trades]: [&Vec<ByteString>; 3],
) -> Vec<Phase> {
    let sys = actix_rt::System::new();
    sys.block_on(async move {
        let manager = manager(deflate);
        let (clients, up) = connect_all(&manager, "f", url, s.feed_conns).await;
        if up < s.feed_conns {
            eprintln!(
                "  feed {}: only {up} of {} connected",
                name(deflate),
                s.feed_conns
            );
        }
        let mut rxs: Vec<_> = clients
            .iter()
            .map(|c| c.subscribe_text(s.window * 2 + 8))
            .collect();
        let _ = echo_all(&clients, &mut rxs, warm, s.window).await;
        let mut phases = Vec::new();
        for msgs in [snaps, trades] {
            let b0 = proxy.ask("BYTES", Duration::from_secs(10));
            let c0 = server_stats(srv).2;
            let (cpu0, scpu0) = (cpu_us(None), cpu_us(srv.pid()));
            let t0 = Instant::now();
            let (replies, mismatched) = echo_all(&clients, &mut rxs, msgs, s.window).await;
            let secs = t0.elapsed().as_secs_f64();
            let (cpu1, scpu1) = (cpu_us(None), cpu_us(srv.pid()));
            // Let the proxy forward the last bytes before reading its counters.
            actix_rt::time::sleep(Duration::from_millis(100)).await;
            let b1 = proxy.ask("BYTES", Duration::from_secs(10));
            let c1 = server_stats(srv).2;
            let at = |v: &Vec<u64>, i: usize| v.get(i).copied().unwrap_or(0);
            phases.push(Phase {
                msgs: msgs.len() as u64,
                replies,
                mismatched,
                json_bytes: msgs.iter().map(|m| m.len() as u64).sum::<u64>() * replies
                    / msgs.len().max(1) as u64,
                up: at(&b1, 0).saturating_sub(at(&b0, 0)),
                down: at(&b1, 1).saturating_sub(at(&b0, 1)),
                client_cpu_us: cpu1.saturating_sub(cpu0),
                server_cpu_us: scpu1.saturating_sub(scpu0),
                compressions: c1.saturating_sub(c0),
                secs,
            });
        }
        drop(rxs);
        manager.shutdown().await;
        phases
    })
}

/// Echo `msgs` through `clients` (message `i` on connection `i % conns`), `window` in flight
/// per connection: (replies, replies that were not the message sent).
async fn echo_all(
    clients: &[Client],
    rxs: &mut [mpsc::Receiver<Inbound<ByteString>>],
    msgs: &[ByteString],
    window: usize,
) -> (u64, u64) {
    let conns = clients.len().max(1);
    let runs = clients
        .iter()
        .zip(rxs.iter_mut())
        .enumerate()
        .map(|(k, (c, rx))| {
            let mine: Vec<&ByteString> = msgs.iter().skip(k).step_by(conns).collect();
            async move {
                let (mut sent, mut got, mut bad) = (0usize, 0u64, 0u64);
                while sent < mine.len().min(window) {
                    if c.send_text(mine[sent].clone()).await.is_err() {
                        return (got, bad);
                    }
                    sent += 1;
                }
                while (got as usize) < mine.len() {
                    match actix_rt::time::timeout(REPLY_TIMEOUT, rx.recv()).await {
                        Ok(Some(m)) => {
                            if m.data != *mine[got as usize] {
                                bad += 1;
                            }
                            got += 1;
                        }
                        _ => break,
                    }
                    if sent < mine.len() {
                        if c.send_text(mine[sent].clone()).await.is_err() {
                            break;
                        }
                        sent += 1;
                    }
                }
                (got, bad)
            }
        });
    futures_util::future::join_all(runs)
        .await
        .into_iter()
        .fold((0, 0), |(g, b), (g1, b1)| (g + g1, b + b1))
}

// ---------------------------------------------------------------------------------------------
// 2. Broadcast latency to many members.

struct Bcast {
    p50: u64,
    p99: u64,
    missing: u64,
    sent: u64,
    up: usize,
    server_cpu_us: u64,
    client_cpu_us: u64,
    compressions: u64,
}

fn broadcast_point(s: &Settings, rows: &mut Vec<Row>) {
    let (mut srv, port) = Proc::start_listening(&["__serve"]);
    let url = format!("ws://127.0.0.1:{port}/ws");
    let mut out = Vec::new();
    for deflate in [true, false] {
        let b = broadcast_variant(s, deflate, &url, &mut srv);
        println!(
            "  broadcast {} to {} members ({} publishes): p50 {} us, p99 {} us, missing {}, server CPU {} ms, clients' CPU {} ms, {} compressions",
            name(deflate),
            b.up,
            b.sent,
            b.p50,
            b.p99,
            b.missing,
            b.server_cpu_us / 1000,
            b.client_cpu_us / 1000,
            b.compressions
        );
        out.push(b);
        wait_no_sessions(&mut srv);
    }
    let (d, p) = (&out[0], &out[1]);
    let m = s.members;
    rows.push(Row {
        figure: format!(
            "broadcast p50 ({m} members, {}/s for {} s)",
            s.rate, s.bsecs
        ),
        deflate: d.p50 as f64,
        plain: p.p50 as f64,
        unit: "us",
        note: "publish -> each member's receipt, all Manager clients in one process".into(),
    });
    rows.push(Row {
        figure: format!("broadcast p99 ({m} members)"),
        deflate: d.p99 as f64,
        plain: p.p99 as f64,
        unit: "us",
        note: format!(
            "missing: deflate {} of {}, plain {} of {}",
            d.missing,
            d.sent * d.up as u64,
            p.missing,
            p.sent * p.up as u64
        ),
    });
    rows.push(Row {
        figure: format!("broadcast: server CPU per publish ({m} members)"),
        deflate: d.server_cpu_us as f64 / d.sent.max(1) as f64,
        plain: p.server_cpu_us as f64 / p.sent.max(1) as f64,
        unit: "us",
        note: format!(
            "deflate_compressions: {} for {} publishes (deflate), {} (plain)",
            d.compressions, d.sent, p.compressions
        ),
    });
    rows.push(Row {
        figure: format!("broadcast: members' CPU per publish ({m} members)"),
        deflate: d.client_cpu_us as f64 / d.sent.max(1) as f64,
        plain: p.client_cpu_us as f64 / p.sent.max(1) as f64,
        unit: "us",
        note: "this process: every member's receipt (inflate with deflate), and the publisher"
            .into(),
    });
}

fn percentile(sorted: &[u64], p: f64) -> u64 {
    sorted
        .get(((sorted.len() as f64 * p) as usize).min(sorted.len().saturating_sub(1)))
        .copied()
        .unwrap_or(0)
}

fn broadcast_variant(s: &Settings, deflate: bool, url: &str, srv: &mut Proc) -> Bcast {
    let room = format!("bench-{}", name(deflate));
    let (members, rate, bsecs) = (s.members, s.rate, s.bsecs);
    let sys = actix_rt::System::new();
    sys.block_on(async move {
        let manager = manager(deflate);
        let base_members = server_stats(srv).1;
        // Connect, subscribe and join; the join is sent once connected.
        let mut clients = Vec::with_capacity(members);
        let mut rxs = Vec::with_capacity(members);
        for i in 0..members {
            match manager.connect(format!("m{i}"), url).await {
                Ok(c) => {
                    rxs.push(c.subscribe_text(1024));
                    if let Err(e) = c.join(&room).await {
                        eprintln!("  join m{i}: {e}");
                    }
                    clients.push(c);
                }
                Err(e) => eprintln!("  connect m{i}: {e}"),
            }
        }
        let deadline = Instant::now() + CONNECT_TIMEOUT;
        let mut up = 0;
        for c in &clients {
            if c.wait_connected(deadline.saturating_duration_since(Instant::now()))
                .await
                .is_ok()
            {
                up += 1;
            }
        }
        // Wait (bounded) until every member joined.
        while server_stats(srv).1 < base_members + up as u64 && Instant::now() < deadline {
            actix_rt::time::sleep(Duration::from_millis(100)).await;
        }
        let joined = server_stats(srv).1.saturating_sub(base_members) as usize;
        if up < members || joined < up {
            eprintln!(
                "  broadcast {}: {up} of {members} connected, {joined} joined",
                name(deflate)
            );
        }
        let start = Instant::now() + Duration::from_millis(500);
        let end = start + Duration::from_secs(bsecs);
        let stop = end + BCAST_GRACE;
        let latencies = Arc::new(Mutex::new(Vec::with_capacity(
            members * (rate * bsecs) as usize,
        )));
        let done = Arc::new(AtomicUsize::new(0));
        let mut spawned = 0;
        for (c, mut rx) in clients.iter().zip(rxs) {
            let (latencies, done) = (latencies.clone(), done.clone());
            let task = async move {
                let mut got = Vec::new();
                let stop = tokio::time::Instant::from_std(stop);
                while let Ok(Some(m)) = tokio::time::timeout_at(stop, rx.recv()).await {
                    if let Some(t) = send_time(&m.data) {
                        got.push(now_us().saturating_sub(t));
                    }
                }
                if let Ok(mut all) = latencies.lock() {
                    all.extend(got);
                }
                done.fetch_add(1, Ordering::Relaxed);
            };
            if manager.spawn_on(c.name(), task) {
                spawned += 1;
            }
        }
        // Member 0 publishes.
        let compressions0 = server_stats(srv).2;
        let (cpu0, ccpu0) = (cpu_us(srv.pid()), cpu_us(None));
        actix_rt::time::sleep_until(start.into()).await;
        let sent = AtomicU64::new(0);
        if let Some(publisher) = clients.first() {
            let mut feed = Feed::new(2);
            let mut tick = actix_rt::time::interval(Duration::from_micros(1_000_000 / rate));
            while Instant::now() < end {
                tick.tick().await;
                let data = with_send_time(&feed.next_message(), now_us());
                let publish = format!(r#"{{"type":"publish","room":"{room}","data":{data}}}"#);
                if publisher.send_text(publish).await.is_err() {
                    break;
                }
                sent.fetch_add(1, Ordering::Relaxed);
            }
        }
        actix_rt::time::sleep_until(stop.into()).await;
        let cpu = cpu_us(srv.pid()).saturating_sub(cpu0);
        let client_cpu = cpu_us(None).saturating_sub(ccpu0);
        let compressions = server_stats(srv).2.saturating_sub(compressions0);
        let bound = Instant::now() + Duration::from_secs(5);
        while done.load(Ordering::Relaxed) < spawned && Instant::now() < bound {
            actix_rt::time::sleep(Duration::from_millis(20)).await;
        }
        let mut all = latencies.lock().map(|v| v.clone()).unwrap_or_default();
        all.sort_unstable();
        let sent = sent.load(Ordering::Relaxed);
        manager.shutdown().await;
        Bcast {
            p50: percentile(&all, 0.50),
            p99: percentile(&all, 0.99),
            missing: (sent * joined as u64).saturating_sub(all.len() as u64),
            sent,
            up: joined,
            server_cpu_us: cpu,
            client_cpu_us: client_cpu,
            compressions,
        }
    })
}

// ---------------------------------------------------------------------------------------------
// 3. Idle RSS per connection.

/// One variant's memory figures, on a fresh server child and a fresh client child.
fn memory_run(n: usize, deflate: bool) -> Memory {
    let (mut srv, port) = Proc::start_listening(&["__serve"]);
    let url = format!("ws://127.0.0.1:{port}/ws");
    let base = rss_of(srv.pid());
    let mut cli = Proc::start(&["__client-idle", &url, &n.to_string(), name(deflate)]);
    let idle = cli.numbers(CHILD_TIMEOUT);
    let server_idle = rss_of(srv.pid()).saturating_sub(base);
    let warm = cli.ask("NEXT", CHILD_TIMEOUT);
    let server_warm = rss_of(srv.pid()).saturating_sub(base);
    let compressions = server_stats(&mut srv).2;
    drop(cli);
    let up = idle.get(1).copied().unwrap_or(0);
    Memory {
        up,
        replies: warm.get(1).copied().unwrap_or(0),
        server_idle: server_idle / up.max(1),
        client_idle: idle.first().copied().unwrap_or(0),
        server_warm: server_warm / up.max(1),
        client_warm: warm.first().copied().unwrap_or(0),
        compressions,
    }
}

struct Memory {
    up: u64,
    replies: u64,
    server_idle: u64,
    client_idle: u64,
    server_warm: u64,
    client_warm: u64,
    compressions: u64,
}

fn memory_point(s: &Settings, rows: &mut Vec<Row>) {
    let n = s.idle;
    // Alternating variants, each run on fresh processes; the table shows the medians.
    let mut runs: [Vec<Memory>; 2] = [Vec::new(), Vec::new()];
    for _ in 0..s.mem_runs {
        for (v, deflate) in [true, false].into_iter().enumerate() {
            let m = memory_run(n, deflate);
            println!(
                "  memory {}: {} connected, server {} B/conn idle, {} B/conn after one echo ({} replies, {} compressions); client {} B/conn idle, {} B/conn after",
                name(deflate),
                m.up,
                m.server_idle,
                m.server_warm,
                m.replies,
                m.compressions,
                m.client_idle,
                m.client_warm
            );
            runs[v].push(m);
        }
    }
    let med = |v: &[Memory], f: fn(&Memory) -> u64| -> u64 {
        let mut x: Vec<u64> = v.iter().map(f).collect();
        x.sort_unstable();
        x.get(x.len() / 2).copied().unwrap_or(0)
    };
    let summary = |v: &[Memory]| Memory {
        up: med(v, |m| m.up),
        replies: med(v, |m| m.replies),
        server_idle: med(v, |m| m.server_idle),
        client_idle: med(v, |m| m.client_idle),
        server_warm: med(v, |m| m.server_warm),
        client_warm: med(v, |m| m.client_warm),
        compressions: med(v, |m| m.compressions),
    };
    let out = [summary(&runs[0]), summary(&runs[1])];
    let (d, p) = (&out[0], &out[1]);
    let bar = |dv: u64, pv: u64| {
        let extra = dv as i64 - pv as i64;
        let met = if extra <= 1024 { "met" } else { "MISSED" };
        format!("deflate {extra:+} B/conn; bar +1 KB: {met}")
    };
    let all = |f: fn(&Memory) -> u64| -> String {
        let list = |v: &[Memory]| {
            v.iter()
                .map(|m| f(m).to_string())
                .collect::<Vec<_>>()
                .join("/")
        };
        if s.mem_runs > 1 {
            format!(
                "; medians of {} runs ({} vs {})",
                s.mem_runs,
                list(&runs[0]),
                list(&runs[1])
            )
        } else {
            String::new()
        }
    };
    for (figure, dv, pv, extra) in [
        (
            format!("server RSS per idle connection ({n})"),
            d.server_idle,
            p.server_idle,
            all(|m| m.server_idle),
        ),
        (
            format!("client RSS per idle connection ({n})"),
            d.client_idle,
            p.client_idle,
            all(|m| m.client_idle),
        ),
        (
            format!("server RSS per connection, idle after one 2 KiB echo ({n})"),
            d.server_warm,
            p.server_warm,
            format!(
                "{}; {} echoes, {} compressed (deflate), {} (plain)",
                all(|m| m.server_warm),
                d.replies,
                d.compressions,
                p.compressions
            ),
        ),
        (
            format!("client RSS per connection, idle after one 2 KiB echo ({n})"),
            d.client_warm,
            p.client_warm,
            all(|m| m.client_warm),
        ),
    ] {
        rows.push(Row {
            figure,
            deflate: dv as f64,
            plain: pv as f64,
            unit: "B",
            note: format!("{}{extra}", bar(dv, pv)),
        });
    }
}
