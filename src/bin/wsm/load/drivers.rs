//! The connection drivers: one task per connection, on the connection's arbiter. Each reports
//! once when its connection is up (or not), waits for the coordinator's [`Plan`], runs its
//! scenario until the deadline (or until told to stop), and sends back one [`ConnResult`].
//! This file holds what every scenario shares and the idle driver; `echo.rs` and
//! `broadcast.rs` hold the other two.

use std::sync::atomic::AtomicU64;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use actix_ws_manager::client::{Client, ConnectionState};
use actix_ws_manager::protocol::ErrorReply;
use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, watch};

use super::args::LoadArgs;
pub(super) use super::broadcast::broadcast_driver;
pub(super) use super::echo::echo_driver;
use super::plan::Phases;
use super::recovery::Recovery;
use super::series::Timeline;

/// The instant every thread's microsecond clock counts from.
fn epoch() -> Instant {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    *EPOCH.get_or_init(Instant::now)
}

/// Microseconds since the process started measuring; one clock for every thread.
pub(super) fn now_us() -> u64 {
    us_at(Instant::now())
}

/// `t` on the [`now_us`] clock.
pub(super) fn us_at(t: Instant) -> u64 {
    t.saturating_duration_since(epoch()).as_micros() as u64
}

/// The `data` of an echo message: a sequence number to match the reply, and the padding.
#[derive(Debug, Serialize, Deserialize)]
pub(super) struct EchoData<'a> {
    pub(super) seq: u64,
    #[serde(borrow)]
    pub(super) pad: &'a str,
}

/// What one connection measured.
pub(super) struct ConnResult {
    /// Latency from each message's due time (corrected for coordinated omission; the same as
    /// `uncorrected` in a closed loop, where a message is due when it is sent).
    pub(super) hist: Histogram<u64>,
    /// Latency from each message's actual send.
    pub(super) uncorrected: Histogram<u64>,
    /// Sends that left more than [`LATE`](super::schedule::LATE) after they could have (their
    /// due time, or the reply that freed the window): the generator fell behind.
    pub(super) late: u64,
    /// Open loop: sends due before the end that never left (the window stayed full).
    pub(super) due_not_sent: u64,
    /// Messages received again (by sequence number).
    pub(super) duplicated: u64,
    /// Messages received after a later one of the same sender.
    pub(super) reordered: u64,
    /// Echo: the highest sequence number replied to so far (a lower one after it is
    /// reordered).
    pub(super) highest_seq: u64,
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
            uncorrected: new_histogram(),
            late: 0,
            due_not_sent: 0,
            duplicated: 0,
            reordered: 0,
            highest_seq: 0,
            sent: 0,
            received: 0,
            missing: 0,
            errors: 0,
        }
    }

    /// One message received, `corrected` microseconds after it was due and `uncorrected`
    /// after it was sent.
    pub(super) fn record(&mut self, corrected: u64, uncorrected: u64) {
        self.hist.saturating_record(corrected.max(1));
        self.uncorrected.saturating_record(uncorrected.max(1));
        self.received += 1;
    }

    /// Add `other`'s figures to these.
    pub(super) fn merge(&mut self, other: &ConnResult) {
        for (mine, theirs) in [
            (&mut self.hist, &other.hist),
            (&mut self.uncorrected, &other.uncorrected),
        ] {
            if let Err(e) = mine.add(theirs) {
                tracing::warn!(error = %e, "histogram merge");
            }
        }
        self.late += other.late;
        self.due_not_sent += other.due_not_sent;
        self.duplicated += other.duplicated;
        self.reordered += other.reordered;
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
    /// The per-second series every driver records into.
    pub(super) timeline: Timeline,
    /// When each connection's connect call began (the [`now_us`] clock): its connect time
    /// counts from there.
    pub(super) connect_started: Vec<AtomicU64>,
    /// With `--chaos`: what the connections' watchers saw.
    pub(super) recovery: Recovery,
}

/// Wait until `client` is connected; the reason when it is not, in time.
pub(super) async fn wait_up(client: &Client, timeout: Duration) -> std::result::Result<(), String> {
    client
        .wait_connected(timeout)
        .await
        .map_err(|e| match client.state() {
            ConnectionState::Failed { reason } => reason,
            _ => e.to_string(),
        })
}

/// `up`, with the microseconds since connection `idx`'s connect call began when it is a
/// success.
pub(super) fn timed(
    shared: &Coordination,
    idx: usize,
    up: std::result::Result<(), String>,
) -> std::result::Result<u64, String> {
    let started = shared
        .connect_started
        .get(idx)
        .map_or(0, |s| s.load(std::sync::atomic::Ordering::Relaxed));
    up.map(|()| now_us().saturating_sub(started).max(1))
}

/// What the coordinator tells the drivers when the measurement starts.
pub(super) struct Plan {
    /// When the measurement started: the open-loop schedules start here.
    pub(super) started: Instant,
    /// When to stop sending.
    pub(super) deadline: Instant,
    /// The admitted connections that send (echo: all; broadcast: the publishers).
    pub(super) senders: usize,
    /// The connections that were counted as up when the connect phase ended; a driver that
    /// came up later stays out, so the totals only cover the connections reported.
    pub(super) admitted: Vec<bool>,
}

impl Plan {
    /// Open loop: messages per second for one sending connection with a message due `at`
    /// (the phase's rate over the connections sending then: the admitted senders without
    /// `--plan` or when `fixed`, else the phase's ramped count); `None`: closed loop.
    pub(super) fn rate_at(&self, phases: &Phases, at: Instant, fixed: bool) -> Option<f64> {
        let t = at.saturating_duration_since(self.started);
        phases.rate_each(t, (fixed || !phases.planned).then_some(self.senders))
    }
}

/// Wait for the measurement to start; `None` when it never will, or this connection `idx` is
/// not part of it.
pub(super) async fn wait_start(shared: &Coordination, idx: usize) -> Option<Arc<Plan>> {
    let mut start = shared.start.clone();
    let plan = start.wait_for(Option::is_some).await.ok()?.clone()?;
    plan.admitted
        .get(idx)
        .copied()
        .unwrap_or(false)
        .then_some(plan)
}

/// Idle and churn: stay connected, send nothing, until the coordinator says stop.
pub(super) async fn idle_driver(client: Client, idx: usize, shared: Arc<Coordination>) {
    let mut errors_rx = client.subscribe::<ErrorReply>(64);
    let up = timed(
        &shared,
        idx,
        wait_up(&client, shared.args.connect_timeout).await,
    );
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
