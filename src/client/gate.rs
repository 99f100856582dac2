//! The read gate: when the client stops reading its socket, and why.
//!
//! Every path from the socket to user code is bounded by construction. Two places can fall
//! behind the socket, and each closes this gate; while it is closed the Connection reads no
//! frame (the bytes wait in the kernel, and TCP slows the sender, whose own slow-consumer
//! policy then applies):
//!
//! - **Routing**: every whole message the Connection reads is handed to the Router (an actor on
//!   the same arbiter). Messages handed over and not yet routed are counted; past
//!   [`ROUTE_AHEAD`] of them, or [`ROUTE_AHEAD_BYTES`], the gate closes. So the Router's
//!   mailbox stays bounded whether the Router is slow itself (decoding large messages into
//!   typed structs) or waits for a subscriber that asked for
//!   [`Overflow::Backpressure`](super::Overflow::Backpressure). This was chosen over routing
//!   inside the Connection's turn because the Router must be able to *wait* (for a full
//!   subscriber) without stopping the Connection's writes and control frames, and over a
//!   bounded channel because actix mailboxes already are the Router's queue: counting what is
//!   in it costs two cell updates per message.
//! - **Control**: a peer's ping is answered through the writer's control path. When that path
//!   holds [`CONTROL_AHEAD`] frames (the peer sends pings faster than it reads our pongs, or our
//!   writes have stalled), the gate closes until the writer has taken some. So every ping gets
//!   its pong, in order, and none is ever skipped.
//!
//! While the gate is closed *because of routing* (we are slow, not the peer), the heartbeat does
//! not count the time as silence: the peer may well be sending, into a socket we chose not to
//! read. Its silence clock starts again when reading resumes. While it is closed because of the
//! control path, silence still counts: a peer that does not read our pongs for the heartbeat's
//! timeout is cut like a silent one.
//!
//! Everything here lives on the client's arbiter (one thread), so the counts are plain cells.

use std::cell::{Cell, RefCell};
use std::pin::Pin;
use std::rc::Rc;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};

use futures_util::Stream;

use super::state::ClientShared;

/// Messages handed to the Router and not yet routed before the Connection stops reading.
pub const ROUTE_AHEAD: usize = 32;

/// Bytes of messages handed to the Router and not yet routed before the Connection stops
/// reading (at least one message is always let through, whatever its size, up to
/// `max_message_size`).
pub const ROUTE_AHEAD_BYTES: usize = 1024 * 1024;

/// Control frames queued for the writer before the Connection stops reading. Below the
/// control path's capacity by two, so a heartbeat ping and our own Close still fit.
pub const CONTROL_AHEAD: usize = super::connection::CONTROL_QUEUE - 2;

/// Shared by the Connection (which counts what it hands on), the Router and the writer (which
/// count what they took), and the gated read stream of the open socket.
pub(crate) struct ReadGate {
    routing: Cell<usize>,
    routing_bytes: Cell<usize>,
    /// Control frames queued on socket `.0` and not yet taken by its writer.
    control: Cell<(u64, usize)>,
    /// The Connection's task, parked while the gate is closed.
    waker: RefCell<Option<Waker>>,
    /// Whether reading is paused because of routing (the heartbeat reads it).
    paused: Cell<bool>,
    shared: Arc<ClientShared>,
}

impl ReadGate {
    pub(crate) fn new(shared: Arc<ClientShared>) -> Rc<Self> {
        Rc::new(Self {
            routing: Cell::new(0),
            routing_bytes: Cell::new(0),
            control: Cell::new((0, 0)),
            waker: RefCell::new(None),
            paused: Cell::new(false),
            shared,
        })
    }

    fn routing_full(&self) -> bool {
        self.routing.get() >= ROUTE_AHEAD || self.routing_bytes.get() >= ROUTE_AHEAD_BYTES
    }

    fn control_full(&self) -> bool {
        self.control.get().1 >= CONTROL_AHEAD
    }

    /// Whether the next frame may be read.
    pub(crate) fn is_open(&self) -> bool {
        !self.routing_full() && !self.control_full()
    }

    /// A message of `bytes` was handed to the Router.
    pub(crate) fn routing_started(&self, bytes: usize) {
        self.routing.set(self.routing.get() + 1);
        self.routing_bytes.set(self.routing_bytes.get() + bytes);
    }

    /// The Router has routed a message of `bytes` (delivered, dropped, or parked with a
    /// subscriber that asked for backpressure, which holds the Router itself).
    pub(crate) fn routing_done(&self, bytes: usize) {
        self.routing.set(self.routing.get().saturating_sub(1));
        self.routing_bytes
            .set(self.routing_bytes.get().saturating_sub(bytes));
        self.wake_if_open();
    }

    /// Socket `gen` opened: its control path starts empty (what an earlier socket's path
    /// held was dropped with it).
    pub(crate) fn control_reset(&self, gen: u64) {
        self.control.set((gen, 0));
        self.wake_if_open();
    }

    /// A control frame was queued for socket `gen`'s writer.
    pub(crate) fn control_queued(&self, gen: u64) {
        let (g, n) = self.control.get();
        if g == gen {
            self.control.set((g, n + 1));
        }
    }

    /// Socket `gen`'s writer took a control frame.
    pub(crate) fn control_taken(&self, gen: u64) {
        let (g, n) = self.control.get();
        if g == gen {
            self.control.set((g, n.saturating_sub(1)));
            self.wake_if_open();
        }
    }

    fn wake_if_open(&self) {
        if !self.routing_full() && self.paused.replace(false) {
            // We, not the peer, were slow: the silence clock starts again now.
            self.shared.touch_rx();
            self.shared.set_reading_paused(false);
        }
        if !self.is_open() {
            return;
        }
        if let Some(w) = self.waker.borrow_mut().take() {
            w.wake();
        }
    }

    /// `Ready` when the next frame may be read; otherwise parks `cx` until it may.
    fn poll_open(&self, cx: &mut Context<'_>) -> Poll<()> {
        if self.is_open() {
            return Poll::Ready(());
        }
        if self.routing_full() && !self.paused.replace(true) {
            ClientShared::add(&self.shared.counts.read_pauses, 1);
            self.shared.set_reading_paused(true);
            tracing::debug!(connection = %self.shared.name, routing = self.routing.get(), bytes = self.routing_bytes.get(), "routing behind; socket reads paused");
        }
        *self.waker.borrow_mut() = Some(cx.waker().clone());
        Poll::Pending
    }
}

/// A socket's read stream behind the gate: no item is taken from `inner` while it is closed.
pub(crate) struct Gated<S> {
    inner: Pin<Box<S>>,
    gate: Rc<ReadGate>,
}

impl<S: Stream> Gated<S> {
    pub(crate) fn new(inner: S, gate: Rc<ReadGate>) -> Self {
        Self {
            inner: Box::pin(inner),
            gate,
        }
    }
}

impl<S: Stream> Stream for Gated<S> {
    type Item = S::Item;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<S::Item>> {
        if self.gate.poll_open(cx).is_pending() {
            return Poll::Pending;
        }
        self.inner.as_mut().poll_next(cx)
    }
}
