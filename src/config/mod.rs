//! Configuration: [`ClientConfig`] and the policies it is made of ([`HeartbeatConfig`],
//! [`ReconnectPolicy`], [`OutboxPolicy`]), and [`ServerConfig`] (with [`SlowConsumerPolicy`]) for
//! the rooms server.
//!
//! Every struct has a `Default` that is safe for a long-running service, documented field by
//! field, and builder-style setters; they are `#[non_exhaustive]` (build them from `default()`
//! and the setters, or assign fields), so a new knob is not a breaking change. Values are checked
//! by `validate()` when a client or server starts, so a bad value is an [`Error::Config`] naming
//! the field, never a panic.
//!
//! # Long durations
//!
//! Every duration a configuration holds is used with at most [`MAX_CONFIG_DURATION`] (365 days):
//! longer ones would overflow timer arithmetic, and no timer of a live connection needs more.
//! What a longer value means depends on whether the setting can be turned off:
//!
//! - **A setting that can be turned off is refused**: the client's durations (the heartbeat has
//!   [`HeartbeatConfig::disabled`], reconnection has [`ReconnectPolicy::never`]), the Manager's
//!   and the Redis backplane's timeouts. `validate()` answers [`Error::Config`] naming the field,
//!   so "never" is said by turning the feature off, not by a huge number.
//! - **A server setting that is always on is capped**: [`ServerConfig`]'s heartbeat interval and
//!   timeout, close timeout and TCP user timeout accept any value, and the server runs with
//!   365 days in place of a longer one, which is "never" for a heartbeat or a timeout. The
//!   server's heartbeat and close bound cannot be turned off (a session without them could hang
//!   forever), so `Duration::MAX` is the way to say "as late as possible" there.
//!
//! Both come from the two functions below, so the limit and its wording live in one place.
//!
//! # Layout
//!
//! - `client.rs`: [`ClientConfig`], [`HeartbeatConfig`], [`PingMode`], [`ReconnectPolicy`],
//!   [`OutboxPolicy`], [`Overflow`].
//! - `token.rs`: [`TokenProvider`], the client's source of bearer tokens.
//! - `history.rs`: [`HistoryConfig`], the server's room history.
//! - [`JwtConfig`] (feature `jwt`) is defined with the server, which checks tokens with it.
//! - `server.rs`: [`ServerConfig`], [`RateLimit`], [`SlowConsumerPolicy`] and the server's
//!   defaults. The room name rule it applies is [`protocol::is_valid_room`](crate::protocol::is_valid_room).

use std::time::Duration;

use crate::error::{Error, Result};

mod client;
mod history;
mod server;
mod token;

/// JWT authentication for the rooms server (feature `jwt`); it lives with the server, which
/// checks tokens with it.
#[cfg(feature = "jwt")]
pub use crate::server::JwtConfig;
/// permessage-deflate settings, for [`ServerConfig::deflate`] (and the client, when it lands).
pub use crate::ws::deflate::DeflateConfig;
pub use client::{
    ClientConfig, HeartbeatConfig, OutboxPolicy, Overflow, PingMode, ReconnectPolicy,
    DEFAULT_MAX_MESSAGE_SIZE,
};
pub use history::{
    HistoryConfig, DEFAULT_HISTORY_MAX_BYTES, DEFAULT_HISTORY_SIZE, DEFAULT_HISTORY_TOTAL_BYTES,
    DEFAULT_HISTORY_TTL, DEFAULT_RECOVER_LIMIT,
};
pub use server::{
    RateLimit, ServerConfig, SlowConsumerPolicy, DEFAULT_CLOSE_TIMEOUT, DEFAULT_HUB_QUEUE,
    DEFAULT_MAX_ROOMS_PER_SESSION, DEFAULT_MAX_ROOM_NAME_LEN, DEFAULT_MAX_SESSIONS,
    DEFAULT_PRESENCE_LIST_LIMIT, DEFAULT_SERVER_HEARTBEAT_INTERVAL,
    DEFAULT_SERVER_HEARTBEAT_TIMEOUT, DEFAULT_SERVER_MAX_MESSAGE_SIZE, DEFAULT_SESSION_QUEUE,
    DEFAULT_SESSION_QUEUE_BYTES, MAX_PRESENCE_LIST_LIMIT, MAX_QUEUE,
};
pub(crate) use token::bearer;
pub use token::TokenProvider;

/// The longest duration a configuration uses: 365 days. Longer ones would overflow timer
/// arithmetic; see the module's "Long durations" for what each side does with them.
pub const MAX_CONFIG_DURATION: Duration = Duration::from_secs(365 * 24 * 3600);

/// `Error::Config` naming `field` when `value` is above [`MAX_CONFIG_DURATION`]: the rule for
/// settings that can be turned off.
pub(crate) fn check_duration(field: &str, value: Duration) -> Result<()> {
    if value > MAX_CONFIG_DURATION {
        return Err(Error::Config(format!(
            "{field} must be at most 365 days, not {value:?}"
        )));
    }
    Ok(())
}

/// `value`, or [`MAX_CONFIG_DURATION`] when it is longer: the rule for server settings that are
/// always on.
pub(crate) fn cap_duration(value: Duration) -> Duration {
    value.min(MAX_CONFIG_DURATION)
}
