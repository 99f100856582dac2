//! Request and reply: the Router gives each request an `id`, queues its frame and keeps it
//! pending until the envelope with the same `id` comes back, its timeout fires, or the
//! connection is lost. A request that fails while its frame still waits in the outbox is taken
//! out, so it is never written after its caller was told.

use std::time::Duration;

use actix::prelude::*;
use tokio::sync::oneshot;

use super::Router;
use crate::client::outbox::{Origin, OutFrame};
use crate::client::recovery::HistoryQuery;
use crate::envelope::{Envelope, Head, Outgoing, WireMessage};
use crate::error::Error;

/// A request waiting for its reply: the caller's receiver and the timer that fails it.
pub(super) struct PendingRequest {
    tx: oneshot::Sender<Result<Envelope, Error>>,
    timer: SpawnHandle,
}

impl Router {
    /// If `head` answers a pending request (same `id`), resolve it. Answers whether it did.
    pub(super) fn answer_request(&mut self, head: &Head<'_>, ctx: &mut Context<Self>) -> bool {
        let Some(p) = head.id.and_then(|id| self.pending.remove(&id)) else {
            return false;
        };
        // The timer may already be gone if it fired; cancelling is harmless.
        ctx.cancel_future(p.timer);
        let _ = p.tx.send(reply_result(head));
        true
    }

    /// Fail every pending request; a request whose frame still waits in the outbox is taken
    /// out first, so it is never written after its caller was told.
    pub(super) fn fail_pending(&mut self, ctx: &mut Context<Self>, make: impl Fn() -> Error) {
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

/// Sent by [`Client::request`](crate::client::Client::request): the Router picks the request's `id`,
/// puts the frame in the outbox and registers the request in one step, and resolves the
/// receiver with the reply that carries the id, a timeout error, or a connection-lost error.
/// Fails as `send` does (outbox full, too large, client closed), with nothing registered.
#[derive(Message)]
#[rtype(result = "Result<oneshot::Receiver<Result<Envelope, Error>>, Error>")]
pub(crate) struct RegisterRequest {
    pub(crate) out: RequestFrame,
    pub(crate) timeout: Duration,
}

/// What a request sends, once its `id` is known.
pub(crate) enum RequestFrame {
    /// An envelope (its `id` is replaced).
    Envelope(Outgoing),
    /// A `history` request (it carries `since` and `limit`, which envelopes do not).
    History(HistoryQuery),
}

impl RequestFrame {
    fn encode(self, id: u64) -> OutFrame {
        OutFrame::Text(match self {
            RequestFrame::Envelope(out) => out.id(id).encode(),
            RequestFrame::History(query) => query.encode(id),
        })
    }
}

/// The receiving end of a registered request: its reply, or why there is none.
pub(crate) type ReplyReceiver = oneshot::Receiver<Result<Envelope, Error>>;

/// Handler for [`RegisterRequest`].
impl Handler<RegisterRequest> for Router {
    type Result = Result<ReplyReceiver, Error>;
    fn handle(&mut self, msg: RegisterRequest, ctx: &mut Context<Self>) -> Self::Result {
        self.register_request(msg.out, msg.timeout, ctx)
    }
}

impl Router {
    /// Give the request an `id`, put its frame in the outbox and keep it pending (the user's
    /// requests, and the Router's own `history` requests that fill a gap).
    pub(super) fn register_request(
        &mut self,
        out: RequestFrame,
        timeout: Duration,
        ctx: &mut Context<Self>,
    ) -> Result<ReplyReceiver, Error> {
        if self.pending.len() >= self.prune_pending_at {
            self.forget_abandoned(ctx);
        }
        let id = self.next_id;
        self.outbox
            .borrow_mut()
            .push(out.encode(id), Origin::Request(id))?;
        self.next_id += 1;
        let (tx, rx) = oneshot::channel();
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
