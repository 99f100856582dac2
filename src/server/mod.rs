//! Rooms sessions for actix-web: mount them into any `App`, or run them standalone with [`serve`].
//!
//! - [`Rooms`]: the shared handle. [`Rooms::start`] starts the one [`Hub`] of a server;
//!   [`Rooms::mount`] and [`Rooms::mount_echo`] give `App::configure` functions for the rooms
//!   route and the plain echo route; [`Rooms::publish`] publishes into a room from ordinary HTTP
//!   handlers (the `Rooms` is also app data: extract `web::Data<Rooms>`); [`Rooms::shutdown`]
//!   closes every session with 1001.
//! - [`serve`] / [`serve_with`]: a standalone `HttpServer` on an address (port 0 allowed),
//!   returning a [`Server`] with its [`local_addr`](Server::local_addr), its `Rooms` and a
//!   graceful [`shutdown`](Server::shutdown). This is what `wsm serve` and in-process benchmarks
//!   use.
//! - [`session`]: one actor per client plus a writer task behind a bounded queue; the only file
//!   that touches the WebSocket transport (actix-ws; its docs say why not actix-web-actors).
//! - [`hub`]: rooms, membership, broadcast (encoded once, shared bytes) and counters.
//!
//! ```no_run
//! use actix_web::{web, App, HttpServer, HttpResponse};
//! use actix_ws_manager::{config::ServerConfig, server::{self, Rooms}};
//!
//! #[actix_web::main]
//! async fn main() -> std::io::Result<()> {
//!     let rooms = Rooms::start(ServerConfig::default()).expect("valid config");
//!     HttpServer::new(move || {
//!         App::new()
//!             .configure(rooms.mount("/ws"))
//!             .configure(rooms.mount_echo("/echo"))
//!             .route("/notify", web::post().to(|rooms: web::Data<Rooms>, body: String| async move {
//!                 let n = rooms.publish("lobby", &body).await.unwrap_or(0);
//!                 HttpResponse::Ok().body(format!("{n}"))
//!             }))
//!     })
//!     .on_connect(server::on_connect) // lets the server cut sockets of clients that stop reading
//!     .bind(("127.0.0.1", 8080))?
//!     .run()
//!     .await
//! }
//! ```
//!
//! The hub must be shared by every worker of the `HttpServer`, so it is started once, outside
//! the `App` factory, and `mount` is a method of the shared handle rather than a free function.

pub mod hub;
pub mod session;

use std::net::{SocketAddr, ToSocketAddrs};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;
use actix_web::http::header;
use actix_web::{web, App, HttpRequest, HttpResponse, HttpServer};
use serde::Serialize;
use tokio::sync::Notify;

use crate::config::ServerConfig;
use crate::error::{Error, Result};
use hub::{CloseAll, Counters, GetStats, Hub, HubStats, Publish};
pub use session::{on_connect, on_connect_for, on_connect_with};
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
/// `welcome` as `data.identity` and traced with the session).
pub type AuthHook =
    Arc<dyn Fn(&HttpRequest) -> std::result::Result<Option<String>, AuthRejection> + Send + Sync>;

/// State shared by the handle, the HTTP handlers and every session of one server.
pub(crate) struct Shared {
    pub(crate) config: ServerConfig,
    pub(crate) counters: Arc<Counters>,
    /// Sessions that hold a slot; checked against `max_sessions` before the upgrade.
    active: AtomicUsize,
    next_id: AtomicU64,
    /// Set by shutdown: new upgrades get 503.
    closing: AtomicBool,
    /// Woken each time a session slot is released (shutdown waits on it).
    released: Notify,
}

/// A reserved place under `max_sessions`, released when dropped (by the session actor, whatever
/// ended it, or by a failed upgrade).
pub(crate) struct SessionSlot(Arc<Shared>);

impl SessionSlot {
    fn reserve(shared: &Arc<Shared>) -> Option<Self> {
        let max = shared.config.max_sessions;
        shared
            .active
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < max).then_some(n + 1)
            })
            .ok()
            .map(|_| SessionSlot(shared.clone()))
    }
}

impl Drop for SessionSlot {
    fn drop(&mut self) {
        self.0.active.fetch_sub(1, Ordering::AcqRel);
        self.0.released.notify_waiters();
    }
}

/// The shared handle to one rooms server: its hub, its configuration and its counters. Cheap to
/// clone; clone it into the `HttpServer` factory.
#[derive(Clone)]
pub struct Rooms {
    hub: Addr<Hub>,
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
        config.validate()?;
        let counters = Arc::new(Counters::default());
        let hub = Hub::new(config.slow_consumer, counters.clone()).start();
        Ok(Self {
            hub,
            shared: Arc::new(Shared {
                config,
                counters,
                active: AtomicUsize::new(0),
                next_id: AtomicU64::new(1),
                closing: AtomicBool::new(false),
                released: Notify::new(),
            }),
            auth: None,
        })
    }

    /// Install the authentication hook (see [`AuthHook`]).
    pub fn with_auth<F>(mut self, hook: F) -> Self
    where
        F: Fn(&HttpRequest) -> std::result::Result<Option<String>, AuthRejection>
            + Send
            + Sync
            + 'static,
    {
        self.auth = Some(Arc::new(hook));
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
                    async move { rooms.upgrade(req, body, mode) }
                }),
            );
        }
    }

    /// The upgrade handler: origin, authentication, capacity, then the WebSocket handshake.
    fn upgrade(
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
        let identity = match &self.auth {
            None => None,
            Some(hook) => match hook(&req) {
                Ok(identity) => identity,
                Err(AuthRejection::Unauthorized(why)) => {
                    return Ok(HttpResponse::Unauthorized().body(why))
                }
                Err(AuthRejection::Forbidden(why)) => {
                    return Ok(HttpResponse::Forbidden().body(why))
                }
            },
        };
        if self.shared.closing.load(Ordering::Acquire) {
            return Ok(HttpResponse::ServiceUnavailable().body("server shutting down"));
        }
        let Some(slot) = SessionSlot::reserve(&self.shared) else {
            tracing::warn!(max = config.max_sessions, "upgrade refused: session limit");
            return Ok(HttpResponse::ServiceUnavailable().body("too many sessions"));
        };
        let params = SessionParams {
            id: self.shared.next_id.fetch_add(1, Ordering::Relaxed),
            mode,
            identity,
            hub: self.hub.clone(),
            shared: self.shared.clone(),
            slot,
        };
        session::start(&req, body, params)
    }

    /// Publish `data` into `room` from server code (an HTTP handler, a background task): every
    /// member gets a `message` envelope without `from`. Answers how many members it reached.
    pub async fn publish<T: Serialize + ?Sized>(&self, room: &str, data: &T) -> Result<usize> {
        if !self.shared.config.is_valid_room(room) {
            return Err(Error::BadRoom(room.to_owned()));
        }
        let raw =
            serde_json::value::to_raw_value(data).map_err(|e| Error::Encode(e.to_string()))?;
        Ok(self
            .hub
            .send(Publish {
                room: Arc::from(room),
                from: None,
                data: Some(raw),
            })
            .await?)
    }

    /// A snapshot of the counters.
    pub async fn stats(&self) -> Result<HubStats> {
        Ok(self.hub.send(GetStats).await?)
    }

    /// Sessions holding a slot right now (rooms and echo).
    pub fn sessions(&self) -> usize {
        self.shared.active.load(Ordering::Acquire)
    }

    /// The hub actor, for sending it [`hub`] messages directly.
    pub fn hub(&self) -> Addr<Hub> {
        self.hub.clone()
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
        let told = self.hub.send(CloseAll).await?;
        tracing::info!(sessions = told, "closing every session with 1001");
        let grace = self.shared.config.close_timeout * 2;
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
        let deadline = tokio::time::Instant::now() + within;
        loop {
            let released = self.shared.released.notified();
            tokio::pin!(released);
            released.as_mut().enable();
            if self.sessions() <= at_most {
                return true;
            }
            if tokio::time::timeout_at(deadline, released).await.is_err() {
                return self.sessions() <= at_most;
            }
        }
    }
}

/// A standalone server started by [`serve`]: where it listens, its [`Rooms`], and a graceful
/// [`shutdown`](Self::shutdown).
#[derive(Debug)]
pub struct Server {
    addr: SocketAddr,
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

    /// `ws://<addr><path>`: the rooms endpoint.
    pub fn url(&self) -> String {
        format!("ws://{}{}", self.addr, self.path)
    }

    /// `ws://<addr><echo_path>`: the echo endpoint.
    pub fn echo_url(&self) -> String {
        format!("ws://{}{}", self.addr, self.echo_path)
    }

    /// The shared handle (hub, counters, HTTP-side publish).
    pub fn rooms(&self) -> &Rooms {
        &self.rooms
    }

    /// The hub actor.
    pub fn hub(&self) -> Addr<Hub> {
        self.rooms.hub()
    }

    /// Close every session with 1001 (see [`Rooms::shutdown`]), then stop the HTTP server.
    pub async fn shutdown(self) -> Result<()> {
        let left = self.rooms.shutdown().await?;
        if left > 0 {
            tracing::warn!(sessions = left, "stopping with sessions still open");
        }
        self.handle.stop(true).await;
        Ok(())
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
    let factory_rooms = rooms.clone();
    let (p, e) = (path.to_owned(), echo_path.to_owned());
    let grace = rooms.config().close_timeout + Duration::from_secs(1);
    let server = HttpServer::new(move || {
        App::new()
            .configure(factory_rooms.mount(&p))
            .configure(factory_rooms.mount_echo(&e))
    })
    .on_connect(on_connect_for(rooms.config()))
    .disable_signals()
    .shutdown_timeout(grace.as_secs())
    .bind(bind)?;
    let addr = server
        .addrs()
        .first()
        .copied()
        .ok_or_else(|| Error::Io(std::io::Error::other("bound to no address")))?;
    let running = server.run();
    let handle = running.handle();
    actix_rt::spawn(running);
    tracing::info!(%addr, path, echo_path, "listening");
    Ok(Server {
        addr,
        path: path.to_owned(),
        echo_path: echo_path.to_owned(),
        rooms,
        handle,
    })
}
