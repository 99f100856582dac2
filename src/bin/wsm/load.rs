//! `wsm load`: open many connections through the client [`Manager`] and measure echo round
//! trips or room broadcasts (the hashrocket websocket-shootout method), against an embedded
//! rooms server (the default) or a server on the loopback interface.
//!
//! Every wait is bounded: the connect phase by `--connect-timeout` (plus the time the rate
//! limit needs), the measurement by `--duration`, and the drain by `--timeout`.

use std::io::Write;
use std::net::{IpAddr, SocketAddr, TcpStream, ToSocketAddrs};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use actix_ws_manager::client::{self, Client, ConnectionState, Event, Manager, ManagerConfig};
use actix_ws_manager::config::{self, ClientConfig, ReconnectPolicy, ServerConfig};
use actix_ws_manager::protocol::{self, ErrorReply, Joined, RoomMessage};
use actix_ws_manager::{server, tls, Error, Result};
use clap::{Args, ValueEnum};
use futures_util::stream::{FuturesUnordered, StreamExt};
use hdrhistogram::Histogram;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, watch};

use crate::child::{self, ChildServer};
use crate::flags;

/// The protocol the target speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Protocol {
    /// The rooms protocol of `wsm serve` (join, publish, echo).
    Rooms,
    /// A plain echo server: every text frame comes back verbatim.
    Echo,
}

/// What the connections do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Scenario {
    /// Every connection sends echo messages (`--window` in flight) and times each reply.
    Echo,
    /// Every connection joins a room; `--senders` per room publish; every receipt is timed.
    Broadcast,
    /// Every connection connects and stays idle (heartbeats only): memory per connection.
    Idle,
    /// Connections stay idle while `--window` at a time are closed and reopened (paced by
    /// `--rate`); the latency is the time to reconnect.
    Churn,
}

impl Scenario {
    fn name(self) -> &'static str {
        match self {
            Scenario::Echo => "echo",
            Scenario::Broadcast => "broadcast",
            Scenario::Idle => "idle",
            Scenario::Churn => "churn",
        }
    }
}

/// Flags of `wsm load`.
#[derive(Debug, Clone, Args)]
pub struct LoadArgs {
    /// Target WebSocket URL (loopback hosts only). Default: an embedded rooms server on
    /// 127.0.0.1:0, run as a child process of this program (see --in-process).
    #[arg(long)]
    url: Option<String>,
    /// The protocol the target speaks (with the embedded server, `echo` uses its /echo path).
    #[arg(long, value_enum, default_value_t = Protocol::Rooms)]
    protocol: Protocol,
    /// What the connections do.
    #[arg(long, value_enum, default_value_t = Scenario::Echo)]
    scenario: Scenario,
    /// Connections to open, 1 to 1000000.
    #[arg(long, default_value_t = 1000, value_parser = flags::count(1..=flags::MAX_CONNECTIONS))]
    connections: usize,
    /// How long to measure, after every connection is up (such as `10s`; above zero, at most
    /// 365 days).
    #[arg(long, default_value = "10s", value_parser = flags::duration)]
    duration: Duration,
    /// Echo messages in flight per connection, 1 to 10000.
    #[arg(long, default_value_t = 1, value_parser = flags::count(1..=flags::MAX_WINDOW))]
    window: usize,
    /// Payload bytes per message (a padding string inside `data`), 0 to 16 MiB less 4 KiB
    /// (the client's message size limit, less room for the envelope).
    #[arg(long, default_value_t = 64, value_parser = flags::count(0..=MAX_SIZE))]
    size: usize,
    /// New connections per second, 0.01 to 1000000.
    #[arg(long, default_value_t = 1000.0, value_parser = flags::per_second)]
    rate: f64,
    /// Rooms the connections are spread over (broadcast), 1 to 1000000.
    #[arg(long, default_value_t = 1, value_parser = flags::count(1..=flags::MAX_CONNECTIONS))]
    rooms: usize,
    /// Publishing connections per room (broadcast), 1 to 1000000.
    #[arg(long, default_value_t = 2, value_parser = flags::count(1..=flags::MAX_CONNECTIONS))]
    senders: usize,
    /// Broadcast: the publishing connections connect here instead of --url (loopback only), for
    /// example another `wsm serve --redis` node, to measure cross-node delivery.
    #[arg(long, value_name = "URL", requires = "url")]
    sender_url: Option<String>,
    /// Publishes per second, per sender (broadcast), 0.01 to 1000000.
    #[arg(long, default_value_t = 10.0, value_parser = flags::per_second)]
    publish_rate: f64,
    /// How long each connection may take to connect (and join); above zero, at most 365 days.
    #[arg(long, default_value = "10s", value_parser = flags::duration)]
    connect_timeout: Duration,
    /// How long a reply or a receipt may take before it counts as missing; above zero, at most
    /// 365 days.
    #[arg(long, default_value = "5s", value_parser = flags::duration)]
    timeout: Duration,
    /// Client arbiters (threads), 1 to 1024; default one per core.
    #[arg(long, value_parser = flags::count(1..=flags::MAX_ARBITERS))]
    arbiters: Option<usize>,
    /// Print exactly one JSON object on stdout instead of the table.
    #[arg(long)]
    json: bool,
    /// A PEM file of extra root certificates to trust for a `wss://` --url.
    #[arg(long, value_name = "FILE")]
    ca: Option<std::path::PathBuf>,
    /// Run the embedded server over TLS (`wss://`) with a certificate made at start, to
    /// measure what TLS costs. Only without --url.
    #[arg(long, conflicts_with = "url")]
    tls: bool,
    /// Run the embedded server inside this process instead of as a child process (`wsm serve`
    /// of this same program): client and server then share one open-file limit (3 descriptors
    /// per connection instead of 1 each) and one RSS figure.
    #[arg(long, conflicts_with = "url")]
    in_process: bool,
    /// Root certificates the clients trust besides the web PKI (from --ca, or the embedded
    /// server's throwaway CA).
    #[arg(skip)]
    roots: Vec<Vec<u8>>,
    /// The open-file limit in force, once raised.
    #[arg(skip)]
    fd_limit: Option<u64>,
}

/// Microseconds since the process started measuring; one clock for every thread.
fn now_us() -> u64 {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    EPOCH.get_or_init(Instant::now).elapsed().as_micros() as u64
}

/// The resident set size of this process (Linux only).
fn process_rss_bytes() -> Option<u64> {
    child::rss_bytes(None)
}

/// Room for the envelope around `--size` bytes of padding.
const MESSAGE_OVERHEAD: usize = 4096;

/// The largest `--size`: the client's message size limit, less the envelope's room.
const MAX_SIZE: u64 = (config::DEFAULT_MAX_MESSAGE_SIZE - MESSAGE_OVERHEAD) as u64;

fn bad(msg: impl Into<String>) -> Error {
    Error::Config(msg.into())
}

impl LoadArgs {
    /// What the flags' own ranges (checked by clap, see `flags`) cannot say: combinations.
    fn check(&self) -> Result<()> {
        if self.scenario == Scenario::Broadcast && self.protocol == Protocol::Echo {
            return Err(bad(
                "the broadcast scenario needs the rooms protocol (--protocol rooms)",
            ));
        }
        Ok(())
    }
}

/// The loopback address of `url`, or an error: `wsm load` only targets this machine.
fn loopback_addr(url: &str) -> Result<SocketAddr> {
    client::validate_url(url)?;
    let invalid = |reason: &str| Error::InvalidUrl {
        url: url.to_owned(),
        reason: reason.to_owned(),
    };
    let uri: awc::http::Uri = url.parse().map_err(|_| invalid("does not parse"))?;
    let host = uri.host().unwrap_or_default().trim_matches(['[', ']']);
    let port = uri
        .port_u16()
        .unwrap_or(if uri.scheme_str() == Some("wss") {
            443
        } else {
            80
        });
    let loopback = host == "localhost" || host.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback());
    if !loopback {
        return Err(invalid(
            "wsm load only targets loopback hosts (127.0.0.1, ::1, localhost)",
        ));
    }
    (host, port)
        .to_socket_addrs()
        .map_err(|e| invalid(&e.to_string()))?
        .next()
        .ok_or_else(|| invalid("the host resolves to no address"))
}

/// Where the server under load runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ServerMode {
    /// `--url`: somebody else's server.
    External,
    /// The default: `wsm serve` of this program, as a child process.
    Child,
    /// `--in-process`: in this process, sharing its limits.
    InProcess,
}

impl ServerMode {
    fn of(args: &LoadArgs) -> Self {
        match (&args.url, args.in_process) {
            (Some(_), _) => ServerMode::External,
            (None, false) => ServerMode::Child,
            (None, true) => ServerMode::InProcess,
        }
    }

    fn name(self) -> &'static str {
        match self {
            ServerMode::External => "external",
            ServerMode::Child => "child process",
            ServerMode::InProcess => "in process",
        }
    }
}

/// Descriptors one connection takes in this process: the client's socket, and with the server
/// in this process (`--in-process`) its end of the connection and the duplicate the server
/// keeps to cut stuck sockets (`keep_socket_handle`). A child server has its own limit.
fn fds_per_connection(mode: ServerMode) -> u64 {
    match mode {
        ServerMode::InProcess => 3,
        ServerMode::External | ServerMode::Child => 1,
    }
}

/// Raise the open-file limit to its hard limit and say on stderr if it still caps the run.
/// Answers the limit in force.
fn raise_fd_limit(connections: usize, mode: ServerMode) -> Option<u64> {
    let per = fds_per_connection(mode);
    let needed = connections as u64 * per + 128;
    match rlimit::increase_nofile_limit(u64::MAX) {
        Ok(limit) => {
            if limit < needed {
                eprintln!(
                    "wsm load: the open-file limit is {limit}; {connections} connections need \
                     about {needed} ({per} each{}), so about {} can come up (raise the hard limit \
                     with `ulimit -Hn`)",
                    match mode {
                        ServerMode::InProcess => " with the server in this process",
                        ServerMode::Child => " here; the server child has its own limit",
                        ServerMode::External => "",
                    },
                    limit.saturating_sub(128) / per
                );
            }
            Some(limit)
        }
        Err(e) => {
            eprintln!("wsm load: could not raise the open-file limit: {e}");
            None
        }
    }
}

/// Whether `error` is the open-file limit (EMFILE) stopping this process.
fn is_emfile(error: &str) -> bool {
    error.contains("Too many open files") || error.contains("os error 24")
}

/// `error`, with "EMFILE" named when the open-file limit is what stopped a connection: either
/// the error says so, or (with the embedded server, whose `accept` fails with EMFILE where the
/// client only sees a connect that never completes) the limit was known to be too small.
fn name_emfile(error: &str, args: &LoadArgs) -> String {
    let limit = args
        .fd_limit
        .map_or_else(String::new, |l| format!(" of {l}"));
    if is_emfile(error) {
        return format!("{error} (EMFILE: the open-file limit{limit} stopped connections)");
    }
    let mode = ServerMode::of(args);
    let needed = args.connections as u64 * fds_per_connection(mode) + 128;
    match args.fd_limit {
        Some(l) if l < needed && mode == ServerMode::InProcess => format!(
            "{error} (likely EMFILE: the open-file limit{limit} also stops the embedded server \
             from accepting connections)"
        ),
        Some(l) if l < needed => {
            format!("{error} (the open-file limit{limit} is below what the run needs)")
        }
        _ => error.to_owned(),
    }
}

/// The client configuration every connection starts from: the defaults, trusting `args.roots`.
fn client_config(args: &LoadArgs) -> ClientConfig {
    args.roots.iter().fold(ClientConfig::default(), |c, pem| {
        c.tls_root_pem(pem.clone())
    })
}

/// Run `wsm load`. With `--json`, a failure also prints one JSON object on stdout, `{"error":
/// ..., "url": ...}`, besides the one line on stderr.
pub fn run(args: LoadArgs) -> Result<()> {
    let (json, url) = (args.json, args.url.clone());
    let result = run_inner(args);
    if let (Err(e), true) = (&result, json) {
        let text = serde_json::json!({ "error": e.to_string(), "url": url }).to_string();
        let _ = writeln!(std::io::stdout().lock(), "{text}");
    }
    result
}

fn run_inner(mut args: LoadArgs) -> Result<()> {
    args.check()?;
    if let Some(ca) = &args.ca {
        args.roots.push(crate::tlsfiles::read_pem("--ca", ca)?);
    }
    let mode = ServerMode::of(&args);
    let pem = if args.tls {
        let (ca, cert, key) = crate::tlsfiles::loopback_pki()?;
        args.roots.push(ca.into_bytes());
        Some((cert, key))
    } else {
        None
    };
    if let Some(url) = &args.url {
        loopback_addr(url)?;
    }
    if let Some(url) = &args.sender_url {
        loopback_addr(url)?;
    }
    args.fd_limit = raise_fd_limit(args.connections, mode);
    let max_message_size =
        config::DEFAULT_SERVER_MAX_MESSAGE_SIZE.max(args.size + MESSAGE_OVERHEAD);
    let child = match mode {
        ServerMode::Child => Some(ChildServer::spawn(
            &[
                "--max-sessions".into(),
                (args.connections.max(1) + 64).to_string(),
                "--max-message-size".into(),
                max_message_size.to_string(),
                "--session-queue".into(),
                "4096".into(),
                // One descriptor per connection, so 10,000 fit under a limit of 20,000.
                "--no-socket-handle".into(),
            ],
            pem.as_ref().map(|(c, k)| (c.as_str(), k.as_str())),
        )?),
        _ => None,
    };
    now_us();
    actix_rt::System::new().block_on(async move {
        let embedded = match mode {
            ServerMode::InProcess => {
                let config = ServerConfig::default()
                    .max_sessions(args.connections.max(1) + 64)
                    .max_message_size(max_message_size)
                    .session_queue(4096);
                let rooms = server::Rooms::start(config)?;
                Some(match &pem {
                    Some((cert, key)) => server::serve_tls(
                        "127.0.0.1:0",
                        "/ws",
                        "/echo",
                        rooms,
                        tls::server_config(cert.as_bytes(), key.as_bytes())?,
                    )?,
                    None => server::serve_with("127.0.0.1:0", "/ws", "/echo", rooms)?,
                })
            }
            _ => None,
        };
        let url = match (&args.url, &embedded, &child) {
            (Some(u), _, _) => u.clone(),
            (None, Some(s), _) if args.protocol == Protocol::Echo => s.echo_url(),
            (None, Some(s), _) => s.url(),
            (None, None, Some(c)) if args.protocol == Protocol::Echo => c.echo_url.clone(),
            (None, None, Some(c)) => c.url.clone(),
            (None, None, None) => return Err(bad("no target")),
        };
        let result = drive(&args, &url, mode, child.as_ref().map(ChildServer::pid)).await;
        if let Some(server) = embedded {
            if let Err(e) = server.shutdown().await {
                tracing::warn!(error = %e, "embedded server shutdown");
            }
        }
        drop(child);
        let report = result?;
        report.print(args.json)?;
        if report.connections_connected == 0 {
            return Err(Error::ConnectFailed {
                url,
                reason: "no connection succeeded".into(),
            });
        }
        if report.sent > 0 && report.received == 0 {
            return Err(Error::ConnectFailed {
                url,
                reason: format!(
                    "connections came up, but none of the {} messages sent came back (missing {}, \
                     reconnects {})",
                    report.sent, report.missing, report.reconnects
                ),
            });
        }
        Ok(())
    })
}

/// One connection, no retries: TCP, the upgrade, then one echo round trip. Turns the usual
/// bad inputs (nothing listening, not a WebSocket endpoint, a server that closes at once) into
/// one clear error before any load is started.
async fn preflight(url: &str, config: ClientConfig, pad: &str) -> Result<()> {
    let connect_timeout = config.connect_timeout;
    let addr = loopback_addr(url)?;
    let tcp = actix_rt::task::spawn_blocking(move || {
        TcpStream::connect_timeout(&addr, connect_timeout).map(drop)
    })
    .await
    .map_err(|e| bad(e.to_string()))?;
    if let Err(e) = tcp {
        return Err(Error::ConnectFailed {
            url: url.to_owned(),
            reason: format!("nothing accepts TCP connections on {addr}: {e}"),
        });
    }
    let config = config.name("preflight").reconnect(ReconnectPolicy::never());
    let c = client::connect(url, config)?;
    let mut events = c.subscribe_events(64);
    let result = async {
        if let Err(e) = c.wait_connected(connect_timeout).await {
            // The state may have gone Connected -> Failed before the wait looked: the events
            // say whether the upgrade itself succeeded.
            let mut upgraded = false;
            while let Ok(ev) = events.try_recv() {
                upgraded |= matches!(ev, Event::State(ConnectionState::Connected));
            }
            return Err(match c.state() {
                ConnectionState::Failed { reason } if upgraded => Error::ConnectFailed {
                    url: url.to_owned(),
                    reason: format!("connected, but the server ended it at once: {reason}"),
                },
                ConnectionState::Failed { reason } => Error::ConnectFailed {
                    url: url.to_owned(),
                    reason,
                },
                _ => e,
            });
        }
        // A message of the size the run will send, so that a server's size limit shows here.
        let probe = protocol::echo(&EchoData { seq: 0, pad })?;
        if let Err(e) = c.request_envelope(probe, connect_timeout).await {
            // The close code and reason, when the server sent them, say the most.
            let mut closed = None;
            while let Ok(ev) = events.try_recv() {
                if let Event::State(ConnectionState::Disconnected { code, reason }) = ev {
                    closed = Some(format!("the server closed it with {code} {reason:?}"));
                }
            }
            let why = match (closed, c.state()) {
                (Some(closed), _) => closed,
                (None, ConnectionState::Failed { reason }) => reason,
                (None, _) => e.to_string(),
            };
            return Err(Error::ConnectFailed {
                url: url.to_owned(),
                reason: format!(
                    "connected, but a {}-byte echo round trip failed: {why}",
                    pad.len()
                ),
            });
        }
        Ok(())
    }
    .await;
    c.close().await;
    result
}

#[derive(Debug, Serialize, Deserialize)]
struct EchoData<'a> {
    seq: u64,
    #[serde(borrow)]
    pad: &'a str,
}

#[derive(Debug, Serialize, Deserialize)]
struct Tick<'a> {
    seq: u64,
    sent_at_us: u64,
    #[serde(borrow)]
    pad: &'a str,
}

/// What one connection measured.
struct ConnResult {
    hist: Histogram<u64>,
    sent: u64,
    received: u64,
    missing: u64,
    errors: u64,
}

impl ConnResult {
    fn new() -> Self {
        Self {
            // 1 µs to 10 minutes, 3 significant digits. The bounds are constants, not input,
            // and valid, so this cannot fail.
            hist: Histogram::new_with_bounds(1, 600_000_000, 3)
                .expect("constant histogram bounds are valid"),
            sent: 0,
            received: 0,
            missing: 0,
            errors: 0,
        }
    }

    fn record(&mut self, us: u64) {
        self.hist.saturating_record(us.max(1));
        self.received += 1;
    }
}

/// Shared by the driver tasks and the coordinator.
struct Ctx {
    args: LoadArgs,
    pad: String,
    ready: mpsc::UnboundedSender<(usize, std::result::Result<(), String>)>,
    results: mpsc::UnboundedSender<ConnResult>,
    /// The measurement deadline, once every connection is up (a dropped sender aborts).
    start: watch::Receiver<Option<Arc<Plan>>>,
    /// Broadcast receivers stop when this turns true.
    stop: watch::Receiver<bool>,
    /// Broadcast: receipts so far, all connections.
    receipts: AtomicU64,
    /// Broadcast: publishes sent per room.
    published: Vec<AtomicU64>,
    /// Echo: replies so far (for the progress bar).
    replies: AtomicU64,
}

async fn wait_up(client: &Client, timeout: Duration) -> std::result::Result<(), String> {
    client
        .wait_connected(timeout)
        .await
        .map_err(|e| match client.state() {
            ConnectionState::Failed { reason } => reason,
            _ => e.to_string(),
        })
}

/// What the coordinator tells the drivers when the measurement starts.
struct Plan {
    /// When to stop sending.
    deadline: Instant,
    /// The connections that were counted as up when the connect phase ended; a driver that
    /// came up later stays out, so the totals only cover the connections reported.
    admitted: Vec<bool>,
}

/// Wait for the measurement to start; `None` when it never will, or this connection `idx` is
/// not part of it.
async fn wait_start(ctx: &Ctx, idx: usize) -> Option<Instant> {
    let mut start = ctx.start.clone();
    let plan = start.wait_for(Option::is_some).await.ok()?.clone()?;
    plan.admitted
        .get(idx)
        .copied()
        .unwrap_or(false)
        .then_some(plan.deadline)
}

async fn echo_driver(client: Client, idx: usize, ctx: Arc<Ctx>) {
    let mut errors_rx = client.subscribe::<ErrorReply>(64);
    let up = wait_up(&client, ctx.args.connect_timeout).await;
    let ok = up.is_ok();
    let _ = ctx.ready.send((idx, up));
    if !ok {
        return;
    }
    let Some(deadline) = wait_start(&ctx, idx).await else {
        return;
    };
    let mut res = ConnResult::new();
    let mut inflight = FuturesUnordered::new();
    let mut seq = 0u64;
    loop {
        while inflight.len() < ctx.args.window && Instant::now() < deadline {
            seq += 1;
            res.sent += 1;
            inflight.push(one_echo(&client, seq, &ctx.pad, ctx.args.timeout));
        }
        match inflight.next().await {
            None => break,
            Some(EchoOutcome::Reply(us)) => {
                res.record(us);
                ctx.replies.fetch_add(1, Ordering::Relaxed);
            }
            Some(EchoOutcome::Missing) => res.missing += 1,
            Some(EchoOutcome::Error(e)) => {
                tracing::debug!(connection = idx, error = %e, "echo failed");
                res.errors += 1;
            }
        }
    }
    while errors_rx.try_recv().is_ok() {
        res.errors += 1;
    }
    let _ = ctx.results.send(res);
}

enum EchoOutcome {
    Reply(u64),
    Missing,
    Error(String),
}

async fn one_echo(client: &Client, seq: u64, pad: &str, timeout: Duration) -> EchoOutcome {
    let out = match protocol::echo(&EchoData { seq, pad }) {
        Ok(o) => o,
        Err(e) => return EchoOutcome::Error(e.to_string()),
    };
    let started = Instant::now();
    match client.request_envelope(out, timeout).await {
        Ok(env) => {
            let us = started.elapsed().as_micros() as u64;
            match env.data_as::<serde_json::Value>() {
                Ok(v) if v.get("seq").and_then(|s| s.as_u64()) == Some(seq) => {
                    EchoOutcome::Reply(us)
                }
                Ok(v) => EchoOutcome::Error(format!("reply does not match seq {seq}: {v}")),
                Err(e) => EchoOutcome::Error(e.to_string()),
            }
        }
        Err(Error::RequestTimeout { .. } | Error::ConnectionLost { .. }) => EchoOutcome::Missing,
        Err(e) => EchoOutcome::Error(e.to_string()),
    }
}

async fn idle_driver(client: Client, idx: usize, ctx: Arc<Ctx>) {
    let mut errors_rx = client.subscribe::<ErrorReply>(64);
    let up = wait_up(&client, ctx.args.connect_timeout).await;
    let ok = up.is_ok();
    let _ = ctx.ready.send((idx, up));
    if !ok || wait_start(&ctx, idx).await.is_none() {
        return;
    }
    let mut stop = ctx.stop.clone();
    let _ = stop.wait_for(|s| *s).await;
    let mut res = ConnResult::new();
    while errors_rx.try_recv().is_ok() {
        res.errors += 1;
    }
    let _ = ctx.results.send(res);
}

async fn broadcast_driver(client: Client, idx: usize, ctx: Arc<Ctx>) {
    let rooms = ctx.args.rooms;
    let room_idx = idx % rooms;
    let room = format!("load-{room_idx}");
    let is_sender = idx < ctx.args.senders * rooms;
    // Subscribe before the join is registered: the router sees the subscription first.
    let mut joined = client.subscribe::<Joined>(4);
    let mut msgs = client.subscribe::<RoomMessage>(8192);
    let mut errors_rx = client.subscribe::<ErrorReply>(64);
    let up = async {
        let join = protocol::join(&room);
        client
            .send_on_connect(join)
            .await
            .map_err(|e| e.to_string())?;
        wait_up(&client, ctx.args.connect_timeout).await?;
        match tokio::time::timeout(ctx.args.connect_timeout, joined.recv()).await {
            Ok(Some(_)) => Ok(()),
            Ok(None) => Err("the client closed before joining".to_owned()),
            Err(_) => Err(format!("no `joined` for {room} in time")),
        }
    }
    .await;
    let ok = up.is_ok();
    let _ = ctx.ready.send((idx, up));
    if !ok {
        return;
    }
    let Some(deadline) = wait_start(&ctx, idx).await else {
        return;
    };
    let mut res = ConnResult::new();
    let sending = async {
        let mut errors = 0u64;
        let mut sent = 0u64;
        if !is_sender {
            return (sent, errors);
        }
        let mut tick = tokio::time::interval(Duration::from_secs_f64(1.0 / ctx.args.publish_rate));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut seq = 0u64;
        loop {
            tick.tick().await;
            if Instant::now() >= deadline {
                break;
            }
            seq += 1;
            let data = Tick {
                seq,
                sent_at_us: now_us(),
                pad: &ctx.pad,
            };
            let sent_ok = match protocol::publish(&room, &data) {
                Ok(out) => client.send_envelope(out).await.is_ok(),
                Err(_) => false,
            };
            if sent_ok {
                sent += 1;
                ctx.published[room_idx].fetch_add(1, Ordering::Relaxed);
            } else {
                errors += 1;
            }
        }
        (sent, errors)
    };
    let receiving = async {
        let mut stop = ctx.stop.clone();
        let mut received: Vec<u64> = Vec::new();
        let mut bad = 0u64;
        let mut take = |m: client::Inbound<RoomMessage>, received: &mut Vec<u64>| match m
            .data
            .0
            .get("sent_at_us")
            .and_then(|v| v.as_u64())
        {
            Some(at) => {
                received.push(now_us().saturating_sub(at));
                ctx.receipts.fetch_add(1, Ordering::Relaxed);
            }
            None => bad += 1,
        };
        loop {
            tokio::select! {
                r = stop.wait_for(|s| *s) => { let _ = r; break; }
                m = msgs.recv() => match m {
                    Some(m) => take(m, &mut received),
                    None => break,
                },
            }
        }
        while let Ok(m) = msgs.try_recv() {
            take(m, &mut received);
        }
        (received, bad)
    };
    let ((sent, send_errors), (latencies, bad)) =
        futures_util::future::join(sending, receiving).await;
    for us in latencies {
        res.record(us);
    }
    res.sent = sent;
    res.errors = send_errors + bad;
    while errors_rx.try_recv().is_ok() {
        res.errors += 1;
    }
    let _ = ctx.results.send(res);
}

/// The figures `wsm load` reports.
#[derive(Debug, Serialize)]
struct Report {
    scenario: &'static str,
    protocol: &'static str,
    url: String,
    embedded_server: bool,
    connections_requested: usize,
    connections_connected: usize,
    connect_seconds: f64,
    duration_seconds: f64,
    sent: u64,
    received: u64,
    messages_per_second: f64,
    latency_us: Latency,
    missing: u64,
    errors: u64,
    reconnects: u64,
    dropped: u64,
    client_rss_bytes: Option<u64>,
    /// Growth of this process's RSS from before the first connection to the end of the run,
    /// divided by the connections that came up (client and, when embedded, server side).
    rss_per_connection_bytes: Option<u64>,
    server_rss_bytes: Option<u64>,
    /// Growth of the server child's RSS over the run, divided by the connections that came up.
    server_rss_per_connection_bytes: Option<u64>,
    /// CPU time this process used from the first connection to the end of the run.
    client_cpu_seconds: Option<f64>,
    /// CPU time the server child used over the same span.
    server_cpu_seconds: Option<f64>,
    /// Where the server ran: `child process` (the default), `in process`, `external`.
    server_mode: &'static str,
    rss_note: &'static str,
    first_connect_error: Option<String>,
}

#[derive(Debug, Serialize)]
struct Latency {
    p50: u64,
    p90: u64,
    p99: u64,
    p999: u64,
    max: u64,
}

impl Report {
    fn print(&self, json: bool) -> Result<()> {
        let mut out = std::io::stdout().lock();
        if json {
            let text = serde_json::to_string(self).map_err(|e| Error::Encode(e.to_string()))?;
            writeln!(out, "{text}")?;
            return Ok(());
        }
        let l = &self.latency_us;
        let rss = |b: Option<u64>| match b {
            Some(b) => format!("{:.1} MiB", b as f64 / 1048576.0),
            None => "unknown".into(),
        };
        let rows: Vec<(&str, String)> = vec![
            ("scenario", format!("{} ({})", self.scenario, self.protocol)),
            ("url", self.url.clone()),
            (
                "connections",
                format!(
                    "{} of {} in {:.2} s",
                    self.connections_connected, self.connections_requested, self.connect_seconds
                ),
            ),
            ("measured", format!("{:.2} s", self.duration_seconds)),
            (
                "sent / received",
                format!("{} / {}", self.sent, self.received),
            ),
            ("messages/s", format!("{:.0}", self.messages_per_second)),
            (
                "latency µs",
                format!(
                    "p50 {}  p90 {}  p99 {}  p99.9 {}  max {}",
                    l.p50, l.p90, l.p99, l.p999, l.max
                ),
            ),
            ("missing", self.missing.to_string()),
            ("errors", self.errors.to_string()),
            ("reconnects", self.reconnects.to_string()),
            ("dropped", self.dropped.to_string()),
            ("client RSS", rss(self.client_rss_bytes)),
            (
                "RSS/connection",
                match self.rss_per_connection_bytes {
                    Some(b) => format!("{:.1} KiB", b as f64 / 1024.0),
                    None => "unknown".into(),
                },
            ),
            ("server RSS", rss(self.server_rss_bytes)),
            (
                "server RSS/conn",
                match self.server_rss_per_connection_bytes {
                    Some(b) => format!("{:.1} KiB", b as f64 / 1024.0),
                    None => "unknown".into(),
                },
            ),
            (
                "CPU s",
                match (self.client_cpu_seconds, self.server_cpu_seconds) {
                    (Some(c), Some(s)) => format!("client {c:.2}  server {s:.2}"),
                    (Some(c), None) => format!("client {c:.2}"),
                    _ => "unknown".into(),
                },
            ),
            ("server", self.server_mode.to_owned()),
        ];
        for (k, v) in rows {
            // Idle runs send nothing; churn runs measure reopening, in their own words.
            let (k, v) = match (self.scenario, k) {
                ("idle", "sent / received" | "messages/s" | "latency µs") => (k, "–".to_owned()),
                ("churn", "sent / received") => (
                    "reopened",
                    format!("{} of {} attempts", self.received, self.sent),
                ),
                ("churn", "messages/s") => {
                    ("reopens/s", format!("{:.0}", self.messages_per_second))
                }
                ("churn", "latency µs") => ("reopen µs", v),
                _ => (k, v),
            };
            writeln!(out, "{k:>16}  {v}")?;
        }
        if self.embedded_server {
            writeln!(out, "{:>16}  {}", "", self.rss_note)?;
        }
        Ok(())
    }
}

fn progress(len: u64, msg: &'static str) -> ProgressBar {
    let bar = ProgressBar::with_draw_target(Some(len), ProgressDrawTarget::stderr());
    if let Ok(style) = ProgressStyle::with_template("{msg:>10} [{bar:30}] {pos}/{len} {elapsed}") {
        bar.set_style(style.progress_chars("=> "));
    }
    bar.set_message(msg);
    bar
}

async fn drive(
    args: &LoadArgs,
    url: &str,
    mode: ServerMode,
    server_pid: Option<u32>,
) -> Result<Report> {
    let embedded = mode != ServerMode::External;
    preflight(
        url,
        client_config(args).connect_timeout(args.connect_timeout),
        &"x".repeat(args.size),
    )
    .await?;

    let rss_before = process_rss_bytes();
    let server_rss_before = server_pid.and_then(|pid| child::rss_bytes(Some(pid)));
    let cpu_before = (
        child::cpu_seconds(None),
        server_pid.and_then(|pid| child::cpu_seconds(Some(pid))),
    );
    let manager = Arc::new(Manager::new(
        ManagerConfig::default()
            .arbiters(args.arbiters)
            .connect_rate(Some(args.rate))
            .client(client_config(args).connect_timeout(args.connect_timeout)),
    )?);
    let (ready_tx, mut ready_rx) = mpsc::unbounded_channel();
    let (results_tx, mut results_rx) = mpsc::unbounded_channel();
    let (start_tx, start_rx) = watch::channel(None);
    let (stop_tx, stop_rx) = watch::channel(false);
    let ctx = Arc::new(Ctx {
        args: args.clone(),
        pad: "x".repeat(args.size),
        ready: ready_tx,
        results: results_tx,
        start: start_rx,
        stop: stop_rx,
        receipts: AtomicU64::new(0),
        published: (0..args.rooms).map(|_| AtomicU64::new(0)).collect(),
        replies: AtomicU64::new(0),
    });

    // Connect phase: the manager paces the connects; each connection's driver runs on the
    // connection's arbiter.
    let n = args.connections;
    let abort = Arc::new(AtomicBool::new(false));
    let t0 = Instant::now();
    let connect_deadline =
        t0 + args.connect_timeout * 2 + Duration::from_secs_f64(n as f64 / args.rate);
    {
        let (manager, ctx, abort, url) =
            (manager.clone(), ctx.clone(), abort.clone(), url.to_owned());
        actix_rt::spawn(async move {
            for i in 0..n {
                if abort.load(Ordering::Relaxed) {
                    break;
                }
                let name = format!("load-{i}");
                let sender = i < ctx.args.senders * ctx.args.rooms;
                let target = match &ctx.args.sender_url {
                    Some(other) if sender && ctx.args.scenario == Scenario::Broadcast => other,
                    _ => &url,
                };
                match manager.connect(name.clone(), target).await {
                    Ok(c) => {
                        let ctx2 = ctx.clone();
                        let spawned = match ctx.args.scenario {
                            Scenario::Echo => manager.spawn_on(&name, echo_driver(c, i, ctx2)),
                            Scenario::Broadcast => {
                                manager.spawn_on(&name, broadcast_driver(c, i, ctx2))
                            }
                            Scenario::Idle | Scenario::Churn => {
                                manager.spawn_on(&name, idle_driver(c, i, ctx2))
                            }
                        };
                        if !spawned {
                            let _ = ctx.ready.send((i, Err("arbiter stopped".into())));
                        }
                    }
                    Err(e) => {
                        let _ = ctx.ready.send((i, Err(e.to_string())));
                    }
                }
            }
        });
    }
    let bar = progress(n as u64, "connect");
    let mut up_rooms = vec![0u64; args.rooms];
    let mut admitted = vec![false; n];
    let (mut connected, mut reported) = (0usize, 0usize);
    let mut first_error: Option<String> = None;
    let mut first_error_is_emfile = false;
    let mut connect_seconds = 0.0;
    while reported < n {
        match tokio::time::timeout_at(connect_deadline.into(), ready_rx.recv()).await {
            Ok(Some((i, r))) => {
                reported += 1;
                match r {
                    Ok(()) => {
                        connected += 1;
                        up_rooms[i % args.rooms] += 1;
                        if let Some(a) = admitted.get_mut(i) {
                            *a = true;
                        }
                        connect_seconds = t0.elapsed().as_secs_f64();
                        bar.inc(1);
                    }
                    // An EMFILE error names the cause better than a timeout seen first.
                    Err(e) => {
                        if first_error.is_none() || is_emfile(&e) && !first_error_is_emfile {
                            first_error_is_emfile = is_emfile(&e);
                            first_error = Some(name_emfile(&e, args));
                        }
                    }
                }
            }
            Ok(None) | Err(_) => break,
        }
    }
    abort.store(true, Ordering::Relaxed);
    bar.finish_and_clear();
    if connected == 0 {
        drop(start_tx);
        finish(manager).await;
        return Err(Error::ConnectFailed {
            url: url.to_owned(),
            reason: format!(
                "none of {n} connections came up within {}: {}",
                client::round_duration(args.connect_timeout),
                first_error.as_deref().unwrap_or("no answer")
            ),
        });
    }
    if connected < n {
        eprintln!(
            "wsm load: {connected} of {n} connections came up; measuring with those (first \
             error: {})",
            first_error
                .clone()
                .unwrap_or_else(|| name_emfile("timed out", args))
        );
    }

    // Measurement phase.
    let started = Instant::now();
    let deadline = started + args.duration;
    let _ = start_tx.send(Some(Arc::new(Plan { deadline, admitted })));
    let bar = progress(args.duration.as_secs().max(1), "measure");
    let mut churned = ConnResult::new();
    if args.scenario == Scenario::Churn {
        churned = churn(&manager, args, url, deadline, &bar, started).await;
    }
    while Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100).min(deadline - Instant::now())).await;
        bar.set_position(started.elapsed().as_secs());
    }
    bar.finish_and_clear();
    // Broadcast: wait (bounded by --timeout) until every expected receipt has arrived.
    let expected = |ctx: &Ctx| -> u64 {
        ctx.published
            .iter()
            .zip(&up_rooms)
            .map(|(p, m)| p.load(Ordering::Relaxed) * m)
            .sum()
    };
    if args.scenario == Scenario::Broadcast {
        // Senders stop at the deadline; give their last publish a moment to be counted.
        let drain_deadline = Instant::now() + args.timeout;
        while Instant::now() < drain_deadline
            && ctx.receipts.load(Ordering::Relaxed) < expected(&ctx)
        {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
    let measured = started.elapsed().as_secs_f64();
    let _ = stop_tx.send(true);

    // Collect: one result per connected driver, bounded by --timeout past the deadline.
    let mut hist: Histogram<u64> = ConnResult::new().hist;
    let (mut sent, mut received, mut missing, mut errors) = (
        churned.sent,
        churned.received,
        churned.missing,
        churned.errors,
    );
    if let Err(e) = hist.add(&churned.hist) {
        tracing::warn!(error = %e, "histogram merge");
    }
    let collect_deadline = Instant::now() + args.timeout + Duration::from_secs(1);
    let mut collected = 0;
    while collected < connected {
        match tokio::time::timeout_at(collect_deadline.into(), results_rx.recv()).await {
            Ok(Some(r)) => {
                collected += 1;
                if let Err(e) = hist.add(&r.hist) {
                    tracing::warn!(error = %e, "histogram merge");
                }
                sent += r.sent;
                received += r.received;
                missing += r.missing;
                errors += r.errors;
            }
            Ok(None) | Err(_) => break,
        }
    }
    if collected < connected {
        eprintln!(
            "wsm load: {} connection drivers did not report in time",
            connected - collected
        );
        errors += (connected - collected) as u64;
    }
    if args.scenario == Scenario::Broadcast {
        missing = expected(&ctx).saturating_sub(received);
    }
    let stats = manager.stats();
    let rss = process_rss_bytes();
    let server_rss = server_pid.and_then(|pid| child::rss_bytes(Some(pid)));
    let cpu_after = (
        child::cpu_seconds(None),
        server_pid.and_then(|pid| child::cpu_seconds(Some(pid))),
    );
    finish(manager).await;
    // At the file-descriptor limit /proc cannot be opened; it can once the sockets are closed.
    let rss = rss.or_else(process_rss_bytes);
    let rss_per_connection_bytes = match (rss_before, rss) {
        (Some(b), Some(a)) => Some(a.saturating_sub(b) / connected as u64),
        _ => None,
    };

    let q = |p: f64| {
        if hist.is_empty() {
            0
        } else {
            hist.value_at_quantile(p)
        }
    };
    Ok(Report {
        scenario: args.scenario.name(),
        protocol: match args.protocol {
            Protocol::Rooms => "rooms",
            Protocol::Echo => "echo",
        },
        url: url.to_owned(),
        embedded_server: embedded,
        connections_requested: n,
        connections_connected: connected,
        connect_seconds,
        duration_seconds: measured,
        sent,
        received,
        messages_per_second: received as f64 / measured.max(1e-9),
        latency_us: Latency {
            p50: q(0.5),
            p90: q(0.9),
            p99: q(0.99),
            p999: q(0.999),
            max: hist.max(),
        },
        missing,
        errors,
        reconnects: stats.reconnects,
        dropped: stats.dropped,
        client_rss_bytes: rss,
        rss_per_connection_bytes,
        server_rss_bytes: server_rss,
        server_rss_per_connection_bytes: match (server_rss_before, server_rss) {
            (Some(b), Some(a)) => Some(a.saturating_sub(b) / connected as u64),
            _ => None,
        },
        client_cpu_seconds: cpu_before.0.zip(cpu_after.0).map(|(b, a)| a - b),
        server_cpu_seconds: cpu_before.1.zip(cpu_after.1).map(|(b, a)| a - b),
        server_mode: mode.name(),
        rss_note: match mode {
            ServerMode::InProcess => {
                "the server shares this process (--in-process): client_rss_bytes is the whole process (client and server)"
            }
            ServerMode::Child => {
                "client and server are separate processes: client_* and server_* are each their own"
            }
            ServerMode::External => {
                "client_rss_bytes is this process; the server's RSS is not measured"
            }
        },
        first_connect_error: first_error,
    })
}

/// The churn loop: until `deadline`, close a connection and open it again under the same name,
/// `--window` at a time, paced by the manager's rate limit. Each reopen is one message: sent when
/// started, received when `Connected` (latency: from the connect call, including any wait for
/// the rate limit), missing when not connected within `--connect-timeout`.
async fn churn(
    manager: &Manager,
    args: &LoadArgs,
    url: &str,
    deadline: Instant,
    bar: &ProgressBar,
    started: Instant,
) -> ConnResult {
    let mut res = ConnResult::new();
    let mut inflight = FuturesUnordered::new();
    let mut next = 0usize;
    let one = |name: String| async move {
        manager.close(&name).await;
        let t = Instant::now();
        match manager.connect(name, url).await {
            Ok(c) => match c.wait_connected(args.connect_timeout).await {
                Ok(()) => Ok(Some(t.elapsed().as_micros() as u64)),
                Err(_) => Ok(None),
            },
            Err(e) => Err(e),
        }
    };
    loop {
        while inflight.len() < args.window && Instant::now() < deadline {
            // Connection 0 is left alone so that at least one stays up throughout.
            let i = 1 + next % args.connections.saturating_sub(1).max(1);
            next += 1;
            res.sent += 1;
            inflight.push(one(format!("load-{i}")));
        }
        match inflight.next().await {
            None => break,
            Some(Ok(Some(us))) => res.record(us),
            Some(Ok(None)) => res.missing += 1,
            Some(Err(e)) => {
                tracing::debug!(error = %e, "churn reconnect failed");
                res.errors += 1;
            }
        }
        bar.set_position(started.elapsed().as_secs());
    }
    res
}

/// Close every connection (bounded by the manager's close timeout) and stop the arbiters.
async fn finish(manager: Arc<Manager>) {
    manager.close_all().await;
    // If a task still holds a reference (the connect loop, about to see `abort`), the last
    // reference stops the arbiters when it is dropped.
    if let Ok(m) = Arc::try_unwrap(manager) {
        m.shutdown().await;
    }
}
