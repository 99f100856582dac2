//! Per-second series of a run: messages received, connections up, errors, and a latency
//! histogram per second (corrected latency; 2 significant digits, so a 10-minute run keeps
//! about 13 MB of them). `--json` carries each second with its histogram, so that `wsm load
//! merge` adds seconds of several runs as exactly as their whole-run histograms.
//!
//! Drivers record into one of several shards (a connection's index picks it; with one shard
//! per arbiter thread most locks are uncontended); each shard holds its current second and
//! adds it to the run's seconds once a later second begins.

use std::sync::{Mutex, MutexGuard, OnceLock};
use std::time::Instant;

use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};

use super::hist;

/// One second of figures while the run goes on.
pub(super) struct Second {
    pub(super) hist: Histogram<u64>,
    pub(super) messages: u64,
    pub(super) missing: u64,
    pub(super) errors: u64,
}

impl Second {
    fn new() -> Self {
        Second {
            hist: second_histogram(),
            messages: 0,
            missing: 0,
            errors: 0,
        }
    }

    fn add(&mut self, other: &Second) {
        if let Err(e) = self.hist.add(&other.hist) {
            tracing::warn!(error = %e, "series histogram add");
        }
        self.messages += other.messages;
        self.missing += other.missing;
        self.errors += other.errors;
    }
}

/// An empty per-second histogram: 1 µs to 10 minutes, 2 significant digits.
pub(super) fn second_histogram() -> Histogram<u64> {
    // The bounds are constants, not input, and valid, so this cannot fail.
    Histogram::new_with_bounds(1, 600_000_000, 2).expect("constant histogram bounds are valid")
}

/// A shard: the second it is filling, and that second's figures.
struct Shard {
    second: usize,
    current: Second,
}

/// The run's per-second figures, filled by every driver.
pub(super) struct Timeline {
    /// The start of the measurement; nothing is recorded before it is set.
    start: OnceLock<Instant>,
    shards: Vec<Mutex<Shard>>,
    seconds: Mutex<Vec<Second>>,
    /// Connections up, sampled by the coordinator, per second.
    connections: Mutex<Vec<u64>>,
}

/// Most seconds a series holds (`--duration` is at most a year, the series is capped at a day;
/// later figures go into the last second).
const MAX_SECONDS: usize = 86_400;

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl Timeline {
    /// A timeline of `shards` shards (at least one).
    pub(super) fn new(shards: usize) -> Self {
        Timeline {
            start: OnceLock::new(),
            shards: (0..shards.max(1))
                .map(|_| {
                    Mutex::new(Shard {
                        second: 0,
                        current: Second::new(),
                    })
                })
                .collect(),
            seconds: Mutex::new(Vec::new()),
            connections: Mutex::new(Vec::new()),
        }
    }

    /// The measurement starts now.
    pub(super) fn start(&self, at: Instant) {
        let _ = self.start.set(at);
    }

    /// The second of the run `now` falls in (`None` before the start).
    fn second_now(&self) -> Option<usize> {
        let start = *self.start.get()?;
        Some((start.elapsed().as_secs() as usize).min(MAX_SECONDS - 1))
    }

    /// Connection `idx` received a message, `corrected_us` after it was due.
    pub(super) fn message(&self, idx: usize, corrected_us: u64) {
        self.with_second(idx, |s| {
            s.hist.saturating_record(corrected_us.max(1));
            s.messages += 1;
        });
    }

    /// Connection `idx` saw an error.
    pub(super) fn error(&self, idx: usize) {
        self.with_second(idx, |s| s.errors += 1);
    }

    /// A message of connection `idx` went missing.
    pub(super) fn missing(&self, idx: usize) {
        self.with_second(idx, |s| s.missing += 1);
    }

    /// `f` on the current second of connection `idx`'s shard.
    fn with_second(&self, idx: usize, f: impl FnOnce(&mut Second)) {
        let Some(now) = self.second_now() else {
            return;
        };
        let mut shard = lock(&self.shards[idx % self.shards.len()]);
        if now > shard.second {
            let done = std::mem::replace(&mut shard.current, Second::new());
            self.add(shard.second, &done);
            shard.second = now;
        }
        if now < shard.second {
            let mut late = Second::new();
            f(&mut late);
            self.add(now, &late);
        } else {
            f(&mut shard.current);
        }
    }

    /// Add `figures` to second `at` of the run.
    fn add(&self, at: usize, figures: &Second) {
        let mut seconds = lock(&self.seconds);
        while seconds.len() <= at {
            seconds.push(Second::new());
        }
        seconds[at].add(figures);
    }

    /// Messages received in second `at` and their corrected p99 (µs), so far: what the shards
    /// still hold of it included.
    pub(super) fn peek(&self, at: usize) -> (u64, u64) {
        let mut sum = Second::new();
        if let Some(s) = lock(&self.seconds).get(at) {
            sum.add(s);
        }
        for shard in &self.shards {
            let shard = lock(shard);
            if shard.second == at {
                sum.add(&shard.current);
            }
        }
        let p99 = if sum.hist.is_empty() {
            0
        } else {
            sum.hist.value_at_quantile(0.99)
        };
        (sum.messages, p99)
    }

    /// `n` connections are up now.
    pub(super) fn connections(&self, n: usize) {
        let Some(now) = self.second_now() else {
            return;
        };
        let mut c = lock(&self.connections);
        while c.len() <= now {
            c.push(0);
        }
        c[now] = n as u64;
    }

    /// The series, once every driver has reported: each shard's last second added in.
    pub(super) fn finish(&self) -> Vec<SecondOut> {
        for shard in &self.shards {
            let mut shard = lock(shard);
            let done = std::mem::replace(&mut shard.current, Second::new());
            self.add(shard.second, &done);
        }
        let seconds = lock(&self.seconds);
        let connections = lock(&self.connections);
        let n = seconds.len().max(connections.len());
        (0..n)
            .map(|t| {
                let empty = Second::new();
                let s = seconds.get(t).unwrap_or(&empty);
                SecondOut::of(t as u64, s, connections.get(t).copied().unwrap_or(0))
            })
            .collect()
    }
}

/// One second of the series, as `--json` has it.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub(crate) struct SecondOut {
    /// Seconds since the start of the measurement.
    pub(crate) t: u64,
    /// Messages received in this second.
    pub(crate) messages: u64,
    /// Connections up (sampled in this second).
    pub(crate) connections: u64,
    /// Messages found missing in this second.
    #[serde(default)]
    pub(crate) missing: u64,
    /// Errors seen in this second.
    pub(crate) errors: u64,
    /// Corrected latency percentiles of this second's messages, microseconds.
    pub(crate) p50: u64,
    pub(crate) p99: u64,
    pub(crate) max: u64,
    /// This second's histogram, HdrHistogram V2 compressed, base64.
    pub(crate) hist: String,
}

impl SecondOut {
    /// Second `t` with `figures` and `connections`.
    pub(super) fn of(t: u64, figures: &Second, connections: u64) -> Self {
        let h = &figures.hist;
        let q = |p: f64| {
            if h.is_empty() {
                0
            } else {
                h.value_at_quantile(p)
            }
        };
        SecondOut {
            t,
            messages: figures.messages,
            missing: figures.missing,
            connections,
            errors: figures.errors,
            p50: q(0.5),
            p99: q(0.99),
            max: h.max(),
            hist: hist::encode(h),
        }
    }

    /// The figures again (for a merge), with the histogram decoded.
    pub(super) fn figures(&self) -> Result<Second, String> {
        Ok(Second {
            hist: hist::decode(&self.hist)?,
            messages: self.messages,
            missing: self.missing,
            errors: self.errors,
        })
    }
}

/// Add `other` to `into` (a merge of seconds).
pub(super) fn add_second(into: &mut Second, other: &Second) {
    into.add(other);
}

/// An empty second (a merge's start).
pub(super) fn empty_second() -> Second {
    Second::new()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A second's figures so far are what every shard recorded in it, flushed or not; the
    /// progress line shows them.
    #[test]
    fn peek_sees_every_shard() {
        let t = Timeline::new(2);
        t.start(Instant::now());
        for (idx, us) in [(0, 1000), (1, 2000), (1, 3000)] {
            t.message(idx, us);
        }
        let (messages, p99) = t.peek(0);
        assert_eq!(messages, 3);
        assert!((2990..=3010).contains(&p99), "{p99}");
        assert_eq!(t.peek(5), (0, 0));
        assert_eq!(
            super::super::phases::progress_line(50, messages, p99),
            format!(
                "50 connections  3 messages/s  p99 {:.1} ms (last second)",
                p99 as f64 / 1e3
            )
        );
    }
}
