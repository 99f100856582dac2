//! The connection drivers: one task per connection, on the connection's arbiter. Each reports
//! once when its connection is up (or not), waits for the coordinator's [`Plan`], runs its
//! scenario until the deadline (or until told to stop), and sends back one [`ConnResult`].

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use actix_ws_manager::client::{self, Client, ConnectionState};
use actix_ws_manager::protocol::{self, ErrorReply, Joined, RoomMessage};
use actix_ws_manager::Error;
use futures_util::stream::{FuturesUnordered, StreamExt};
use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, watch};

use super::args::LoadArgs;

/// Microseconds since the process started measuring; one clock for every thread.
pub(super) fn now_us() -> u64 {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    EPOCH.get_or_init(Instant::now).elapsed().as_micros() as u64
}

/// The `data` of an echo message: a sequence number to match the reply, and the padding.
#[derive(Debug, Serialize, Deserialize)]
pub(super) struct EchoData<'a> {
    pub(super) seq: u64,
    #[serde(borrow)]
    pub(super) pad: &'a str,
}

/// The `data` of a broadcast publish: the send time that each receipt is timed against.
#[derive(Debug, Serialize, Deserialize)]
struct Tick<'a> {
    seq: u64,
    sent_at_us: u64,
    #[serde(borrow)]
    pad: &'a str,
}

/// What one connection measured.
pub(super) struct ConnResult {
    pub(super) hist: Histogram<u64>,
    pub(super) sent: u64,
    pub(super) received: u64,
    pub(super) missing: u64,
    pub(super) errors: u64,
}

/// An empty latency histogram: 1 µs to 10 minutes, 3 significant digits.
pub(super) fn new_histogram() -> Histogram<u64> {
    // The bounds are constants, not input, and valid, so this cannot fail.
    Histogram::new_with_bounds(1, 600_000_000, 3).expect("constant histogram bounds are valid")
}

impl ConnResult {
    /// Nothing measured yet.
    pub(super) fn new() -> Self {
        Self {
            hist: new_histogram(),
            sent: 0,
            received: 0,
            missing: 0,
            errors: 0,
        }
    }

    /// One message received, `us` microseconds after it was sent.
    pub(super) fn record(&mut self, us: u64) {
        self.hist.saturating_record(us.max(1));
        self.received += 1;
    }

    /// Add `other`'s figures to these.
    pub(super) fn merge(&mut self, other: &ConnResult) {
        if let Err(e) = self.hist.add(&other.hist) {
            tracing::warn!(error = %e, "histogram merge");
        }
        self.sent += other.sent;
        self.received += other.received;
        self.missing += other.missing;
        self.errors += other.errors;
    }
}

/// What the driver tasks and the coordinator share.
pub(super) struct Coordination {
    pub(super) args: LoadArgs,
    /// The padding every message carries (`--size` bytes).
    pub(super) pad: String,
    /// Each driver reports here once: its connection index, and whether it came up (with the
    /// microseconds it took) or why not.
    pub(super) ready: mpsc::UnboundedSender<(usize, std::result::Result<u64, String>)>,
    /// Each admitted driver sends its figures here once, at the end.
    pub(super) results: mpsc::UnboundedSender<ConnResult>,
    /// The measurement deadline, once every connection is up (a dropped sender aborts).
    pub(super) start: watch::Receiver<Option<Arc<Plan>>>,
    /// Broadcast receivers stop when this turns true.
    pub(super) stop: watch::Receiver<bool>,
    /// Broadcast: receipts so far, all connections.
    pub(super) receipts: AtomicU64,
    /// Broadcast: publishes sent per room.
    pub(super) published: Vec<AtomicU64>,
}

/// Wait until `client` is connected; the reason when it is not, in time.
async fn wait_up(client: &Client, timeout: Duration) -> std::result::Result<(), String> {
    client
        .wait_connected(timeout)
        .await
        .map_err(|e| match client.state() {
            ConnectionState::Failed { reason } => reason,
            _ => e.to_string(),
        })
}

/// `up`, with the microseconds since `started` when it is a success.
fn timed(
    started: Instant,
    up: std::result::Result<(), String>,
) -> std::result::Result<u64, String> {
    up.map(|()| (started.elapsed().as_micros() as u64).max(1))
}

/// What the coordinator tells the drivers when the measurement starts.
pub(super) struct Plan {
    /// When to stop sending.
    pub(super) deadline: Instant,
    /// The connections that were counted as up when the connect phase ended; a driver that
    /// came up later stays out, so the totals only cover the connections reported.
    pub(super) admitted: Vec<bool>,
}

/// Wait for the measurement to start; `None` when it never will, or this connection `idx` is
/// not part of it.
async fn wait_start(shared: &Coordination, idx: usize) -> Option<Instant> {
    let mut start = shared.start.clone();
    let plan = start.wait_for(Option::is_some).await.ok()?.clone()?;
    plan.admitted
        .get(idx)
        .copied()
        .unwrap_or(false)
        .then_some(plan.deadline)
}

/// Echo: keep `--window` echo messages in flight until the deadline and time each reply.
pub(super) async fn echo_driver(client: Client, idx: usize, shared: Arc<Coordination>) {
    let mut errors_rx = client.subscribe::<ErrorReply>(64);
    let t0 = Instant::now();
    let up = timed(t0, wait_up(&client, shared.args.connect_timeout).await);
    let ok = up.is_ok();
    let _ = shared.ready.send((idx, up));
    if !ok {
        return;
    }
    let Some(deadline) = wait_start(&shared, idx).await else {
        return;
    };
    let mut res = ConnResult::new();
    let mut inflight = FuturesUnordered::new();
    let mut seq = 0u64;
    loop {
        while inflight.len() < shared.args.window && Instant::now() < deadline {
            seq += 1;
            res.sent += 1;
            inflight.push(one_echo(&client, seq, &shared.pad, shared.args.timeout));
        }
        match inflight.next().await {
            None => break,
            Some(EchoOutcome::Reply(us)) => {
                res.record(us);
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
    let _ = shared.results.send(res);
}

/// How one echo round trip ended.
enum EchoOutcome {
    /// The matching reply came back after this many microseconds.
    Reply(u64),
    /// No reply in time, or the connection was lost meanwhile.
    Missing,
    /// Anything else: what went wrong.
    Error(String),
}

/// Send echo message `seq` and wait (up to `timeout`) for its reply.
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

/// Idle and churn: stay connected, send nothing, until the coordinator says stop.
pub(super) async fn idle_driver(client: Client, idx: usize, shared: Arc<Coordination>) {
    let mut errors_rx = client.subscribe::<ErrorReply>(64);
    let t0 = Instant::now();
    let up = timed(t0, wait_up(&client, shared.args.connect_timeout).await);
    let ok = up.is_ok();
    let _ = shared.ready.send((idx, up));
    if !ok || wait_start(&shared, idx).await.is_none() {
        return;
    }
    let mut stop = shared.stop.clone();
    let _ = stop.wait_for(|s| *s).await;
    let mut res = ConnResult::new();
    while errors_rx.try_recv().is_ok() {
        res.errors += 1;
    }
    let _ = shared.results.send(res);
}

/// Broadcast: join room `load-<idx % rooms>`; the first `--senders` connections of each room
/// publish at `--publish-rate` until the deadline; every member times every receipt until the
/// coordinator says stop.
pub(super) async fn broadcast_driver(client: Client, idx: usize, shared: Arc<Coordination>) {
    let rooms = shared.args.rooms;
    let room_idx = idx % rooms;
    let room = format!("load-{room_idx}");
    let is_sender = idx < shared.args.senders * rooms;
    // Subscribe before the join is registered: the router sees the subscription first.
    let mut joined = client.subscribe::<Joined>(4);
    let mut msgs = client.subscribe::<RoomMessage>(8192);
    let mut errors_rx = client.subscribe::<ErrorReply>(64);
    let t0 = Instant::now();
    let up = join_room(&client, &room, &mut joined, shared.args.connect_timeout).await;
    let up = timed(t0, up);
    let ok = up.is_ok();
    let _ = shared.ready.send((idx, up));
    if !ok {
        return;
    }
    let Some(deadline) = wait_start(&shared, idx).await else {
        return;
    };
    let mut res = ConnResult::new();
    let sending = async {
        if !is_sender {
            return (0, 0);
        }
        publish_until(&client, &shared, &room, room_idx, deadline).await
    };
    let receiving = receive_until_stop(&shared, &mut msgs);
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
    let _ = shared.results.send(res);
}

/// Join `room` on every connect (so a reconnect rejoins), wait until connected, then for the
/// server's `joined`, each within `timeout`.
async fn join_room(
    client: &Client,
    room: &str,
    joined: &mut mpsc::Receiver<client::Inbound<Joined>>,
    timeout: Duration,
) -> std::result::Result<(), String> {
    let join = protocol::join(room);
    client
        .send_on_connect(join)
        .await
        .map_err(|e| e.to_string())?;
    wait_up(client, timeout).await?;
    match tokio::time::timeout(timeout, joined.recv()).await {
        Ok(Some(_)) => Ok(()),
        Ok(None) => Err("the client closed before joining".to_owned()),
        Err(_) => Err(format!("no `joined` for {room} in time")),
    }
}

/// Publish a [`Tick`] to `room` at `--publish-rate` until `deadline`. Answers the publishes
/// sent and those that failed.
async fn publish_until(
    client: &Client,
    shared: &Coordination,
    room: &str,
    room_idx: usize,
    deadline: Instant,
) -> (u64, u64) {
    let (mut sent, mut errors) = (0u64, 0u64);
    let mut tick = tokio::time::interval(Duration::from_secs_f64(1.0 / shared.args.publish_rate));
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
            pad: &shared.pad,
        };
        let sent_ok = match protocol::publish(room, &data) {
            Ok(out) => client.send_envelope(out).await.is_ok(),
            Err(_) => false,
        };
        if sent_ok {
            sent += 1;
            shared.published[room_idx].fetch_add(1, Ordering::Relaxed);
        } else {
            errors += 1;
        }
    }
    (sent, errors)
}

/// Time every room message received until the coordinator says stop (then take what is
/// already queued). Answers the latencies in microseconds, and the messages without a send
/// time.
async fn receive_until_stop(
    shared: &Coordination,
    msgs: &mut mpsc::Receiver<client::Inbound<RoomMessage>>,
) -> (Vec<u64>, u64) {
    let mut stop = shared.stop.clone();
    let mut received: Vec<u64> = Vec::new();
    let mut bad = 0u64;
    let mut take =
        |m: client::Inbound<RoomMessage>| match m.data.0.get("sent_at_us").and_then(|v| v.as_u64())
        {
            Some(at) => {
                received.push(now_us().saturating_sub(at));
                shared.receipts.fetch_add(1, Ordering::Relaxed);
            }
            None => bad += 1,
        };
    loop {
        tokio::select! {
            r = stop.wait_for(|s| *s) => { let _ = r; break; }
            m = msgs.recv() => match m {
                Some(m) => take(m),
                None => break,
            },
        }
    }
    while let Ok(m) = msgs.try_recv() {
        take(m);
    }
    (received, bad)
}
