//! The coordinator: runs the phases of [`super::phases`] in order against one target URL, takes
//! this process's (and the server child's) memory and CPU figures before and after, and turns
//! it all into the [`Report`].

use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::{Instant, SystemTime};

use actix_ws_manager::client::{self, Manager, ManagerConfig, ManagerStats};
use actix_ws_manager::{Error, Result};
use hdrhistogram::Histogram;
use tokio::sync::{mpsc, watch};

use super::args::{Arrival, LoadArgs, Protocol, Scenario};
use super::chaos::Injector;
use super::drivers::{ConnResult, Coordination, Plan};
use super::hist::{self, Histograms};
use super::phases::{self, Connected};
use super::plan;
use super::recovery::{Recovery, RecoveryOut};
use super::report::{Latency, Report};
use super::series::{SecondOut, Timeline};
use super::target::{client_config, name_emfile, preflight, ServerMode};
use crate::procfs;

/// The resident set size of this process (Linux only).
fn process_rss_bytes() -> Option<u64> {
    procfs::rss_bytes(None)
}

/// CPU time (user + system, all threads) of process `pid` (`None`: this process), in seconds
/// (Linux only).
fn cpu_seconds(pid: Option<u32>) -> Option<f64> {
    procfs::cpu_ticks(pid).map(|t| t as f64 / procfs::TICKS_PER_SECOND as f64)
}

/// Memory and CPU of this process and of the server child (when there is one) at one moment.
struct Sample {
    at: Instant,
    rss: Option<u64>,
    server_rss: Option<u64>,
    cpu: Option<f64>,
    server_cpu: Option<f64>,
}

impl Sample {
    /// Read them now, from `/proc`; `server_pid` is the server child's.
    fn take(server_pid: Option<u32>) -> Self {
        let rss = process_rss_bytes();
        let server_rss = server_pid.and_then(|pid| procfs::rss_bytes(Some(pid)));
        let cpu = cpu_seconds(None);
        let server_cpu = server_pid.and_then(|pid| cpu_seconds(Some(pid)));
        Sample {
            at: Instant::now(),
            rss,
            server_rss,
            cpu,
            server_cpu,
        }
    }
}

/// Run the load against `url` and measure it: preflight, connect, measure, drain (broadcast),
/// collect. `server_pid` is the server child's, when it runs in one.
pub(super) async fn drive(
    args: &LoadArgs,
    url: &str,
    mode: ServerMode,
    server_pid: &dyn Fn() -> Option<u32>,
    injector: &Injector,
) -> Result<Report> {
    preflight(
        url,
        client_config(args).connect_timeout(args.connect_timeout),
        &"x".repeat(args.size),
    )
    .await?;
    if let Some(at) = args.start_at {
        wait_for_start(at).await;
    }
    let before = Sample::take(server_pid());
    let manager = Arc::new(Manager::new(
        ManagerConfig::default()
            .arbiters(args.arbiters)
            .connect_rate(Some(args.connect_rate))
            .client(client_config(args).connect_timeout(args.connect_timeout)),
    )?);
    let (ready_tx, mut ready_rx) = mpsc::unbounded_channel();
    let (results_tx, mut results_rx) = mpsc::unbounded_channel();
    let (start_tx, start_rx) = watch::channel(None);
    let (stop_tx, stop_rx) = watch::channel(false);
    let shared = coordination(args, ready_tx, results_tx, start_rx, stop_rx);

    let mut up = phases::connect(&manager, &shared, &mut ready_rx, url).await;
    if up.count == 0 {
        drop(start_tx);
        finish(manager).await;
        return Err(none_came_up(args, url, &up));
    }
    if up.count < args.connections {
        say_partial(args, &up);
    }

    let (started, started_unix, deadline) = start_measuring(&shared, &mut up, &start_tx);
    injector.start(started);
    let churned = phases::measure(&manager, &shared, url, started, deadline).await;
    // The measurement's length: up to the deadline, not the wait for late receipts after it
    // (they count, but the rate is over the time the load ran).
    let measured = started.elapsed().as_secs_f64();
    if args.scenario == Scenario::Broadcast {
        phases::drain(&shared, &up.per_room).await;
    }
    let _ = stop_tx.send(true);

    let mut totals = phases::collect(&mut results_rx, churned, up.count, args.timeout).await;
    if args.scenario == Scenario::Broadcast {
        let unique = totals.received.saturating_sub(totals.duplicated);
        totals.missing = phases::expected_receipts(&shared, &up.per_room).saturating_sub(unique);
    }
    let stats = manager.stats();
    let mut after = Sample::take(server_pid());
    finish(manager).await;
    // At the file-descriptor limit /proc cannot be opened; it can once the sockets are closed.
    after.rss = after.rss.or_else(process_rss_bytes);
    let run = Run {
        args,
        url,
        mode,
        up,
        measured,
        started_unix,
        series: shared.timeline.finish(),
        recovery: (!args.chaos.is_empty()).then(|| shared.recovery.out(injector.log())),
    };
    Ok(run.report(&totals, &stats, &before, &after))
}

/// What the drivers and the coordinator share, with the channels between them.
fn coordination(
    args: &LoadArgs,
    ready: mpsc::UnboundedSender<(usize, std::result::Result<u64, String>)>,
    results: mpsc::UnboundedSender<ConnResult>,
    start: watch::Receiver<Option<Arc<Plan>>>,
    stop: watch::Receiver<bool>,
) -> Arc<Coordination> {
    Arc::new(Coordination {
        args: args.clone(),
        pad: "x".repeat(args.size),
        ready,
        results,
        start,
        stop,
        receipts: AtomicU64::new(0),
        published: (0..args.rooms).map(|_| AtomicU64::new(0)).collect(),
        connect_started: (0..args.connections).map(|_| AtomicU64::new(0)).collect(),
        recovery: Recovery::new(),
        timeline: Timeline::new(
            args.arbiters
                .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get())),
        ),
    })
}

/// Start the measurement: the timeline and the drivers' [`Plan`] (the admitted connections,
/// the deadline, the open-loop rate per sender). Answers the start, as an instant and in
/// seconds since 1970, and the deadline.
fn start_measuring(
    shared: &Coordination,
    up: &mut Connected,
    start_tx: &watch::Sender<Option<Arc<Plan>>>,
) -> (Instant, f64, Instant) {
    let args = &shared.args;
    let started = Instant::now();
    let started_unix = unix_now();
    shared.timeline.start(started);
    let deadline = started + args.duration;
    let admitted = std::mem::take(&mut up.admitted);
    let _ = start_tx.send(Some(Arc::new(Plan {
        started,
        deadline,
        senders: senders(args, &admitted),
        admitted,
    })));
    (started, started_unix, deadline)
}

/// The admitted connections that send: all of them for echo, the publishers for broadcast.
fn senders(args: &LoadArgs, admitted: &[bool]) -> usize {
    let publishers = args.senders.saturating_mul(args.rooms);
    admitted
        .iter()
        .enumerate()
        .filter(|(i, up)| **up && (args.scenario != Scenario::Broadcast || *i < publishers))
        .count()
}

/// Say on stderr that only some connections came up, and the first error.
fn say_partial(args: &LoadArgs, up: &Connected) {
    eprintln!(
        "wsm load: {} of {} connections came up; measuring with those (first \
         error: {})",
        up.count,
        args.connections,
        up.first_error
            .clone()
            .unwrap_or_else(|| name_emfile("timed out", args))
    );
}

/// The error when not one connection came up.
fn none_came_up(args: &LoadArgs, url: &str, up: &Connected) -> Error {
    Error::ConnectFailed {
        url: url.to_owned(),
        reason: format!(
            "none of {} connections came up within {}: {}",
            args.connections,
            client::round_duration(args.connect_timeout),
            up.first_error.as_deref().unwrap_or("no answer")
        ),
    }
}

/// What a finished run knows besides the figures: its flags, target and phases.
struct Run<'a> {
    args: &'a LoadArgs,
    url: &'a str,
    mode: ServerMode,
    up: Connected,
    /// Seconds from the start of the measurement to the end of the drain.
    measured: f64,
    /// The start of the measurement, seconds since 1970.
    started_unix: f64,
    series: Vec<SecondOut>,
    recovery: Option<RecoveryOut>,
}

impl Run<'_> {
    /// The report of this run, from the drivers' `totals`, the manager's `stats`, and the
    /// samples taken `before` the first connection and `after` the last result.
    fn report(
        self,
        totals: &ConnResult,
        stats: &ManagerStats,
        before: &Sample,
        after: &Sample,
    ) -> Report {
        let (args, connected) = (self.args, self.up.count);
        let cpu_percent = client_cpu_percent(before, after);
        let generator_note = generator_note(totals, cpu_percent);
        let per_connection = |b: Option<u64>, a: Option<u64>| match (b, a) {
            (Some(b), Some(a)) => Some(a.saturating_sub(b) / connected as u64),
            _ => None,
        };
        Report {
            scenario: args.scenario.name(),
            protocol: match args.protocol {
                Protocol::Rooms => "rooms",
                Protocol::Echo => "echo",
            },
            url: self.url.to_owned(),
            embedded_server: self.mode != ServerMode::External,
            connections_requested: args.connections,
            connections_connected: connected,
            connect_seconds: self.up.seconds,
            duration_seconds: self.measured,
            sent: totals.sent,
            received: totals.received,
            messages_per_second: totals.received as f64 / self.measured.max(1e-9),
            // With --plan, each phase has its own (see `phases`).
            rate_requested: args.rate.filter(|_| !args.phases.planned),
            arrival: args.rate.map(|_| match args.arrival {
                Arrival::Constant => "constant",
                Arrival::Poisson => "poisson",
            }),
            latency_us: latency(&totals.hist),
            latency_uncorrected_us: latency(&totals.uncorrected),
            latency_note: args
                .rate
                .and_then(|_| latency_note(&totals.hist, &totals.uncorrected)),
            late_sends: totals.late,
            due_not_sent: totals.due_not_sent,
            client_cpu_percent: cpu_percent,
            generator_bound: generator_note.is_some(),
            generator_note,
            connect_us: latency(&self.up.connect_hist),
            missing: totals.missing,
            errors: totals.errors,
            reconnects: stats.reconnects,
            dropped: stats.dropped,
            client_rss_bytes: after.rss,
            rss_per_connection_bytes: per_connection(before.rss, after.rss),
            server_rss_bytes: after.server_rss,
            server_rss_per_connection_bytes: per_connection(before.server_rss, after.server_rss),
            client_cpu_seconds: before.cpu.zip(after.cpu).map(|(b, a)| a - b),
            server_cpu_seconds: before.server_cpu.zip(after.server_cpu).map(|(b, a)| a - b),
            server_mode: self.mode.name(),
            rss_note: rss_note(self.mode),
            histograms: Histograms {
                latency: hist::encode(&totals.hist),
                latency_uncorrected: hist::encode(&totals.uncorrected),
                connect: hist::encode(&self.up.connect_hist),
            },
            latency_hist: totals.hist.clone(),
            uncorrected_hist: totals.uncorrected.clone(),
            started_unix: self.started_unix,
            phases: if args.phases.planned {
                plan::results(&args.phases, &self.series)
            } else {
                Vec::new()
            },
            series: self.series,
            duplicated: totals.duplicated,
            reordered: totals.reordered,
            recovery: self.recovery,
            first_connect_error: self.up.first_error,
            thresholds: Vec::new(),
        }
    }
}

/// This process's CPU between the samples, in percent of every core of the machine.
fn client_cpu_percent(before: &Sample, after: &Sample) -> Option<f64> {
    let wall = after.at.duration_since(before.at).as_secs_f64();
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get()) as f64;
    let cpu = after.cpu? - before.cpu?;
    (wall > 0.0).then(|| (cpu / wall / cores * 1000.0).round() / 10.0)
}

/// Why the run is generator-bound, when it is: over 1 % of the sends late, or this process
/// over 80 % of the machine's CPU.
fn generator_note(totals: &ConnResult, cpu_percent: Option<f64>) -> Option<String> {
    let late = totals.late as f64 / totals.sent.max(1) as f64 * 100.0;
    let mut why = Vec::new();
    if late > 1.0 {
        why.push(format!(
            "{} of {} sends ({late:.1} %) left more than 1 ms late",
            totals.late, totals.sent
        ));
    }
    if let Some(cpu) = cpu_percent.filter(|c| *c > 80.0) {
        why.push(format!("the client used {cpu:.0} % of the CPU"));
    }
    (!why.is_empty()).then(|| {
        format!(
            "generator-bound: {}; the figures measure this load tool as much as the server \
             (fewer connections or a lower --rate per process, or more processes)",
            why.join(" and ")
        )
    })
}

/// What the corrected and uncorrected latencies say together, when the corrected p99 is over
/// twice the uncorrected one (and at least 1 ms above it): sends waited for the server.
fn latency_note(corrected: &Histogram<u64>, uncorrected: &Histogram<u64>) -> Option<String> {
    let (c, u) = (latency(corrected).p99, latency(uncorrected).p99);
    (c > 2 * u && c - u >= 1000).then(|| {
        format!(
            "corrected p99 {:.1} ms, uncorrected p99 {:.1} ms: sends waited for a slow or \
             stalled server (their wait counts from when they were due; the uncorrected \
             figures leave it out)",
            c as f64 / 1e3,
            u as f64 / 1e3
        )
    })
}

/// The percentiles of `hist` (all zero when nothing was measured).
pub(super) fn latency(hist: &Histogram<u64>) -> Latency {
    let q = |p: f64| {
        if hist.is_empty() {
            0
        } else {
            hist.value_at_quantile(p)
        }
    };
    Latency {
        p50: q(0.5),
        p90: q(0.9),
        p99: q(0.99),
        p999: q(0.999),
        max: hist.max(),
    }
}

/// What the RSS figures cover, with the server where `mode` put it.
fn rss_note(mode: ServerMode) -> &'static str {
    match mode {
        ServerMode::InProcess => {
            "the server shares this process (--in-process): client_rss_bytes is the whole process (client and server)"
        }
        ServerMode::Child => {
            "client and server are separate processes: client_* and server_* are each their own"
        }
        ServerMode::External => {
            "client_rss_bytes is this process; the server's RSS is not measured"
        }
    }
}

/// Wait until the wall-clock time `at` (`--start-at`; at most a day ahead, checked when the
/// flag was read). A time already past starts at once, with a note.
async fn wait_for_start(at: SystemTime) {
    match at.duration_since(SystemTime::now()) {
        Ok(wait) => tokio::time::sleep(wait).await,
        Err(e) => eprintln!(
            "wsm load: note: --start-at was {} ago; starting now",
            client::round_duration(e.duration())
        ),
    }
}

/// Now, in seconds since 1970.
pub(super) fn unix_now() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
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
