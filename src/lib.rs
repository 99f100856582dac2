//! actix-ws-manager keeps many WebSocket connections alive with actix actors: self-healing
//! clients that reconnect, heartbeat, resubscribe and route typed messages, and rooms sessions
//! that mount into any actix-web app.
//!
//! A rooms server and a self-healing client in one program, with a message type of your own
//! (this example runs as a doctest):
//!
//! ```
//! use std::time::Duration;
//! use actix_ws_manager::config::{ClientConfig, ServerConfig};
//! use actix_ws_manager::{client, server, WireMessage};
//! use serde::{Deserialize, Serialize};
//!
//! /// A message type of your own, bound to its wire name.
//! #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
//! struct Trade { symbol: String, price: f64 }
//! impl WireMessage for Trade { const TYPE: &'static str = "trade"; }
//!
//! fn main() -> Result<(), actix_ws_manager::Error> {
//!     actix_rt::System::new().block_on(async {
//!         // A rooms server on a free port (or mount `Rooms` into your own actix-web App).
//!         let server = server::serve("127.0.0.1:0", "/ws", "/echo", ServerConfig::default())?;
//!
//!         // A self-healing client: it reconnects, and rejoins "lobby" after every reconnect.
//!         let client = client::connect(&server.url(), ClientConfig::default())?;
//!         let mut trades = client.subscribe::<Trade>(16);
//!         client.wait_connected(Duration::from_secs(5)).await?;
//!         client.join("lobby").await?;
//!
//!         // Every member of "lobby" (this client too) receives the Trade as a Trade.
//!         let trade = Trade { symbol: "ACME".into(), price: 12.5 };
//!         client.publish("lobby", &trade).await?;
//!         let got = actix_rt::time::timeout(Duration::from_secs(5), trades.recv()).await;
//!         let got = got.ok().flatten().ok_or(actix_ws_manager::Error::ClientClosed)?;
//!         assert_eq!((got.room.as_deref(), got.data), (Some("lobby"), trade));
//!
//!         client.close().await;
//!         server.shutdown().await
//!     })
//! }
//! ```
//!
//! More in `examples/` (`multi_room_client`, `embed_in_actix_web`, `feed_follower`) and in the
//! `wsm` tool (`wsm serve`, `wsm connect`, `wsm load`).
//!
//! # Layout
//!
//! One concern per module; a `mod.rs` is docs plus re-exports. What is public is listed here;
//! everything else is crate-internal.
//!
//! - [`error`]: the one [`Error`] enum; each variant says when it happens.
//! - [`envelope`]: the JSON wire envelope (`type`, `data`, `id`, `room`, `timestamp`) and the
//!   [`WireMessage`] trait that binds a Rust type to a wire `type`.
//! - [`protocol`]: the rooms protocol (join, leave, publish, echo, ping) as typed messages, and
//!   the room and event name rules.
//! - [`config`]: `ClientConfig` (with the heartbeat, reconnect and outbox policies, and the
//!   `TokenProvider` that keeps a session authenticated) and `ServerConfig`; the one rule for
//!   long durations is on the module.
//! - [`ws`]: the frame layer both sides use: a frame-header guard in front of actix-http's
//!   codec (an oversize frame is refused at its header, 1009), fragment reassembly with the size
//!   cap, incremental UTF-8 checks (1007), and one close-code policy.
//! - [`tls`] (feature `rustls`): rustls configurations for both sides, certificate errors in
//!   words.
//! - `client` (feature `client`): [`client::connect`] returns a cheap, cloneable
//!   [`client::Client`] handle to four internal actors on the caller's arbiter: the
//!   *Connection* (owns the awc socket, frames to envelopes, bounded outbox), the *Heartbeat*
//!   (pings, round-trip time, dead-peer detection), the *ReconnectSupervisor* (backoff with
//!   jitter, give-up policy, on-connect replay) and the *Router* (typed subscriptions,
//!   request/reply, state events). Public: `Client`, `connect`, `Manager` and its config and
//!   stats, `Inbound`, `Overflow`, `ConnectionState`, `Event`, `Stats`, `census`, and the
//!   guides `recovery` (nothing lost across a reconnect) and `presence` (who is in a room).
//! - `server` (feature `server`): rooms sessions for actix-web. [`server::Rooms`] mounts the
//!   rooms and echo routes into any `App` and publishes from HTTP handlers; [`server::serve`]
//!   runs them standalone. One internal *Session* actor per client (protocol, membership,
//!   heartbeat) writes through a bounded queue that actix-http reads as the response body; the
//!   internal *Hub* actor holds rooms and broadcasts each message encoded once, giving each its
//!   stream position and keeping the room's recent history for recovery after a reconnect
//!   (`config::HistoryConfig`), and knows who is in each room (presence, with changes gathered
//!   over 100 ms). Public: `Rooms`,
//!   `serve`, `serve_with`, `serve_tls`, `Server`, the auth hook types, `RoomFrame`,
//!   `SessionId`, `HubStats`, `JwtConfig` (JWT authentication: `Rooms::with_jwt`, feature
//!   `jwt`), `handler`, `metrics`, and `backplane` (the `Backplane` trait,
//!   `InProcess`, `RedisBackplane`, and the `HubLink` a backplane delivers through). The hub's
//!   commands, counters and outboxes are private; `server::bench_internals`, hidden from the
//!   docs, re-exports the few the fan-out bench needs to drive the hub without sockets.
//! - [`metrics`] (feature `metrics`): the server's and a client `Manager`'s figures as
//!   Prometheus text (a table of every metric name), read from their counters at each scrape.
//! - `testkit` (feature `testkit`): `TestServer`, `FaultProxy`, `StateRecorder` and waits
//!   without sleeps, for your own tests.
//!
//! # Feature flags
//!
//! - `client` (default): the awc-based client.
//! - `server` (default): the actix-web server side.
//! - `cli` (default): the `wsm` binary (clap, tracing-subscriber).
//! - `redis` (default): several server nodes sharing rooms through Redis pub/sub
//!   (`server::backplane::RedisBackplane`, `wsm serve --redis`).
//! - `jwt` (default): JWT authentication for the rooms server (`config::JwtConfig`,
//!   `Rooms::with_jwt`, `wsm serve --jwt-*`) on `jsonwebtoken` 9 with `ring`. The client's
//!   `ClientConfig::token_provider` needs no feature.
//! - `testkit`: a test server you can restart on the same port, a fault-injecting proxy (delay,
//!   throttle, blackhole, reset, refuse) and waits without sleeps, for your own tests; see its
//!   module guide, "Testing your reconnect logic" (docs.rs builds the docs with it).
//! - `metrics` (default): Prometheus metrics on `prometheus-client` (`Rooms::mount_metrics`,
//!   `Manager::register_metrics`, `wsm serve --metrics-bind`); see [`metrics`].
//! - `rustls` (default): `wss://` for the client and TLS for the server, with rustls 0.23 on its
//!   `ring` provider (see [`tls`]).
#![warn(missing_docs)]

pub mod config;
pub mod envelope;
pub mod error;
#[cfg(feature = "metrics")]
pub mod metrics;
pub mod protocol;
#[cfg(feature = "testkit")]
pub mod testkit;
#[cfg(feature = "rustls")]
pub mod tls;
pub mod ws;

#[cfg(feature = "client")]
pub mod client;

#[cfg(feature = "server")]
pub mod server;

pub use bytes::Bytes;
pub use bytestring::ByteString;
pub use envelope::{Envelope, Outgoing, WireMessage};
pub use error::{Error, Result};

// Compiles (and runs) the README's Rust code blocks as doctests, so they stay in sync with the
// crate.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;
