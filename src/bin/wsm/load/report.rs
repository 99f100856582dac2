//! What `wsm load` reports: one JSON object (`--json`), or a table of the same figures.

use std::io::Write;

use actix_ws_manager::{Error, Result};
use serde::Serialize;

use super::hist::Histograms;
use super::plan::PhaseOut;
use super::recovery::RecoveryOut;
use super::series::SecondOut;
use super::thresholds::Outcome;
use hdrhistogram::Histogram;

/// The figures `wsm load` reports.
#[derive(Debug, Serialize)]
pub(super) struct Report {
    pub(super) scenario: &'static str,
    pub(super) protocol: &'static str,
    pub(super) url: String,
    pub(super) embedded_server: bool,
    pub(super) connections_requested: usize,
    pub(super) connections_connected: usize,
    pub(super) connect_seconds: f64,
    pub(super) duration_seconds: f64,
    pub(super) sent: u64,
    pub(super) received: u64,
    pub(super) messages_per_second: f64,
    /// `--rate`: the messages per second asked for (open loop); `None`: closed loop.
    pub(super) rate_requested: Option<f64>,
    /// `--arrival` with `--rate`: `constant` or `poisson`.
    pub(super) arrival: Option<&'static str>,
    /// Latency from each message's due time (corrected for coordinated omission).
    pub(super) latency_us: Latency,
    /// Latency from each message's actual send (the same as `latency_us` in a closed loop).
    pub(super) latency_uncorrected_us: Latency,
    /// Open loop: what the two latencies say together, when the corrected one is far above.
    pub(super) latency_note: Option<String>,
    /// Sends that left more than 1 ms after they could have (due, and the window free).
    pub(super) late_sends: u64,
    /// Open loop: sends due before the end that never left (the window stayed full).
    pub(super) due_not_sent: u64,
    /// This process's CPU over the run, in percent of all cores.
    pub(super) client_cpu_percent: Option<f64>,
    /// Over 1 % of the sends late, or client CPU over 80 %: the load tool set the pace.
    pub(super) generator_bound: bool,
    /// Why the run is generator-bound, in words.
    pub(super) generator_note: Option<String>,
    /// From a connection's start to connected (broadcast: and joined), microseconds.
    pub(super) connect_us: Latency,
    pub(super) missing: u64,
    /// Messages received again (broadcast, by each publisher's sequence numbers).
    pub(super) duplicated: u64,
    /// Messages received after a later one of the same sender.
    pub(super) reordered: u64,
    pub(super) errors: u64,
    pub(super) reconnects: u64,
    pub(super) dropped: u64,
    pub(super) client_rss_bytes: Option<u64>,
    /// Growth of this process's RSS from before the first connection to the end of the run,
    /// divided by the connections that came up (client and, when embedded, server side).
    pub(super) rss_per_connection_bytes: Option<u64>,
    pub(super) server_rss_bytes: Option<u64>,
    /// Growth of the server child's RSS over the run, divided by the connections that came up.
    pub(super) server_rss_per_connection_bytes: Option<u64>,
    /// CPU time this process used from the first connection to the end of the run.
    pub(super) client_cpu_seconds: Option<f64>,
    /// CPU time the server child used over the same span.
    pub(super) server_cpu_seconds: Option<f64>,
    /// Where the server ran: `child process` (the default), `in process`, `external`.
    pub(super) server_mode: &'static str,
    pub(super) rss_note: &'static str,
    pub(super) first_connect_error: Option<String>,
    /// With `--plan`: each phase's results.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub(super) phases: Vec<PhaseOut>,
    /// With `--chaos`: what the faults did to the connections.
    pub(super) recovery: Option<RecoveryOut>,
    /// The start of the measurement, seconds since 1970 (`wsm load merge` lines runs up by it).
    pub(super) started_unix: f64,
    /// Per second of the run: messages, connections, errors, latency percentiles and histogram.
    pub(super) series: Vec<SecondOut>,
    /// The whole run's histograms, HdrHistogram V2 compressed, base64.
    pub(super) histograms: Histograms,
    /// The corrected latency histogram itself (for `--hgrm`).
    #[serde(skip)]
    pub(super) latency_hist: Histogram<u64>,
    /// The uncorrected latency histogram (for `--report`).
    #[serde(skip)]
    pub(super) uncorrected_hist: Histogram<u64>,
    /// Every `--threshold`, judged.
    pub(super) thresholds: Vec<Outcome>,
}

/// Latency percentiles in microseconds.
#[derive(Debug, Serialize)]
pub(super) struct Latency {
    pub(super) p50: u64,
    pub(super) p90: u64,
    pub(super) p99: u64,
    pub(super) p999: u64,
    pub(super) max: u64,
}

impl Report {
    /// Print the report on stdout: one JSON object with `json`, else the table.
    pub(super) fn print(&self, json: bool) -> Result<()> {
        let mut out = std::io::stdout().lock();
        if json {
            let text = serde_json::to_string(self).map_err(|e| Error::Encode(e.to_string()))?;
            writeln!(out, "{text}")?;
            return Ok(());
        }
        for (k, v) in self.rows() {
            let (k, v) = self.in_scenario_words(k, v);
            writeln!(out, "{k:>16}  {v}")?;
        }
        if self.embedded_server {
            writeln!(out, "{:>16}  {}", "", self.rss_note)?;
        }
        for note in self.notes() {
            writeln!(out, "{:>16}  {note}", "note")?;
        }
        Ok(())
    }

    /// The table's rows, label and value, in the words of the echo and broadcast scenarios.
    fn rows(&self) -> Vec<(&'static str, String)> {
        let l = &self.latency_us;
        let rss = |b: Option<u64>| match b {
            Some(b) => format!("{:.1} MiB", b as f64 / 1048576.0),
            None => "unknown".into(),
        };
        let kib = |b: Option<u64>| match b {
            Some(b) => format!("{:.1} KiB", b as f64 / 1024.0),
            None => "unknown".into(),
        };
        let mut rows = vec![
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
            ("messages/s", self.rate_row()),
            ("latency µs", percentiles(l)),
            ("uncorrected µs", percentiles(&self.latency_uncorrected_us)),
            ("late sends", self.late_row()),
            (
                "connect µs",
                format!(
                    "p50 {}  p99 {}  max {}",
                    self.connect_us.p50, self.connect_us.p99, self.connect_us.max
                ),
            ),
            ("missing", self.missing.to_string()),
            (
                "dup / reordered",
                format!("{} / {}", self.duplicated, self.reordered),
            ),
            ("errors", self.errors.to_string()),
            ("reconnects", self.reconnects.to_string()),
            ("dropped", self.dropped.to_string()),
            ("client RSS", rss(self.client_rss_bytes)),
            ("RSS/connection", kib(self.rss_per_connection_bytes)),
            ("server RSS", rss(self.server_rss_bytes)),
            ("server RSS/conn", kib(self.server_rss_per_connection_bytes)),
            (
                "CPU s",
                match (self.client_cpu_seconds, self.server_cpu_seconds) {
                    (Some(c), Some(s)) => format!("client {c:.2}  server {s:.2}"),
                    (Some(c), None) => format!("client {c:.2}"),
                    _ => "unknown".into(),
                },
            ),
            ("server", self.server_mode.to_owned()),
            ("thresholds", self.thresholds_row()),
        ];
        if let Some(r) = &self.recovery {
            rows.extend(recovery_rows(r));
        }
        for p in &self.phases {
            rows.push(("phase", phase_row(p)));
        }
        rows
    }

    /// How many sends left more than 1 ms late, and how many due never left.
    fn late_row(&self) -> String {
        let never = match self.due_not_sent {
            0 => String::new(),
            n => format!("; {n} due never left (window full)"),
        };
        format!(
            "{} of {} more than 1 ms late{never}",
            self.late_sends, self.sent
        )
    }

    /// Messages per second, and the rate asked for in an open loop.
    fn rate_row(&self) -> String {
        match (self.rate_requested, self.arrival) {
            (Some(r), Some(a)) => format!(
                "{:.0} (open loop: --rate {r}, {a})",
                self.messages_per_second
            ),
            (None, Some(a)) => format!(
                "{:.0} (open loop: each phase's rate, {a})",
                self.messages_per_second
            ),
            _ => format!("{:.0}", self.messages_per_second),
        }
    }

    /// `2 passed, 1 crossed`, or `none`.
    fn thresholds_row(&self) -> String {
        super::merge::thresholds_row(&self.thresholds)
    }

    /// The table's rows in this scenario's words, and the notes under it (for `--report`).
    pub(super) fn table(&self) -> (Vec<(String, String)>, Vec<String>) {
        let rows = self
            .rows()
            .into_iter()
            .map(|(k, v)| {
                let (k, v) = self.in_scenario_words(k, v);
                (k.to_owned(), v)
            })
            .collect();
        let mut notes: Vec<String> = self.notes().map(str::to_owned).collect();
        if self.embedded_server {
            notes.insert(0, self.rss_note.to_owned());
        }
        (rows, notes)
    }

    /// The notes under the table: the latency note, and why the run is generator-bound.
    fn notes(&self) -> impl Iterator<Item = &str> {
        [&self.latency_note, &self.generator_note]
            .into_iter()
            .flatten()
            .map(String::as_str)
    }

    /// A row as this scenario says it: idle runs send nothing; churn runs measure reopening,
    /// in their own words.
    fn in_scenario_words(&self, k: &'static str, v: String) -> (&'static str, String) {
        match (self.scenario, k) {
            (
                "idle",
                "sent / received" | "messages/s" | "latency µs" | "uncorrected µs" | "late sends",
            ) => (k, "–".to_owned()),
            ("churn", "sent / received") => (
                "reopened",
                format!("{} of {} attempts", self.received, self.sent),
            ),
            ("churn", "messages/s") => ("reopens/s", format!("{:.0}", self.messages_per_second)),
            ("churn", "latency µs") => ("reopen µs", v),
            ("churn", "uncorrected µs" | "late sends") => (k, "–".to_owned()),
            _ => (k, v),
        }
    }
}

/// One phase in a row: its name, span, connections, rate, latency and errors.
fn phase_row(p: &PhaseOut) -> String {
    let passed = p.thresholds.iter().filter(|t| t.passed).count();
    format!(
        "{} ({:.0}-{:.0} s, {} connections): {:.0} messages/s, p50 {} p99 {} max {} µs, missing \
         {}, errors {}{}",
        p.name,
        p.start_seconds,
        p.start_seconds + p.duration_seconds,
        p.connections,
        p.messages_per_second,
        p.latency_us.p50,
        p.latency_us.p99,
        p.latency_us.max,
        p.missing,
        p.errors,
        match p.thresholds.len() {
            0 => String::new(),
            n => format!(", thresholds {passed} passed, {} crossed", n - passed),
        }
    )
}

/// The rows of a run with `--chaos`.
fn recovery_rows(r: &RecoveryOut) -> Vec<(&'static str, String)> {
    let codes: Vec<String> = r
        .close_codes
        .iter()
        .map(|(c, n)| format!("{c}: {n}"))
        .collect();
    vec![
        ("chaos", r.chaos.join("; ")),
        (
            "lost / not back",
            format!("{} / {}", r.connections_lost, r.not_back),
        ),
        ("recover µs", percentiles(&r.recover_us)),
        ("close codes", codes.join(", ")),
        (
            "failed attempts",
            if r.handshake_failure_causes.is_empty() {
                r.handshake_failures.to_string()
            } else {
                let causes: Vec<String> = r
                    .handshake_failure_causes
                    .iter()
                    .map(|(c, n)| format!("{n} x {c}"))
                    .collect();
                format!("{} ({})", r.handshake_failures, causes.join("; "))
            },
        ),
    ]
}

/// `p50 …  p90 …  p99 …  p99.9 …  max …`.
fn percentiles(l: &Latency) -> String {
    format!(
        "p50 {}  p90 {}  p99 {}  p99.9 {}  max {}",
        l.p50, l.p90, l.p99, l.p999, l.max
    )
}
