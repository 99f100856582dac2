//! The reading side of an outbox: the HTTP response body that actix-http's dispatcher polls
//! whenever the socket can take more, encoding every waiting frame into one chunk.

use std::collections::VecDeque;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};

use actix_codec::Encoder;
use actix_http::body::{BodySize, MessageBody};
use actix_http::ws::{CloseCode, CloseReason, Codec, Message};
use bytes::{Bytes, BytesMut};

use super::{BodyDeflate, Home, Outbound, Phase, Shared, State, CONTROL_QUEUE};
use crate::ws::encode_compressed;

/// One chunk handed to actix-http holds at most about this many bytes of frames (more frames
/// wait for the next poll), so one poll never copies an unbounded backlog at once.
pub(super) const CHUNK: usize = 64 * 1024;

/// The body keeps its encoding buffer between polls (actix-http copies each chunk and drops it,
/// so the next poll reuses the allocation instead of making a new one) while the buffer is at
/// most this big; a burst's larger buffer is let go.
const KEEP_BUFFER: usize = 4 * 1024;

/// A queue whose capacity grew past this during a burst is shrunk back when it empties.
const SHRINK_ABOVE: usize = 64;

/// RFC 6455: a control frame's payload is at most 125 bytes; a close reason follows a 2-byte
/// code.
pub(super) const MAX_CONTROL_PAYLOAD: usize = 125;
const MAX_CLOSE_REASON: usize = MAX_CONTROL_PAYLOAD - 2;

/// The response body of an upgraded WebSocket connection: every queued frame, encoded as
/// server frames (unmasked), control frames first, in chunks of up to 64 KiB. After a close
/// frame (queued, or written by `Outbox::close_only`) it writes
/// nothing more; it ends when every `Outbox` is dropped and nothing is left to
/// write, or at once on a stop.
pub struct OutboxBody {
    shared: Arc<Shared>,
    codec: Writer,
    /// Where frames are encoded; what is written is split off as the chunk.
    buf: BytesMut,
}

impl OutboxBody {
    pub(super) fn new(shared: Arc<Shared>) -> Self {
        Self {
            shared,
            codec: Writer {
                codec: Codec::new(),
                deflate: None,
            },
            buf: BytesMut::new(),
        }
    }

    /// Compress data frames (the session negotiated permessage-deflate).
    pub(crate) fn with_deflate(mut self, deflate: BodyDeflate) -> Self {
        self.codec.deflate = Some(Box::new(deflate));
        self
    }

    /// Remember the thread and arbiter this body is polled on, the first time, so that a
    /// fan-out can batch its wake-ups per worker.
    fn note_home(&self) {
        if self.shared.home.get().is_none() {
            if let Some(arbiter) = actix_rt::Arbiter::try_current() {
                let _ = self.shared.home.set(Home {
                    thread: std::thread::current().id(),
                    arbiter,
                });
            }
        }
    }
}

/// actix-http's encoder, and the session's compressor when it negotiated permessage-deflate
/// (boxed: most sessions have none, and an idle session's size counts).
struct Writer {
    codec: Codec,
    deflate: Option<Box<BodyDeflate>>,
}

/// Encode what the phase allows into `buf`, moving the phase on; answers whom to wake.
fn write_phase(codec: &mut Writer, st: &mut State, buf: &mut BytesMut) -> Wake {
    let mut wake = Wake::default();
    match std::mem::replace(&mut st.phase, Phase::Ended) {
        Phase::Stopping | Phase::Ended => wake = end(st),
        Phase::CloseOnly(code, reason) => {
            encode(codec, Outbound::Close(code, reason), buf);
            wake.0[1] = close_sent(st);
        }
        Phase::CloseSent => st.phase = Phase::CloseSent,
        phase @ (Phase::Open | Phase::CloseQueued) => {
            st.phase = phase;
            wake.0[1] = write_lanes(codec, st, buf);
        }
    }
    wake
}

/// Encode queued frames, control first, up to one chunk; a close frame ends the writing.
/// Answers the reader to wake (there is room in the control lane, or a close was written).
fn write_lanes(codec: &mut Writer, st: &mut State, buf: &mut BytesMut) -> Option<Waker> {
    while buf.len() < CHUNK {
        let frame = match st.control.pop_front() {
            Some(frame) => frame,
            None => match st.data.pop_front() {
                Some(frame) => {
                    st.data_bytes = st.data_bytes.saturating_sub(frame.len());
                    frame
                }
                None => break,
            },
        };
        if matches!(frame, Outbound::Close(..)) {
            // What was queued before the close goes first, up to this chunk (64 KiB, or one
            // message): replies to what the client sent before its fault still reach it, and
            // the close never waits behind a long backlog.
            while buf.len() < CHUNK {
                let Some(data) = st.data.pop_front() else {
                    break;
                };
                encode(codec, data, buf);
            }
            encode(codec, frame, buf);
            return close_sent(st);
        }
        encode(codec, frame, buf);
    }
    shrink(&mut st.data);
    shrink(&mut st.control);
    // Room for the reply to the next frame the session reads.
    (st.control.len() < CONTROL_QUEUE)
        .then(|| st.reader.take())
        .flatten()
}

/// Control frames that RFC 6455 would make invalid are cut to size rather than sent so.
fn to_message(frame: Outbound) -> Message {
    match frame {
        Outbound::Text(t) => Message::Text(t),
        Outbound::Binary(b) => Message::Binary(b),
        Outbound::Ping(b) => Message::Ping(trim_control(b)),
        Outbound::Pong(b) => Message::Pong(trim_control(b)),
        Outbound::Close(code, reason) => Message::Close(Some(close_reason(code, reason))),
    }
}

fn trim_control(b: Bytes) -> Bytes {
    if b.len() > MAX_CONTROL_PAYLOAD {
        b.slice(..MAX_CONTROL_PAYLOAD)
    } else {
        b
    }
}

fn close_reason(code: u16, mut reason: String) -> CloseReason {
    if reason.len() > MAX_CLOSE_REASON {
        let mut end = MAX_CLOSE_REASON;
        while !reason.is_char_boundary(end) {
            end -= 1;
        }
        reason.truncate(end);
    }
    CloseReason {
        code: CloseCode::from(code),
        description: (!reason.is_empty()).then_some(reason),
    }
}

/// Give a queue's memory back once a burst has drained.
fn shrink(q: &mut VecDeque<Outbound>) {
    if q.is_empty() && q.capacity() > SHRINK_ABOVE {
        *q = VecDeque::new();
    }
}

/// A close frame was encoded: drop what is queued, accept nothing more, and let the reader go
/// on (it waits for the client's close frame); answers the reader to wake.
fn close_sent(st: &mut State) -> Option<Waker> {
    st.phase = Phase::CloseSent;
    st.clear();
    st.reader.take()
}

/// Mark the body ended (nothing more is accepted, what is queued is dropped); answers whom to
/// wake.
fn end(st: &mut State) -> Wake {
    st.phase = Phase::Ended;
    st.clear();
    Wake([st.finished.take(), st.reader.take()])
}

/// Whom to wake once the lock is released.
#[derive(Default)]
pub(super) struct Wake(pub(super) [Option<Waker>; 2]);

impl Wake {
    pub(super) fn wake(self) {
        for w in self.0.into_iter().flatten() {
            w.wake();
        }
    }
}

fn encode(w: &mut Writer, frame: Outbound, buf: &mut BytesMut) {
    if let Some(deflate) = w.deflate.as_mut() {
        let packed = match &frame {
            Outbound::Text(t) => deflate.compress(t.as_bytes()).map(|p| (true, p)),
            Outbound::Binary(b) => deflate.compress(b).map(|p| (false, p)),
            _ => None,
        };
        if let Some((text, payload)) = packed {
            if let Err(e) = encode_compressed(&mut w.codec, text, payload, buf) {
                tracing::debug!("cannot encode a frame: {e}");
            }
            return;
        }
    }
    if let Err(e) = w.codec.encode(to_message(frame), buf) {
        // The server codec encodes every message; nothing to write if it ever cannot.
        tracing::debug!("cannot encode a frame: {e}");
    }
}

impl MessageBody for OutboxBody {
    type Error = std::convert::Infallible;

    fn size(&self) -> BodySize {
        BodySize::Stream
    }

    fn poll_next(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Bytes, Self::Error>>> {
        let this = self.get_mut();
        this.note_home();
        let OutboxBody {
            shared,
            codec,
            buf: kept,
        } = this;
        let mut st = shared.lock();
        if st.phase == Phase::Ended {
            return Poll::Ready(None);
        }
        let mut buf = std::mem::take(kept);
        let mut wake = write_phase(codec, &mut st, &mut buf);
        if st.phase != Phase::Ended && buf.is_empty() {
            if st.senders == 0 {
                wake = end(&mut st);
            } else if !st.body.as_ref().is_some_and(|w| w.will_wake(cx.waker())) {
                st.body = Some(cx.waker().clone());
            }
        }
        let ended = st.phase == Phase::Ended;
        drop(st);
        wake.wake();
        if !buf.is_empty() {
            let chunk = buf.split().freeze();
            if chunk.len() + buf.capacity() <= KEEP_BUFFER && !ended {
                *kept = buf;
            }
            Poll::Ready(Some(Ok(chunk)))
        } else if ended {
            Poll::Ready(None)
        } else {
            *kept = buf;
            Poll::Pending
        }
    }
}

impl Drop for OutboxBody {
    fn drop(&mut self) {
        let waker = {
            let mut st = self.shared.lock();
            if st.phase == Phase::Ended {
                return;
            }
            end(&mut st)
        };
        waker.wake();
    }
}
