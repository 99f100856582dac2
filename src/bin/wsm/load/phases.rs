//! The phases of a run, in order: connect (the manager paces the connects, each connection's
//! driver reports when it is up), measure (until `--duration` has passed; churn reopens
//! connections meanwhile), drain (broadcast: until every expected receipt has arrived, bounded
//! by `--timeout`) and collect (one [`ConnResult`] per driver, bounded by `--timeout`).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix_ws_manager::client::Manager;
use futures_util::stream::{FuturesUnordered, StreamExt};
use hdrhistogram::Histogram;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use tokio::sync::mpsc;

use super::args::{LoadArgs, Scenario};
use super::drivers::{
    broadcast_driver, echo_driver, idle_driver, new_histogram, now_us, ConnResult, Coordination,
};
use super::recovery::watch;
use super::target::{is_emfile, name_emfile};

/// What a driver reports when its connection is up, or is not.
pub(super) type Ready = (usize, std::result::Result<u64, String>);

/// A progress bar on stderr.
pub(super) fn progress(len: u64, msg: &'static str) -> ProgressBar {
    let bar = ProgressBar::with_draw_target(Some(len), ProgressDrawTarget::stderr());
    if let Ok(style) = ProgressStyle::with_template("{msg:>10} [{bar:30}] {pos}/{len} {elapsed}") {
        bar.set_style(style.progress_chars("=> "));
    }
    bar.set_message(msg);
    bar
}

/// The live progress line's figures: connections up now, and the last second's messages and
/// corrected p99.
pub(super) fn progress_line(connections: usize, messages: u64, p99_us: u64) -> String {
    format!(
        "{connections} connections  {messages} messages/s  p99 {:.1} ms (last second)",
        p99_us as f64 / 1e3
    )
}

/// How the connect phase ended.
pub(super) struct Connected {
    /// Connections up when the phase ended.
    pub(super) count: usize,
    /// Connections up, per room (broadcast: the members each publish reaches).
    pub(super) per_room: Vec<u64>,
    /// Which connections were up: only these take part in the measurement.
    pub(super) admitted: Vec<bool>,
    /// The first connect error, EMFILE named (see [`name_emfile`]).
    pub(super) first_error: Option<String>,
    /// From the first connect to the last connection up.
    pub(super) seconds: f64,
    /// Each connection's time to come up, microseconds.
    pub(super) connect_hist: Histogram<u64>,
}

/// The connect phase: open `--connections` connections to `url` (broadcast senders to
/// `--sender-url` when given), each with its scenario's driver on the connection's arbiter, and
/// wait until each has reported or the phase's deadline (`--connect-timeout` twice, plus the
/// time `--connect-rate` needs) has passed.
pub(super) async fn connect(
    manager: &Arc<Manager>,
    shared: &Arc<Coordination>,
    ready: &mut mpsc::UnboundedReceiver<Ready>,
    url: &str,
) -> Connected {
    let args = &shared.args;
    let n = args.connections;
    let abort = Arc::new(AtomicBool::new(false));
    let t0 = Instant::now();
    let deadline =
        t0 + args.connect_timeout * 2 + Duration::from_secs_f64(n as f64 / args.connect_rate);
    spawn_connects(
        manager.clone(),
        shared.clone(),
        abort.clone(),
        url.to_owned(),
    );
    let bar = progress(n as u64, "connect");
    let mut up = Connected {
        count: 0,
        per_room: vec![0u64; args.rooms],
        admitted: vec![false; n],
        first_error: None,
        seconds: 0.0,
        connect_hist: new_histogram(),
    };
    let mut first_error_is_emfile = false;
    let mut reported = 0usize;
    while reported < n {
        match tokio::time::timeout_at(deadline.into(), ready.recv()).await {
            Ok(Some((i, r))) => {
                reported += 1;
                match r {
                    Ok(us) => {
                        up.connect_hist.saturating_record(us);
                        up.count += 1;
                        up.per_room[i % args.rooms] += 1;
                        if let Some(a) = up.admitted.get_mut(i) {
                            *a = true;
                        }
                        up.seconds = t0.elapsed().as_secs_f64();
                        bar.inc(1);
                    }
                    // An EMFILE error names the cause better than a timeout seen first.
                    Err(e) => {
                        if up.first_error.is_none() || is_emfile(&e) && !first_error_is_emfile {
                            first_error_is_emfile = is_emfile(&e);
                            up.first_error = Some(name_emfile(&e, args));
                        }
                    }
                }
            }
            Ok(None) | Err(_) => break,
        }
    }
    abort.store(true, Ordering::Relaxed);
    bar.finish_and_clear();
    up
}

/// How many connect loops run at once. Each `Manager::connect` waits for its arbiter to start
/// the connection (a round trip between threads); one loop alone started about 850
/// connections a second here whatever `--connect-rate` said. The manager paces them all.
const CONNECT_LOOPS: usize = 16;

/// The connect loops, as tasks of their own (loop `j` opens connections `j`, `j + loops`, ...):
/// the manager paces the connects; each connection's driver runs on the connection's arbiter.
/// Stop early once `abort` is set.
fn spawn_connects(
    manager: Arc<Manager>,
    shared: Arc<Coordination>,
    abort: Arc<AtomicBool>,
    url: String,
) {
    let loops = CONNECT_LOOPS.min(shared.args.connections).max(1);
    for j in 0..loops {
        let (manager, shared, abort, url) =
            (manager.clone(), shared.clone(), abort.clone(), url.clone());
        actix_rt::spawn(connect_loop(manager, shared, abort, url, j, loops));
    }
}

/// Connect loop `j` of `loops`.
async fn connect_loop(
    manager: Arc<Manager>,
    shared: Arc<Coordination>,
    abort: Arc<AtomicBool>,
    url: String,
    j: usize,
    loops: usize,
) {
    for i in (j..shared.args.connections).step_by(loops) {
        if abort.load(Ordering::Relaxed) {
            break;
        }
        shared.connect_started[i].store(now_us(), Ordering::Relaxed);
        let name = format!("load-{i}");
        let sender = i < shared.args.senders * shared.args.rooms;
        let target = match &shared.args.sender_url {
            Some(other) if sender && shared.args.scenario == Scenario::Broadcast => other,
            _ => &url,
        };
        match manager.connect(name.clone(), target).await {
            Ok(c) => {
                if !shared.args.chaos.is_empty() {
                    // What the faults do to this connection (not spawned: no way to run it).
                    let _ = manager.spawn_on(&name, watch(c.clone(), i, shared.clone()));
                }
                let driver_shared = shared.clone();
                let spawned = match shared.args.scenario {
                    Scenario::Echo => manager.spawn_on(&name, echo_driver(c, i, driver_shared)),
                    Scenario::Broadcast => {
                        manager.spawn_on(&name, broadcast_driver(c, i, driver_shared))
                    }
                    Scenario::Idle | Scenario::Churn => {
                        manager.spawn_on(&name, idle_driver(c, i, driver_shared))
                    }
                };
                if !spawned {
                    let _ = shared.ready.send((i, Err("arbiter stopped".into())));
                }
            }
            Err(e) => {
                let _ = shared.ready.send((i, Err(e.to_string())));
            }
        }
    }
}

/// The measure phase, once the drivers have their plan: wait until `deadline` (churn: reopen
/// connections meanwhile), showing the seconds passed. Answers what churn measured (nothing
/// for the other scenarios, whose drivers report their own figures).
pub(super) async fn measure(
    manager: &Manager,
    shared: &Coordination,
    url: &str,
    started: Instant,
    deadline: Instant,
) -> ConnResult {
    let args = &shared.args;
    let bar = progress(args.duration.as_secs().max(1), "measure");
    if let Ok(style) = ProgressStyle::with_template("{prefix:>10} [{bar:30}] {pos}/{len} s  {msg}")
    {
        bar.set_style(style.progress_chars("=> "));
    }
    bar.set_prefix("measure");
    bar.set_message("");
    let mut churned = ConnResult::new();
    if args.scenario == Scenario::Churn {
        churned = churn(manager, args, url, deadline, &bar, started).await;
    }
    let mut sampled = None;
    while Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100).min(deadline - Instant::now())).await;
        let second = started.elapsed().as_secs();
        bar.set_position(second);
        // Connections up, once a second (the manager's stats visit every connection).
        if sampled != Some(second) && Instant::now() < deadline {
            sampled = Some(second);
            let connected = manager.stats().states.connected;
            shared.timeline.connections(connected);
            let line = match second.checked_sub(1) {
                Some(last) => {
                    let (messages, p99) = shared.timeline.peek(last as usize);
                    progress_line(connected, messages, p99)
                }
                None => format!("{connected} connections  (messages/s and p99 after 1 s)"),
            };
            bar.set_message(line);
        }
    }
    bar.finish_and_clear();
    churned
}

/// Broadcast: the receipts expected so far, each room's publishes times its members.
pub(super) fn expected_receipts(shared: &Coordination, per_room: &[u64]) -> u64 {
    shared
        .published
        .iter()
        .zip(per_room)
        .map(|(p, m)| p.load(Ordering::Relaxed) * m)
        .sum()
}

/// The drain phase (broadcast): wait, bounded by `--timeout`, until every expected receipt has
/// arrived. Senders stop at the deadline; this gives their last publish a moment to be counted.
pub(super) async fn drain(shared: &Coordination, per_room: &[u64]) {
    let drain_deadline = Instant::now() + shared.args.timeout;
    while Instant::now() < drain_deadline
        && shared.receipts.load(Ordering::Relaxed) < expected_receipts(shared, per_room)
    {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// The collect phase: one result per connected driver, added to `totals`, bounded by
/// `--timeout` (plus a second) from now. A driver that does not report counts as an error.
pub(super) async fn collect(
    results: &mut mpsc::UnboundedReceiver<ConnResult>,
    mut totals: ConnResult,
    connected: usize,
    timeout: Duration,
) -> ConnResult {
    let collect_deadline = Instant::now() + timeout + Duration::from_secs(1);
    let mut collected = 0;
    while collected < connected {
        match tokio::time::timeout_at(collect_deadline.into(), results.recv()).await {
            Ok(Some(r)) => {
                collected += 1;
                totals.merge(&r);
            }
            Ok(None) | Err(_) => break,
        }
    }
    if collected < connected {
        eprintln!(
            "wsm load: {} connection drivers did not report in time",
            connected - collected
        );
        totals.errors += (connected - collected) as u64;
    }
    totals
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
            Some(Ok(Some(us))) => res.record(us, us),
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
