//! [`Manager`]: open, name and track many client connections, spread over several arbiters.
//!
//! Each connection's four actors live on one arbiter (a thread with a current-thread runtime),
//! chosen round-robin, so a connection never hops between threads and the load of thousands of
//! connections is shared by every core. New connections are paced at
//! [`ManagerConfig::connect_rate`] per second so that thousands do not reach a server as one
//! burst of upgrades.
//!
//! - this file: the [`Manager`] (tracking, pacing, closing);
//! - `config`: [`ManagerConfig`];
//! - `stats`: [`ManagerStats`] and what connections no longer tracked had counted;
//! - `figures`: the one table of the manager's figures (stats, Prometheus, docs);
//! - `prometheus`: the Prometheus collector (feature `metrics`).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use actix_rt::Arbiter;
use futures_util::stream::{FuturesUnordered, StreamExt};
use tokio::sync::oneshot;

mod config;
mod figures;
#[cfg(feature = "metrics")]
mod prometheus;
mod stats;

use super::{connect, validate_url, Client, ConnectionState};
use crate::config::ClientConfig;
use crate::error::{Error, Result};
pub use config::ManagerConfig;
use stats::Retired;
pub use stats::{ManagerStats, StateCounts};

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
///
/// ```no_run
/// use actix_ws_manager::client::{Manager, ManagerConfig};
///
/// # async fn run() -> Result<(), actix_ws_manager::Error> {
/// let manager = Manager::new(ManagerConfig::default().connect_rate(Some(500.0)))?;
/// for i in 0..1000 {
///     manager.connect(format!("c{i}"), "ws://127.0.0.1:8080/ws").await?;
/// }
/// let stats = manager.stats();
/// tracing::info!(connected = stats.states.connected, "all started");
/// manager.shutdown().await;
/// # Ok(()) }
/// ```
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
    ///
    /// This is how a connection gets a [token provider](ClientConfig::token_provider) of its own
    /// (one identity per connection, say); connections opened with [`connect`](Self::connect)
    /// share the function of [`ManagerConfig::client`], each calling it before each of its own
    /// connect attempts.
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
