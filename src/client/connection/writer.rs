//! The writer task of one socket: control frames first, then batches of data from the outbox.
//! It runs apart from the Connection actor, so the actor never waits on a slow socket.

use std::rc::Rc;

use actix::prelude::*;
use actix_http::ws::{self, ProtocolError};
use futures_util::stream::SplitSink;
use futures_util::{SinkExt, StreamExt};
use tokio::sync::Notify;

use super::socket::WsFramed;
use super::Connection;
use crate::client::gate::ReadGate;
use crate::client::outbox::SharedOutbox;

/// Control frames (pongs, pings, a close) waiting for the writer. The socket is not read while
/// [`CONTROL_AHEAD`](crate::client::gate::CONTROL_AHEAD) of them wait (see
/// [`gate`](crate::client::gate)), so a
/// peer's ping always finds room for its pong; the two slots above that are for a heartbeat
/// ping (skipped when there is no room: liveness is judged by what arrives) and our Close (a
/// close that does not fit means the writes have stalled: the socket is cut).
pub(crate) const CONTROL_QUEUE: usize = 16;

/// The writer's control path. futures-channel's bounded channel rather than tokio's: tokio's
/// allocates a block of 32 slots and a cache-padded header up front (about 1.8 KB per
/// connection, for a path that carries a ping now and then), futures-channel allocates per
/// message. Its bound is the buffer plus one slot per sender (one here).
pub(super) type ControlRx = futures_channel::mpsc::Receiver<ws::Message>;

/// The control path of a new socket: the Connection keeps the sender, the writer the receiver.
pub(super) fn control_channel(
    bound: usize,
) -> (futures_channel::mpsc::Sender<ws::Message>, ControlRx) {
    futures_channel::mpsc::channel(bound.saturating_sub(1))
}

/// The write half of a socket.
type WsSink = SplitSink<WsFramed, ws::Message>;

/// The writer of socket `gen`: control frames first (before every data frame), then batches of
/// data from the outbox, each flushed before the next is taken (a flushed batch counts as
/// written). Ends after a Close, when the control path closes and nothing is left to finish
/// (the socket was let go), or on a write error (reported to the actor).
pub(super) async fn write_loop(
    mut sink: WsSink,
    outbox: SharedOutbox,
    wake: Rc<Notify>,
    mut control: ControlReceiver,
    batch: usize,
    addr: Addr<Connection>,
    gen: u64,
) {
    let result = async {
        loop {
            if write_control(&mut sink, &mut control).await? == Control::Done {
                return Ok(());
            }
            let frames = outbox.borrow_mut().take_batch(gen, batch);
            if frames.is_empty() {
                sink.flush().await?;
                tokio::select! {
                    biased;
                    msg = control.next() => match msg {
                        Some(msg) => {
                            let closing = matches!(msg, ws::Message::Close(_));
                            sink.send(msg).await?;
                            if closing {
                                return Ok(());
                            }
                        }
                        None => return Ok(()),
                    },
                    _ = wake.notified() => {}
                }
                continue;
            }
            for frame in frames {
                // Control frames go between messages, never behind a whole batch; and a socket
                // given up meanwhile gets no more data.
                if write_control(&mut sink, &mut control).await? == Control::Done
                    || !outbox.borrow().may_write(gen)
                {
                    sink.flush().await?;
                    // The rest of the batch is not written: counted now if the socket was let
                    // go (otherwise when it is).
                    outbox.borrow_mut().abandon(gen);
                    return Ok(());
                }
                sink.feed(frame).await?;
            }
            sink.flush().await?;
            outbox.borrow_mut().batch_written(gen);
        }
    }
    .await;
    addr.do_send(WriterDone {
        gen,
        error: result.err().map(|e: ProtocolError| e.to_string()),
    });
}

/// The writer's end of the control path; every frame taken is reported to the read gate (the
/// Connection reads on once the path has room again).
pub(super) struct ControlReceiver {
    pub(super) rx: ControlRx,
    pub(super) gate: Rc<ReadGate>,
    pub(super) gen: u64,
}

impl ControlReceiver {
    fn try_recv(&mut self) -> Result<ws::Message, futures_channel::mpsc::TryRecvError> {
        let msg = self.rx.try_recv()?;
        self.gate.control_taken(self.gen);
        Ok(msg)
    }

    async fn next(&mut self) -> Option<ws::Message> {
        let msg = self.rx.next().await?;
        self.gate.control_taken(self.gen);
        Some(msg)
    }
}

/// What [`write_control`] found.
#[derive(Debug, PartialEq, Eq)]
enum Control {
    /// Go on with data.
    More,
    /// A Close was written, or the socket was let go: write nothing more.
    Done,
}

/// Feed every control frame waiting (not flushed: the caller flushes with what follows).
async fn write_control(
    sink: &mut WsSink,
    control: &mut ControlReceiver,
) -> Result<Control, ProtocolError> {
    loop {
        match control.try_recv() {
            Ok(msg) => {
                let closing = matches!(msg, ws::Message::Close(_));
                sink.feed(msg).await?;
                if closing {
                    sink.flush().await?;
                    return Ok(Control::Done);
                }
            }
            Err(futures_channel::mpsc::TryRecvError::Empty) => return Ok(Control::More),
            Err(futures_channel::mpsc::TryRecvError::Closed) => return Ok(Control::Done),
        }
    }
}

/// Sent by the writer task of socket `gen` when it ends; `error` says why a write failed.
#[derive(Message)]
#[rtype(result = "()")]
pub(crate) struct WriterDone {
    pub(super) gen: u64,
    pub(super) error: Option<String>,
}
