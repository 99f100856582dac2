//! A manager's figures as Prometheus families (feature `metrics`), read at each scrape through
//! the table in [`figures`](super::figures).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};

use prometheus_client::collector::Collector;
use prometheus_client::encoding::DescriptorEncoder;
use prometheus_client::registry::Registry;

use super::figures::{CONNECTIONS, FIGURES, RTT_CONNECTIONS, RTT_MAX, RTT_MEAN};
use super::stats::{ManagerStats, Retired};
use super::{Client, Manager};
use crate::metrics::{figure, gauge, labelled, Kind};

/// Reads a manager's connections at each scrape. It holds the tracked map weakly, so a
/// registry that outlives the manager keeps no connection alive (it then exports nothing).
struct ManagerCollector {
    clients: Weak<Mutex<HashMap<String, (Client, usize)>>>,
    forgotten: Arc<AtomicU64>,
    retired: Arc<Retired>,
}

impl std::fmt::Debug for ManagerCollector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ManagerCollector").finish_non_exhaustive()
    }
}

impl Collector for ManagerCollector {
    fn encode(&self, mut e: DescriptorEncoder) -> std::fmt::Result {
        let Some(clients) = self.clients.upgrade() else {
            return Ok(());
        };
        // The tracked sum and the retired totals under one lock: a connection leaving the map
        // is retired under it too, so it is counted exactly once.
        let mut m = {
            let clients = clients.lock().unwrap_or_else(|e| e.into_inner());
            let mut m = ManagerStats::of(clients.values().map(|(c, _)| c));
            self.retired.add_to(&mut m);
            m
        };
        m.forgotten = self.forgotten.load(Ordering::Relaxed);
        let s = &m.states;
        let (name, _, help, _) = CONNECTIONS;
        labelled(
            &mut e,
            Kind::Gauge,
            name,
            help,
            "state",
            &[
                ("connecting", s.connecting as u64),
                ("connected", s.connected as u64),
                ("disconnected", s.disconnected as u64),
                ("reconnecting", s.reconnecting as u64),
                ("failed", s.failed as u64),
                ("closed", s.closed as u64),
            ],
        )?;
        for f in &FIGURES {
            figure(&mut e, Kind::Counter, f.name, f.help, *(f.total)(&mut m))?;
        }
        let (name, _, help, _) = RTT_CONNECTIONS;
        figure(&mut e, Kind::Gauge, name, help, m.rtt_connections as u64)?;
        if let (Some(mean), Some(max)) = (m.smoothed_rtt_mean, m.smoothed_rtt_max) {
            let (name, _, help, _) = RTT_MEAN;
            gauge(&mut e, name, help, mean.as_secs_f64())?;
            let (name, _, help, _) = RTT_MAX;
            gauge(&mut e, name, help, max.as_secs_f64())?;
        }
        Ok(())
    }
}

impl Manager {
    /// Add this manager's aggregate figures (the client table in [`crate::metrics`]) to
    /// `registry`, read at each scrape: connections by state, messages and bytes in and
    /// out, reconnects, drops, failed connections and round-trip times, so that a service
    /// following many feeds can graph them. Unlike [`stats`](Self::stats), the counters
    /// keep what connections no longer tracked had counted, so they never go down. The
    /// registry holds the manager's map weakly: after the manager is dropped it exports
    /// nothing from it.
    pub fn register_metrics(&self, registry: &mut Registry) {
        registry.register_collector(Box::new(ManagerCollector {
            clients: Arc::downgrade(&self.clients),
            forgotten: self.forgotten.clone(),
            retired: self.retired.clone(),
        }));
    }
}
