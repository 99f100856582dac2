//! The [`Hub`] actor: rooms, membership and broadcast.
//!
//! The hub knows each live session by its id, the bounded outbound queue of that session, and
//! which rooms it is in. It never touches a socket and never waits: a broadcast encodes the
//! `message` envelope once and offers the same shared bytes to every member's queue with
//! `try_send`. A member whose queue is full gets the [`SlowConsumerPolicy`] (disconnect, or
//! drop and count); the other members are not slowed down by it.
//!
//! Sessions register in their `started()` and unregister in their `stopping()`, whatever made
//! them stop; a session whose queue has been closed is also removed the first time a broadcast
//! finds it so.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use actix::prelude::*;
use bytes::Bytes;
use bytestring::ByteString;
use serde_json::value::RawValue;
use tokio::sync::mpsc::{self, error::TrySendError};

use crate::config::SlowConsumerPolicy;
use crate::envelope::{encode_parts, now_rfc3339, WireMessage};
use crate::protocol::RoomMessage;

/// A session's id, unique within one server.
pub type SessionId = u64;

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

/// Counters shared by the hub and every session of one server. Plain atomics, so that sessions
/// on other arbiters count without a message round trip.
#[derive(Debug, Default)]
pub struct Counters {
    /// Publishes accepted (from sessions and from HTTP handlers).
    pub published: AtomicU64,
    /// Frames handed to session queues (broadcast copies and direct replies).
    pub delivered: AtomicU64,
    /// Payload bytes handed to session queues.
    pub bytes: AtomicU64,
    /// Frames dropped because a queue was full under [`SlowConsumerPolicy::DropNewest`].
    pub dropped: AtomicU64,
    /// Sessions disconnected because their queue was full under
    /// [`SlowConsumerPolicy::Disconnect`].
    pub slow_consumer_disconnects: AtomicU64,
    /// Sessions disconnected because nothing arrived from them within the heartbeat timeout.
    pub heartbeat_timeouts: AtomicU64,
    /// The deepest any session queue has been seen (high-water mark, in frames). Never above the
    /// configured `session_queue`.
    pub queue_high_water: AtomicU64,
}

impl Counters {
    /// Count one frame of `len` bytes handed to a queue that now holds `depth` frames.
    pub(crate) fn delivered(&self, len: usize, depth: usize) {
        self.delivered_many(1, len as u64, depth);
    }

    /// Count `frames` frames of `bytes` bytes in all, the deepest queue holding `max_depth`
    /// frames after them: a broadcast counts once, not once per member (these counters are
    /// shared with sessions on every worker thread).
    pub(crate) fn delivered_many(&self, frames: u64, bytes: u64, max_depth: usize) {
        if frames == 0 {
            return;
        }
        self.delivered.fetch_add(frames, Ordering::Relaxed);
        self.bytes.fetch_add(bytes, Ordering::Relaxed);
        self.queue_high_water
            .fetch_max(max_depth as u64, Ordering::Relaxed);
    }
}

/// A snapshot of a server's counters, the answer to [`GetStats`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct HubStats {
    /// Sessions registered with the hub now.
    pub sessions: usize,
    /// Rooms with at least one member now.
    pub rooms: usize,
    /// Publishes accepted since start.
    pub published: u64,
    /// Frames handed to session queues since start.
    pub delivered: u64,
    /// Payload bytes handed to session queues since start.
    pub bytes: u64,
    /// Frames dropped on full queues ([`SlowConsumerPolicy::DropNewest`]).
    pub dropped: u64,
    /// Sessions disconnected for a full queue ([`SlowConsumerPolicy::Disconnect`]).
    pub slow_consumer_disconnects: u64,
    /// Sessions disconnected by the heartbeat.
    pub heartbeat_timeouts: u64,
    /// Deepest session queue seen, in frames (bounded by `session_queue`).
    pub queue_high_water: u64,
}

/// Why the hub tells a session to go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EvictReason {
    /// The session's queue was full under [`SlowConsumerPolicy::Disconnect`] (close 1013, then
    /// the socket is cut).
    SlowConsumer,
    /// The server is shutting down (close 1001).
    Shutdown,
}

/// Sent by the hub to a session that must close. Sessions never wait on their socket, so this
/// `do_send` cannot pile up behind a stuck client.
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub struct Evict {
    /// Why.
    pub reason: EvictReason,
}

/// A session introduces itself; sent from the session's `started()`.
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub struct Connect {
    /// The session's id.
    pub id: SessionId,
    /// The session's bounded outbound queue.
    pub queue: mpsc::Sender<Outbound>,
    /// Where [`Evict`] goes.
    pub evict: Recipient<Evict>,
}

/// A session is gone; sent from the session's `stopping()`, whatever made it stop.
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub struct Disconnect {
    /// The session's id.
    pub id: SessionId,
}

/// Add a session to a room (the session has checked the name and its room limit).
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub struct Join {
    /// The session's id.
    pub id: SessionId,
    /// The room.
    pub room: Arc<str>,
}

/// Remove a session from a room.
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub struct Leave {
    /// The session's id.
    pub id: SessionId,
    /// The room.
    pub room: Arc<str>,
}

/// Broadcast `data` to every member of `room` as
/// `{"type":"message","room":R,"from":S,"data":D,"timestamp":T}`. Answers the number of members
/// whose queue took the message.
#[derive(Debug, Message)]
#[rtype(result = "usize")]
pub struct Publish {
    /// The room.
    pub room: Arc<str>,
    /// The publishing session's name (`s-<id>`), or `None` for a publish from server code.
    pub from: Option<Arc<str>>,
    /// The payload, as raw JSON; `None` sends a message without `data`.
    pub data: Option<Box<RawValue>>,
}

/// Ask for a [`HubStats`] snapshot.
#[derive(Debug, Message)]
#[rtype(result = "HubStats")]
pub struct GetStats;

/// Tell every session to close with 1001 (server shutdown). Answers how many were told.
#[derive(Debug, Message)]
#[rtype(result = "usize")]
pub struct CloseAll;

/// Who the hub knows: one entry per live session.
struct Member {
    /// The session's queue; the hub only ever `try_send`s into it.
    queue: mpsc::Sender<Outbound>,
    /// Where to send [`Evict`].
    evict: Recipient<Evict>,
    /// The rooms it is in, so that leaving every room on disconnect does not scan all rooms.
    rooms: HashSet<Arc<str>>,
}

/// Rooms and membership, and the one place where broadcast happens. One per server, shared by
/// every worker of the HTTP server through [`Rooms`](super::Rooms).
pub struct Hub {
    members: HashMap<SessionId, Member>,
    rooms: HashMap<Arc<str>, HashSet<SessionId>>,
    policy: SlowConsumerPolicy,
    counters: Arc<Counters>,
}

impl Hub {
    /// A hub applying `policy` to full queues and counting into `counters`.
    pub fn new(policy: SlowConsumerPolicy, counters: Arc<Counters>) -> Self {
        Self {
            members: HashMap::new(),
            rooms: HashMap::new(),
            policy,
            counters,
        }
    }

    /// Forget a session and its memberships.
    fn remove(&mut self, id: SessionId) -> Option<Member> {
        let member = self.members.remove(&id)?;
        for room in &member.rooms {
            if let Some(set) = self.rooms.get_mut(room) {
                set.remove(&id);
                if set.is_empty() {
                    self.rooms.remove(room);
                }
            }
        }
        Some(member)
    }
}

impl Actor for Hub {
    type Context = Context<Self>;
}

/// Handler for [`Connect`].
impl Handler<Connect> for Hub {
    type Result = ();
    fn handle(&mut self, msg: Connect, _: &mut Context<Self>) {
        self.members.insert(
            msg.id,
            Member {
                queue: msg.queue,
                evict: msg.evict,
                rooms: HashSet::new(),
            },
        );
    }
}

/// Handler for [`Disconnect`].
impl Handler<Disconnect> for Hub {
    type Result = ();
    fn handle(&mut self, msg: Disconnect, _: &mut Context<Self>) {
        self.remove(msg.id);
    }
}

/// Handler for [`Join`].
impl Handler<Join> for Hub {
    type Result = ();
    fn handle(&mut self, msg: Join, _: &mut Context<Self>) {
        if let Some(member) = self.members.get_mut(&msg.id) {
            member.rooms.insert(msg.room.clone());
            self.rooms.entry(msg.room).or_default().insert(msg.id);
        }
    }
}

/// Handler for [`Leave`].
impl Handler<Leave> for Hub {
    type Result = ();
    fn handle(&mut self, msg: Leave, _: &mut Context<Self>) {
        if let Some(member) = self.members.get_mut(&msg.id) {
            member.rooms.remove(&msg.room);
        }
        if let Some(set) = self.rooms.get_mut(&msg.room) {
            set.remove(&msg.id);
            if set.is_empty() {
                self.rooms.remove(&msg.room);
            }
        }
    }
}

/// Handler for [`Publish`]: encode once, `try_send` the shared bytes to every member.
impl Handler<Publish> for Hub {
    type Result = usize;
    fn handle(&mut self, msg: Publish, _: &mut Context<Self>) -> usize {
        self.counters.published.fetch_add(1, Ordering::Relaxed);
        let Some(ids) = self.rooms.get(&msg.room) else {
            return 0;
        };
        let text = encode_parts(
            RoomMessage::TYPE,
            None,
            Some(&msg.room),
            msg.from.as_deref(),
            msg.data.as_deref(),
            Some(&now_rfc3339()),
        );
        let len = text.len();
        let frame = Outbound::Text(text);
        let mut reached = 0;
        let mut max_depth = 0;
        let mut evicted = Vec::new();
        for id in ids {
            let Some(member) = self.members.get(id) else {
                continue;
            };
            match member.queue.try_send(frame.clone()) {
                Ok(()) => {
                    reached += 1;
                    let depth = member.queue.max_capacity() - member.queue.capacity();
                    max_depth = max_depth.max(depth);
                }
                Err(TrySendError::Full(_)) => match self.policy {
                    SlowConsumerPolicy::DropNewest => {
                        self.counters.dropped.fetch_add(1, Ordering::Relaxed);
                        tracing::debug!(session = id, room = %msg.room, "queue full; message dropped");
                    }
                    SlowConsumerPolicy::Disconnect => evicted.push((*id, true)),
                },
                Err(TrySendError::Closed(_)) => evicted.push((*id, false)),
            }
        }
        self.counters
            .delivered_many(reached as u64, (len * reached) as u64, max_depth);
        for (id, slow) in evicted {
            if let Some(member) = self.remove(id) {
                if slow {
                    self.counters
                        .slow_consumer_disconnects
                        .fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(session = id, "slow consumer: queue full; disconnecting");
                    member.evict.do_send(Evict {
                        reason: EvictReason::SlowConsumer,
                    });
                }
            }
        }
        reached
    }
}

/// Handler for [`GetStats`].
impl Handler<GetStats> for Hub {
    type Result = MessageResult<GetStats>;
    fn handle(&mut self, _: GetStats, _: &mut Context<Self>) -> Self::Result {
        let c = &self.counters;
        MessageResult(HubStats {
            sessions: self.members.len(),
            rooms: self.rooms.len(),
            published: c.published.load(Ordering::Relaxed),
            delivered: c.delivered.load(Ordering::Relaxed),
            bytes: c.bytes.load(Ordering::Relaxed),
            dropped: c.dropped.load(Ordering::Relaxed),
            slow_consumer_disconnects: c.slow_consumer_disconnects.load(Ordering::Relaxed),
            heartbeat_timeouts: c.heartbeat_timeouts.load(Ordering::Relaxed),
            queue_high_water: c.queue_high_water.load(Ordering::Relaxed),
        })
    }
}

/// Handler for [`CloseAll`].
impl Handler<CloseAll> for Hub {
    type Result = usize;
    fn handle(&mut self, _: CloseAll, _: &mut Context<Self>) -> usize {
        for member in self.members.values() {
            member.evict.do_send(Evict {
                reason: EvictReason::Shutdown,
            });
        }
        self.members.len()
    }
}
