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
//!
//! With room history on, the hub gives each publication its stream position as it encodes it,
//! keeps the frame, and answers `join` with `since` and `history` from it (`history.rs` here).
//! When the backplane keeps the history for every node instead, the hub publishes through it,
//! delivers what it hands back (its own publications included) and recovers joining members
//! from it (`shared.rs` here).

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use actix::{prelude::*, WeakAddr};
use bytestring::ByteString;
use serde_json::value::RawValue;
use tokio::sync::mpsc;

mod dispatch;
mod history;
mod member;
mod presence;
mod shared;

use self::member::{backplane_error, joined, offer_reply, Member, MemberSink, Offer};

use super::backplane::{Backplane, InProcess};
use super::command::{HubSender, JoinReply, Publish, Publisher, SessionId};
use super::counters::{on_full_queue, Counters, FullQueue};
use super::history::History;
use super::outbox::{self, Depth, Outbound, Wakes};
use crate::config::{HistoryConfig, SlowConsumerPolicy};
use crate::envelope::{now_rfc3339, EnvelopeParts, WireMessage};
use crate::protocol::{self, RoomMessage};

/// Rooms and membership, and the one place where broadcast happens. One per server, shared by
/// every worker of the HTTP server through [`Rooms`](super::Rooms).
pub struct Hub {
    members: HashMap<SessionId, Member>,
    rooms: HashMap<Arc<str>, HashSet<SessionId>>,
    policy: SlowConsumerPolicy,
    counters: Arc<Counters>,
    /// The other nodes ([`InProcess`] when there are none).
    backplane: Box<dyn Backplane>,
    /// The rooms' history on this node (`None`: history off, or kept by the backplane).
    history: Option<History>,
    /// The rooms' history as the backplane keeps it for every node (`None`: it keeps none).
    shared: Option<HistoryConfig>,
    /// Members recovering from the backplane's history, and what is held back for them.
    recovering: shared::Recovering,
    /// This hub, for answers that come back from the backplane's thread.
    me: Option<WeakAddr<Hub>>,
    /// Who is in each room, and the changes waiting to go out.
    presence: presence::Presence,
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
            history: None,
            shared: None,
            recovering: HashMap::new(),
            me: None,
            presence: presence::Presence::default(),
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
        self.take_held(id, room);
        self.presence_leave(id, room);
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
        let limit = crate::config::DEFAULT_PRESENCE_LIST_LIMIT;
        Self::launch_with_backplane(policy, counters, capacity, Box::new(InProcess), None, limit)
    }

    /// [`launch`](Self::launch) as one node of several, joined by `backplane`, keeping room
    /// history with `history` (a remote backplane keeps it: it answered
    /// [`keep_history`](Backplane::keep_history) `true` before this).
    pub fn launch_with_backplane(
        policy: SlowConsumerPolicy,
        counters: Arc<Counters>,
        capacity: usize,
        mut backplane: Box<dyn Backplane>,
        history: Option<HistoryConfig>,
        presence_list_limit: usize,
    ) -> (Addr<Hub>, HubSender) {
        let (tx, mut rx) = mpsc::channel(capacity);
        let sender = HubSender::new(tx, counters.clone());
        backplane.start(super::backplane::HubLink {
            hub: sender.clone(),
            counters: counters.clone(),
        });
        let addr = Hub::create(move |ctx| {
            ctx.add_stream(futures_util::stream::poll_fn(move |cx| rx.poll_recv(cx)));
            let mut hub = Hub::new(policy, counters);
            if backplane.is_remote() {
                hub.shared = history;
            } else {
                hub.history = history.map(History::new);
            }
            hub.backplane = backplane;
            hub.presence.list_limit = presence_list_limit;
            hub.me = Some(ctx.address().downgrade());
            if let Some(every) = hub.history.as_ref().map(History::sweep_every) {
                ctx.run_interval(every, |hub, _| hub.expire_history());
            }
            hub
        });
        (addr, sender)
    }

    fn connect(&mut self, id: SessionId, sink: MemberSink, who: Arc<Publisher>) {
        let member = Member {
            sink,
            rooms: HashSet::new(),
            who,
        };
        self.members.insert(id, member);
    }

    fn join(
        &mut self,
        id: SessionId,
        room: Arc<str>,
        reply: Option<JoinReply>,
        presence: (bool, Option<Arc<RawValue>>),
    ) {
        let Some(member) = self.members.get_mut(&id) else {
            return;
        };
        let who = member.who.clone();
        member.rooms.insert(room.clone());
        let reply_to = match (&member.sink, reply) {
            (MemberSink::Session { queue, .. }, Some(reply)) => Some((queue.clone(), reply)),
            _ => None,
        };
        let set = self.rooms.entry(room.clone()).or_default();
        let first = set.is_empty();
        let already = !set.insert(id);
        self.presence_join(id, &room, &who, presence);
        // With history, `joined` and what the member missed go now, in the hub's order: a
        // publish the hub takes after this join reaches the member after them. With the
        // backplane's history they go once it has read them (after the subscribe below).
        let mut recovering = None;
        let reply_to = match reply_to {
            Some((queue, reply)) if self.history.is_some() => {
                self.answer_join(id, &queue, &room, reply);
                None
            }
            Some((_, reply)) if self.shared.is_some() => {
                recovering = Some(reply);
                None
            }
            other => other.map(|(queue, reply)| (queue, joined(&room, reply.id, None))),
        };
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
        if let (Some(reply), Some(me)) = (recovering, self.me.clone()) {
            self.start_recovery(id, &room, (reply, already), me);
        }
    }

    fn leave(&mut self, id: SessionId, room: Arc<str>) {
        self.answer_unread_join(id, &room);
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
                if on_full_queue(self.policy, &self.counters) == FullQueue::Disconnect {
                    if let Some(member) = self.remove(id) {
                        member.sink.evict();
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
        self.counters.published.bump();
        if self.shared.is_some() {
            return self.publish_shared(msg);
        }
        let remote = self.backplane.is_remote();
        if !remote && self.history.is_none() && !self.rooms.contains_key(&msg.room) {
            return 0;
        }
        let timestamp = now_rfc3339();
        let now = std::time::Instant::now();
        let position = self
            .history
            .as_mut()
            .map(|h| h.next_position(&msg.room, now));
        let text = EnvelopeParts {
            kind: msg.event.as_deref().unwrap_or(RoomMessage::TYPE),
            room: Some(&msg.room),
            from: msg.from.as_ref().map(|p| &*p.from),
            session: msg.from.as_ref().and_then(|p| p.session.as_deref()),
            data: msg.data.as_deref(),
            timestamp: Some(&timestamp),
            offset: position.as_ref().map(|p| p.0),
            epoch: position.as_ref().map(|p| &*p.1),
            ..EnvelopeParts::default()
        }
        .encode();
        if let Some(history) = self.history.as_mut() {
            history.append(&msg.room, text.clone(), now);
            self.counters.history_bytes.set(history.bytes() as u64);
            self.counters.history_rooms.set(history.rooms() as u64);
        }
        let reached = self.fan_out(&msg.room, &text, None);
        if remote {
            self.publish_to_backplane(msg, &text, false);
        }
        reached
    }

    /// Hand `frame` of `msg` to the backplane, and answer its publisher (when it gave an `id`)
    /// once the backplane says whether it took it: `ack`, or `backplane_unavailable`. `shared`:
    /// the backplane keeps the room's history and delivers to this node's members too, so a
    /// publish it refused reached nobody.
    fn publish_to_backplane(&mut self, msg: &Publish, frame: &ByteString, shared: bool) {
        let reply = msg.reply_to.and_then(|(session, id)| {
            match self.members.get(&session).map(|m| &m.sink) {
                Some(MemberSink::Session { queue, .. }) => Some((queue.clone(), id)),
                _ => None,
            }
        });
        let counters = self.counters.clone();
        let room = msg.room.clone();
        let answer = move |result: Result<(), String>| {
            let frame = match result {
                Ok(()) => reply.as_ref().map(|(_, id)| {
                    let ack = EnvelopeParts {
                        kind: protocol::Ack::TYPE,
                        id: Some(*id),
                        ..EnvelopeParts::default()
                    };
                    Outbound::Text(ack.encode())
                }),
                Err(e) => {
                    counters.backplane_publish_errors.bump();
                    if shared {
                        tracing::warn!(%room, "publish not taken by the backplane, delivered to nobody: {e}");
                    } else {
                        tracing::warn!(%room, "publish not sent to other nodes: {e}");
                    }
                    reply
                        .as_ref()
                        .map(|(_, id)| backplane_error(*id, &e, shared))
                }
            };
            if let (Some(frame), Some((queue, _))) = (frame, reply.as_ref()) {
                offer_reply(queue, frame, &counters);
            }
        };
        self.backplane
            .publish(&msg.room, frame, Some(Box::new(answer)));
    }

    /// Offer `text` (at `offset` of the room's stream, when the backplane keeps it) to every
    /// local member of `room` under the slow-consumer policy, holding it back for members
    /// still recovering; answers how many queues took it.
    fn fan_out(&mut self, room: &Arc<str>, text: &ByteString, offset: Option<u64>) -> usize {
        // Who came and went goes out before what follows it (in order with the room's messages).
        self.flush_presence(room);
        let Some(ids) = self.rooms.get(room) else {
            return 0;
        };
        let mut holding = self.recovering.get_mut(room).zip(self.shared.as_ref());
        let len = text.len();
        let frame = Outbound::Text(text.clone());
        let mut copies = Copies::new(text, ids.len());
        let mut reached = 0;
        let mut max_depth = Depth::default();
        let mut evicted = Vec::new();
        let mut wakes = Wakes::new();
        for id in ids {
            let Some(member) = self.members.get(id) else {
                continue;
            };
            if let Some((held, config)) = holding.as_mut() {
                if shared::keep_back(held, config, *id, (offset, text), &self.counters) {
                    continue;
                }
            }
            let frame = match &member.sink {
                MemberSink::Session { queue, .. } => queue
                    .home_thread()
                    .map_or(&frame, |thread| copies.for_thread(thread)),
                MemberSink::Actor(_) => &frame,
            };
            match member.sink.offer(frame, &mut wakes) {
                Offer::Taken(depth) => {
                    reached += 1;
                    max_depth.frames = max_depth.frames.max(depth.frames);
                    max_depth.bytes = max_depth.bytes.max(depth.bytes);
                }
                Offer::Full => match on_full_queue(self.policy, &self.counters) {
                    FullQueue::Dropped => {
                        tracing::debug!(session = id, %room, "queue full; message dropped");
                    }
                    FullQueue::Disconnect => evicted.push((*id, true)),
                },
                Offer::Gone => evicted.push((*id, false)),
            }
        }
        wakes.wake_all();
        if holding.is_some_and(|(held, _)| held.is_empty()) {
            self.recovering.remove(room);
        }
        self.counters
            .delivered_many(reached as u64, (len * reached) as u64, max_depth);
        for (id, slow) in evicted {
            if let Some(member) = self.remove(id) {
                if slow {
                    tracing::warn!(session = id, "slow consumer: queue full; disconnecting");
                    // At most one per member: it is forgotten here.
                    member.sink.evict();
                }
            }
        }
        reached
    }
}

/// The copies of one broadcast frame, one per worker thread: every member's queue holds a
/// reference to its thread's copy, released by that worker once written, so with one shared
/// copy the workers would contend for its reference count on every member. With more than one
/// member the frame is registered for permessage-deflate, so that it is compressed once for
/// every member whatever the thread (see `outbox::share`).
struct Copies<'a> {
    text: &'a ByteString,
    registered: outbox::SharedFrame,
    by_thread: Vec<(std::thread::ThreadId, Outbound)>,
}

impl<'a> Copies<'a> {
    fn new(text: &'a ByteString, members: usize) -> Self {
        let registered = if members > 1 {
            outbox::share(text.as_bytes())
        } else {
            outbox::SharedFrame::none()
        };
        Self {
            text,
            registered,
            by_thread: Vec::new(),
        }
    }

    /// The copy for the worker thread `thread`, made on first use.
    fn for_thread(&mut self, thread: std::thread::ThreadId) -> &Outbound {
        let i = match self.by_thread.iter().position(|(t, _)| *t == thread) {
            Some(i) => i,
            None => {
                let copy = ByteString::from(String::from(&**self.text));
                self.registered.add_copy(copy.as_bytes());
                self.by_thread.push((thread, Outbound::Text(copy)));
                self.by_thread.len() - 1
            }
        };
        &self.by_thread[i].1
    }
}
