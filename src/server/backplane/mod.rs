//! Backplanes: how the rooms of several server nodes become one.
//!
//! A [`Backplane`] carries room messages between nodes. The hub of each node keeps delivering
//! to its own members directly; what a backplane adds is the other nodes. The hub tells it:
//!
//! - [`subscribe`](Backplane::subscribe) when the first local member joins a room, and
//!   [`unsubscribe`](Backplane::unsubscribe) when the last one leaves, so a node only hears the
//!   rooms it serves;
//! - [`publish`](Backplane::publish) for every publish made on this node, once, with the frame
//!   already encoded for members; each other node fans the same bytes out to its members;
//!
//! and the backplane hands what other nodes published back to the hub through the [`HubLink`]
//! it got at [`start`](Backplane::start) ([`HubLink::deliver`]). It must never hand a
//! node its own publish (members would get it twice) and must keep the order of one node's
//! publishes (so one publisher's messages stay in order on every node).
//!
//! **Shared room history.** A backplane may keep the rooms' history for every node
//! ([`keep_history`](Backplane::keep_history)), so that a client recovers what it missed on
//! whichever node it reconnects to. The rule above then changes: the backplane assigns each
//! publication its stream position and hands *every* publication to the hub, this node's own
//! included ([`HubLink::deliver_at`]), and the hub delivers nothing locally before that. So
//! the offset order is the delivery order on every node, and a publish the backplane did not
//! take reaches nobody (its publisher with an `id` is told `backplane_unavailable`).
//!
//! **Shared presence.** A backplane may also keep the rooms' presence for every node
//! ([`shares_presence`](Backplane::shares_presence)): the hub then hands it each window's
//! changes of its own members ([`presence`](Backplane::presence), with the `presence_diff` for
//! the other nodes' listeners), hands the listeners what other nodes changed
//! ([`HubLink::deliver_presence`]), and answers `presence` with its own members plus the other
//! nodes' as the backplane reads them ([`read_presence`](Backplane::read_presence)).
//!
//! [`InProcess`] is the default: one node, nothing to carry. [`RedisBackplane`] (feature
//! `redis`) uses Redis pub/sub, as Socket.IO's and Action Cable's adapters do.

use std::sync::Arc;

use bytestring::ByteString;

pub use super::command::Receipt;
use super::command::{Command, HubSender};
use super::counters::Counters;
pub use super::history::Position;
use crate::config::HistoryConfig;

#[cfg(feature = "redis")]
mod redis;
#[cfg(feature = "redis")]
pub use self::redis::{
    RedisBackplane, RedisConfig, DEFAULT_BUFFER, DEFAULT_BUFFER_BYTES, DEFAULT_PREFIX,
    DEFAULT_PRESENCE_REFRESH, DEFAULT_PRESENCE_TTL, DEFAULT_PUBLISH_QUEUE,
    DEFAULT_PUBLISH_QUEUE_BYTES, DEFAULT_TIMEOUT, MAX_QUEUE, MIN_PRESENCE_REFRESH, MIN_TIMEOUT,
    QUEUE_BYTES,
};

/// What a backplane gets from the hub when it starts: where messages from other nodes go, and
/// the server's counters it reports into. It is the only way into the hub a backplane has, so
/// the hub's commands and counters stay internal.
#[derive(Clone)]
pub struct HubLink {
    pub(crate) hub: HubSender,
    pub(crate) counters: Arc<Counters>,
}

impl std::fmt::Debug for HubLink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HubLink").finish_non_exhaustive()
    }
}

/// The hub is gone (the server stopped): nothing more can be delivered through a [`HubLink`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HubGone;

impl HubLink {
    /// Hand `frame`, published on another node, to this node's members of `room`, as it is.
    /// Waits while the hub's bounded queue is full, so a backplane that awaits each delivery
    /// is held to the hub's pace. `receipt`, when given, is dropped once the hub has fanned the
    /// frame out: count what is in flight with it (see [`Receipt::new`]).
    pub async fn deliver(
        &self,
        room: Arc<str>,
        frame: ByteString,
        receipt: Option<Receipt>,
    ) -> Result<(), HubGone> {
        let remote = Command::Remote {
            room,
            frame,
            offset: None,
            receipt,
        };
        self.hub.send(remote).await.map_err(|_| HubGone)
    }

    /// [`deliver`](Self::deliver) a publication at `offset` of its room's stream (a backplane
    /// that [keeps the history](Backplane::keep_history), for this node's publications too):
    /// the hub holds it back from members still recovering, and passes them only what comes
    /// after what they recovered.
    pub async fn deliver_at(
        &self,
        room: Arc<str>,
        frame: ByteString,
        offset: u64,
        receipt: Option<Receipt>,
    ) -> Result<(), HubGone> {
        let remote = Command::Remote {
            room,
            frame,
            offset: Some(offset),
            receipt,
        };
        self.hub.send(remote).await.map_err(|_| HubGone)
    }

    /// Hand a `presence_diff` `frame` that another node made (its members came or went) to
    /// this node's presence listeners and watchers of `room`, in order with what
    /// [`deliver`](Self::deliver) hands over.
    pub async fn deliver_presence(
        &self,
        room: Arc<str>,
        frame: ByteString,
        receipt: Option<Receipt>,
    ) -> Result<(), HubGone> {
        let remote = Command::RemotePresence {
            room,
            frame,
            receipt,
        };
        self.hub.send(remote).await.map_err(|_| HubGone)
    }

    /// Report how many rooms the backplane receives now (the gauge
    /// `wsm_server_backplane_channels` and [`HubStats::backplane_channels`](super::HubStats)).
    pub fn set_channels(&self, channels: u64) {
        self.counters
            .backplane_channels
            .store(channels, std::sync::atomic::Ordering::Relaxed);
    }
}

/// Told the outcome of a backplane operation: `Ok` once it took effect (subscribed; published
/// to the other nodes), or why it failed, in words. Called at most once, from any task.
pub type Done = Box<dyn FnOnce(Result<(), String>) + Send>;

/// What the hub asks of a backplane that keeps the rooms' history.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StreamQuery {
    /// A member joins: the room's position and, with `since`, the publications after it (none
    /// when the epoch differs or more than `limit` were missed). Answered only once this node
    /// receives the room, so that every later publication reaches the hub after the answer's
    /// range or in it.
    Join {
        /// The position the member had.
        since: Option<Position>,
        /// At most this many publications (`recover_limit`).
        limit: usize,
    },
    /// A `history` request: at most `limit` publications after `since` (of the room's epoch),
    /// or else the latest `limit`.
    History {
        /// Where to read from.
        since: Option<Position>,
        /// At most this many publications.
        limit: usize,
    },
}

/// What a [`StreamQuery`] found in a room's stream.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StreamRead {
    /// The room's last offset (0 before its first publication).
    pub offset: u64,
    /// The room's epoch.
    pub epoch: String,
    /// The offset of the first of `publications` (meaningless when there are none).
    pub first: u64,
    /// Publications with consecutive offsets from `first`, oldest first, as members receive
    /// them.
    pub publications: Vec<ByteString>,
}

/// Told what a [`StreamQuery`] found, or why it could not be read, in words. Called once, from
/// any task.
pub type ReadDone = Box<dyn FnOnce(Result<StreamRead, String>) + Send>;

/// One window's presence changes of this node's members in a room, for a backplane that
/// [shares presence](Backplane::shares_presence).
#[derive(Debug, Clone, Copy)]
pub struct PresenceChange<'a> {
    /// Members that came: (session id on this node, entry as JSON text
    /// `{"session":S,"identity":U?,"info":I?}`). At most one per member.
    pub joins: &'a [(u64, Arc<str>)],
    /// Members that went (session ids on this node), whose joins went out in an earlier window.
    pub leaves: &'a [u64],
    /// This node has no member in the room any more.
    pub emptied: bool,
    /// The `presence_diff` frame for the other nodes' listeners (every join and leave).
    pub diff: Option<&'a ByteString>,
}

/// The other nodes' members of a room, as a backplane that [shares
/// presence](Backplane::shares_presence) reads them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PresenceRead {
    /// How many members the other nodes have in the room.
    pub count: u64,
    /// At most the limit asked for of their entries, as JSON text.
    pub members: Vec<String>,
}

/// Told what [`Backplane::read_presence`] found, or why it could not be read, in words. Called
/// once, from any task.
pub type PresenceDone = Box<dyn FnOnce(Result<PresenceRead, String>) + Send>;

/// Carries room messages between server nodes (see the [module docs](self)). The hub owns it
/// and calls it from its own thread, one call at a time, in the order of the hub's commands;
/// implementations hand the work to their own tasks and never block.
pub trait Backplane: Send + 'static {
    /// Whether messages leave this node. `false` (the [`InProcess`] default) lets sessions
    /// answer `joined` and `ack` at once instead of waiting for the backplane.
    fn is_remote(&self) -> bool;

    /// This node's id, when there are other nodes: session names carry it (`<node>.s-<n>`), so
    /// the `from` of a message names one session across all nodes.
    fn node_id(&self) -> Option<&str>;

    /// Called once by the hub when it starts, on the hub's arbiter, with where messages from
    /// other nodes go.
    fn start(&mut self, hub: HubLink);

    /// The first local member joined `room`: start receiving it. `done` is told once the
    /// subscription is in place (or why not; the room is still retried when the backplane
    /// reconnects).
    fn subscribe(&mut self, room: &Arc<str>, done: Done);

    /// The last local member left `room`: stop receiving it.
    fn unsubscribe(&mut self, room: &Arc<str>);

    /// Send `frame` (the message as members receive it) to the other nodes' members of `room`.
    /// `done`, when given, is told whether the other nodes will get it.
    ///
    /// When the backplane [keeps the history](Self::keep_history), `frame` is the envelope
    /// without its closing `}`: the backplane appends the position
    /// (`,"offset":N,"epoch":"X"}`), stores it and hands it to every node, this one included
    /// ([`HubLink::deliver_at`]); `done` is then told whether it was taken at all.
    fn publish(&mut self, room: &Arc<str>, frame: &ByteString, done: Option<Done>);

    /// Called once, before [`start`](Self::start), when the server keeps room history: whether
    /// this backplane keeps it for every node, bounded by `config` (then the hub keeps none
    /// and asks [`read`](Self::read) instead). The default keeps none (history is then off
    /// for a remote backplane: one node's offsets would mean nothing on another).
    fn keep_history(&mut self, config: &HistoryConfig) -> bool {
        let _ = config;
        false
    }

    /// Read `room`'s stream for `query` (only called when [`keep_history`](Self::keep_history)
    /// answered `true`); `done` is told within the backplane's timeout.
    fn read(&mut self, room: &Arc<str>, query: StreamQuery, done: ReadDone) {
        let _ = (room, query);
        done(Err("this backplane keeps no history".into()));
    }

    /// Whether this backplane keeps the rooms' presence for every node (then the hub calls
    /// [`presence`](Self::presence) and [`read_presence`](Self::read_presence)). The default
    /// keeps none: presence is then this node's own.
    fn shares_presence(&self) -> bool {
        false
    }

    /// This node's members of `room` changed over one window (called before any message the
    /// hub then publishes in `room`, so the diff is in order with them): record the change for
    /// the other nodes, and send them `change.diff`.
    fn presence(&mut self, room: &Arc<str>, change: PresenceChange<'_>) {
        let _ = (room, change);
    }

    /// Read the other nodes' members of `room` (at most `limit` entries listed); `done` is told
    /// within the backplane's timeout.
    fn read_presence(&mut self, room: &Arc<str>, limit: usize, done: PresenceDone) {
        let _ = (room, limit);
        done(Err("this backplane keeps no presence".into()));
    }
}

/// One node, nothing to carry: a single server. Every operation succeeds at once.
#[derive(Debug, Default, Clone, Copy)]
pub struct InProcess;

impl Backplane for InProcess {
    fn is_remote(&self) -> bool {
        false
    }

    fn node_id(&self) -> Option<&str> {
        None
    }

    fn start(&mut self, _hub: HubLink) {}

    fn subscribe(&mut self, _room: &Arc<str>, done: Done) {
        done(Ok(()));
    }

    fn unsubscribe(&mut self, _room: &Arc<str>) {}

    fn publish(&mut self, _room: &Arc<str>, _frame: &ByteString, done: Option<Done>) {
        if let Some(done) = done {
            done(Ok(()));
        }
    }
}
