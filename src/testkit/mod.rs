//! A fault-injection kit for tests of code built on this crate (feature `testkit`, off by
//! default; it pulls in the `server` and `client` features).
//!
//! - [`TestServer`]: the rooms (`/ws`) and echo (`/echo`) endpoints on 127.0.0.1, with
//!   [`stop`](TestServer::stop), [`kill`](TestServer::kill) and
//!   [`restart`](TestServer::restart) on the same port.
//! - [`FaultProxy`]: a TCP proxy between a client and a server that, on command and at once,
//!   delays, throttles, blackholes, resets or refuses the connections going through it, live
//!   ones and new ones alike, and counts the bytes it forwarded each way.
//! - [`StateRecorder`], [`next_message`], [`next_matching`]: wait for a connection state or a
//!   message with a timeout, never with a sleep, and keep the states a client went through.
//!
//! Everything listens on 127.0.0.1 only and must run inside an actix system
//! (`#[actix_rt::test]`).
//!
//! # Testing your reconnect logic
//!
//! The test below is what a service that follows a room would write. It restarts the server (a
//! deploy), blackholes the network for less and then for more than the heartbeat timeout (a
//! half-open link), and checks that the handler saw the right states, rejoined its room each
//! time, and lost no message that was published while it was a member.
//!
//! ```
//! use std::time::Duration;
//!
//! use actix_ws_manager::client::{self, ConnectionState};
//! use actix_ws_manager::config::{ClientConfig, HeartbeatConfig, ReconnectPolicy, ServerConfig};
//! use actix_ws_manager::protocol::Joined;
//! use actix_ws_manager::testkit::{next_matching, next_message, FaultProxy, StateRecorder, TestServer};
//! use actix_ws_manager::WireMessage;
//! use serde::{Deserialize, Serialize};
//!
//! #[derive(Debug, Clone, Serialize, Deserialize)]
//! struct Tick {
//!     n: u32,
//! }
//! impl WireMessage for Tick {
//!     const TYPE: &'static str = "tick";
//! }
//!
//! const WITHIN: Duration = Duration::from_secs(10);
//!
//! # fn main() -> Result<(), actix_ws_manager::Error> {
//! # actix_rt::System::new().block_on(async {
//! let mut server = TestServer::start(ServerConfig::default())?;
//! let proxy = FaultProxy::start(server.addr()).await?;
//! let config = ClientConfig::default()
//!     // A dead peer is declared after 600 ms without a pong.
//!     .heartbeat(HeartbeatConfig::new(
//!         Duration::from_millis(200),
//!         Duration::from_millis(600),
//!     ))
//!     .reconnect(ReconnectPolicy::default().backoff(
//!         Duration::from_millis(50),
//!         2.0,
//!         Duration::from_millis(500),
//!     ));
//! let client = client::connect(&proxy.url("/ws"), config)?;
//! let mut states = StateRecorder::attach(&client);
//! let mut ticks = client.subscribe::<Tick>(64);
//! let mut joined = client.subscribe::<Joined>(8);
//! let in_lobby = |j: &client::Inbound<Joined>| j.room.as_deref() == Some("lobby");
//! states.wait_connected(WITHIN).await?;
//! client.join("lobby").await?;
//! next_matching(&mut joined, "joined lobby", WITHIN, in_lobby).await?;
//!
//! // A deploy: the server restarts on the same port. The client is told 1001, reconnects
//! // and joins the lobby again by itself.
//! server.restart().await?;
//! assert_eq!(states.wait_disconnected(WITHIN).await?, 1001);
//! states.wait_connected(WITHIN).await?;
//! next_matching(&mut joined, "joined lobby again", WITHIN, in_lobby).await?;
//!
//! // A link that stops carrying packets for less than the heartbeat timeout: what was
//! // published meanwhile arrives once it heals, all of it, in order, on the same connection.
//! proxy.blackhole();
//! let rooms = server.rooms().expect("running");
//! for n in 0..10 {
//!     rooms.publish("lobby", &Tick { n }).await?;
//! }
//! proxy.pass();
//! for n in 0..10 {
//!     assert_eq!(next_message(&mut ticks, WITHIN).await?.data.n, n);
//! }
//!
//! // The same for longer than the heartbeat timeout: the heartbeat declares the peer dead
//! // (1006); once the link heals the client reconnects and rejoins.
//! proxy.blackhole();
//! assert_eq!(states.wait_disconnected(WITHIN).await?, 1006);
//! proxy.pass();
//! states.wait_connected(WITHIN).await?;
//! next_matching(&mut joined, "joined lobby after the partition", WITHIN, in_lobby).await?;
//! let rooms = server.rooms().expect("running");
//! rooms.publish("lobby", &Tick { n: 10 }).await?;
//! assert_eq!(next_message(&mut ticks, WITHIN).await?.data.n, 10);
//!
//! // What the handler went through, in order.
//! let seen: Vec<&'static str> = states.states().iter().map(|s| match s {
//!     ConnectionState::Connected => "connected",
//!     ConnectionState::Disconnected { .. } => "disconnected",
//!     _ => "other",
//! }).filter(|s| *s != "other").collect();
//! assert_eq!(seen, ["connected", "disconnected", "connected", "disconnected", "connected"]);
//! assert_eq!(client.stats().reconnects, 2);
//!
//! client.close().await;
//! server.stop().await?;
//! # Ok(()) }) }
//! ```
//!
//! The crate's own fault scenarios (`tests/faults.rs`) are longer examples: a half-open link seen
//! by both heartbeats, 2,000 messages sent across a partition, a restart under 200 clients, a
//! throttled link, and 10,000 connect/close cycles that must leave nothing behind.

mod proxy;
mod server;
mod wait;

pub use proxy::{Fault, FaultProxy};
pub use server::TestServer;
pub use wait::{next_matching, next_message, StateRecorder};
