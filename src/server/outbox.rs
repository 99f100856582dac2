//! A session's outbound queue, read directly by the HTTP response body.
//!
//! # Why not a tokio channel, a writer task and actix-ws's `Session`
//!
//! Until this module, every session had a writer task that read two `tokio::sync::mpsc`
//! channels (data and control) and a oneshot (kill) and handed each frame to actix-ws's
//! `Session`, which sent it through a third channel (32 frames) to the streaming response body.
//! A tokio channel allocates its first block of 32 slots and a cache-padded header up front
//! (about 1.8 KB each here), so an idle session carried three of them plus a task: measured
//! with heaptrack at 1000 idle connections, about 7 KB of the session's 28.7 KB of heap, and
//! the reason its RSS per connection was above plain actix-web-actors (see `BENCHMARKS.md`).
//! Every frame also crossed two queues and woke two tasks before reaching actix-http.
//!
//! Here one allocation holds everything: a bounded FIFO of data frames and a small FIFO of
//! control frames, both `VecDeque`s that allocate on first use and give memory back after a
//! burst, and the state of the closing handshake. The sending side ([`Outbox`]) is what the
//! session actor and the hub `try_send` into; the reading side ([`OutboxBody`]) *is* the
//! response body: actix-http's dispatcher polls it when the socket can take more, and it
//! encodes every frame that is waiting into one chunk. So there is no writer task, a frame is
//! copied once (into the chunk), and a peer that stops reading stops the dispatcher polling,
//! which fills this queue and applies the slow-consumer policy at the configured bound.

use std::collections::VecDeque;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::task::{Context, Poll, Waker};
use std::thread::ThreadId;

use actix_codec::Encoder;
use actix_http::body::{BodySize, MessageBody};
use actix_http::ws::{CloseCode, CloseReason, Codec, Message};
use bytes::{Bytes, BytesMut};

use super::hub::Outbound;

/// Control frames (pings, pongs, close frames) that may wait apart from data. Only a client that
/// stopped reading fills it; what does not fit is refused. The session reads no frame from its
/// client while the lane is full (`OutboxWatch::poll_control_room`), so a client's pings wait
/// in TCP rather than lose their pongs, and memory stays bounded whatever the client sends.
pub const CONTROL_QUEUE: usize = 8;

/// One chunk handed to actix-http holds at most about this many bytes of frames (more frames
/// wait for the next poll), so one poll never copies an unbounded backlog at once.
const CHUNK: usize = 64 * 1024;

/// The body keeps its encoding buffer between polls (actix-http copies each chunk and drops it,
/// so the next poll reuses the allocation instead of making a new one) while the buffer is at
/// most this big; a burst's larger buffer is let go.
const KEEP_BUFFER: usize = 4 * 1024;

/// A queue whose capacity grew past this during a burst is shrunk back when it empties.
const SHRINK_ABOVE: usize = 64;

/// RFC 6455: a control frame's payload is at most 125 bytes; a close reason follows a 2-byte
/// code.
const MAX_CONTROL_PAYLOAD: usize = 125;
const MAX_CLOSE_REASON: usize = MAX_CONTROL_PAYLOAD - 2;

/// The two queues of an outbox.
enum Lane {
    Data,
    Control,
}

/// How much a data lane holds once a frame was taken (what the high-water marks are made of).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Depth {
    /// Frames queued.
    pub frames: usize,
    /// Payload bytes queued.
    pub bytes: usize,
}

/// Why a frame was not queued.
#[derive(Debug)]
pub enum Refused {
    /// The queue holds its bound; the frame is handed back.
    Full(Outbound),
    /// Nothing more will be written (a close frame was written, or the connection is gone).
    Closed(Outbound),
}

struct State {
    data: VecDeque<Outbound>,
    /// Payload bytes of the frames in `data` (bounded by [`Shared::capacity_bytes`]).
    data_bytes: usize,
    control: VecDeque<Outbound>,
    /// A close that skips the backlog (slow consumer, heartbeat timeout).
    kill: Option<(u16, String)>,
    /// Stop at once, writing nothing more.
    abort: bool,
    /// A close frame was written: nothing more is accepted or written, but the body stays open
    /// (pending) until every sender is gone, because actix-http stops handing the session the
    /// client's bytes once the response body ends, and the session still has to read the
    /// client's close frame to complete the handshake.
    close_sent: bool,
    /// A close frame waits in the control lane: no more data is accepted, so the data still
    /// queued is exactly what was queued before the close.
    close_queued: bool,
    /// The body has ended (an abort, or every sender gone after a close frame or with nothing
    /// left to write) or was dropped: nothing more is accepted.
    ended: bool,
    /// Sending handles alive ([`Outbox`] clones). None left and nothing queued ends the body.
    senders: usize,
    /// The body, waiting for a frame.
    body: Option<Waker>,
    /// The session's reader, waiting for room in the control lane.
    reader: Option<Waker>,
    /// Someone waiting for the body to end ([`OutboxWatch::finished`]).
    finished: Option<Waker>,
}

struct Shared {
    capacity: usize,
    /// The bound on the data lane's payload bytes: whichever of this and `capacity` is reached
    /// first refuses the next frame (a frame is always taken into an empty queue, so one frame
    /// bigger than the bound still passes, alone).
    capacity_bytes: usize,
    state: Mutex<State>,
    /// Where the body runs, set when it first waits for a frame.
    home: OnceLock<Home>,
}

/// A body's thread and that thread's arbiter: a fan-out hands each worker its wake-ups in one
/// message ([`Wakes`]).
struct Home {
    thread: ThreadId,
    arbiter: actix_rt::ArbiterHandle,
}

/// The wake-ups of one fan-out, batched per worker thread. The hub offers a broadcast to every
/// member's outbox from its own thread; waking each body from there is a cross-thread wake
/// per member (the worker's remote run queue and, when it sleeps, an unpark). Batched, each
/// worker gets one message and wakes its own bodies locally.
pub(crate) struct Wakes {
    here: ThreadId,
    batches: Vec<(ThreadId, actix_rt::ArbiterHandle, Vec<Waker>)>,
    now: Vec<Waker>,
}

impl Wakes {
    pub(crate) fn new() -> Self {
        Self {
            here: std::thread::current().id(),
            batches: Vec::new(),
            now: Vec::new(),
        }
    }

    fn add(&mut self, home: Option<&Home>, waker: Waker) {
        match home {
            Some(home) if home.thread != self.here => {
                match self.batches.iter_mut().find(|(t, _, _)| *t == home.thread) {
                    Some((_, _, wakers)) => wakers.push(waker),
                    None => self
                        .batches
                        .push((home.thread, home.arbiter.clone(), vec![waker])),
                }
            }
            _ => self.now.push(waker),
        }
    }

    /// Wake every body: those on this thread (or of unknown home) now, the others through one
    /// message to their arbiter each. A stopped arbiter's bodies are gone with it.
    pub(crate) fn wake_all(self) {
        for waker in self.now {
            waker.wake();
        }
        for (_, arbiter, wakers) in self.batches {
            arbiter.spawn(async move {
                for waker in wakers {
                    waker.wake();
                }
            });
        }
    }
}

impl Shared {
    /// The state, even if a thread panicked while holding the lock (every update leaves it
    /// consistent).
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// The sending side of a session's outbound queue: the session actor and the hub offer frames
/// with [`try_send`](Self::try_send) and never wait. Cloning adds a sender; when every sender is
/// dropped the body writes what is queued and ends.
pub struct Outbox(Arc<Shared>);

impl std::fmt::Debug for Outbox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Outbox")
            .field("capacity", &self.0.capacity)
            .field("depth", &self.depth())
            .finish()
    }
}

impl Clone for Outbox {
    fn clone(&self) -> Self {
        self.0.lock().senders += 1;
        Self(self.0.clone())
    }
}

impl Drop for Outbox {
    fn drop(&mut self) {
        let waker = {
            let mut st = self.0.lock();
            st.senders -= 1;
            if st.senders == 0 {
                st.body.take()
            } else {
                None
            }
        };
        if let Some(w) = waker {
            w.wake();
        }
    }
}

/// A queue of at most `capacity` data frames (and [`CONTROL_QUEUE`] control frames), and the
/// response body that writes them. Sessions make theirs when they start; it is public for
/// benchmarks and for anyone registering a member of their own with
/// [`Command::Connect`](super::hub::Command::Connect) (poll the body to read encoded frames).
/// Its data frames are not bounded in bytes: see [`outbox_with_bytes`].
pub fn outbox(capacity: usize) -> (Outbox, OutboxBody) {
    outbox_with_bytes(capacity, usize::MAX)
}

/// [`outbox`] whose data frames are also bounded by their payload bytes: a frame is refused
/// when `capacity` frames wait, or when it would take the queued bytes past `capacity_bytes`
/// (an empty queue takes any one frame). Sessions use
/// [`session_queue`](crate::config::ServerConfig::session_queue) and
/// [`session_queue_bytes`](crate::config::ServerConfig::session_queue_bytes): large
/// messages must not make a count bound a bound of gigabytes.
pub fn outbox_with_bytes(capacity: usize, capacity_bytes: usize) -> (Outbox, OutboxBody) {
    let shared = Arc::new(Shared {
        home: OnceLock::new(),
        capacity: capacity.max(1),
        capacity_bytes: capacity_bytes.max(1),
        state: Mutex::new(State {
            data: VecDeque::new(),
            data_bytes: 0,
            control: VecDeque::new(),
            kill: None,
            abort: false,
            close_sent: false,
            close_queued: false,
            ended: false,
            senders: 1,
            body: None,
            reader: None,
            finished: None,
        }),
    });
    (
        Outbox(shared.clone()),
        OutboxBody {
            shared,
            codec: Codec::new(),
            buf: BytesMut::new(),
            done: false,
        },
    )
}

impl Outbox {
    /// Queue a data frame behind the others; returns what the data lane now holds. A close
    /// frame queued here is written after everything before it, and nothing after it.
    pub fn try_send(&self, frame: Outbound) -> Result<Depth, Refused> {
        let (waker, depth) = self.push(frame, Lane::Data)?;
        if let Some(w) = waker {
            w.wake();
        }
        Ok(depth)
    }

    /// [`try_send`](Self::try_send) for a fan-out: the body's wake-up goes into `wakes`
    /// instead of happening now ([`Wakes::wake_all`] after the last member).
    pub(crate) fn try_send_batched(
        &self,
        frame: Outbound,
        wakes: &mut Wakes,
    ) -> Result<Depth, Refused> {
        let (waker, depth) = self.push(frame, Lane::Data)?;
        if let Some(w) = waker {
            wakes.add(self.0.home.get(), w);
        }
        Ok(depth)
    }

    /// The thread the body runs on, once it has waited for a frame there.
    pub(crate) fn home_thread(&self) -> Option<ThreadId> {
        self.0.home.get().map(|home| home.thread)
    }

    /// Queue a control frame ahead of all queued data ("control before data"); refused when
    /// [`CONTROL_QUEUE`] of them already wait (the client is not reading). A close frame
    /// queued here refuses further data; the data queued before it is written ahead of it up to
    /// one chunk (64 KiB, or one message), and the rest dropped, so the close waits behind at
    /// most that much.
    pub fn try_send_control(&self, frame: Outbound) -> Result<(), Refused> {
        let (waker, _) = self.push(frame, Lane::Control)?;
        if let Some(w) = waker {
            w.wake();
        }
        Ok(())
    }

    /// Queue `frame` in its lane under that lane's bounds; answers the body's waker (when it
    /// waits for a frame) and the lane's new depth.
    fn push(&self, frame: Outbound, lane: Lane) -> Result<(Option<Waker>, Depth), Refused> {
        let mut st = self.0.lock();
        if st.ended || st.close_sent || st.kill.is_some() || st.abort {
            return Err(Refused::Closed(frame));
        }
        let depth = match lane {
            Lane::Data => {
                if st.close_queued {
                    return Err(Refused::Closed(frame));
                }
                let len = frame.len();
                let over_bytes = !st.data.is_empty()
                    && st.data_bytes.saturating_add(len) > self.0.capacity_bytes;
                if st.data.len() >= self.0.capacity || over_bytes {
                    return Err(Refused::Full(frame));
                }
                st.data.push_back(frame);
                st.data_bytes = st.data_bytes.saturating_add(len);
                Depth {
                    frames: st.data.len(),
                    bytes: st.data_bytes,
                }
            }
            Lane::Control => {
                if st.control.len() >= CONTROL_QUEUE {
                    return Err(Refused::Full(frame));
                }
                st.close_queued |= matches!(frame, Outbound::Close(..));
                st.control.push_back(frame);
                Depth::default()
            }
        };
        Ok((st.body.take(), depth))
    }

    /// Drop everything queued and write only a close frame with `code` and `reason`: for a
    /// client that stopped reading (its backlog would never drain) or went silent.
    pub fn kill(&self, code: u16, reason: &str) {
        let waker = {
            let mut st = self.0.lock();
            if st.ended || st.close_sent || st.kill.is_some() {
                return;
            }
            st.data = VecDeque::new();
            st.data_bytes = 0;
            st.control = VecDeque::new();
            st.kill = Some((code, reason.to_owned()));
            Wake([st.body.take(), st.reader.take()])
        };
        waker.wake();
    }

    /// Frames waiting in the data queue.
    pub fn depth(&self) -> usize {
        self.0.lock().data.len()
    }

    /// Payload bytes waiting in the data queue.
    pub fn depth_bytes(&self) -> usize {
        self.0.lock().data_bytes
    }

    /// The bound on data frames.
    pub fn capacity(&self) -> usize {
        self.0.capacity
    }

    /// A handle that can wait for the body to end, or end it, without counting as a sender.
    pub(crate) fn watch(&self) -> OutboxWatch {
        OutboxWatch(self.0.clone())
    }
}

/// Watches a session's body end (see [`Outbox::watch`]).
pub(crate) struct OutboxWatch(Arc<Shared>);

impl OutboxWatch {
    /// Resolves once the body has ended: its last frame handed to actix-http, or the body
    /// dropped with the connection.
    pub(crate) async fn finished(&self) {
        std::future::poll_fn(|cx| {
            let mut st = self.0.lock();
            if st.ended {
                Poll::Ready(())
            } else {
                st.finished = Some(cx.waker().clone());
                Poll::Pending
            }
        })
        .await
    }

    /// Ready when the control lane has room for one more frame (or nothing more will be
    /// written); otherwise the task is woken when the body takes control frames out. The
    /// session reads its client's next frame only then: each frame read makes at most one
    /// control frame (a pong, the reply to a close), so a full lane pauses reading instead of
    /// dropping a pong, and the client's further frames wait in TCP.
    pub(crate) fn poll_control_room(&self, cx: &mut Context<'_>) -> Poll<()> {
        let mut st = self.0.lock();
        if st.control.len() < CONTROL_QUEUE
            || st.ended
            || st.close_sent
            || st.abort
            || st.kill.is_some()
        {
            return Poll::Ready(());
        }
        if !st.reader.as_ref().is_some_and(|w| w.will_wake(cx.waker())) {
            st.reader = Some(cx.waker().clone());
        }
        Poll::Pending
    }

    /// End the body at its next poll, dropping whatever is queued.
    pub(crate) fn abort(&self) {
        let waker = {
            let mut st = self.0.lock();
            st.abort = true;
            st.data = VecDeque::new();
            st.data_bytes = 0;
            st.control = VecDeque::new();
            Wake([st.body.take(), st.reader.take()])
        };
        waker.wake();
    }
}

/// The response body of an upgraded WebSocket connection: every queued frame, encoded as
/// server frames (unmasked), control frames first, in chunks of up to 64 KiB. After a close
/// frame (queued, or written by [`Outbox::kill`]) it writes nothing more; it ends when every
/// [`Outbox`] is dropped and nothing is left to write, or at once on an abort.
pub struct OutboxBody {
    shared: Arc<Shared>,
    codec: Codec,
    /// Where frames are encoded; what is written is split off as the chunk.
    buf: BytesMut,
    done: bool,
}

/// Control frames that RFC 6455 would make invalid are cut to size rather than sent so.
fn to_message(frame: Outbound) -> Message {
    match frame {
        Outbound::Text(t) => Message::Text(t),
        Outbound::Binary(b) => Message::Binary(b),
        Outbound::Ping(b) => Message::Ping(cut_control(b)),
        Outbound::Pong(b) => Message::Pong(cut_control(b)),
        Outbound::Close(code, reason) => Message::Close(Some(close_reason(code, reason))),
    }
}

fn cut_control(b: Bytes) -> Bytes {
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
    st.close_sent = true;
    st.data = VecDeque::new();
    st.data_bytes = 0;
    st.control = VecDeque::new();
    st.reader.take()
}

/// Mark the body ended (nothing more is accepted, what is queued is dropped); answers whom to
/// wake.
fn end(done: &mut bool, st: &mut State) -> Wake {
    *done = true;
    st.ended = true;
    st.data = VecDeque::new();
    st.data_bytes = 0;
    st.control = VecDeque::new();
    Wake([st.finished.take(), st.reader.take()])
}

/// Whom to wake once the lock is released.
#[derive(Default)]
struct Wake([Option<Waker>; 2]);

impl Wake {
    fn wake(self) {
        for w in self.0.into_iter().flatten() {
            w.wake();
        }
    }
}

fn encode(codec: &mut Codec, frame: Outbound, buf: &mut BytesMut) {
    if let Err(e) = codec.encode(to_message(frame), buf) {
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
        let OutboxBody {
            shared,
            codec,
            buf: kept,
            done,
        } = self.get_mut();
        if *done {
            return Poll::Ready(None);
        }
        if shared.home.get().is_none() {
            if let Some(arbiter) = actix_rt::Arbiter::try_current() {
                let _ = shared.home.set(Home {
                    thread: std::thread::current().id(),
                    arbiter,
                });
            }
        }
        let mut st = shared.lock();
        let mut buf = std::mem::take(kept);
        let mut wake = Wake::default();
        if st.abort {
            wake = end(done, &mut st);
        } else if let Some((code, reason)) = st.kill.take() {
            encode(codec, Outbound::Close(code, reason), &mut buf);
            wake.0[1] = close_sent(&mut st);
        } else if !st.close_sent {
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
                    // What was queued before the close goes first, up to this chunk (64 KiB,
                    // or one message): replies to what the client sent before its fault
                    // still reach it, and the close never waits behind a long backlog.
                    while buf.len() < CHUNK {
                        let Some(data) = st.data.pop_front() else {
                            break;
                        };
                        encode(codec, data, &mut buf);
                    }
                    encode(codec, frame, &mut buf);
                    wake.0[1] = close_sent(&mut st);
                    break;
                }
                encode(codec, frame, &mut buf);
            }
            if !st.close_sent {
                shrink(&mut st.data);
                shrink(&mut st.control);
                if st.control.len() < CONTROL_QUEUE {
                    // Room for the reply to the next frame the session reads.
                    wake.0[1] = st.reader.take();
                }
            }
        }
        if !*done && buf.is_empty() {
            if st.senders == 0 {
                wake = end(done, &mut st);
            } else if !st.body.as_ref().is_some_and(|w| w.will_wake(cx.waker())) {
                st.body = Some(cx.waker().clone());
            }
        }
        drop(st);
        wake.wake();
        if !buf.is_empty() {
            let chunk = buf.split().freeze();
            if chunk.len() + buf.capacity() <= KEEP_BUFFER && !*done {
                *kept = buf;
            }
            Poll::Ready(Some(Ok(chunk)))
        } else if *done {
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
            if st.ended {
                return;
            }
            end(&mut self.done, &mut st)
        };
        waker.wake();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytestring::ByteString;
    use futures_util::task::noop_waker;

    fn text(s: &'static str) -> Outbound {
        Outbound::Text(ByteString::from_static(s))
    }

    fn poll(body: &mut OutboxBody) -> Poll<Option<Bytes>> {
        let waker = noop_waker();
        let mut cx = Context::from_waker(&waker);
        Pin::new(body)
            .poll_next(&mut cx)
            .map(|o| o.map(|r| r.unwrap_or_default()))
    }

    /// Control frames go first; after a close frame nothing more is taken or written, and the
    /// body stays open (the session still reads the client's close) until its senders are gone.
    #[test]
    fn bounded_control_first_and_close_ends_it() {
        let (tx, mut body) = outbox(2);
        assert_eq!(tx.try_send(text("a")).ok().map(|d| d.frames), Some(1));
        assert_eq!(tx.try_send(text("b")).ok().map(|d| d.frames), Some(2));
        assert!(matches!(tx.try_send(text("c")), Err(Refused::Full(_))));
        for _ in 0..CONTROL_QUEUE {
            assert!(tx.try_send_control(Outbound::Ping(Bytes::new())).is_ok());
        }
        assert!(matches!(
            tx.try_send_control(Outbound::Ping(Bytes::new())),
            Err(Refused::Full(_))
        ));
        let Poll::Ready(Some(chunk)) = poll(&mut body) else {
            panic!("a chunk");
        };
        // 8 empty pings (2 bytes each) first, then "a" and "b" (3 bytes each).
        assert_eq!(chunk.len(), CONTROL_QUEUE * 2 + 6);
        assert_eq!(chunk[0], 0x89);
        assert_eq!(&chunk[CONTROL_QUEUE * 2..], b"\x81\x01a\x81\x01b");
        assert!(poll(&mut body).is_pending());
        assert!(tx.try_send(Outbound::Close(1000, String::new())).is_ok());
        let Poll::Ready(Some(chunk)) = poll(&mut body) else {
            panic!("the close frame");
        };
        assert_eq!(&chunk[..], b"\x88\x02\x03\xe8");
        assert!(matches!(tx.try_send(text("late")), Err(Refused::Closed(_))));
        assert!(
            poll(&mut body).is_pending(),
            "open until the senders are gone"
        );
        drop(tx);
        assert!(matches!(poll(&mut body), Poll::Ready(None)));
    }

    /// A close on the control lane refuses later data and lets at most one chunk of the data
    /// queued before it go first; the rest is dropped.
    #[test]
    fn a_close_waits_behind_at_most_one_chunk_of_data() {
        let (tx, mut body) = outbox(64);
        let big = Outbound::Binary(Bytes::from(vec![0u8; CHUNK / 4]));
        for _ in 0..16 {
            assert!(tx.try_send(big.clone()).is_ok());
        }
        assert!(tx
            .try_send_control(Outbound::Close(1008, String::new()))
            .is_ok());
        assert!(matches!(tx.try_send(text("late")), Err(Refused::Closed(_))));
        let Poll::Ready(Some(chunk)) = poll(&mut body) else {
            panic!("frames");
        };
        // Four frames of a quarter chunk (4-byte headers) fill the chunk, then the close.
        assert_eq!(chunk.len(), 4 * (CHUNK / 4 + 4) + 4);
        assert_eq!(&chunk[chunk.len() - 4..], b"\x88\x02\x03\xf0");
        assert_eq!(tx.depth(), 0, "the rest is dropped");
        assert!(poll(&mut body).is_pending());
    }

    #[test]
    fn kill_drops_the_backlog_and_writes_only_the_close() {
        let (tx, mut body) = outbox(16);
        for _ in 0..16 {
            assert!(tx.try_send(text("x")).is_ok());
        }
        tx.kill(1013, "slow consumer");
        assert!(matches!(tx.try_send(text("y")), Err(Refused::Closed(_))));
        let Poll::Ready(Some(chunk)) = poll(&mut body) else {
            panic!("the close frame");
        };
        assert_eq!(chunk[0], 0x88);
        assert_eq!(&chunk[2..4], &1013u16.to_be_bytes());
        assert_eq!(&chunk[4..], b"slow consumer");
        assert!(
            poll(&mut body).is_pending(),
            "open until the senders are gone"
        );
        drop(tx);
        assert!(matches!(poll(&mut body), Poll::Ready(None)));
    }

    #[test]
    fn every_sender_gone_drains_then_ends() {
        let (tx, mut body) = outbox(4);
        let hub = tx.clone();
        assert!(tx.try_send(text("a")).is_ok());
        drop(tx);
        assert!(hub.try_send(text("b")).is_ok());
        drop(hub);
        assert!(matches!(poll(&mut body), Poll::Ready(Some(_))));
        assert!(matches!(poll(&mut body), Poll::Ready(None)));
    }

    #[test]
    fn abort_ends_without_writing_and_finished_resolves() {
        let (tx, mut body) = outbox(4);
        let watch = tx.watch();
        assert!(tx.try_send(text("a")).is_ok());
        watch.abort();
        assert!(matches!(poll(&mut body), Poll::Ready(None)));
        futures_util::FutureExt::now_or_never(watch.finished()).expect("finished");
    }

    #[test]
    fn oversized_control_payloads_are_cut_to_the_rfc_limits() {
        let (tx, mut body) = outbox(4);
        assert!(tx
            .try_send_control(Outbound::Ping(Bytes::from(vec![b'p'; 300])))
            .is_ok());
        assert!(tx.try_send(Outbound::Close(1000, "é".repeat(100))).is_ok());
        let Poll::Ready(Some(chunk)) = poll(&mut body) else {
            panic!("frames");
        };
        assert_eq!(&chunk[..2], &[0x89, 125]);
        let close = &chunk[2 + 125..];
        assert_eq!(close[0], 0x88);
        assert!(usize::from(close[1]) <= MAX_CONTROL_PAYLOAD);
        assert!(std::str::from_utf8(&close[4..]).is_ok());
    }

    #[test]
    fn batched_wakes_reach_bodies_on_their_own_arbiter() {
        let sys = actix_rt::System::new();
        sys.block_on(async {
            let worker = actix_rt::Arbiter::new();
            let (tx, body) = outbox(8);
            let (got_tx, got_rx) = tokio::sync::oneshot::channel();
            // The body waits on the worker, as under actix-http.
            assert!(worker.spawn(async move {
                let mut body = body;
                let chunk = std::future::poll_fn(|cx| Pin::new(&mut body).poll_next(cx)).await;
                let _ = got_tx.send(chunk.map(|c| c.unwrap_or_default()));
            }));
            // Offer from here until the body has parked on the worker and been woken by a batch.
            let mut sent = false;
            // Bounded in time: the worker thread parks the body within milliseconds.
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
            while std::time::Instant::now() < deadline {
                if tx.0.home.get().is_some() && tx.0.lock().body.is_some() {
                    let mut wakes = Wakes::new();
                    assert_eq!(
                        tx.try_send_batched(text("a"), &mut wakes)
                            .ok()
                            .map(|d| d.frames),
                        Some(1)
                    );
                    assert_eq!(wakes.batches.len(), 1, "one batch for the worker");
                    wakes.wake_all();
                    sent = true;
                    break;
                }
                actix_rt::task::yield_now().await;
                std::thread::yield_now();
            }
            assert!(sent, "the body parked on its worker");
            let chunk = tokio::time::timeout(std::time::Duration::from_secs(5), got_rx)
                .await
                .expect("woken")
                .expect("sent");
            assert_eq!(chunk.as_deref(), Some(&b"\x81\x01a"[..]));
            worker.stop();
        });
    }

    #[test]
    fn a_full_control_lane_pauses_the_reader_until_the_body_drains_it() {
        let (tx, mut body) = outbox(4);
        let watch = tx.watch();
        let (woken, waker) = flag_waker();
        let mut cx = Context::from_waker(&waker);
        for _ in 0..CONTROL_QUEUE {
            assert!(watch.poll_control_room(&mut cx).is_ready());
            assert!(tx.try_send_control(Outbound::Pong(Bytes::new())).is_ok());
        }
        assert!(watch.poll_control_room(&mut cx).is_pending());
        assert!(!woken.load(std::sync::atomic::Ordering::SeqCst));
        assert!(matches!(poll(&mut body), Poll::Ready(Some(_))));
        assert!(
            woken.load(std::sync::atomic::Ordering::SeqCst),
            "reader woken"
        );
        assert!(watch.poll_control_room(&mut cx).is_ready());
    }

    /// A waker that records being woken.
    fn flag_waker() -> (Arc<std::sync::atomic::AtomicBool>, Waker) {
        struct Flag(Arc<std::sync::atomic::AtomicBool>);
        impl std::task::Wake for Flag {
            fn wake(self: Arc<Self>) {
                self.0.store(true, std::sync::atomic::Ordering::SeqCst);
            }
        }
        let flag = Arc::new(std::sync::atomic::AtomicBool::new(false));
        (flag.clone(), Waker::from(Arc::new(Flag(flag))))
    }

    #[test]
    fn the_data_lane_is_bounded_in_bytes_too() {
        let (tx, mut body) = outbox_with_bytes(100, 10);
        // An empty queue takes a frame bigger than the bound, alone.
        assert!(tx.try_send(text("twelve bytes")).is_ok());
        assert!(matches!(tx.try_send(text("x")), Err(Refused::Full(_))));
        assert!(matches!(poll(&mut body), Poll::Ready(Some(_))));
        assert_eq!(tx.depth_bytes(), 0);
        assert_eq!(
            tx.try_send(text("12345")).ok(),
            Some(Depth {
                frames: 1,
                bytes: 5
            })
        );
        assert!(tx.try_send(text("12345")).is_ok());
        assert!(matches!(tx.try_send(text("1")), Err(Refused::Full(_))));
        assert!(tx.try_send_control(Outbound::Pong(Bytes::new())).is_ok());
        assert_eq!(tx.depth_bytes(), 10);
    }

    #[test]
    fn a_burst_gives_its_memory_back() {
        let (tx, mut body) = outbox(1024);
        for _ in 0..1024 {
            assert!(tx.try_send(text("x")).is_ok());
        }
        assert!(matches!(poll(&mut body), Poll::Ready(Some(_))));
        assert!(poll(&mut body).is_pending());
        assert_eq!(tx.0.lock().data.capacity(), 0);
    }
}
