//! What a rooms server has done, read without asking the hub: the [`ServerMetrics`] snapshot
//! ([`Rooms::metrics`]) and, with the `metrics` feature, the same figures as Prometheus text
//! ([`Rooms::register_metrics`], [`Rooms::mount_metrics`]).
//!
//! Every figure is an atomic that the hub and the sessions already update as they work (or a
//! gauge the hub stores after each command), so a scrape costs a few loads and never waits in
//! the hub's queue behind publishes: a server under load is measured without being slowed, and
//! a hub that is stuck can still be seen. The names, types and meanings of the exported metrics
//! are listed in [`crate::metrics`].
//!
//! [`HubStats`](super::hub::HubStats) ([`Rooms::stats`]) is the other view: it goes through the
//! hub's queue, so it sees every command queued before it (and counts room memberships), which
//! suits tests and admin pages rather than a scraper that runs every few seconds.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use super::{Rooms, Shared};

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

/// What a rooms server has done since it started, and what it holds now: the figures that
/// [`Rooms::register_metrics`] exports, as a struct, for code that wants them without
/// Prometheus (a status page, a log line, a test).
///
/// Read from atomics by [`Rooms::metrics`] without waiting in the hub's queue, so figures that
/// two threads update (a session counts a message in, the hub counts it out) may be a message
/// apart from each other. Counters only grow; gauges are marked as such. `#[non_exhaustive]`, so
/// that a new figure is not a breaking change.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct ServerMetrics {
    /// Gauge: WebSocket sessions open now, rooms and echo endpoints (each holds a slot under
    /// `max_sessions` from before the authentication hook runs until its actor is gone, so
    /// upgrades waiting on the hook count too).
    pub sessions: usize,
    /// Gauge: rooms with at least one member, as of the hub's last command.
    pub rooms: u64,
    /// Whole messages (text and binary) received from clients, refused ones included.
    pub messages_in: u64,
    /// Payload bytes of those messages.
    pub bytes_in: u64,
    /// Frames handed to session queues: broadcast copies, replies, errors, welcomes.
    pub messages_out: u64,
    /// Payload bytes of those frames.
    pub bytes_out: u64,
    /// Publishes the hub took (from clients and from server code).
    pub published: u64,
    /// Frames dropped because a member's queue was full (`SlowConsumerPolicy::DropNewest`).
    pub slow_consumer_drops: u64,
    /// Sessions disconnected because their queue was full (`SlowConsumerPolicy::Disconnect`).
    pub slow_consumer_disconnects: u64,
    /// Sessions disconnected because nothing arrived from them within the heartbeat timeout.
    pub heartbeat_timeouts: u64,
    /// Messages refused (`rate_limited`) for going past a session's rate limit.
    pub rate_limited: u64,
    /// Sessions closed with 1008 for going on past twice their burst.
    pub rate_limit_disconnects: u64,
    /// Upgrades refused with HTTP 429 by `max_connections_per_ip`.
    pub per_ip_refusals: u64,
    /// Publishes the backplane could not take (other nodes did not get them).
    pub backplane_publish_errors: u64,
    /// Times the backplane's connection was lost and made again.
    pub backplane_reconnects: u64,
    /// Messages from other nodes dropped (a full inbound buffer, or out of their publisher's
    /// order after a reconnect).
    pub backplane_dropped: u64,
    /// Gauge: room channels this node is subscribed to in the backplane, as last confirmed.
    pub backplane_channels: u64,
    /// Messages from other nodes fanned out here.
    pub backplane_received: u64,
    /// Gauge (high-water mark): the deepest any session queue has been, in frames.
    pub session_queue_high_water: u64,
    /// Gauge (high-water mark): the most payload bytes any session queue has held; next to
    /// `session_queue_bytes` it says how close members came to the byte bound.
    pub session_queue_bytes_high_water: u64,
    /// Gauge (high-water mark): the deepest the hub's command queue has been, in commands.
    pub hub_queue_high_water: u64,
    /// How long each publish took the hub, from taking it off its queue to having offered it to
    /// every member (encoding included; time spent waiting in the queue not). Every publish is
    /// observed, to an empty room too, so its count equals `published`.
    pub fanout_latency: LatencySnapshot,
}

impl ServerMetrics {
    /// Read every figure of one server.
    pub(crate) fn read(shared: &Shared) -> Self {
        let c = &shared.counters;
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        ServerMetrics {
            sessions: shared.active.load(Ordering::Acquire),
            rooms: get(&c.rooms),
            messages_in: get(&c.messages_in),
            bytes_in: get(&c.bytes_in),
            messages_out: get(&c.delivered),
            bytes_out: get(&c.bytes),
            published: get(&c.published),
            slow_consumer_drops: get(&c.dropped),
            slow_consumer_disconnects: get(&c.slow_consumer_disconnects),
            heartbeat_timeouts: get(&c.heartbeat_timeouts),
            rate_limited: get(&c.rate_limited),
            rate_limit_disconnects: get(&c.rate_limit_disconnects),
            per_ip_refusals: get(&c.per_ip_refusals),
            backplane_publish_errors: get(&c.backplane_publish_errors),
            backplane_reconnects: get(&c.backplane_disconnects),
            backplane_dropped: get(&c.backplane_dropped),
            backplane_channels: get(&c.backplane_channels),
            backplane_received: get(&c.backplane_received),
            session_queue_high_water: get(&c.queue_high_water),
            session_queue_bytes_high_water: get(&c.queue_bytes_high_water),
            hub_queue_high_water: get(&c.hub_queue_high_water),
            fanout_latency: c.fanout.snapshot(),
        }
    }
}

impl Rooms {
    /// Every figure this server exports as metrics, read now from atomics (see
    /// [`ServerMetrics`]); it does not wait in the hub's queue, unlike [`stats`](Self::stats).
    pub fn metrics(&self) -> ServerMetrics {
        ServerMetrics::read(&self.shared)
    }
}

#[cfg(feature = "metrics")]
mod prometheus {
    use std::sync::Arc;

    use actix_web::web;
    use prometheus_client::collector::Collector;
    use prometheus_client::encoding::DescriptorEncoder;
    use prometheus_client::registry::Registry;

    use super::ServerMetrics;
    use crate::metrics::{
        figure, histogram,
        Kind::{Counter, Gauge},
    };
    use crate::server::{Rooms, Shared};

    /// Reads a server's figures at each scrape. It holds the server's counters only (not the
    /// hub's queue), so a registry that outlives the server keeps no hub alive.
    struct ServerCollector {
        shared: Arc<Shared>,
    }

    impl std::fmt::Debug for ServerCollector {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.debug_struct("ServerCollector").finish_non_exhaustive()
        }
    }

    impl Collector for ServerCollector {
        fn encode(&self, mut e: DescriptorEncoder) -> std::fmt::Result {
            let m = ServerMetrics::read(&self.shared);
            #[rustfmt::skip]
            let figures = [
                (Gauge, "wsm_server_sessions", m.sessions as u64, "WebSocket sessions open now (rooms and echo endpoints), upgrades waiting on the auth hook included"),
                (Gauge, "wsm_server_rooms", m.rooms, "Rooms with at least one member"),
                (Counter, "wsm_server_messages_in", m.messages_in, "Whole messages received from clients (text and binary, refused ones included)"),
                (Counter, "wsm_server_bytes_in", m.bytes_in, "Payload bytes of the messages received from clients"),
                (Counter, "wsm_server_messages_out", m.messages_out, "Frames handed to session queues (broadcast copies, replies, errors, welcomes)"),
                (Counter, "wsm_server_bytes_out", m.bytes_out, "Payload bytes of the frames handed to session queues"),
                (Counter, "wsm_server_published", m.published, "Publishes the hub took, from clients and from server code"),
                (Counter, "wsm_server_slow_consumer_drops", m.slow_consumer_drops, "Frames dropped because a member's queue was full (policy drop_newest)"),
                (Counter, "wsm_server_slow_consumer_disconnects", m.slow_consumer_disconnects, "Sessions disconnected because their queue was full (policy disconnect, close 1013)"),
                (Counter, "wsm_server_heartbeat_timeouts", m.heartbeat_timeouts, "Sessions disconnected because nothing arrived within the heartbeat timeout"),
                (Counter, "wsm_server_rate_limited", m.rate_limited, "Messages refused with rate_limited"),
                (Counter, "wsm_server_rate_limit_disconnects", m.rate_limit_disconnects, "Sessions closed with 1008 for going on past twice their burst"),
                (Counter, "wsm_server_per_ip_refusals", m.per_ip_refusals, "Upgrades refused with HTTP 429 by the per-address limit"),
                (Counter, "wsm_server_backplane_publish_errors", m.backplane_publish_errors, "Publishes the backplane could not take (other nodes did not get them)"),
                (Counter, "wsm_server_backplane_reconnects", m.backplane_reconnects, "Times the backplane connection was lost and made again"),
                (Counter, "wsm_server_backplane_dropped", m.backplane_dropped, "Messages from other nodes dropped (full inbound buffer, or out of their publisher's order)"),
                (Gauge, "wsm_server_backplane_channels", m.backplane_channels, "Room channels this node is subscribed to in the backplane, as last confirmed"),
                (Counter, "wsm_server_backplane_received", m.backplane_received, "Messages from other nodes fanned out here"),
                (Gauge, "wsm_server_session_queue_high_water", m.session_queue_high_water, "Deepest any session queue has been, in frames"),
                (Gauge, "wsm_server_session_queue_bytes_high_water", m.session_queue_bytes_high_water, "Most payload bytes any session queue has held"),
                (Gauge, "wsm_server_hub_queue_high_water", m.hub_queue_high_water, "Deepest the hub's command queue has been, in commands"),
            ];
            for (kind, name, value, help) in figures {
                figure(&mut e, kind, name, help, value)?;
            }
            histogram(
                &mut e,
                "wsm_server_fanout_latency_seconds",
                "Time the hub took per publish, from taking it off its queue to having offered \
                 it to every member",
                &m.fanout_latency,
            )?;
            Ok(())
        }
    }

    impl Rooms {
        /// Add this server's metrics (the table in [`crate::metrics`]) to `registry`, read at
        /// each scrape. Use it to serve them with your own metrics from one registry (mount it
        /// with [`metrics::mount`](crate::metrics::mount)); a sub-registry with a prefix
        /// prefixes their names. The registry holds the server's counters, not its hub.
        pub fn register_metrics(&self, registry: &mut Registry) {
            registry.register_collector(Box::new(ServerCollector {
                shared: self.shared.clone(),
            }));
        }

        /// An `App::configure` function that serves this server's metrics alone as Prometheus
        /// text at `GET path` (usually `/metrics`), like [`mount`](Self::mount) serves the
        /// rooms. For one page with your own metrics too, use
        /// [`register_metrics`](Self::register_metrics) and
        /// [`metrics::mount`](crate::metrics::mount).
        pub fn mount_metrics(&self, path: &str) -> impl FnOnce(&mut web::ServiceConfig) + 'static {
            let mut registry = Registry::default();
            self.register_metrics(&mut registry);
            crate::metrics::mount(path, Arc::new(registry))
        }
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
