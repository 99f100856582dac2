//! The open-loop send schedule of one connection (`--rate`, `--arrival`): when each message is
//! due. Latency is timed from the due time (corrected for coordinated omission, as wrk2 does)
//! and from the actual send (uncorrected); a send that leaves more than [`LATE`] after its due
//! time counts as late, and many late sends mean the generator, not the server, set the pace.

use std::time::{Duration, Instant};

use super::args::Arrival;

/// A send this much after its due time is late.
pub(super) const LATE: Duration = Duration::from_millis(1);

/// How early a connection wakes for its next send. tokio's timer counts whole milliseconds
/// and rounds a deadline up to the next one, so a sleep until the due time wakes up to a
/// millisecond (plus the wake-up itself) after it: every other send would look late. Waking
/// this much earlier and sending at once puts the sends within about a millisecond of their
/// due times on either side; a send that leaves early is timed from its actual send.
pub(super) const EARLY: Duration = Duration::from_millis(1);

/// The instant to sleep until for a send due at `due`.
pub(super) fn wake_for(due: Instant) -> Instant {
    due.checked_sub(EARLY).unwrap_or(due)
}

/// The due times of one connection's sends.
pub(super) struct Schedule {
    /// When the next send is due.
    next: Instant,
    /// The mean gap between sends, in seconds.
    mean_gap: f64,
    arrival: Arrival,
    rng: fastrand::Rng,
}

impl Schedule {
    /// A schedule of `rate` sends per second from `start`. The first send is due at a random
    /// point of the first gap, so that the connections' sends spread over it rather than all
    /// leave at once; `seed` (the connection's index) makes each connection's draws its own.
    pub(super) fn new(start: Instant, rate: f64, arrival: Arrival, seed: u64) -> Self {
        let mean_gap = 1.0 / rate.max(f64::MIN_POSITIVE);
        let mut rng = fastrand::Rng::with_seed(seed ^ 0x9e37_79b9_7f4a_7c15);
        let first = match arrival {
            Arrival::Constant => mean_gap * rng.f64(),
            Arrival::Poisson => exponential(&mut rng, mean_gap),
        };
        Schedule {
            next: after(start, first),
            mean_gap,
            arrival,
            rng,
        }
    }

    /// When the next send is due.
    pub(super) fn due(&self) -> Instant {
        self.next
    }

    /// From now on, `rate` sends per second.
    pub(super) fn set_rate(&mut self, rate: f64) {
        self.mean_gap = 1.0 / rate.max(f64::MIN_POSITIVE);
    }

    /// The next send is due at `at` (a connection idle for a while starts again).
    pub(super) fn restart_at(&mut self, at: Instant) {
        self.next = at;
    }

    /// The next send left: the one after it is due one gap later.
    pub(super) fn advance(&mut self) {
        let gap = match self.arrival {
            Arrival::Constant => self.mean_gap,
            Arrival::Poisson => exponential(&mut self.rng, self.mean_gap),
        };
        self.next = after(self.next, gap);
    }
}

/// An exponential draw with mean `mean` (the gaps of a Poisson process).
fn exponential(rng: &mut fastrand::Rng, mean: f64) -> f64 {
    // 1 - [0, 1) is (0, 1]: the logarithm is finite.
    -(1.0 - rng.f64()).ln() * mean
}

/// `t` plus `seconds`, saturating far in the future rather than overflowing.
fn after(t: Instant, seconds: f64) -> Instant {
    let gap = Duration::try_from_secs_f64(seconds).unwrap_or(Duration::from_secs(86_400 * 365));
    t.checked_add(gap).unwrap_or(t)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Constant arrivals are one mean gap apart; Poisson ones average it over many.
    #[test]
    fn gaps_have_the_rate_asked_for() {
        let t0 = Instant::now();
        let mut s = Schedule::new(t0, 100.0, Arrival::Constant, 1);
        let first = s.due();
        assert!(first >= t0 && first < t0 + Duration::from_millis(10));
        s.advance();
        assert_eq!(s.due() - first, Duration::from_millis(10));
        let mut p = Schedule::new(t0, 1000.0, Arrival::Poisson, 2);
        let start = p.due();
        for _ in 0..10_000 {
            p.advance();
        }
        let mean = (p.due() - start).as_secs_f64() / 10_000.0;
        assert!((0.0009..0.0011).contains(&mean), "mean gap {mean}");
    }
}
