//! Admission: who may open a session. The authentication hook and the join check, the limits
//! checked before the upgrade (origin, `max_sessions`, `max_connections_per_ip`), the slot a
//! session holds under them, and the upgrade handler that mounts sessions into an `App`.

use std::any::Any;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use actix_web::dev::Extensions;
use actix_web::http::header;
use actix_web::{web, HttpRequest, HttpResponse};
use serde_json::value::RawValue;

use super::session::{self, Mode, SessionParams, SessionToken};
use super::token::{self, TokenGrant, TokenRefusal};
use super::{socket, NoSlot, Rooms, SessionSlot};

/// Why the authentication hook refused an upgrade request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuthRejection {
    /// No (valid) credentials: HTTP 401 with this body.
    Unauthorized(String),
    /// Credentials, but not allowed here: HTTP 403 with this body.
    Forbidden(String),
}

/// The authentication hook: sees the upgrade request before anything else happens, and either
/// refuses it or lets it through, optionally attaching who the client is
/// ([`Authenticated`]: an identity, sent back in `welcome` as `data.identity`, traced with the
/// session, given to application handlers and the join check, and shown as `from` and in
/// presence; and presence `info`). It is async, so it can check a token against a key service
/// or look a session up in a database; install a plain function with [`Rooms::with_auth`] or an
/// async one with [`Rooms::with_async_auth`] (an identity only), or
/// [`Rooms::with_async_auth_info`] (identity and info).
pub type AuthHook = Arc<
    dyn Fn(HttpRequest) -> futures_util::future::LocalBoxFuture<'static, AuthOutcome> + Send + Sync,
>;

/// What the authentication hook answers: an identity (or none) to let the upgrade through, or
/// why it is refused.
pub type AuthResult = std::result::Result<Option<String>, AuthRejection>;

/// What an authentication hook installed with [`Rooms::with_async_auth_info`] answers.
pub type AuthOutcome = std::result::Result<Authenticated, AuthRejection>;

/// Who a client is, as the authentication hook found: both optional. With JWT authentication
/// ([`Rooms::with_jwt`]) too, what the hook says replaces the token's `sub` and `info`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Authenticated {
    /// The identity (a user id): `from` on the session's publishes, `identity` in presence.
    pub identity: Option<String>,
    /// What presence shows of the session to the other members of its rooms, in place of what
    /// its joins say: JSON of at most 1 KiB ([`MAX_INFO_BYTES`](super::MAX_INFO_BYTES); more is
    /// refused with HTTP 500, a bug of the hook's).
    pub info: Option<serde_json::Value>,
}

/// The per-room join check ([`Rooms::with_join_check`]): may this identity join this room?
pub type JoinCheck = Arc<dyn Fn(Option<&str>, &str) -> bool + Send + Sync>;

impl Rooms {
    /// Install a synchronous authentication hook (see [`AuthHook`]).
    pub fn with_auth<F>(self, hook: F) -> Self
    where
        F: Fn(&HttpRequest) -> AuthResult + Send + Sync + 'static,
    {
        self.with_async_auth(move |req: HttpRequest| std::future::ready(hook(&req)))
    }

    /// Install an async authentication hook (see [`AuthHook`]); it gets the request by value
    /// (cheap: actix's `HttpRequest` is reference counted).
    pub fn with_async_auth<F, Fut>(self, hook: F) -> Self
    where
        F: Fn(HttpRequest) -> Fut + Send + Sync + 'static,
        Fut: std::future::Future<Output = AuthResult> + 'static,
    {
        self.with_async_auth_info(move |req| {
            let answer = hook(req);
            async move {
                answer.await.map(|identity| Authenticated {
                    identity,
                    info: None,
                })
            }
        })
    }

    /// Install an async authentication hook that says who the client is and what presence
    /// shows of it ([`Authenticated`]); see [`AuthHook`].
    pub fn with_async_auth_info<F, Fut>(mut self, hook: F) -> Self
    where
        F: Fn(HttpRequest) -> Fut + Send + Sync + 'static,
        Fut: std::future::Future<Output = AuthOutcome> + 'static,
    {
        self.auth = Some(Arc::new(move |req| Box::pin(hook(req))));
        self
    }

    /// Require a JWT on every upgrade, checked with `config` (see [`JwtConfig`] for what is
    /// checked). The token comes in the `Authorization: Bearer T` header or, from browsers
    /// (which cannot set headers on a WebSocket), the `token` query parameter. A request
    /// without a valid one is answered HTTP 401 with the reason in one line, before the
    /// upgrade and before it takes a session slot, so a flood of bad tokens costs no slot and
    /// never counts against `max_connections_per_ip`.
    ///
    /// A session admitted with a token has its `sub` as identity (`from` on its publishes,
    /// with `session` beside it), may join only the rooms its `rooms` claim lists (exact names,
    /// or prefixes ending in `*`; no claim: any room), is sent `token_expiring` 30 s before
    /// `exp` (at half its life for a shorter token), and is closed with 4001 at `exp` unless it
    /// sends `refresh` with a new token for the same `sub`. An authentication hook
    /// ([`with_auth`](Self::with_auth)) runs after the token is checked; an identity it
    /// returns replaces the `sub`.
    ///
    /// [`JwtConfig`]: crate::config::JwtConfig
    #[cfg(feature = "jwt")]
    pub fn with_jwt(mut self, config: crate::config::JwtConfig) -> Self {
        let config = Arc::new(config);
        self.token_check = Some(Arc::new(move |token: &str| config.check(token)));
        self
    }

    /// The token of `req`, checked, when this server takes tokens: `Ok(None)` without
    /// [`with_jwt`](Self::with_jwt); a refusal is counted and traced here.
    fn admit_token(
        &self,
        req: &HttpRequest,
    ) -> std::result::Result<Option<TokenGrant>, TokenRefusal> {
        let Some(check) = &self.token_check else {
            return Ok(None);
        };
        match token::token_of(req).and_then(|t| check(&t)) {
            Ok(grant) => Ok(Some(grant)),
            Err(refusal) => {
                self.shared.counters.auth_refused[refusal.reason.index()].bump();
                tracing::debug!(
                    ip = ?req.peer_addr().map(|a| a.ip()),
                    reason = refusal.reason.label(),
                    "upgrade refused: {}",
                    refusal.message
                );
                Err(refusal)
            }
        }
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

    /// The upgrade handler: origin, the handshake's headers and shutdown (cheap checks first),
    /// the token, capacity, then the authentication hook, then the WebSocket handshake.
    async fn upgrade(
        &self,
        req: HttpRequest,
        body: web::Payload,
        mode: Mode,
    ) -> std::result::Result<HttpResponse, actix_web::Error> {
        let config = &self.shared.config;
        if let Some(refused) = self.refused_before_anything(&req) {
            return Ok(refused);
        }
        // A token is checked before a slot is taken: it costs CPU only (no I/O), and a refused
        // one must cost no slot that a client with a good token could have had.
        let grant = match self.admit_token(&req) {
            Ok(grant) => grant,
            Err(refusal) => {
                return Ok(HttpResponse::Unauthorized()
                    .insert_header((header::WWW_AUTHENTICATE, "Bearer error=\"invalid_token\""))
                    .body(refusal.message))
            }
        };
        let ip = req.peer_addr().map(|a| a.ip());
        let slot = match SessionSlot::reserve(&self.shared, ip) {
            Ok(slot) => slot,
            Err(NoSlot::Server) => {
                tracing::warn!(max = config.max_sessions, "upgrade refused: session limit");
                return Ok(HttpResponse::ServiceUnavailable().body("too many sessions"));
            }
            Err(NoSlot::Address) => {
                self.shared.counters.per_ip_refusals.bump();
                tracing::info!(?ip, "upgrade refused: connection limit for this address");
                return Ok(
                    HttpResponse::TooManyRequests().body("too many connections from this address")
                );
            }
        };
        let sub = grant.as_ref().and_then(|g| g.sub.clone());
        let (identity, info) = match self.authenticate(&req, sub).await {
            Ok(who) => who,
            Err(refused) => return Ok(*refused),
        };
        // The hook may have waited through the start of a shutdown.
        if self.shared.closing.load(Ordering::Acquire) {
            return Ok(HttpResponse::ServiceUnavailable().body("server shutting down"));
        }
        let params = SessionParams {
            id: self.shared.next_session_id(),
            mode,
            identity,
            info,
            token: grant
                .zip(self.token_check.clone())
                .map(|(g, c)| SessionToken::new(g, c)),
            hub: self.commands.clone(),
            shared: self.shared.clone(),
            slot,
        };
        session::start(&req, body, params)
    }

    /// The answer to a request refused by what costs nothing: an origin not allowed, not a
    /// WebSocket handshake, a server shutting down. Checked before the token, the limits and
    /// the authentication hook, which may be slow (a database, another service): a plain GET
    /// or a closing server never gets an auth call in flight.
    fn refused_before_anything(&self, req: &HttpRequest) -> Option<HttpResponse> {
        if let Some(allowed) = &self.shared.config.allowed_origins {
            if let Some(origin) = req.headers().get(header::ORIGIN) {
                let ok = origin
                    .to_str()
                    .is_ok_and(|o| allowed.iter().any(|a| a == o));
                if !ok {
                    tracing::info!(?origin, "upgrade refused: origin not allowed");
                    return Some(HttpResponse::Forbidden().body("origin not allowed"));
                }
            }
        }
        if let Err(e) = actix_http::ws::verify_handshake(req.head()) {
            tracing::debug!("upgrade refused: not a WebSocket handshake: {e}");
            return Some(HttpResponse::from_error(e));
        }
        if self.shared.closing.load(Ordering::Acquire) {
            return Some(HttpResponse::ServiceUnavailable().body("server shutting down"));
        }
        None
    }

    /// Who the client is: the authentication hook's answer (its identity over the token's
    /// `sub`, and its presence info checked against 1 KiB), or the response refusing it. The
    /// slot reserved before keeps counting toward the limits while the hook runs.
    async fn authenticate(
        &self,
        req: &HttpRequest,
        sub: Option<String>,
    ) -> std::result::Result<(Option<String>, Option<Arc<RawValue>>), Box<HttpResponse>> {
        let Some(hook) = &self.auth else {
            return Ok((sub, None));
        };
        let who = match hook(req.clone()).await {
            Ok(who) => who,
            Err(AuthRejection::Unauthorized(why)) => {
                return Err(Box::new(HttpResponse::Unauthorized().body(why)))
            }
            Err(AuthRejection::Forbidden(why)) => {
                return Err(Box::new(HttpResponse::Forbidden().body(why)))
            }
        };
        let info = match who.info.map(|info| serde_json::value::to_raw_value(&info)) {
            None => None,
            Some(Ok(raw)) if raw.get().len() <= super::MAX_INFO_BYTES => Some(Arc::from(raw)),
            Some(Ok(raw)) => {
                tracing::error!(len = raw.get().len(), "the auth hook's info is over 1 KiB");
                let refused = HttpResponse::InternalServerError().body("presence info over 1 KiB");
                return Err(Box::new(refused));
            }
            Some(Err(e)) => {
                tracing::error!("the auth hook's info does not serialise: {e}");
                let refused = HttpResponse::InternalServerError().body("presence info unusable");
                return Err(Box::new(refused));
            }
        };
        Ok((who.identity.or(sub), info))
    }

    /// The hook to install with `HttpServer::on_connect(rooms.on_connect())`: it applies this
    /// configuration's [`tcp_send_buffer`](crate::config::ServerConfig::tcp_send_buffer) and
    /// [`tcp_user_timeout`](crate::config::ServerConfig::tcp_user_timeout) to every accepted socket, and, when
    /// [`keep_socket_handle`](crate::config::ServerConfig::keep_socket_handle) is on, keeps a duplicate
    /// descriptor so that the server can cut the socket of a client that stopped reading (see
    /// the `server` module docs). Without it, those three settings have no effect.
    /// [`serve`](super::serve) installs it.
    pub fn on_connect(&self) -> impl Fn(&dyn Any, &mut Extensions) + Send + Sync + 'static {
        socket::on_connect_for(&self.shared.config)
    }
}
