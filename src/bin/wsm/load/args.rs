//! The flags of `wsm load` and the checks clap's own ranges cannot make.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use actix_ws_manager::{config, Error, Result};
use clap::{Args, ValueEnum};

use super::chaos::{self, Chaos};
use super::plan::Phases;
use super::thresholds::{self, Threshold};
use crate::flags;

/// The protocol the target speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Protocol {
    /// The rooms protocol of `wsm serve` (join, publish, echo).
    Rooms,
    /// A plain echo server: every text frame comes back verbatim.
    Echo,
}

/// How open-loop sends are spaced in time (`--arrival`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Arrival {
    /// Evenly: one every `connections / rate` seconds per connection.
    Constant,
    /// A Poisson process: exponential gaps with that mean.
    Poisson,
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
    /// `--connect-rate`); the latency is the time to reconnect.
    Churn,
}

impl Scenario {
    /// The scenario's name in the report.
    pub(super) fn name(self) -> &'static str {
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
    /// Target WebSocket URL, `ws://` or `wss://`, any host. Default: an embedded rooms server on
    /// 127.0.0.1:0, run as a child process of this program (see --in-process).
    #[arg(long)]
    pub(super) url: Option<String>,
    /// The protocol the target speaks (with the embedded server, `echo` uses its /echo path).
    #[arg(long, value_enum, default_value_t = Protocol::Rooms)]
    pub(super) protocol: Protocol,
    /// What the connections do.
    #[arg(long, value_enum, default_value_t = Scenario::Echo)]
    pub(super) scenario: Scenario,
    /// Connections to open, 1 to 1000000.
    #[arg(long, default_value_t = 1000, value_parser = flags::count(1..=flags::MAX_CONNECTIONS))]
    pub(super) connections: usize,
    /// How long to measure, after every connection is up (such as `10s`; above zero, at most
    /// 365 days).
    #[arg(long, default_value = "10s", value_parser = flags::duration)]
    pub(super) duration: Duration,
    /// Messages in flight per connection, 1 to 10000: echo requests awaiting their reply; with
    /// --rate, also broadcast publishes whose own copy has not come back.
    #[arg(long, default_value_t = 1, value_parser = flags::count(1..=flags::MAX_WINDOW))]
    pub(super) window: usize,
    /// Payload bytes per message (a padding string inside `data`), 0 to 16 MiB less 4 KiB
    /// (the client's message size limit, less room for the envelope).
    #[arg(long, default_value_t = 64, value_parser = flags::count(0..=MAX_SIZE))]
    pub(super) size: usize,
    /// New connections per second, 0.01 to 1000000 (churn: reopens per second).
    #[arg(long, default_value_t = 1000.0, value_parser = flags::per_second)]
    pub(super) connect_rate: f64,
    /// Open loop: messages per second in total (as wrk2's -R), 0.01 to 1000000, spread evenly
    /// over the connections (echo) or the publishing connections (broadcast, instead of
    /// --publish-rate). Each send has a due time; a send due while --window is full waits (a
    /// broadcast publish is in flight until the publisher's own copy comes back), and latency
    /// is timed from the due time (corrected, the `latency_us` figures) as well as from
    /// the actual send (uncorrected, `latency_uncorrected_us`), so a server that stalls shows
    /// in the percentiles instead of pausing the load (coordinated omission). Sends that left
    /// more than 1 ms late are counted; past 1 % (or past 80 % client CPU) the report calls the
    /// run generator-bound. Without --rate each connection sends its next message as soon as
    /// a reply frees the window (closed loop; corrected == uncorrected).
    #[arg(long, value_parser = flags::per_second, conflicts_with = "publish_rate")]
    pub(super) rate: Option<f64>,
    /// How --rate spaces the sends of each connection: evenly (`constant`), or as a Poisson
    /// process (`poisson`: exponential gaps of the same mean).
    #[arg(long, value_enum, default_value_t = Arrival::Constant, requires = "rate")]
    pub(super) arrival: Arrival,
    /// Rooms the connections are spread over (broadcast), 1 to 1000000.
    #[arg(long, default_value_t = 1, value_parser = flags::count(1..=flags::MAX_CONNECTIONS))]
    pub(super) rooms: usize,
    /// Publishing connections per room (broadcast), 1 to 1000000.
    #[arg(long, default_value_t = 2, value_parser = flags::count(1..=flags::MAX_CONNECTIONS))]
    pub(super) senders: usize,
    /// Broadcast: the publishing connections connect here instead of --url, for
    /// example another `wsm serve --redis` node, to measure cross-node delivery.
    #[arg(long, value_name = "URL", requires = "url")]
    pub(super) sender_url: Option<String>,
    /// Publishes per second, per sender (broadcast), 0.01 to 1000000.
    #[arg(long, default_value_t = 10.0, value_parser = flags::per_second)]
    pub(super) publish_rate: f64,
    /// How long each connection may take to connect (and join); above zero, at most 365 days.
    #[arg(long, default_value = "10s", value_parser = flags::duration)]
    pub(super) connect_timeout: Duration,
    /// How long a reply or a receipt may take before it counts as missing; above zero, at most
    /// 365 days.
    #[arg(long, default_value = "5s", value_parser = flags::duration)]
    pub(super) timeout: Duration,
    /// Client arbiters (threads), 1 to 1024; default one per core.
    #[arg(long, value_parser = flags::count(1..=flags::MAX_ARBITERS))]
    pub(super) arbiters: Option<usize>,
    /// A pass/fail condition on the report, repeatable: `METRIC OP VALUE` with METRIC one of
    /// p50, p90, p99, p999, max (message latency, corrected), connect_p99, recover_p99 (with
    /// --chaos; durations: with us, ms or s), missing, errors (counts), rate (messages
    /// received per second), and OP one of
    /// < <= > >= ==. Examples: 'p99<50ms', 'missing==0', 'rate>=10000', 'connect_p99<1s'.
    /// Each crossed one is named on stderr after the report and the exit code is 99 (other
    /// failures keep theirs); --json lists every one under `thresholds` (expr, value in the
    /// expression's unit, passed).
    #[arg(long, value_name = "EXPR", value_parser = thresholds::parse)]
    pub(super) threshold: Vec<Threshold>,
    /// Write the corrected latency's percentile spectrum to FILE in HdrHistogram's text format
    /// (values in milliseconds), as HdrHistogram's plotter and wrk2's users read it.
    #[arg(long, value_name = "FILE")]
    pub(super) hgrm: Option<std::path::PathBuf>,
    /// A fault while the load runs, repeatable, at a time from the start of the measurement:
    /// `restart@10s` kills the embedded server (the `wsm serve` child) and starts it again on
    /// its port; `blackhole@10s:3s` has a proxy in front of the target (--url too) forward
    /// nothing for 3 s; `reset@10s` has it reset every connection. The report adds the time
    /// until each lost connection was back (recover_us: p50, p99, max; threshold
    /// `recover_p99<5s`), the close codes seen, the failed reconnect attempts, and the messages
    /// lost (missing), duplicated and reordered (by each message's sequence number).
    #[arg(long, value_name = "KIND@TIME[:FOR]", value_parser = chaos::parse)]
    pub(super) chaos: Vec<Chaos>,
    /// Run in phases from a TOML plan FILE: `[[phase]]` tables of `duration`, `connections`
    /// (ramped from the phase before), `rate` (open loop; in every phase or none) and
    /// `thresholds` (over the phase), and top-level `thresholds` (over the run). The most
    /// connections of any phase are opened first; a phase ramps how many send. Replaces
    /// --duration, --connections and --rate; the report adds results per phase. Echo and
    /// broadcast (one connection count) only.
    #[arg(long, value_name = "FILE", conflicts_with_all = ["duration", "connections", "rate"])]
    pub(super) plan: Option<std::path::PathBuf>,
    /// The phases: from --plan, or the flags' one phase.
    #[arg(skip)]
    pub(super) phases: Phases,
    /// Write an HTML report to FILE: one self-contained file (inline SVG charts, nothing
    /// fetched) with the table, messages/s, connections, latency p50/p99/max and errors over
    /// time, and the latency percentile spectrum (corrected and uncorrected).
    #[arg(long, value_name = "FILE")]
    pub(super) report: Option<std::path::PathBuf>,
    /// Begin connecting at TIME, RFC 3339 (2026-12-03T10:00:00Z) or seconds since 1970, so that
    /// copies on several machines run together (merge their --json reports with `wsm load
    /// merge`); at most a day ahead. A time already past starts at once.
    #[arg(long, value_name = "TIME", value_parser = start_at)]
    pub(super) start_at: Option<SystemTime>,
    /// Print exactly one JSON object on stdout instead of the table.
    #[arg(long)]
    pub(super) json: bool,
    /// A PEM file of extra root certificates to trust for a `wss://` --url.
    #[arg(long, value_name = "FILE")]
    pub(super) ca: Option<std::path::PathBuf>,
    /// Run the embedded server over TLS (`wss://`) with a certificate made at start, to
    /// measure what TLS costs. Only without --url.
    #[arg(long, conflicts_with = "url")]
    pub(super) tls: bool,
    /// Run the embedded server inside this process instead of as a child process (`wsm serve`
    /// of this same program): client and server then share one open-file limit (3 descriptors
    /// per connection instead of 1 each) and one RSS figure.
    #[arg(long, conflicts_with = "url")]
    pub(super) in_process: bool,
    /// Offer permessage-deflate from every connection (off by default, so that figures stay
    /// comparable with other tools and earlier runs; the embedded server accepts it).
    #[arg(long)]
    pub(super) deflate: bool,
    /// Root certificates the clients trust besides the web PKI (from --ca, or the embedded
    /// server's throwaway CA).
    #[arg(skip)]
    pub(super) roots: Vec<Vec<u8>>,
    /// The open-file limit in force, once raised.
    #[arg(skip)]
    pub(super) fd_limit: Option<u64>,
    #[command(subcommand)]
    pub(super) command: Option<LoadCommand>,
}

/// What `wsm load` does besides a run.
#[derive(Debug, Clone, clap::Subcommand)]
pub enum LoadCommand {
    /// Merge the --json reports of several runs (copies on several machines, say) into one:
    /// histograms added, so the percentiles are exact; counts added; the per-second series
    /// lined up by wall-clock second and added.
    Merge(Box<super::merge::MergeArgs>),
}

/// `--start-at`: RFC 3339, or seconds since 1970; at most a day from now.
fn start_at(text: &str) -> std::result::Result<SystemTime, String> {
    let at = match text.trim().parse::<f64>() {
        Ok(secs) if secs.is_finite() && secs >= 0.0 => Duration::try_from_secs_f64(secs)
            .ok()
            .and_then(|d| UNIX_EPOCH.checked_add(d))
            .ok_or("too far in the future")?,
        Ok(_) => return Err("seconds since 1970 must be 0 or more".into()),
        Err(_) => humantime::parse_rfc3339_weak(text.trim()).map_err(|e| {
            format!("neither RFC 3339 (2026-12-03T10:00:00Z) nor seconds since 1970: {e}")
        })?,
    };
    let ahead = at.duration_since(SystemTime::now()).unwrap_or_default();
    if ahead > Duration::from_secs(86_400) {
        return Err("more than a day from now".into());
    }
    Ok(at)
}

/// Room for the envelope around `--size` bytes of padding.
pub(super) const MESSAGE_OVERHEAD: usize = 4096;

/// The largest `--size`: the client's message size limit, less the envelope's room.
const MAX_SIZE: u64 = (config::DEFAULT_MAX_MESSAGE_SIZE - MESSAGE_OVERHEAD) as u64;

/// A configuration error: what `wsm load` refuses before it starts.
pub(super) fn bad(msg: impl Into<String>) -> Error {
    Error::Config(msg.into())
}

impl LoadArgs {
    /// What the flags' own ranges (checked by clap, see `flags`) cannot say: combinations.
    pub(super) fn check(&self) -> Result<()> {
        if self.scenario == Scenario::Broadcast && self.protocol == Protocol::Echo {
            return Err(bad(
                "the broadcast scenario needs the rooms protocol (--protocol rooms)",
            ));
        }
        chaos::check(self)?;
        if self.plan.is_some() && matches!(self.scenario, Scenario::Idle | Scenario::Churn) {
            return Err(bad("--plan drives the echo and broadcast scenarios"));
        }
        if self.rate.is_some() && matches!(self.scenario, Scenario::Idle | Scenario::Churn) {
            return Err(bad(format!(
                "--rate (messages per second) drives the echo and broadcast scenarios; the {} \
                 scenario sends none (connections per second: --connect-rate)",
                self.scenario.name()
            )));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `--start-at` takes RFC 3339 or seconds since 1970, up to a day ahead.
    #[test]
    fn start_at_parses_both_forms_within_a_day() {
        assert_eq!(start_at("0"), Ok(UNIX_EPOCH));
        assert_eq!(
            start_at("2020-01-01T00:00:00Z"),
            Ok(UNIX_EPOCH + Duration::from_secs(1_577_836_800))
        );
        let soon = SystemTime::now() + Duration::from_secs(60);
        let secs = soon.duration_since(UNIX_EPOCH).unwrap().as_secs_f64();
        assert!(start_at(&secs.to_string()).is_ok());
        for refused in [
            "x",
            "-1",
            "inf",
            "1e300",
            "9999999999",
            "2999-01-01T00:00:00Z",
        ] {
            assert!(start_at(refused).is_err(), "{refused}");
        }
    }
}
