//! The [`Session`] actor: one per client, and the only file that touches the WebSocket transport.
//!
//! # Why not actix-web-actors, and why not actix-ws either
//!
//! actix-web-actors' `WebsocketContext` buffers outgoing frames without bound inside the actor's
//! context, messages sent to it with `do_send` pile up in its mailbox, and an actor whose writes
//! stall stops running its timers (actix-web issue 2441; `tests/server_actors_limit.rs` shows it
//! on this stack). A client that stops reading would grow server memory without bound, and the
//! heartbeat that should notice it would never fire; neither can be fixed from outside that
//! context. actix-ws avoids that, but its `Session` hands every frame through a channel of its
//! own to the response body, which needed a writer task in front of it: three queues and a task
//! per client, about 7 KB of an idle session's heap (see [`outbox`](super::outbox) and
//! `BENCHMARKS.md`). So the handshake is actix-http's (`actix_http::ws::handshake`) and each
//! client gets two pieces:
//!
//! - the **`Session` actor** (still one actix actor per client): it reads frames from a
//!   [`FrameReader`] (`add_stream`), speaks the rooms protocol (or echoes), owns the session's
//!   room membership, and runs the heartbeat timer. It never awaits a socket write, so nothing
//!   a client does can stop its timers;
//! - its **[`Outbox`]**: a *bounded* queue of
//!   [`session_queue`](crate::config::ServerConfig::session_queue) data frames, with control
//!   frames ahead of data, which *is* the HTTP response body: actix-http polls it whenever the
//!   socket can take more and writes the encoded frames. The actor and the
//!   [`Hub`](super::hub::Hub) only ever `try_send` into it; a full queue applies
//!   [`slow_consumer`](crate::config::ServerConfig::slow_consumer).
//!
//! # Closing and cutting a stuck socket
//!
//! When the server closes a session (shutdown 1001, heartbeat 1001, slow consumer 1013, rate
//! limit 1008, a protocol fault) it leaves every room at once, sends its close frame on the
//! control lane (behind at most 64 KiB of the data queued before it, the rest dropped: the
//! close code must not wait behind a backlog that outlasts `close_timeout`) and keeps reading, discarding data, until the client's close frame arrives or
//! [`close_timeout`](crate::config::ServerConfig::close_timeout) passes: the closing handshake
//! of RFC 6455, so a client that is still sending reads the server's code rather than a reset.
//! A close frame cannot be written to a socket whose peer stopped reading: for a heartbeat
//! timeout or a slow consumer the outbox drops its backlog first ([`Outbox::kill`]). When the
//! handshake does not complete in time the body is ended and, when the HTTP server installs
//! [`Rooms::on_connect`](super::Rooms::on_connect) (as [`serve`](super::serve) does), the TCP
//! socket is shut down with `SO_LINGER` 0, which wakes actix-http's stalled dispatcher with an
//! error so it drops the connection. Without the hook the stalled connection holds only the
//! bounded outbox and actix-http's bounded write buffer until TCP gives up.
//!
//! # Inbound limits
//!
//! Frames are read by the shared frame layer ([`crate::ws`]): a [`FrameReader`] over the raw
//! request payload refuses a frame whose *header* declares more than
//! [`max_message_size`](crate::config::ServerConfig::max_message_size) (1009) before any of its
//! payload is buffered (actix-ws's `MessageStream` would buffer it all first), and an [`Assembler`] puts fragments together with the same cap, checking UTF-8 as they
//! arrive (1007). Every command to the hub goes through its bounded FIFO queue: when it is
//! full the session stops reading until there is room. An optional token bucket
//! ([`rate_limit`](crate::config::ServerConfig::rate_limit)) bounds what one client can make the
//! server do.

use std::any::Any;
use std::collections::HashSet;
use std::net::Shutdown;
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::prelude::*;
use actix_http::body::MessageBody;
use actix_http::ws::CloseReason;
use actix_http::ws::Frame;
use actix_web::dev::Extensions;
use actix_web::{web, HttpRequest, HttpResponse};
use bytes::Bytes;
use bytestring::ByteString;
use serde_json::value::RawValue;
use tokio::sync::mpsc::error::TrySendError;

use super::hub::{Command, Evict, EvictReason, HubSender, Outbound, Publish, SessionId};
use super::outbox::{outbox_with_bytes, Outbox, OutboxWatch, Refused};
use super::Shared;
use crate::config::{RateLimit, ServerConfig, SlowConsumerPolicy};
use crate::envelope::{encode_parts, Head, WireMessage};
use crate::protocol::{self, codes};
use crate::ws::{close, Assembler, Event, Fault, FrameCodec, FrameReader};

/// Which endpoint a session serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Mode {
    /// The rooms protocol of DESIGN.md.
    Rooms,
    /// Plain echo: every text or binary message goes back verbatim.
    Echo,
}

/// A handle that can shut the TCP socket under a connection down, from outside actix-http's
/// dispatcher (which cannot be woken while its writes are stalled). Holds a duplicate of the
/// socket's descriptor, so it never acts on a reused descriptor number; dropped with the session.
#[derive(Debug, Clone)]
pub struct SocketCutter(Arc<socket2::Socket>);

impl SocketCutter {
    /// Reset the connection: linger 0 (so closing discards unsent data) and shut down both
    /// directions, which wakes the dispatcher with an error. Errors (a socket already closed)
    /// are ignored: the goal is reached either way.
    fn cut(&self) {
        let _ = self.0.set_linger(Some(Duration::ZERO));
        let _ = self.0.shutdown(Shutdown::Both);
    }

    /// End a connection whose closing handshake is complete: shut down our sending direction,
    /// so the client reads the end of the stream after our close frame (RFC 6455 7.1.1: the
    /// server closes the TCP connection first). actix-http would otherwise keep the connection
    /// until its own timers end it (about a second), and clients that wait for the server to
    /// close, such as Autobahn|Testsuite, give up and drop it themselves. Bytes already handed
    /// to the kernel go out before the FIN; errors (a socket already gone) are ignored.
    fn finish(&self) {
        let _ = self.0.shutdown(Shutdown::Write);
    }
}

/// The `on_connect` hook for a [`ServerConfig`]; [`Rooms::on_connect`](super::Rooms::on_connect)
/// is the public way to get it.
pub(crate) fn on_connect_for(
    config: &ServerConfig,
) -> impl Fn(&dyn Any, &mut Extensions) + Send + Sync + 'static {
    let (send_buffer, user_timeout, keep) = (
        config.tcp_send_buffer,
        config.tcp_user_timeout,
        config.keep_socket_handle,
    );
    move |conn, ext| configure_socket(conn, ext, send_buffer, user_timeout, keep)
}

fn configure_socket(
    conn: &dyn Any,
    ext: &mut Extensions,
    send_buffer: Option<usize>,
    user_timeout: Option<Duration>,
    keep_handle: bool,
) {
    if let Some(tcp) = conn.downcast_ref::<actix_web::rt::net::TcpStream>() {
        let sock = socket2::SockRef::from(tcp);
        if let Some(bytes) = send_buffer {
            if let Err(e) = sock.set_send_buffer_size(bytes) {
                tracing::debug!("cannot set SO_SNDBUF: {e}");
            }
        }
        #[cfg(any(target_os = "linux", target_os = "android"))]
        if let Some(timeout) = user_timeout {
            if let Err(e) = sock.set_tcp_user_timeout(Some(timeout)) {
                tracing::debug!("cannot set TCP_USER_TIMEOUT: {e}");
            }
        }
        #[cfg(not(any(target_os = "linux", target_os = "android")))]
        let _ = user_timeout;
        if !keep_handle {
            return;
        }
        match sock.try_clone() {
            Ok(sock) => {
                ext.insert(SocketCutter(Arc::new(sock)));
            }
            Err(e) => tracing::debug!("cannot keep a handle on the socket: {e}"),
        }
    }
}

/// Everything a new session needs; built by the HTTP handler after the upgrade was accepted.
pub(crate) struct SessionParams {
    pub(crate) id: SessionId,
    pub(crate) mode: Mode,
    pub(crate) identity: Option<String>,
    pub(crate) hub: HubSender,
    pub(crate) shared: Arc<Shared>,
    /// Released when the session actor is dropped (whatever ended it).
    pub(crate) slot: super::SessionSlot,
}

/// Upgrade the request and start the session's actor; its outbox is the response body.
pub(crate) fn start(
    req: &HttpRequest,
    body_payload: web::Payload,
    params: SessionParams,
) -> Result<HttpResponse, actix_web::Error> {
    let config = &params.shared.config;
    // The handshake is actix-http's; the response body is the session's outbox, which
    // actix-http polls and writes (see `super::outbox` for why no writer task and no actix-ws
    // `Session`). The reading side is the frame layer's guarded reader.
    let mut response = actix_http::ws::handshake(req.head())?;
    let (outbox, body) = outbox_with_bytes(config.session_queue, config.session_queue_bytes);
    let response = response.message_body(MessageBody::boxed(body))?.into();
    let reader = Paced {
        frames: FrameReader::new(
            body_payload.into_inner(),
            FrameCodec::server(config.max_message_size),
        )
        .gated(req.conn_data::<crate::ws::ReadGate>().cloned()),
        outbox: outbox.watch(),
    };
    let cutter = req.conn_data::<SocketCutter>().cloned();
    let bucket = config.rate_limit.map(Bucket::new);
    let assembler = Assembler::new(config.max_message_size);
    Session::create(move |ctx| {
        ctx.add_stream(reader);
        Session {
            id: params.id,
            name: match &params.shared.node_id {
                Some(node) => Arc::from(format!("{node}.s-{}", params.id)),
                None => Arc::from(format!("s-{}", params.id)),
            },
            mode: params.mode,
            identity: params.identity,
            hub: params.hub,
            registered: false,
            outbox: Some(outbox),
            cutter,
            closing: false,
            peer_closed: false,
            rooms: HashSet::new(),
            last_heard: Instant::now(),
            assembler,
            bucket,
            shared: params.shared,
            _slot: params.slot,
        }
    });
    Ok(response)
}

/// The session's frames, read only while its outbox's control lane has room: every frame read
/// can make one control frame (a pong, the reply to a close), and a pong must never be skipped
/// ("every ping answered"). While a client does not read our pongs the lane stays full, this
/// stream stays pending, actix-http stops reading the socket, and the client's further pings
/// wait in TCP: memory stays bounded, and the client, heard from no more, meets the heartbeat
/// timeout (the heartbeat runs on the actor's timer, not on this stream).
struct Paced<S> {
    frames: S,
    outbox: OutboxWatch,
}

impl<S: Stream + Unpin> Stream for Paced<S> {
    type Item = S::Item;

    fn poll_next(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<S::Item>> {
        let this = self.get_mut();
        std::task::ready!(this.outbox.poll_control_room(cx));
        std::pin::Pin::new(&mut this.frames).poll_next(cx)
    }
}

/// A session's token bucket (see [`RateLimit`]).
struct Bucket {
    tokens: f64,
    last: Instant,
    per_second: f64,
    burst: f64,
}

/// What the bucket says about one message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Verdict {
    /// Within the limit.
    Pass,
    /// Past the limit: refuse it (`rate_limited`), the session stays.
    Refuse,
    /// `burst` messages past the limit: close with 1008.
    Close,
}

impl Bucket {
    fn new(limit: RateLimit) -> Self {
        Self {
            tokens: f64::from(limit.burst),
            last: Instant::now(),
            per_second: f64::from(limit.per_second),
            burst: f64::from(limit.burst),
        }
    }

    /// Take a token for one message. Refused messages take one too (the bucket goes into
    /// debt), so a client must actually slow down to be served again.
    fn take(&mut self) -> Verdict {
        let now = Instant::now();
        let refill = now.duration_since(self.last).as_secs_f64() * self.per_second;
        self.last = now;
        self.tokens = (self.tokens + refill).min(self.burst) - 1.0;
        if self.tokens >= 0.0 {
            Verdict::Pass
        } else if self.tokens < -self.burst {
            Verdict::Close
        } else {
            Verdict::Refuse
        }
    }
}

/// One client. See the module docs for how it splits work with its outbox.
pub struct Session {
    id: SessionId,
    /// `s-<id>`: what the client is told in `welcome` and what appears as `from`.
    name: Arc<str>,
    mode: Mode,
    /// What the authentication hook attached, if anything; sent in `welcome` and traced.
    identity: Option<String>,
    /// The hub's bounded command queue.
    hub: HubSender,
    /// Whether the hub knows this session (it is told to forget it once, when closing starts).
    registered: bool,
    /// The bounded outbound queue (data, and control frames ahead of data), read by the
    /// response body; `None` once the session has stopped.
    outbox: Option<Outbox>,
    cutter: Option<SocketCutter>,
    /// The session has sent (or queued) its close frame and waits for the client's; no data
    /// frame is offered to the outbox after that.
    closing: bool,
    /// The client's close frame arrived: the closing handshake is complete.
    peer_closed: bool,
    /// Rooms this session is in: the protocol's checks (limit, `not_joined`) happen here without
    /// asking the hub.
    rooms: HashSet<Arc<str>>,
    /// When anything last arrived from the client; the heartbeat compares it with the timeout.
    last_heard: Instant,
    assembler: Assembler,
    bucket: Option<Bucket>,
    shared: Arc<Shared>,
    _slot: super::SessionSlot,
}

impl Actor for Session {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        if let Some(queue) = &self.outbox {
            let connect = Command::Connect {
                id: self.id,
                queue: queue.clone(),
                evict: ctx.address().recipient(),
            };
            self.registered = true;
            self.submit(connect, None, ctx);
        }
        tracing::debug!(session = %self.name, identity = ?self.identity, mode = ?self.mode, "session started");
        if self.mode == Mode::Rooms {
            let mut data = serde_json::json!({ "session": &*self.name });
            if let Some(identity) = &self.identity {
                data["identity"] = serde_json::Value::from(identity.as_str());
            }
            let raw = serde_json::value::to_raw_value(&data).ok();
            let text = encode_parts(
                protocol::Welcome::TYPE,
                None,
                None,
                None,
                None,
                raw.as_deref(),
                None,
            );
            self.send(Outbound::Text(text), ctx);
        }
        let interval = self.shared.config.heartbeat_interval;
        ctx.run_interval(interval, Self::heartbeat);
        // Shutdown reaches every session through this signal, including one that starts while
        // the server is already shutting down (it sees the value already set).
        let mut shutdown = self.shared.shutdown.subscribe();
        if *shutdown.borrow_and_update() {
            return self.close(close::AWAY, "server shutdown", ctx);
        }
        ctx.spawn(
            async move { shutdown.changed().await.is_ok() }
                .into_actor(self)
                .map(|signalled, act, ctx| {
                    if signalled {
                        act.close(close::AWAY, "server shutdown", ctx);
                    }
                }),
        );
    }

    fn stopping(&mut self, _: &mut Context<Self>) -> Running {
        self.leave_hub();
        Running::Stop
    }

    fn stopped(&mut self, _: &mut Context<Self>) {
        let Some(outbox) = self.outbox.take() else {
            return;
        };
        let watch = outbox.watch();
        // Our handle no longer keeps the body open: once the hub drops its own, the body
        // writes what is queued and ends.
        drop(outbox);
        let cutter = self.cutter.take();
        let grace = self.shared.config.close_timeout;
        let complete = self.peer_closed;
        let name = self.name.clone();
        actix_rt::spawn(async move {
            // After a complete handshake only our close frame (or the reply to the client's)
            // is left to write; otherwise the wait for the client already took
            // `close_timeout`, or the connection is gone: stop at once.
            let finished = complete && tokio::time::timeout(grace, watch.finished()).await.is_ok();
            if finished {
                if let Some(cutter) = cutter {
                    // The body ended in actix-http's last poll, which wrote the close frame out
                    // before this task could run (same thread); give it one more turn anyway.
                    actix_rt::task::yield_now().await;
                    cutter.finish();
                }
            } else {
                watch.abort();
                if let Some(cutter) = cutter {
                    tracing::debug!(session = %name, "cutting the socket");
                    cutter.cut();
                }
            }
        });
        tracing::debug!(session = %self.name, "session stopped");
    }
}

impl Session {
    /// Offer a data frame to the outbox; a full queue applies the slow-consumer policy.
    fn send(&mut self, out: Outbound, ctx: &mut Context<Self>) {
        let Some(queue) = self.outbox.as_ref().filter(|_| !self.closing) else {
            return;
        };
        let len = out.len();
        match queue.try_send(out) {
            Ok(depth) => self.shared.counters.delivered(len, depth),
            Err(Refused::Full(_)) => match self.shared.config.slow_consumer {
                SlowConsumerPolicy::DropNewest => {
                    self.shared
                        .counters
                        .dropped
                        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                }
                SlowConsumerPolicy::Disconnect => {
                    self.shared
                        .counters
                        .slow_consumer_disconnects
                        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    tracing::warn!(session = %self.name, "slow consumer: queue full; disconnecting");
                    self.cut(close::TRY_AGAIN, "slow consumer", ctx);
                }
            },
            Err(Refused::Closed(_)) => ctx.stop(),
        }
    }

    /// Offer a control frame to the outbox on its own path: it goes ahead of queued data and is
    /// never dropped for a full data queue. A frame is read only while the control path has
    /// room ([`Paced`]), so a pong or a close reply always fits; only the heartbeat's own ping
    /// can find the path full (the client stopped reading) and is then skipped: the heartbeat
    /// timeout deals with such a client.
    fn send_control(&mut self, out: Outbound) {
        let sent = self
            .outbox
            .as_ref()
            .is_some_and(|c| c.try_send_control(out).is_ok());
        if !sent {
            tracing::debug!(session = %self.name, "control path full or closed; frame skipped");
        }
    }

    /// Hand a command to the hub, then send `reply` (if any) to the client: a reply is only
    /// sent once its command is in the hub's queue, so whatever the client does next (or asks
    /// `Rooms::stats` for) already sees it. When the queue is full the session waits for room
    /// before it does anything else (it reads no frame meanwhile, so TCP slows its client): the
    /// command keeps its place, and this session's commands reach the hub in the order given.
    fn submit(&mut self, cmd: Command, reply: Option<Outbound>, ctx: &mut Context<Self>) {
        match self.hub.try_send(cmd) {
            Ok(()) => {}
            Err(TrySendError::Full(cmd)) => {
                let hub = self.hub.clone();
                ctx.wait(
                    async move { hub.send(cmd).await.is_ok() }
                        .into_actor(self)
                        .map(|_, act, ctx| {
                            // Nothing was read while waiting: that silence is ours, not the client's.
                            act.last_heard = Instant::now();
                            if let Some(reply) = reply {
                                act.send(reply, ctx);
                            }
                        }),
                );
                return;
            }
            Err(TrySendError::Closed(_)) => {
                tracing::debug!(session = %self.name, "hub gone; command dropped");
            }
        }
        if let Some(reply) = reply {
            self.send(reply, ctx);
        }
    }

    /// Tell the hub to forget this session (once): no more broadcasts reach it.
    fn leave_hub(&mut self) {
        if !std::mem::take(&mut self.registered) {
            return;
        }
        let cmd = Command::Disconnect { id: self.id };
        if let Err(TrySendError::Full(cmd)) = self.hub.try_send(cmd) {
            // The session may be stopping and cannot wait; one task per session at most, and the
            // session's earlier commands are already in the queue ahead of it.
            let hub = self.hub.clone();
            actix_rt::spawn(async move {
                let _ = hub.send(cmd).await;
            });
        }
    }

    /// Start the closing handshake: leave every room, send nothing more, and wait up to
    /// `close_timeout` for the client's close frame (read, data discarded, in the meantime).
    fn begin_closing(&mut self, ctx: &mut Context<Self>) {
        self.closing = true;
        self.leave_hub();
        ctx.run_later(self.shared.config.close_timeout, |act, ctx| {
            tracing::debug!(session = %act.name, "no close frame from the client in time");
            ctx.stop();
        });
    }

    /// Close: queue the close frame on the control lane, then wait for the client's. Of the
    /// data frames still queued, at most one chunk (64 KiB, or one message) is written ahead of
    /// the close and the rest is dropped (nothing follows a close frame, RFC 6455): so a reply
    /// to what the client sent just before a fault still reaches it, but the close code never
    /// waits behind a backlog that a slow client reads, which would arrive after
    /// `close_timeout` cut the socket and leave the client an abnormal end (1006) instead of,
    /// say, a rate limit's 1008, on which this crate's client stops rather than reconnects.
    fn close(&mut self, code: u16, reason: &str, ctx: &mut Context<Self>) {
        if self.closing {
            return;
        }
        tracing::debug!(session = %self.name, code, reason, "closing");
        let queued = self.outbox.as_ref().is_some_and(|q| {
            q.try_send_control(Outbound::Close(code, reason.to_owned()))
                .is_ok()
        });
        if !queued {
            // The control lane is full: the client is not reading.
            return self.cut(code, reason, ctx);
        }
        self.begin_closing(ctx);
    }

    /// Close a stuck or silent client: the outbox drops its backlog and tries the close frame;
    /// the socket is cut if the client has not answered within `close_timeout`.
    fn cut(&mut self, code: u16, reason: &str, ctx: &mut Context<Self>) {
        if self.closing {
            return;
        }
        if let Some(outbox) = &self.outbox {
            outbox.kill(code, reason);
        }
        self.begin_closing(ctx);
    }

    /// The heartbeat: runs on the actor's own timer, which no socket write can block.
    fn heartbeat(&mut self, ctx: &mut Context<Self>) {
        if self.closing {
            return;
        }
        let timeout = self.shared.config.heartbeat_timeout;
        if self.last_heard.elapsed() > timeout {
            self.shared
                .counters
                .heartbeat_timeouts
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            tracing::info!(session = %self.name, ?timeout, "heartbeat timeout; disconnecting");
            return self.cut(close::AWAY, "heartbeat timeout", ctx);
        }
        self.send_control(Outbound::Ping(Bytes::new()));
    }

    /// Apply the rate limit to one whole message; answers whether to handle it. `id` is the
    /// request id to refuse it with, when known.
    fn admit(&mut self, id: Option<u64>, ctx: &mut Context<Self>) -> bool {
        let Some(bucket) = self.bucket.as_mut() else {
            return true;
        };
        let counters = &self.shared.counters;
        match bucket.take() {
            Verdict::Pass => true,
            Verdict::Refuse => {
                counters
                    .rate_limited
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                if self.mode == Mode::Rooms {
                    self.error(
                        id,
                        codes::RATE_LIMITED,
                        "rate limit exceeded; slow down",
                        ctx,
                    );
                }
                false
            }
            Verdict::Close => {
                counters
                    .rate_limit_disconnects
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                tracing::info!(session = %self.name, "rate limit: still sending at twice the burst; closing");
                self.close(close::POLICY, "rate limit exceeded", ctx);
                false
            }
        }
    }

    /// Send an `error` envelope; the session stays open.
    fn error(&mut self, id: Option<u64>, code: &str, message: &str, ctx: &mut Context<Self>) {
        let reply = protocol::ErrorReply {
            code: code.to_owned(),
            message: message.to_owned(),
        };
        let raw = serde_json::value::to_raw_value(&reply).ok();
        let text = encode_parts(
            protocol::ErrorReply::TYPE,
            id,
            None,
            None,
            None,
            raw.as_deref(),
            None,
        );
        self.send(Outbound::Text(text), ctx);
    }

    /// A reply envelope with only a type, an id, a room and data.
    fn envelope(
        kind: &str,
        id: Option<u64>,
        room: Option<&str>,
        data: Option<&RawValue>,
    ) -> Outbound {
        Outbound::Text(encode_parts(kind, id, room, None, None, data, None))
    }

    /// Send a reply envelope with only a type, an id, a room and data.
    fn reply(
        &mut self,
        kind: &str,
        id: Option<u64>,
        room: Option<&str>,
        data: Option<&RawValue>,
        ctx: &mut Context<Self>,
    ) {
        let out = Self::envelope(kind, id, room, data);
        self.send(out, ctx);
    }

    /// A whole text message (unfragmented, or put together).
    fn on_text(&mut self, text: ByteString, ctx: &mut Context<Self>) {
        self.shared.counters.received(text.len());
        if self.mode == Mode::Echo {
            if self.admit(None, ctx) {
                self.send(Outbound::Text(text), ctx);
            }
            return;
        }
        let head = match Head::parse(&text) {
            Ok(head) => head,
            Err(e) => {
                if !self.admit(None, ctx) {
                    return;
                }
                let msg = format!("not a JSON object with a string \"type\": {e}");
                return self.error(None, codes::MALFORMED, &msg, ctx);
            }
        };
        let id = head.id;
        if !self.admit(id, ctx) {
            return;
        }
        let kind = head.kind.as_ref();
        if kind == protocol::Join::TYPE {
            let Some(room) = self.checked_room(&head, ctx) else {
                return;
            };
            if !self.rooms.contains(room.as_ref()) {
                if !self.may_join(&room) {
                    let msg = format!("not allowed to join room {room:?}");
                    return self.error(id, codes::FORBIDDEN_ROOM, &msg, ctx);
                }
                if self.rooms.len() >= self.shared.config.max_rooms_per_session {
                    let msg = format!(
                        "a session may be in at most {} rooms",
                        self.shared.config.max_rooms_per_session
                    );
                    return self.error(id, codes::TOO_MANY_ROOMS, &msg, ctx);
                }
                self.rooms.insert(room.clone());
                let joined = Self::envelope(protocol::Joined::TYPE, id, Some(&room), None);
                // With other nodes, the hub answers once this node receives the room.
                let (reply, joined) = if self.shared.remote_backplane {
                    (Some(joined), None)
                } else {
                    (None, Some(joined))
                };
                let join = Command::Join {
                    id: self.id,
                    room: room.clone(),
                    reply,
                };
                return self.submit(join, joined, ctx);
            }
            self.reply(protocol::Joined::TYPE, id, Some(&room), None, ctx);
        } else if kind == protocol::Leave::TYPE {
            let Some(room) = self.checked_room(&head, ctx) else {
                return;
            };
            if !self.rooms.remove(room.as_ref()) {
                let msg = format!("not a member of room {room:?}");
                return self.error(id, codes::NOT_JOINED, &msg, ctx);
            }
            let leave = Command::Leave {
                id: self.id,
                room: room.clone(),
            };
            let left = Self::envelope(protocol::Left::TYPE, id, Some(&room), None);
            self.submit(leave, Some(left), ctx);
        } else if kind == protocol::Publish::TYPE {
            let Some(room) = self.checked_room(&head, ctx) else {
                return;
            };
            // Rule: only members publish to a room, so a typo in a room name is an error the
            // publisher sees rather than a message that silently reaches nobody.
            let Some(room) = self.rooms.get(room.as_ref()).cloned() else {
                let msg = format!("join room {room:?} before publishing to it");
                return self.error(id, codes::NOT_JOINED, &msg, ctx);
            };
            let event = match head.event.as_deref() {
                None => None,
                Some(event) if protocol::is_valid_event(event) => Some(Arc::from(event)),
                Some(event) => {
                    let msg = format!(
                        "event {event:?} must be 1 to 64 characters of A-Z a-z 0-9 _ . : - and \
                         not one of the protocol's own types ({})",
                        protocol::RESERVED_TYPES.join(" ")
                    );
                    return self.error(id, codes::BAD_EVENT, &msg, ctx);
                }
            };
            // With other nodes, the hub answers once the backplane took it (or says it could
            // not); otherwise the ack goes once the publish is in the hub's queue.
            let remote = self.shared.remote_backplane;
            let publish = Command::Publish(Publish {
                room,
                from: Some(self.name.clone()),
                event,
                data: head.data.map(ToOwned::to_owned),
                reached: None,
                reply_to: id.filter(|_| remote).map(|id| (self.id, id)),
            });
            let ack = id
                .filter(|_| !remote)
                .map(|_| Self::envelope(protocol::Ack::TYPE, id, None, None));
            self.submit(publish, ack, ctx);
        } else if kind == protocol::Echo::TYPE {
            let data = head.data.map(ToOwned::to_owned);
            self.reply(protocol::Echo::TYPE, id, None, data.as_deref(), ctx);
        } else if kind == protocol::Ping::TYPE {
            self.reply(protocol::Pong::TYPE, id, None, None, ctx);
        } else if let Some(handler) = self.handler(kind) {
            let sender = super::handler::MessageContext {
                session: self.id,
                identity: self.identity.clone(),
                id,
                room: head.room.as_deref().map(str::to_owned),
                rooms: super::Rooms {
                    commands: self.hub.clone(),
                    shared: self.shared.clone(),
                    auth: None,
                },
            };
            match handler(sender, head.data) {
                // The next message of this client is read when the handler is done: in order,
                // and a slow handler slows its own client only.
                Ok(fut) => {
                    ctx.wait(actix::fut::wrap_future::<_, Self>(fut));
                }
                Err(e) => {
                    let msg = format!("data of {kind:?} does not decode: {e}");
                    self.error(id, codes::BAD_DATA, &msg, ctx);
                }
            }
        } else {
            let msg = format!("unknown message type {kind:?}");
            self.error(id, codes::UNKNOWN_TYPE, &msg, ctx);
        }
    }

    /// What the join check (if any) says about this session joining `room`.
    fn may_join(&self, room: &str) -> bool {
        let check = self
            .shared
            .join_check
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        check.is_none_or(|check| check(self.identity.as_deref(), room))
    }

    /// The application handler for message type `kind`, if one is registered.
    fn handler(&self, kind: &str) -> Option<super::handler::ErasedHandler> {
        let handlers = self
            .shared
            .handlers
            .read()
            .unwrap_or_else(|e| e.into_inner());
        handlers.get(kind).cloned()
    }

    /// The envelope's room if it follows the rules; otherwise answers `bad_room`.
    fn checked_room(&mut self, head: &Head<'_>, ctx: &mut Context<Self>) -> Option<Arc<str>> {
        match head.room.as_deref() {
            Some(room) if self.shared.config.is_valid_room(room) => Some(Arc::from(room)),
            other => {
                let msg = format!(
                    "room {other:?} must be 1 to {} characters of A-Z a-z 0-9 _ . : -",
                    self.shared.config.max_room_name_len
                );
                self.error(head.id, codes::BAD_ROOM, &msg, ctx);
                None
            }
        }
    }

    /// A whole binary message.
    fn on_binary(&mut self, bytes: Bytes, ctx: &mut Context<Self>) {
        self.shared.counters.received(bytes.len());
        if !self.admit(None, ctx) {
            return;
        }
        match self.mode {
            Mode::Echo => self.send(Outbound::Binary(bytes), ctx),
            Mode::Rooms => self.error(
                None,
                codes::BINARY_UNSUPPORTED,
                "the rooms endpoint speaks JSON text frames only",
                ctx,
            ),
        }
    }

    /// The client's close frame: answer it (unless we closed first) and end the session.
    fn on_close(&mut self, reason: Option<CloseReason>, ctx: &mut Context<Self>) {
        self.peer_closed = true;
        if !self.closing {
            let code = close::reply_to(reason.map(|r| u16::from(r.code)));
            self.send_control(Outbound::Close(code, String::new()));
            self.closing = true;
        }
        ctx.stop();
    }
}

/// Handler for the client's frames, read by the frame layer.
impl StreamHandler<Result<Frame, Fault>> for Session {
    fn handle(&mut self, item: Result<Frame, Fault>, ctx: &mut Context<Self>) {
        self.last_heard = Instant::now();
        if self.closing {
            // Waiting for the client's close frame: everything else is read and dropped, not
            // assembled, and a fault meanwhile changes nothing (the frame layer goes on to the
            // close frame, or discards everything until `close_timeout` when it cannot).
            match item {
                Ok(Frame::Close(reason)) => self.on_close(reason, ctx),
                Err(Fault::Lost(_)) => ctx.stop(),
                Ok(_) | Err(Fault::Violation { .. }) => {}
            }
            return;
        }
        let event = match item.and_then(|frame| self.assembler.push(frame)) {
            Ok(Some(event)) => event,
            Ok(None) => return,
            Err(Fault::Lost(why)) => {
                tracing::debug!(session = %self.name, "connection lost: {why}");
                return ctx.stop();
            }
            Err(Fault::Violation { code, reason }) => {
                tracing::info!(session = %self.name, code, %reason, "closing on a protocol fault");
                return self.close(code, &reason, ctx);
            }
        };
        match event {
            Event::Text(text) => self.on_text(text, ctx),
            Event::Binary(bytes) => self.on_binary(bytes, ctx),
            Event::Ping(payload) => self.send_control(Outbound::Pong(payload)),
            Event::Close(reason) => self.on_close(reason, ctx),
            Event::Pong(_) => {}
        }
    }

    fn finished(&mut self, ctx: &mut Context<Self>) {
        ctx.stop();
    }
}

/// Handler for [`Evict`]: the hub found this session's queue full.
impl Handler<Evict> for Session {
    type Result = ();
    fn handle(&mut self, msg: Evict, ctx: &mut Context<Self>) {
        match msg.reason {
            EvictReason::SlowConsumer => self.cut(close::TRY_AGAIN, "slow consumer", ctx),
        }
    }
}
