//! The Connection actor: owns one awc WebSocket at a time, turns frames into messages for the
//! Router, and feeds the socket from the [outbox](super::outbox).
//!
//! # What it guarantees
//!
//! - Frames are read through the shared frame layer ([`crate::ws`]): a frame whose header
//!   declares more than [`max_message_size`](crate::config::ClientConfig::max_message_size)
//!   closes the socket with 1009 before any of its payload is buffered; reserved bits close with
//!   1002. Fragmented messages are put back together up to the same limit (1009), control frames
//!   between fragments are answered, and text is checked for UTF-8 fragment by fragment (1007).
//! - **Control before data**: pongs, heartbeat pings and close frames reach the socket's writer
//!   through a path of their own that data cannot fill, and the writer sends them before the
//!   next batch of data. A peer's ping is answered, its Close echoed ([`close::reply_to`]), and
//!   the user's `close()` sends a Close frame, however many messages wait.
//! - Data waits in the outbox (bounded by [`OutboxPolicy`](crate::config::OutboxPolicy)) until
//!   the writer takes it, in batches of at most
//!   [`write_queue`](crate::config::ClientConfig::write_queue); the actor never waits on the
//!   socket. What happens to each message is the outbox's accounting rule.
//! - On every socket the on-connect messages go first (deduplicated, in registration order),
//!   then whatever waited in the outbox, in order.
//!
//! The Connection does not decide whether to reconnect, nor publish states: the
//! [`ReconnectSupervisor`] owns the lifecycle. It tells the Connection to `Dial` or to
//! `CloseSocket`, and the Connection tells it what happened (`Established`,
//! `ConnectFailed`, `Lost`).

use crate::client::census::{Counted, Kind as Census};
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;
use actix_http::ws::{self, CloseCode, CloseReason, Frame, ProtocolError};
use awc::BoxedSocket;
use bytes::Bytes;
use bytestring::ByteString;
use futures_util::stream::{self, SplitSink};
use futures_util::{SinkExt, StreamExt};
use tokio::sync::Notify;

use super::gate::{Gated, ReadGate};
use super::heartbeat::{Heartbeat, PongReceived, Watch};
use super::outbox::{Kind, SharedOutbox};
use super::reconnect::{ConnectFailed, Established, Lost, ReconnectSupervisor};
use super::router::{Incoming, Router};
use super::state::Shared;
use crate::config::{ClientConfig, PingMode};
use crate::error::Error;
use crate::ws::{close, Assembler, Event, Fault, FrameCodec};

pub(crate) use super::outbox::OutFrame;

/// How long we wait for the peer's Close after sending ours, before cutting the socket.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(2);
/// How long a writer may take to flush its last frames (a Close reply) before it is aborted.
const WRITER_GRACE: Duration = Duration::from_secs(2);
/// Control frames (pongs, pings, a close) waiting for the writer. The socket is not read while
/// [`CONTROL_AHEAD`](super::gate::CONTROL_AHEAD) of them wait (see [`gate`](super::gate)), so a
/// peer's ping always finds room for its pong; the two slots above that are for a heartbeat
/// ping (skipped when there is no room: liveness is judged by what arrives) and our Close (a
/// close that does not fit means the writes have stalled: the socket is cut).
pub(crate) const CONTROL_QUEUE: usize = 16;

/// Bytes each of the socket's buffers starts with; the read buffer grows for a larger message,
/// the write buffer for a larger batch. awc hands the connection over in actix-codec's
/// `Framed`, which keeps two 8 KiB buffers per connection and grows either back to 8 KiB
/// whenever less than 1 KiB is free; so the connection is moved into tokio-util's `Framed`
/// (the same `Decoder`/`Encoder` traits) with buffers of this size. Measured at 1000 idle
/// connections (`BENCHMARKS.md`): client RSS per connection 21.8 KB with actix-codec's
/// buffers, 19.5 KB with 4 KiB, 15.6 KB with 2 KiB, 13.6 KB with 1 KiB.
const SOCKET_BUFFER: usize = 1024;

/// Encoded bytes the writer lets pile up before it writes them out mid-batch (tokio-util's
/// default; the write buffer starts at [`SOCKET_BUFFER`] and grows to this under load).
const WRITE_BATCH_BYTES: usize = 8 * 1024;

type WsFramed = tokio_util::codec::Framed<Prefixed, KeepReading>;

/// The frame codec as tokio-util's `Framed` needs it. tokio-util ends the stream after the
/// first decode error, but a protocol violation (an oversize frame, bad UTF-8) is answered with
/// a close frame and the socket is still read, its data discarded, until the peer's close
/// arrives (so the peer is not reset with our close unread). So violations travel as items
/// and only a lost connection is an error; the codec skips what the violation left behind.
pub(crate) struct KeepReading(FrameCodec);

impl actix_codec::Decoder for KeepReading {
    type Item = Result<Frame, Fault>;
    type Error = Fault;

    fn decode(&mut self, src: &mut bytes::BytesMut) -> Result<Option<Self::Item>, Fault> {
        match self.0.decode(src) {
            Ok(frame) => Ok(frame.map(Ok)),
            Err(fault @ Fault::Violation { .. }) => Ok(Some(Err(fault))),
            Err(lost) => Err(lost),
        }
    }
}

impl actix_codec::Encoder<ws::Message> for KeepReading {
    type Error = ProtocolError;

    fn encode(
        &mut self,
        item: ws::Message,
        dst: &mut bytes::BytesMut,
    ) -> Result<(), ProtocolError> {
        self.0.encode(item, dst)
    }
}

/// The writer's control path. futures-channel's bounded channel rather than tokio's: tokio's
/// allocates a block of 32 slots and a cache-padded header up front (about 1.8 KB per
/// connection, for a path that carries a ping now and then), futures-channel allocates per
/// message. Its bound is the buffer plus one slot per sender (one here).
type ControlRx = futures_channel::mpsc::Receiver<ws::Message>;

fn control_channel(bound: usize) -> (futures_channel::mpsc::Sender<ws::Message>, ControlRx) {
    futures_channel::mpsc::channel(bound.saturating_sub(1))
}
type WsSink = SplitSink<WsFramed, ws::Message>;

/// An awc client whose connector has no connection limit (awc's default pool allows 100
/// connections per client and a WebSocket holds its permit for its whole life, so connection 101
/// would wait and time out), no timeouts of its own (ours apply), and, with the `rustls`
/// feature, `tls` for `wss://`.
fn awc_client(#[cfg(feature = "rustls")] tls: Arc<rustls::ClientConfig>) -> awc::Client {
    let connector = awc::Connector::new()
        .limit(0)
        .timeout(Duration::from_secs(3600));
    #[cfg(feature = "rustls")]
    let connector = connector.rustls_0_23(tls);
    awc::Client::builder()
        .connector(connector)
        .disable_timeout()
        .finish()
}

/// The awc client for connections that trust the default roots only.
fn default_awc_client() -> awc::Client {
    #[cfg(feature = "rustls")]
    match crate::tls::client_config(&[]) {
        Ok(tls) => awc_client(tls),
        Err(e) => {
            // Cannot happen with the bundled roots; `wss://` then fails to connect, in words.
            tracing::error!("no TLS configuration for wss://: {e}");
            awc::Client::default()
        }
    }
    #[cfg(not(feature = "rustls"))]
    awc_client()
}

thread_local! {
    /// One awc client per thread (arbiter) for every connection that trusts only the default
    /// roots; a config with extra roots gets a client of its own.
    static AWC: awc::Client = default_awc_client();
}

/// One open socket.
struct Link {
    gen: u64,
    /// The control path to the writer.
    control: futures_channel::mpsc::Sender<ws::Message>,
    reader: SpawnHandle,
    writer: tokio::task::JoinHandle<()>,
    /// Our close frame's code and reason, once sent: waiting for the peer's.
    closing: Option<(u16, String)>,
}

/// The Connection actor of one client. See the [module docs](self).
pub struct Connection {
    /// Counted in the process-wide [`census`](crate::client::census) while alive.
    _live: Counted,
    url: String,
    config: ClientConfig,
    shared: Arc<Shared>,
    router: Addr<Router>,
    heartbeat: Option<Addr<Heartbeat>>,
    supervisor: Option<Addr<ReconnectSupervisor>>,
    outbox: SharedOutbox,
    /// Sent first on every socket, in registration order; at most
    /// [`max_on_connect`](ClientConfig::max_on_connect), no duplicates (`on_connect_set` makes
    /// the check O(1)).
    on_connect: Vec<ByteString>,
    on_connect_set: std::collections::HashSet<ByteString>,
    link: Option<Link>,
    connecting: Option<SpawnHandle>,
    gen: u64,
    assembler: Assembler,
    /// An awc client of this connection's own, when its config trusts extra TLS roots.
    awc: Option<awc::Client>,
    /// Closed while the Router or the control path is behind: the socket is not read then.
    gate: Rc<ReadGate>,
}

impl Connection {
    pub(crate) fn new(
        url: String,
        config: ClientConfig,
        shared: Arc<Shared>,
        router: Addr<Router>,
        outbox: SharedOutbox,
        gate: Rc<ReadGate>,
    ) -> Self {
        let assembler = Assembler::new(config.max_message_size);
        // `connect` validated the config, so the roots parse.
        #[cfg(feature = "rustls")]
        let awc = (!config.tls_roots_pem.is_empty())
            .then(|| crate::tls::client_config(&config.tls_roots_pem).ok())
            .flatten()
            .map(awc_client);
        #[cfg(not(feature = "rustls"))]
        let awc = None;
        Self {
            _live: Counted::new(Census::Actor),
            url,
            config,
            shared,
            router,
            heartbeat: None,
            supervisor: None,
            outbox,
            on_connect: Vec::new(),
            on_connect_set: std::collections::HashSet::new(),
            link: None,
            connecting: None,
            gen: 0,
            assembler,
            awc,
            gate,
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

    /// Hand a control frame to the writer of the open socket. False when there is no socket or
    /// its control path is full (its writes have stalled).
    fn write_control(&mut self, msg: ws::Message) -> bool {
        let Some(link) = self.link.as_mut() else {
            return false;
        };
        let sent = link.control.try_send(msg).is_ok();
        if sent {
            self.gate.control_queued(link.gen);
        }
        sent
    }

    fn dial(&mut self, ctx: &mut Context<Self>) {
        let mut req = match &self.awc {
            Some(own) => own.ws(self.url.as_str()),
            None => AWC.with(|c| c.ws(self.url.as_str())),
        }
        .max_frame_size(self.config.max_message_size);
        for (name, value) in &self.config.headers {
            req = req.header(name.as_str(), value.as_str());
        }
        if !self.config.protocols.is_empty() {
            req = req.protocols(&self.config.protocols);
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
                // The frame-header guard goes in front of awc's codec.
                Ok(Ok((_response, framed))) => Ok(reframe(
                    framed.into_map_codec(|codec| FrameCodec::wrap(codec, max)),
                )),
            }
        };
        tracing::debug!(connection = %self.shared.name, url = %self.url, "dialling");
        self.connecting = Some(ctx.spawn(fut.into_actor(self).map(|res, act, ctx| {
            act.connecting = None;
            match res {
                Ok(framed) => act.attach(framed, ctx),
                Err(error) => {
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
        let (control, control_rx) = control_channel(CONTROL_QUEUE);
        self.gate.control_reset(gen);
        let wake = Rc::new(Notify::new());
        self.outbox
            .borrow_mut()
            .attach(gen, &self.on_connect, wake.clone());
        let writer = actix_rt::spawn(write_loop(
            sink,
            self.outbox.clone(),
            wake,
            Taken {
                rx: control_rx,
                gate: self.gate.clone(),
                gen,
            },
            self.config.write_queue,
            ctx.address(),
            gen,
        ));
        let tagged = stream
            .map(move |item| Tagged {
                gen,
                item: Some(item.and_then(|frame| frame)),
            })
            .chain(stream::once(async move { Tagged { gen, item: None } }));
        let reader = ctx.add_stream(Gated::new(tagged, self.gate.clone()));
        self.link = Some(Link {
            gen,
            control,
            reader,
            writer,
            closing: None,
        });
        self.assembler.reset();
        tracing::info!(connection = %self.shared.name, url = %self.url, "connected");
        if let Some(hb) = &self.heartbeat {
            hb.do_send(Watch(Some(gen)));
        }
        if let Some(s) = &self.supervisor {
            s.do_send(Established);
        }
    }

    /// Let go of the socket. With `graceful`, the writer may still finish the batch it holds and
    /// flush its control path (a Close) for a short while; otherwise it is aborted at once (the
    /// socket may be stalled). Either way it takes no new data: the outbox is detached first.
    fn teardown(&mut self, ctx: &mut Context<Self>, graceful: bool) {
        let draining = graceful && self.link.is_some();
        self.outbox.borrow_mut().detach(draining);
        if let Some(link) = self.link.take() {
            ctx.cancel_future(link.reader);
            if graceful {
                let abort = link.writer.abort_handle();
                let (outbox, gen) = (self.outbox.clone(), link.gen);
                actix_rt::spawn(async move {
                    actix_rt::time::sleep(WRITER_GRACE).await;
                    abort.abort();
                    outbox.borrow_mut().abandon(gen);
                });
            } else {
                link.writer.abort();
            }
        }
        if let Some(h) = self.connecting.take() {
            ctx.cancel_future(h);
        }
        self.assembler.reset();
        if let Some(hb) = &self.heartbeat {
            hb.do_send(Watch(None));
        }
    }

    /// The socket is gone: let go of it and tell the supervisor.
    fn lost(&mut self, ctx: &mut Context<Self>, code: u16, reason: String, graceful: bool) {
        self.teardown(ctx, graceful);
        tracing::info!(connection = %self.shared.name, code, %reason, "disconnected");
        if let Some(s) = &self.supervisor {
            s.do_send(Lost { code, reason });
        }
    }

    /// Start the closing handshake with `code`; the socket is cut when the peer answers or after
    /// [`CLOSE_TIMEOUT`].
    fn close_with(&mut self, ctx: &mut Context<Self>, code: u16, reason: &str) {
        let Some(link) = self.link.as_mut() else {
            return;
        };
        if link.closing.is_some() {
            return;
        }
        link.closing = Some((code, reason.to_owned()));
        let gen = link.gen;
        let sent = self.write_control(ws::Message::Close(Some(CloseReason {
            code: CloseCode::from(code),
            description: (!reason.is_empty()).then(|| reason.to_owned()),
        })));
        if !sent {
            // The writer cannot take even a close frame: its writes have stalled. Cut now.
            return self.lost(ctx, code, reason.to_owned(), false);
        }
        ctx.run_later(CLOSE_TIMEOUT, move |act, ctx| {
            if act.link_gen() == Some(gen) {
                tracing::debug!(connection = %act.shared.name, "no close frame from the peer in time");
                let (code, reason) = act.our_close().unwrap_or((code, String::new()));
                act.lost(ctx, code, reason, false);
            }
        });
    }

    fn our_close(&self) -> Option<(u16, String)> {
        self.link.as_ref().and_then(|l| l.closing.clone())
    }

    fn on_frame(&mut self, frame: Frame, ctx: &mut Context<Self>) {
        if self.our_close().is_some() {
            // Waiting for the peer's Close: anything else is read and dropped, not assembled.
            if let Frame::Close(reason) = frame {
                self.on_close(reason, ctx);
            }
            return;
        }
        let event = match self.assembler.push(frame) {
            Ok(Some(event)) => event,
            Ok(None) => return,
            Err(fault) => return self.on_fault(fault, ctx),
        };
        match event {
            Event::Text(text) => {
                Shared::add(&self.shared.messages_in, 1);
                Shared::add(&self.shared.bytes_in, text.len() as u64);
                // Bounded: the gate stops reading while too much waits for the Router.
                self.gate.routing_started(text.len());
                self.router.do_send(Incoming::Text(text));
            }
            Event::Binary(bytes) => {
                Shared::add(&self.shared.messages_in, 1);
                Shared::add(&self.shared.bytes_in, bytes.len() as u64);
                self.gate.routing_started(bytes.len());
                self.router.do_send(Incoming::Binary(bytes));
            }
            Event::Ping(p) => {
                // The gate read this frame only because the control path had room for its
                // pong; so this cannot fail while the socket is open.
                if !self.write_control(ws::Message::Pong(p)) {
                    tracing::warn!(connection = %self.shared.name, "control path full; pong not sent");
                }
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
            Fault::Violation { code, reason } => {
                if self.our_close().is_none() {
                    tracing::warn!(connection = %self.shared.name, code, %reason, "closing the connection");
                }
                self.close_with(ctx, code, &reason);
            }
            Fault::Lost(why) => self.lost(ctx, 1006, format!("read failed: {why}"), false),
        }
    }

    fn on_close(&mut self, reason: Option<CloseReason>, ctx: &mut Context<Self>) {
        if let Some((code, reason)) = self.our_close() {
            // The peer answered our Close: the handshake is complete.
            return self.lost(ctx, code, reason, true);
        }
        let received = reason.as_ref().map(|r| u16::from(r.code));
        let text = reason.and_then(|r| r.description).unwrap_or_default();
        self.write_control(ws::Message::Close(Some(CloseReason {
            code: CloseCode::from(close::reply_to(received)),
            description: None,
        })));
        // 1005: "no status code was present" (reported, never sent).
        self.lost(ctx, received.unwrap_or(1005), text, true);
    }
}

fn map_connect_error(url: String, e: awc::error::WsClientError) -> Error {
    use awc::error::{ConnectError, SendRequestError, WsClientError};
    // Where the URL points, for the words below.
    let (host, authority) = match url.parse::<awc::http::Uri>() {
        Ok(uri) => {
            let host = uri.host().unwrap_or_default().to_owned();
            let port = uri.port_u16().unwrap_or(match uri.scheme_str() {
                Some("wss") => 443,
                _ => 80,
            });
            let authority = format!("{host}:{port}");
            (host, authority)
        }
        Err(_) => (url.clone(), url.clone()),
    };
    #[cfg(feature = "rustls")]
    {
        // awc's errors do not expose their sources: the TLS error sits in the connect I/O error.
        let refusal = match &e {
            WsClientError::SendRequest(SendRequestError::Connect(ConnectError::Io(io))) => {
                crate::tls::certificate_refusal(io, &host)
            }
            other => crate::tls::certificate_refusal(other, &host),
        };
        if let Some(reason) = refusal {
            return Error::Certificate { url, reason };
        }
    }
    let reason = match e {
        WsClientError::InvalidResponseStatus(status) => {
            return Error::HandshakeRejected {
                url,
                status: status.as_u16(),
            }
        }
        WsClientError::SendRequest(SendRequestError::Connect(c)) => match c {
            ConnectError::Io(io) if io.kind() == std::io::ErrorKind::ConnectionRefused => {
                format!("connection refused by {authority} (nothing listens there)")
            }
            ConnectError::Io(io) => format!("cannot connect to {authority}: {io}"),
            ConnectError::Resolver(why) => format!("cannot resolve host {host}: {why}"),
            ConnectError::NoRecords | ConnectError::Unresolved => {
                format!("host {host} resolves to no address")
            }
            ConnectError::Timeout => format!("no answer from {authority} in time"),
            other => format!("cannot connect to {authority}: {other}"),
        },
        other => other.to_string(),
    };
    Error::ConnectFailed { url, reason }
}

/// The writer of socket `gen`: control frames first (before every data frame), then batches of
/// data from the outbox, each flushed before the next is taken (a flushed batch counts as
/// written). Ends after a Close, when the control path closes and nothing is left to finish
/// (the socket was let go), or on a write error (reported to the actor).
async fn write_loop(
    mut sink: WsSink,
    outbox: SharedOutbox,
    wake: Rc<Notify>,
    mut control: Taken,
    batch: usize,
    addr: Addr<Connection>,
    gen: u64,
) {
    let result = async {
        loop {
            if write_control(&mut sink, &mut control).await? == Control::Done {
                return Ok(());
            }
            let frames = outbox.borrow_mut().take_batch(gen, batch);
            if frames.is_empty() {
                sink.flush().await?;
                tokio::select! {
                    biased;
                    msg = control.next() => match msg {
                        Some(msg) => {
                            let closing = matches!(msg, ws::Message::Close(_));
                            sink.send(msg).await?;
                            if closing {
                                return Ok(());
                            }
                        }
                        None => return Ok(()),
                    },
                    _ = wake.notified() => {}
                }
                continue;
            }
            for frame in frames {
                // Control frames go between messages, never behind a whole batch; and a socket
                // given up meanwhile gets no more data.
                if write_control(&mut sink, &mut control).await? == Control::Done
                    || !outbox.borrow().may_write(gen)
                {
                    sink.flush().await?;
                    // The rest of the batch is not written: counted now if the socket was let
                    // go (otherwise when it is).
                    outbox.borrow_mut().abandon(gen);
                    return Ok(());
                }
                sink.feed(frame).await?;
            }
            sink.flush().await?;
            outbox.borrow_mut().batch_written(gen);
        }
    }
    .await;
    addr.do_send(WriterDone {
        gen,
        error: result.err().map(|e: ProtocolError| e.to_string()),
    });
}

/// Move awc's connection into tokio-util's `Framed` with small buffers (see [`SOCKET_BUFFER`]),
/// keeping whatever awc had already read past the handshake (the peer may speak first).
fn reframe(framed: actix_codec::Framed<BoxedSocket, FrameCodec>) -> WsFramed {
    // awc flushed its request before it read the response, so only the read side can hold
    // anything.
    let old = framed.into_parts();
    let io = Prefixed {
        // A copy, so that awc's 8 KiB read buffer is freed now (usually nothing to copy).
        prefix: Bytes::copy_from_slice(&old.read_buf),
        io: old.io,
    };
    let mut framed =
        tokio_util::codec::Framed::with_capacity(io, KeepReading(old.codec), SOCKET_BUFFER);
    framed.set_backpressure_boundary(WRITE_BATCH_BYTES);
    framed
}

/// The socket, behind the bytes awc read past the handshake: those are read first.
/// (tokio-util's `Framed::from_parts` would keep them, but grows both buffers to 8 KiB.)
pub(crate) struct Prefixed {
    prefix: Bytes,
    io: BoxedSocket,
}

impl actix_codec::AsyncRead for Prefixed {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut actix_codec::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        if !self.prefix.is_empty() {
            let n = self.prefix.len().min(buf.remaining());
            buf.put_slice(&self.prefix[..n]);
            if n == self.prefix.len() {
                self.prefix = Bytes::new();
            } else {
                let _ = self.prefix.split_to(n);
            }
            return std::task::Poll::Ready(Ok(()));
        }
        std::pin::Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl actix_codec::AsyncWrite for Prefixed {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        std::pin::Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_flush(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

/// The writer's end of the control path; every frame taken is reported to the read gate (the
/// Connection reads on once the path has room again).
struct Taken {
    rx: ControlRx,
    gate: Rc<ReadGate>,
    gen: u64,
}

impl Taken {
    fn try_recv(&mut self) -> Result<ws::Message, futures_channel::mpsc::TryRecvError> {
        let msg = self.rx.try_recv()?;
        self.gate.control_taken(self.gen);
        Ok(msg)
    }

    async fn next(&mut self) -> Option<ws::Message> {
        let msg = self.rx.next().await?;
        self.gate.control_taken(self.gen);
        Some(msg)
    }
}

/// What [`write_control`] found.
#[derive(Debug, PartialEq, Eq)]
enum Control {
    /// Go on with data.
    More,
    /// A Close was written, or the socket was let go: write nothing more.
    Done,
}

/// Feed every control frame waiting (not flushed: the caller flushes with what follows).
async fn write_control(sink: &mut WsSink, control: &mut Taken) -> Result<Control, ProtocolError> {
    loop {
        match control.try_recv() {
            Ok(msg) => {
                let closing = matches!(msg, ws::Message::Close(_));
                sink.feed(msg).await?;
                if closing {
                    sink.flush().await?;
                    return Ok(Control::Done);
                }
            }
            Err(futures_channel::mpsc::TryRecvError::Empty) => return Ok(Control::More),
            Err(futures_channel::mpsc::TryRecvError::Closed) => return Ok(Control::Done),
        }
    }
}

impl Actor for Connection {
    type Context = Context<Self>;

    fn stopped(&mut self, _: &mut Context<Self>) {
        self.outbox.borrow_mut().clear();
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
                    .our_close()
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

/// Sent by the supervisor when a socket should be opened (first connection, or after the
/// backoff delay). Ignored while a socket is open or being opened.
#[derive(Message)]
#[rtype(result = "()")]
pub(crate) struct Dial;

/// Handler for [`Dial`].
impl Handler<Dial> for Connection {
    type Result = ();
    fn handle(&mut self, _: Dial, ctx: &mut Context<Self>) {
        if self.link.is_some() || self.connecting.is_some() {
            tracing::debug!(connection = %self.shared.name, "dial ignored: a socket is open or opening");
            return;
        }
        self.dial(ctx);
    }
}

/// Sent by the supervisor to close the socket with `code` (the user's `close()`, or a socket
/// that opened after `close()` was called). With `last`, no message is accepted any more. The
/// Connection answers with [`Lost`] once the socket is gone (at once when there is none).
#[derive(Message)]
#[rtype(result = "()")]
pub(crate) struct CloseSocket {
    pub(crate) code: u16,
    pub(crate) reason: &'static str,
    pub(crate) last: bool,
}

/// Handler for [`CloseSocket`].
impl Handler<CloseSocket> for Connection {
    type Result = ();
    fn handle(&mut self, msg: CloseSocket, ctx: &mut Context<Self>) {
        if msg.last {
            self.outbox.borrow_mut().refuse_new();
        }
        if self.link.is_some() {
            self.close_with(ctx, msg.code, msg.reason);
        } else {
            self.lost(ctx, msg.code, msg.reason.to_owned(), false);
        }
    }
}

/// Sent by a [`Client`](super::Client) handle: accept one user message into the outbox (the
/// writer is woken). Fails with `OutboxFull` under `Reject`, `MessageTooLarge`, or
/// `ClientClosed`.
#[derive(Message)]
#[rtype(result = "Result<(), Error>")]
pub(crate) struct SendFrame(pub(crate) OutFrame);

/// Handler for [`SendFrame`].
impl Handler<SendFrame> for Connection {
    type Result = Result<(), Error>;
    fn handle(&mut self, msg: SendFrame, _: &mut Context<Self>) -> Self::Result {
        self.outbox.borrow_mut().push(msg.0, Kind::Data)
    }
}

/// Sent by a [`Client`](super::Client) handle: change the on-connect set. `Add` (no duplicates)
/// also sends the message now when a socket is open; `Remove` takes it out, and sends `then`
/// (for example a `leave` after removing a `join`) when a socket is open.
#[derive(Message)]
#[rtype(result = "Result<(), Error>")]
pub(crate) enum OnConnect {
    Add(ByteString),
    Remove {
        text: ByteString,
        then: Option<ByteString>,
    },
}

/// Handler for [`OnConnect`].
impl Handler<OnConnect> for Connection {
    type Result = Result<(), Error>;
    fn handle(&mut self, msg: OnConnect, _: &mut Context<Self>) -> Self::Result {
        let open = self.link.as_ref().is_some_and(|l| l.closing.is_none());
        let mut outbox = self.outbox.borrow_mut();
        if outbox.is_refusing() {
            return Err(Error::ClientClosed);
        }
        match msg {
            OnConnect::Add(text) => {
                if !self.on_connect_set.contains(&text) {
                    let limit = self.config.max_on_connect;
                    if self.on_connect.len() >= limit {
                        return Err(Error::OnConnectFull { limit });
                    }
                    if open {
                        outbox.push_replay(text.clone())?;
                    }
                    self.on_connect_set.insert(text.clone());
                    self.on_connect.push(text);
                }
            }
            OnConnect::Remove { text, then } => {
                if self.on_connect_set.remove(&text) {
                    self.on_connect.retain(|t| *t != text);
                }
                if let (true, Some(then)) = (open, then) {
                    outbox.push_replay(then)?;
                }
            }
        }
        Ok(())
    }
}

/// Sent by the heartbeat: a ping on socket `gen`, through the control path.
#[derive(Message)]
#[rtype(result = "()")]
pub(crate) struct SendPing {
    pub(crate) gen: u64,
    pub(crate) mode: PingMode,
    pub(crate) payload: Bytes,
}

/// Handler for [`SendPing`]. A full control path skips the ping: liveness is judged by what
/// arrives, not by what we manage to write.
impl Handler<SendPing> for Connection {
    type Result = ();
    fn handle(&mut self, msg: SendPing, _: &mut Context<Self>) {
        if self.link_gen() != Some(msg.gen) || self.our_close().is_some() {
            return;
        }
        let frame = match msg.mode {
            PingMode::Protocol => ws::Message::Ping(msg.payload),
            PingMode::Application => {
                ws::Message::Text(ByteString::from_static(r#"{"type":"ping"}"#))
            }
        };
        if !self.write_control(frame) {
            tracing::debug!(connection = %self.shared.name, "control path full; heartbeat ping skipped");
        }
    }
}

/// Sent by the heartbeat: socket `gen` was silent past its timeout.
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

/// Sent by the writer task of socket `gen` when it ends.
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

/// Sent by the supervisor when the client has ended (`Closed` or `Failed`): stop the actor.
#[derive(Message)]
#[rtype(result = "()")]
pub(crate) struct Terminate;

/// Handler for [`Terminate`].
impl Handler<Terminate> for Connection {
    type Result = ();
    fn handle(&mut self, _: Terminate, ctx: &mut Context<Self>) {
        self.teardown(ctx, true);
        ctx.stop();
    }
}
