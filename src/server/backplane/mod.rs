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
//! [`InProcess`] is the default: one node, nothing to carry. [`RedisBackplane`] (feature
//! `redis`) uses Redis pub/sub, as Socket.IO's and Action Cable's adapters do.

use std::sync::Arc;

use bytestring::ByteString;

pub use super::command::Receipt;
use super::command::{Command, HubSender};
use super::counters::Counters;

#[cfg(feature = "redis")]
mod redis;
#[cfg(feature = "redis")]
pub use self::redis::{
    RedisBackplane, RedisConfig, DEFAULT_BUFFER, DEFAULT_BUFFER_BYTES, DEFAULT_PREFIX,
    DEFAULT_PUBLISH_QUEUE, DEFAULT_PUBLISH_QUEUE_BYTES, DEFAULT_TIMEOUT, MAX_QUEUE, MIN_TIMEOUT,
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
    fn publish(&mut self, room: &Arc<str>, frame: &ByteString, done: Option<Done>);
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
