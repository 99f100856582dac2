//! What a rooms server has done, read without asking the hub: the [`ServerMetrics`] snapshot
//! ([`Rooms::metrics`]) and, with the `metrics` feature, the same figures as Prometheus text
//! ([`Rooms::register_metrics`], [`Rooms::mount_metrics`]).
//!
//! Every figure is an atomic that the hub and the sessions already update as they work (or a
//! gauge the hub stores after each command), so a scrape costs a few loads and never waits in
//! the hub's queue behind publishes: a server under load is measured without being slowed, and
//! a hub that is stuck can still be seen. The names, types and meanings of the exported metrics
//! are listed in [`crate::metrics`]; every figure is defined once, in the table of
//! `counters`.
//!
//! [`HubStats`](super::HubStats) ([`Rooms::stats`]) is the other view: it goes through the
//! hub's queue, so it sees every command queued before it (and counts room memberships), which
//! suits tests and admin pages rather than a scraper that runs every few seconds.

use std::sync::atomic::Ordering;

pub use super::counters::ServerMetrics;
pub use super::latency::{LatencyHistogram, LatencySnapshot};

use super::{Rooms, Shared};

impl ServerMetrics {
    /// Every figure of one server now.
    pub(crate) fn of(shared: &Shared) -> Self {
        ServerMetrics::read(&shared.counters, shared.active.load(Ordering::Acquire))
    }
}

impl Rooms {
    /// Every figure this server exports as metrics, read now from atomics (see
    /// [`ServerMetrics`]); it does not wait in the hub's queue, unlike [`stats`](Self::stats).
    pub fn metrics(&self) -> ServerMetrics {
        ServerMetrics::of(&self.shared)
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
        figure, histogram, labelled,
        Kind::{Counter, Gauge},
    };
    use crate::server::counters::{self, FIGURES};
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
            let m = ServerMetrics::of(&self.shared);
            figure(
                &mut e,
                Gauge,
                "wsm_server_sessions",
                "WebSocket sessions open now (rooms and echo endpoints), upgrades waiting on the \
                 auth hook included",
                m.sessions as u64,
            )?;
            for f in FIGURES {
                let kind = match f.kind {
                    counters::Kind::Counter => Counter,
                    counters::Kind::Gauge => Gauge,
                };
                figure(&mut e, kind, f.name, f.help, (f.value)(&m))?;
            }
            let refusals: Vec<(&str, u64)> =
                m.auth_refusals.iter().map(|(k, v)| (*k, *v)).collect();
            labelled(
                &mut e,
                Counter,
                "wsm_server_auth_refusals",
                "Upgrades refused with HTTP 401 for their token, by reason",
                "reason",
                &refusals,
            )?;
            histogram(
                &mut e,
                "wsm_server_fanout_latency_seconds",
                "Time the hub took per publish, from taking it off its queue to having offered \
                 it to every member",
                &m.fanout_latency.buckets,
                m.fanout_latency.count,
                m.fanout_latency.sum,
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
    use std::collections::BTreeSet;

    use crate::server::counters::{Kind, FIGURES};

    /// The table of server metrics in `crate::metrics`' docs lists exactly the figures of the
    /// counter table (plus the sessions gauge and the fan-out histogram), with their types.
    #[test]
    fn the_docs_table_matches_the_counter_table() {
        let documented: BTreeSet<(String, String)> = include_str!("../metrics.rs")
            .lines()
            .filter_map(|l| l.strip_prefix("//! | `wsm_server_"))
            .filter_map(|l| {
                let (name, rest) = l.split_once('`')?;
                let kind = rest.trim_start_matches(" | ").split(' ').next()?;
                Some((format!("wsm_server_{name}"), kind.to_owned()))
            })
            .collect();
        let mut defined: BTreeSet<(String, String)> = FIGURES
            .iter()
            .map(|f| match f.kind {
                Kind::Counter => (format!("{}_total", f.name), "counter".to_owned()),
                Kind::Gauge => (f.name.to_owned(), "gauge".to_owned()),
            })
            .collect();
        defined.insert(("wsm_server_sessions".into(), "gauge".into()));
        defined.insert(("wsm_server_auth_refusals_total".into(), "counter".into()));
        defined.insert((
            "wsm_server_fanout_latency_seconds".into(),
            "histogram".into(),
        ));
        assert_eq!(documented, defined);
    }
}
