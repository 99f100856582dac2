//! The outbox: every outgoing message of one client between `send` and the socket, and the
//! bookkeeping behind the accounting rule.
//!
//! # The accounting rule
//!
//! Every message accepted by [`Client::send`](super::Client::send) (and its siblings) or
//! [`Client::request`](super::Client::request) ends in exactly one of:
//!
//! - **written**: handed to the socket (a flush of the batch holding it completed); counted in
//!   [`Stats::messages_out`](super::Stats::messages_out) only then;
//! - **failed**: the caller was told (a request failed with `ConnectionLost` or `RequestTimeout`
//!   while its frame still waited, and was taken out, or was in the batch being written when the
//!   connection was lost); counted in [`Stats::failed`](super::Stats::failed). A request whose
//!   caller was told it failed is never written afterwards (one whose timeout passes while the
//!   writer is already flushing it counts as written: it was handed to the socket first);
//! - **dropped**: by the outbox's overflow policy, when the client stops with messages still
//!   waiting, or because it was in the batch being written when the connection was lost (it may
//!   or may not have reached the peer: it is not sent again, so nothing arrives twice); counted
//!   in [`Stats::dropped`](super::Stats::dropped) and traced.
//!
//! Until then it is *pending*: waiting here ([`Stats::outbox_len`](super::Stats::outbox_len)) or
//! in the batch being written. So at any moment `accepted == messages_out + failed + dropped +
//! pending`. Messages that merely wait when the connection drops stay here, in order, and go out
//! on the next connection after the on-connect messages. On-connect messages (replayed on every
//! connection) and heartbeat pings are the client's own traffic and are not counted.
//!
//! The outbox is shared, on the client's one arbiter thread, by the Connection (which fills it),
//! the socket's writer task (which takes batches from its front) and the Router (which takes out
//! a request that timed out), so none of them has to ask another for it.

use std::cell::RefCell;
use std::collections::VecDeque;
use std::rc::Rc;
use std::sync::Arc;

use tokio::sync::Notify;

use actix_http::ws;
use bytes::Bytes;
use bytestring::ByteString;

use super::state::ClientShared;
use crate::config::{OutboxPolicy, Overflow};
use crate::error::Error;

/// A message on its way to the socket.
#[derive(Debug, Clone)]
pub(crate) enum OutFrame {
    Text(ByteString),
    Binary(Bytes),
}

impl OutFrame {
    pub(crate) fn len(&self) -> usize {
        match self {
            OutFrame::Text(t) => t.len(),
            OutFrame::Binary(b) => b.len(),
        }
    }

    fn to_ws(&self) -> ws::Message {
        match self {
            OutFrame::Text(t) => ws::Message::Text(t.clone()),
            OutFrame::Binary(b) => ws::Message::Binary(b.clone()),
        }
    }
}

/// Whose message an entry is, which decides how it is counted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Origin {
    /// A user message from `send`.
    Data,
    /// A user request waiting for the reply with this id.
    Request(u64),
    /// An on-connect message, queued again for every connection: not counted.
    Replay,
}

#[derive(Debug)]
struct Entry {
    frame: OutFrame,
    kind: Origin,
}

/// The shared handle to one client's outbox.
pub(crate) type SharedOutbox = Rc<RefCell<Outbox>>;

/// See the [module docs](self).
#[derive(Debug)]
pub(crate) struct Outbox {
    queue: VecDeque<Entry>,
    /// On-connect entries in `queue` (not counted, not bounded by the user capacity).
    replays: usize,
    /// Taken by the writer of socket `active` (or `draining`), fed to the socket, flush not yet
    /// complete.
    in_flight: Vec<Entry>,
    /// The socket whose writer may take from the queue; `None` while there is none.
    active: Option<u64>,
    /// A socket that closed gracefully while its writer held a batch: the writer may still
    /// finish it (then it counts as written, on that socket only) until it is aborted or a new
    /// socket opens (then it counts as dropped or failed).
    draining: Option<u64>,
    /// Wakes the writer of socket `active` when there is something to take.
    wake: Option<Rc<Notify>>,
    policy: OutboxPolicy,
    /// Largest message accepted (`max_message_size`).
    max: usize,
    /// The user closed the client: nothing more is accepted.
    refusing: bool,
    shared: Arc<ClientShared>,
}

impl Outbox {
    pub(crate) fn new(policy: OutboxPolicy, max: usize, shared: Arc<ClientShared>) -> SharedOutbox {
        Rc::new(RefCell::new(Outbox {
            queue: VecDeque::new(),
            replays: 0,
            in_flight: Vec::new(),
            active: None,
            draining: None,
            wake: None,
            policy,
            max,
            refusing: false,
            shared,
        }))
    }

    fn wake(&self) {
        if let Some(w) = &self.wake {
            w.notify_one();
        }
    }

    /// Accept nothing more (the user closed the client).
    pub(crate) fn refuse_new(&mut self) {
        self.refusing = true;
    }

    /// Whether the user closed the client.
    pub(crate) fn is_refusing(&self) -> bool {
        self.refusing
    }

    fn publish_len(&self) {
        ClientShared::set(&self.shared.counts.outbox_len, self.len() as u64);
    }

    /// Accept a user message under the overflow policy. `Err` means not accepted (nothing is
    /// counted); `Ok` means accepted (and, under `DropNewest` with a full outbox, at once
    /// dropped and counted).
    ///
    /// Requests are never dropped by the policy (their caller would only learn of it at its
    /// timeout): a full outbox refuses a request with `OutboxFull` whatever the policy, and
    /// `DropOldest` makes room by dropping the oldest plain message only.
    pub(crate) fn push(&mut self, frame: OutFrame, kind: Origin) -> Result<(), Error> {
        if self.refusing {
            return Err(Error::ClientClosed);
        }
        if frame.len() > self.max {
            return Err(Error::MessageTooLarge {
                size: frame.len(),
                limit: self.max,
            });
        }
        let cap = self.policy.capacity;
        if self.len() >= cap {
            let full = Error::OutboxFull { capacity: cap };
            match (self.policy.overflow, kind) {
                (Overflow::Reject, _) => return Err(full),
                (Overflow::DropOldest, _) => {
                    let oldest = self.queue.iter().position(|e| e.kind == Origin::Data);
                    let Some(old) = oldest.and_then(|i| self.queue.remove(i)) else {
                        return Err(full); // only requests wait: none may be dropped
                    };
                    ClientShared::add(&self.shared.counts.dropped, 1);
                    tracing::warn!(connection = %self.shared.name, bytes = old.frame.len(), "outbox full: dropped the oldest message");
                }
                (Overflow::DropNewest, Origin::Data) => {
                    ClientShared::add(&self.shared.counts.accepted, 1);
                    ClientShared::add(&self.shared.counts.dropped, 1);
                    tracing::warn!(connection = %self.shared.name, bytes = frame.len(), "outbox full: dropped the newest message");
                    return Ok(());
                }
                (Overflow::DropNewest, _) => return Err(full),
            }
        }
        ClientShared::add(&self.shared.counts.accepted, 1);
        self.queue.push_back(Entry { frame, kind });
        self.publish_len();
        self.wake();
        Ok(())
    }

    /// A new socket `gen` opened: its writer (woken through `wake`) may take from the queue,
    /// the on-connect `frames` first. A batch an earlier socket was still finishing is given up
    /// (counted dropped, or failed for requests): it never reaches the new socket.
    pub(crate) fn attach(&mut self, gen: u64, frames: &[ByteString], wake: Rc<Notify>) {
        self.give_up_batch();
        self.active = Some(gen);
        self.wake = Some(wake);
        for text in frames.iter().rev() {
            self.queue.push_front(Entry {
                frame: OutFrame::Text(text.clone()),
                kind: Origin::Replay,
            });
        }
        self.replays += frames.len();
        self.wake();
    }

    /// Queue a protocol message of the client's own (a `join` or `leave` made while connected)
    /// behind everything already queued, so it keeps its place among the user's messages. Not
    /// counted; bounded by the outbox capacity like user messages.
    pub(crate) fn push_replay(&mut self, text: ByteString) -> Result<(), Error> {
        if self.queue.len() >= self.policy.capacity.max(1) {
            return Err(Error::OutboxFull {
                capacity: self.policy.capacity,
            });
        }
        self.queue.push_back(Entry {
            frame: OutFrame::Text(text),
            kind: Origin::Replay,
        });
        self.replays += 1;
        self.wake();
        Ok(())
    }

    /// The socket is gone. Its unwritten on-connect messages are forgotten (the next socket
    /// gets them again). The batch being written is counted dropped (or failed, for requests,
    /// whose callers the Router tells `ConnectionLost`; it also takes the requests still
    /// waiting out with [`withdraw`](Self::withdraw)) — unless `draining`: the socket closed
    /// gracefully and its writer may still finish the batch (see [`draining`](Self::draining)).
    /// User messages still waiting stay, in order, for the next socket.
    pub(crate) fn detach(&mut self, draining: bool) {
        let gen = self.active.take();
        self.wake = None;
        if draining && !self.in_flight.is_empty() {
            self.draining = gen;
        } else {
            self.give_up_batch();
        }
        self.queue.retain(|e| e.kind != Origin::Replay);
        self.replays = 0;
        self.publish_len();
    }

    /// Count the batch in flight as dropped (failed for requests): it will not be written.
    fn give_up_batch(&mut self) {
        self.draining = None;
        let (mut dropped, mut failed) = (0, 0);
        for e in self.in_flight.drain(..) {
            match e.kind {
                Origin::Request(_) => failed += 1,
                Origin::Data => dropped += 1,
                Origin::Replay => {}
            }
        }
        if dropped > 0 {
            ClientShared::add(&self.shared.counts.dropped, dropped);
            tracing::warn!(connection = %self.shared.name, messages = dropped, "connection lost while writing: messages that may or may not have arrived are not sent again");
        }
        ClientShared::add(&self.shared.counts.failed, failed);
    }

    /// The writer of draining socket `gen` was aborted: its batch was not written.
    pub(crate) fn abandon(&mut self, gen: u64) {
        if self.draining == Some(gen) {
            self.give_up_batch();
        }
    }

    /// Take out the waiting request `id` (its caller is being told it failed). Answers whether
    /// it was still waiting; if not, it was already handed to the socket.
    pub(crate) fn withdraw(&mut self, id: u64) -> bool {
        let Some(i) = self
            .queue
            .iter()
            .position(|e| e.kind == Origin::Request(id))
        else {
            return false;
        };
        self.queue.remove(i);
        ClientShared::add(&self.shared.counts.failed, 1);
        self.publish_len();
        true
    }

    /// The client stops: everything still waiting is dropped and counted.
    pub(crate) fn clear(&mut self) {
        self.refusing = true;
        self.detach(false);
        let n = self.queue.len() as u64;
        if n > 0 {
            ClientShared::add(&self.shared.counts.dropped, n);
            tracing::warn!(connection = %self.shared.name, messages = n, "client stopped with messages still in the outbox; dropped");
        }
        self.queue.clear();
        self.publish_len();
    }

    /// For the writer of socket `gen`: take up to `max` frames from the front (none when `gen`
    /// is no longer the open socket, or a batch is already out).
    pub(crate) fn take_batch(&mut self, gen: u64, max: usize) -> Vec<ws::Message> {
        if self.active != Some(gen) || !self.in_flight.is_empty() {
            return Vec::new();
        }
        let n = self.queue.len().min(max);
        self.in_flight.extend(self.queue.drain(..n));
        self.replays -= self
            .in_flight
            .iter()
            .filter(|e| e.kind == Origin::Replay)
            .count();
        self.publish_len();
        self.in_flight.iter().map(|e| e.frame.to_ws()).collect()
    }

    /// For the writer of socket `gen`: the batch is flushed, so its user messages are written.
    pub(crate) fn batch_written(&mut self, gen: u64) {
        if self.active != Some(gen) && self.draining != Some(gen) {
            return; // given up meanwhile: already counted
        }
        self.draining = None;
        let (mut n, mut bytes) = (0, 0);
        for e in self.in_flight.drain(..) {
            if e.kind != Origin::Replay {
                n += 1;
                bytes += e.frame.len() as u64;
            }
        }
        ClientShared::add(&self.shared.counts.messages_out, n);
        ClientShared::add(&self.shared.counts.bytes_out, bytes);
    }

    /// User messages waiting (not counting on-connect messages or the batch being written).
    pub(crate) fn len(&self) -> usize {
        self.queue.len() - self.replays
    }

    /// Whether socket `gen`'s writer may still feed data (it is the open socket, or it is
    /// finishing its batch after a graceful close).
    pub(crate) fn may_write(&self, gen: u64) -> bool {
        self.active == Some(gen) || self.draining == Some(gen)
    }
}
