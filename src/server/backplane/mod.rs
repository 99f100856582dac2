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
//! and the backplane hands what other nodes published back to the hub through
//! [`HubSender`] as [`Command::Remote`](super::command::Command::Remote). It must never hand a
//! node its own publish (members would get it twice) and must keep the order of one node's
//! publishes (so one publisher's messages stay in order on every node).
//!
//! [`InProcess`] is the default: one node, nothing to carry. [`RedisBackplane`] (feature
//! `redis`) uses Redis pub/sub, as Socket.IO's and Action Cable's adapters do.

use std::sync::Arc;

use bytestring::ByteString;

use super::command::HubSender;
use super::counters::Counters;

#[cfg(feature = "redis")]
mod redis;
#[cfg(feature = "redis")]
pub use self::redis::{
    RedisBackplane, RedisConfig, DEFAULT_BUFFER, DEFAULT_BUFFER_BYTES, DEFAULT_PREFIX,
    DEFAULT_PUBLISH_QUEUE, DEFAULT_PUBLISH_QUEUE_BYTES, DEFAULT_TIMEOUT, MAX_QUEUE, MIN_TIMEOUT,
    QUEUE_BYTES,
};

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

    /// Called once by the hub when it starts, on the hub's arbiter: where messages from other
    /// nodes go, and the counters to count into.
    fn start(&mut self, hub: HubSender, counters: Arc<Counters>);

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

    fn start(&mut self, _hub: HubSender, _counters: Arc<Counters>) {}

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
