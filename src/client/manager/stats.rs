//! What a [`Manager`](super::Manager) reports: [`ManagerStats`] (the sum over its tracked
//! connections, read on demand) and the retired totals that keep the exported counters from
//! going down when a connection leaves. Which figures are summed is the table in
//! [`figures`](super::figures).

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use super::figures::FIGURES;
use crate::client::{Client, ConnectionState, Stats};

/// How many of a manager's connections are in each [`ConnectionState`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StateCounts {
    /// `Connecting`.
    pub connecting: usize,
    /// `Connected`.
    pub connected: usize,
    /// `Disconnected`.
    pub disconnected: usize,
    /// `Reconnecting`.
    pub reconnecting: usize,
    /// `Failed`.
    pub failed: usize,
    /// `Closed`.
    pub closed: usize,
}

impl StateCounts {
    fn add(&mut self, state: &ConnectionState) {
        match state {
            ConnectionState::Connecting { .. } => self.connecting += 1,
            ConnectionState::Connected => self.connected += 1,
            ConnectionState::Disconnected { .. } => self.disconnected += 1,
            ConnectionState::Reconnecting { .. } => self.reconnecting += 1,
            ConnectionState::Failed { .. } => self.failed += 1,
            ConnectionState::Closed => self.closed += 1,
        }
    }
}

/// The sum of every tracked connection's [`Stats`], with connections counted by state and the
/// round-trip times of the connected ones. With the `metrics` feature,
/// `Manager::register_metrics` exports the same figures to Prometheus (there the counters also
/// keep what connections no longer tracked had counted).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ManagerStats {
    /// Connections tracked (every state, including `Failed` and `Closed`).
    pub connections: usize,
    /// Connections by state.
    pub states: StateCounts,
    /// Messages received, all connections.
    pub messages_in: u64,
    /// Messages handed to sockets, all connections.
    pub messages_out: u64,
    /// Payload bytes received, all connections.
    pub bytes_in: u64,
    /// Payload bytes handed to sockets, all connections.
    pub bytes_out: u64,
    /// Successful reconnections, all connections.
    pub reconnects: u64,
    /// Outgoing messages dropped (outbox policy, lost connections), all connections.
    pub dropped: u64,
    /// Incoming messages dropped for full subscribers (channels or actor mailboxes), all
    /// connections.
    pub dropped_incoming: u64,
    /// Times a connection paused reading its socket because it was behind (a full
    /// [`Overflow::Backpressure`](crate::client::Overflow::Backpressure) subscriber, or the Router),
    /// all connections.
    pub read_pauses: u64,
    /// Recoveries of missed room messages that brought them all (rejoins from a position, gaps
    /// filled), all connections.
    pub recovered: u64,
    /// Recoveries of missed room messages that could not bring them all, all connections.
    pub unrecoverable: u64,
    /// Room messages dropped as already delivered, all connections.
    pub duplicates: u64,
    /// What the client side of this process keeps alive (clients, actors, subscriptions),
    /// process-wide: see [`census`](crate::client::census).
    pub live: crate::client::Census,
    /// Connections that reached `Failed` and were forgotten (the manager stops tracking a
    /// connection once it has failed, so its name can be used again and nothing piles up).
    pub forgotten: u64,
    /// `Connected` connections whose heartbeat has measured a round-trip time: how many the
    /// two RTT figures below cover (a connection that is down keeps its last figure, which would
    /// only mislead, so it is left out).
    pub rtt_connections: usize,
    /// The mean of those connections' smoothed round-trip times; `None` without any.
    pub smoothed_rtt_mean: Option<Duration>,
    /// The largest of those connections' smoothed round-trip times: the feed furthest away, or
    /// the one in trouble. `None` without any.
    pub smoothed_rtt_max: Option<Duration>,
}

impl ManagerStats {
    /// Count one connection: its state, and each figure of [`FIGURES`] that sums over
    /// connections.
    fn add(&mut self, state: &ConnectionState, s: &Stats) {
        self.connections += 1;
        self.states.add(state);
        for f in &FIGURES {
            if let Some(of_connection) = f.of_connection {
                *(f.total)(self) += of_connection(s);
            }
        }
    }

    /// Sum every connection in `clients`, with the RTT figures of the connected ones.
    pub(super) fn of<'a>(clients: impl Iterator<Item = &'a Client>) -> Self {
        let mut total = ManagerStats::default();
        let mut rtt_sum = Duration::ZERO;
        for c in clients {
            let (state, stats) = (c.state(), c.stats());
            total.add(&state, &stats);
            if let (ConnectionState::Connected, Some(rtt)) = (&state, stats.smoothed_rtt) {
                total.rtt_connections += 1;
                rtt_sum = rtt_sum.saturating_add(rtt);
                total.smoothed_rtt_max = total.smoothed_rtt_max.max(Some(rtt));
            }
        }
        let n = u32::try_from(total.rtt_connections).unwrap_or(u32::MAX);
        total.smoothed_rtt_mean = (n > 0).then(|| rtt_sum / n);
        total
    }
}

/// What the connections a manager no longer tracks (closed, or failed and forgotten) had
/// counted, kept so that the exported counters never go down when a connection leaves. Updated
/// under the lock of the tracked map, at the moment a connection leaves it, so a scrape (which
/// reads both under that lock) never sees a connection in both or in neither. What a connection
/// still counts after it left (the last messages of a closing one) is not added: the counters
/// may miss those, but never go down.
#[derive(Debug, Default)]
pub(super) struct Retired {
    /// One total per row of [`FIGURES`] (the manager's own figures stay 0 here).
    totals: [AtomicU64; FIGURES.len()],
}

impl Retired {
    /// Keep what `client` has counted so far; it is leaving the tracked map now.
    pub(super) fn retire(&self, client: &Client) {
        let s = client.stats();
        for (total, f) in self.totals.iter().zip(&FIGURES) {
            if let Some(of_connection) = f.of_connection {
                total.fetch_add(of_connection(&s), Ordering::Relaxed);
            }
        }
    }

    /// Add the retired totals to `stats`, row by row of [`FIGURES`].
    #[cfg(feature = "metrics")]
    pub(super) fn add_to(&self, stats: &mut ManagerStats) {
        for (total, f) in self.totals.iter().zip(&FIGURES) {
            *(f.total)(stats) += total.load(Ordering::Relaxed);
        }
    }
}
