//! Rooms sessions for actix-web: mount them into any `App`, or run them standalone with [`serve`].
//!
//! - [`Rooms`]: the shared handle. [`Rooms::start`] starts the one [`Hub`] of a server;
//!   [`Rooms::mount`] and [`Rooms::mount_echo`] give `App::configure` functions for the rooms
//!   route and the plain echo route; [`Rooms::publish`] (typed) and [`Rooms::publish_json`]
//!   publish into a room from ordinary HTTP handlers (the `Rooms` is also app data: extract `web::Data<Rooms>`); [`Rooms::shutdown`]
//!   closes every session with 1001.
//! - [`serve`] / [`serve_with`]: a standalone server on an address (port 0 allowed),
//!   returning a [`Server`] with its [`local_addr`](Server::local_addr), its `Rooms` and a
//!   graceful [`shutdown`](Server::shutdown). This is what `wsm serve` and in-process benchmarks
//!   use. Over plain TCP it is actix-http's HTTP/1 service on sockets read in 8 KiB turns, and
//!   only once the session took what was read, so that actix-http's read buffer stays at 8 KiB
//!   after a large message (`paced` in the source says why; an `HttpServer` of your own keeps up
//!   to 256 KiB per connection that once received a burst); [`serve_tls`] is actix-web's
//!   `HttpServer`.
//! - [`session`]: one actor per client, writing through its [`outbox`] (a bounded queue that
//!   is the response body actix-http writes); its docs say why neither actix-web-actors nor
//!   actix-ws.
//! - [`hub`]: rooms, membership, broadcast (encoded once, shared bytes) and counters.
//! - [`metrics`]: those counters as a [`ServerMetrics`](metrics::ServerMetrics) snapshot
//!   ([`Rooms::metrics`]) and, with the `metrics` feature, as Prometheus text
//!   ([`Rooms::mount_metrics`], [`Rooms::register_metrics`]).
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

pub mod backplane;
pub mod handler;
pub mod hub;
pub mod metrics;
pub mod outbox;
mod paced;
pub mod session;

use std::any::Any;
use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr, ToSocketAddrs};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use actix::Recipient;
use actix_web::dev::Extensions;
use actix_web::http::header;
use actix_web::{web, App, HttpRequest, HttpResponse, HttpServer};
use serde::Serialize;
use tokio::sync::{oneshot, Notify};

use crate::config::ServerConfig;
use crate::envelope::{Outgoing, WireMessage};
use crate::error::{Error, Result};
use crate::protocol::RoomMessage;
use hub::SessionId;
use hub::{Command, Counters, Hub, HubSender, HubStats, Publish};
use session::{Mode, SessionParams};

/// Why the authentication hook refused an upgrade request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuthRejection {
    /// No (valid) credentials: HTTP 401 with this body.
    Unauthorized(String),
    /// Credentials, but not allowed here: HTTP 403 with this body.
    Forbidden(String),
}

/// The authentication hook: sees the upgrade request before anything else happens, and either
/// refuses it or lets it through, optionally attaching an identity to the session (sent back in
/// `welcome` as `data.identity`, traced with the session, and given to application handlers and
/// the join check). It is async, so it can check a JWT against a key service or look a token up
/// in a database; install a plain function with [`Rooms::with_auth`] or an async one with
/// [`Rooms::with_async_auth`].
pub type AuthHook = Arc<
    dyn Fn(HttpRequest) -> futures_util::future::LocalBoxFuture<'static, AuthResult> + Send + Sync,
>;

/// What the authentication hook answers: an identity (or none) to let the upgrade through, or
/// why it is refused.
pub type AuthResult = std::result::Result<Option<String>, AuthRejection>;

/// The per-room join check ([`Rooms::with_join_check`]): may this identity join this room?
pub type JoinCheck = Arc<dyn Fn(Option<&str>, &str) -> bool + Send + Sync>;

/// State shared by the handle, the HTTP handlers and every session of one server.
pub(crate) struct Shared {
    pub(crate) config: ServerConfig,
    /// Whether a backplane carries messages to other nodes: `joined` and `ack` then wait for
    /// it (the hub sends them).
    pub(crate) remote_backplane: bool,
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

/// A reserved place under `max_sessions`, released when dropped (by the session actor, whatever
/// ended it, or by a failed upgrade).
pub(crate) struct SessionSlot {
    shared: Arc<Shared>,
    /// The address counted under `max_connections_per_ip`, if that limit is on.
    ip: Option<IpAddr>,
}

/// Why no slot could be reserved.
enum NoSlot {
    /// `max_sessions` reached (HTTP 503).
    Server,
    /// `max_connections_per_ip` reached for this address (HTTP 429).
    Address,
}

impl SessionSlot {
    fn reserve(shared: &Arc<Shared>, ip: Option<IpAddr>) -> std::result::Result<Self, NoSlot> {
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
}

impl std::fmt::Debug for Rooms {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Rooms")
            .field("config", &self.shared.config)
            .field("auth", &self.auth.is_some())
            .finish_non_exhaustive()
    }
}

impl Rooms {
    /// Check `config` and start the hub on the current arbiter (call it inside an actix system,
    /// before `HttpServer::new`).
    pub fn start(config: ServerConfig) -> Result<Self> {
        Self::start_with_backplane(config, backplane::InProcess)
    }

    /// [`start`](Self::start) as one node of several, joined by `backplane` (for example a
    /// [`RedisBackplane`](backplane::RedisBackplane)): members on every node receive what is
    /// published on any node. Session names then carry the node id.
    pub fn start_with_backplane(
        config: ServerConfig,
        backplane: impl backplane::Backplane,
    ) -> Result<Self> {
        config.validate()?;
        let config = config.saturated();
        let counters = Arc::new(Counters::default());
        let remote_backplane = backplane.is_remote();
        let node_id = backplane.node_id().map(Arc::from);
        let (_hub, commands) = Hub::launch_with_backplane(
            config.slow_consumer,
            counters.clone(),
            config.hub_queue,
            Box::new(backplane),
        );
        Ok(Self {
            commands,
            shared: Arc::new(Shared {
                remote_backplane,
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
        })
    }

    /// Install a synchronous authentication hook (see [`AuthHook`]).
    pub fn with_auth<F>(self, hook: F) -> Self
    where
        F: Fn(&HttpRequest) -> AuthResult + Send + Sync + 'static,
    {
        self.with_async_auth(move |req: HttpRequest| std::future::ready(hook(&req)))
    }

    /// Install an async authentication hook (see [`AuthHook`]); it gets the request by value
    /// (cheap: actix's `HttpRequest` is reference counted).
    pub fn with_async_auth<F, Fut>(mut self, hook: F) -> Self
    where
        F: Fn(HttpRequest) -> Fut + Send + Sync + 'static,
        Fut: std::future::Future<Output = AuthResult> + 'static,
    {
        self.auth = Some(Arc::new(move |req| Box::pin(hook(req))));
        self
    }

    /// Install a per-room join check: a `join` whose `check(identity, room)` is false is
    /// answered with the error `forbidden_room`. The identity is what the authentication hook
    /// attached (`None` without one).
    pub fn with_join_check<F>(self, check: F) -> Self
    where
        F: Fn(Option<&str>, &str) -> bool + Send + Sync + 'static,
    {
        let mut slot = self
            .shared
            .join_check
            .write()
            .unwrap_or_else(|e| e.into_inner());
        *slot = Some(Arc::new(check));
        drop(slot);
        self
    }

    /// An `App::configure` function that mounts the rooms endpoint at `path` and registers this
    /// handle as `web::Data<Rooms>` for the app's other handlers.
    pub fn mount(&self, path: &str) -> impl FnOnce(&mut web::ServiceConfig) + 'static {
        self.mount_mode(path, Mode::Rooms)
    }

    /// An `App::configure` function that mounts the plain echo endpoint at `path`: text and
    /// binary messages come back verbatim, through the same session machinery, heartbeat and
    /// limits as the rooms endpoint.
    pub fn mount_echo(&self, path: &str) -> impl FnOnce(&mut web::ServiceConfig) + 'static {
        self.mount_mode(path, Mode::Echo)
    }

    fn mount_mode(&self, path: &str, mode: Mode) -> impl FnOnce(&mut web::ServiceConfig) + 'static {
        let rooms = self.clone();
        let path = path.to_owned();
        move |cfg: &mut web::ServiceConfig| {
            let data = web::Data::new(rooms.clone());
            cfg.app_data(data).route(
                &path,
                web::get().to(move |req: HttpRequest, body: web::Payload| {
                    let rooms = rooms.clone();
                    async move { rooms.upgrade(req, body, mode).await }
                }),
            );
        }
    }

    /// The upgrade handler: origin, the handshake's headers, capacity (cheap checks first), then
    /// authentication, then the WebSocket handshake.
    async fn upgrade(
        &self,
        req: HttpRequest,
        body: web::Payload,
        mode: Mode,
    ) -> std::result::Result<HttpResponse, actix_web::Error> {
        let config = &self.shared.config;
        if let Some(allowed) = &config.allowed_origins {
            if let Some(origin) = req.headers().get(header::ORIGIN) {
                let ok = origin
                    .to_str()
                    .is_ok_and(|o| allowed.iter().any(|a| a == o));
                if !ok {
                    tracing::info!(?origin, "upgrade refused: origin not allowed");
                    return Ok(HttpResponse::Forbidden().body("origin not allowed"));
                }
            }
        }
        // Everything that costs nothing is checked before the authentication hook, which may be
        // slow (a database, another service): a plain GET, an address at its connection limit
        // or a full server never gets an auth call in flight. The reserved slot counts toward
        // the limits while the hook runs and is released if the hook refuses.
        if let Err(e) = actix_http::ws::verify_handshake(req.head()) {
            tracing::debug!("upgrade refused: not a WebSocket handshake: {e}");
            return Ok(HttpResponse::from_error(e));
        }
        if self.shared.closing.load(Ordering::Acquire) {
            return Ok(HttpResponse::ServiceUnavailable().body("server shutting down"));
        }
        let ip = req.peer_addr().map(|a| a.ip());
        let slot = match SessionSlot::reserve(&self.shared, ip) {
            Ok(slot) => slot,
            Err(NoSlot::Server) => {
                tracing::warn!(max = config.max_sessions, "upgrade refused: session limit");
                return Ok(HttpResponse::ServiceUnavailable().body("too many sessions"));
            }
            Err(NoSlot::Address) => {
                self.shared
                    .counters
                    .per_ip_refusals
                    .fetch_add(1, Ordering::Relaxed);
                tracing::info!(?ip, "upgrade refused: connection limit for this address");
                return Ok(
                    HttpResponse::TooManyRequests().body("too many connections from this address")
                );
            }
        };
        let identity = match &self.auth {
            None => None,
            Some(hook) => match hook(req.clone()).await {
                Ok(identity) => identity,
                Err(AuthRejection::Unauthorized(why)) => {
                    return Ok(HttpResponse::Unauthorized().body(why))
                }
                Err(AuthRejection::Forbidden(why)) => {
                    return Ok(HttpResponse::Forbidden().body(why))
                }
            },
        };
        // The hook may have waited through the start of a shutdown.
        if self.shared.closing.load(Ordering::Acquire) {
            return Ok(HttpResponse::ServiceUnavailable().body("server shutting down"));
        }
        let params = SessionParams {
            id: self.shared.next_id.fetch_add(1, Ordering::Relaxed),
            mode,
            identity,
            hub: self.commands.clone(),
            shared: self.shared.clone(),
            slot,
        };
        session::start(&req, body, params)
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
    /// `HubStats::backplane_publish_errors` and traced.
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
        let frame = hub::Outbound::Text(out.encode());
        self.ask(|sent| Command::SendTo {
            id: session,
            frame,
            sent,
        })
        .await
    }

    /// Make an actor of yours a member of this server's rooms: typically an existing
    /// actix-web-actors session that should take part in rooms without being rewritten. Room
    /// messages reach it as [`RoomFrame`](hub::RoomFrame)s (the encoded envelope; write it
    /// with `ctx.text(frame.0)`) through `try_send`, so its mailbox bound applies: an actor that
    /// does not keep up is a slow consumer like any session (dropped or removed, counted), and
    /// never slows the others. Answers the member's id, for [`join_member`](Self::join_member),
    /// [`leave_member`](Self::leave_member), [`send_to`](Self::send_to) and
    /// [`detach`](Self::detach). A stopped actor is forgotten the first time a message finds
    /// its mailbox closed.
    pub async fn attach(&self, recipient: Recipient<hub::RoomFrame>) -> Result<SessionId> {
        let id = self.shared.next_id.fetch_add(1, Ordering::Relaxed);
        self.command(Command::Attach { id, recipient }).await?;
        Ok(id)
    }

    /// [`attach`](Self::attach) and [`join_member`](Self::join_member) in one call.
    pub async fn join_recipient(
        &self,
        room: &str,
        recipient: Recipient<hub::RoomFrame>,
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
    async fn command(&self, command: Command) -> Result<()> {
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
    async fn ask<T>(&self, command: impl FnOnce(oneshot::Sender<T>) -> Command) -> Result<T> {
        let stopped = || Error::Mailbox("the rooms hub has stopped".into());
        let (tell, answer) = oneshot::channel();
        self.commands
            .send(command(tell))
            .await
            .map_err(|_| stopped())?;
        answer.await.map_err(|_| stopped())
    }

    /// The hook to install with `HttpServer::on_connect(rooms.on_connect())`: it applies this
    /// configuration's [`tcp_send_buffer`](ServerConfig::tcp_send_buffer) and
    /// [`tcp_user_timeout`](ServerConfig::tcp_user_timeout) to every accepted socket, and, when
    /// [`keep_socket_handle`](ServerConfig::keep_socket_handle) is on, keeps a duplicate
    /// descriptor so that the server can cut the socket of a client that stopped reading (see
    /// [`session`]). Without it, those three settings have no effect. [`serve`] installs it.
    pub fn on_connect(&self) -> impl Fn(&dyn Any, &mut Extensions) + Send + Sync + 'static {
        session::on_connect_for(&self.shared.config)
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

/// A standalone server started by [`serve`]: where it listens, its [`Rooms`], and a graceful
/// [`shutdown`](Self::shutdown).
#[derive(Debug)]
pub struct Server {
    addr: SocketAddr,
    /// `ws` or `wss`.
    scheme: &'static str,
    path: String,
    echo_path: String,
    rooms: Rooms,
    handle: actix_web::dev::ServerHandle,
}

impl Server {
    /// The address the listener is bound to (the real port when asked for port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// `ws://<addr><path>` (`wss://` when serving TLS): the rooms endpoint.
    pub fn url(&self) -> String {
        format!("{}://{}{}", self.scheme, self.addr, self.path)
    }

    /// `ws://<addr><echo_path>` (`wss://` when serving TLS): the echo endpoint.
    pub fn echo_url(&self) -> String {
        format!("{}://{}{}", self.scheme, self.addr, self.echo_path)
    }

    /// The shared handle (hub, counters, HTTP-side publish).
    pub fn rooms(&self) -> &Rooms {
        &self.rooms
    }

    /// Stop at once without closing sessions: connections are dropped without a Close frame,
    /// as in a crash (the test kit's `TestServer::kill`).
    #[cfg(feature = "testkit")]
    pub(crate) async fn kill(self) {
        self.rooms.shared.closing.store(true, Ordering::Release);
        self.handle.stop(false).await;
        listener_released(self.addr).await;
    }

    /// Close every session with 1001 (see [`Rooms::shutdown`]), then stop the HTTP server.
    pub async fn shutdown(self) -> Result<()> {
        let left = self.rooms.shutdown().await?;
        if left > 0 {
            tracing::warn!(sessions = left, "stopping with sessions still open");
        }
        self.handle.stop(true).await;
        listener_released(self.addr).await;
        Ok(())
    }
}

/// How long [`listener_released`] waits at most.
const LISTENER_RELEASE: Duration = Duration::from_secs(2);

/// Wait until the port of `addr` can be bound again, for at most [`LISTENER_RELEASE`].
///
/// actix-server's stop resolves once its workers are done, but its accept thread drops the
/// listening socket on its own, a moment later (longer on a busy machine): a caller that binds
/// the same port right after [`Server::shutdown`] (a restart) could get "address in use". So
/// shutdown returns once a probe bind with `SO_REUSEADDR` (as actix-server binds) succeeds. There
/// is no event for it, hence a short bounded poll.
async fn listener_released(addr: SocketAddr) {
    let deadline = tokio::time::Instant::now() + LISTENER_RELEASE;
    loop {
        let probe = socket2::Socket::new(
            socket2::Domain::for_address(addr),
            socket2::Type::STREAM,
            None,
        )
        .and_then(|s| {
            s.set_reuse_address(true)?;
            s.bind(&addr.into())
        });
        match probe {
            Ok(()) => return,
            Err(e) if e.kind() != std::io::ErrorKind::AddrInUse => return,
            Err(_) if tokio::time::Instant::now() >= deadline => {
                tracing::warn!(%addr, "the listening socket is still open after the server stopped");
                return;
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(5)).await,
        }
    }
}

/// Start a standalone server on `bind` with the rooms endpoint at `path` and the echo endpoint at
/// `echo_path`. Call it inside an actix system (`#[actix_web::main]`, `#[actix_rt::test]`); the
/// server runs on that system until [`Server::shutdown`]. It does not handle signals itself.
pub fn serve(
    bind: impl ToSocketAddrs,
    path: &str,
    echo_path: &str,
    config: ServerConfig,
) -> Result<Server> {
    serve_with(bind, path, echo_path, Rooms::start(config)?)
}

/// [`serve`] with a [`Rooms`] you built (for example with an authentication hook).
pub fn serve_with(
    bind: impl ToSocketAddrs,
    path: &str,
    echo_path: &str,
    rooms: Rooms,
) -> Result<Server> {
    start(bind, path, echo_path, rooms, Tls::None)
}

/// [`serve`] over TLS (`wss://`), with a configuration from
/// [`tls::server_config`](crate::tls::server_config) (a PEM certificate chain and key). To serve
/// TLS from your own `HttpServer`, mount the [`Rooms`] as usual and bind with
/// `HttpServer::bind_rustls_0_23(addr, config)`:
///
/// ```no_run
/// # use actix_web::{App, HttpServer};
/// # use actix_ws_manager::{config::ServerConfig, server::Rooms, tls};
/// # async fn run(cert: &[u8], key: &[u8]) -> Result<(), Box<dyn std::error::Error>> {
/// let rooms = Rooms::start(ServerConfig::default())?;
/// let hook = rooms.on_connect();
/// HttpServer::new(move || App::new().configure(rooms.mount("/ws")))
///     .on_connect(hook)
///     .bind_rustls_0_23(("0.0.0.0", 8443), tls::server_config(cert, key)?)?
///     .run()
///     .await?;
/// # Ok(()) }
/// ```
#[cfg(feature = "rustls")]
pub fn serve_tls(
    bind: impl ToSocketAddrs,
    path: &str,
    echo_path: &str,
    rooms: Rooms,
    tls: rustls::ServerConfig,
) -> Result<Server> {
    start(bind, path, echo_path, rooms, Tls::Rustls(Box::new(tls)))
}

/// How [`start`] binds.
enum Tls {
    None,
    #[cfg(feature = "rustls")]
    Rustls(Box<rustls::ServerConfig>),
}

fn start(
    bind: impl ToSocketAddrs,
    path: &str,
    echo_path: &str,
    rooms: Rooms,
    tls: Tls,
) -> Result<Server> {
    let (p, e) = (path.to_owned(), echo_path.to_owned());
    let app_rooms = rooms.clone();
    let app = move || {
        App::new()
            .configure(app_rooms.mount(&p))
            .configure(app_rooms.mount_echo(&e))
    };
    let grace = rooms
        .config()
        .close_timeout
        .saturating_add(Duration::from_secs(1));
    let (addr, running, scheme) = match tls {
        // Plain sockets are read in paced turns (`paced` says why actix-web's `HttpServer` is
        // not used here).
        Tls::None => {
            let (addr, running) = paced::listen(bind, app, rooms.on_connect(), grace)?;
            (addr, running, "ws")
        }
        #[cfg(feature = "rustls")]
        Tls::Rustls(config) => {
            let server = HttpServer::new(app)
                .on_connect(rooms.on_connect())
                .disable_signals()
                .shutdown_timeout(grace.as_secs())
                .bind_rustls_0_23(bind, *config)?;
            let addr = server
                .addrs()
                .first()
                .copied()
                .ok_or_else(|| Error::Io(std::io::Error::other("bound to no address")))?;
            (addr, server.run(), "wss")
        }
    };
    let handle = running.handle();
    actix_rt::spawn(running);
    tracing::info!(%addr, scheme, path, echo_path, "listening");
    Ok(Server {
        addr,
        scheme,
        path: path.to_owned(),
        echo_path: echo_path.to_owned(),
        rooms,
        handle,
    })
}
