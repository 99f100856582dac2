//! The messages the Connection takes: from the supervisor (dial, close, stop), the heartbeat
//! (pings, a dead peer), the writer task (it ended) and the [`Client`](crate::client::Client)
//! handles (send; their on-connect edits are in `on_connect`). One message and its handler each.

use std::time::Duration;

use actix::prelude::*;
use actix_http::ws;
use bytes::Bytes;
use bytestring::ByteString;

use super::writer::WriterDone;
use super::Connection;
use crate::client::outbox::{Origin, OutFrame};
use crate::config::PingMode;
use crate::error::Error;

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
            self.close(ctx, msg.code, msg.reason);
        } else {
            self.cut_and_report(ctx, msg.code, msg.reason.to_owned(), false);
        }
    }
}

/// Sent by a [`Client`](crate::client::Client) handle: accept one user message into the outbox (the
/// writer is woken). Fails with `OutboxFull` under `Reject`, `MessageTooLarge`, or
/// `ClientClosed`.
#[derive(Message)]
#[rtype(result = "Result<(), Error>")]
pub(crate) struct SendFrame(pub(crate) OutFrame);

/// Handler for [`SendFrame`].
impl Handler<SendFrame> for Connection {
    type Result = Result<(), Error>;
    fn handle(&mut self, msg: SendFrame, _: &mut Context<Self>) -> Self::Result {
        self.outbox.borrow_mut().push(msg.0, Origin::Data)
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
        self.cut_and_report(
            ctx,
            1006,
            format!("heartbeat timeout: nothing received for {ms} ms"),
            false,
        );
    }
}

/// Handler for [`WriterDone`]: a write error loses the socket.
impl Handler<WriterDone> for Connection {
    type Result = ();
    fn handle(&mut self, msg: WriterDone, ctx: &mut Context<Self>) {
        if self.link_gen() != Some(msg.gen) {
            return;
        }
        if let Some(error) = msg.error {
            self.cut_and_report(ctx, 1006, format!("write failed: {error}"), false);
        }
    }
}

/// Sent by the supervisor when the client has ended (`Closed` or `Failed`): the Connection
/// cuts its socket (letting the writer flush a Close reply) and stops.
#[derive(Message)]
#[rtype(result = "()")]
pub(crate) struct Stop;

/// Handler for [`Stop`].
impl Handler<Stop> for Connection {
    type Result = ();
    fn handle(&mut self, _: Stop, ctx: &mut Context<Self>) {
        self.cut(ctx, true);
        ctx.stop();
    }
}
