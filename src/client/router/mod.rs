//! The Router actor: decodes the envelope head once, routes by `type` to subscribers of that Rust
//! type, matches replies to pending requests by `id`, and publishes connection-state events.
//!
//! Unknown types and malformed payloads become counted, traced [`Event::MessageError`]s; they
//! never close the connection.
//!
//! - this file: the actor, and the routing of each message through its stages (verbatim text,
//!   replies, the application heartbeat, typed, raw, binary);
//! - `typed`: typed subscriber groups and the subscribe messages;
//! - `requests`: pending requests and their replies, timeouts and failures;
//! - `recovery`: room stream positions, duplicates dropped and gaps filled from the history;
//! - `sink`: where a subscription delivers, its overflow policy and byte budget;
//! - `token`: `token_expiring` answered with a `refresh` carrying a new token.

mod recovery;
mod requests;
pub(crate) mod sink;
mod token;
mod typed;

use std::collections::{HashMap, VecDeque};
use std::rc::Rc;
use std::sync::Arc;

use actix::prelude::*;
use bytes::Bytes;
use bytestring::ByteString;
use futures_util::FutureExt;

use super::census::{CensusEntry, Counted};
use super::gate::ReadGate;
use super::heartbeat::{AppPong, Heartbeat};
use super::outbox::SharedOutbox;
use super::state::{ClientShared, ConnectionState, Event, MessageError, MessageErrorKind};
use crate::config::TokenProvider;
use crate::envelope::{Envelope, Head, WireMessage};
use crate::error::Error;
pub(crate) use recovery::{shared_streams, SharedStreams};
use requests::PendingRequest;
pub(crate) use requests::{RegisterRequest, RequestFrame};
pub use sink::Overflow;
pub(crate) use sink::Sink;
use sink::{fan_out, Budget, Receipt, Wait};
use token::Refresher;
pub use token::REFRESH_TIMEOUT;
use typed::TypedGroup;
pub(crate) use typed::{CountSubscribers, Subscribe, SubscribeTo};

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
    /// A room message's offset in its room's stream, when the server keeps the room's history
    /// (see [`recovery`](crate::client::recovery)).
    pub offset: Option<u64>,
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

/// The Router actor of one client. See the [module docs](self).
pub(crate) struct Router {
    /// Counted in the process-wide [`census`](crate::client::census) while alive.
    _live: Counted,
    shared: Arc<ClientShared>,
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
    /// The stream position of each room with history (shared with the Connection, which
    /// rejoins from them).
    streams: SharedStreams,
    /// Room messages released together (a gap filled), delivered one at a time in order.
    ready: VecDeque<ByteString>,
    /// Answers `token_expiring`, when the config has a token provider.
    refresher: Option<Refresher>,
    /// Bumped at every lost connection, so work started on one socket (a token refresh) can
    /// tell that its socket is gone.
    link: u64,
}

impl Router {
    /// `app_heartbeat`: the heartbeat when it pings with `{"type":"ping"}` (its pongs are
    /// envelopes to route to it); `None` otherwise.
    pub(crate) fn new(
        shared: Arc<ClientShared>,
        app_heartbeat: Option<Addr<Heartbeat>>,
        outbox: SharedOutbox,
        gate: Rc<ReadGate>,
        subscriber_bytes: usize,
        streams: SharedStreams,
        token_provider: Option<TokenProvider>,
    ) -> Self {
        Self {
            _live: Counted::new(CensusEntry::Actor),
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
            streams,
            ready: VecDeque::new(),
            refresher: token_provider.map(Refresher::new),
            link: 0,
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

    pub(super) fn message_error(
        &mut self,
        kind: MessageErrorKind,
        message_type: Option<String>,
        detail: String,
    ) {
        let counter = match kind {
            MessageErrorKind::Malformed | MessageErrorKind::BadData => {
                &self.shared.counts.decode_errors
            }
            MessageErrorKind::UnknownType => &self.shared.counts.unknown_types,
            MessageErrorKind::SubscriberFull => &self.shared.counts.dropped_incoming,
        };
        ClientShared::add(counter, 1);
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

    pub(super) fn subscribers_full(&mut self, kind: &str, n: u64) {
        for _ in 0..n {
            self.message_error(
                MessageErrorKind::SubscriberFull,
                Some(kind.to_owned()),
                "subscriber full (channel or mailbox at its capacity); message dropped".into(),
            );
        }
    }

    /// Route one text message through every stage: verbatim text subscribers, then (when any
    /// of them needs it) the parsed head to a pending request, the application heartbeat, the
    /// typed and the raw subscribers. A message no stage took is an unknown type (or, when it
    /// does not parse and no text subscriber took it, malformed).
    fn route_text(&mut self, text: &ByteString, ctx: &mut Context<Self>) {
        let verbatim = self.deliver_verbatim(text);
        if verbatim && !self.needs_head() {
            // Nobody needs the envelope decoded: skip the parse entirely.
            return;
        }
        let head = match Head::parse(text) {
            Ok(h) => h,
            Err(e) => {
                if !verbatim {
                    self.message_error(MessageErrorKind::Malformed, None, e.to_string());
                }
                return;
            }
        };
        // Every stage runs (`|`, not `||`): a reply can also go to typed and raw subscribers.
        let taken = verbatim
            | self.answer_request(&head, ctx)
            | self.deliver_app_pong(&head)
            | self.on_token_expiring(&head, ctx);
        // A room message out of order is held or dropped here, or queued with others.
        if !self.track_position(&head, text, ctx) {
            self.deliver_subscribed(&head, text.len(), taken);
        }
    }

    /// Deliver a parsed message to the typed and raw subscribers; when they and the earlier
    /// stages (`taken`) all passed it by, it is an unknown type.
    fn deliver_subscribed(&mut self, head: &Head<'_>, bytes: usize, taken: bool) {
        let taken = taken | self.deliver_typed(head, bytes) | self.deliver_raw(head, bytes);
        if !taken {
            let kind = head.kind.to_string();
            self.message_error(
                MessageErrorKind::UnknownType,
                Some(kind.clone()),
                format!("no subscriber for type {kind:?}"),
            );
        }
    }

    /// Whether anything besides verbatim text subscribers looks at text messages (event
    /// subscribers do: recoveries are reported to them).
    fn needs_head(&self) -> bool {
        !(self.typed.is_empty()
            && self.raw.is_empty()
            && self.pending.is_empty()
            && self.events.is_empty()
            && self.streams.borrow().is_empty()
            && self.app_heartbeat.is_none()
            && self.refresher.is_none())
    }

    /// Deliver `text` verbatim to the text subscribers. Answers whether there were any.
    fn deliver_verbatim(&mut self, text: &ByteString) -> bool {
        if self.text.is_empty() {
            return false;
        }
        let name = self.shared.name.clone();
        let budget = self.budget(text.len());
        let full = fan_out(&mut self.text, &mut self.waits, budget, |receipt| Inbound {
            connection: name.clone(),
            id: None,
            room: None,
            from: None,
            timestamp: None,
            offset: None,
            data: text.clone(),
            _receipt: receipt,
        });
        self.subscribers_full("<text>", full);
        true
    }

    /// Hand a `{"type":"pong"}` to the heartbeat in application ping mode. Answers whether it
    /// did.
    fn deliver_app_pong(&mut self, head: &Head<'_>) -> bool {
        if head.kind != crate::protocol::Pong::TYPE {
            return false;
        }
        let Some(hb) = &self.app_heartbeat else {
            return false;
        };
        hb.do_send(AppPong);
        true
    }

    /// Deliver the envelope, undecoded, to the raw subscribers. Answers whether there were any.
    fn deliver_raw(&mut self, head: &Head<'_>, bytes: usize) -> bool {
        if self.raw.is_empty() {
            return false;
        }
        let env = head.to_owned_envelope();
        let name = self.shared.name.clone();
        let budget = self.budget(bytes);
        let full = fan_out(&mut self.raw, &mut self.waits, budget, |receipt| Inbound {
            connection: name.clone(),
            id: env.id,
            room: env.room.clone(),
            from: env.from.clone(),
            timestamp: env.timestamp.clone(),
            offset: head.offset,
            data: env.clone(),
            _receipt: receipt,
        });
        self.subscribers_full(&env.kind, full);
        true
    }
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
                offset: None,
                data: bytes.clone(),
                _receipt: receipt,
            }
        });
        self.subscribers_full("<binary>", full);
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
                self.link += 1;
                // Before the fills' requests fail: their answers are then stale.
                self.streams.borrow_mut().disconnected();
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
            ClientShared::add(&self.shared.counts.dropped_incoming, full);
            tracing::warn!(connection = %self.shared.name, full, "event subscriber full; state event dropped");
        }
        self.wait_for_subscribers(ctx);
        if terminal {
            ctx.stop();
        }
    }
}
