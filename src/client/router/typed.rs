//! Typed subscriptions: the subscribers of each Rust type, grouped by wire `type` so that a
//! message's `data` is decoded once per Rust type, and the messages that add subscriptions (typed
//! and untyped) and count them.

use std::any::{Any, TypeId};
use std::sync::Arc;

use actix::prelude::*;
use bytes::Bytes;
use bytestring::ByteString;

use super::sink::{fan_out, prune, Budget, Sink, Wait};
use super::{Inbound, Router};
use crate::client::state::{Event, MessageErrorKind};
use crate::envelope::{Envelope, Head, WireMessage};
use crate::error::Error;

/// The subscribers of one Rust type: `data` is decoded once for all of them.
pub(super) trait TypedGroup {
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

/// The subscribers of Rust type `T`.
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
                offset: head.offset,
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

impl Router {
    /// Deliver a text message of `bytes` to the typed subscribers of its `type`, each group
    /// decoding `data` once; `data` that does not decode and full subscribers are reported.
    /// Answers whether any group took it.
    pub(super) fn deliver_typed(&mut self, head: &Head<'_>, bytes: usize) -> bool {
        let Some(groups) = self.typed.get_mut(&*head.kind) else {
            return false;
        };
        let mut errors = Vec::new();
        let mut full = 0;
        for g in groups.iter_mut() {
            let budget = Budget {
                bytes,
                limit: self.subscriber_bytes,
            };
            match g.dispatch(head, &self.shared.name, &mut self.waits, budget) {
                Ok(n) => full += n,
                Err(e) => errors.push(e.to_string()),
            }
        }
        groups.retain(|g| !g.is_empty());
        if groups.is_empty() {
            self.typed.remove(&*head.kind);
        }
        if !errors.is_empty() || full > 0 {
            let kind = head.kind.to_string();
            for e in errors {
                self.message_error(MessageErrorKind::BadData, Some(kind.clone()), e);
            }
            self.subscribers_full(&kind, full);
        }
        true
    }

    /// Forget every sink whose receiver is gone; answers how many are left.
    pub(super) fn prune_all(&mut self) -> usize {
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

/// Sent by a [`Client`](crate::client::Client) handle: subscribe to messages of Rust type `T` (wire
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

/// Sent by a [`Client`](crate::client::Client) handle: subscribe to one of the untyped streams.
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

/// Sent by [`Client::subscriber_count`](crate::client::Client::subscriber_count): forget every dropped
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
