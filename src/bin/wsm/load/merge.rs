//! `wsm load merge a.json b.json ...`: several runs (copies of `wsm load --json` on several
//! machines, say) as one. Histograms are added, so the merged percentiles are exactly those
//! of one histogram holding every run's messages; counts are added; the series are lined up
//! by wall-clock second (each report's `started_unix`) and added second by second.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use actix_ws_manager::{Error, Result};
use clap::Args;
use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};

use super::args::bad;
use super::coordinator::latency;
use super::hist::{self, Histograms};
use super::html;
use super::report::Latency;
use super::series::{self, Second, SecondOut};
use super::thresholds::{self, Figures, Outcome, Threshold};

/// Flags of `wsm load merge`.
#[derive(Debug, Clone, Args)]
pub struct MergeArgs {
    /// Reports written by `wsm load --json`, two or more.
    #[arg(required = true, num_args = 2.., value_name = "REPORT.json")]
    files: Vec<PathBuf>,
    /// Print exactly one JSON object on stdout instead of the table.
    #[arg(long)]
    json: bool,
    /// Write the merged runs as an HTML report to FILE (as `wsm load --report`).
    #[arg(long, value_name = "FILE")]
    report: Option<PathBuf>,
    /// A pass/fail condition on the merged runs, repeatable, as `wsm load --threshold` (p50,
    /// p90, p99, p999, max, connect_p99, missing, errors, rate; not recover_p99): each crossed
    /// one is named on stderr after the report and the exit code is 99; --json lists every one
    /// under `thresholds`. So a run spread over several machines passes or fails as a whole.
    #[arg(long, value_name = "EXPR", value_parser = thresholds::parse_merged)]
    threshold: Vec<Threshold>,
}

/// The figures of one run that a merge reads.
#[derive(Debug, Deserialize)]
struct Input {
    url: String,
    connections_connected: u64,
    sent: u64,
    received: u64,
    missing: u64,
    errors: u64,
    messages_per_second: f64,
    duration_seconds: f64,
    started_unix: f64,
    series: Vec<SecondOut>,
    histograms: Histograms,
}

/// The merged runs.
#[derive(Debug, Serialize)]
struct Merged {
    runs: usize,
    urls: Vec<String>,
    connections_connected: u64,
    /// From the earliest start to the latest end of a measurement.
    duration_seconds: f64,
    sent: u64,
    received: u64,
    /// The runs' rates added (they ran side by side).
    messages_per_second: f64,
    latency_us: Latency,
    latency_uncorrected_us: Latency,
    connect_us: Latency,
    missing: u64,
    errors: u64,
    started_unix: f64,
    series: Vec<SecondOut>,
    histograms: Histograms,
    /// How each `--threshold` fared over the merged runs.
    thresholds: Vec<Outcome>,
    #[serde(skip)]
    latency_hist: Histogram<u64>,
    #[serde(skip)]
    uncorrected_hist: Histogram<u64>,
}

/// Run `wsm load merge`. Answers the exit code: success, or 99 when a `--threshold` was
/// crossed (each named on stderr after the report).
pub fn run(args: &MergeArgs) -> Result<ExitCode> {
    let inputs = args
        .files
        .iter()
        .map(|f| read(f))
        .collect::<Result<Vec<_>>>()?;
    let mut merged = merge(&args.files, &inputs)?;
    let mut crossed = Vec::new();
    for t in &args.threshold {
        let outcome = t.judge(&Figures {
            latency: &merged.latency_us,
            connect_p99: merged.connect_us.p99,
            recover_p99: 0,
            missing: merged.missing,
            errors: merged.errors,
            rate: merged.messages_per_second,
        });
        if !outcome.passed {
            crossed.push(t.crossed_line(&outcome));
        }
        merged.thresholds.push(outcome);
    }
    if let Some(file) = &args.report {
        let page = html::Page {
            title: &format!("wsm load merge: {} runs", merged.runs),
            rows: rows(&merged)
                .into_iter()
                .map(|(k, v)| (k.to_owned(), v))
                .collect(),
            notes: vec![format!("runs: {}", merged.urls.join(", "))],
            series: &merged.series,
            span_seconds: merged.duration_seconds,
            corrected: &merged.latency_hist,
            uncorrected: &merged.uncorrected_hist,
        };
        html::write(file, &page)?;
    }
    print(&merged, args.json)?;
    Ok(thresholds::exit_code("wsm load merge", &crossed))
}

/// One report, read and parsed; the error names the file.
fn read(file: &Path) -> Result<Input> {
    let text = std::fs::read_to_string(file)
        .map_err(|e| bad(format!("cannot read {}: {e}", file.display())))?;
    serde_json::from_str(text.trim()).map_err(|e| {
        bad(format!(
            "{} is not a `wsm load --json` report with histograms: {e}",
            file.display()
        ))
    })
}

/// Add the runs up.
fn merge(files: &[PathBuf], inputs: &[Input]) -> Result<Merged> {
    let named = |i: usize, e: String| bad(format!("{}: {e}", files[i].display()));
    let mut h = [
        super::drivers::new_histogram(),
        super::drivers::new_histogram(),
        super::drivers::new_histogram(),
    ];
    for (i, input) in inputs.iter().enumerate() {
        let hs = &input.histograms;
        for (into, text) in h
            .iter_mut()
            .zip([&hs.latency, &hs.latency_uncorrected, &hs.connect])
        {
            add(into, &hist::decode(text).map_err(|e| named(i, e))?).map_err(|e| named(i, e))?;
        }
    }
    let start = inputs
        .iter()
        .map(|r| r.started_unix)
        .fold(f64::INFINITY, f64::min);
    let end = inputs
        .iter()
        .map(|r| r.started_unix + r.duration_seconds)
        .fold(f64::NEG_INFINITY, f64::max);
    let sum = |f: fn(&Input) -> u64| inputs.iter().map(f).sum::<u64>();
    let [lat, uncorrected, connect] = h;
    Ok(Merged {
        runs: inputs.len(),
        urls: inputs.iter().map(|r| r.url.clone()).collect(),
        connections_connected: sum(|r| r.connections_connected),
        duration_seconds: (end - start).max(0.0),
        sent: sum(|r| r.sent),
        received: sum(|r| r.received),
        messages_per_second: inputs.iter().map(|r| r.messages_per_second).sum(),
        latency_us: latency(&lat),
        latency_uncorrected_us: latency(&uncorrected),
        connect_us: latency(&connect),
        missing: sum(|r| r.missing),
        errors: sum(|r| r.errors),
        started_unix: start,
        series: merge_series(inputs, start).map_err(bad)?,
        histograms: Histograms {
            latency: hist::encode(&lat),
            latency_uncorrected: hist::encode(&uncorrected),
            connect: hist::encode(&connect),
        },
        thresholds: Vec::new(),
        latency_hist: lat,
        uncorrected_hist: uncorrected,
    })
}

/// Add `other` into `into`.
fn add(into: &mut Histogram<u64>, other: &Histogram<u64>) -> std::result::Result<(), String> {
    into.add(other)
        .map_err(|e| format!("a histogram does not add: {e:?}"))
}

/// The runs' series, second by second of wall-clock time from `start`.
fn merge_series(inputs: &[Input], start: f64) -> std::result::Result<Vec<SecondOut>, String> {
    let mut seconds: Vec<(Second, u64)> = Vec::new();
    for input in inputs {
        let offset = (input.started_unix - start).max(0.0).round() as usize;
        for s in &input.series {
            let at = offset + s.t as usize;
            if at >= 86_400 {
                continue;
            }
            while seconds.len() <= at {
                seconds.push((series::empty_second(), 0));
            }
            series::add_second(&mut seconds[at].0, &s.figures()?);
            seconds[at].1 += s.connections;
        }
    }
    Ok(seconds
        .iter()
        .enumerate()
        .map(|(t, (s, c))| SecondOut::of(t as u64, s, *c))
        .collect())
}

/// Print the merged runs: one JSON object with `json`, else a table.
fn print(m: &Merged, json: bool) -> Result<()> {
    let mut out = std::io::stdout().lock();
    if json {
        let text = serde_json::to_string(m).map_err(|e| Error::Encode(e.to_string()))?;
        writeln!(out, "{text}")?;
        return Ok(());
    }
    for (k, v) in rows(m) {
        writeln!(out, "{k:>16}  {v}")?;
    }
    Ok(())
}

/// The merged runs' table rows.
fn rows(m: &Merged) -> Vec<(&'static str, String)> {
    let pct = |l: &Latency| {
        format!(
            "p50 {}  p90 {}  p99 {}  p99.9 {}  max {}",
            l.p50, l.p90, l.p99, l.p999, l.max
        )
    };
    vec![
        ("runs", m.runs.to_string()),
        ("connections", m.connections_connected.to_string()),
        ("span", format!("{:.2} s", m.duration_seconds)),
        ("sent / received", format!("{} / {}", m.sent, m.received)),
        ("messages/s", format!("{:.0}", m.messages_per_second)),
        ("latency µs", pct(&m.latency_us)),
        ("uncorrected µs", pct(&m.latency_uncorrected_us)),
        ("connect µs", pct(&m.connect_us)),
        ("missing", m.missing.to_string()),
        ("errors", m.errors.to_string()),
        ("thresholds", thresholds_row(&m.thresholds)),
    ]
}

/// How many thresholds passed and how many were crossed.
pub(super) fn thresholds_row(outcomes: &[Outcome]) -> String {
    let passed = outcomes.iter().filter(|t| t.passed).count();
    match outcomes.len() {
        0 => "none".to_owned(),
        n => format!("{passed} passed, {} crossed", n - passed),
    }
}
