//! End-to-end benchmarks, ours vs bare tokio-tungstenite, side by side in one run, each reported
//! as a ratio (this machine is shared and noisy, so absolute figures move by tens of percent).
//!
//! Run: `cargo bench --bench e2e` (about two minutes on 2 cores), `cargo bench --bench e2e --
//! --quick` for a smoke run. Scale with environment variables:
//!
//! | variable | default | meaning |
//! | --- | --- | --- |
//! | `E2E_ECHO` | `100x16,1000x1` | echo points: connections x messages in flight, comma-separated |
//! | `E2E_SECS` | 5 | seconds each throughput point is measured |
//! | `E2E_IDLE` | 1000 | idle connections for the memory points |
//! | `E2E_MEMBERS` | 1000 | room members for the broadcast point |
//! | `E2E_BCAST_SECS` | 10 | seconds of publishing for the broadcast point |
//! | `E2E_RATE` | 20 | publishes per second (one sender) for the broadcast point |
//! | `E2E_RUNS` | 1 | repetitions; the table shows the median ratio of each point |
//! | `E2E_ONLY` | all | comma-separated points to run: `client`, `server`, `memory`, `broadcast` |
//!
//! Every server runs in a child process (this bench binary, re-executed with `__serve ...`), so
//! that client and server memory are measured apart: server RSS from `/proc/<child>/status`
//! before and after the idle connections, client RSS by a child process of its own
//! (`__client-idle ...`) that measures its own VmRSS before and after connecting. Everything
//! targets 127.0.0.1. Each point is bounded in time (connect phases time out after 30 s).
//!
//! Servers ("bare" is the better of the two bare servers at each point):
//! - `ours`: [`actix_ws_manager::server::serve`] with the default [`ServerConfig`] (rooms at
//!   `/ws`, echo at `/echo`), actix-web's default of one worker per core.
//! - `tt`: tokio-tungstenite echo (or broadcast) server, one current-thread runtime per core
//!   accepting on one shared listener, default `WebSocketConfig` (128 KiB read buffer); `tt4k`
//!   the same with a 4 KiB read buffer.
//! - `actors`: a plain actix-web-actors echo actor (`ws::start`), one worker per core; for the
//!   broadcast point, the usual actix chat-server shape (one room actor holding every member's
//!   `Recipient`, `do_send` to each, `ctx.text` in the member).
//!
//! Clients: ours is the [`Manager`] (one arbiter per core); bare is tokio-tungstenite on one
//! current-thread runtime per core. Echo is closed loop with a window: each connection keeps
//! that many messages in flight (a 64-byte pad in an echo envelope) and sends one more per
//! reply.
//!
//! Goals (the performance issue), each a ratio in the same run: server `/echo` at or above
//! actix-web-actors and at least 0.9 of the tt current-thread server at 100 x 16 and 1000 x 1;
//! client echo at least 1.0 of the bare tt client; server RSS per idle connection at or below
//! actix-web-actors; client RSS per idle connection at or below the tt client with a 4 KiB
//! read buffer; broadcast p99 at 1000 members at or below actix-web-actors.

use std::future::Future;
use std::io::{BufRead, BufReader, Write};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use actix::prelude::*;
use actix_web::{web, App, HttpRequest, HttpResponse, HttpServer};
use actix_web_actors::ws as actors_ws;
use actix_ws_manager::client::{Manager, ManagerConfig};
use actix_ws_manager::config::ServerConfig;
use actix_ws_manager::server;
use futures_util::{SinkExt, StreamExt};
use tokio::sync::{mpsc, watch};
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::Message;

const CONNECT_TIMEOUT: Duration = Duration::from_secs(30);
const REPLY_TIMEOUT: Duration = Duration::from_secs(5);

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

fn now_us() -> u64 {
    static BASE: OnceLock<Instant> = OnceLock::new();
    BASE.get_or_init(Instant::now).elapsed().as_micros() as u64
}

fn rss_of(pid: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines().find(|l| l.starts_with("VmRSS:")).and_then(|l| {
                l.split_whitespace()
                    .nth(1)
                    .and_then(|v| v.parse::<u64>().ok())
            })
        })
        .map(|kb| kb * 1024)
        .unwrap_or(0)
}

/// CPU time (user + system) a process has used, in µs, from `/proc/<pid>/stat` (assumes the
/// usual 100 clock ticks per second, so the resolution is 10 ms).
fn cpu_us(pid: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| {
            let rest = s.rsplit_once(')')?.1;
            let f: Vec<&str> = rest.split_whitespace().collect();
            let utime: u64 = f.get(11)?.parse().ok()?;
            let stime: u64 = f.get(12)?.parse().ok()?;
            Some((utime + stime) * 10_000)
        })
        .unwrap_or(0)
}

/// One echo measurement: replies per second, and CPU µs per reply of the process watched.
#[derive(Clone, Copy)]
struct Echo {
    rate: f64,
    cpu_us: f64,
}

fn raise_nofile() {
    if let Ok((_, hard)) = rlimit::Resource::NOFILE.get() {
        let _ = rlimit::Resource::NOFILE.set(hard, hard);
    }
}

fn echo_payload(seq: u64) -> String {
    format!(
        r#"{{"type":"echo","data":{{"seq":{seq},"pad":"{}"}},"id":{seq}}}"#,
        "x".repeat(64)
    )
}

fn main() {
    raise_nofile();
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("__serve") => serve_child(&args[1..]),
        Some("__client-idle") => client_idle_child(&args[1..]),
        _ => parent(args.iter().any(|a| a == "--quick")),
    }
}

// ---------------------------------------------------------------------------------------------
// Child processes
// ---------------------------------------------------------------------------------------------

/// `__serve KIND MODE`: print `PORT <n>`, serve until stdin closes.
fn serve_child(args: &[String]) {
    let kind = args.first().map(String::as_str).unwrap_or("tt");
    let mode = args.get(1).map(String::as_str).unwrap_or("echo");
    let listener = match std::net::TcpListener::bind("127.0.0.1:0") {
        Ok(l) => l,
        Err(e) => panic!("bind: {e}"),
    };
    let port = listener.local_addr().map(|a| a.port()).unwrap_or(0);
    // Exit when the parent closes our stdin (or dies).
    std::thread::spawn(|| {
        let mut line = String::new();
        let _ = std::io::stdin().read_line(&mut line);
        std::process::exit(0);
    });
    match kind {
        "ours" => {
            drop(listener);
            let sys = actix_rt::System::new();
            sys.block_on(async {
                let config = ServerConfig::default().max_sessions(100_000);
                let srv = match server::serve("127.0.0.1:0", "/ws", "/echo", config) {
                    Ok(s) => s,
                    Err(e) => panic!("serve: {e}"),
                };
                announce(srv.local_addr().port());
                std::future::pending::<()>().await;
            });
        }
        "actors" => {
            let sys = actix_rt::System::new();
            let broadcast = mode == "bcast";
            sys.block_on(async move {
                // One room for every worker, as a plain actix chat server would have it.
                let room = BcastRoom::default().start();
                let srv = HttpServer::new(move || {
                    let app = App::new().app_data(web::Data::new(room.clone()));
                    if broadcast {
                        app.route("/", web::get().to(actors_bcast))
                    } else {
                        app.route("/", web::get().to(actors_echo))
                    }
                })
                .disable_signals()
                .listen(listener);
                let srv = match srv {
                    Ok(s) => s.run(),
                    Err(e) => panic!("listen: {e}"),
                };
                announce(port);
                let _ = srv.await;
            });
        }
        _ => {
            let config = if kind == "tt4k" {
                WebSocketConfig::default().read_buffer_size(4096)
            } else {
                WebSocketConfig::default()
            };
            let _ = listener.set_nonblocking(true);
            let members: Members = Arc::new(Mutex::new(Vec::new()));
            let broadcast = mode == "bcast";
            let threads: Vec<_> = (0..cores())
                .filter_map(|_| listener.try_clone().ok())
                .map(|l| {
                    let members = members.clone();
                    std::thread::spawn(move || tt_server_thread(l, config, broadcast, members))
                })
                .collect();
            announce(port);
            for t in threads {
                let _ = t.join();
            }
        }
    }
}

fn announce(port: u16) {
    let mut out = std::io::stdout();
    let _ = writeln!(out, "PORT {port}");
    let _ = out.flush();
}

/// The bare server's broadcast list: every connection's bounded outbound queue.
type Members = Arc<Mutex<Vec<(u64, mpsc::Sender<Message>)>>>;

fn tt_server_thread(
    listener: std::net::TcpListener,
    config: WebSocketConfig,
    broadcast: bool,
    members: Members,
) {
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => panic!("runtime: {e}"),
    };
    let local = tokio::task::LocalSet::new();
    local.block_on(&rt, async move {
        let listener = match tokio::net::TcpListener::from_std(listener) {
            Ok(l) => l,
            Err(e) => panic!("listener: {e}"),
        };
        static NEXT: AtomicU64 = AtomicU64::new(0);
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                continue;
            };
            let _ = tcp.set_nodelay(true);
            let members = members.clone();
            tokio::task::spawn_local(async move {
                let Ok(ws) = tokio_tungstenite::accept_async_with_config(tcp, Some(config)).await
                else {
                    return;
                };
                if !broadcast {
                    let mut ws = ws;
                    while let Some(Ok(msg)) = ws.next().await {
                        if (msg.is_text() || msg.is_binary()) && ws.send(msg).await.is_err() {
                            break;
                        }
                    }
                    return;
                }
                let id = NEXT.fetch_add(1, Ordering::Relaxed);
                let (qtx, mut qrx) = mpsc::channel::<Message>(256);
                if let Ok(mut m) = members.lock() {
                    m.push((id, qtx));
                }
                let (mut tx, mut rx) = ws.split();
                let writer = tokio::task::spawn_local(async move {
                    while let Some(msg) = qrx.recv().await {
                        if tx.send(msg).await.is_err() {
                            break;
                        }
                    }
                });
                while let Some(Ok(msg)) = rx.next().await {
                    if msg.is_text() {
                        if let Ok(m) = members.lock() {
                            for (_, q) in m.iter() {
                                let _ = q.try_send(msg.clone());
                            }
                        }
                    }
                }
                if let Ok(mut m) = members.lock() {
                    m.retain(|(i, _)| *i != id);
                }
                writer.abort();
            });
        }
    });
}

/// The plain actix-web-actors echo actor.
struct ActorsEcho;
impl Actor for ActorsEcho {
    type Context = actors_ws::WebsocketContext<Self>;
}
impl StreamHandler<Result<actors_ws::Message, actors_ws::ProtocolError>> for ActorsEcho {
    fn handle(
        &mut self,
        msg: Result<actors_ws::Message, actors_ws::ProtocolError>,
        ctx: &mut Self::Context,
    ) {
        match msg {
            Ok(actors_ws::Message::Text(t)) => ctx.text(t),
            Ok(actors_ws::Message::Binary(b)) => ctx.binary(b),
            Ok(actors_ws::Message::Ping(p)) => ctx.pong(&p),
            Ok(actors_ws::Message::Close(r)) => {
                ctx.close(r);
                ctx.stop();
            }
            Ok(_) => {}
            Err(_) => ctx.stop(),
        }
    }
}

async fn actors_echo(
    req: HttpRequest,
    body: web::Payload,
) -> Result<HttpResponse, actix_web::Error> {
    actors_ws::start(ActorsEcho, &req, body)
}

/// The plain actix-web-actors broadcast room: every member's address; a text frame from any
/// member goes to all of them (`do_send`, the usual actix chat-server shape).
#[derive(Default)]
struct BcastRoom {
    members: Vec<Recipient<BcastFrame>>,
}
impl Actor for BcastRoom {
    type Context = Context<Self>;
}

#[derive(Message, Clone)]
#[rtype(result = "()")]
struct BcastFrame(bytestring::ByteString);

#[derive(Message)]
#[rtype(result = "()")]
struct BcastJoin(Recipient<BcastFrame>);

impl Handler<BcastJoin> for BcastRoom {
    type Result = ();
    fn handle(&mut self, msg: BcastJoin, _: &mut Context<Self>) {
        self.members.push(msg.0);
    }
}
impl Handler<BcastFrame> for BcastRoom {
    type Result = ();
    fn handle(&mut self, msg: BcastFrame, _: &mut Context<Self>) {
        self.members.retain(|m| m.connected());
        for m in &self.members {
            m.do_send(msg.clone());
        }
    }
}

/// One member of the actix-web-actors broadcast room.
struct ActorsMember(Addr<BcastRoom>);
impl Actor for ActorsMember {
    type Context = actors_ws::WebsocketContext<Self>;
    fn started(&mut self, ctx: &mut Self::Context) {
        self.0.do_send(BcastJoin(ctx.address().recipient()));
    }
}
impl Handler<BcastFrame> for ActorsMember {
    type Result = ();
    fn handle(&mut self, msg: BcastFrame, ctx: &mut Self::Context) {
        ctx.text(msg.0);
    }
}
impl StreamHandler<Result<actors_ws::Message, actors_ws::ProtocolError>> for ActorsMember {
    fn handle(
        &mut self,
        msg: Result<actors_ws::Message, actors_ws::ProtocolError>,
        ctx: &mut Self::Context,
    ) {
        match msg {
            Ok(actors_ws::Message::Text(t)) => self.0.do_send(BcastFrame(t)),
            Ok(actors_ws::Message::Ping(p)) => ctx.pong(&p),
            Ok(actors_ws::Message::Close(r)) => {
                ctx.close(r);
                ctx.stop();
            }
            Ok(_) => {}
            Err(_) => ctx.stop(),
        }
    }
}

async fn actors_bcast(
    req: HttpRequest,
    body: web::Payload,
    room: web::Data<Addr<BcastRoom>>,
) -> Result<HttpResponse, actix_web::Error> {
    actors_ws::start(ActorsMember(room.get_ref().clone()), &req, body)
}

/// `__client-idle ours|bare URL N`: connect N idle clients, print `PER_CONN <bytes> <connected>`.
fn client_idle_child(args: &[String]) {
    let kind = args.first().cloned().unwrap_or_default();
    let url = args.get(1).cloned().unwrap_or_default();
    let n: usize = args.get(2).and_then(|v| v.parse().ok()).unwrap_or(100);
    let pid = std::process::id().to_string();
    if kind == "bare4k" {
        let _ = BARE_CLIENT_CONFIG.set(WebSocketConfig::default().read_buffer_size(4096));
    }
    let (per_conn, up) = if kind == "ours" {
        let sys = actix_rt::System::new();
        sys.block_on(async move {
            let manager = match Manager::new(ManagerConfig::default().connect_rate(Some(5000.0))) {
                Ok(m) => m,
                Err(e) => panic!("manager: {e}"),
            };
            let before = rss_of(&pid);
            let mut clients = Vec::with_capacity(n);
            for i in 0..n {
                if let Ok(c) = manager.connect(format!("c{i}"), &url).await {
                    clients.push(c);
                }
            }
            let deadline = Instant::now() + CONNECT_TIMEOUT;
            let mut up = 0;
            for c in &clients {
                let left = deadline.saturating_duration_since(Instant::now());
                if c.wait_connected(left).await.is_ok() {
                    up += 1;
                }
            }
            actix_rt::time::sleep(Duration::from_secs(1)).await;
            let after = rss_of(&pid);
            (after.saturating_sub(before) / up.max(1) as u64, up)
        })
    } else {
        let before = rss_of(&pid);
        let pool = Pool::start(n, url, false, |_, ws, _| async move {
            // Idle: read (answering pings) until told to stop.
            let (_tx, mut rx) = ws.split();
            while let Some(Ok(_)) = rx.next().await {}
        });
        let up = pool.wait_connected();
        std::thread::sleep(Duration::from_secs(1));
        let after = rss_of(&pid);
        let per = after.saturating_sub(before) / up.max(1) as u64;
        pool.abandon();
        (per, up)
    };
    println!("PER_CONN {per_conn} {up}");
    let _ = std::io::stdout().flush();
    std::process::exit(0);
}

// ---------------------------------------------------------------------------------------------
// A pool of bare tokio-tungstenite client connections, one current-thread runtime per core
// ---------------------------------------------------------------------------------------------

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// The bare client's `WebSocketConfig` (default when unset); `__client-idle bare4k` sets a
/// 4 KiB read buffer.
static BARE_CLIENT_CONFIG: OnceLock<WebSocketConfig> = OnceLock::new();

/// Shared by the pool's tasks: how many are up, and when the measurement ends.
struct Phase {
    connected: AtomicUsize,
    failed: AtomicUsize,
    /// Tasks that finished their own preparation (the broadcast join).
    ready: AtomicUsize,
    /// `Some(end)` once every connection is up (or the connect phase timed out).
    go: watch::Receiver<Option<Instant>>,
}

impl Phase {
    async fn wait_go(&self) -> Instant {
        let mut go = self.go.clone();
        loop {
            if let Some(end) = *go.borrow_and_update() {
                return end;
            }
            if go.changed().await.is_err() {
                return Instant::now();
            }
        }
    }
}

struct Pool {
    n: usize,
    phase: Arc<Phase>,
    go: watch::Sender<Option<Instant>>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

impl Pool {
    /// Open `n` connections to `url` (after reading the welcome frame when `welcome`); each runs
    /// `task(index, socket, phase)` once it is up.
    fn start<F, Fut>(n: usize, url: String, welcome: bool, task: F) -> Pool
    where
        F: Fn(usize, Ws, Arc<Phase>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = ()> + 'static,
    {
        let (go_tx, go_rx) = watch::channel(None);
        let phase = Arc::new(Phase {
            connected: AtomicUsize::new(0),
            failed: AtomicUsize::new(0),
            ready: AtomicUsize::new(0),
            go: go_rx,
        });
        let task = Arc::new(task);
        let t = cores();
        let threads = (0..t)
            .map(|k| {
                let (phase, task, url) = (phase.clone(), task.clone(), url.clone());
                std::thread::spawn(move || {
                    let Ok(rt) = tokio::runtime::Builder::new_current_thread()
                        .enable_all()
                        .build()
                    else {
                        return;
                    };
                    let local = tokio::task::LocalSet::new();
                    local.block_on(&rt, async move {
                        let mut handles = Vec::new();
                        for i in (k..n).step_by(t) {
                            let (phase, task, url) = (phase.clone(), task.clone(), url.clone());
                            handles.push(tokio::task::spawn_local(async move {
                                let ws = tokio::time::timeout(CONNECT_TIMEOUT, async {
                                    let (mut ws, _) = tokio_tungstenite::connect_async_with_config(
                                        url.as_str(),
                                        BARE_CLIENT_CONFIG.get().copied(),
                                        false,
                                    )
                                    .await
                                    .ok()?;
                                    if welcome {
                                        ws.next().await?.ok()?;
                                    }
                                    Some(ws)
                                })
                                .await
                                .ok()
                                .flatten();
                                let Some(ws) = ws else {
                                    phase.failed.fetch_add(1, Ordering::Relaxed);
                                    return;
                                };
                                phase.connected.fetch_add(1, Ordering::Relaxed);
                                task(i, ws, phase).await;
                            }));
                            // Pace a little, like the Manager: do not overflow the listen backlog.
                            if (i / t) % 16 == 15 {
                                tokio::time::sleep(Duration::from_millis(5)).await;
                            }
                        }
                        for h in handles {
                            let _ = h.await;
                        }
                    });
                })
            })
            .collect();
        Pool {
            n,
            phase,
            go: go_tx,
            threads,
        }
    }

    /// Wait (bounded) until every connection is up or failed; the number up.
    fn wait_connected(&self) -> usize {
        let deadline = Instant::now() + CONNECT_TIMEOUT;
        loop {
            let up = self.phase.connected.load(Ordering::Relaxed);
            let failed = self.phase.failed.load(Ordering::Relaxed);
            if up + failed >= self.n || Instant::now() > deadline {
                return up;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Start the measurement, ending at `end`, and wait for every task.
    fn run_until(self, end: Instant) {
        let _ = self.go.send(Some(end));
        for t in self.threads {
            let _ = t.join();
        }
    }

    /// Leave the threads running (the process is about to exit).
    fn abandon(self) {
        std::mem::forget(self.threads);
    }
}

// ---------------------------------------------------------------------------------------------
// Servers in child processes
// ---------------------------------------------------------------------------------------------

struct ServerProc {
    child: Child,
    port: u16,
}

impl ServerProc {
    fn start(kind: &str, mode: &str) -> ServerProc {
        let exe = match std::env::current_exe() {
            Ok(e) => e,
            Err(e) => panic!("current_exe: {e}"),
        };
        let mut child = match Command::new(exe)
            .args(["__serve", kind, mode])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
        {
            Ok(c) => c,
            Err(e) => panic!("spawn server {kind}: {e}"),
        };
        let mut line = String::new();
        if let Some(out) = child.stdout.as_mut() {
            let _ = BufReader::new(out).read_line(&mut line);
        }
        let port = line
            .trim()
            .strip_prefix("PORT ")
            .and_then(|p| p.parse().ok())
            .unwrap_or_else(|| panic!("server {kind} did not announce a port: {line:?}"));
        // Let the workers settle before any baseline is read.
        std::thread::sleep(Duration::from_millis(300));
        ServerProc { child, port }
    }

    fn url(&self, path: &str) -> String {
        format!("ws://127.0.0.1:{}{path}", self.port)
    }

    fn pid(&self) -> String {
        self.child.id().to_string()
    }

    fn rss(&self) -> u64 {
        rss_of(&self.child.id().to_string())
    }
}

impl Drop for ServerProc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

// ---------------------------------------------------------------------------------------------
// Measurements
// ---------------------------------------------------------------------------------------------

/// Closed-loop echo with the bare client, `window` messages in flight per connection: replies
/// per second.
fn bare_echo(
    url: String,
    welcome: bool,
    conns: usize,
    window: usize,
    secs: u64,
    cpu_pid: &str,
) -> Echo {
    let count = Arc::new(AtomicU64::new(0));
    let c = count.clone();
    let pool = Pool::start(conns, url, welcome, move |i, ws, phase| {
        let c = c.clone();
        async move {
            let end = phase.wait_go().await;
            let (mut tx, mut rx) = ws.split();
            let mut seq = (i as u64) << 32;
            // Fill the window, then send one more for every reply.
            for _ in 1..window.max(1) {
                seq += 1;
                if tx.feed(Message::text(echo_payload(seq))).await.is_err() {
                    return;
                }
            }
            while Instant::now() < end {
                seq += 1;
                if tx.send(Message::text(echo_payload(seq))).await.is_err() {
                    return;
                }
                loop {
                    match tokio::time::timeout(REPLY_TIMEOUT, rx.next()).await {
                        Ok(Some(Ok(m))) if m.is_text() => break,
                        Ok(Some(Ok(_))) => continue,
                        _ => return,
                    }
                }
                c.fetch_add(1, Ordering::Relaxed);
            }
            let _ = tx.close().await;
        }
    });
    let up = pool.wait_connected();
    if up < conns {
        eprintln!("  bare echo: only {up} of {conns} connected");
    }
    let start = Instant::now();
    let cpu0 = cpu_us(cpu_pid);
    pool.run_until(start + Duration::from_secs(secs));
    let cpu = cpu_us(cpu_pid).saturating_sub(cpu0) as f64;
    let n = count.load(Ordering::Relaxed) as f64;
    Echo {
        rate: n / secs as f64,
        cpu_us: cpu / n.max(1.0),
    }
}

/// Closed-loop echo with our Manager (verbatim text frames), `window` in flight per
/// connection: replies per second.
fn manager_echo(url: String, conns: usize, window: usize, secs: u64) -> Echo {
    let sys = actix_rt::System::new();
    sys.block_on(async move {
        let manager = match Manager::new(ManagerConfig::default().connect_rate(Some(5000.0))) {
            Ok(m) => m,
            Err(e) => panic!("manager: {e}"),
        };
        let mut clients = Vec::new();
        for i in 0..conns {
            if let Ok(c) = manager.connect(format!("c{i}"), &url).await {
                clients.push(c);
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
        if up < conns {
            eprintln!("  manager echo: only {up} of {conns} connected");
        }
        let count = Arc::new(AtomicU64::new(0));
        let done = Arc::new(AtomicUsize::new(0));
        let end = Instant::now() + Duration::from_secs(secs);
        let cpu0 = cpu_us("self");
        for (i, client) in clients.iter().enumerate() {
            let (c, d, client) = (count.clone(), done.clone(), client.clone());
            let mut rx = client.subscribe_text(window.max(1) * 2);
            let name = client.name().to_owned();
            manager.spawn_on(&name, async move {
                let mut seq = (i as u64) << 32;
                for _ in 1..window.max(1) {
                    seq += 1;
                    if client.send_text(echo_payload(seq)).await.is_err() {
                        d.fetch_add(1, Ordering::Relaxed);
                        return;
                    }
                }
                while Instant::now() < end {
                    seq += 1;
                    if client.send_text(echo_payload(seq)).await.is_err() {
                        break;
                    }
                    match actix_rt::time::timeout(REPLY_TIMEOUT, rx.recv()).await {
                        Ok(Some(_)) => {
                            c.fetch_add(1, Ordering::Relaxed);
                        }
                        _ => break,
                    }
                }
                d.fetch_add(1, Ordering::Relaxed);
            });
        }
        let bound = end + REPLY_TIMEOUT + Duration::from_secs(1);
        while done.load(Ordering::Relaxed) < clients.len() && Instant::now() < bound {
            actix_rt::time::sleep(Duration::from_millis(20)).await;
        }
        let cpu = cpu_us("self").saturating_sub(cpu0) as f64;
        let n = count.load(Ordering::Relaxed) as f64;
        manager.shutdown().await;
        Echo {
            rate: n / secs as f64,
            cpu_us: cpu / n.max(1.0),
        }
    })
}

/// Server RSS per idle connection: bare clients hold `n` connections open.
fn server_idle_rss(srv: &ServerProc, url: String, welcome: bool, n: usize) -> u64 {
    let before = srv.rss();
    let pool = Pool::start(n, url, welcome, |_, ws, phase| async move {
        let end = phase.wait_go().await;
        let (_tx, mut rx) = ws.split();
        let _ = tokio::time::timeout_at(end.into(), async {
            while let Some(Ok(_)) = rx.next().await {}
        })
        .await;
    });
    let up = pool.wait_connected();
    std::thread::sleep(Duration::from_secs(1));
    let after = srv.rss();
    pool.run_until(Instant::now());
    if up < n {
        eprintln!("  server idle: only {up} of {n} connected");
    }
    after.saturating_sub(before) / up.max(1) as u64
}

/// Client RSS per idle connection, measured by a child process of its own.
fn client_idle_rss(kind: &str, url: &str, n: usize) -> u64 {
    let Ok(exe) = std::env::current_exe() else {
        return 0;
    };
    let out = Command::new(exe)
        .args(["__client-idle", kind, url, &n.to_string()])
        .stderr(Stdio::inherit())
        .output();
    let text = out
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default();
    let mut parts = text.split_whitespace().skip(1);
    let per = parts.next().and_then(|v| v.parse().ok()).unwrap_or(0);
    let up: usize = parts.next().and_then(|v| v.parse().ok()).unwrap_or(0);
    if up < n {
        eprintln!("  client idle ({kind}): only {up} of {n} connected");
    }
    per
}

/// Broadcast latency: `members` bare clients in one room, connection 0 publishes `rate` times a
/// second for `secs`; latency = publish to each receipt. Returns (p50 µs, p99 µs, missing).
fn broadcast(url: String, ours: bool, members: usize, rate: u64, secs: u64) -> (u64, u64, u64) {
    let lat = Arc::new(Mutex::new(Vec::<u64>::with_capacity(
        members * (rate * secs) as usize,
    )));
    let sent = Arc::new(AtomicU64::new(0));
    let (l, s) = (lat.clone(), sent.clone());
    let pool = Pool::start(members, url, ours, move |i, mut ws, phase| {
        let (l, s) = (l.clone(), s.clone());
        async move {
            if ours {
                let join = r#"{"type":"join","room":"bench","id":1}"#;
                if ws.send(Message::text(join)).await.is_err() {
                    return;
                }
                // Wait for `joined` before the measurement starts.
                loop {
                    match tokio::time::timeout(CONNECT_TIMEOUT, ws.next()).await {
                        Ok(Some(Ok(m))) if m.to_text().is_ok_and(|t| t.contains("joined")) => break,
                        Ok(Some(Ok(_))) => continue,
                        _ => return,
                    }
                }
            }
            phase.ready.fetch_add(1, Ordering::Relaxed);
            let end = phase.wait_go().await;
            let (mut tx, mut rx) = ws.split();
            if i == 0 {
                let s = s.clone();
                tokio::task::spawn_local(async move {
                    let mut tick = tokio::time::interval(Duration::from_micros(1_000_000 / rate));
                    while Instant::now() < end {
                        tick.tick().await;
                        let text = if ours {
                            format!(
                                r#"{{"type":"publish","room":"bench","data":{{"t":{}}}}}"#,
                                now_us()
                            )
                        } else {
                            format!(r#"{{"t":{}}}"#, now_us())
                        };
                        if tx.send(Message::text(text)).await.is_err() {
                            return;
                        }
                        s.fetch_add(1, Ordering::Relaxed);
                    }
                });
            }
            let mut mine = Vec::new();
            let stop = end + Duration::from_secs(2);
            while let Ok(Some(Ok(m))) = tokio::time::timeout_at(stop.into(), rx.next()).await {
                let Ok(text) = m.to_text() else { continue };
                if let Some(pos) = text.find("\"t\":") {
                    let digits: String = text[pos + 4..]
                        .chars()
                        .take_while(char::is_ascii_digit)
                        .collect();
                    if let Ok(t) = digits.parse::<u64>() {
                        mine.push(now_us().saturating_sub(t));
                    }
                }
            }
            if let Ok(mut all) = l.lock() {
                all.extend(mine);
            }
        }
    });
    let up = pool.wait_connected();
    if up < members {
        eprintln!("  broadcast: only {up} of {members} connected");
    }
    // Connections count as up before they joined: wait (bounded) for the joins.
    let deadline = Instant::now() + CONNECT_TIMEOUT;
    while pool.phase.ready.load(Ordering::Relaxed) < up && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    std::thread::sleep(Duration::from_millis(200));
    pool.run_until(Instant::now() + Duration::from_secs(secs));
    let mut all = lat.lock().map(|v| v.clone()).unwrap_or_default();
    all.sort_unstable();
    let pct = |p: f64| {
        all.get(((all.len() as f64 * p) as usize).min(all.len().saturating_sub(1)))
            .copied()
            .unwrap_or(0)
    };
    let expected = sent.load(Ordering::Relaxed) * up as u64;
    (
        pct(0.50),
        pct(0.99),
        expected.saturating_sub(all.len() as u64),
    )
}

// ---------------------------------------------------------------------------------------------
// The report
// ---------------------------------------------------------------------------------------------

struct Row {
    point: String,
    ours: f64,
    bare: f64,
    unit: &'static str,
    /// `Some(x)` = goal `ratio >= x`; for `higher_is_better == false`, `ratio <= x`.
    goal: Option<f64>,
    higher_is_better: bool,
    note: String,
}

impl Row {
    fn ratio(&self) -> f64 {
        if self.bare > 0.0 {
            self.ours / self.bare
        } else {
            f64::NAN
        }
    }
    fn met(&self) -> &'static str {
        match self.goal {
            None => "-",
            Some(g) if self.higher_is_better && self.ratio() >= g => "yes",
            Some(g) if !self.higher_is_better && self.ratio() <= g => "yes",
            Some(_) => "NO",
        }
    }
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v.get(v.len() / 2).copied().unwrap_or(f64::NAN)
}

fn parent(quick: bool) {
    let (d_echo, d_secs, d_idle, d_members, d_bsecs) = if quick {
        ("20x4,100x1", 2, 200, 200, 3)
    } else {
        ("100x16,1000x1", 5, 1000, 1000, 10)
    };
    let echo_spec = std::env::var("E2E_ECHO").unwrap_or_else(|_| d_echo.into());
    let echo_points: Vec<(usize, usize)> = echo_spec
        .split(',')
        .filter_map(|p| {
            let (c, w) = p.trim().split_once('x')?;
            Some((c.parse().ok()?, w.parse().ok()?))
        })
        .collect();
    let secs = env_usize("E2E_SECS", d_secs) as u64;
    let idle = env_usize("E2E_IDLE", d_idle);
    let members = env_usize("E2E_MEMBERS", d_members);
    let bsecs = env_usize("E2E_BCAST_SECS", d_bsecs) as u64;
    let rate = env_usize("E2E_RATE", 20).max(1) as u64;
    let runs = env_usize("E2E_RUNS", 1).max(1);
    let only =
        std::env::var("E2E_ONLY").unwrap_or_else(|_| "client,server,memory,broadcast".into());
    let want = |p: &str| only.split(',').any(|o| o.trim() == p);
    println!(
        "e2e: {} cores, echo {echo_spec} (connections x in flight) x {secs}s, idle {idle}, broadcast {members} members x {bsecs}s at {rate}/s, {runs} run(s)",
        cores()
    );

    // Each run produces rows; the table shows, per point, the run with the median ratio.
    let mut runs_rows: Vec<Vec<Row>> = Vec::new();
    for run in 0..runs {
        println!("run {}/{runs}", run + 1);
        let mut rows = Vec::new();
        if want("client") {
            for &(conns, window) in &echo_points {
                let tt = ServerProc::start("tt", "echo");
                let ours = manager_echo(tt.url("/"), conns, window, secs);
                let bare = bare_echo(tt.url("/"), false, conns, window, secs, "self");
                println!(
                    "  client echo {conns}x{window}: manager {:.0}/s ({:.2} CPU us/msg), bare tt client {:.0}/s ({:.2} CPU us/msg)",
                    ours.rate, ours.cpu_us, bare.rate, bare.cpu_us
                );
                rows.push(Row {
                    point: format!("client echo msg/s, {conns} conns x {window} in flight"),
                    ours: ours.rate,
                    bare: bare.rate,
                    unit: "msg/s",
                    goal: Some(1.0),
                    higher_is_better: true,
                    note: "Manager vs a bare tokio-tungstenite client, same tt server".into(),
                });
                rows.push(Row {
                    point: format!("client CPU us per echo, {conns}x{window}"),
                    ours: ours.cpu_us,
                    bare: bare.cpu_us,
                    unit: "us",
                    goal: None,
                    higher_is_better: false,
                    note: "client process CPU / replies (10 ms tick resolution)".into(),
                });
            }
        }
        if want("server") {
            for &(conns, window) in &echo_points {
                let (ours_ws, ours_echo) = {
                    let s = ServerProc::start("ours", "echo");
                    let pid = s.pid();
                    (
                        bare_echo(s.url("/ws"), true, conns, window, secs, &pid),
                        bare_echo(s.url("/echo"), false, conns, window, secs, &pid),
                    )
                };
                let tt = {
                    let s = ServerProc::start("tt", "echo");
                    bare_echo(s.url("/"), false, conns, window, secs, &s.pid())
                };
                let actors = {
                    let s = ServerProc::start("actors", "echo");
                    bare_echo(s.url("/"), false, conns, window, secs, &s.pid())
                };
                println!(
                    "  server echo {conns}x{window} msg/s (CPU us/msg): ours /ws {:.0} ({:.2}), ours /echo {:.0} ({:.2}), tt {:.0} ({:.2}), actix-web-actors {:.0} ({:.2})",
                    ours_ws.rate, ours_ws.cpu_us, ours_echo.rate, ours_echo.cpu_us, tt.rate, tt.cpu_us, actors.rate, actors.cpu_us
                );
                let at = format!("{conns} conns x {window}");
                rows.push(Row {
                    point: format!("server echo msg/s, /echo, {at}, vs actix-web-actors"),
                    ours: ours_echo.rate,
                    bare: actors.rate,
                    unit: "msg/s",
                    goal: Some(1.0),
                    higher_is_better: true,
                    note: String::new(),
                });
                rows.push(Row {
                    point: format!("server echo msg/s, /echo, {at}, vs tt current-thread"),
                    ours: ours_echo.rate,
                    bare: tt.rate,
                    unit: "msg/s",
                    goal: Some(0.9),
                    higher_is_better: true,
                    note: "tt: one current-thread runtime per core".into(),
                });
                rows.push(Row {
                    point: format!("server echo msg/s, rooms /ws, {at}, vs actix-web-actors"),
                    ours: ours_ws.rate,
                    bare: actors.rate,
                    unit: "msg/s",
                    goal: None,
                    higher_is_better: true,
                    note: "the rooms protocol's echo request, parsed and answered".into(),
                });
                rows.push(Row {
                    point: format!("server CPU us per echo, /echo, {at}"),
                    ours: ours_echo.cpu_us,
                    bare: actors.cpu_us,
                    unit: "us",
                    goal: None,
                    higher_is_better: false,
                    note: "server process CPU / replies; bare = actix-web-actors".into(),
                });
            }
        }
        if want("memory") {
            let mut server_mem = Vec::new();
            for (kind, path, welcome) in [
                ("ours", "/ws", true),
                ("actors", "/", false),
                ("tt4k", "/", false),
            ] {
                let s = ServerProc::start(kind, "echo");
                let per = server_idle_rss(&s, s.url(path), welcome, idle);
                println!("  server idle RSS/conn {kind}: {per} B");
                server_mem.push(per as f64);
            }
            rows.push(Row {
                point: format!("server RSS/idle conn ({idle}), vs actix-web-actors"),
                ours: server_mem[0],
                bare: server_mem[1],
                unit: "B",
                goal: Some(1.0),
                higher_is_better: false,
                note: String::new(),
            });
            rows.push(Row {
                point: format!("server RSS/idle conn ({idle}), vs tt 4 KiB read buf"),
                ours: server_mem[0],
                bare: server_mem[2],
                unit: "B",
                goal: None,
                higher_is_better: false,
                note: String::new(),
            });
            let tt = ServerProc::start("tt4k", "echo");
            let ours = client_idle_rss("ours", &tt.url("/"), idle);
            let bare4k = client_idle_rss("bare4k", &tt.url("/"), idle);
            println!("  client idle RSS/conn: manager {ours} B, tt client with 4 KiB read buffer {bare4k} B");
            rows.push(Row {
                point: format!("client RSS/idle conn ({idle}), vs tt 4 KiB read buf"),
                ours: ours as f64,
                bare: bare4k as f64,
                unit: "B",
                goal: Some(1.0),
                higher_is_better: false,
                note: "Manager vs tt client, read_buffer_size 4096".into(),
            });
        }
        if want("broadcast") {
            let (o50, o99, omiss) = {
                let s = ServerProc::start("ours", "echo");
                broadcast(s.url("/ws"), true, members, rate, bsecs)
            };
            let (a50, a99, amiss) = {
                let s = ServerProc::start("actors", "bcast");
                broadcast(s.url("/"), false, members, rate, bsecs)
            };
            let (b50, b99, bmiss) = {
                let s = ServerProc::start("tt", "bcast");
                broadcast(s.url("/"), false, members, rate, bsecs)
            };
            println!(
                "  broadcast to {members}: ours p50 {o50} us p99 {o99} us (missing {omiss}); actix-web-actors p50 {a50} us p99 {a99} us (missing {amiss}); bare tt p50 {b50} us p99 {b99} us (missing {bmiss})"
            );
            rows.push(Row {
                point: format!("broadcast p99 us ({members} members), vs actix-web-actors"),
                ours: o99 as f64,
                bare: a99 as f64,
                unit: "us",
                goal: Some(1.0),
                higher_is_better: false,
                note: format!("p50 {o50} vs {a50}; missing ours {omiss}, actors {amiss}"),
            });
            rows.push(Row {
                point: format!("broadcast p99 us ({members} members), vs tt"),
                ours: o99 as f64,
                bare: b99 as f64,
                unit: "us",
                goal: None,
                higher_is_better: false,
                note: format!("p50 {o50} vs {b50}; missing tt {bmiss}"),
            });
        }
        runs_rows.push(rows);
    }

    println!();
    println!("| point | ours | bare | ratio | goal | met? | note |");
    println!("| --- | --- | --- | --- | --- | --- | --- |");
    let points = runs_rows.first().map(|r| r.len()).unwrap_or(0);
    for p in 0..points {
        let ratios: Vec<f64> = runs_rows
            .iter()
            .filter_map(|r| r.get(p))
            .map(Row::ratio)
            .collect();
        let med = median(ratios.clone());
        let Some(row) = runs_rows
            .iter()
            .filter_map(|r| r.get(p))
            .find(|r| r.ratio().total_cmp(&med).is_eq())
        else {
            continue;
        };
        let goal = match row.goal {
            Some(g) if row.higher_is_better => format!(">= {g}"),
            Some(g) => format!("<= {g}"),
            None => "-".into(),
        };
        let all = if ratios.len() > 1 {
            format!(
                " (ratios: {})",
                ratios
                    .iter()
                    .map(|r| format!("{r:.2}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            )
        } else {
            String::new()
        };
        println!(
            "| {} | {:.prec$} {} | {:.prec$} {} | {:.2} | {} | {} | {}{} |",
            row.point,
            row.ours,
            row.unit,
            row.bare,
            row.unit,
            row.ratio(),
            goal,
            row.met(),
            row.note,
            all,
            prec = if row.bare.abs() < 100.0 { 2 } else { 0 }
        );
    }
}
