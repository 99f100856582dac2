//! The [`Hub`] actor: rooms, membership and broadcast.
//!
//! The hub knows each live session by its id, the bounded outbound queue of that session, and
//! which rooms it is in. It never touches a socket and never waits: a broadcast encodes the
//! `message` envelope once and offers the same bytes (one shared copy per worker thread) to
//! every member's queue with `try_send`. A member whose queue is full gets the
//! [`SlowConsumerPolicy`] (disconnect, or drop and count); the other members are not slowed
//! down by it. The members' connections are woken after the last offer, one message per worker
//! thread ([`Wakes`](super::outbox)), rather than one cross-thread wake per member.
//!
//! Everything that changes the hub's state arrives through one bounded FIFO queue of
//! [`Command`]s (`ServerConfig::hub_queue`): sessions register (`Connect`) in their `started()`,
//! join, leave and publish in the order their client sent those, and unregister (`Disconnect`)
//! when they begin to close. A session that finds the queue full stops reading its socket until
//! the hub has room, so TCP slows a fast publisher, the queue stays bounded, and one publisher's
//! messages are never reordered (actix's `Addr::send` on a full mailbox parks each message in its
//! own future, and those enter the mailbox in wake-up order). A session whose outbound queue has
//! been closed is also removed the first time a broadcast finds it so.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use actix::prelude::*;
use bytes::Bytes;
use bytestring::ByteString;
use serde_json::value::RawValue;
use tokio::sync::mpsc::{self, error::TrySendError};
use tokio::sync::oneshot;

use super::backplane::{Backplane, InProcess};
use super::metrics::LatencyHistogram;
use super::outbox::{Depth, Outbox, Refused, Wakes};
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

/// Bytes of a message a backplane handed to the hub and counts as its own until the hub has
/// fanned it out: dropping the receipt gives them back.
#[derive(Debug)]
pub struct Receipt {
    bytes: usize,
    counter: Arc<std::sync::atomic::AtomicUsize>,
}

impl Receipt {
    /// Count `bytes` in `counter` until this receipt is dropped.
    pub fn new(bytes: usize, counter: Arc<std::sync::atomic::AtomicUsize>) -> Self {
        counter.fetch_add(bytes, Ordering::AcqRel);
        Self { bytes, counter }
    }
}

impl Drop for Receipt {
    fn drop(&mut self) {
        self.counter.fetch_sub(self.bytes, Ordering::AcqRel);
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
    /// The most payload bytes any session queue has held (high-water mark). Never above the
    /// configured `session_queue_bytes` plus one message (a queue takes one frame whatever its
    /// size when it is empty).
    pub queue_bytes_high_water: AtomicU64,
    /// The deepest the hub's command queue has been seen, in commands. Never above the
    /// configured `hub_queue`.
    pub hub_queue_high_water: AtomicU64,
    /// Messages refused with `rate_limited` (or, on the echo endpoint, not echoed) because a
    /// session went past its rate limit.
    pub rate_limited: AtomicU64,
    /// Sessions closed with 1008 for going on past twice their burst.
    pub rate_limit_disconnects: AtomicU64,
    /// Upgrades refused with HTTP 429 by `max_connections_per_ip`.
    pub per_ip_refusals: AtomicU64,
    /// Publishes that could not be handed to the backplane (other nodes did not get them; the
    /// publisher was told when its publish had an `id`).
    pub backplane_publish_errors: AtomicU64,
    /// Times the backplane's connection was lost (each is followed by reconnecting and
    /// subscribing again to every room with local members).
    pub backplane_disconnects: AtomicU64,
    /// Messages from other nodes dropped: this node's inbound backplane buffer was full (the
    /// hub fell behind the other nodes), or a message came out of its publisher's order (the
    /// late tail of a connection that publisher gave up).
    pub backplane_dropped: AtomicU64,
    /// Room channels this node is subscribed to in the backplane, as last confirmed by it (a
    /// gauge; 0 while disconnected). Equal to `rooms` once the backplane has caught up.
    pub backplane_channels: AtomicU64,
    /// Messages from other nodes fanned out here.
    pub backplane_received: AtomicU64,
    /// Whole messages (text and binary, both endpoints) received from clients, counted before
    /// the rate limit or the protocol looks at them.
    pub messages_in: AtomicU64,
    /// Payload bytes of the messages counted in `messages_in`.
    pub bytes_in: AtomicU64,
    /// Rooms with at least one member after the hub's last command: a gauge the hub keeps so
    /// that a metrics scrape reads it without waiting its turn in the hub's queue.
    pub rooms: AtomicU64,
    /// How long each publish took the hub, from taking it off the queue to having offered it to
    /// every member (see [`LatencyHistogram`]).
    pub fanout: LatencyHistogram,
}

impl Counters {
    /// Count one whole message of `len` bytes received from a client.
    pub(crate) fn received(&self, len: usize) {
        self.messages_in.fetch_add(1, Ordering::Relaxed);
        self.bytes_in.fetch_add(len as u64, Ordering::Relaxed);
    }

    /// Count one frame of `len` bytes handed to a queue that now holds `depth`.
    pub(crate) fn delivered(&self, len: usize, depth: Depth) {
        self.delivered_many(1, len as u64, depth);
    }

    /// Count `frames` frames of `bytes` bytes in all, the deepest queue holding `max_depth`
    /// after them (frames and bytes, each the maximum over the queues): a broadcast counts
    /// once, not once per member (these counters are shared with sessions on every worker
    /// thread).
    pub(crate) fn delivered_many(&self, frames: u64, bytes: u64, max_depth: Depth) {
        if frames == 0 {
            return;
        }
        self.delivered.fetch_add(frames, Ordering::Relaxed);
        self.bytes.fetch_add(bytes, Ordering::Relaxed);
        // Read first: the mark rarely moves, and a read keeps the cache line shared between
        // the worker threads where a read-modify-write on every frame would not.
        let (depth, depth_bytes) = (max_depth.frames as u64, max_depth.bytes as u64);
        if depth > self.queue_high_water.load(Ordering::Relaxed) {
            self.queue_high_water.fetch_max(depth, Ordering::Relaxed);
        }
        if depth_bytes > self.queue_bytes_high_water.load(Ordering::Relaxed) {
            self.queue_bytes_high_water
                .fetch_max(depth_bytes, Ordering::Relaxed);
        }
    }
}

/// A snapshot of a server's counters, the answer to [`Command::Stats`] (`Rooms::stats`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct HubStats {
    /// Sessions registered with the hub now.
    pub sessions: usize,
    /// Rooms with at least one member now.
    pub rooms: usize,
    /// Room memberships now (a session in three rooms counts three): back to its earlier value
    /// once the sessions that joined since have left or gone.
    pub members: usize,
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
    /// Most payload bytes a session queue has held (bounded by `session_queue_bytes` plus one
    /// message).
    pub queue_bytes_high_water: u64,
    /// Deepest the hub's command queue has been, in commands (bounded by `hub_queue`).
    pub hub_queue_high_water: u64,
    /// Messages refused for going past a session's rate limit.
    pub rate_limited: u64,
    /// Sessions closed with 1008 for going on past twice their burst.
    pub rate_limit_disconnects: u64,
    /// Upgrades refused with HTTP 429 by `max_connections_per_ip`.
    pub per_ip_refusals: u64,
    /// Publishes the backplane could not take (see [`Counters::backplane_publish_errors`]).
    pub backplane_publish_errors: u64,
    /// Backplane connections lost (see [`Counters::backplane_disconnects`]).
    pub backplane_disconnects: u64,
    /// Messages from other nodes dropped (see [`Counters::backplane_dropped`]).
    pub backplane_dropped: u64,
    /// Room channels subscribed in the backplane (see [`Counters::backplane_channels`]).
    pub backplane_channels: u64,
    /// Messages from other nodes fanned out here.
    pub backplane_received: u64,
}

/// Why the hub tells a session to go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EvictReason {
    /// The session's queue was full under [`SlowConsumerPolicy::Disconnect`] (close 1013, then
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
        /// A frame for the hub to send the session once the join has taken effect (with a
        /// remote backplane: once this node receives the room); `None` when the session
        /// answered itself.
        reply: Option<Outbound>,
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
        /// Dropped once the hub has fanned the frame out: the backplane counts the bytes it
        /// has handed over until then, so that what waits in the hub's queue is bounded by
        /// bytes too (`None` when the backplane does not count).
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
    /// Answer the sessions in a room.
    Members {
        /// The room.
        room: Arc<str>,
        /// Told the members' ids (empty when the room has none).
        tell: oneshot::Sender<Vec<SessionId>>,
    },
}

/// Broadcast `data` to every member of `room` as
/// `{"type":E,"room":R,"from":S,"data":D,"timestamp":T}` (E is `event`, by default
/// `"message"`).
#[derive(Debug)]
pub struct Publish {
    /// The room.
    pub room: Arc<str>,
    /// The publishing session's name (`s-<id>`), or `None` for a publish from server code.
    pub from: Option<Arc<str>>,
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

/// The sending end of the hub's command queue, with the high-water mark of the queue kept in
/// the shared counters.
#[derive(Debug, Clone)]
pub struct HubSender {
    tx: mpsc::Sender<Command>,
    counters: Arc<Counters>,
}

impl HubSender {
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
        self.counters
            .hub_queue_high_water
            .fetch_max(depth as u64, Ordering::Relaxed);
    }
}

/// Who the hub knows: one entry per live session.
struct Member {
    /// Where its messages go; the hub only ever offers with `try_send`.
    sink: MemberSink,
    /// The rooms it is in, so that leaving every room on disconnect does not scan all rooms.
    rooms: HashSet<Arc<str>>,
}

/// A member's way in: a session's bounded queue, or an actor of the application's (for
/// example an existing actix-web-actors session) through its bounded mailbox.
enum MemberSink {
    Session {
        queue: Outbox,
        /// Where to send [`Evict`].
        evict: Recipient<Evict>,
    },
    Actor(Recipient<RoomFrame>),
}

/// What offering a frame to a member did.
enum Offer {
    /// Taken; the member's queue now holds this much (zero when unknown).
    Taken(Depth),
    Full,
    Gone,
}

impl MemberSink {
    fn offer(&self, frame: &Outbound, wakes: &mut Wakes) -> Offer {
        match self {
            MemberSink::Session { queue, .. } => match queue.try_send_batched(frame.clone(), wakes)
            {
                Ok(depth) => Offer::Taken(depth),
                Err(Refused::Full(_)) => Offer::Full,
                Err(Refused::Closed(_)) => Offer::Gone,
            },
            MemberSink::Actor(recipient) => {
                let Outbound::Text(text) = frame else {
                    return Offer::Taken(Depth::default()); // only text frames are meant for members
                };
                match recipient.try_send(RoomFrame(text.clone())) {
                    Ok(()) => Offer::Taken(Depth::default()),
                    Err(SendError::Full(_)) => Offer::Full,
                    Err(SendError::Closed(_)) => Offer::Gone,
                }
            }
        }
    }

    /// Tell a slow member it is out (a session closes with 1013; an actor is simply no longer a
    /// member of anything).
    fn evict(&self) {
        if let MemberSink::Session { evict, .. } = self {
            evict.do_send(Evict {
                reason: EvictReason::SlowConsumer,
            });
        }
    }
}

/// A room message for an actor member ([`Rooms::attach`](super::Rooms::attach)): the encoded
/// envelope, shared with every other member, to write as a text frame as it is (for an
/// actix-web-actors session: `ctx.text(frame.0)`).
#[derive(Debug, Clone, Message)]
#[rtype(result = "()")]
pub struct RoomFrame(pub ByteString);

/// Rooms and membership, and the one place where broadcast happens. One per server, shared by
/// every worker of the HTTP server through [`Rooms`](super::Rooms).
pub struct Hub {
    members: HashMap<SessionId, Member>,
    rooms: HashMap<Arc<str>, HashSet<SessionId>>,
    policy: SlowConsumerPolicy,
    counters: Arc<Counters>,
    /// The other nodes ([`InProcess`] when there are none).
    backplane: Box<dyn Backplane>,
}

impl Hub {
    /// A hub applying `policy` to full queues, counting into `counters`, with no other nodes.
    pub fn new(policy: SlowConsumerPolicy, counters: Arc<Counters>) -> Self {
        Self {
            members: HashMap::new(),
            rooms: HashMap::new(),
            policy,
            counters,
            backplane: Box::new(InProcess),
        }
    }

    /// Forget a session and its memberships.
    fn remove(&mut self, id: SessionId) -> Option<Member> {
        let member = self.members.remove(&id)?;
        for room in &member.rooms {
            self.drop_membership(id, room);
        }
        Some(member)
    }

    /// Take `id` out of `room`'s member set; the room's last local member unsubscribes it.
    fn drop_membership(&mut self, id: SessionId, room: &Arc<str>) {
        if let Some(set) = self.rooms.get_mut(room) {
            set.remove(&id);
            if set.is_empty() {
                self.rooms.remove(room);
                self.backplane.unsubscribe(room);
            }
        }
    }
}

impl Actor for Hub {
    type Context = Context<Self>;
}

impl Hub {
    /// Start a hub on the current arbiter, reading commands from a queue of `capacity`; answers
    /// its address and the sending end of the queue.
    pub fn launch(
        policy: SlowConsumerPolicy,
        counters: Arc<Counters>,
        capacity: usize,
    ) -> (Addr<Hub>, HubSender) {
        Self::launch_with_backplane(policy, counters, capacity, Box::new(InProcess))
    }

    /// [`launch`](Self::launch) as one node of several, joined by `backplane`.
    pub fn launch_with_backplane(
        policy: SlowConsumerPolicy,
        counters: Arc<Counters>,
        capacity: usize,
        mut backplane: Box<dyn Backplane>,
    ) -> (Addr<Hub>, HubSender) {
        let (tx, mut rx) = mpsc::channel(capacity);
        let sender = HubSender {
            tx,
            counters: counters.clone(),
        };
        backplane.start(sender.clone(), counters.clone());
        let addr = Hub::create(move |ctx| {
            ctx.add_stream(futures_util::stream::poll_fn(move |cx| rx.poll_recv(cx)));
            let mut hub = Hub::new(policy, counters);
            hub.backplane = backplane;
            hub
        });
        (addr, sender)
    }

    fn connect(&mut self, id: SessionId, sink: MemberSink) {
        let member = Member {
            sink,
            rooms: HashSet::new(),
        };
        self.members.insert(id, member);
    }

    fn join(&mut self, id: SessionId, room: Arc<str>, reply: Option<Outbound>) {
        let Some(member) = self.members.get_mut(&id) else {
            return;
        };
        member.rooms.insert(room.clone());
        let reply_to = match (&member.sink, reply) {
            (MemberSink::Session { queue, .. }, Some(reply)) => Some((queue.clone(), reply)),
            _ => None,
        };
        let set = self.rooms.entry(room.clone()).or_default();
        let first = set.is_empty();
        set.insert(id);
        if first {
            // The first local member: this node starts receiving the room, and the member is
            // told `joined` once it does (so what others publish after that reaches it).
            let counters = self.counters.clone();
            let label = room.clone();
            self.backplane.subscribe(
                &room,
                Box::new(move |result| {
                    if let Err(e) = result {
                        tracing::warn!(room = %label, "backplane subscribe failed: {e}; local members only until it reconnects");
                    }
                    if let Some((queue, reply)) = reply_to {
                        offer_reply(&queue, reply, &counters);
                    }
                }),
            );
        } else if let Some((queue, reply)) = reply_to {
            offer_reply(&queue, reply, &self.counters);
        }
    }

    fn leave(&mut self, id: SessionId, room: Arc<str>) {
        if let Some(member) = self.members.get_mut(&id) {
            member.rooms.remove(&room);
        }
        self.drop_membership(id, &room);
    }

    /// Offer `frame` to one member under the slow-consumer policy.
    fn send_to(&mut self, id: SessionId, frame: Outbound) -> bool {
        let Some(member) = self.members.get(&id) else {
            return false;
        };
        let len = frame.len();
        let mut wakes = Wakes::new();
        let offer = member.sink.offer(&frame, &mut wakes);
        wakes.wake_all();
        match offer {
            Offer::Taken(depth) => {
                self.counters.delivered(len, depth);
                true
            }
            Offer::Full => {
                match self.policy {
                    SlowConsumerPolicy::DropNewest => {
                        self.counters.dropped.fetch_add(1, Ordering::Relaxed);
                    }
                    SlowConsumerPolicy::Disconnect => {
                        if let Some(member) = self.remove(id) {
                            self.counters
                                .slow_consumer_disconnects
                                .fetch_add(1, Ordering::Relaxed);
                            member.sink.evict();
                        }
                    }
                }
                false
            }
            Offer::Gone => {
                self.remove(id);
                false
            }
        }
    }

    /// Encode once, `try_send` the shared bytes to every local member, then hand the same
    /// bytes to the backplane for the other nodes. Answers how many local members' queues took
    /// it.
    fn publish(&mut self, msg: &Publish) -> usize {
        let started = std::time::Instant::now();
        let reached = self.publish_untimed(msg);
        self.counters.fanout.observe(started.elapsed());
        reached
    }

    /// [`publish`](Self::publish) without the fan-out latency measurement around it.
    fn publish_untimed(&mut self, msg: &Publish) -> usize {
        self.counters.published.fetch_add(1, Ordering::Relaxed);
        let remote = self.backplane.is_remote();
        if !remote && !self.rooms.contains_key(&msg.room) {
            return 0;
        }
        let text = encode_parts(
            msg.event.as_deref().unwrap_or(RoomMessage::TYPE),
            None,
            Some(&msg.room),
            msg.from.as_deref(),
            None,
            msg.data.as_deref(),
            Some(&now_rfc3339()),
        );
        let reached = self.fan_out(&msg.room, &text);
        if remote {
            let reply = msg.reply_to.and_then(|(session, id)| {
                match self.members.get(&session).map(|m| &m.sink) {
                    Some(MemberSink::Session { queue, .. }) => Some((queue.clone(), id)),
                    _ => None,
                }
            });
            let counters = self.counters.clone();
            let room = msg.room.clone();
            self.backplane.publish(
                &msg.room,
                &text,
                Some(Box::new(move |result| {
                    let frame = match result {
                        Ok(()) => reply.as_ref().map(|(_, id)| {
                            Outbound::Text(encode_parts(
                                crate::protocol::Ack::TYPE,
                                Some(*id),
                                None,
                                None,
                                None,
                                None,
                                None,
                            ))
                        }),
                        Err(e) => {
                            counters
                                .backplane_publish_errors
                                .fetch_add(1, Ordering::Relaxed);
                            tracing::warn!(%room, "publish not sent to other nodes: {e}");
                            reply.as_ref().map(|(_, id)| backplane_error(*id, &e))
                        }
                    };
                    if let (Some(frame), Some((queue, _))) = (frame, reply.as_ref()) {
                        offer_reply(queue, frame, &counters);
                    }
                })),
            );
        }
        reached
    }

    /// Offer `text` to every local member of `room` under the slow-consumer policy; answers how
    /// many queues took it.
    fn fan_out(&mut self, room: &Arc<str>, text: &ByteString) -> usize {
        let Some(ids) = self.rooms.get(room) else {
            return 0;
        };
        let len = text.len();
        let frame = Outbound::Text(text.clone());
        // One copy of the frame per worker thread: every member's queue holds a reference to
        // it, released by the worker once written, so with one shared copy the workers would
        // contend for its reference count on every member.
        let mut copies: Vec<(std::thread::ThreadId, Outbound)> = Vec::new();
        let mut reached = 0;
        let mut max_depth = Depth::default();
        let mut evicted = Vec::new();
        let mut wakes = Wakes::new();
        for id in ids {
            let Some(member) = self.members.get(id) else {
                continue;
            };
            let mine = match &member.sink {
                MemberSink::Session { queue, .. } => queue.home_thread().map(|thread| match copies
                    .iter()
                    .position(|(t, _)| *t == thread)
                {
                    Some(i) => i,
                    None => {
                        let copy = ByteString::from(String::from(&**text));
                        copies.push((thread, Outbound::Text(copy)));
                        copies.len() - 1
                    }
                }),
                MemberSink::Actor(_) => None,
            };
            let frame = match mine {
                Some(i) => &copies[i].1,
                None => &frame,
            };
            match member.sink.offer(frame, &mut wakes) {
                Offer::Taken(depth) => {
                    reached += 1;
                    max_depth.frames = max_depth.frames.max(depth.frames);
                    max_depth.bytes = max_depth.bytes.max(depth.bytes);
                }
                Offer::Full => match self.policy {
                    SlowConsumerPolicy::DropNewest => {
                        self.counters.dropped.fetch_add(1, Ordering::Relaxed);
                        tracing::debug!(session = id, %room, "queue full; message dropped");
                    }
                    SlowConsumerPolicy::Disconnect => evicted.push((*id, true)),
                },
                Offer::Gone => evicted.push((*id, false)),
            }
        }
        wakes.wake_all();
        self.counters
            .delivered_many(reached as u64, (len * reached) as u64, max_depth);
        for (id, slow) in evicted {
            if let Some(member) = self.remove(id) {
                if slow {
                    self.counters
                        .slow_consumer_disconnects
                        .fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(session = id, "slow consumer: queue full; disconnecting");
                    // At most one per member: it is forgotten here.
                    member.sink.evict();
                }
            }
        }
        reached
    }
}

/// Offer a reply frame to a session's queue; a full queue drops it (counted: the session is
/// too slow to read even its replies).
fn offer_reply(queue: &Outbox, frame: Outbound, counters: &Counters) {
    let len = frame.len();
    match queue.try_send(frame) {
        Ok(depth) => counters.delivered(len, depth),
        Err(Refused::Full(_)) => {
            counters.dropped.fetch_add(1, Ordering::Relaxed);
        }
        Err(Refused::Closed(_)) => {}
    }
}

/// The `error` a publisher gets when its publish could not reach the other nodes.
fn backplane_error(id: u64, why: &str) -> Outbound {
    let reply = crate::protocol::ErrorReply {
        code: crate::protocol::codes::BACKPLANE_UNAVAILABLE.to_owned(),
        message: format!(
            "delivered on this node; other nodes may not have it (Redis pub/sub is at-most-once): \
             {why}"
        ),
    };
    let raw = serde_json::value::to_raw_value(&reply).ok();
    Outbound::Text(encode_parts(
        crate::protocol::ErrorReply::TYPE,
        Some(id),
        None,
        None,
        None,
        raw.as_deref(),
        None,
    ))
}

/// Handler for the command queue: one command at a time, in queue order.
impl StreamHandler<Command> for Hub {
    fn handle(&mut self, cmd: Command, _: &mut Context<Self>) {
        match cmd {
            Command::Connect { id, queue, evict } => {
                self.connect(id, MemberSink::Session { queue, evict })
            }
            Command::Attach { id, recipient } => self.connect(id, MemberSink::Actor(recipient)),
            Command::Disconnect { id } => {
                self.remove(id);
            }
            Command::Join { id, room, reply } => self.join(id, room, reply),
            Command::Leave { id, room } => self.leave(id, room),
            Command::Stats(tell) => {
                let _ = tell.send(self.stats());
            }
            Command::SendTo { id, frame, sent } => {
                let _ = sent.send(self.send_to(id, frame));
            }
            Command::Members { room, tell } => {
                let mut ids: Vec<SessionId> = self
                    .rooms
                    .get(&room)
                    .map(|set| set.iter().copied().collect())
                    .unwrap_or_default();
                ids.sort_unstable();
                let _ = tell.send(ids);
            }
            Command::Remote { room, frame, .. } => {
                self.counters
                    .backplane_received
                    .fetch_add(1, Ordering::Relaxed);
                self.fan_out(&room, &frame);
            }
            Command::Publish(msg) => {
                let reached = self.publish(&msg);
                if let Some(tell) = msg.reached {
                    let _ = tell.send(reached);
                }
            }
        }
        let rooms = self.rooms.len() as u64;
        self.counters.rooms.store(rooms, Ordering::Relaxed);
    }

    fn finished(&mut self, ctx: &mut Context<Self>) {
        // Every sender is gone: the server handle was dropped.
        ctx.stop();
    }
}

impl Hub {
    fn stats(&self) -> HubStats {
        let c = &self.counters;
        HubStats {
            sessions: self.members.len(),
            rooms: self.rooms.len(),
            members: self.rooms.values().map(HashSet::len).sum(),
            published: c.published.load(Ordering::Relaxed),
            delivered: c.delivered.load(Ordering::Relaxed),
            bytes: c.bytes.load(Ordering::Relaxed),
            dropped: c.dropped.load(Ordering::Relaxed),
            slow_consumer_disconnects: c.slow_consumer_disconnects.load(Ordering::Relaxed),
            heartbeat_timeouts: c.heartbeat_timeouts.load(Ordering::Relaxed),
            queue_high_water: c.queue_high_water.load(Ordering::Relaxed),
            queue_bytes_high_water: c.queue_bytes_high_water.load(Ordering::Relaxed),
            hub_queue_high_water: c.hub_queue_high_water.load(Ordering::Relaxed),
            rate_limited: c.rate_limited.load(Ordering::Relaxed),
            rate_limit_disconnects: c.rate_limit_disconnects.load(Ordering::Relaxed),
            per_ip_refusals: c.per_ip_refusals.load(Ordering::Relaxed),
            backplane_publish_errors: c.backplane_publish_errors.load(Ordering::Relaxed),
            backplane_disconnects: c.backplane_disconnects.load(Ordering::Relaxed),
            backplane_dropped: c.backplane_dropped.load(Ordering::Relaxed),
            backplane_channels: c.backplane_channels.load(Ordering::Relaxed),
            backplane_received: c.backplane_received.load(Ordering::Relaxed),
        }
    }
}
