//! The [`Session`] actor: one per client, and the only module that touches the WebSocket
//! transport. `mod.rs` holds its lifecycle and heartbeat, `protocol.rs` the rooms protocol (one
//! function per message type), `rate_limit.rs` the token bucket; the socket options and the
//! cutter are in [`socket`](super::socket).
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
//!   hub only ever `try_send` into it; a full queue applies
//!   [`slow_consumer`](crate::config::ServerConfig::slow_consumer).
//!
//! # Closing and cutting a stuck socket
//!
//! When the server closes a session (shutdown 1001, heartbeat 1001, slow consumer 1013, rate
//! limit 1008, a protocol fault) it leaves every room at once, sends its close frame on the
//! control lane (behind at most 64 KiB of the data queued before it, the rest dropped: the
//! close code must not wait behind a backlog that outlasts `close_timeout`) and keeps reading,
//! discarding data, until the client's close frame arrives or
//! [`close_timeout`](crate::config::ServerConfig::close_timeout) passes: the closing handshake
//! of RFC 6455, so a client that is still sending reads the server's code rather than a reset.
//! A close frame cannot be written to a socket whose peer stopped reading: for a heartbeat
//! timeout or a slow consumer the outbox drops its backlog first ([`Outbox::close_only`]). When the
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
//! payload is buffered (actix-ws's `MessageStream` would buffer it all first), and an
//! [`Assembler`] puts fragments together with the same cap, checking UTF-8 as they arrive
//! (1007). Every command to the hub goes through its bounded FIFO queue: when it is
//! full the session stops reading until there is room. An optional token bucket
//! ([`rate_limit`](crate::config::ServerConfig::rate_limit)) bounds what one client can make the
//! server do.
//!
//! # permessage-deflate
//!
//! With [`ServerConfig::deflate`](crate::config::ServerConfig::deflate) on, the upgrade
//! answers the client's first acceptable offer ([`crate::ws::deflate`]); the reader's codec
//! then inflates compressed messages (the size limit applies to the inflated bytes), and the
//! outbox's body compresses data frames as it writes them, a frame shared by several sessions
//! once per worker thread.
mod protocol;
mod rate_limit;
mod token;

pub(crate) use self::token::SessionToken;

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Instant;

use actix::prelude::*;
use actix_http::body::MessageBody;
use actix_http::ws::{CloseReason, Frame};
use actix_web::http::header::SEC_WEBSOCKET_EXTENSIONS;
use actix_web::{web, HttpRequest, HttpResponse};
use bytes::Bytes;
use tokio::sync::mpsc::error::TrySendError;

use self::rate_limit::Bucket;
use super::command::{Command, Evict, EvictReason, HubSender, Publisher, SessionId};
use super::counters::{on_full_queue, FullQueue};
use super::outbox::{outbox_with_bytes, BodyDeflate, Outbound, Outbox, OutboxWatch, Refused};
use super::socket::SocketCutter;
use super::{SessionSlot, Shared};
use crate::envelope::WireMessage;
use crate::protocol as protocol_msg;
use crate::ws::deflate::negotiate::server_accept;
use crate::ws::{close, Assembler, Event, Fault, FrameCodec, FrameReader};

/// Which endpoint a session serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Mode {
    /// The rooms protocol of DESIGN.md.
    Rooms,
    /// Plain echo: every text or binary message goes back verbatim.
    Echo,
}

/// Where a session is in its life. One value rather than flags (registered with the hub,
/// closing, the peer's close frame seen, the outbox still held), because those combined: each
/// phase says what the session still does, and holds the outbox while there is one.
enum Phase {
    /// Registered with the hub; reading and writing.
    Open(Outbox),
    /// *Close* begun: our close frame is queued (or the backlog dropped for it), the hub has
    /// forgotten the session, no data frame is offered any more, and the client's frames are
    /// read and dropped until its close frame arrives or `close_timeout` passes.
    Closing(Outbox),
    /// The client's close frame arrived: the closing handshake is complete; the actors *stop*.
    Closed(Outbox),
    /// The actor has stopped and let its outbox go.
    Stopped,
}

impl Phase {
    /// The outbox, until the session has stopped.
    fn outbox(&self) -> Option<&Outbox> {
        match self {
            Phase::Open(outbox) | Phase::Closing(outbox) | Phase::Closed(outbox) => Some(outbox),
            Phase::Stopped => None,
        }
    }

    /// Whether the session is open: not closing, closed or stopped.
    fn is_open(&self) -> bool {
        matches!(self, Phase::Open(_))
    }
}

/// Everything a new session needs; built by the HTTP handler after the upgrade was accepted.
pub(crate) struct SessionParams {
    pub(crate) id: SessionId,
    pub(crate) mode: Mode,
    pub(crate) identity: Option<String>,
    /// What the authentication hook says presence shows of the session, if anything.
    pub(crate) info: Option<Arc<serde_json::value::RawValue>>,
    /// The token the session was admitted with (JWT authentication), if any.
    pub(crate) token: Option<SessionToken>,
    pub(crate) hub: HubSender,
    pub(crate) shared: Arc<Shared>,
    /// Released when the session actor is dropped (whatever ended it).
    pub(crate) slot: SessionSlot,
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
    let mut codec = FrameCodec::server(config.max_message_size);
    let mut body = body;
    if let Some((answer, agreed)) = server_accept(&extension_offers(req), &config.deflate) {
        tracing::debug!(session = params.id, answer, "permessage-deflate negotiated");
        response.insert_header((SEC_WEBSOCKET_EXTENSIONS, answer));
        codec = codec.with_deflate(agreed.incoming());
        if let Some(deflater) = agreed.deflater() {
            body = body.with_deflate(BodyDeflate::new(deflater, params.shared.counters.clone()));
        }
    }
    let response = response.message_body(MessageBody::boxed(body))?.into();
    let reader = Paced {
        frames: FrameReader::new(body_payload.into_inner(), codec)
            .gated(req.conn_data::<crate::ws::ReadGate>().cloned()),
        outbox: outbox.watch(),
    };
    let cutter = req.conn_data::<SocketCutter>().cloned();
    let bucket = config.rate_limit.map(Bucket::new);
    let assembler = Assembler::new(config.max_message_size);
    let name: Arc<str> = match &params.shared.node_id {
        Some(node) => Arc::from(format!("{node}.s-{}", params.id)),
        None => Arc::from(format!("s-{}", params.id)),
    };
    // With an identity, members see who published (`from`) and which of its sessions
    // (`session`); without one, the session is all there is to show.
    let publisher = Arc::new(match &params.identity {
        Some(identity) => Publisher {
            from: identity.as_str().into(),
            session: Some((*name).into()),
        },
        None => Publisher {
            from: (*name).into(),
            session: None,
        },
    });
    Session::create(move |ctx| {
        ctx.add_stream(reader);
        Session {
            id: params.id,
            name,
            publisher,
            mode: params.mode,
            identity: params.identity,
            info: params.info,
            token: params.token,
            hub: params.hub,
            phase: Phase::Open(outbox),
            cutter,
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

/// Every `Sec-WebSocket-Extensions` value of the upgrade request, joined as one list (a
/// value that is not visible ASCII is left out: no offer in it could be accepted).
fn extension_offers(req: &HttpRequest) -> String {
    let values: Vec<&str> = req
        .headers()
        .get_all(SEC_WEBSOCKET_EXTENSIONS)
        .filter_map(|v| v.to_str().ok())
        .collect();
    values.join(", ")
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

/// One client. See the module docs for how it splits work with its outbox.
pub struct Session {
    id: SessionId,
    /// `s-<id>` (with the node's id in front on a backplane): what the client is told in
    /// `welcome`, and what appears as `from` on its publishes (as `session` when it has an
    /// identity).
    name: Arc<str>,
    /// Who its publishes are from, made once.
    publisher: Arc<Publisher>,
    mode: Mode,
    /// Who the client is: the token's `sub`, or what the authentication hook attached; sent in
    /// `welcome`, traced, and the `from` of its publishes (with `session` beside it).
    identity: Option<String>,
    /// What the authentication hook says presence shows of it (before its token's `info`
    /// claim and what its joins say).
    info: Option<Arc<serde_json::value::RawValue>>,
    /// Its token, when it came with one: the expiry timer and what `refresh` replaces.
    token: Option<SessionToken>,
    /// The hub's bounded command queue.
    hub: HubSender,
    /// Where the session is in its life, with its outbox while it has one.
    phase: Phase,
    /// Cuts the TCP socket when the close gets no answer (with `Rooms::on_connect` only).
    cutter: Option<SocketCutter>,
    /// Rooms this session is in: the protocol's checks (limit, `not_joined`) happen here without
    /// asking the hub.
    rooms: HashSet<Arc<str>>,
    /// When anything last arrived from the client; the heartbeat compares it with the timeout.
    last_heard: Instant,
    assembler: Assembler,
    bucket: Option<Bucket>,
    shared: Arc<Shared>,
    _slot: SessionSlot,
}

impl Actor for Session {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        if let Some(queue) = self.phase.outbox() {
            let connect = Command::Connect {
                id: self.id,
                queue: queue.clone(),
                evict: ctx.address().recipient(),
                who: self.publisher.clone(),
            };
            self.submit(connect, None, ctx);
        }
        tracing::debug!(session = %self.name, identity = ?self.identity, mode = ?self.mode, "session started");
        if self.mode == Mode::Rooms {
            let mut data = serde_json::json!({ "session": &*self.name });
            if let Some(identity) = &self.identity {
                data["identity"] = serde_json::Value::from(identity.as_str());
            }
            let raw = serde_json::value::to_raw_value(&data).ok();
            let welcome =
                protocol::envelope(protocol_msg::Welcome::TYPE, None, None, raw.as_deref());
            self.send(welcome, ctx);
        }
        let interval = self.shared.config.heartbeat_interval;
        ctx.run_interval(interval, Self::heartbeat);
        self.watch_token(ctx);
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
        if matches!(self.phase, Phase::Open(_)) {
            self.leave_hub();
        }
        Running::Stop
    }

    fn stopped(&mut self, _: &mut Context<Self>) {
        let (outbox, complete) = match std::mem::replace(&mut self.phase, Phase::Stopped) {
            Phase::Open(outbox) | Phase::Closing(outbox) => (outbox, false),
            Phase::Closed(outbox) => (outbox, true),
            Phase::Stopped => return,
        };
        let watch = outbox.watch();
        // Our handle no longer keeps the body open: once the hub drops its own, the body
        // writes what is queued and ends.
        drop(outbox);
        let cutter = self.cutter.take();
        let grace = self.shared.config.close_timeout;
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
                watch.stop();
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
    /// Offer a data frame to the outbox while the session is open; a full queue applies the
    /// slow-consumer policy.
    fn send(&mut self, out: Outbound, ctx: &mut Context<Self>) {
        let Phase::Open(queue) = &self.phase else {
            return;
        };
        let len = out.len();
        match queue.try_send(out) {
            Ok(depth) => self.shared.counters.delivered(len, depth),
            Err(Refused::Full(_)) => {
                let policy = self.shared.config.slow_consumer;
                if on_full_queue(policy, &self.shared.counters) == FullQueue::Disconnect {
                    tracing::warn!(session = %self.name, "slow consumer: queue full; disconnecting");
                    self.cut(close::TRY_AGAIN, "slow consumer", ctx);
                }
            }
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
            .phase
            .outbox()
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

    /// Tell the hub to forget this session: no more broadcasts reach it. Called once, when the
    /// session leaves [`Phase::Open`].
    fn leave_hub(&mut self) {
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

    /// Enter [`Phase::Closing`]: leave every room, send nothing more, and wait up to
    /// `close_timeout` for the client's close frame (read, data discarded, in the meantime).
    fn begin_closing(&mut self, ctx: &mut Context<Self>) {
        let Phase::Open(outbox) = std::mem::replace(&mut self.phase, Phase::Stopped) else {
            return;
        };
        self.phase = Phase::Closing(outbox);
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
        let Phase::Open(outbox) = &self.phase else {
            return;
        };
        tracing::debug!(session = %self.name, code, reason, "closing");
        let queued = outbox
            .try_send_control(Outbound::Close(code, reason.to_owned()))
            .is_ok();
        if !queued {
            // The control lane is full: the client is not reading.
            return self.cut(code, reason, ctx);
        }
        self.begin_closing(ctx);
    }

    /// Close a stuck or silent client and *cut* its socket if it does not answer: the outbox
    /// drops its backlog and writes only the close frame; the socket is cut if the client has
    /// not answered within `close_timeout`.
    fn cut(&mut self, code: u16, reason: &str, ctx: &mut Context<Self>) {
        let Phase::Open(outbox) = &self.phase else {
            return;
        };
        outbox.close_only(code, reason);
        self.begin_closing(ctx);
    }

    /// The heartbeat: runs on the actor's own timer, which no socket write can block.
    fn heartbeat(&mut self, ctx: &mut Context<Self>) {
        if !self.phase.is_open() {
            return;
        }
        let timeout = self.shared.config.heartbeat_timeout;
        if self.last_heard.elapsed() > timeout {
            self.shared.counters.heartbeat_timeouts.bump();
            tracing::info!(session = %self.name, ?timeout, "heartbeat timeout; disconnecting");
            return self.cut(close::AWAY, "heartbeat timeout", ctx);
        }
        self.send_control(Outbound::Ping(Bytes::new()));
    }

    /// The client's close frame: answer it (unless we closed first) and stop the session.
    fn on_close(&mut self, reason: Option<CloseReason>, ctx: &mut Context<Self>) {
        if self.phase.is_open() {
            let code = close::reply_to(reason.map(|r| u16::from(r.code)));
            self.send_control(Outbound::Close(code, String::new()));
            self.leave_hub();
        }
        self.phase = match std::mem::replace(&mut self.phase, Phase::Stopped) {
            Phase::Open(outbox) | Phase::Closing(outbox) | Phase::Closed(outbox) => {
                Phase::Closed(outbox)
            }
            Phase::Stopped => Phase::Stopped,
        };
        ctx.stop();
    }
}

/// Handler for the client's frames, read by the frame layer.
impl StreamHandler<Result<Frame, Fault>> for Session {
    fn handle(&mut self, item: Result<Frame, Fault>, ctx: &mut Context<Self>) {
        self.last_heard = Instant::now();
        if !self.phase.is_open() {
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
