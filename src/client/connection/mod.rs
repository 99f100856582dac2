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
//! `ReconnectSupervisor` owns the lifecycle. It tells the Connection to `Dial` or to
//! `CloseSocket`, and the Connection tells it what happened (`Established`,
//! `ConnectFailed`, `Lost`).

//!
//! # Files
//!
//! - this file: the actor, its socket's lifecycle and the frames it reads;
//! - `messages`: what the other actors and the handles send it, one message and handler each;
//! - `on_connect`: the messages sent first on every socket (room joins), and the handles' edits;
//! - `dial`: the awc client, the opening handshake and connect errors in words;
//! - `socket`: the codec adapter and the small-buffer reframing of awc's connection;
//! - `writer`: the task that writes control frames, then data, to one socket.
//!
//! # Ending a socket
//!
//! *Close* (`Connection::close`) sends a Close frame and waits, at most `CLOSE_TIMEOUT`,
//! for the peer's; *cut* (`Connection::cut`) drops the socket without a handshake; the actor
//! *stops* on `Stop` from the supervisor once the client has ended.

mod dial;
mod messages;
mod on_connect;
mod socket;
mod writer;

use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;
use actix_http::ws::{self, CloseCode, CloseReason, Frame};
use futures_util::stream;
use futures_util::StreamExt;
use tokio::sync::Notify;

use super::census::{CensusEntry, Counted};
use super::gate::{Gated, ReadGate};
use super::heartbeat::{Heartbeat, PongReceived, Watch};
use super::outbox::SharedOutbox;
use super::reconnect::{ConnectFailed, Established, Lost, ReconnectSupervisor};
use super::recovery::rejoin_frames;
use super::router::{Incoming, Router, SharedStreams};
use super::state::ClientShared;
use crate::config::ClientConfig;
use crate::ws::{close, Assembler, Event, Fault};
use on_connect::OnConnectSet;
use socket::{SocketItem, WsFramed};
use writer::{control_channel, write_loop, ControlReceiver};

pub(crate) use super::outbox::OutFrame;
pub use dial::validate_url;
pub(crate) use messages::{CloseSocket, Dial, PeerDead, SendFrame, SendPing, Stop};
pub(crate) use on_connect::OnConnect;
pub(crate) use writer::CONTROL_QUEUE;

/// How long we wait for the peer's Close after sending ours, before cutting the socket.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(2);
/// How long a writer may take to flush its last frames (a Close reply) before it is aborted.
const WRITER_GRACE: Duration = Duration::from_secs(2);

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
pub(crate) struct Connection {
    /// Counted in the process-wide [`census`](crate::client::census) while alive.
    _live: Counted,
    url: String,
    config: ClientConfig,
    shared: Arc<ClientShared>,
    router: Addr<Router>,
    heartbeat: Option<Addr<Heartbeat>>,
    supervisor: Option<Addr<ReconnectSupervisor>>,
    outbox: SharedOutbox,
    /// Sent first on every socket, in registration order; at most
    /// [`max_on_connect`](ClientConfig::max_on_connect), no duplicates, one join per room.
    on_connect: OnConnectSet,
    link: Option<Link>,
    connecting: Option<SpawnHandle>,
    gen: u64,
    assembler: Assembler,
    /// An awc client of this connection's own, when its config trusts extra TLS roots.
    awc: Option<awc::Client>,
    /// Closed while the Router or the control path is behind: the socket is not read then.
    gate: Rc<ReadGate>,
    /// The rooms' stream positions, kept by the Router: a rejoin starts from them.
    streams: SharedStreams,
}

impl Connection {
    pub(crate) fn new(
        url: String,
        config: ClientConfig,
        shared: Arc<ClientShared>,
        router: Addr<Router>,
        outbox: SharedOutbox,
        gate: Rc<ReadGate>,
        streams: SharedStreams,
    ) -> Self {
        let assembler = Assembler::new(config.max_message_size);
        let awc = dial::own_awc_client(&config);
        Self {
            _live: Counted::new(CensusEntry::Actor),
            url,
            config,
            shared,
            router,
            heartbeat: None,
            supervisor: None,
            outbox,
            on_connect: OnConnectSet::default(),
            link: None,
            connecting: None,
            gen: 0,
            assembler,
            awc,
            gate,
            streams,
        }
    }

    /// Give the Connection the addresses of the actors it reports to; they are made after it,
    /// since each refers to the others.
    pub(crate) fn set_peers(
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
        let fut = dial::handshake(&self.url, &self.config, self.awc.as_ref());
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
        let frames = rejoin_frames(self.on_connect.frames(), &self.streams.borrow());
        self.outbox.borrow_mut().attach(gen, &frames, wake.clone());
        let writer = actix_rt::spawn(write_loop(
            sink,
            self.outbox.clone(),
            wake,
            ControlReceiver {
                rx: control_rx,
                gate: self.gate.clone(),
                gen,
            },
            self.config.write_queue,
            ctx.address(),
            gen,
        ));
        let tagged = stream
            .map(move |item| SocketItem {
                gen,
                item: Some(item.and_then(|frame| frame)),
            })
            .chain(stream::once(async move { SocketItem { gen, item: None } }));
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

    /// Cut the socket: stop reading it and drop it without a handshake. With `graceful`, the
    /// writer may still finish the batch it holds and flush its control path (a Close reply) for
    /// [`WRITER_GRACE`]; otherwise its task is stopped at once (the socket may be stalled).
    /// Either way it takes no new data: the outbox is detached first.
    fn cut(&mut self, ctx: &mut Context<Self>, graceful: bool) {
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

    /// The socket is gone or given up: [cut](Self::cut) it and tell the supervisor it was lost.
    fn cut_and_report(
        &mut self,
        ctx: &mut Context<Self>,
        code: u16,
        reason: String,
        graceful: bool,
    ) {
        self.cut(ctx, graceful);
        tracing::info!(connection = %self.shared.name, code, %reason, "disconnected");
        if let Some(s) = &self.supervisor {
            s.do_send(Lost { code, reason });
        }
    }

    /// Close: send a Close frame with `code` and wait for the peer's; the socket is cut when the
    /// peer answers or after [`CLOSE_TIMEOUT`].
    fn close(&mut self, ctx: &mut Context<Self>, code: u16, reason: &str) {
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
            return self.cut_and_report(ctx, code, reason.to_owned(), false);
        }
        ctx.run_later(CLOSE_TIMEOUT, move |act, ctx| {
            if act.link_gen() == Some(gen) {
                tracing::debug!(connection = %act.shared.name, "no close frame from the peer in time");
                let (code, reason) = act.our_close().unwrap_or((code, String::new()));
                act.cut_and_report(ctx, code, reason, false);
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
                ClientShared::add(&self.shared.counts.messages_in, 1);
                ClientShared::add(&self.shared.counts.bytes_in, text.len() as u64);
                // Bounded: the gate stops reading while too much waits for the Router.
                self.gate.routing_started(text.len());
                self.router.do_send(Incoming::Text(text));
            }
            Event::Binary(bytes) => {
                ClientShared::add(&self.shared.counts.messages_in, 1);
                ClientShared::add(&self.shared.counts.bytes_in, bytes.len() as u64);
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
                self.close(ctx, code, &reason);
            }
            Fault::Lost(why) => {
                self.cut_and_report(ctx, 1006, format!("read failed: {why}"), false)
            }
        }
    }

    fn on_close(&mut self, reason: Option<CloseReason>, ctx: &mut Context<Self>) {
        if let Some((code, reason)) = self.our_close() {
            // The peer answered our Close: the handshake is complete.
            return self.cut_and_report(ctx, code, reason, true);
        }
        let received = reason.as_ref().map(|r| u16::from(r.code));
        let text = reason.and_then(|r| r.description).unwrap_or_default();
        self.write_control(ws::Message::Close(Some(CloseReason {
            code: CloseCode::from(close::reply_to(received)),
            description: None,
        })));
        // 1005: "no status code was present" (reported, never sent).
        self.cut_and_report(ctx, received.unwrap_or(1005), text, true);
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

/// Handler for incoming frames.
impl StreamHandler<SocketItem> for Connection {
    fn handle(&mut self, t: SocketItem, ctx: &mut Context<Self>) {
        if self.link_gen() != Some(t.gen) {
            return;
        }
        match t.item {
            None => {
                let (code, reason) = self
                    .our_close()
                    .unwrap_or((1006, "connection closed without a close frame".into()));
                self.cut_and_report(ctx, code, reason, true);
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
