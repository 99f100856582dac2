//! The fan-out latency histogram: fixed buckets in atomics, written by the hub and read by
//! scrapes. A leaf module, shared by the counters and the metrics views.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Upper bounds of the fan-out latency buckets, in nanoseconds: 5 µs to 100 ms in 1-2.5-5 steps.
/// A publish to a room of a few members takes microseconds; one to thousands of members takes
/// around a millisecond; tens of milliseconds mean the hub thread is starved or the room huge.
const BOUNDS_NS: [u64; 14] = [
    5_000,
    10_000,
    25_000,
    50_000,
    100_000,
    250_000,
    500_000,
    1_000_000,
    2_500_000,
    5_000_000,
    10_000_000,
    25_000_000,
    50_000_000,
    100_000_000,
];

/// A latency histogram with fixed buckets from 5 µs to 100 ms (and one above), kept in atomics.
///
/// It is written by one thread (the hub's) and read by scrapes on any other, so plain atomic
/// adds are enough: no lock is taken on the publish path, and a scrape never blocks the hub.
/// A snapshot taken while the hub records may see an observation in its bucket before its sum;
/// [`snapshot`](Self::snapshot) derives the count from the buckets, so the count and the `+Inf`
/// bucket always agree, as Prometheus expects.
#[derive(Debug, Default)]
pub struct LatencyHistogram {
    /// Observations per bucket (not cumulative); the last one holds those above every bound.
    buckets: [AtomicU64; BOUNDS_NS.len() + 1],
    /// Sum of every observation, in nanoseconds.
    sum_ns: AtomicU64,
}

impl LatencyHistogram {
    /// Record one observation.
    pub fn observe(&self, elapsed: Duration) {
        let ns = u64::try_from(elapsed.as_nanos()).unwrap_or(u64::MAX);
        let i = BOUNDS_NS
            .iter()
            .position(|&bound| ns <= bound)
            .unwrap_or(BOUNDS_NS.len());
        if let Some(bucket) = self.buckets.get(i) {
            bucket.fetch_add(1, Ordering::Relaxed);
        }
        // Saturating, so that an absurd observation pins the sum instead of wrapping it to a
        // small number (one writer: the update succeeds at its first try).
        let _ = self
            .sum_ns
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |sum| {
                Some(sum.saturating_add(ns))
            });
    }

    /// The counts so far, with cumulative buckets.
    pub fn snapshot(&self) -> LatencySnapshot {
        let mut cumulative = 0u64;
        let mut buckets = Vec::with_capacity(BOUNDS_NS.len());
        for (bound, bucket) in BOUNDS_NS.iter().zip(&self.buckets) {
            cumulative = cumulative.saturating_add(bucket.load(Ordering::Relaxed));
            buckets.push((Duration::from_nanos(*bound), cumulative));
        }
        let above = self.buckets.last().map_or(0, |b| b.load(Ordering::Relaxed));
        LatencySnapshot {
            buckets,
            count: cumulative.saturating_add(above),
            sum: Duration::from_nanos(self.sum_ns.load(Ordering::Relaxed)),
        }
    }
}

/// A [`LatencyHistogram`] read at one moment.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LatencySnapshot {
    /// `(upper bound, observations at or below it)` for each finite bucket, ascending and
    /// cumulative, as Prometheus' `le` buckets are.
    pub buckets: Vec<(Duration, u64)>,
    /// Every observation (the `+Inf` bucket).
    pub count: u64,
    /// The sum of every observation.
    pub sum: Duration,
}

impl LatencySnapshot {
    /// The mean observation, or `None` before the first.
    pub fn mean(&self) -> Option<Duration> {
        let count = u32::try_from(self.count).unwrap_or(u32::MAX);
        (count > 0).then(|| self.sum / count)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Bounds are inclusive (`le`), buckets cumulative, anything past 100 ms only in the count,
    /// and the count always equals the `+Inf` bucket.
    #[test]
    fn latency_buckets_are_inclusive_and_cumulative() {
        let h = LatencyHistogram::default();
        assert_eq!(h.snapshot().mean(), None);
        h.observe(Duration::from_micros(5));
        h.observe(Duration::from_nanos(5_001));
        h.observe(Duration::from_millis(3));
        h.observe(Duration::from_secs(1));
        h.observe(Duration::MAX);
        let s = h.snapshot();
        assert_eq!(s.buckets.len(), BOUNDS_NS.len());
        assert_eq!(s.buckets[0], (Duration::from_micros(5), 1));
        assert_eq!(s.buckets[1], (Duration::from_micros(10), 2));
        let at = |ms: u64| s.buckets.iter().find(|b| b.0 == Duration::from_millis(ms));
        assert_eq!(at(1).map(|b| b.1), Some(2));
        assert_eq!(at(5).map(|b| b.1), Some(3));
        assert_eq!(s.buckets.last(), Some(&(Duration::from_millis(100), 3)));
        assert_eq!(s.count, 5);
        assert!(s.buckets.windows(2).all(|w| w[0].1 <= w[1].1));
        assert_eq!(s.sum, Duration::from_nanos(u64::MAX), "the sum saturates");
    }
}
