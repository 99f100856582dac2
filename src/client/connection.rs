//! The Connection actor: owns one awc WebSocket at a time, turns frames into messages for the
//! Router and messages into frames, and keeps a bounded outbox for when the socket is down or
//! slower than the sender.
//!
//! # What it guarantees
//!
//! - Frames are read through the shared frame layer ([`crate::ws`]): a frame whose header
//!   declares more than [`max_message_size`](crate::config::ClientConfig::max_message_size)
//!   closes the socket with 1009 before any of its payload is buffered; reserved bits close with
//!   1002. Fragmented messages are put back together up to the same limit (1009), control frames
//!   between fragments are answered, and text is checked for UTF-8 fragment by fragment (1007).
//! - Pings are answered with Pongs carrying the same payload; a Close from the peer is answered
//!   with [`close::reply_to`] (its own code when it may be sent, never a reserved one).
//! - Writes go through a bounded queue to a writer task on the same arbiter, so the actor never
//!   waits on the socket. When that queue is full, or no socket is open, messages wait in the
//!   outbox, which is bounded by [`OutboxPolicy`](crate::config::OutboxPolicy); every drop is
//!   counted and traced. The outbox keeps its order across reconnects, after the on-connect
//!   messages of the new socket.
//!
//! The Connection does not decide whether to reconnect: it reports `Established`,
//! `ConnectFailed` and `Lost` to the
//! [`ReconnectSupervisor`], which sends `Dial`.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;
use actix_codec::Framed;
use actix_http::ws::{self, CloseCode, CloseReason, Frame, ProtocolError};
use awc::BoxedSocket;
use bytes::Bytes;
use bytestring::ByteString;
use futures_util::stream::{self, SplitSink};
use futures_util::{SinkExt, StreamExt};
use tokio::sync::mpsc;

use super::heartbeat::{Heartbeat, PongReceived, Unwatch, Watch};
use super::reconnect::{ConnectFailed, Established, Lost, ReconnectSupervisor};
use super::router::{Incoming, IncomingBinary, Router};
use super::state::Shared;
use crate::config::{ClientConfig, Overflow, PingMode};
use crate::error::Error;
use crate::ws::{close, Assembler, Event, Fault, FrameCodec};

/// How long we wait for the peer's Close after sending ours, before cutting the socket.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(2);
/// How long a writer may take to flush its last frames (a Close reply) before it is aborted.
const WRITER_GRACE: Duration = Duration::from_secs(2);

type WsFramed = Framed<BoxedSocket, FrameCodec>;
type WsSink = SplitSink<WsFramed, ws::Message>;

thread_local! {
    /// One awc client per thread (arbiter). Its connector has no connection limit: awc's
    /// default pool allows 100 connections per client and a WebSocket holds its permit for its
    /// whole life, so connection 101 would wait and time out. Timeouts are ours, not awc's.
    static AWC: awc::Client = awc::Client::builder()
        .connector(awc::Connector::new().limit(0).timeout(Duration::from_secs(3600)))
        .disable_timeout()
        .finish();
}

/// A message on its way to the socket.
#[derive(Debug, Clone)]
pub(crate) enum OutFrame {
    Text(ByteString),
    Binary(Bytes),
}

impl OutFrame {
    fn len(&self) -> usize {
        match self {
            OutFrame::Text(t) => t.len(),
            OutFrame::Binary(b) => b.len(),
        }
    }
    fn into_ws(self) -> ws::Message {
        match self {
            OutFrame::Text(t) => ws::Message::Text(t),
            OutFrame::Binary(b) => ws::Message::Binary(b),
        }
    }
}

/// One open socket: the writer's queue, the reader stream's handle, the writer task.
struct Link {
    gen: u64,
    tx: mpsc::Sender<ws::Message>,
    reader: SpawnHandle,
    writer: tokio::task::JoinHandle<()>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// No socket, no attempt under way.
    Idle,
    /// The connect future is running.
    Connecting,
    /// The socket is open; waiting for the supervisor's on-connect messages.
    Priming,
    /// Open and flushing the outbox.
    Open,
    /// We sent a Close and wait for the peer's.
    Closing,
}

/// The Connection actor of one client. See the [module docs](self).
pub struct Connection {
    url: String,
    config: ClientConfig,
    shared: Arc<Shared>,
    router: Addr<Router>,
    heartbeat: Option<Addr<Heartbeat>>,
    supervisor: Option<Addr<ReconnectSupervisor>>,
    phase: Phase,
    link: Option<Link>,
    connecting: Option<SpawnHandle>,
    gen: u64,
    outbox: VecDeque<OutFrame>,
    /// A task waits for room in the writer queue.
    waiting_for_room: bool,
    assembler: Assembler,
    /// The close code and reason we sent, while `Closing`.
    our_close: Option<(u16, String)>,
    /// The user closed the client: refuse new messages, never dial again.
    shut: bool,
}

impl Connection {
    pub(crate) fn new(
        url: String,
        config: ClientConfig,
        shared: Arc<Shared>,
        router: Addr<Router>,
    ) -> Self {
        let assembler = Assembler::new(config.max_message_size);
        Self {
            url,
            config,
            shared,
            router,
            heartbeat: None,
            supervisor: None,
            phase: Phase::Idle,
            link: None,
            connecting: None,
            gen: 0,
            outbox: VecDeque::new(),
            waiting_for_room: false,
            assembler,
            our_close: None,
            shut: false,
        }
    }

    pub(crate) fn wire(
        &mut self,
        heartbeat: Option<Addr<Heartbeat>>,
        supervisor: Addr<ReconnectSupervisor>,
    ) {
        self.heartbeat = heartbeat;
        self.supervisor = Some(supervisor);
    }

    fn link_gen(&self) -> Option<u64> {
        self.link.as_ref().map(|l| l.gen)
    }

    fn set_outbox_len(&self) {
        self.shared.outbox_len.store(
            self.outbox.len() as u64,
            std::sync::atomic::Ordering::Relaxed,
        );
    }

    /// Put a message in the outbox under the overflow policy.
    fn enqueue(&mut self, frame: OutFrame) -> Result<(), Error> {
        let cap = self.config.outbox.capacity;
        if self.outbox.len() >= cap {
            match self.config.outbox.overflow {
                Overflow::Reject => return Err(Error::OutboxFull { capacity: cap }),
                Overflow::DropOldest => {
                    if let Some(old) = self.outbox.pop_front() {
                        Shared::add(&self.shared.dropped, 1);
                        tracing::warn!(connection = %self.shared.name, bytes = old.len(), "outbox full: dropped the oldest message");
                    }
                }
                Overflow::DropNewest => {
                    Shared::add(&self.shared.dropped, 1);
                    tracing::warn!(connection = %self.shared.name, bytes = frame.len(), "outbox full: dropped the newest message");
                    return Ok(());
                }
            }
        }
        self.outbox.push_back(frame);
        self.set_outbox_len();
        Ok(())
    }

    fn count_out(&self, frame: &OutFrame) {
        Shared::add(&self.shared.messages_out, 1);
        Shared::add(&self.shared.bytes_out, frame.len() as u64);
    }

    /// Move outbox messages to the writer while it has room.
    fn pump(&mut self, ctx: &mut Context<Self>) {
        if self.phase != Phase::Open {
            return;
        }
        let Some(link) = &self.link else { return };
        let tx = link.tx.clone();
        let mut full = false;
        while !self.outbox.is_empty() {
            let reserved = tx.try_reserve();
            match reserved {
                Ok(permit) => {
                    if let Some(frame) = self.outbox.pop_front() {
                        self.count_out(&frame);
                        permit.send(frame.into_ws());
                    }
                }
                Err(mpsc::error::TrySendError::Full(())) => {
                    full = true;
                    break;
                }
                Err(mpsc::error::TrySendError::Closed(())) => break,
            }
        }
        if full {
            self.wait_for_room(tx, ctx);
        }
        self.set_outbox_len();
    }

    fn wait_for_room(&mut self, tx: mpsc::Sender<ws::Message>, ctx: &mut Context<Self>) {
        if self.waiting_for_room {
            return;
        }
        self.waiting_for_room = true;
        ctx.spawn(
            async move {
                // The permit is released at once; we only wait for the writer to make room.
                let _ = tx.reserve_owned().await;
            }
            .into_actor(self)
            .map(|_, act, ctx| {
                act.waiting_for_room = false;
                act.pump(ctx);
            }),
        );
    }

    /// Write a control frame or a close, skipping the outbox. Returns false when the writer queue
    /// is full or gone.
    fn write_now(&self, msg: ws::Message) -> bool {
        match &self.link {
            Some(link) => link.tx.try_send(msg).is_ok(),
            None => false,
        }
    }

    fn dial(&mut self, ctx: &mut Context<Self>) {
        let mut req = AWC
            .with(|c| c.ws(self.url.as_str()))
            .max_frame_size(self.config.max_message_size);
        for (name, value) in &self.config.headers {
            req = req.header(name.as_str(), value.as_str());
        }
        let url = self.url.clone();
        let timeout = self.config.connect_timeout;
        let max = self.config.max_message_size;
        let fut = async move {
            match actix_rt::time::timeout(timeout, req.connect()).await {
                Err(_) => Err(Error::ConnectFailed {
                    url,
                    reason: format!("no WebSocket handshake within {timeout:?}"),
                }),
                Ok(Err(e)) => Err(map_connect_error(url, e)),
                Ok(Ok((_response, framed))) => Ok(framed.into_map_codec(|codec| {
                    // The frame-header guard goes in front of awc's codec.
                    FrameCodec::wrap(codec, max)
                })),
            }
        };
        self.phase = Phase::Connecting;
        tracing::debug!(connection = %self.shared.name, url = %self.url, "dialling");
        self.connecting = Some(ctx.spawn(fut.into_actor(self).map(|res, act, ctx| {
            act.connecting = None;
            match res {
                Ok(framed) => act.attach(framed, ctx),
                Err(error) => {
                    act.phase = Phase::Idle;
                    tracing::debug!(connection = %act.shared.name, %error, "connect failed");
                    if let Some(s) = &act.supervisor {
                        s.do_send(ConnectFailed { error });
                    }
                }
            }
        })));
    }

    fn attach(&mut self, framed: WsFramed, ctx: &mut Context<Self>) {
        self.gen += 1;
        let gen = self.gen;
        let (sink, stream) = framed.split();
        let (tx, rx) = mpsc::channel(self.config.write_queue);
        let writer = actix_rt::spawn(write_loop(sink, rx, ctx.address(), gen));
        let tagged = stream
            .map(move |item| Tagged {
                gen,
                item: Some(item),
            })
            .chain(stream::once(async move { Tagged { gen, item: None } }));
        let reader = ctx.add_stream(tagged);
        self.link = Some(Link {
            gen,
            tx,
            reader,
            writer,
        });
        self.assembler.reset();
        self.our_close = None;
        self.phase = Phase::Priming;
        tracing::info!(connection = %self.shared.name, url = %self.url, "connected");
        if let Some(hb) = &self.heartbeat {
            hb.do_send(Watch { gen });
        }
        if let Some(s) = &self.supervisor {
            s.do_send(Established { gen });
        }
    }

    /// Cut the socket. With `graceful`, the writer may still flush what it holds (a Close reply)
    /// for a short while; otherwise it is aborted at once (the socket may be stalled).
    fn teardown(&mut self, ctx: &mut Context<Self>, graceful: bool) {
        if let Some(link) = self.link.take() {
            ctx.cancel_future(link.reader);
            if graceful {
                let abort = link.writer.abort_handle();
                actix_rt::spawn(async move {
                    actix_rt::time::sleep(WRITER_GRACE).await;
                    abort.abort();
                });
            } else {
                link.writer.abort();
            }
        }
        if let Some(h) = self.connecting.take() {
            ctx.cancel_future(h);
        }
        self.assembler.reset();
        self.phase = Phase::Idle;
        if let Some(hb) = &self.heartbeat {
            hb.do_send(Unwatch);
        }
    }

    /// The socket is gone: tear it down and tell the supervisor.
    fn lost(&mut self, ctx: &mut Context<Self>, code: u16, reason: String, graceful: bool) {
        self.teardown(ctx, graceful);
        self.our_close = None;
        tracing::info!(connection = %self.shared.name, code, %reason, "disconnected");
        if let Some(s) = &self.supervisor {
            s.do_send(Lost { code, reason });
        }
    }

    /// Start the closing handshake with `code`; the socket is cut when the peer answers or after
    /// [`CLOSE_TIMEOUT`].
    fn close_with(&mut self, ctx: &mut Context<Self>, code: u16, reason: &str) {
        let Some(gen) = self.link_gen() else { return };
        if self.phase == Phase::Closing {
            return;
        }
        self.phase = Phase::Closing;
        self.our_close = Some((code, reason.to_owned()));
        let sent = self.write_now(ws::Message::Close(Some(CloseReason {
            code: CloseCode::from(code),
            description: (!reason.is_empty()).then(|| reason.to_owned()),
        })));
        if !sent {
            // The writer cannot take even a close frame: cut now.
            self.lost(ctx, code, reason.to_owned(), false);
            return;
        }
        ctx.run_later(CLOSE_TIMEOUT, move |act, ctx| {
            if act.link_gen() == Some(gen) && act.phase == Phase::Closing {
                let (code, reason) = act.our_close.take().unwrap_or((code, String::new()));
                act.lost(ctx, code, reason, false);
            }
        });
    }

    fn protocol_failure(&mut self, ctx: &mut Context<Self>, code: u16, reason: String) {
        tracing::warn!(connection = %self.shared.name, code, %reason, "closing the connection");
        self.close_with(ctx, code, &reason);
    }

    fn on_frame(&mut self, frame: Frame, ctx: &mut Context<Self>) {
        let event = match self.assembler.push(frame) {
            Ok(Some(event)) => event,
            Ok(None) => return,
            Err(fault) => return self.on_fault(fault, ctx),
        };
        match event {
            Event::Text(text) => {
                Shared::add(&self.shared.messages_in, 1);
                Shared::add(&self.shared.bytes_in, text.len() as u64);
                self.router.do_send(Incoming(text));
            }
            Event::Binary(bytes) => {
                Shared::add(&self.shared.messages_in, 1);
                Shared::add(&self.shared.bytes_in, bytes.len() as u64);
                self.router.do_send(IncomingBinary(bytes));
            }
            Event::Ping(p) => {
                self.write_now(ws::Message::Pong(p));
            }
            Event::Pong(p) => {
                if let Some(hb) = &self.heartbeat {
                    hb.do_send(PongReceived(p));
                }
            }
            Event::Close(reason) => self.on_close(reason, ctx),
        }
    }

    /// What the frame layer reported: close with its code, or the socket is gone.
    fn on_fault(&mut self, fault: Fault, ctx: &mut Context<Self>) {
        match fault {
            Fault::Violation { code, reason } => self.protocol_failure(ctx, code, reason),
            Fault::Lost(why) => self.lost(ctx, 1006, format!("read failed: {why}"), false),
        }
    }

    fn on_close(&mut self, reason: Option<CloseReason>, ctx: &mut Context<Self>) {
        if self.phase == Phase::Closing {
            // The peer answered our Close: the handshake is complete.
            let (code, reason) = self.our_close.take().unwrap_or((1000, String::new()));
            return self.lost(ctx, code, reason, true);
        }
        let received = reason.as_ref().map(|r| u16::from(r.code));
        let text = reason.and_then(|r| r.description).unwrap_or_default();
        self.write_now(ws::Message::Close(Some(CloseReason {
            code: CloseCode::from(close::reply_to(received)),
            description: None,
        })));
        // 1005: "no status code was present" (reported, never sent).
        self.lost(ctx, received.unwrap_or(1005), text, true);
    }
}

fn map_connect_error(url: String, e: awc::error::WsClientError) -> Error {
    use awc::error::WsClientError;
    match e {
        WsClientError::InvalidResponseStatus(status) => Error::HandshakeRejected {
            url,
            status: status.as_u16(),
        },
        other => Error::ConnectFailed {
            url,
            reason: other.to_string(),
        },
    }
}

/// Write frames from the queue to the socket, batching what is ready into one flush. Ends after
/// writing a Close, when the queue closes, or on a write error (reported to the actor).
async fn write_loop(
    mut sink: WsSink,
    mut rx: mpsc::Receiver<ws::Message>,
    addr: Addr<Connection>,
    gen: u64,
) {
    let result = async {
        while let Some(msg) = rx.recv().await {
            let mut closing = matches!(msg, ws::Message::Close(_));
            sink.feed(msg).await?;
            while !closing {
                match rx.try_recv() {
                    Ok(m) => {
                        closing = matches!(m, ws::Message::Close(_));
                        sink.feed(m).await?;
                    }
                    Err(_) => break,
                }
            }
            sink.flush().await?;
            if closing {
                break;
            }
        }
        Ok::<(), ProtocolError>(())
    }
    .await;
    addr.do_send(WriterDone {
        gen,
        error: result.err().map(|e| e.to_string()),
    });
}

impl Actor for Connection {
    type Context = Context<Self>;

    fn stopped(&mut self, _: &mut Context<Self>) {
        if !self.outbox.is_empty() {
            let n = self.outbox.len() as u64;
            Shared::add(&self.shared.dropped, n);
            tracing::warn!(connection = %self.shared.name, messages = n, "client stopped with messages still in the outbox; dropped");
            self.outbox.clear();
            self.set_outbox_len();
        }
        if let Some(link) = self.link.take() {
            link.writer.abort();
        }
    }
}

/// An item from the socket's read half, tagged with the socket generation so that frames from an
/// old socket are ignored. `None` marks the end of the stream.
pub(crate) struct Tagged {
    gen: u64,
    item: Option<Result<Frame, Fault>>,
}

/// Handler for incoming frames.
impl StreamHandler<Tagged> for Connection {
    fn handle(&mut self, t: Tagged, ctx: &mut Context<Self>) {
        if self.link_gen() != Some(t.gen) {
            return;
        }
        match t.item {
            None => {
                let (code, reason) = self
                    .our_close
                    .take()
                    .unwrap_or((1006, "connection closed without a close frame".into()));
                self.lost(ctx, code, reason, true);
            }
            Some(Err(fault)) => self.on_fault(fault, ctx),
            Some(Ok(frame)) => {
                self.shared.touch_rx();
                self.on_frame(frame, ctx);
            }
        }
    }

    fn finished(&mut self, _: &mut Context<Self>) {
        // Each socket's stream ends with a `None` item, handled above; the actor lives on.
    }
}

/// Open a socket (sent by the supervisor).
#[derive(Message)]
#[rtype(result = "()")]
pub(crate) struct Dial;

/// Handler for [`Dial`].
impl Handler<Dial> for Connection {
    type Result = ();
    fn handle(&mut self, _: Dial, ctx: &mut Context<Self>) {
        if self.shut {
            return;
        }
        if self.phase != Phase::Idle {
            tracing::debug!(connection = %self.shared.name, phase = ?self.phase, "dial ignored: not idle");
            return;
        }
        self.dial(ctx);
    }
}

/// The supervisor's on-connect messages for socket `gen`: written first, then the outbox.
#[derive(Message)]
#[rtype(result = "()")]
pub(crate) struct Prime {
    pub(crate) gen: u64,
    pub(crate) frames: Vec<ByteString>,
}

/// Handler for [`Prime`].
impl Handler<Prime> for Connection {
    type Result = ();
    fn handle(&mut self, msg: Prime, ctx: &mut Context<Self>) {
        if self.link_gen() != Some(msg.gen) || self.phase != Phase::Priming {
            return;
        }
        for text in msg.frames.into_iter().rev() {
            self.outbox.push_front(OutFrame::Text(text));
        }
        self.phase = Phase::Open;
        self.pump(ctx);
    }
}

/// Send one message (text or binary) now, or queue it.
#[derive(Message)]
#[rtype(result = "Result<(), Error>")]
pub(crate) struct SendFrame(pub(crate) OutFrame);

/// Handler for [`SendFrame`].
impl Handler<SendFrame> for Connection {
    type Result = Result<(), Error>;
    fn handle(&mut self, msg: SendFrame, ctx: &mut Context<Self>) -> Self::Result {
        if self.shut {
            return Err(Error::ClientClosed);
        }
        let frame = msg.0;
        if frame.len() > self.config.max_message_size {
            return Err(Error::MessageTooLarge {
                size: frame.len(),
                limit: self.config.max_message_size,
            });
        }
        if self.phase == Phase::Open && self.outbox.is_empty() {
            if let Some(tx) = self.link.as_ref().map(|l| l.tx.clone()) {
                let reserved = tx.try_reserve();
                match reserved {
                    Ok(permit) => {
                        self.count_out(&frame);
                        permit.send(frame.into_ws());
                        return Ok(());
                    }
                    Err(mpsc::error::TrySendError::Full(())) => {
                        self.enqueue(frame)?;
                        self.wait_for_room(tx.clone(), ctx);
                        return Ok(());
                    }
                    Err(mpsc::error::TrySendError::Closed(())) => {}
                }
            }
        }
        self.enqueue(frame)?;
        self.pump(ctx);
        Ok(())
    }
}

/// Send a heartbeat ping on socket `gen`.
#[derive(Message)]
#[rtype(result = "()")]
pub(crate) struct SendPing {
    pub(crate) gen: u64,
    pub(crate) mode: PingMode,
    pub(crate) payload: Bytes,
}

/// Handler for [`SendPing`]. A full writer queue skips the ping: liveness is judged by what
/// arrives, not by what we manage to write.
impl Handler<SendPing> for Connection {
    type Result = ();
    fn handle(&mut self, msg: SendPing, _: &mut Context<Self>) {
        if self.link_gen() != Some(msg.gen) || !matches!(self.phase, Phase::Priming | Phase::Open) {
            return;
        }
        let frame = match msg.mode {
            PingMode::Protocol => ws::Message::Ping(msg.payload),
            PingMode::Application => {
                ws::Message::Text(ByteString::from_static(r#"{"type":"ping"}"#))
            }
        };
        if !self.write_now(frame) {
            tracing::debug!(connection = %self.shared.name, "writer queue full; heartbeat ping skipped");
        }
    }
}

/// The heartbeat found socket `gen` silent past its timeout.
#[derive(Message)]
#[rtype(result = "()")]
pub(crate) struct PeerDead {
    pub(crate) gen: u64,
    pub(crate) silent_for: Duration,
}

/// Handler for [`PeerDead`]: cut the socket at once (it may be stalled) and report it lost.
impl Handler<PeerDead> for Connection {
    type Result = ();
    fn handle(&mut self, msg: PeerDead, ctx: &mut Context<Self>) {
        if self.link_gen() != Some(msg.gen) {
            return;
        }
        let ms = msg.silent_for.as_millis();
        self.lost(
            ctx,
            1006,
            format!("heartbeat timeout: nothing received for {ms} ms"),
            false,
        );
    }
}

/// The user closed the client: close the socket with 1000 and never dial again.
#[derive(Message)]
#[rtype(result = "()")]
pub(crate) struct Shutdown;

/// Handler for [`Shutdown`].
impl Handler<Shutdown> for Connection {
    type Result = ();
    fn handle(&mut self, _: Shutdown, ctx: &mut Context<Self>) {
        self.shut = true;
        match self.phase {
            Phase::Idle | Phase::Connecting => {
                self.lost(ctx, 1000, "closed by the client".into(), false);
            }
            Phase::Priming | Phase::Open => self.close_with(ctx, 1000, "closed by the client"),
            Phase::Closing => {}
        }
    }
}

/// The writer task of socket `gen` ended.
#[derive(Message)]
#[rtype(result = "()")]
pub(crate) struct WriterDone {
    gen: u64,
    error: Option<String>,
}

/// Handler for [`WriterDone`]: a write error loses the socket.
impl Handler<WriterDone> for Connection {
    type Result = ();
    fn handle(&mut self, msg: WriterDone, ctx: &mut Context<Self>) {
        if self.link_gen() != Some(msg.gen) {
            return;
        }
        if let Some(error) = msg.error {
            self.lost(ctx, 1006, format!("write failed: {error}"), false);
        }
    }
}

/// Stop the actor (the client is closed or has given up).
#[derive(Message)]
#[rtype(result = "()")]
pub(crate) struct Terminate;

/// Handler for [`Terminate`].
impl Handler<Terminate> for Connection {
    type Result = ();
    fn handle(&mut self, _: Terminate, ctx: &mut Context<Self>) {
        self.shut = true;
        self.teardown(ctx, true);
        ctx.stop();
    }
}
