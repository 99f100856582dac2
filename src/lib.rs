//! actix-ws-manager keeps many WebSocket connections alive with actix actors: self-healing
//! clients that reconnect, heartbeat, resubscribe and route typed messages, and rooms sessions
//! that mount into any actix-web app.
//!
//! # Layout
//!
//! - [`error`]: the one [`Error`] enum; each variant says when it happens.
//! - [`envelope`]: the JSON wire envelope (`type`, `data`, `id`, `room`, `timestamp`) and the
//!   [`WireMessage`] trait that binds a Rust type to a wire `type`.
//! - [`protocol`]: the rooms protocol (join, leave, publish, echo, ping) as typed messages.
//! - [`config`]: client configuration and the heartbeat, reconnect and outbox policies.
//! - `client` (feature `client`): [`client::connect`] returns a cheap, cloneable
//!   [`client::Client`] handle to four actors on the caller's arbiter: the *Connection* (owns the
//!   awc socket, frames to envelopes, bounded outbox), the *Heartbeat* (pings, round-trip time,
//!   dead-peer detection), the *ReconnectSupervisor* (backoff with jitter, give-up policy,
//!   on-connect replay) and the *Router* (typed subscriptions, request/reply, state events).
//! - `server` (feature `server`): rooms sessions for actix-web. [`server::Rooms`] mounts the
//!   rooms and echo routes into any `App` and publishes from HTTP handlers; [`server::serve`]
//!   runs them standalone. One *Session* actor per client (protocol, membership, heartbeat; the
//!   only code on the actix-ws transport) writes through a bounded queue; the *Hub* actor holds
//!   rooms and broadcasts each message encoded once.
//!
//! # Feature flags
//!
//! - `client` (default): the awc-based client.
//! - `server` (default): the actix-web server side (actix-ws).
//! - `cli` (default): the `wsm` binary (clap, tracing-subscriber).
#![warn(missing_docs)]

pub mod config;
pub mod envelope;
pub mod error;
pub mod protocol;

#[cfg(feature = "client")]
pub mod client;

#[cfg(feature = "server")]
pub mod server;

pub use bytes::Bytes;
pub use bytestring::ByteString;
pub use envelope::{Envelope, Outgoing, WireMessage};
pub use error::{Error, Result};
