//! [`ManagerConfig`]: how a [`Manager`](super::Manager) runs its connections.

use std::time::Duration;

use crate::config::ClientConfig;
use crate::error::{Error, Result};

/// How a [`Manager`](super::Manager) runs its connections.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct ManagerConfig {
    /// Number of arbiters (threads) the connections are spread over. `None` (the default): one
    /// per core, from [`std::thread::available_parallelism`].
    pub arbiters: Option<usize>,
    /// New connections started per second, at most; `None` means no limit. Default: 1000.
    pub connect_rate: Option<f64>,
    /// The configuration every connection starts from; [`Manager::connect`](super::Manager::connect) sets its `name`.
    /// Its [token provider](ClientConfig::token_provider), if any, is shared by those
    /// connections (each calls it for itself); give one a provider of its own with
    /// [`Manager::connect_with`](super::Manager::connect_with).
    pub client: ClientConfig,
    /// How long [`Manager::close_all`](super::Manager::close_all) waits for each connection to reach `Closed`.
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
