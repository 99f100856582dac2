//! Phases (`--plan FILE`): a run in steps, each with its length, its connections (ramped from
//! the step before), its rate and its thresholds; the flags alone are the one-phase case.
//!
//! ```toml
//! thresholds = ["missing==0"]          # over the whole run
//!
//! [[phase]]
//! name = "warm-up"
//! duration = "30s"
//! connections = 100
//! rate = 1000                          # messages/s (open loop); leave out for a closed loop
//!
//! [[phase]]
//! name = "peak"
//! duration = "1m"
//! connections = 1000                   # ramped from 100 over the phase
//! rate = 10000
//! thresholds = ["p99<100ms"]           # over this phase
//! ```
//!
//! The most connections any phase has are opened before the first phase; a phase ramps how
//! many of them send, linearly from the previous phase's count to its own (the first phase
//! starts at its own). Results per phase come from the per-second series (corrected latency to
//! 2 significant digits; the overall figures keep 3).

use std::path::Path;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::args::{bad, LoadArgs, Scenario};
use super::coordinator::latency;
use super::report::{Latency, Report};
use super::series::{second_histogram, SecondOut};
use super::thresholds::{self, Figures, Outcome, Threshold};
use crate::flags;
use actix_ws_manager::Result;

/// One phase of a run.
#[derive(Debug, Clone)]
pub struct Phase {
    pub(super) name: String,
    /// From the start of the measurement.
    pub(super) start: Duration,
    pub(super) duration: Duration,
    /// Connections sending at the start of the phase, and at its end.
    pub(super) from: usize,
    pub(super) connections: usize,
    /// Messages per second in total (open loop), or `None` (closed loop).
    pub(super) rate: Option<f64>,
    pub(super) thresholds: Vec<Threshold>,
}

/// The phases of a run, in order.
#[derive(Debug, Clone, Default)]
pub struct Phases {
    pub(super) list: Vec<Phase>,
    /// Whether they came from `--plan` (then the report has results per phase).
    pub(super) planned: bool,
}

/// A plan file, as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PlanFile {
    #[serde(default)]
    thresholds: Vec<String>,
    phase: Vec<PhaseFile>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PhaseFile {
    name: Option<String>,
    duration: String,
    connections: u64,
    rate: Option<f64>,
    #[serde(default)]
    thresholds: Vec<String>,
}

impl Phases {
    /// The flags' one phase: `--duration`, `--connections`, `--rate`.
    pub(super) fn one(args: &LoadArgs) -> Phases {
        Phases {
            list: vec![Phase {
                name: "run".into(),
                start: Duration::ZERO,
                duration: args.duration,
                from: args.connections,
                connections: args.connections,
                rate: args.rate,
                thresholds: Vec::new(),
            }],
            planned: false,
        }
    }

    /// Read `file`; answers the phases and the thresholds over the whole run. Errors name the
    /// file and the phase.
    pub(super) fn read(file: &Path, scenario: Scenario) -> Result<(Phases, Vec<Threshold>)> {
        let at = |e: String| bad(format!("--plan {}: {e}", file.display()));
        let text = std::fs::read_to_string(file).map_err(|e| at(e.to_string()))?;
        let plan: PlanFile = toml::from_str(&text).map_err(|e| at(e.message().to_owned()))?;
        let parse_all = |list: &[String]| -> std::result::Result<Vec<Threshold>, String> {
            list.iter().map(|t| thresholds::parse(t)).collect()
        };
        let overall = parse_all(&plan.thresholds).map_err(at)?;
        let (mut list, mut start) = (Vec::new(), Duration::ZERO);
        for (i, p) in plan.phase.iter().enumerate() {
            let name = p.name.clone().unwrap_or_else(|| format!("phase {}", i + 1));
            let named = |e: String| at(format!("{name}: {e}"));
            let duration =
                flags::duration(&p.duration).map_err(|e| named(format!("duration: {e}")))?;
            if !(1..=flags::MAX_CONNECTIONS).contains(&p.connections) {
                return Err(named(format!(
                    "connections must be 1 to {}",
                    flags::MAX_CONNECTIONS
                )));
            }
            let rate = match p.rate {
                Some(r) => Some(
                    flags::per_second(&r.to_string()).map_err(|e| named(format!("rate {e}")))?,
                ),
                None => None,
            };
            let connections = p.connections as usize;
            let from = list.last().map_or(connections, |l: &Phase| l.connections);
            if scenario == Scenario::Broadcast && from != connections {
                return Err(named(
                    "a broadcast plan keeps one connection count (members stay joined)".into(),
                ));
            }
            let thresholds = parse_all(&p.thresholds).map_err(named)?;
            list.push(Phase {
                name,
                start,
                duration,
                from,
                connections,
                rate,
                thresholds,
            });
            start += duration;
        }
        if list.is_empty() {
            return Err(at("no [[phase]]".into()));
        }
        if list.iter().any(|p| p.rate.is_some()) != list.iter().all(|p| p.rate.is_some()) {
            return Err(at(
                "either every phase has a rate (open loop) or none (closed loop)".into(),
            ));
        }
        Ok((
            Phases {
                list,
                planned: true,
            },
            overall,
        ))
    }

    /// The whole run's length.
    pub(super) fn total(&self) -> Duration {
        self.list.iter().map(|p| p.duration).sum()
    }

    /// The most connections any phase has.
    pub(super) fn max_connections(&self) -> usize {
        self.list.iter().map(|p| p.connections).max().unwrap_or(1)
    }

    /// The phase at `t` from the start (the last one past the end).
    fn phase_at(&self, t: Duration) -> Option<&Phase> {
        self.list
            .iter()
            .find(|p| t < p.start + p.duration)
            .or(self.list.last())
    }

    /// Connections sending at `t`.
    pub(super) fn active(&self, t: Duration) -> f64 {
        self.phase_at(t).map_or(0.0, |p| {
            let f = (t.saturating_sub(p.start)).as_secs_f64() / p.duration.as_secs_f64();
            p.from as f64 + (p.connections as f64 - p.from as f64) * f.min(1.0)
        })
    }

    /// Messages per second for each sending connection at `t` (of `senders` sending; with
    /// phases, the connections active then), or `None` in a closed loop.
    pub(super) fn rate_each(&self, t: Duration, senders: Option<usize>) -> Option<f64> {
        let p = self.phase_at(t)?;
        let n = senders.map_or_else(|| self.active(t).floor(), |s| s as f64);
        p.rate.map(|r| r / n.max(1.0))
    }

    /// Whether connection `idx` sends at `t` (always without `--plan`).
    pub(super) fn sends(&self, idx: usize, t: Duration) -> bool {
        !self.planned || (idx as f64) < self.active(t).floor()
    }

    /// The first time from `t` on at which connection `idx` sends (`None`: never again).
    pub(super) fn next_active(&self, idx: usize, t: Duration) -> Option<Duration> {
        let i = idx as f64;
        if i < self.active(t).floor() {
            return Some(t);
        }
        for p in self.list.iter().filter(|p| p.start + p.duration > t) {
            let (a, b) = (p.from as f64, p.connections as f64);
            if b <= i || b <= a {
                continue;
            }
            // a + (b - a) * f > i from f = (i + 1 - a) / (b - a) on.
            let f = ((i + 1.0 - a) / (b - a)).clamp(0.0, 1.0);
            let at = p.start + p.duration.mul_f64(f);
            return Some(at.max(t));
        }
        None
    }
}

/// One phase's results, as the report has them.
#[derive(Debug, Serialize)]
pub(super) struct PhaseOut {
    pub(super) name: String,
    pub(super) start_seconds: f64,
    pub(super) duration_seconds: f64,
    /// Connections sending at the end of the phase.
    pub(super) connections: usize,
    pub(super) rate: Option<f64>,
    pub(super) received: u64,
    pub(super) messages_per_second: f64,
    /// Echo replies found missing in the phase (broadcast: see the run's `missing`).
    pub(super) missing: u64,
    pub(super) errors: u64,
    /// Corrected latency, 2 significant digits.
    pub(super) latency_us: Latency,
    pub(super) thresholds: Vec<Outcome>,
}

impl PhaseOut {
    /// The phase's figures for its thresholds (connect and recover times are the run's).
    pub(super) fn figures<'a>(&'a self, run: &Report) -> Figures<'a> {
        let overall = run.figures();
        Figures {
            latency: &self.latency_us,
            connect_p99: overall.connect_p99,
            recover_p99: overall.recover_p99,
            missing: self.missing,
            errors: self.errors,
            rate: self.messages_per_second,
        }
    }
}

/// Each phase's results from the run's `series`.
pub(super) fn results(phases: &Phases, series: &[SecondOut]) -> Vec<PhaseOut> {
    phases
        .list
        .iter()
        .map(|p| {
            let (from, to) = (
                p.start.as_secs(),
                (p.start + p.duration).as_secs_f64().ceil() as u64,
            );
            let mut h = second_histogram();
            let (mut received, mut missing, mut errors) = (0, 0, 0);
            for s in series.iter().filter(|s| s.t >= from && s.t < to) {
                if let Ok(one) = s.figures() {
                    let _ = h.add(&one.hist);
                }
                received += s.messages;
                missing += s.missing;
                errors += s.errors;
            }
            PhaseOut {
                name: p.name.clone(),
                start_seconds: p.start.as_secs_f64(),
                duration_seconds: p.duration.as_secs_f64(),
                connections: p.connections,
                rate: p.rate,
                received,
                missing,
                messages_per_second: received as f64 / p.duration.as_secs_f64(),
                errors,
                latency_us: latency(&h),
                thresholds: Vec::new(),
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn phase(start: u64, len: u64, from: usize, to: usize) -> Phase {
        Phase {
            name: "p".into(),
            start: Duration::from_secs(start),
            duration: Duration::from_secs(len),
            from,
            connections: to,
            rate: Some(1000.0),
            thresholds: Vec::new(),
        }
    }

    /// Connections ramp linearly within a phase; a connection above the count waits for the
    /// time the ramp reaches it; the rate is shared by the connections sending.
    #[test]
    fn ramps_and_rates() {
        let p = Phases {
            list: vec![phase(0, 10, 10, 10), phase(10, 10, 10, 110)],
            planned: true,
        };
        assert_eq!(p.active(Duration::from_secs(5)), 10.0);
        assert_eq!(p.active(Duration::from_secs(15)), 60.0);
        assert_eq!(p.next_active(3, Duration::ZERO), Some(Duration::ZERO));
        // Connection 59 sends once 60 do: half-way through the second phase.
        assert_eq!(
            p.next_active(59, Duration::ZERO),
            Some(Duration::from_secs(15))
        );
        assert_eq!(p.next_active(200, Duration::ZERO), None);
        assert_eq!(
            p.rate_each(Duration::from_secs(15), None),
            Some(1000.0 / 60.0)
        );
        assert_eq!(p.total(), Duration::from_secs(20));
        assert_eq!(p.max_connections(), 110);
    }
}
