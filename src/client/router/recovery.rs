//! The Router's side of [recovery](crate::client::recovery): every room message's position
//! goes through the room's [`Streams`] entry, which says what to deliver (in offset order),
//! what to drop, and which `history` request fills a gap; `joined` and `left` answers set and
//! forget positions.
//!
//! Messages released together (a gap filled, a fill given up) wait in `ready` and are delivered
//! one at a time, each after the backpressure subscribers took the one before, so their order
//! holds for every subscriber.

use std::cell::RefCell;
use std::rc::Rc;
use std::time::Duration;

use actix::prelude::*;
use bytestring::ByteString;
use futures_util::FutureExt;

use super::requests::{ReplyReceiver, RequestFrame};
use super::sink::fan_out;
use super::Router;
use crate::client::recovery::{
    joined_at, FillRequest, HistoryData, HistoryQuery, Limits, Outcome, Position, Recovered,
    Streams,
};
use crate::client::state::{ClientShared, Event};
use crate::envelope::{Envelope, Head, WireMessage};
use crate::error::Error;
use crate::protocol::{Joined, Left};

/// The stream positions of a client's rooms: the Router keeps them, the Connection reads them to
/// rejoin from (both run on the client's arbiter, one at a time).
pub(crate) type SharedStreams = Rc<RefCell<Streams<ByteString>>>;

/// The client's bounds on recovery: messages held behind one room's gap fill (1024), bytes
/// held behind the fills of all rooms together (16 MiB), and the largest `limit` one fill asks
/// for.
pub(crate) const LIMITS: Limits = Limits {
    max_held: 1024,
    max_held_bytes: 16 << 20,
    fill_limit: 1000,
};

/// How long a gap fill waits for the history's answer before it is given up (`unavailable`).
const FILL_TIMEOUT: Duration = Duration::from_secs(10);

/// A new, empty set of stream positions.
pub(crate) fn shared_streams() -> SharedStreams {
    Rc::new(RefCell::new(Streams::new(LIMITS)))
}

impl Router {
    /// Set or forget a room's position on its `joined` or `left`, and run a room message with a
    /// position through the room's stream. Answers whether the message was taken here (dropped
    /// as a duplicate, held behind a fill, or queued in `ready` with others); otherwise the
    /// caller delivers it at once, as any message.
    pub(super) fn track_position(
        &mut self,
        head: &Head<'_>,
        text: &ByteString,
        ctx: &mut Context<Self>,
    ) -> bool {
        let Some(room) = head.room.as_deref() else {
            return false;
        };
        if head.kind == Joined::TYPE {
            match joined_at(head.data) {
                Some(at) => {
                    let out = self.streams.borrow_mut().joined(room, at);
                    self.apply(room, out, ctx);
                }
                // A server without history: nothing to track.
                None => self.streams.borrow_mut().forget(room),
            }
            return false;
        }
        if head.kind == Left::TYPE {
            self.streams.borrow_mut().forget(room);
            return false;
        }
        let (Some(offset), Some(epoch)) = (head.offset, head.epoch.as_deref()) else {
            return false;
        };
        if self.ready.is_empty() && self.streams.borrow_mut().advance(room, epoch, offset) {
            // The next one, in order: the caller delivers it with its head.
            return false;
        }
        let out = self
            .streams
            .borrow_mut()
            .live(room, epoch, offset, text.clone(), text.len());
        self.apply(room, out, ctx);
        true
    }

    /// Carry out one step of a room's stream: count duplicates, queue what to deliver, report a
    /// recovery, send a fill's request.
    fn apply(&mut self, room: &str, out: Outcome<ByteString>, ctx: &mut Context<Self>) {
        if out.duplicates > 0 {
            ClientShared::add(&self.shared.counts.duplicates, out.duplicates);
            tracing::debug!(connection = %self.shared.name, room, "duplicate room message dropped");
        }
        self.ready.extend(out.deliver);
        if let Some(recovery) = out.recovery {
            self.report_recovery(room, recovery);
        }
        if let Some(request) = out.request {
            self.request_fill(room, request, ctx);
        }
        self.drain_ready(ctx);
    }

    /// Deliver the `ready` messages in order, waiting for backpressure subscribers between
    /// them.
    pub(super) fn drain_ready(&mut self, ctx: &mut Context<Self>) {
        loop {
            if !self.waits.is_empty() {
                let waits = std::mem::take(&mut self.waits);
                ctx.wait(
                    futures_util::future::join_all(waits)
                        .map(|_| ())
                        .into_actor(self)
                        .map(|(), act, ctx| act.drain_ready(ctx)),
                );
                return;
            }
            let Some(text) = self.ready.pop_front() else {
                return;
            };
            match Head::parse(&text) {
                // Text subscribers saw it as it arrived (or in the history answer).
                Ok(head) => {
                    let seen = !self.text.is_empty();
                    self.deliver_subscribed(&head, text.len(), seen);
                }
                // Checked when it arrived (or decoded from the history answer).
                Err(e) => {
                    tracing::warn!(connection = %self.shared.name, %e, "held message no longer parses")
                }
            }
        }
    }

    fn report_recovery(&mut self, room: &str, r: Recovered) {
        let counter = if r.recovered {
            tracing::info!(connection = %self.shared.name, room, missed = r.missed, "room messages recovered");
            &self.shared.counts.recovered
        } else {
            let reason = r.reason.as_deref().unwrap_or("");
            tracing::warn!(connection = %self.shared.name, room, missed = r.missed, reason, "room messages could not be recovered");
            &self.shared.counts.unrecoverable
        };
        ClientShared::add(counter, 1);
        let full = fan_out(&mut self.events, &mut self.waits, None, |_| {
            Event::Recovery {
                room: room.to_owned(),
                recovered: r.recovered,
                missed: r.missed,
                reason: r.reason.clone(),
            }
        });
        if full > 0 {
            ClientShared::add(&self.shared.counts.dropped_incoming, full);
        }
    }

    /// Ask the history for a gap; its answer (or failure) comes back to [`fill_answered`].
    fn request_fill(&mut self, room: &str, request: FillRequest, ctx: &mut Context<Self>) {
        let query = HistoryQuery {
            room: room.to_owned(),
            since: Some(request.since),
            limit: Some(request.limit),
        };
        let fill = request.fill;
        match self.register_request(RequestFrame::History(query), FILL_TIMEOUT, ctx) {
            Ok(rx) => {
                let room = room.to_owned();
                ctx.spawn(
                    wait_reply(rx)
                        .into_actor(self)
                        .map(move |reply, act, ctx| act.fill_answered(&room, fill, reply, ctx)),
                );
            }
            Err(error) => {
                tracing::warn!(connection = %self.shared.name, room, %error, "gap fill not sent");
                let out = self
                    .streams
                    .borrow_mut()
                    .fill_failed(room, fill, "unavailable");
                self.apply(room, out, ctx);
            }
        }
    }

    fn fill_answered(
        &mut self,
        room: &str,
        fill: u64,
        reply: Result<Envelope, Error>,
        ctx: &mut Context<Self>,
    ) {
        let out = match reply.and_then(|env| self.filled(room, fill, &env)) {
            Ok(out) => out,
            Err(error) => {
                tracing::warn!(connection = %self.shared.name, room, %error, "gap fill failed");
                self.streams
                    .borrow_mut()
                    .fill_failed(room, fill, "unavailable")
            }
        };
        self.apply(room, out, ctx);
    }

    /// Run a `history` answer through the room's stream: its publications of this room, with
    /// their offsets.
    fn filled(
        &mut self,
        room: &str,
        fill: u64,
        reply: &Envelope,
    ) -> Result<Outcome<ByteString>, Error> {
        let data = HistoryData::parse(reply.data.as_deref())?;
        let mut publications = Vec::with_capacity(data.publications.len());
        for raw in data.publications {
            let head = Head::parse(raw.get())?;
            if let (Some(offset), Some(r)) = (head.offset, head.room.as_deref()) {
                if r == room {
                    publications.push((offset, ByteString::from(raw.get())));
                }
            }
        }
        let at = Position {
            epoch: data.epoch,
            offset: data.offset,
        };
        Ok(self
            .streams
            .borrow_mut()
            .filled(room, fill, at, publications, data.complete))
    }
}

/// A request's reply, or why there is none.
async fn wait_reply(rx: ReplyReceiver) -> Result<Envelope, Error> {
    rx.await.unwrap_or(Err(Error::ClientClosed))
}
