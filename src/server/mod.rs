//! Rooms sessions for actix-web: mount them into any `App`, or run them standalone with [`serve`].
//!
//! What users need is here at the top: [`Rooms`], the shared handle ([`Rooms::start`] starts
//! the one hub of a server; [`Rooms::mount`] and [`Rooms::mount_echo`] give `App::configure`
//! functions for the rooms route and the plain echo route; [`Rooms::publish`] (typed) and
//! [`Rooms::publish_json`] publish into a room from ordinary HTTP handlers, where the `Rooms` is
//! also app data, `web::Data<Rooms>`; [`Rooms::shutdown`] closes every session with 1001), the
//! authentication types ([`AuthHook`], [`AuthRejection`], and with the `jwt` feature
//! `JwtConfig` for [`Rooms::with_jwt`]), [`serve`] / [`serve_with`] /
//! `serve_tls` and their [`Server`], [`HubStats`], [`RoomFrame`] and [`SessionId`], and the
//! public modules [`backplane`] (several nodes), [`handler`] (message types of your own) and
//! [`metrics`] ([`ServerMetrics`](metrics::ServerMetrics), Prometheus).
//!
//! # Layout
//!
//! One concern per file; the leaf modules (`command`, `counters`, `latency`, `outbox`) import no
//! other server module that imports them, so no two server modules import each other.
//!
//! - `mod.rs`: the [`Rooms`] handle and its API (publish, members, stats, shutdown);
//! - `admission.rs`: the authentication hook, the token check, the join check, the limits
//!   checked before the upgrade, the slot a session holds, and the upgrade handler;
//! - `token.rs` (a leaf): what a verified token grants, why one is refused, where a request
//!   carries it, and when its session is told it is expiring; `jwt.rs` (feature `jwt`):
//!   `JwtConfig`, which checks JWTs with `jsonwebtoken`;
//! - `standalone.rs` and `paced.rs`: [`serve`] and its [`Server`]; over plain TCP it is
//!   actix-http's HTTP/1 service on sockets read in 8 KiB turns, and only once the session took
//!   what was read, so that actix-http's read buffer stays at 8 KiB after a large message
//!   (`paced.rs` says why; an `HttpServer` of your own keeps up to 256 KiB per connection that
//!   once received a burst); `serve_tls` is actix-web's `HttpServer`;
//! - `command.rs`: [`SessionId`] and the commands the hub reads from its bounded queue;
//! - `counters.rs`: the one table of figures, from which the counters, [`HubStats`] and
//!   [`ServerMetrics`](metrics::ServerMetrics) come, and the slow-consumer policy;
//! - `hub/`: the hub actor: rooms, membership, broadcast (encoded once, shared bytes); its
//!   `history.rs` answers `join` with the room's position, recovers what a member missed, and
//!   answers `history`;
//! - `history/`: the rooms' history on one node (stream positions, the bounds, expiry), a
//!   store the hub owns;
//! - `session/`: one actor per client (lifecycle and heartbeat, the rooms protocol, the rate
//!   limit, its token's expiry and `refresh`), writing through its `outbox/` (a bounded queue that is the response body
//!   actix-http writes); its docs say why neither actix-web-actors nor actix-ws;
//! - `socket.rs`: the accepted socket's options and the cutter;
//! - `presence.rs`: [`Rooms::presence`] and [`Rooms::subscribe_presence`]; the hub's side of
//!   presence (entries, listeners, diffs gathered over 100 ms) is `hub/presence.rs`;
//! - [`backplane`], [`handler`], [`metrics`]: the public modules above.
//!
//! # Glossary: ending a connection
//!
//! Three words, and only these, in names and docs. To **close** is to send a Close frame and
//! wait, at most `close_timeout`, for the client's (the RFC 6455 handshake: shutdown 1001,
//! heartbeat 1001, slow consumer 1013, rate limit 1008, a protocol fault). To **cut** is to drop
//! the socket without a handshake (`SO_LINGER` 0), for a client that stopped reading or did not
//! answer the close in time. To **stop** is for the actors to end: the session leaves the hub,
//! its outbox's body ends, and its slot is released.
//!
//! ```no_run
//! use actix_web::{web, App, HttpServer, HttpResponse};
//! use actix_ws_manager::{config::ServerConfig, server::{self, Rooms}};
//!
//! #[actix_web::main]
//! async fn main() -> std::io::Result<()> {
//!     let rooms = Rooms::start(ServerConfig::default()).expect("valid config");
//!     let hook = rooms.clone();
//!     HttpServer::new(move || {
//!         App::new()
//!             .configure(rooms.mount("/ws"))
//!             .configure(rooms.mount_echo("/echo"))
//!             .route("/notify", web::post().to(|rooms: web::Data<Rooms>, body: String| async move {
//!                 let n = rooms.publish_json("lobby", &body).await.unwrap_or(0);
//!                 HttpResponse::Ok().body(format!("{n}"))
//!             }))
//!     })
//!     .on_connect(hook.on_connect()) // socket options from the config; cuts stuck sockets
//!     .bind(("127.0.0.1", 8080))?
//!     .run()
//!     .await
//! }
//! ```
//!
//! The hub must be shared by every worker of the `HttpServer`, so it is started once, outside
//! the `App` factory, and `mount` is a method of the shared handle rather than a free function.

mod admission;
pub mod backplane;
pub mod handler;
#[cfg(feature = "jwt")]
mod jwt;
mod latency;
pub mod metrics;
mod paced;
mod presence;
mod session;
mod socket;
mod standalone;
mod token;

mod command;
mod counters;
mod history;
mod hub;
mod outbox;

/// The hub's internals, for `benches/fanout.rs` alone: it drives the hub through its command
/// queue with outboxes of its own, without sockets, to measure fan-out by itself. Hidden and no
/// stable API; a backplane needs none of it (it gets a [`HubLink`](backplane::HubLink)).
#[doc(hidden)]
pub mod bench_internals {
    pub use super::command::{Command, Evict, HubSender, Publish, Publisher};
    pub use super::counters::Counters;
    pub use super::hub::Hub;
    pub use super::outbox::{outbox, OutboxBody};
}

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use actix::Recipient;
use serde::Serialize;
use tokio::sync::{oneshot, Notify};

pub use self::admission::{
    AuthHook, AuthOutcome, AuthRejection, AuthResult, Authenticated, JoinCheck,
};
use self::command::{Command, HubSender, Publish};
pub use self::command::{RoomFrame, SessionId};
use self::counters::Counters;
pub use self::counters::HubStats;
use self::hub::Hub;
#[cfg(feature = "jwt")]
pub use self::jwt::JwtConfig;
use self::outbox::Outbound;
pub use self::presence::MAX_PRESENCE_WATCH;
#[cfg(feature = "rustls")]
pub use self::standalone::serve_tls;
pub use self::standalone::{serve, serve_with, Server};
pub use self::token::{EXPIRY_NOTICE, MAX_INFO_BYTES};
use crate::config::ServerConfig;
use crate::envelope::{Outgoing, WireMessage};
use crate::error::{Error, Result};
use crate::protocol::RoomMessage;

/// State shared by the handle, the HTTP handlers and every session of one server.
pub(crate) struct Shared {
    pub(crate) config: ServerConfig,
    /// Whether a backplane carries messages to other nodes: `joined` and `ack` then wait for
    /// it (the hub sends them).
    pub(crate) remote_backplane: bool,
    /// Whether the hub keeps room history (then it answers every `join` itself).
    pub(crate) history: bool,
    /// This node's id with a backplane; session names carry it.
    pub(crate) node_id: Option<Arc<str>>,
    pub(crate) counters: Arc<Counters>,
    /// Sessions that hold a slot; checked against `max_sessions` before the upgrade.
    active: AtomicUsize,
    next_id: AtomicU64,
    /// Set by shutdown: new upgrades get 503.
    closing: AtomicBool,
    /// Set to `true` by shutdown: every session watches it and closes with 1001.
    pub(crate) shutdown: tokio::sync::watch::Sender<bool>,
    /// Woken each time a session slot is reserved or released (shutdown and the session waits
    /// wait on it).
    changed: Notify,
    /// The per-room join check, if any ([`Rooms::with_join_check`]).
    pub(crate) join_check: std::sync::RwLock<Option<JoinCheck>>,
    /// Application handlers by message type ([`Rooms::on_message`]).
    pub(crate) handlers: std::sync::RwLock<HashMap<&'static str, handler::ErasedHandler>>,
    /// Sessions per client IP address, when `max_connections_per_ip` is set; an address leaves
    /// the map with its last session, so the map is bounded by the live sessions.
    per_ip: Mutex<HashMap<IpAddr, usize>>,
}

impl Shared {
    /// A new session's id (or an attached actor's): unique within this server.
    fn next_session_id(&self) -> SessionId {
        self.next_id.fetch_add(1, Ordering::Relaxed)
    }
}

/// A reserved place under `max_sessions`, released when dropped (by the session actor, whatever
/// ended it, or by a failed upgrade).
pub(crate) struct SessionSlot {
    shared: Arc<Shared>,
    /// The address counted under `max_connections_per_ip`, if that limit is on.
    ip: Option<IpAddr>,
}

/// Why no slot could be reserved.
pub(crate) enum NoSlot {
    /// `max_sessions` reached (HTTP 503).
    Server,
    /// `max_connections_per_ip` reached for this address (HTTP 429).
    Address,
}

impl SessionSlot {
    pub(crate) fn reserve(
        shared: &Arc<Shared>,
        ip: Option<IpAddr>,
    ) -> std::result::Result<Self, NoSlot> {
        let max = shared.config.max_sessions;
        shared
            .active
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < max).then_some(n + 1)
            })
            .map_err(|_| NoSlot::Server)?;
        // From here the slot holds a place: dropping it gives the place back.
        let mut slot = SessionSlot {
            shared: shared.clone(),
            ip: None,
        };
        if let (Some(max), Some(ip)) = (shared.config.max_connections_per_ip, ip) {
            let mut per_ip = shared.per_ip.lock().unwrap_or_else(|e| e.into_inner());
            let n = per_ip.entry(ip).or_insert(0);
            if *n >= max {
                return Err(NoSlot::Address);
            }
            *n += 1;
            slot.ip = Some(ip);
        }
        shared.changed.notify_waiters();
        Ok(slot)
    }
}

impl Drop for SessionSlot {
    fn drop(&mut self) {
        if let Some(ip) = self.ip {
            let mut per_ip = self.shared.per_ip.lock().unwrap_or_else(|e| e.into_inner());
            if let Some(n) = per_ip.get_mut(&ip) {
                *n = n.saturating_sub(1);
                if *n == 0 {
                    per_ip.remove(&ip);
                }
            }
        }
        self.shared.active.fetch_sub(1, Ordering::AcqRel);
        self.shared.changed.notify_waiters();
    }
}

/// The shared handle to one rooms server: its hub, its configuration and its counters. Cheap to
/// clone; clone it into the `HttpServer` factory.
#[derive(Clone)]
pub struct Rooms {
    commands: HubSender,
    shared: Arc<Shared>,
    auth: Option<AuthHook>,
    /// Checks the token of every upgrade and `refresh` ([`Rooms::with_jwt`]).
    token_check: Option<token::TokenCheck>,
}

impl std::fmt::Debug for Rooms {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Rooms")
            .field("config", &self.shared.config)
            .field("auth", &self.auth.is_some())
            .field("tokens", &self.token_check.is_some())
            .finish_non_exhaustive()
    }
}

impl Rooms {
    /// The handle a session gives an application handler: the same hub and state, without the
    /// authentication hook (which only admission uses).
    pub(crate) fn from_parts(commands: HubSender, shared: Arc<Shared>) -> Self {
        Self {
            commands,
            shared,
            auth: None,
            token_check: None,
        }
    }

    /// Check `config` and start the hub on the current arbiter (call it inside an actix system,
    /// before `HttpServer::new`).
    pub fn start(config: ServerConfig) -> Result<Self> {
        Self::start_with_backplane(config, backplane::InProcess)
    }

    /// [`start`](Self::start) as one node of several, joined by `backplane` (for example a
    /// [`RedisBackplane`](backplane::RedisBackplane)): members on every node receive what is
    /// published on any node. Session names then carry the node id. With room history on
    /// ([`ServerConfig::history`]) the backplane keeps it for every node when it can
    /// ([`Backplane::keep_history`](backplane::Backplane::keep_history): Redis does), so a
    /// client recovers on any node; otherwise history is off.
    pub fn start_with_backplane(
        config: ServerConfig,
        backplane: impl backplane::Backplane,
    ) -> Result<Self> {
        config.validate()?;
        let config = config.saturated();
        let counters = Arc::new(Counters::default());
        let mut backplane = backplane;
        let remote_backplane = backplane.is_remote();
        let node_id = backplane.node_id().map(Arc::from);
        // With other nodes, history is kept by the backplane for all of them, or not at all:
        // one node's offsets would mean nothing on another.
        let history = config
            .history
            .filter(|h| !remote_backplane || backplane.keep_history(h));
        if config.history.is_some() && history.is_none() {
            tracing::info!("room history is off: this backplane does not keep it");
        }
        let (_hub, commands) = Hub::launch_with_backplane(
            config.slow_consumer,
            counters.clone(),
            config.hub_queue,
            Box::new(backplane),
            history,
            config.presence_list_limit,
        );
        Ok(Self {
            commands,
            shared: Arc::new(Shared {
                remote_backplane,
                history: history.is_some(),
                node_id,
                config,
                counters,
                active: AtomicUsize::new(0),
                next_id: AtomicU64::new(1),
                closing: AtomicBool::new(false),
                shutdown: tokio::sync::watch::Sender::new(false),
                changed: Notify::new(),
                per_ip: Mutex::new(HashMap::new()),
                handlers: std::sync::RwLock::new(HashMap::new()),
                join_check: std::sync::RwLock::new(None),
            }),
            auth: None,
            token_check: None,
        })
    }

    /// Publish a typed message into `room` from server code (an HTTP handler, a background
    /// task): every member receives it as type `T::TYPE` (a client subscribes `T`), with `room`
    /// and without `from`. Answers how many members it reached.
    ///
    /// Publishes wait in the hub's bounded FIFO queue with every session's, so the publishes
    /// of one task reach every member in the order that task made them, and a task that
    /// publishes faster than the hub fans out is slowed down here rather than growing memory.
    ///
    /// With a [`backplane`] the count is this node's members; the message also goes to
    /// the other nodes, and when the backplane cannot take it that is counted in
    /// `HubStats::backplane_publish_errors` and traced. When the backplane keeps the room
    /// history, this node's members too get the message through it (with its position), so
    /// the count is the members it will reach once the backplane has taken it, and one it
    /// refuses reaches nobody.
    pub async fn publish<T: WireMessage>(&self, room: &str, msg: &T) -> Result<usize> {
        let event = (T::TYPE != RoomMessage::TYPE).then_some(T::TYPE);
        self.publish_raw(room, event, msg).await
    }

    /// Publish any serialisable `data` into `room` as a plain `message` (the untyped form of
    /// [`publish`](Self::publish)).
    pub async fn publish_json<T: Serialize + ?Sized>(&self, room: &str, data: &T) -> Result<usize> {
        self.publish_raw(room, None, data).await
    }

    async fn publish_raw<T: Serialize + ?Sized>(
        &self,
        room: &str,
        event: Option<&str>,
        data: &T,
    ) -> Result<usize> {
        if !self.shared.config.is_valid_room(room) {
            return Err(Error::BadRoom(room.to_owned()));
        }
        let raw =
            serde_json::value::to_raw_value(data).map_err(|e| Error::Encode(e.to_string()))?;
        let data = (raw.get() != "null").then_some(raw);
        self.ask(|tell| {
            Command::Publish(Publish {
                room: Arc::from(room),
                from: None,
                event: event.map(Arc::from),
                data,
                reached: Some(tell),
                reply_to: None,
            })
        })
        .await
    }

    /// Send a typed message to one session (`{"type":T::TYPE,"data":...}`), for example to
    /// notify a client found with [`members`](Self::members). Answers whether its queue took it
    /// (false for a session that is gone; a full queue gets the slow-consumer policy).
    pub async fn send_to<T: WireMessage>(&self, session: SessionId, msg: &T) -> Result<bool> {
        self.send_envelope_to(session, Outgoing::new(msg)?).await
    }

    /// [`send_to`](Self::send_to) with a prepared envelope.
    pub async fn send_envelope_to(&self, session: SessionId, out: Outgoing) -> Result<bool> {
        let frame = Outbound::Text(out.encode());
        self.ask(|sent| Command::SendTo {
            id: session,
            frame,
            sent,
        })
        .await
    }

    /// Make an actor of yours a member of this server's rooms: typically an existing
    /// actix-web-actors session that should take part in rooms without being rewritten. Room
    /// messages reach it as [`RoomFrame`]s (the encoded envelope; write it
    /// with `ctx.text(frame.0)`) through `try_send`, so its mailbox bound applies: an actor that
    /// does not keep up is a slow consumer like any session (dropped or removed, counted), and
    /// never slows the others. Answers the member's id, for [`join_member`](Self::join_member),
    /// [`leave_member`](Self::leave_member), [`send_to`](Self::send_to) and
    /// [`detach`](Self::detach). A stopped actor is forgotten the first time a message finds
    /// its mailbox closed.
    pub async fn attach(&self, recipient: Recipient<RoomFrame>) -> Result<SessionId> {
        let id = self.shared.next_session_id();
        self.command(Command::Attach { id, recipient }).await?;
        Ok(id)
    }

    /// [`attach`](Self::attach) and [`join_member`](Self::join_member) in one call.
    pub async fn join_recipient(
        &self,
        room: &str,
        recipient: Recipient<RoomFrame>,
    ) -> Result<SessionId> {
        if !self.shared.config.is_valid_room(room) {
            return Err(Error::BadRoom(room.to_owned()));
        }
        let id = self.attach(recipient).await?;
        self.join_member(id, room).await?;
        Ok(id)
    }

    /// Add member `id` (an attached actor) to `room`.
    pub async fn join_member(&self, id: SessionId, room: &str) -> Result<()> {
        if !self.shared.config.is_valid_room(room) {
            return Err(Error::BadRoom(room.to_owned()));
        }
        let room = Arc::from(room);
        self.command(Command::Join {
            id,
            room,
            reply: None,
            listen: false,
            info: None,
        })
        .await
    }

    /// Take member `id` (an attached actor) out of `room`.
    pub async fn leave_member(&self, id: SessionId, room: &str) -> Result<()> {
        let room = Arc::from(room);
        self.command(Command::Leave { id, room }).await
    }

    /// Forget member `id` (an attached actor): it leaves every room.
    pub async fn detach(&self, id: SessionId) -> Result<()> {
        self.command(Command::Disconnect { id }).await
    }

    /// Queue a command that answers nothing.
    pub(crate) async fn command(&self, command: Command) -> Result<()> {
        self.commands
            .send(command)
            .await
            .map_err(|_| Error::Mailbox("the rooms hub has stopped".into()))
    }

    /// The sessions in `room` now, by id (ascending; empty for an unknown room).
    pub async fn members(&self, room: &str) -> Result<Vec<SessionId>> {
        let room = Arc::from(room);
        self.ask(|tell| Command::Members { room, tell }).await
    }

    /// Handle client messages of type `T::TYPE` (a type that is not the rooms protocol's) with
    /// `handler` instead of answering `unknown_type`. The handler gets the sender
    /// ([`MessageContext`](handler::MessageContext): session id, identity, request id, a
    /// `Rooms` to publish or `send_to`, and `reply`) and the decoded message; `data` that does
    /// not decode as `T` is answered with the error `bad_data`. The handler runs on the
    /// session's thread, and the session reads its client's next message when the handler's
    /// future ends: one client's messages are handled in order, and a slow handler slows that
    /// client (through TCP), not the server. Registering a type again replaces its handler.
    pub fn on_message<T, F, Fut>(&self, handler: F) -> &Self
    where
        T: WireMessage,
        F: Fn(handler::MessageContext, T) -> Fut + Send + Sync + 'static,
        Fut: std::future::Future<Output = ()> + 'static,
    {
        let mut handlers = self
            .shared
            .handlers
            .write()
            .unwrap_or_else(|e| e.into_inner());
        handlers.insert(T::TYPE, handler::erase(handler));
        self
    }

    /// Queue a command that answers through a oneshot, and wait for the answer.
    pub(crate) async fn ask<T>(
        &self,
        command: impl FnOnce(oneshot::Sender<T>) -> Command,
    ) -> Result<T> {
        let stopped = || Error::Mailbox("the rooms hub has stopped".into());
        let (tell, answer) = oneshot::channel();
        self.commands
            .send(command(tell))
            .await
            .map_err(|_| stopped())?;
        answer.await.map_err(|_| stopped())
    }
    /// A snapshot of the counters. It waits its turn in the hub's command queue, so it
    /// reflects every join, leave, publish and disconnect queued before it.
    pub async fn stats(&self) -> Result<HubStats> {
        self.ask(Command::Stats).await
    }

    /// Sessions holding a slot right now (rooms and echo), counting upgrades still waiting on
    /// the authentication hook: a slot is reserved before the hook runs, so that slow hooks
    /// cannot be called more often than the limits allow.
    pub fn sessions(&self) -> usize {
        self.shared.active.load(Ordering::Acquire)
    }

    /// The configuration this server runs with.
    pub fn config(&self) -> &ServerConfig {
        &self.shared.config
    }

    /// Refuse new upgrades (503), close every session with 1001, and wait until all are gone or
    /// twice the `close_timeout` has passed (stuck sockets are cut after `close_timeout`).
    /// Answers how many sessions were still there when it stopped waiting.
    pub async fn shutdown(&self) -> Result<usize> {
        self.shared.closing.store(true, Ordering::Release);
        self.shared.shutdown.send_replace(true);
        tracing::info!(
            sessions = self.sessions(),
            "closing every session with 1001"
        );
        let grace = self.shared.config.close_timeout.saturating_mul(2);
        if !self.wait_sessions(0, grace).await {
            tracing::warn!(
                sessions = self.sessions(),
                "sessions still open after the shutdown grace"
            );
        }
        Ok(self.sessions())
    }

    /// Wait until at most `at_most` sessions remain, for at most `within`; answers whether that
    /// happened. A session counts until its actor is gone, after it has left every room.
    pub async fn wait_sessions(&self, at_most: usize, within: Duration) -> bool {
        self.wait_sessions_until(|n| n <= at_most, within).await
    }

    /// Wait until at least `at_least` sessions are open (counted from their upgrade), for at most
    /// `within`; answers whether that happened.
    pub async fn wait_sessions_at_least(&self, at_least: usize, within: Duration) -> bool {
        self.wait_sessions_until(|n| n >= at_least, within).await
    }

    /// Wait, woken by every session reserved or released, until `done(sessions)`.
    async fn wait_sessions_until(&self, done: impl Fn(usize) -> bool, within: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            let changed = self.shared.changed.notified();
            tokio::pin!(changed);
            changed.as_mut().enable();
            if done(self.sessions()) {
                return true;
            }
            if tokio::time::timeout_at(deadline, changed).await.is_err() {
                return done(self.sessions());
            }
        }
    }
}
