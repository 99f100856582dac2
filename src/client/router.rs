//! The Router actor: decodes the envelope head once, routes by `type` to subscribers of that Rust
//! type, matches replies to pending requests by `id`, and publishes connection-state events.
//!
//! Unknown types and malformed payloads become counted, traced [`Event::MessageError`]s; they
//! never close the connection.

use crate::client::census::{Counted, Kind as Census};
use std::any::{Any, TypeId};
use std::collections::HashMap;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;
use bytes::Bytes;
use bytestring::ByteString;
use futures_util::FutureExt;
use tokio::sync::oneshot;

use super::gate::ReadGate;
use super::heartbeat::{AppPong, Heartbeat};
use super::outbox::{Kind, OutFrame, SharedOutbox};
pub use super::sink::Overflow;
pub(crate) use super::sink::Sink;
use super::sink::{fan_out, prune, Budget, Receipt, Wait};
use super::state::{ConnectionState, Event, MessageError, MessageErrorKind, Shared};
use crate::envelope::{Envelope, Head, Outgoing, WireMessage};
use crate::error::Error;

/// A message of type `T` delivered to a subscriber, with the envelope fields around it and the
/// name of the connection it came from.
#[derive(Debug, Clone)]
pub struct Inbound<T> {
    /// The name of the connection ([`ClientConfig::name`](crate::config::ClientConfig::name), or
    /// its URL), so one subscriber can serve many connections.
    pub connection: Arc<str>,
    /// The envelope `id`, if any.
    pub id: Option<u64>,
    /// The envelope `room`, if any.
    pub room: Option<String>,
    /// The envelope `from`, if any.
    pub from: Option<String>,
    /// The envelope `timestamp`, if any.
    pub timestamp: Option<String>,
    /// The decoded payload.
    pub data: T,
    /// Counts this message against its subscription's byte budget until it is dropped or taken
    /// apart (a clone does not count). See
    /// [`ClientConfig::subscriber_bytes`](crate::config::ClientConfig::subscriber_bytes).
    _receipt: Receipt,
}

impl<T: 'static> Message for Inbound<T> {
    type Result = ();
}

/// The subscribers of one Rust type: `data` is decoded once for all of them.
trait TypedGroup {
    fn as_any_mut(&mut self) -> &mut dyn Any;
    fn rust_type(&self) -> TypeId;
    /// Decode and deliver; `Ok(n)` with the number of full subscribers that dropped it (waits
    /// for full subscribers that asked for backpressure go to `waits`).
    fn dispatch(
        &mut self,
        head: &Head<'_>,
        connection: &Arc<str>,
        waits: &mut Vec<Wait>,
        budget: Budget,
    ) -> Result<u64, Error>;
    fn is_empty(&self) -> bool;
    /// Forget sinks whose receiver is gone; answers how many are left.
    fn prune(&mut self) -> usize;
}

struct Group<T: WireMessage + Clone> {
    sinks: Vec<Sink<Inbound<T>>>,
}

impl<T: WireMessage + Clone> TypedGroup for Group<T> {
    fn as_any_mut(&mut self) -> &mut dyn Any {
        self
    }
    fn rust_type(&self) -> TypeId {
        TypeId::of::<T>()
    }
    fn dispatch(
        &mut self,
        head: &Head<'_>,
        connection: &Arc<str>,
        waits: &mut Vec<Wait>,
        budget: Budget,
    ) -> Result<u64, Error> {
        let data: T = head.data_as()?;
        let room = head.room.as_deref().map(str::to_owned);
        let from = head.from.as_deref().map(str::to_owned);
        let timestamp = head.timestamp.as_deref().map(str::to_owned);
        Ok(fan_out(&mut self.sinks, waits, Some(budget), |receipt| {
            Inbound {
                connection: connection.clone(),
                id: head.id,
                room: room.clone(),
                from: from.clone(),
                timestamp: timestamp.clone(),
                data: data.clone(),
                _receipt: receipt,
            }
        }))
    }
    fn is_empty(&self) -> bool {
        self.sinks.is_empty()
    }
    fn prune(&mut self) -> usize {
        prune(&mut self.sinks)
    }
}

/// The Router actor of one client. See the [module docs](self).
pub struct Router {
    /// Counted in the process-wide [`census`](crate::client::census) while alive.
    _live: Counted,
    shared: Arc<Shared>,
    typed: HashMap<&'static str, Vec<Box<dyn TypedGroup>>>,
    raw: Vec<Sink<Inbound<Envelope>>>,
    binary: Vec<Sink<Inbound<Bytes>>>,
    text: Vec<Sink<Inbound<ByteString>>>,
    events: Vec<Sink<Event>>,
    pending: HashMap<u64, PendingRequest>,
    /// When `pending` reaches this size, requests whose caller gave up (dropped the future) are
    /// forgotten; then it doubles, so the pruning costs O(1) per request.
    prune_pending_at: usize,
    next_id: u64,
    /// Requests go straight into the client's outbox, so that registering one and queueing its
    /// frame are one step (no loss in between can fail it and still let it be written).
    outbox: SharedOutbox,
    /// The heartbeat, only in application ping mode: `{"type":"pong"}` envelopes go to it.
    app_heartbeat: Option<Addr<Heartbeat>>,
    /// Told when a message from the socket has been routed, so the Connection reads on.
    gate: Rc<ReadGate>,
    /// Deliveries to full backpressure subscribers made while routing the current message.
    waits: Vec<Wait>,
    /// Each subscription's byte budget
    /// ([`ClientConfig::subscriber_bytes`](crate::config::ClientConfig::subscriber_bytes)).
    subscriber_bytes: usize,
}

struct PendingRequest {
    tx: oneshot::Sender<Result<Envelope, Error>>,
    timer: SpawnHandle,
}

impl Router {
    /// `app_heartbeat`: the heartbeat when it pings with `{"type":"ping"}` (its pongs are
    /// envelopes to route to it); `None` otherwise.
    pub(crate) fn new(
        shared: Arc<Shared>,
        app_heartbeat: Option<Addr<Heartbeat>>,
        outbox: SharedOutbox,
        gate: Rc<ReadGate>,
        subscriber_bytes: usize,
    ) -> Self {
        Self {
            _live: Counted::new(Census::Actor),
            shared,
            typed: HashMap::new(),
            raw: Vec::new(),
            binary: Vec::new(),
            text: Vec::new(),
            events: Vec::new(),
            pending: HashMap::new(),
            prune_pending_at: 64,
            next_id: 1,
            outbox,
            app_heartbeat,
            gate,
            waits: Vec::new(),
            subscriber_bytes,
        }
    }

    /// The budget of a message of `bytes` on its way to a subscription.
    fn budget(&self, bytes: usize) -> Option<Budget> {
        Some(Budget {
            bytes,
            limit: self.subscriber_bytes,
        })
    }

    /// Hold every further message (and timer) of this Router until the waits of the message
    /// just routed are done: the full backpressure subscribers have taken it. The Connection
    /// reads on only until [`ROUTE_AHEAD`](super::ROUTE_AHEAD) messages wait in the mailbox.
    fn wait_for_subscribers(&mut self, ctx: &mut Context<Self>) {
        if self.waits.is_empty() {
            return;
        }
        let waits = std::mem::take(&mut self.waits);
        ctx.wait(
            futures_util::future::join_all(waits)
                .map(|_| ())
                .into_actor(self),
        );
    }

    fn message_error(
        &mut self,
        kind: MessageErrorKind,
        message_type: Option<String>,
        detail: String,
    ) {
        let counter = match kind {
            MessageErrorKind::Malformed | MessageErrorKind::BadData => &self.shared.decode_errors,
            MessageErrorKind::UnknownType => &self.shared.unknown_types,
            MessageErrorKind::SubscriberFull => &self.shared.dropped_incoming,
        };
        Shared::add(counter, 1);
        let message_type_str = message_type.as_deref().unwrap_or("");
        if kind == MessageErrorKind::UnknownType {
            // Peers often send types a client does not care about; counted, but quiet.
            tracing::debug!(connection = %self.shared.name, message_type = message_type_str, %detail, "message of a type nobody subscribed to");
        } else {
            tracing::warn!(
                connection = %self.shared.name,
                ?kind,
                message_type = message_type_str,
                %detail,
                "incoming message not delivered"
            );
        }
        let err = MessageError {
            kind,
            message_type,
            detail,
        };
        // Events about full subscribers are not themselves counted again when the event
        // channel is full, to avoid a feedback loop.
        let _ = fan_out(&mut self.events, &mut self.waits, None, |_| {
            Event::MessageError(err.clone())
        });
    }

    fn subscribers_full(&mut self, kind: &str, n: u64) {
        for _ in 0..n {
            self.message_error(
                MessageErrorKind::SubscriberFull,
                Some(kind.to_owned()),
                "subscriber full (channel or mailbox at its capacity); message dropped".into(),
            );
        }
    }

    fn route_text(&mut self, text: &ByteString, ctx: &mut Context<Self>) {
        // Verbatim text subscribers see every frame, envelope or not.
        let mut handled = false;
        if !self.text.is_empty() {
            let name = self.shared.name.clone();
            let budget = self.budget(text.len());
            let full = fan_out(&mut self.text, &mut self.waits, budget, |receipt| Inbound {
                connection: name.clone(),
                id: None,
                room: None,
                from: None,
                timestamp: None,
                data: text.clone(),
                _receipt: receipt,
            });
            self.subscribers_full("<text>", full);
            handled = true;
            // Nobody needs the envelope decoded: skip the parse entirely.
            if self.typed.is_empty()
                && self.raw.is_empty()
                && self.pending.is_empty()
                && self.app_heartbeat.is_none()
            {
                return;
            }
        }
        let head = match Head::parse(text) {
            Ok(h) => h,
            Err(e) => {
                if !handled {
                    self.message_error(MessageErrorKind::Malformed, None, e.to_string());
                }
                return;
            }
        };

        // A reply to a pending request?
        if let Some(id) = head.id {
            if let Some(p) = self.pending.remove(&id) {
                // The timer may already be gone if it fired; cancelling is harmless.
                ctx.cancel_future(p.timer);
                let _ = p.tx.send(reply_result(&head));
                handled = true;
            }
        }

        if head.kind == crate::protocol::Pong::TYPE {
            if let Some(hb) = &self.app_heartbeat {
                hb.do_send(AppPong);
                handled = true;
            }
        }

        if let Some(groups) = self.typed.get_mut(&*head.kind) {
            let mut errors = Vec::new();
            let mut full = 0;
            for g in groups.iter_mut() {
                let budget = Budget {
                    bytes: text.len(),
                    limit: self.subscriber_bytes,
                };
                match g.dispatch(&head, &self.shared.name, &mut self.waits, budget) {
                    Ok(n) => full += n,
                    Err(e) => errors.push(e.to_string()),
                }
            }
            groups.retain(|g| !g.is_empty());
            if groups.is_empty() {
                self.typed.remove(&*head.kind);
            }
            handled = true;
            if !errors.is_empty() || full > 0 {
                let kind = head.kind.to_string();
                for e in errors {
                    self.message_error(MessageErrorKind::BadData, Some(kind.clone()), e);
                }
                self.subscribers_full(&kind, full);
            }
        }

        if !self.raw.is_empty() {
            let env = head.to_owned_envelope();
            let name = self.shared.name.clone();
            let budget = self.budget(text.len());
            let full = fan_out(&mut self.raw, &mut self.waits, budget, |receipt| Inbound {
                connection: name.clone(),
                id: env.id,
                room: env.room.clone(),
                from: env.from.clone(),
                timestamp: env.timestamp.clone(),
                data: env.clone(),
                _receipt: receipt,
            });
            handled = true;
            self.subscribers_full(&env.kind, full);
        }

        if !handled {
            let kind = head.kind.to_string();
            self.message_error(
                MessageErrorKind::UnknownType,
                Some(kind.clone()),
                format!("no subscriber for type {kind:?}"),
            );
        }
    }

    /// Fail every pending request; a request whose frame still waits in the outbox is taken
    /// out first, so it is never written after its caller was told.
    fn fail_pending(&mut self, ctx: &mut Context<Self>, make: impl Fn() -> Error) {
        for (id, p) in self.pending.drain() {
            ctx.cancel_future(p.timer);
            self.outbox.borrow_mut().withdraw(id);
            let _ = p.tx.send(Err(make()));
        }
    }

    /// Forget the requests whose caller dropped its future: their timers stop, and a frame
    /// still waiting is taken out (counted failed), so an abandoned request with a long timeout
    /// neither stays in memory nor goes out.
    fn forget_abandoned(&mut self, ctx: &mut Context<Self>) {
        let gone: Vec<u64> = self
            .pending
            .iter()
            .filter(|(_, p)| p.tx.is_closed())
            .map(|(id, _)| *id)
            .collect();
        for id in gone {
            if let Some(p) = self.pending.remove(&id) {
                ctx.cancel_future(p.timer);
                self.outbox.borrow_mut().withdraw(id);
            }
        }
        self.prune_pending_at = (self.pending.len() * 2).max(64);
    }

    /// Forget every sink whose receiver is gone; answers how many are left.
    fn prune_all(&mut self) -> usize {
        let mut n = prune(&mut self.raw)
            + prune(&mut self.binary)
            + prune(&mut self.text)
            + prune(&mut self.events);
        self.typed.retain(|_, groups| {
            for g in groups.iter_mut() {
                n += g.prune();
            }
            groups.retain(|g| !g.is_empty());
            !groups.is_empty()
        });
        n
    }
}

fn reply_result(head: &Head<'_>) -> Result<Envelope, Error> {
    if head.kind == crate::protocol::ErrorReply::TYPE {
        let (code, message) = match head.data_as::<crate::protocol::ErrorReply>() {
            Ok(e) => (e.code, e.message),
            Err(_) => (
                "unknown".to_owned(),
                head.data.map(|d| d.get().to_owned()).unwrap_or_default(),
            ),
        };
        return Err(Error::Remote { code, message });
    }
    Ok(head.to_owned_envelope())
}

impl Actor for Router {
    type Context = Context<Self>;
}

/// Sent by the Connection for every whole message received (size and UTF-8 already checked),
/// and by [`Client::inject_text`](super::Client::inject_text).
#[derive(Message)]
#[rtype(result = "()")]
pub(crate) enum Incoming {
    /// A text message from the socket (counted by the read gate).
    Text(ByteString),
    /// A binary message from the socket (counted by the read gate).
    Binary(Bytes),
    /// Text injected by the user, as though received (not counted by the gate).
    Injected(ByteString),
}

/// Handler for [`Incoming`]: text is decoded (head once) and routed; binary goes to binary
/// subscribers untouched. Then the read gate is told (the Connection may read on), and a full
/// backpressure subscriber holds the Router until it has taken the message.
impl Handler<Incoming> for Router {
    type Result = ();
    fn handle(&mut self, msg: Incoming, ctx: &mut Context<Self>) {
        match msg {
            Incoming::Text(text) => {
                self.route_text(&text, ctx);
                self.gate.routing_done(text.len());
            }
            Incoming::Injected(text) => self.route_text(&text, ctx),
            Incoming::Binary(bytes) => {
                self.route_binary(&bytes);
                self.gate.routing_done(bytes.len());
            }
        }
        self.wait_for_subscribers(ctx);
    }
}

impl Router {
    fn route_binary(&mut self, bytes: &Bytes) {
        if self.binary.is_empty() {
            self.message_error(
                MessageErrorKind::UnknownType,
                None,
                format!(
                    "binary message of {} bytes and no binary subscriber",
                    bytes.len()
                ),
            );
            return;
        }
        let name = self.shared.name.clone();
        let budget = self.budget(bytes.len());
        let full = fan_out(&mut self.binary, &mut self.waits, budget, |receipt| {
            Inbound {
                connection: name.clone(),
                id: None,
                room: None,
                from: None,
                timestamp: None,
                data: bytes.clone(),
                _receipt: receipt,
            }
        });
        self.subscribers_full("<binary>", full);
    }
}

/// Sent by a [`Client`](super::Client) handle: subscribe to messages of Rust type `T` (wire
/// type `T::TYPE`).
#[derive(Message)]
#[rtype(result = "()")]
pub(crate) struct Subscribe<T: WireMessage + Clone>(pub(crate) Sink<Inbound<T>>);

/// Handler for [`Subscribe`]: add the sink to `T`'s group, creating it if needed.
impl<T: WireMessage + Clone> Handler<Subscribe<T>> for Router {
    type Result = ();
    fn handle(&mut self, msg: Subscribe<T>, _: &mut Context<Self>) {
        let groups = self.typed.entry(T::TYPE).or_default();
        for g in groups.iter_mut() {
            if g.rust_type() == TypeId::of::<T>() {
                if let Some(g) = g.as_any_mut().downcast_mut::<Group<T>>() {
                    // Receivers dropped since the last subscription go now, so subscribing and
                    // dropping in a loop does not grow the list.
                    prune(&mut g.sinks);
                    g.sinks.push(msg.0);
                    return;
                }
            }
        }
        groups.push(Box::new(Group::<T> { sinks: vec![msg.0] }));
    }
}

/// Sent by a [`Client`](super::Client) handle: subscribe to one of the untyped streams.
#[derive(Message)]
#[rtype(result = "()")]
pub(crate) enum SubscribeTo {
    /// Every text message, undecoded.
    Raw(Sink<Inbound<Envelope>>),
    /// Every text frame, verbatim.
    Text(Sink<Inbound<ByteString>>),
    /// Binary messages.
    Binary(Sink<Inbound<Bytes>>),
    /// State changes and message errors.
    Events(Sink<Event>),
}

/// Handler for [`SubscribeTo`]. The list subscribed to is pruned of dropped receivers first, so
/// subscribing and dropping in a loop does not grow it.
impl Handler<SubscribeTo> for Router {
    type Result = ();
    fn handle(&mut self, msg: SubscribeTo, _: &mut Context<Self>) {
        match msg {
            SubscribeTo::Raw(sink) => {
                prune(&mut self.raw);
                self.raw.push(sink);
            }
            SubscribeTo::Text(sink) => {
                prune(&mut self.text);
                self.text.push(sink);
            }
            SubscribeTo::Binary(sink) => {
                prune(&mut self.binary);
                self.binary.push(sink);
            }
            SubscribeTo::Events(sink) => {
                prune(&mut self.events);
                self.events.push(sink);
            }
        }
    }
}

/// Sent by [`Client::subscriber_count`](super::Client::subscriber_count): forget every dropped
/// receiver, then answer how many subscriptions remain.
#[derive(Message)]
#[rtype(result = "usize")]
pub(crate) struct CountSubscribers;

/// Handler for [`CountSubscribers`].
impl Handler<CountSubscribers> for Router {
    type Result = usize;
    fn handle(&mut self, _: CountSubscribers, _: &mut Context<Self>) -> usize {
        self.prune_all()
    }
}

/// Sent by [`Client::request`](super::Client::request): the Router picks the request's `id`,
/// puts the frame in the outbox and registers the request in one step, and resolves the
/// receiver with the reply that carries the id, a timeout error, or a connection-lost error.
/// Fails as `send` does (outbox full, too large, client closed), with nothing registered.
#[derive(Message)]
#[rtype(result = "Result<oneshot::Receiver<Result<Envelope, Error>>, Error>")]
pub(crate) struct RegisterRequest {
    pub(crate) out: Outgoing,
    pub(crate) timeout: Duration,
}

/// Handler for [`RegisterRequest`].
impl Handler<RegisterRequest> for Router {
    type Result = Result<oneshot::Receiver<Result<Envelope, Error>>, Error>;
    fn handle(&mut self, msg: RegisterRequest, ctx: &mut Context<Self>) -> Self::Result {
        if self.pending.len() >= self.prune_pending_at {
            self.forget_abandoned(ctx);
        }
        let id = self.next_id;
        let frame = OutFrame::Text(msg.out.id(id).encode());
        self.outbox.borrow_mut().push(frame, Kind::Request(id))?;
        self.next_id += 1;
        let (tx, rx) = oneshot::channel();
        let timeout = msg.timeout;
        let timer = ctx.run_later(timeout, move |act, _| {
            if let Some(p) = act.pending.remove(&id) {
                // Still waiting in the outbox? Then it never goes out.
                act.outbox.borrow_mut().withdraw(id);
                let _ = p.tx.send(Err(Error::RequestTimeout { id, timeout }));
            }
        });
        self.pending.insert(id, PendingRequest { tx, timer });
        Ok(rx)
    }
}

/// Sent by the supervisor on every state change, to publish to event subscribers. Pending
/// requests fail when the connection is lost; the Router stops after a terminal state.
#[derive(Message)]
#[rtype(result = "()")]
pub(crate) struct PublishState(pub(crate) ConnectionState);

/// Handler for [`PublishState`].
impl Handler<PublishState> for Router {
    type Result = ();
    fn handle(&mut self, msg: PublishState, ctx: &mut Context<Self>) {
        let state = msg.0;
        tracing::debug!(connection = %self.shared.name, ?state, "state changed");
        match &state {
            ConnectionState::Disconnected { code, reason } => {
                let code = *code;
                self.fail_pending(ctx, || Error::ConnectionLost {
                    code,
                    reason: reason.clone(),
                })
            }
            ConnectionState::Failed { .. } | ConnectionState::Closed => {
                self.fail_pending(ctx, || Error::ClientClosed)
            }
            _ => {}
        }
        let terminal = state.is_terminal();
        let full = fan_out(&mut self.events, &mut self.waits, None, |_| {
            Event::State(state.clone())
        });
        if full > 0 {
            Shared::add(&self.shared.dropped_incoming, full);
            tracing::warn!(connection = %self.shared.name, full, "event subscriber full; state event dropped");
        }
        self.wait_for_subscribers(ctx);
        if terminal {
            ctx.stop();
        }
    }
}
