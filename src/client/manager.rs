//! [`Manager`]: open, name and track many client connections, spread over several arbiters.
//!
//! Each connection's four actors live on one arbiter (a thread with a current-thread runtime),
//! chosen round-robin, so a connection never hops between threads and the load of thousands of
//! connections is shared by every core. New connections are paced at
//! [`ManagerConfig::connect_rate`] per second so that thousands do not reach a server as one
//! burst of upgrades.
//!
//! ```no_run
//! use actix_ws_manager::client::manager::{Manager, ManagerConfig};
//!
//! # async fn run() -> Result<(), actix_ws_manager::Error> {
//! let manager = Manager::new(ManagerConfig::default().connect_rate(Some(500.0)))?;
//! for i in 0..1000 {
//!     manager.connect(format!("c{i}"), "ws://127.0.0.1:8080/ws").await?;
//! }
//! let stats = manager.stats();
//! tracing::info!(connected = stats.states.connected, "all started");
//! manager.shutdown().await;
//! # Ok(()) }
//! ```

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use actix_rt::Arbiter;
use futures_util::stream::{FuturesUnordered, StreamExt};
use tokio::sync::oneshot;

use super::{connect, validate_url, Client, ConnectionState, Stats};
use crate::config::ClientConfig;
use crate::error::{Error, Result};

/// How a [`Manager`] runs its connections.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct ManagerConfig {
    /// Number of arbiters (threads) the connections are spread over. `None` (the default): one
    /// per core, from [`std::thread::available_parallelism`].
    pub arbiters: Option<usize>,
    /// New connections started per second, at most; `None` means no limit. Default: 1000.
    pub connect_rate: Option<f64>,
    /// The configuration every connection starts from; [`Manager::connect`] sets its `name`.
    pub client: ClientConfig,
    /// How long [`Manager::close_all`] waits for each connection to reach `Closed`.
    /// Default: 5 s.
    pub close_timeout: Duration,
}

impl Default for ManagerConfig {
    fn default() -> Self {
        Self {
            arbiters: None,
            connect_rate: Some(1000.0),
            client: ClientConfig::default(),
            close_timeout: Duration::from_secs(5),
        }
    }
}

impl ManagerConfig {
    /// Set [`arbiters`](Self::arbiters).
    pub fn arbiters(mut self, arbiters: Option<usize>) -> Self {
        self.arbiters = arbiters;
        self
    }

    /// Set [`connect_rate`](Self::connect_rate) (connections per second).
    pub fn connect_rate(mut self, per_second: Option<f64>) -> Self {
        self.connect_rate = per_second;
        self
    }

    /// Set [`client`](Self::client).
    pub fn client(mut self, client: ClientConfig) -> Self {
        self.client = client;
        self
    }

    /// Set [`close_timeout`](Self::close_timeout).
    pub fn close_timeout(mut self, timeout: Duration) -> Self {
        self.close_timeout = timeout;
        self
    }

    /// Check the values: at least one arbiter, a positive finite rate, a valid client config.
    pub fn validate(&self) -> Result<()> {
        if self.arbiters == Some(0) {
            return Err(Error::Config("arbiters must be at least 1".into()));
        }
        if let Some(rate) = self.connect_rate {
            // At least one connection a year: a smaller rate rounds to "never".
            let min = 1.0 / crate::config::MAX_CONFIG_DURATION.as_secs_f64();
            if !(rate.is_finite() && rate >= min) {
                return Err(Error::Config(format!(
                    "connect_rate must be a positive number of connections per second (at least \
                     one a year), not {rate}"
                )));
            }
        }
        crate::config::check_duration("close_timeout", self.close_timeout)?;
        self.client.validate()
    }
}

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
    /// [`Overflow::Backpressure`](super::Overflow::Backpressure) subscriber, or the Router),
    /// all connections.
    pub read_pauses: u64,
    /// What the client side of this process keeps alive (clients, actors, subscriptions),
    /// process-wide: see [`census`](super::census).
    pub live: super::Census,
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
    fn add(&mut self, state: &ConnectionState, s: &Stats) {
        self.connections += 1;
        self.states.add(state);
        self.messages_in += s.messages_in;
        self.messages_out += s.messages_out;
        self.bytes_in += s.bytes_in;
        self.bytes_out += s.bytes_out;
        self.reconnects += s.reconnects;
        self.dropped += s.dropped;
        self.dropped_incoming += s.dropped_incoming;
        self.read_pauses += s.read_pauses;
    }

    /// Sum every connection in `clients`, with the RTT figures of the connected ones.
    fn of<'a>(clients: impl Iterator<Item = &'a Client>) -> Self {
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
struct Retired {
    messages_in: AtomicU64,
    messages_out: AtomicU64,
    bytes_in: AtomicU64,
    bytes_out: AtomicU64,
    reconnects: AtomicU64,
    dropped: AtomicU64,
    dropped_incoming: AtomicU64,
    read_pauses: AtomicU64,
}

impl Retired {
    /// Keep what `client` has counted so far; it is leaving the tracked map now.
    fn retire(&self, client: &Client) {
        let s = client.stats();
        for (total, n) in [
            (&self.messages_in, s.messages_in),
            (&self.messages_out, s.messages_out),
            (&self.bytes_in, s.bytes_in),
            (&self.bytes_out, s.bytes_out),
            (&self.reconnects, s.reconnects),
            (&self.dropped, s.dropped),
            (&self.dropped_incoming, s.dropped_incoming),
            (&self.read_pauses, s.read_pauses),
        ] {
            total.fetch_add(n, Ordering::Relaxed);
        }
    }
}

/// Opens, names and tracks many [`Client`] connections, spread across arbiters, with a
/// connect-rate limit.
///
/// The manager holds a handle to every connection it tracks, so they live until it closes them
/// ([`close`](Self::close), [`close_all`](Self::close_all), [`shutdown`](Self::shutdown)). A
/// connection that ends otherwise, above all one that reaches `Failed` (a final close code, the
/// attempt limit), is forgotten: its name is free again at once, and a failed one is counted in
/// [`ManagerStats::forgotten`]. So the manager only ever tracks live connections.
///
/// Methods take `&self`, so a manager can be shared (in an `Arc`, or by reference) by tasks
/// that open connections concurrently; the rate limit holds across all of them. Dropping the
/// manager stops its arbiters, which stops every connection's actors without a close
/// handshake; call [`shutdown`](Self::shutdown) to close them cleanly first.
pub struct Manager {
    config: ManagerConfig,
    arbiters: Vec<Arbiter>,
    next_arbiter: AtomicUsize,
    /// Every tracked connection, with the index of the arbiter its actors run on. Shared with
    /// the watcher of each connection, which removes it when it fails.
    clients: Arc<Mutex<HashMap<String, (Client, usize)>>>,
    /// Connections forgotten after failing.
    forgotten: Arc<AtomicU64>,
    /// What connections no longer tracked had counted (for the exported counters).
    retired: Arc<Retired>,
    /// The earliest instant the next connection may start (the pacer of the rate limit).
    next_slot: Mutex<Instant>,
}

impl std::fmt::Debug for Manager {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Manager")
            .field("arbiters", &self.arbiters.len())
            .field("connections", &self.len())
            .field("connect_rate", &self.config.connect_rate)
            .finish()
    }
}

impl Manager {
    /// Start the manager's arbiters. Must be called inside a running actix system (an
    /// `#[actix_rt::main]` or `#[actix_rt::test]` function); fails with [`Error::Config`]
    /// otherwise, with [`Error::Config`] on a bad config, and with [`Error::Io`] when a thread
    /// cannot be started.
    pub fn new(config: ManagerConfig) -> Result<Self> {
        config.validate()?;
        if !actix_rt::System::is_registered() {
            return Err(Error::Config(
                "Manager::new must be called inside a running actix system".into(),
            ));
        }
        let n = config.arbiters.unwrap_or_else(|| {
            std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(1)
        });
        let mut arbiters = Vec::with_capacity(n);
        for _ in 0..n {
            match Arbiter::try_new() {
                Ok(a) => arbiters.push(a),
                Err(e) => {
                    for a in &arbiters {
                        a.stop();
                    }
                    return Err(Error::Io(e));
                }
            }
        }
        tracing::debug!(arbiters = n, rate = ?config.connect_rate, "manager started");
        Ok(Self {
            config,
            arbiters,
            next_arbiter: AtomicUsize::new(0),
            clients: Arc::new(Mutex::new(HashMap::new())),
            forgotten: Arc::new(AtomicU64::new(0)),
            retired: Arc::new(Retired::default()),
            next_slot: Mutex::new(Instant::now()),
        })
    }

    /// The number of arbiters connections are spread over.
    pub fn arbiter_count(&self) -> usize {
        self.arbiters.len()
    }

    /// The configuration the manager runs with.
    pub fn config(&self) -> &ManagerConfig {
        &self.config
    }

    fn lock_clients(&self) -> std::sync::MutexGuard<'_, HashMap<String, (Client, usize)>> {
        match self.clients.lock() {
            Ok(g) => g,
            Err(poisoned) => poisoned.into_inner(),
        }
    }

    /// Wait for this connection's turn under the rate limit.
    async fn pace(&self) {
        let Some(rate) = self.config.connect_rate else {
            return;
        };
        // `validate` keeps the gap within a year; saturate anyway rather than panic.
        let gap = Duration::try_from_secs_f64(1.0 / rate).unwrap_or(Duration::MAX);
        let slot = {
            let mut next = match self.next_slot.lock() {
                Ok(g) => g,
                Err(poisoned) => poisoned.into_inner(),
            };
            let slot = (*next).max(Instant::now());
            *next = slot.checked_add(gap).unwrap_or(slot);
            slot
        };
        tokio::time::sleep_until(slot.into()).await;
    }

    /// Open a connection named `name` to `url` with the manager's client config, once the rate
    /// limit allows, on the next arbiter. Returns the handle at once after starting it (the
    /// connection is made in the background; see [`Client::wait_connected`]).
    ///
    /// Fails with [`Error::InvalidUrl`] before waiting for the rate limit, [`Error::NameTaken`]
    /// when a tracked connection already has `name`, and [`Error::Mailbox`] when the arbiters
    /// have stopped.
    pub async fn connect(&self, name: impl Into<String>, url: &str) -> Result<Client> {
        self.connect_with(name, url, self.config.client.clone())
            .await
    }

    /// [`connect`](Self::connect) with a config of its own (its `name` is replaced by `name`).
    pub async fn connect_with(
        &self,
        name: impl Into<String>,
        url: &str,
        config: ClientConfig,
    ) -> Result<Client> {
        let name = name.into();
        validate_url(url)?;
        config.validate()?;
        if self.is_taken(&name) {
            return Err(Error::NameTaken(name));
        }
        self.pace().await;

        let i = self.next_arbiter.fetch_add(1, Ordering::Relaxed) % self.arbiters.len();
        let (tx, rx) = oneshot::channel();
        let config = config.name(name.clone());
        let url_owned = url.to_owned();
        let spawned = self.arbiters[i].spawn_fn(move || {
            // The receiver may be gone if the caller gave up; the client then runs untracked
            // until its arbiter stops.
            let _ = tx.send(connect(&url_owned, config));
        });
        let stopped = || Error::Mailbox("the manager's arbiter has stopped".into());
        if !spawned {
            return Err(stopped());
        }
        let client = rx.await.map_err(|_| stopped())??;

        let inserted = {
            let mut clients = self.lock_clients();
            match clients.get(&name) {
                Some((c, _)) if !c.state().is_terminal() => false,
                _ => {
                    let old = clients.insert(name.clone(), (client.clone(), i));
                    if let Some((c, _)) = &old {
                        self.retired.retire(c);
                    }
                    // An ended connection under this name is replaced (its watcher may not have
                    // run yet); a failed one counts as forgotten here, exactly once.
                    if old.is_some_and(|(c, _)| matches!(c.state(), ConnectionState::Failed { .. }))
                    {
                        self.forgotten.fetch_add(1, Ordering::Relaxed);
                    }
                    true
                }
            }
        };
        if !inserted {
            // Another task took the name while this one waited for its turn.
            client.close().await;
            return Err(Error::NameTaken(name));
        }
        // Forget the connection when it ends (`close` removes it itself); count it when it
        // failed.
        let (watched, clients, forgotten, retired) = (
            client.clone(),
            self.clients.clone(),
            self.forgotten.clone(),
            self.retired.clone(),
        );
        let watcher = self.arbiters[i].spawn(async move {
            let end = watched.closed().await;
            let mut clients = clients.lock().unwrap_or_else(|e| e.into_inner());
            if clients.get(&name).is_some_and(|(c, _)| c.same(&watched)) {
                clients.remove(&name);
                retired.retire(&watched);
                if let ConnectionState::Failed { reason } = end {
                    forgotten.fetch_add(1, Ordering::Relaxed);
                    tracing::debug!(name, reason, "failed connection forgotten");
                }
            }
        });
        if !watcher {
            return Err(stopped());
        }
        tracing::trace!(arbiter = i, "connection started");
        Ok(client)
    }

    /// The handle of the connection named `name`.
    pub fn get(&self, name: &str) -> Option<Client> {
        self.lock_clients().get(name).map(|(c, _)| c.clone())
    }

    /// The names of every tracked connection, in no particular order.
    pub fn names(&self) -> Vec<String> {
        self.lock_clients().keys().cloned().collect()
    }

    /// Every tracked connection's handle, in no particular order.
    pub fn clients(&self) -> Vec<Client> {
        self.lock_clients()
            .values()
            .map(|(c, _)| c.clone())
            .collect()
    }

    /// Run `task` on the arbiter (thread) of the connection named `name`, next to its actors,
    /// so that a task driving one connection never hops threads. Returns `false` when no
    /// connection has that name or its arbiter has stopped.
    pub fn spawn_on<F>(&self, name: &str, task: F) -> bool
    where
        F: std::future::Future<Output = ()> + Send + 'static,
    {
        let i = match self.lock_clients().get(name) {
            Some((_, i)) => *i,
            None => return false,
        };
        self.arbiters[i].spawn(task)
    }

    /// The number of tracked connections (every state).
    pub fn len(&self) -> usize {
        self.lock_clients().len()
    }

    /// Whether no connection is tracked.
    pub fn is_empty(&self) -> bool {
        self.lock_clients().is_empty()
    }

    /// Counters summed over every tracked connection, and connections by state. Reads atomics
    /// only; no actor is messaged.
    pub fn stats(&self) -> ManagerStats {
        let mut total = ManagerStats::of(self.lock_clients().values().map(|(c, _)| c));
        total.forgotten = self.forgotten.load(Ordering::Relaxed);
        total.live = super::census();
        total
    }

    /// Whether `name` belongs to a tracked connection that has not ended.
    fn is_taken(&self, name: &str) -> bool {
        self.lock_clients()
            .get(name)
            .is_some_and(|(c, _)| !c.state().is_terminal())
    }

    /// Close the connection named `name` (code 1000), wait up to
    /// [`ManagerConfig::close_timeout`] for it to reach `Closed`, and stop tracking it. Returns
    /// `false` when no connection has that name.
    pub async fn close(&self, name: &str) -> bool {
        let client = {
            let mut clients = self.lock_clients();
            let client = clients.remove(name);
            if let Some((c, _)) = &client {
                self.retired.retire(c);
            }
            client
        };
        match client {
            Some((c, _)) => {
                close_and_wait(&c, self.config.close_timeout).await;
                true
            }
            None => false,
        }
    }

    /// Close every tracked connection concurrently, wait up to
    /// [`ManagerConfig::close_timeout`] for each to finish, and stop tracking them. Returns how
    /// many were closed.
    pub async fn close_all(&self) -> usize {
        let clients: Vec<Client> = {
            let mut tracked = self.lock_clients();
            let clients: Vec<Client> = tracked.drain().map(|(_, (c, _))| c).collect();
            for c in &clients {
                self.retired.retire(c);
            }
            clients
        };
        let timeout = self.config.close_timeout;
        let mut closing: FuturesUnordered<_> =
            clients.iter().map(|c| close_and_wait(c, timeout)).collect();
        while closing.next().await.is_some() {}
        tracing::debug!(closed = clients.len(), "manager closed all connections");
        clients.len()
    }

    /// [`close_all`](Self::close_all), then stop the arbiters.
    pub async fn shutdown(self) -> usize {
        let closed = self.close_all().await;
        for a in &self.arbiters {
            a.stop();
        }
        closed
    }
}

impl Drop for Manager {
    fn drop(&mut self) {
        for a in &self.arbiters {
            a.stop();
        }
    }
}

/// Close `client` and wait, up to `timeout`, until it is `Closed` or `Failed`.
async fn close_and_wait(client: &Client, timeout: Duration) {
    if tokio::time::timeout(timeout, client.close()).await.is_err() {
        tracing::warn!(name = client.name(), state = ?client.state(), "close timed out");
    }
}

#[cfg(feature = "metrics")]
mod prometheus {
    use std::collections::HashMap;
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::sync::{Arc, Mutex, Weak};

    use prometheus_client::collector::Collector;
    use prometheus_client::encoding::DescriptorEncoder;
    use prometheus_client::registry::Registry;

    use super::{Client, Manager, ManagerStats, Retired};
    use crate::metrics::{
        figure, gauge, labelled_gauge,
        Kind::{Counter, Gauge},
    };

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
            let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
            // The tracked sum and the retired totals under one lock: a connection leaving the
            // map is retired under it too, so it is counted exactly once.
            let (m, r) = {
                let clients = clients.lock().unwrap_or_else(|e| e.into_inner());
                let m = ManagerStats::of(clients.values().map(|(c, _)| c));
                let r = &self.retired;
                let r = [
                    get(&r.messages_in),
                    get(&r.bytes_in),
                    get(&r.messages_out),
                    get(&r.bytes_out),
                    get(&r.reconnects),
                    get(&r.dropped),
                    get(&r.dropped_incoming),
                    get(&r.read_pauses),
                ];
                (m, r)
            };
            let s = &m.states;
            labelled_gauge(
                &mut e,
                "wsm_client_connections",
                "Tracked connections by state",
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
            #[rustfmt::skip]
            let figures = [
                (Counter, "wsm_client_messages_in", m.messages_in + r[0], "Messages received"),
                (Counter, "wsm_client_bytes_in", m.bytes_in + r[1], "Payload bytes received"),
                (Counter, "wsm_client_messages_out", m.messages_out + r[2], "Messages written to sockets"),
                (Counter, "wsm_client_bytes_out", m.bytes_out + r[3], "Payload bytes written to sockets"),
                (Counter, "wsm_client_reconnects", m.reconnects + r[4], "Successful reconnections"),
                (Counter, "wsm_client_dropped", m.dropped + r[5], "Outgoing messages dropped (outbox policy, lost connections)"),
                (Counter, "wsm_client_dropped_incoming", m.dropped_incoming + r[6], "Incoming messages dropped for full subscribers (channels or actor mailboxes)"),
                (Counter, "wsm_client_read_pauses", m.read_pauses + r[7], "Times a connection paused reading because a backpressure subscriber or its router was behind"),
                (Counter, "wsm_client_failed_connections", get(&self.forgotten), "Connections that reached Failed and were forgotten"),
                (Gauge, "wsm_client_rtt_connections", m.rtt_connections as u64, "Connected connections with a measured round-trip time"),
            ];
            for (kind, name, value, help) in figures {
                figure(&mut e, kind, name, help, value)?;
            }
            if let (Some(mean), Some(max)) = (m.smoothed_rtt_mean, m.smoothed_rtt_max) {
                let help = "Mean smoothed round-trip time of the connected connections";
                let name = "wsm_client_smoothed_rtt_mean_seconds";
                gauge(&mut e, name, help, mean.as_secs_f64())?;
                let help = "Largest smoothed round-trip time of the connected connections";
                let name = "wsm_client_smoothed_rtt_max_seconds";
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
}
