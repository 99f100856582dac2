//! A session's outbound queue, read directly by the HTTP response body.
//!
//! # Why not a tokio channel, a writer task and actix-ws's `Session`
//!
//! A design with a writer task per session would read two `tokio::sync::mpsc` channels (data
//! and control) and a oneshot (to cut) and hand each frame to actix-ws's `Session`, which sends
//! it through a third channel (32 frames) to the streaming response body. A tokio channel
//! allocates its first block of 32 slots and a cache-padded header up front (about 1.8 KB each
//! here), so an idle session would carry three of them plus a task: measured with heaptrack at
//! 1000 idle connections, about 7 KB of a session's 28.7 KB of heap, enough to put its RSS per
//! connection above plain actix-web-actors (see `BENCHMARKS.md`). Every frame would also cross
//! two queues and wake two tasks before reaching actix-http.
//!
//! Here one allocation holds everything: a bounded FIFO of data frames and a small FIFO of
//! control frames, both `VecDeque`s that allocate on first use and give memory back after a
//! burst, and the state of the closing handshake. The sending side ([`Outbox`]) is what the
//! session actor and the hub `try_send` into; the reading side ([`OutboxBody`]) *is* the
//! response body: actix-http's dispatcher polls it when the socket can take more, and it
//! encodes every frame that is waiting into one chunk. So there is no writer task, a frame is
//! copied once (into the chunk), and a peer that stops reading stops the dispatcher polling,
//! which fills this queue and applies the slow-consumer policy at the configured bound.
//!
//! - `mod.rs`: the frames ([`Outbound`]), the shared state and the sending side;
//! - `body.rs`: the reading side, [`OutboxBody`];
//! - `wakes.rs`: wake-ups of one fan-out batched per worker thread.

mod body;
mod deflate;
#[cfg(test)]
mod tests;
mod wakes;

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::task::{Context, Poll, Waker};
use std::thread::ThreadId;

use bytes::Bytes;
use bytestring::ByteString;

pub use self::body::OutboxBody;
use self::body::Wake;
pub(crate) use self::deflate::{share, BodyDeflate, SharedFrame};
use self::wakes::Home;
pub(crate) use self::wakes::Wakes;

/// One frame waiting in a session's outbound queue. Text and binary payloads are reference
/// counted, so a broadcast shares one allocation among all the queues it lands in.
#[derive(Debug, Clone)]
pub enum Outbound {
    /// A text frame.
    Text(ByteString),
    /// A binary frame.
    Binary(Bytes),
    /// A protocol Ping frame with this payload.
    Ping(Bytes),
    /// A protocol Pong frame with this payload.
    Pong(Bytes),
    /// A close frame with this code and reason; nothing after it is written.
    Close(u16, String),
}

impl Outbound {
    /// Payload bytes this frame carries (what the `bytes` counters count).
    pub fn len(&self) -> usize {
        match self {
            Outbound::Text(t) => t.len(),
            Outbound::Binary(b) | Outbound::Ping(b) | Outbound::Pong(b) => b.len(),
            Outbound::Close(_, r) => 2 + r.len(),
        }
    }

    /// Whether the frame has no payload.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Control frames (pings, pongs, close frames) that may wait apart from data. Only a client that
/// stopped reading fills it; what does not fit is refused. The session reads no frame from its
/// client while the lane is full (`OutboxWatch::poll_control_room`), so a client's pings wait
/// in TCP rather than lose their pongs, and memory stays bounded whatever the client sends.
pub const CONTROL_QUEUE: usize = 8;

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

/// Where an outbox is in its life. One value rather than flags, because the flags combined:
/// each phase says what is still accepted and what the body writes next. In glossary words,
/// `CloseQueued` and `CloseSent` are the server's side of a *close*, `CloseOnly` is the close
/// frame of a session about to be *cut*, and `Stopping`/`Ended` follow a *stop*.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Phase {
    /// Both lanes take frames.
    Open,
    /// A close frame waits in the control lane: no more data is accepted, so the data still
    /// queued is exactly what was queued before the close; control frames still are.
    CloseQueued,
    /// The backlog was dropped and only a close frame with this code and reason is written
    /// ([`Outbox::close_only`]: a client that stopped reading or went silent).
    CloseOnly(u16, String),
    /// A close frame was written: nothing more is accepted or written, but the body stays open
    /// (pending) until every sender is gone, because actix-http stops handing the session the
    /// client's bytes once the response body ends, and the session still has to read the
    /// client's close frame to complete the handshake.
    CloseSent,
    /// End the body at its next poll, writing nothing more ([`OutboxWatch::stop`]).
    Stopping,
    /// The body has ended (stopped, or every sender gone after a close frame or with nothing
    /// left to write) or was dropped: nothing more is accepted.
    Ended,
}

impl Phase {
    /// Whether frames are still accepted (data only while `Open`).
    fn accepts(&self) -> bool {
        matches!(self, Phase::Open | Phase::CloseQueued)
    }
}

struct State {
    data: VecDeque<Outbound>,
    /// Payload bytes of the frames in `data` (bounded by [`Shared::capacity_bytes`]).
    data_bytes: usize,
    control: VecDeque<Outbound>,
    /// See [`Phase`].
    phase: Phase,
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

impl State {
    /// Drop every queued frame.
    fn clear(&mut self) {
        self.data = VecDeque::new();
        self.data_bytes = 0;
        self.control = VecDeque::new();
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

/// A queue of at most `capacity` data frames (and `CONTROL_QUEUE` control frames), and the
/// response body that writes them. Sessions make theirs when they start; it is public for
/// benchmarks and for anyone registering a member of their own with
/// [`Command::Connect`](super::command::Command::Connect) (poll the body to read encoded frames).
/// Its data frames are not bounded in bytes: see `outbox_with_bytes`.
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
            phase: Phase::Open,
            senders: 1,
            body: None,
            reader: None,
            finished: None,
        }),
    });
    (Outbox(shared.clone()), OutboxBody::new(shared))
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
        if !st.phase.accepts() {
            return Err(Refused::Closed(frame));
        }
        let depth = match lane {
            Lane::Data => {
                if st.phase != Phase::Open {
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
                if matches!(frame, Outbound::Close(..)) {
                    st.phase = Phase::CloseQueued;
                }
                st.control.push_back(frame);
                Depth::default()
            }
        };
        Ok((st.body.take(), depth))
    }

    /// Drop everything queued and write only a close frame with `code` and `reason`: for a
    /// client that stopped reading (its backlog would never drain) or went silent, whose socket
    /// the session cuts if the close gets no answer.
    pub fn close_only(&self, code: u16, reason: &str) {
        let waker = {
            let mut st = self.0.lock();
            if !st.phase.accepts() {
                return;
            }
            st.clear();
            st.phase = Phase::CloseOnly(code, reason.to_owned());
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
            if st.phase == Phase::Ended {
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
        if st.control.len() < CONTROL_QUEUE || !st.phase.accepts() {
            return Poll::Ready(());
        }
        if !st.reader.as_ref().is_some_and(|w| w.will_wake(cx.waker())) {
            st.reader = Some(cx.waker().clone());
        }
        Poll::Pending
    }

    /// Stop: end the body at its next poll, dropping whatever is queued.
    pub(crate) fn stop(&self) {
        let waker = {
            let mut st = self.0.lock();
            if st.phase != Phase::Ended {
                st.phase = Phase::Stopping;
            }
            st.clear();
            Wake([st.body.take(), st.reader.take()])
        };
        waker.wake();
    }
}
