//! [`HistoryConfig`]: how much of each room's recent publications a server keeps, so that a
//! client coming back after a reconnect gets what it missed (`join` with `since`) and any client
//! can read a room's recent messages (`history`).

use std::time::Duration;

use super::check_duration;
use crate::error::{Error, Result};

/// Default publications kept per room: 100.
pub const DEFAULT_HISTORY_SIZE: usize = 100;
/// Default payload bytes kept per room: 1 MiB.
pub const DEFAULT_HISTORY_MAX_BYTES: usize = 1024 * 1024;
/// Default time a room's history is kept after its last publication: 120 s (Socket.IO's and
/// Ably's recovery window is 2 minutes too).
pub const DEFAULT_HISTORY_TTL: Duration = Duration::from_secs(120);
/// Default most publications one recovery or one `history` answer carries: 300.
pub const DEFAULT_RECOVER_LIMIT: usize = 300;
/// Default bytes all rooms' histories of one server may hold together: 64 MiB.
pub const DEFAULT_HISTORY_TOTAL_BYTES: usize = 64 * 1024 * 1024;

/// Room history: every room keeps its latest publications, each with its stream position
/// (`offset`, counted from 1 per room, and `epoch`, which changes whenever the room's history
/// is lost), so that nothing published within the window is lost to a member that reconnects.
///
/// Every bound is enforced at each publication: `size` and `max_bytes` per room, and
/// `total_bytes` for all rooms together, past which the oldest publications of the least
/// recently published rooms go first. A room's history is forgotten `ttl` after its last
/// publication; while the room has members its position (offset and epoch) is kept, so a
/// member that missed nothing is still told `recovered:true`. The stored publication is the
/// frame the hub already encoded and shares with the members: no second copy is made.
///
/// `#[non_exhaustive]`: build it from [`HistoryConfig::default`] and the setters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct HistoryConfig {
    /// Most publications kept per room. Default: 100 ([`DEFAULT_HISTORY_SIZE`]).
    pub size: usize,
    /// Most payload bytes kept per room (a single publication bigger than this is not kept).
    /// Default: 1 MiB ([`DEFAULT_HISTORY_MAX_BYTES`]).
    pub max_bytes: usize,
    /// How long a room's history is kept after its last publication, also after its last
    /// member left (so a lone member can come back). Default: 120 s
    /// ([`DEFAULT_HISTORY_TTL`]); at most 365 days (turn history off to keep none).
    pub ttl: Duration,
    /// Most publications a recovery sends (more missed: `recovered:false`, reason
    /// `too_many`), and the default and cap of a `history` request's `limit`. Default: 300
    /// ([`DEFAULT_RECOVER_LIMIT`]).
    pub recover_limit: usize,
    /// Most bytes the histories of all rooms hold together (publications and each room's
    /// bookkeeping). Default: 64 MiB ([`DEFAULT_HISTORY_TOTAL_BYTES`]).
    pub total_bytes: usize,
}

impl Default for HistoryConfig {
    fn default() -> Self {
        Self {
            size: DEFAULT_HISTORY_SIZE,
            max_bytes: DEFAULT_HISTORY_MAX_BYTES,
            ttl: DEFAULT_HISTORY_TTL,
            recover_limit: DEFAULT_RECOVER_LIMIT,
            total_bytes: DEFAULT_HISTORY_TOTAL_BYTES,
        }
    }
}

impl HistoryConfig {
    /// Keep at most `publications` per room.
    pub fn size(mut self, publications: usize) -> Self {
        self.size = publications;
        self
    }

    /// Keep at most `bytes` of publications per room.
    pub fn max_bytes(mut self, bytes: usize) -> Self {
        self.max_bytes = bytes;
        self
    }

    /// Forget a room's history `ttl` after its last publication.
    pub fn ttl(mut self, ttl: Duration) -> Self {
        self.ttl = ttl;
        self
    }

    /// Send at most `publications` in one recovery or `history` answer.
    pub fn recover_limit(mut self, publications: usize) -> Self {
        self.recover_limit = publications;
        self
    }

    /// Hold at most `bytes` of history for all rooms together.
    pub fn total_bytes(mut self, bytes: usize) -> Self {
        self.total_bytes = bytes;
        self
    }

    /// Check every value: each bound at least 1, `ttl` above zero and at most 365 days.
    pub fn validate(&self) -> Result<()> {
        for (name, value) in [
            ("history size", self.size),
            ("history max_bytes", self.max_bytes),
            ("history recover_limit", self.recover_limit),
            ("history total_bytes", self.total_bytes),
        ] {
            if value == 0 {
                return Err(Error::Config(format!("{name} must be at least 1")));
            }
        }
        if self.ttl.is_zero() {
            return Err(Error::Config("history ttl must be above zero".into()));
        }
        check_duration("history ttl", self.ttl)
    }
}
