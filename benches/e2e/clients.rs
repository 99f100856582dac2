//! The clients that measure: a pool of bare tokio-tungstenite connections (one current-thread
//! runtime per core), our [`Manager`], and what each point measures with them (echo rate and
//! CPU, idle memory per connection, broadcast latency).

use std::future::Future;
use std::io::Write;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use actix_ws_manager::client::{Manager, ManagerConfig};
use futures_util::{SinkExt, StreamExt};
use tokio::sync::watch;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::Message;

use crate::servers::ServerProc;
use crate::{cores, cpu_us, echo_payload, now_us, rss_of, CONNECT_TIMEOUT, REPLY_TIMEOUT};

/// `__client-idle ours|bare URL N`: connect N idle clients, print `PER_CONN <bytes> <connected>`.
pub(crate) fn client_idle_child(args: &[String]) {
    let kind = args.first().cloned().unwrap_or_default();
    let url = args.get(1).cloned().unwrap_or_default();
    let n: usize = args.get(2).and_then(|v| v.parse().ok()).unwrap_or(100);
    let pid = Some(std::process::id());
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
            let before = rss_of(pid);
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
            let after = rss_of(pid);
            (after.saturating_sub(before) / up.max(1) as u64, up)
        })
    } else {
        let before = rss_of(pid);
        let pool = Pool::start(n, url, false, |_, ws, _| async move {
            // Idle: read (answering pings) until told to stop.
            let (_tx, mut rx) = ws.split();
            while let Some(Ok(_)) = rx.next().await {}
        });
        let up = pool.wait_connected();
        std::thread::sleep(Duration::from_secs(1));
        let after = rss_of(pid);
        let per = after.saturating_sub(before) / up.max(1) as u64;
        pool.abandon();
        (per, up)
    };
    println!("PER_CONN {per_conn} {up}");
    let _ = std::io::stdout().flush();
    std::process::exit(0);
}

/// A bare client connection.
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
    /// Wait until the measurement starts; its end (now, when it never will).
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

/// `n` bare connections, each running its task, on one current-thread runtime per core.
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

/// One echo measurement: replies per second, and CPU µs per reply of the process watched.
#[derive(Clone, Copy)]
pub(crate) struct Echo {
    pub(crate) rate: f64,
    pub(crate) cpu_us: f64,
}

/// Closed-loop echo with the bare client, `window` messages in flight per connection: replies
/// per second.
pub(crate) fn bare_echo(
    url: String,
    welcome: bool,
    conns: usize,
    window: usize,
    secs: u64,
    cpu_pid: Option<u32>,
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
pub(crate) fn manager_echo(url: String, conns: usize, window: usize, secs: u64) -> Echo {
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
        let cpu0 = cpu_us(None);
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
        let cpu = cpu_us(None).saturating_sub(cpu0) as f64;
        let n = count.load(Ordering::Relaxed) as f64;
        manager.shutdown().await;
        Echo {
            rate: n / secs as f64,
            cpu_us: cpu / n.max(1.0),
        }
    })
}

/// Server RSS per idle connection: bare clients hold `n` connections open.
pub(crate) fn server_idle_rss(srv: &ServerProc, url: String, welcome: bool, n: usize) -> u64 {
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
pub(crate) fn client_idle_rss(kind: &str, url: &str, n: usize) -> u64 {
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

/// What the broadcast point's member tasks share.
struct Bcast {
    /// Our rooms protocol (join, then publish envelopes), or bare text frames.
    ours: bool,
    /// Publishes per second, by connection 0.
    rate: u64,
    /// Every receipt's latency in µs, all members.
    latencies: Mutex<Vec<u64>>,
    /// Publishes sent.
    sent: AtomicU64,
}

/// Broadcast latency: `members` bare clients in one room, connection 0 publishes `rate` times a
/// second for `secs`; latency = publish to each receipt. Returns (p50 µs, p99 µs, missing).
pub(crate) fn broadcast(
    url: String,
    ours: bool,
    members: usize,
    rate: u64,
    secs: u64,
) -> (u64, u64, u64) {
    let bcast = Arc::new(Bcast {
        ours,
        rate,
        latencies: Mutex::new(Vec::with_capacity(members * (rate * secs) as usize)),
        sent: AtomicU64::new(0),
    });
    let b = bcast.clone();
    let pool = Pool::start(members, url, ours, move |i, ws, phase| {
        bcast_member(i, ws, phase, b.clone())
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
    let mut all = bcast
        .latencies
        .lock()
        .map(|v| v.clone())
        .unwrap_or_default();
    all.sort_unstable();
    let expected = bcast.sent.load(Ordering::Relaxed) * up as u64;
    (
        percentile(&all, 0.50),
        percentile(&all, 0.99),
        expected.saturating_sub(all.len() as u64),
    )
}

/// The value at quantile `p` of `sorted` (0 when empty).
fn percentile(sorted: &[u64], p: f64) -> u64 {
    sorted
        .get(((sorted.len() as f64 * p) as usize).min(sorted.len().saturating_sub(1)))
        .copied()
        .unwrap_or(0)
}

/// One broadcast member: join the room (ours), wait for the start, publish (connection 0), and
/// time every receipt until two seconds past the end.
async fn bcast_member(i: usize, mut ws: Ws, phase: Arc<Phase>, bcast: Arc<Bcast>) {
    if bcast.ours && !join_bench_room(&mut ws).await {
        return;
    }
    phase.ready.fetch_add(1, Ordering::Relaxed);
    let end = phase.wait_go().await;
    let (tx, mut rx) = ws.split();
    if i == 0 {
        tokio::task::spawn_local(publish_ticks(tx, end, bcast.clone()));
    }
    let mut received = Vec::new();
    let stop = end + Duration::from_secs(2);
    while let Ok(Some(Ok(m))) = tokio::time::timeout_at(stop.into(), rx.next()).await {
        let Ok(text) = m.to_text() else { continue };
        if let Some(pos) = text.find("\"t\":") {
            let digits: String = text[pos + 4..]
                .chars()
                .take_while(char::is_ascii_digit)
                .collect();
            if let Ok(t) = digits.parse::<u64>() {
                received.push(now_us().saturating_sub(t));
            }
        }
    }
    if let Ok(mut all) = bcast.latencies.lock() {
        all.extend(received);
    }
}

/// Join the room `bench` and wait for `joined`, so the member counts before the measurement
/// starts. False when the socket failed or no `joined` came in time.
async fn join_bench_room(ws: &mut Ws) -> bool {
    let join = r#"{"type":"join","room":"bench","id":1}"#;
    if ws.send(Message::text(join)).await.is_err() {
        return false;
    }
    loop {
        match tokio::time::timeout(CONNECT_TIMEOUT, ws.next()).await {
            Ok(Some(Ok(m))) if m.to_text().is_ok_and(|t| t.contains("joined")) => return true,
            Ok(Some(Ok(_))) => continue,
            _ => return false,
        }
    }
}

/// Publish the send time `rate` times a second until `end`, counting each publish sent.
async fn publish_ticks(
    mut tx: futures_util::stream::SplitSink<Ws, Message>,
    end: Instant,
    bcast: Arc<Bcast>,
) {
    let mut tick = tokio::time::interval(Duration::from_micros(1_000_000 / bcast.rate));
    while Instant::now() < end {
        tick.tick().await;
        let text = if bcast.ours {
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
        bcast.sent.fetch_add(1, Ordering::Relaxed);
    }
}
