//! Where the Router delivers: a subscription's [`Sink`] (an actor's mailbox or a bounded
//! channel), what it does when full ([`Overflow`]), and the byte budget every delivered
//! message counts against until it is dropped ([`Receipt`]).
//!
//! Every delivery is bounded by construction: `try_send` (never `do_send`) by count, and the
//! [`Held`] bytes by size; a full subscription drops and counts, or hands the Router a [`Wait`]
//! that resolves once the message is in.

use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
use std::sync::Arc;

use actix::prelude::*;
use futures_util::future::LocalBoxFuture;
use tokio::sync::mpsc;

use crate::client::census::{CensusEntry, Counted};

/// The bytes a subscription holds: messages delivered to it (in its channel or mailbox, or in
/// the subscriber's hands) that have not been dropped yet. Shared by the subscription's sink
/// and every [`Receipt`] it gave out.
#[derive(Default)]
pub(crate) struct Held {
    bytes: AtomicUsize,
    /// Backpressure deliveries waiting for bytes to be given back. A receipt wakes `freed` only
    /// while one waits: `Notify::notify_waiters` takes a lock, and every delivered message's
    /// receipt is dropped on the per-message path.
    waiting: AtomicUsize,
    /// Woken when a receipt gives its bytes back while a delivery waits.
    freed: tokio::sync::Notify,
}

impl Held {
    fn bytes(&self) -> usize {
        self.bytes.load(SeqCst)
    }
}

/// One message's share of its subscription's [`Held`] bytes, given back on drop.
#[derive(Default)]
pub(crate) struct Receipt(Option<(Arc<Held>, usize)>);

impl Receipt {
    pub(crate) fn new(held: &Arc<Held>, bytes: usize) -> Self {
        held.bytes.fetch_add(bytes, SeqCst);
        Receipt(Some((held.clone(), bytes)))
    }
}

impl Drop for Receipt {
    fn drop(&mut self) {
        if let Some((held, bytes)) = self.0.take() {
            // SeqCst with the waiter's increment of `waiting` and read of `bytes`: either it
            // sees these bytes gone, or this sees it waiting.
            held.bytes.fetch_sub(bytes, SeqCst);
            if held.waiting.load(SeqCst) > 0 {
                held.freed.notify_waiters();
            }
        }
    }
}

/// A clone of a message is the user's own copy: it does not count.
impl Clone for Receipt {
    fn clone(&self) -> Self {
        Receipt(None)
    }
}

impl std::fmt::Debug for Receipt {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Receipt")
    }
}

/// What a subscription does with a message when its subscriber is full (a channel at its
/// capacity, an actor's mailbox at its capacity: actix's default is 16, set with
/// `ctx.set_mailbox_capacity`; or the subscription holding more than
/// [`subscriber_bytes`](crate::config::ClientConfig::subscriber_bytes)).
///
/// Either way nothing between the socket and the subscriber grows without bound: the client
/// never uses `do_send` towards a subscriber. (Not to be confused with
/// [`config::Overflow`](crate::config::Overflow), the policy of the *outgoing* outbox.)
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Overflow {
    /// Drop the message for this subscriber, count it in
    /// [`Stats::dropped_incoming`](crate::client::Stats::dropped_incoming), trace it, and report it as
    /// [`MessageErrorKind::SubscriberFull`](crate::client::MessageErrorKind::SubscriberFull). Other subscribers still get it, and the socket is
    /// read at full speed. The default: a feed whose consumer falls behind keeps its freshest
    /// data flowing and the connection healthy.
    #[default]
    DropNewest,
    /// Wait until the subscriber has room. Meanwhile this client routes nothing else (every
    /// subscriber of the connection waits too, to keep order) and, once
    /// [`ROUTE_AHEAD`](crate::client::ROUTE_AHEAD) messages are waiting, stops reading its socket:
    /// TCP then slows the peer, whose own slow-consumer policy applies. Nothing is dropped and
    /// order is kept; the heartbeat does not declare the peer dead while the client itself is
    /// the slow one (see [`HeartbeatConfig`](crate::config::HeartbeatConfig)). Request replies and state events
    /// wait as well, so a request's timeout can fire late.
    Backpressure,
}

/// Where a subscription delivers: an actor's mailbox or a bounded channel. Counted in the
/// [`census`](crate::client::census) while the router holds it.
pub(crate) struct Sink<M: Message<Result = ()> + Send> {
    to: To<M>,
    overflow: Overflow,
    /// The bytes this subscription holds (see [`Held`]).
    held: Arc<Held>,
    _live: Counted,
}

enum To<M: Message<Result = ()> + Send> {
    /// `try_send` to an actor: its mailbox (bounded by its capacity) is the buffer.
    Actor(Recipient<M>),
    /// `try_send` on a bounded channel.
    Channel(mpsc::Sender<M>),
}

impl<M: Message<Result = ()> + Send + 'static> Sink<M> {
    pub(crate) fn actor(recipient: Recipient<M>, overflow: Overflow) -> Self {
        Sink {
            to: To::Actor(recipient),
            overflow,
            held: Arc::default(),
            _live: Counted::new(CensusEntry::Subscription),
        }
    }

    pub(crate) fn channel(tx: mpsc::Sender<M>, overflow: Overflow) -> Self {
        Sink {
            to: To::Channel(tx),
            overflow,
            held: Arc::default(),
            _live: Counted::new(CensusEntry::Subscription),
        }
    }
}

/// A delivery to a full [`Overflow::Backpressure`] subscriber: resolves once the message is in.
/// The Router waits for all of them before it routes the next message.
pub(crate) type Wait = LocalBoxFuture<'static, ()>;

enum Delivery {
    Delivered,
    Full,
    Gone,
    Wait(Wait),
}

impl<M: Message<Result = ()> + Send + 'static> Sink<M> {
    /// Whether the receiving end is gone (the channel's receiver dropped, the actor stopped).
    pub(crate) fn is_gone(&self) -> bool {
        match &self.to {
            To::Actor(r) => !r.connected(),
            To::Channel(tx) => tx.is_closed(),
        }
    }

    /// A delivery that waits until the subscription holds no more than its byte budget (the
    /// message's own bytes aside), then waits for room as a full backpressure subscriber does.
    fn deliver_when_room(&self, msg: M, budget: Budget) -> Wait {
        let held = self.held.clone();
        let to = match &self.to {
            To::Actor(r) => To::Actor(r.clone()),
            To::Channel(tx) => To::Channel(tx.clone()),
        };
        Box::pin(async move {
            held.waiting.fetch_add(1, SeqCst);
            loop {
                let freed = held.freed.notified();
                tokio::pin!(freed);
                freed.as_mut().enable();
                let now = held.bytes();
                if now <= budget.limit || now == budget.bytes {
                    break;
                }
                freed.await;
            }
            held.waiting.fetch_sub(1, SeqCst);
            match to {
                To::Actor(r) => {
                    let _ = r.send(msg).await;
                }
                To::Channel(tx) => {
                    let _ = tx.send(msg).await;
                }
            }
        })
    }

    fn deliver(&self, msg: M) -> Delivery {
        let backpressure = self.overflow == Overflow::Backpressure;
        match &self.to {
            // actix's `try_send` honours the mailbox capacity (it lets one message past it per
            // sender, then refuses until the actor has taken one).
            To::Actor(r) => match r.try_send(msg) {
                Ok(()) => Delivery::Delivered,
                Err(SendError::Full(msg)) if backpressure => {
                    // `send` waits for room (this sender's one slot past the capacity) and
                    // resolves once the actor has handled it; until then nothing else is routed.
                    let request = r.send(msg);
                    Delivery::Wait(Box::pin(async move {
                        let _ = request.await;
                    }))
                }
                Err(SendError::Full(_)) => Delivery::Full,
                Err(SendError::Closed(_)) => Delivery::Gone,
            },
            To::Channel(tx) => match tx.try_send(msg) {
                Ok(()) => Delivery::Delivered,
                Err(mpsc::error::TrySendError::Full(msg)) if backpressure => {
                    let tx = tx.clone();
                    Delivery::Wait(Box::pin(async move {
                        let _ = tx.send(msg).await;
                    }))
                }
                Err(mpsc::error::TrySendError::Full(_)) => Delivery::Full,
                Err(mpsc::error::TrySendError::Closed(_)) => Delivery::Gone,
            },
        }
    }
}

/// A message's size on the wire and the byte budget of each subscription it goes to
/// ([`ClientConfig::subscriber_bytes`](crate::config::ClientConfig::subscriber_bytes)); `None`
/// for events, which are small and not counted.
#[derive(Clone, Copy)]
pub(crate) struct Budget {
    pub(crate) bytes: usize,
    pub(crate) limit: usize,
}

/// Deliver `make(receipt)` to every sink, dropping sinks whose receiver is gone, counting full
/// ones (at their capacity, or over their byte budget with something else held), and adding a
/// wait for each full one that asked for backpressure to `waits`. Returns how many sinks were
/// full (and dropped the message).
pub(crate) fn fan_out<M: Message<Result = ()> + Send + 'static>(
    sinks: &mut Vec<Sink<M>>,
    waits: &mut Vec<Wait>,
    budget: Option<Budget>,
    mut make: impl FnMut(Receipt) -> M,
) -> u64 {
    let mut full = 0;
    sinks.retain(|s| {
        let delivery = match budget {
            None => s.deliver(make(Receipt::default())),
            Some(b) => {
                let receipt = Receipt::new(&s.held, b.bytes);
                let now = s.held.bytes();
                // One message always fits, whatever its size.
                if now <= b.limit || now == b.bytes {
                    s.deliver(make(receipt))
                } else if s.overflow == Overflow::Backpressure {
                    Delivery::Wait(s.deliver_when_room(make(receipt), b))
                } else {
                    Delivery::Full
                }
            }
        };
        match delivery {
            Delivery::Delivered => true,
            Delivery::Full => {
                full += 1;
                true
            }
            Delivery::Wait(w) => {
                waits.push(w);
                true
            }
            Delivery::Gone => false,
        }
    });
    full
}

/// Forget the sinks whose receiver is gone; answers how many are left.
pub(crate) fn prune<M: Message<Result = ()> + Send + 'static>(sinks: &mut Vec<Sink<M>>) -> usize {
    sinks.retain(|s| !s.is_gone());
    sinks.len()
}
