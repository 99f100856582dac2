//! The [`Session`] actor: one per client, and the only file that touches the WebSocket transport.
//!
//! # Why actix-ws and not actix-web-actors
//!
//! actix-web-actors' `WebsocketContext` buffers outgoing frames without bound inside the actor's
//! context, messages sent to it with `do_send` pile up in its mailbox, and an actor whose writes
//! stall stops running its timers (actix-web issue 2441; `tests/server_actors_limit.rs` shows it
//! on this stack). A client that stops reading would grow server memory without bound, and the
//! heartbeat that should notice it would never fire; neither can be fixed from outside that
//! context. So the transport is [`actix_ws`] (`actix_ws::handle` gives a writer `Session` and a
//! reader `MessageStream`), and each client gets two pieces:
//!
//! - the **`Session` actor** (still one actix actor per client): it reads the `MessageStream`
//!   (`add_stream`), speaks the rooms protocol (or echoes), owns the session's room membership,
//!   and runs the heartbeat timer. It never awaits a socket write, so nothing a client does can
//!   stop its timers;
//! - a **writer task** that owns the actix-ws `Session`, fed by a *bounded* `tokio::sync::mpsc`
//!   queue of [`session_queue`](crate::config::ServerConfig::session_queue) frames. The actor
//!   and the [`Hub`] only ever `try_send` into it; a full queue applies
//!   [`slow_consumer`](crate::config::ServerConfig::slow_consumer).
//!
//! # Cutting a stuck socket
//!
//! A close frame cannot be written to a socket whose peer stopped reading. When a session must go
//! (heartbeat timeout, slow consumer) the writer is told to drop its backlog and try a close
//! frame; after [`close_timeout`](crate::config::ServerConfig::close_timeout) the writer task is
//! aborted and, when the HTTP server was built with [`on_connect`] (as [`serve`](super::serve)
//! does), the TCP socket is shut down with `SO_LINGER` 0, which wakes actix-http's stalled
//! dispatcher with an error so it drops the connection. Without `on_connect` the session still
//! leaves every room and frees its queue at once; the stalled connection then holds only
//! actix-ws's 32-frame hand-off channel and actix-http's bounded write buffer until TCP gives up.
//!
//! # Inbound limits
//!
//! The codec's frame limit is [`max_message_size`](crate::config::ServerConfig::max_message_size)
//! (1009 past it). Fragmented messages are put together here, with the same cap (1009),
//! answering pings in between; text is checked for UTF-8 as fragments arrive (1007), and actix-ws
//! checks unfragmented text frames (1007 too).

use std::any::Any;
use std::collections::HashSet;
use std::net::Shutdown;
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::prelude::*;
use actix_web::dev::Extensions;
use actix_web::{web, HttpRequest, HttpResponse};
use actix_ws::{CloseCode, CloseReason, Item, Message, ProtocolError};
use bytes::{Bytes, BytesMut};
use bytestring::ByteString;
use serde_json::value::RawValue;
use tokio::sync::{mpsc, oneshot};

use super::hub::{
    Connect, Disconnect, Evict, EvictReason, Hub, Join, Leave, Outbound, Publish, SessionId,
};
use super::Shared;
use crate::config::{ServerConfig, SlowConsumerPolicy};
use crate::envelope::{encode_parts, Head, WireMessage};
use crate::protocol::{self, codes};

/// Close code: normal closure (the answer to a client close frame without a code).
const CLOSE_NORMAL: u16 = 1000;
/// Close code: going away (server shutdown, heartbeat timeout).
const CLOSE_AWAY: u16 = 1001;
/// Close code: protocol error (a continuation without a start, a new message inside a
/// fragmented one, a bad frame, a close frame with a code that may not be sent).
const CLOSE_PROTOCOL: u16 = 1002;
/// Close code: invalid payload data (text that is not UTF-8).
const CLOSE_INVALID: u16 = 1007;
/// Close code: message too big.
const CLOSE_TOO_BIG: u16 = 1009;
/// Close code: try again later (slow consumer).
const CLOSE_TRY_AGAIN: u16 = 1013;

/// Most publishes one session may have in the hub's mailbox before it stops reading its socket
/// until the hub catches up.
const PUBLISH_WINDOW: usize = 64;

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
}

/// Install this with `HttpServer::on_connect(actix_ws_manager::server::on_connect)` so that the
/// server can cut the TCP socket of a client that stopped reading (see the module docs).
/// [`serve`](super::serve) installs it for you (through [`on_connect_with`], which also applies
/// [`ServerConfig::tcp_send_buffer`](crate::config::ServerConfig::tcp_send_buffer)).
///
/// Cost: it keeps a duplicate descriptor of every accepted connection (HTTP ones included) for
/// the connection's life, so the process needs twice the file descriptors per connection; raise
/// `ulimit -n` accordingly for many connections.
pub fn on_connect(conn: &dyn Any, ext: &mut Extensions) {
    configure_socket(conn, ext, None, None, true);
}

/// Like [`on_connect`], and also sets the accepted socket's `SO_SNDBUF` to `send_buffer` bytes
/// when given.
pub fn on_connect_with(
    send_buffer: Option<usize>,
) -> impl Fn(&dyn Any, &mut Extensions) + Send + Sync + 'static {
    move |conn, ext| configure_socket(conn, ext, send_buffer, None, true)
}

/// The `on_connect` hook for a [`ServerConfig`]: applies
/// [`tcp_send_buffer`](ServerConfig::tcp_send_buffer) and
/// [`tcp_user_timeout`](ServerConfig::tcp_user_timeout), and keeps a socket handle only when
/// [`keep_socket_handle`](ServerConfig::keep_socket_handle) is on.
/// [`serve`](super::serve) installs this one.
pub fn on_connect_for(
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
    pub(crate) hub: Addr<Hub>,
    pub(crate) shared: Arc<Shared>,
    /// Released when the session actor is dropped (whatever ended it).
    pub(crate) slot: super::SessionSlot,
}

/// Upgrade the request and start the session's actor and writer task.
pub(crate) fn start(
    req: &HttpRequest,
    body: web::Payload,
    params: SessionParams,
) -> Result<HttpResponse, actix_web::Error> {
    let config = &params.shared.config;
    let (response, ws, stream) = actix_ws::handle(req, body)?;
    let stream = stream.max_frame_size(config.max_message_size);
    let (queue, rx) = mpsc::channel(config.session_queue);
    let (kill, kill_rx) = oneshot::channel();
    let writer = actix_rt::spawn(write_loop(ws, rx, kill_rx, config.close_timeout));
    let cutter = req.conn_data::<SocketCutter>().cloned();
    Session::create(move |ctx| {
        ctx.add_stream(stream);
        Session {
            id: params.id,
            name: Arc::from(format!("s-{}", params.id)),
            mode: params.mode,
            identity: params.identity,
            hub: params.hub,
            queue: Some(queue),
            writer: Some(writer),
            kill: Some(kill),
            cutter,
            ending: Ending::Polite,
            rooms: HashSet::new(),
            last_heard: Instant::now(),
            fragments: None,
            publishing: 0,
            shared: params.shared,
            _slot: params.slot,
        }
    });
    Ok(response)
}

/// The writer task: takes frames from the bounded queue and hands them to actix-ws, one at a
/// time. A kill signal (slow consumer, heartbeat timeout) drops the backlog and tries the close
/// frame for at most `close_timeout`.
async fn write_loop(
    mut ws: actix_ws::Session,
    mut rx: mpsc::Receiver<Outbound>,
    mut kill: oneshot::Receiver<(u16, String)>,
    close_timeout: Duration,
) {
    loop {
        let step = tokio::select! {
            biased;
            k = &mut kill => Step::Kill(k.ok()),
            item = rx.recv() => match item {
                Some(item) => Step::Write(item),
                // Every sender is gone without a close frame: dropping `ws` ends the body.
                None => return,
            },
        };
        let item = match step {
            Step::Write(item) => item,
            Step::Kill(k) => return kill_close(ws, k, close_timeout).await,
        };
        let write = async {
            match item {
                Outbound::Text(t) => ws.text(t).await.is_ok(),
                Outbound::Binary(b) => ws.binary(b).await.is_ok(),
                Outbound::Ping(b) => ws.ping(&b).await.is_ok(),
                Outbound::Pong(b) => ws.pong(&b).await.is_ok(),
                Outbound::Close(code, reason) => {
                    let _ = ws.clone().close(Some(reason_of(code, reason))).await;
                    false
                }
            }
        };
        let keep_going = tokio::select! {
            biased;
            k = &mut kill => Err(k.ok()),
            ok = write => Ok(ok),
        };
        match keep_going {
            Ok(true) => {}
            Ok(false) => return,
            Err(k) => return kill_close(ws, k, close_timeout).await,
        }
    }
}

/// What the writer does next.
enum Step {
    Write(Outbound),
    Kill(Option<(u16, String)>),
}

/// Try the close frame of a kill signal, for at most `close_timeout`.
async fn kill_close(ws: actix_ws::Session, kill: Option<(u16, String)>, close_timeout: Duration) {
    if let Some((code, reason)) = kill {
        let _ = tokio::time::timeout(close_timeout, ws.close(Some(reason_of(code, reason)))).await;
    }
}

fn reason_of(code: u16, reason: String) -> CloseReason {
    CloseReason {
        code: CloseCode::from(code),
        description: (!reason.is_empty()).then_some(reason),
    }
}

/// How the session's socket is dealt with once the actor has stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ending {
    /// The writer finishes what is queued (ending with a close frame, if one was queued); it is
    /// aborted and the socket cut only if it has not finished within `close_timeout`.
    Polite,
    /// The client is stuck or gone silent: after `close_timeout` the writer is aborted and the
    /// socket cut, whatever the writer managed.
    Cut,
}

/// A fragmented message being put together.
struct Fragments {
    text: bool,
    buf: BytesMut,
    /// Bytes of `buf` already known to be valid UTF-8 (text only), so each byte is checked once.
    checked: usize,
}

/// One client. See the module docs for how it splits work with its writer task.
pub struct Session {
    id: SessionId,
    /// `s-<id>`: what the client is told in `welcome` and what appears as `from`.
    name: Arc<str>,
    mode: Mode,
    /// What the authentication hook attached, if anything; sent in `welcome` and traced.
    identity: Option<String>,
    hub: Addr<Hub>,
    /// The bounded queue into the writer task; `None` once the session is ending.
    queue: Option<mpsc::Sender<Outbound>>,
    writer: Option<actix_rt::task::JoinHandle<()>>,
    /// Tells the writer to drop its backlog and close at once.
    kill: Option<oneshot::Sender<(u16, String)>>,
    cutter: Option<SocketCutter>,
    ending: Ending,
    /// Rooms this session is in: the protocol's checks (limit, `not_joined`) happen here without
    /// asking the hub.
    rooms: HashSet<Arc<str>>,
    /// When anything last arrived from the client; the heartbeat compares it with the timeout.
    last_heard: Instant,
    fragments: Option<Fragments>,
    /// Publishes handed to the hub and not yet handled by it.
    publishing: usize,
    shared: Arc<Shared>,
    _slot: super::SessionSlot,
}

impl Actor for Session {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        if let Some(queue) = &self.queue {
            self.hub.do_send(Connect {
                id: self.id,
                queue: queue.clone(),
                evict: ctx.address().recipient(),
            });
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
                raw.as_deref(),
                None,
            );
            self.send(Outbound::Text(text), ctx);
        }
        let interval = self.shared.config.heartbeat_interval;
        ctx.run_interval(interval, Self::heartbeat);
    }

    fn stopping(&mut self, _: &mut Context<Self>) -> Running {
        self.hub.do_send(Disconnect { id: self.id });
        Running::Stop
    }

    fn stopped(&mut self, _: &mut Context<Self>) {
        // Dropping our sender lets the writer finish once the hub has dropped its copy.
        self.queue = None;
        let writer = self.writer.take();
        let cutter = self.cutter.take();
        let grace = self.shared.config.close_timeout;
        let ending = self.ending;
        let name = self.name.clone();
        // The writer reads a dropped kill sender as "kill": keep it alive until the writer is done.
        let kill = self.kill.take();
        actix_rt::spawn(async move {
            let _kill = kill;
            let Some(mut writer) = writer else { return };
            let finished = match ending {
                Ending::Polite => tokio::time::timeout(grace, &mut writer).await.is_ok(),
                Ending::Cut => {
                    tokio::time::sleep(grace).await;
                    false
                }
            };
            if !finished {
                writer.abort();
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
    /// Offer a frame to the writer; a full queue applies the slow-consumer policy.
    fn send(&mut self, out: Outbound, ctx: &mut Context<Self>) {
        let Some(queue) = &self.queue else { return };
        let len = out.len();
        match queue.try_send(out) {
            Ok(()) => {
                let depth = queue.max_capacity() - queue.capacity();
                self.shared.counters.delivered(len, depth);
            }
            Err(mpsc::error::TrySendError::Full(_)) => match self.shared.config.slow_consumer {
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
                    self.cut(CLOSE_TRY_AGAIN, "slow consumer", ctx);
                }
            },
            Err(mpsc::error::TrySendError::Closed(_)) => ctx.stop(),
        }
    }

    /// Close politely: queue the close frame behind what is already queued, then stop. The
    /// writer gets `close_timeout` to write it.
    fn close(&mut self, code: u16, reason: &str, ctx: &mut Context<Self>) {
        if self.queue.is_none() {
            return;
        }
        tracing::debug!(session = %self.name, code, reason, "closing");
        let ok = self
            .queue
            .as_ref()
            .is_some_and(|q| q.try_send(Outbound::Close(code, reason.to_owned())).is_ok());
        if !ok {
            // No room for even the close frame: the client is not reading.
            return self.cut(code, reason, ctx);
        }
        self.queue = None;
        self.ending = Ending::Polite;
        ctx.stop();
    }

    /// Close a stuck or silent client: the writer drops its backlog and tries the close frame;
    /// after `close_timeout` the socket is cut whatever happened.
    fn cut(&mut self, code: u16, reason: &str, ctx: &mut Context<Self>) {
        if let Some(kill) = self.kill.take() {
            let _ = kill.send((code, reason.to_owned()));
        }
        self.queue = None;
        self.ending = Ending::Cut;
        ctx.stop();
    }

    /// The heartbeat: runs on the actor's own timer, which no socket write can block.
    fn heartbeat(&mut self, ctx: &mut Context<Self>) {
        let timeout = self.shared.config.heartbeat_timeout;
        if self.last_heard.elapsed() > timeout {
            self.shared
                .counters
                .heartbeat_timeouts
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            tracing::info!(session = %self.name, ?timeout, "heartbeat timeout; disconnecting");
            return self.cut(CLOSE_AWAY, "heartbeat timeout", ctx);
        }
        self.send(Outbound::Ping(Bytes::new()), ctx);
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
            raw.as_deref(),
            None,
        );
        self.send(Outbound::Text(text), ctx);
    }

    /// Send a reply envelope with only a type, an id and a room.
    fn reply(
        &mut self,
        kind: &str,
        id: Option<u64>,
        room: Option<&str>,
        data: Option<&RawValue>,
        ctx: &mut Context<Self>,
    ) {
        let text = encode_parts(kind, id, room, None, data, None);
        self.send(Outbound::Text(text), ctx);
    }

    /// A whole text message (unfragmented, or put together).
    fn on_text(&mut self, text: ByteString, ctx: &mut Context<Self>) {
        if self.mode == Mode::Echo {
            return self.send(Outbound::Text(text), ctx);
        }
        let head = match Head::parse(&text) {
            Ok(head) => head,
            Err(e) => {
                let msg = format!("not a JSON object with a string \"type\": {e}");
                return self.error(None, codes::MALFORMED, &msg, ctx);
            }
        };
        let id = head.id;
        let kind = head.kind.as_ref();
        if kind == protocol::Join::TYPE {
            let Some(room) = self.checked_room(&head, ctx) else {
                return;
            };
            if !self.rooms.contains(room.as_ref()) {
                if self.rooms.len() >= self.shared.config.max_rooms_per_session {
                    let msg = format!(
                        "a session may be in at most {} rooms",
                        self.shared.config.max_rooms_per_session
                    );
                    return self.error(id, codes::TOO_MANY_ROOMS, &msg, ctx);
                }
                self.rooms.insert(room.clone());
                self.hub.do_send(Join {
                    id: self.id,
                    room: room.clone(),
                });
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
            self.hub.do_send(Leave {
                id: self.id,
                room: room.clone(),
            });
            self.reply(protocol::Left::TYPE, id, Some(&room), None, ctx);
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
            self.publish(
                Publish {
                    room,
                    from: Some(self.name.clone()),
                    data: head.data.map(ToOwned::to_owned),
                },
                ctx,
            );
            if id.is_some() {
                self.reply(protocol::Ack::TYPE, id, None, None, ctx);
            }
        } else if kind == protocol::Echo::TYPE {
            let data = head.data.map(ToOwned::to_owned);
            self.reply(protocol::Echo::TYPE, id, None, data.as_deref(), ctx);
        } else if kind == protocol::Ping::TYPE {
            self.reply(protocol::Pong::TYPE, id, None, None, ctx);
        } else {
            let msg = format!("unknown message type {kind:?}");
            self.error(id, codes::UNKNOWN_TYPE, &msg, ctx);
        }
    }

    /// Hand a publish to the hub. Up to [`PUBLISH_WINDOW`] may be in the hub's mailbox at once;
    /// at the window the session waits for the hub before it reads the next frame, so a client
    /// that publishes faster than the hub fans out is slowed by TCP instead of growing the hub's
    /// mailbox without bound. The hub never waits on sockets, so the wait is short.
    fn publish(&mut self, msg: Publish, ctx: &mut Context<Self>) {
        self.publishing += 1;
        let done = self
            .hub
            .send(msg)
            .into_actor(self)
            .map(|_, act, _| act.publishing -= 1);
        if self.publishing >= PUBLISH_WINDOW {
            ctx.wait(done);
        } else {
            ctx.spawn(done);
        }
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

    /// One piece of a fragmented message.
    fn on_fragment(&mut self, item: Item, ctx: &mut Context<Self>) {
        let (start, text, last, bytes) = match item {
            Item::FirstText(b) => (true, true, false, b),
            Item::FirstBinary(b) => (true, false, false, b),
            Item::Continue(b) => (false, false, false, b),
            Item::Last(b) => (false, false, true, b),
        };
        if start == self.fragments.is_some() {
            let why = if start {
                "a new message started inside a fragmented one"
            } else {
                "a continuation frame without a first fragment"
            };
            return self.close(CLOSE_PROTOCOL, why, ctx);
        }
        let max = self.shared.config.max_message_size;
        let frag = self.fragments.get_or_insert_with(|| Fragments {
            text,
            buf: BytesMut::new(),
            checked: 0,
        });
        if frag.buf.len() + bytes.len() > max {
            return self.close(CLOSE_TOO_BIG, "message too big", ctx);
        }
        frag.buf.extend_from_slice(&bytes);
        if frag.text {
            match std::str::from_utf8(&frag.buf[frag.checked..]) {
                Ok(_) => frag.checked = frag.buf.len(),
                // An incomplete character at the end may be completed by the next fragment.
                Err(e) if e.error_len().is_none() => frag.checked += e.valid_up_to(),
                Err(_) => return self.close(CLOSE_INVALID, "invalid UTF-8", ctx),
            }
        }
        if !last {
            return;
        }
        let Some(frag) = self.fragments.take() else {
            return;
        };
        let bytes = frag.buf.freeze();
        if frag.text {
            match ByteString::try_from(bytes) {
                Ok(text) => self.on_text(text, ctx),
                Err(_) => self.close(CLOSE_INVALID, "invalid UTF-8", ctx),
            }
        } else {
            self.on_binary(bytes, ctx);
        }
    }
}

/// Handler for the client's frames.
impl StreamHandler<Result<Message, ProtocolError>> for Session {
    fn handle(&mut self, item: Result<Message, ProtocolError>, ctx: &mut Context<Self>) {
        if self.queue.is_none() {
            return;
        }
        self.last_heard = Instant::now();
        let msg = match item {
            Ok(msg) => msg,
            Err(ProtocolError::Overflow) => {
                return self.close(CLOSE_TOO_BIG, "message too big", ctx)
            }
            Err(ProtocolError::Io(e)) if e.kind() == std::io::ErrorKind::InvalidData => {
                return self.close(CLOSE_INVALID, "invalid UTF-8", ctx)
            }
            Err(ProtocolError::Io(e)) => {
                tracing::debug!(session = %self.name, "connection lost: {e}");
                return ctx.stop();
            }
            Err(e) => {
                tracing::debug!(session = %self.name, "protocol error: {e}");
                return self.close(CLOSE_PROTOCOL, "protocol error", ctx);
            }
        };
        match msg {
            Message::Text(text) => {
                if self.fragments.is_some() {
                    return self.close(
                        CLOSE_PROTOCOL,
                        "a new message inside a fragmented one",
                        ctx,
                    );
                }
                self.on_text(text, ctx)
            }
            Message::Binary(bytes) => {
                if self.fragments.is_some() {
                    return self.close(
                        CLOSE_PROTOCOL,
                        "a new message inside a fragmented one",
                        ctx,
                    );
                }
                self.on_binary(bytes, ctx)
            }
            Message::Continuation(item) => self.on_fragment(item, ctx),
            Message::Ping(payload) => self.send(Outbound::Pong(payload), ctx),
            Message::Pong(_) | Message::Nop => {}
            Message::Close(reason) => match reason.map(|r| u16::from(r.code)) {
                // Answer with the client's code when it is one that may travel on the wire.
                Some(code @ (1000..=1003 | 1007..=1014 | 3000..=4999)) => self.close(code, "", ctx),
                Some(_) => self.close(CLOSE_PROTOCOL, "invalid close code", ctx),
                None => self.close(CLOSE_NORMAL, "", ctx),
            },
        }
    }

    fn finished(&mut self, ctx: &mut Context<Self>) {
        ctx.stop();
    }
}

/// Handler for [`Evict`]: the hub found this session's queue full, or the server is shutting
/// down.
impl Handler<Evict> for Session {
    type Result = ();
    fn handle(&mut self, msg: Evict, ctx: &mut Context<Self>) {
        match msg.reason {
            EvictReason::SlowConsumer => self.cut(CLOSE_TRY_AGAIN, "slow consumer", ctx),
            EvictReason::Shutdown => self.close(CLOSE_AWAY, "server shutdown", ctx),
        }
    }
}
