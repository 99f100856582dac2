//! The coordinator: runs the phases of [`super::phases`] in order against one target URL, takes
//! this process's (and the server child's) memory and CPU figures before and after, and turns
//! it all into the [`Report`].

use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::Instant;

use actix_ws_manager::client::{self, Manager, ManagerConfig, ManagerStats};
use actix_ws_manager::{Error, Result};
use hdrhistogram::Histogram;
use tokio::sync::{mpsc, watch};

use super::args::{LoadArgs, Protocol, Scenario};
use super::drivers::{ConnResult, Coordination, Plan};
use super::phases::{self, Connected};
use super::report::{Latency, Report};
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
    server_pid: Option<u32>,
) -> Result<Report> {
    preflight(
        url,
        client_config(args).connect_timeout(args.connect_timeout),
        &"x".repeat(args.size),
    )
    .await?;
    let before = Sample::take(server_pid);
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
    let shared = Arc::new(Coordination {
        args: args.clone(),
        pad: "x".repeat(args.size),
        ready: ready_tx,
        results: results_tx,
        start: start_rx,
        stop: stop_rx,
        receipts: AtomicU64::new(0),
        published: (0..args.rooms).map(|_| AtomicU64::new(0)).collect(),
    });

    let mut up = phases::connect(&manager, &shared, &mut ready_rx, url).await;
    if up.count == 0 {
        drop(start_tx);
        finish(manager).await;
        return Err(none_came_up(args, url, &up));
    }
    if up.count < args.connections {
        say_partial(args, &up);
    }

    let started = Instant::now();
    let deadline = started + args.duration;
    let admitted = std::mem::take(&mut up.admitted);
    let _ = start_tx.send(Some(Arc::new(Plan { deadline, admitted })));
    let churned = phases::measure(&manager, args, url, started, deadline).await;
    if args.scenario == Scenario::Broadcast {
        phases::drain(&shared, &up.per_room).await;
    }
    let measured = started.elapsed().as_secs_f64();
    let _ = stop_tx.send(true);

    let mut totals = phases::collect(&mut results_rx, churned, up.count, args.timeout).await;
    if args.scenario == Scenario::Broadcast {
        totals.missing =
            phases::expected_receipts(&shared, &up.per_room).saturating_sub(totals.received);
    }
    let stats = manager.stats();
    let mut after = Sample::take(server_pid);
    finish(manager).await;
    // At the file-descriptor limit /proc cannot be opened; it can once the sockets are closed.
    after.rss = after.rss.or_else(process_rss_bytes);
    let run = Run {
        args,
        url,
        mode,
        up,
        measured,
    };
    Ok(run.report(&totals, &stats, &before, &after))
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
            latency_us: latency(&totals.hist),
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
            first_connect_error: self.up.first_error,
            thresholds: Vec::new(),
        }
    }
}

/// The percentiles of `hist` (all zero when nothing was measured).
fn latency(hist: &Histogram<u64>) -> Latency {
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

/// Close every connection (bounded by the manager's close timeout) and stop the arbiters.
async fn finish(manager: Arc<Manager>) {
    manager.close_all().await;
    // If a task still holds a reference (the connect loop, about to see `abort`), the last
    // reference stops the arbiters when it is dropped.
    if let Ok(m) = Arc::try_unwrap(manager) {
        m.shutdown().await;
    }
}
