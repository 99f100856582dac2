//! What sessions, the [`Rooms`](super::Rooms) handle and backplanes ask of the hub, and how
//! they reach it: a leaf module, so that the hub, the sessions and the backplanes share these
//! types without importing each other.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use actix::prelude::*;
use bytestring::ByteString;
use serde_json::value::RawValue;
use tokio::sync::mpsc::{self, error::TrySendError};
use tokio::sync::oneshot;

use super::counters::{Counters, HubStats};
use super::history::Position;
use super::outbox::{Outbound, Outbox};

/// A session's id, unique within one server.
pub type SessionId = u64;

/// Bytes of a message a backplane handed to the hub and counts as its own until the hub has
/// fanned it out: dropping the receipt gives them back.
#[derive(Debug)]
pub struct Receipt {
    bytes: usize,
    counter: Arc<AtomicUsize>,
}

impl Receipt {
    /// Count `bytes` in `counter` until this receipt is dropped.
    pub fn new(bytes: usize, counter: Arc<AtomicUsize>) -> Self {
        counter.fetch_add(bytes, Ordering::AcqRel);
        Self { bytes, counter }
    }
}

impl Drop for Receipt {
    fn drop(&mut self) {
        self.counter.fetch_sub(self.bytes, Ordering::AcqRel);
    }
}

/// Why the hub tells a session to go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EvictReason {
    /// The session's queue was full under [`SlowConsumerPolicy::Disconnect`](crate::config::SlowConsumerPolicy::Disconnect) (close 1013, then
    /// the socket is cut).
    SlowConsumer,
}

/// Sent by the hub to a session that must close. Sessions never wait on their socket, so this
/// `do_send` cannot pile up behind a stuck client.
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub struct Evict {
    /// Why.
    pub reason: EvictReason,
}

/// What sessions and [`Rooms::publish`](super::Rooms::publish) ask of the hub. Every command
/// travels one bounded FIFO queue ([`ServerConfig::hub_queue`](crate::config::ServerConfig::hub_queue)),
/// so the hub handles one publisher's commands in the order they were given, and a publisher
/// that outruns the hub waits (a session stops reading its socket) instead of growing a mailbox.
#[derive(Debug)]
pub enum Command {
    /// A session introduces itself; sent from the session's `started()`.
    Connect {
        /// The session's id.
        id: SessionId,
        /// The session's bounded outbound queue.
        queue: Outbox,
        /// Where [`Evict`] goes.
        evict: Recipient<Evict>,
        /// Who it is, as its publishes and presence show it.
        who: Arc<Publisher>,
    },
    /// A session is gone, or closing: it leaves every room and gets no more broadcasts.
    Disconnect {
        /// The session's id.
        id: SessionId,
    },
    /// Add a session to a room (the session has checked the name and its room limit).
    Join {
        /// The session's id.
        id: SessionId,
        /// The room.
        room: Arc<str>,
        /// How the hub answers: `None` when the session answered itself (or an attached actor
        /// joins).
        reply: Option<JoinReply>,
        /// A join with `"presence":true`: the member also receives the room's presence changes.
        listen: bool,
        /// What the member shows the others in presence (its `info`), if anything.
        info: Option<Arc<RawValue>>,
    },
    /// Remove a session from a room.
    Leave {
        /// The session's id.
        id: SessionId,
        /// The room.
        room: Arc<str>,
    },
    /// Broadcast to a room.
    Publish(Publish),
    /// A message another node published (from the backplane): fan it out to the local members
    /// of `room` as it is.
    Remote {
        /// The room.
        room: Arc<str>,
        /// The frame, as members receive it.
        frame: ByteString,
        /// Its offset in the room's stream, when the backplane keeps the history.
        offset: Option<u64>,
        /// Dropped once the hub has fanned the frame out: the backplane counts the bytes it
        /// has handed over until then, so that what waits in the hub's queue is bounded by
        /// bytes too (`None` when the backplane does not count).
        receipt: Option<Receipt>,
    },
    /// A `presence_diff` another node made (from the backplane): hand it to the presence
    /// listeners and watchers of `room`.
    RemotePresence {
        /// The room.
        room: Arc<str>,
        /// The frame, as listeners receive it.
        frame: ByteString,
        /// Dropped once handed out (see `Remote`).
        receipt: Option<Receipt>,
    },
    /// Answer a [`HubStats`] snapshot. Through the queue, so it sees the effect of every command
    /// queued before it (a `joined` reply already sent means the join is counted).
    Stats(oneshot::Sender<HubStats>),
    /// Send one frame to one session (server code answering or notifying a client); answers
    /// whether the session's queue took it (a full queue gets the slow-consumer policy).
    SendTo {
        /// The session.
        id: SessionId,
        /// The frame.
        frame: Outbound,
        /// Told whether it was queued.
        sent: oneshot::Sender<bool>,
    },
    /// Make an actor of the application a member (it joins rooms with `Join` like a session).
    Attach {
        /// The id it gets.
        id: SessionId,
        /// Where its room messages go, with `try_send` (its mailbox bound applies).
        recipient: Recipient<RoomFrame>,
    },
    /// Answer a `history` request of a session: the room's publications after `since`.
    History {
        /// The session asking.
        id: SessionId,
        /// The room.
        room: Arc<str>,
        /// The request's envelope id.
        request: Option<u64>,
        /// The position to read after (`None`: the latest publications).
        since: Option<Position>,
        /// At most this many (capped by `recover_limit`).
        limit: Option<u64>,
    },
    /// Answer a `presence` request of a session: the room's count and members.
    Presence {
        /// The session asking.
        id: SessionId,
        /// The room.
        room: Arc<str>,
        /// The request's envelope id.
        request: Option<u64>,
    },
    /// Answer the room's presence to server code.
    PresenceOf {
        /// The room.
        room: Arc<str>,
        /// Told the presence.
        tell: oneshot::Sender<crate::protocol::PresenceData>,
    },
    /// Send the room's presence changes to server code from now on.
    WatchPresence {
        /// The room.
        room: Arc<str>,
        /// Where the changes go (with `try_send`: a full channel loses a change, counted).
        tx: mpsc::Sender<crate::protocol::PresenceDiff>,
    },
    /// Answer the sessions in a room.
    Members {
        /// The room.
        room: Arc<str>,
        /// Told the members' ids (empty when the room has none).
        tell: oneshot::Sender<Vec<SessionId>>,
    },
}

/// The hub's answer to a session's `join`: `joined` with this `id` once the join has taken
/// effect (with a remote backplane: once this node receives the room). With room history it
/// carries the room's position, and with `since` the hub recovers what the session missed:
/// `joined` says whether it could, and the missed publications follow it, before any live one.
#[derive(Debug)]
pub struct JoinReply {
    /// The `join`'s envelope id.
    pub id: Option<u64>,
    /// The last position the client had (`join` with `since`).
    pub since: Option<Position>,
}

/// Broadcast `data` to every member of `room` as
/// `{"type":E,"room":R,"from":S,"session":S?,"data":D,"timestamp":T}` (E is `event`, by default
/// `"message"`).
#[derive(Debug)]
pub struct Publish {
    /// The room.
    pub room: Arc<str>,
    /// Who published (made once per session and shared by its publishes); `None` for a
    /// publish from server code.
    pub from: Option<Arc<Publisher>>,
    /// The type members receive it as; `None` is `"message"`.
    pub event: Option<Arc<str>>,
    /// The payload, as raw JSON; `None` sends a message without `data`.
    pub data: Option<Box<RawValue>>,
    /// Told how many members' queues took the message (server-code publishes wait for it).
    pub reached: Option<oneshot::Sender<usize>>,
    /// With a remote backplane, the publishing session and the envelope id to answer: `ack`
    /// once the other nodes will get it, an `error` (`backplane_unavailable`) when they will
    /// not. `None` when the session answered itself (or nobody is waiting).
    pub reply_to: Option<(SessionId, u64)>,
}

/// Who published a room message, as its members see it.
#[derive(Debug)]
pub struct Publisher {
    /// `from`: the session's identity (a token's `sub`, or what the authentication hook
    /// attached), or its name (`s-<id>`) when it has none.
    pub from: Box<str>,
    /// `session`: the session's name when `from` is its identity, so that members can tell two
    /// sessions of one user apart; `None` when `from` is the name already.
    pub session: Option<Box<str>>,
}

/// The sending end of the hub's command queue, with the high-water mark of the queue kept in
/// the shared counters.
#[derive(Debug, Clone)]
pub struct HubSender {
    tx: mpsc::Sender<Command>,
    counters: Arc<Counters>,
}

impl HubSender {
    /// The sending end `tx` of a hub's queue, noting its depth in `counters`.
    pub(crate) fn new(tx: mpsc::Sender<Command>, counters: Arc<Counters>) -> Self {
        Self { tx, counters }
    }

    /// Offer a command without waiting; a full queue hands it back, so the caller can wait for
    /// room with [`send`](Self::send) without losing its place in line.
    pub fn try_send(&self, cmd: Command) -> Result<(), TrySendError<Command>> {
        self.tx.try_send(cmd)?;
        self.note_depth();
        Ok(())
    }

    /// Wait for room in the queue (in FIFO order with the other waiters), then enqueue. Fails
    /// only when the hub is gone.
    pub async fn send(&self, cmd: Command) -> Result<(), Command> {
        self.tx.send(cmd).await.map_err(|e| e.0)?;
        self.note_depth();
        Ok(())
    }

    fn note_depth(&self) {
        let depth = self.tx.max_capacity() - self.tx.capacity();
        self.counters.hub_queue_high_water.raise_to(depth as u64);
    }
}

/// A room message for an actor member ([`Rooms::attach`](super::Rooms::attach)): the encoded
/// envelope, shared with every other member, to write as a text frame as it is (for an
/// actix-web-actors session: `ctx.text(frame.0)`).
#[derive(Debug, Clone, Message)]
#[rtype(result = "()")]
pub struct RoomFrame(pub ByteString);
