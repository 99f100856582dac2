//! The receiving half of the Redis backplane: which rooms this node wants, one subscriber
//! connection that converges on them, and the bounded way from that connection to the hub.
//!
//! **Subscriptions cannot diverge.** The hub does not queue subscribe and unsubscribe
//! operations (a full queue would have to refuse one, and a refused unsubscribe leaks a
//! channel forever): it writes the set of rooms it wants ([`Wanted`], one entry per room with
//! local members, so bounded by them) and wakes the task. The task compares that set with what
//! it has asked Redis for on the current connection and sends the difference; a join and a
//! leave of one room in between cancel out and never reach Redis. After a reconnect the
//! connection starts empty and the same comparison subscribes every wanted room again. So
//! whatever the interleaving of joins, leaves and reconnects, once the task has caught up the
//! node's channels in Redis are exactly the rooms with local members.
//!
//! **Nothing unbounded between the socket and the hub.** The task reads the socket itself
//! ([`resp`](super::resp)), on the backplane's own thread, as fast as Redis sends; each
//! message goes into a buffer bounded by count and by bytes ([`RedisConfig::buffer`],
//! [`RedisConfig::buffer_bytes`]), or, when that is full because the hub is slower than the
//! other nodes, is dropped and counted in `backplane_dropped`. A message larger than the
//! byte bound is refused at its header.
//!
//! **One publisher's order.** Every publish carries its node's incarnation and a sequence
//! number (see the module docs of [`redis`](super)); a message older than one already passed
//! on from the same node is dropped and counted (it can only be the tail of a publisher's
//! connection that timed out, delivered by Redis after what the new connection sent).

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use bytestring::ByteString;
use redis::ConnectionInfo;
use tokio::sync::{mpsc, Notify};
use tokio::time::Instant;

use super::resp::{self, Reply};
use super::RedisConfig;
use crate::server::backplane::Done;
use crate::server::hub::{Command, Counters, HubSender};

/// Most channels named in one SUBSCRIBE or UNSUBSCRIBE.
const CHANNELS_PER_COMMAND: usize = 256;
/// Nodes whose last sequence number is remembered; beyond, the memory starts again (order
/// is then not checked for one message per node).
const MAX_NODES: usize = 4096;

/// The rooms this node wants to receive, written by the hub, read by the task.
#[derive(Default)]
pub(super) struct Wanted {
    /// Channel -> the `done`s of joins waiting for the subscription to hold.
    rooms: Mutex<HashMap<String, Vec<Done>>>,
    changed: Notify,
}

impl Wanted {
    /// The first local member joined: want `channel`; `done` is told once it is subscribed.
    pub(super) fn add(&self, channel: String, done: Done) {
        self.lock().entry(channel).or_default().push(done);
        self.changed.notify_one();
    }

    /// The last local member left: stop wanting `channel`. Joins still waiting are told `Ok`
    /// (their members left already).
    pub(super) fn remove(&self, channel: &str) {
        let waiting = self.lock().remove(channel);
        self.changed.notify_one();
        for done in waiting.into_iter().flatten() {
            done(Ok(()));
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Vec<Done>>> {
        // A panic in a `done` cannot leave the map half-updated: take it over.
        self.rooms.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The `done`s waiting on `channel`, taken, when it is still wanted.
    fn take_waiting(&self, channel: &str) -> Vec<Done> {
        self.lock()
            .get_mut(channel)
            .map(std::mem::take)
            .unwrap_or_default()
    }

    /// Tell every waiting join why it is not subscribed yet (they stay wanted).
    fn fail_waiting(&self, why: &str) {
        let waiting: Vec<Done> = self.lock().values_mut().flat_map(std::mem::take).collect();
        for done in waiting {
            done(Err(why.to_owned()));
        }
    }
}

/// A message from Redis on its way to the hub.
struct Inbound {
    room: Arc<str>,
    frame: ByteString,
}

/// The subscribing task.
pub(super) struct Subscriber {
    info: ConnectionInfo,
    config: RedisConfig,
    probe_every: Duration,
    wanted: Arc<Wanted>,
    counters: Arc<Counters>,
    /// This node's id: its own publishes coming back are dropped.
    node: Bytes,
    /// Towards the hub, bounded by count; `queued` bounds it by bytes.
    inbound: mpsc::Sender<Inbound>,
    queued: Arc<AtomicUsize>,
    /// Per node: (incarnation, last sequence number passed on).
    last: HashMap<Bytes, (Bytes, u64)>,
}

/// Why [`Subscriber::serve`] returned.
enum Ended {
    Stopped,
    Lost(String),
}

impl Subscriber {
    /// The task and the forwarder that moves its buffer into the hub's queue.
    pub(super) fn new(
        info: ConnectionInfo,
        config: RedisConfig,
        probe_every: Duration,
        wanted: Arc<Wanted>,
        counters: Arc<Counters>,
        hub: HubSender,
    ) -> (Subscriber, impl std::future::Future<Output = ()>) {
        let (tx, rx) = mpsc::channel(config.buffer);
        let queued = Arc::new(AtomicUsize::new(0));
        let node = Bytes::from(config.node_id.clone().into_bytes());
        let forward = forward(rx, hub, queued.clone());
        let task = Subscriber {
            info,
            config,
            probe_every,
            wanted,
            counters,
            node,
            inbound: tx,
            queued,
            last: HashMap::new(),
        };
        (task, forward)
    }

    /// Run until the hub is gone.
    pub(super) async fn run(mut self) {
        let url = self.config.url.clone();
        let mut warned = false;
        loop {
            match resp::connect(&self.info, self.config.buffer_bytes, self.config.timeout).await {
                Ok((reader, writer)) => {
                    if warned {
                        tracing::info!("receiving rooms from Redis at {url} again");
                    }
                    match self.serve(reader, writer).await {
                        Ended::Stopped => return,
                        Ended::Lost(why) => {
                            self.counters
                                .backplane_disconnects
                                .fetch_add(1, Ordering::Relaxed);
                            self.counters.backplane_channels.store(0, Ordering::Relaxed);
                            tracing::warn!(
                                "lost the Redis connection for receiving rooms ({why}); local \
                                 members only until it is back"
                            );
                            warned = true;
                        }
                    }
                }
                Err(e) => {
                    if !warned {
                        tracing::warn!(
                            "cannot receive rooms from Redis at {url}: {e}; local members \
                             only, retrying"
                        );
                        warned = true;
                    }
                }
            }
            // Down: joins are told at once (and subscribed when Redis is back).
            let why = format!("Redis at {url} is unreachable; subscribed when it is back");
            let until = Instant::now() + self.probe_every;
            loop {
                self.wanted.fail_waiting(&why);
                if self.inbound.is_closed() {
                    return;
                }
                tokio::select! {
                    _ = self.wanted.changed.notified() => {}
                    _ = tokio::time::sleep_until(until) => break,
                }
            }
        }
    }

    /// Keep one connection subscribed to the wanted rooms and pass their messages on, until it
    /// fails or the hub is gone.
    async fn serve(&mut self, mut reader: resp::Reader, mut writer: resp::Writer) -> Ended {
        let timeout = self.config.timeout;
        // What this connection asked Redis for: after Redis has read everything sent, its
        // subscriptions are exactly these.
        let mut asked: HashSet<String> = HashSet::new();
        // SUBSCRIBEs of a channel not yet confirmed (joins are told when the last one is).
        let mut confirming: HashMap<String, u32> = HashMap::new();
        // Replies owed by Redis; while any, silence for `timeout` means it is gone.
        let mut owed = 0usize;
        let mut moved = Instant::now();
        // Whether the wanted rooms may have changed since they were last compared.
        let mut changed = true;
        let ended = loop {
            let (subscribe, unsubscribe) = if !std::mem::take(&mut changed) {
                (Vec::new(), Vec::new())
            } else {
                let wanted = self.wanted.lock();
                let subscribe: Vec<String> = wanted
                    .keys()
                    .filter(|c| !asked.contains(*c))
                    .cloned()
                    .collect();
                let unsubscribe: Vec<String> = asked
                    .iter()
                    .filter(|c| !wanted.contains_key(*c))
                    .cloned()
                    .collect();
                (subscribe, unsubscribe)
            };
            if !subscribe.is_empty() || !unsubscribe.is_empty() {
                let mut out = Vec::new();
                for (command, channels) in
                    [("SUBSCRIBE", &subscribe), ("UNSUBSCRIBE", &unsubscribe)]
                {
                    for chunk in channels.chunks(CHANNELS_PER_COMMAND) {
                        redis::cmd(command)
                            .arg(chunk)
                            .write_packed_command(&mut out);
                    }
                }
                if owed == 0 {
                    moved = Instant::now();
                }
                owed += subscribe.len() + unsubscribe.len();
                for channel in unsubscribe {
                    asked.remove(&channel);
                }
                for channel in subscribe {
                    *confirming.entry(channel.clone()).or_default() += 1;
                    asked.insert(channel);
                }
                match tokio::time::timeout(timeout, writer.write_all(&out)).await {
                    Ok(Ok(())) => {}
                    Ok(Err(e)) => break Ended::Lost(e.to_string()),
                    Err(_) => break Ended::Lost(format!("could not write within {timeout:?}")),
                }
            }
            tokio::select! {
                biased;
                reply = reader.next() => {
                    let reply = match reply {
                        Ok(reply) => reply,
                        Err(e) => break Ended::Lost(e.to_string()),
                    };
                    moved = Instant::now();
                    match self.on_reply(reply, &asked, &mut confirming) {
                        Ok(confirms) => owed = owed.saturating_sub(confirms),
                        Err(why) => break Ended::Lost(why),
                    }
                }
                _ = self.wanted.changed.notified() => changed = true,
                _ = tokio::time::sleep_until(moved + timeout), if owed > 0 => {
                    break Ended::Lost(format!(
                        "no answer for {timeout:?} with {owed} answers owed"
                    ));
                }
                _ = tokio::time::sleep_until(moved + timeout), if owed == 0 => {
                    // Quiet for a while: ask, so that a link that silently stopped is noticed.
                    if let Err(e) = writer.write_all(&redis::cmd("PING").get_packed_command()).await {
                        break Ended::Lost(e.to_string());
                    }
                    owed += 1;
                    moved = Instant::now();
                }
                _ = self.inbound.closed() => break Ended::Stopped,
            }
        };
        writer.abandon();
        ended
    }

    /// Handle one reply; answers how many owed answers it settles, or why the connection is
    /// no longer usable.
    fn on_reply(
        &mut self,
        reply: Reply,
        asked: &HashSet<String>,
        confirming: &mut HashMap<String, u32>,
    ) -> Result<usize, String> {
        let Reply::Array(parts) = reply else {
            return match reply {
                Reply::Error(e) => Err(format!("Redis refused a subscription command: {e}")),
                other => Err(format!("Redis sent {other:?} to a subscriber")),
            };
        };
        let mut parts = parts.into_iter();
        let kind = parts.next();
        let kind = kind.as_ref().and_then(Reply::as_bytes).map(|b| &b[..]);
        match kind {
            Some(b"message") => {
                if let (Some(Reply::Bulk(channel)), Some(Reply::Bulk(payload))) =
                    (parts.next(), parts.next())
                {
                    self.on_message(&channel, payload, asked);
                }
                Ok(0)
            }
            Some(b"subscribe") => {
                let channel = parts.next();
                let count = parts.next();
                if let Some(Reply::Int(n)) = count {
                    self.counters
                        .backplane_channels
                        .store(n.max(0) as u64, Ordering::Relaxed);
                }
                let Some(channel) = channel
                    .as_ref()
                    .and_then(Reply::as_bytes)
                    .and_then(|c| std::str::from_utf8(c).ok())
                else {
                    return Ok(1);
                };
                let left = confirming.get_mut(channel).map(|n| {
                    *n = n.saturating_sub(1);
                    *n
                });
                if left == Some(0) {
                    confirming.remove(channel);
                    if asked.contains(channel) {
                        for done in self.wanted.take_waiting(channel) {
                            done(Ok(()));
                        }
                    }
                }
                Ok(1)
            }
            Some(b"unsubscribe") => {
                if let Some(Reply::Int(n)) = parts.nth(1) {
                    self.counters
                        .backplane_channels
                        .store(n.max(0) as u64, Ordering::Relaxed);
                }
                Ok(1)
            }
            Some(b"pong") => Ok(1),
            _ => Ok(0),
        }
    }

    /// A message on `channel`: check it, then into the buffer towards the hub, or dropped and
    /// counted when the buffer is full.
    fn on_message(&mut self, channel: &[u8], payload: Bytes, asked: &HashSet<String>) {
        let Some(room) = std::str::from_utf8(channel)
            .ok()
            .filter(|c| asked.contains(*c))
            .and_then(|c| c.strip_prefix(self.config.channel_prefix.as_str()))
        else {
            return; // a room left since: nobody here wants it
        };
        let Some(split) = payload.iter().position(|b| *b == b'\n') else {
            tracing::debug!(room, "a Redis message without a node id; ignored");
            return;
        };
        let mut header = payload[..split].split(|b| *b == b' ');
        let node = header.next().unwrap_or_default();
        if node == &self.node[..] {
            return; // our own publish: our members had it already
        }
        let incarnation = header.next();
        let seq = header
            .next()
            .and_then(|s| std::str::from_utf8(s).ok())
            .and_then(|s| s.parse::<u64>().ok());
        if let (Some(incarnation), Some(seq)) = (incarnation, seq) {
            if !self.in_order(node, incarnation, seq) {
                self.counters
                    .backplane_dropped
                    .fetch_add(1, Ordering::Relaxed);
                tracing::debug!(
                    room,
                    seq,
                    "a message older than one already passed on; dropped"
                );
                return;
            }
        }
        let frame = payload.slice(split + 1..);
        let Ok(frame) = ByteString::try_from(frame) else {
            tracing::debug!(room, "a Redis message that is not UTF-8; ignored");
            return;
        };
        let len = frame.len();
        let before = self.queued.fetch_add(len, Ordering::AcqRel);
        let fits = before == 0 || before + len <= self.config.buffer_bytes;
        let msg = Inbound {
            room: Arc::from(room),
            frame,
        };
        if !fits || self.inbound.try_send(msg).is_err() {
            self.queued.fetch_sub(len, Ordering::AcqRel);
            self.counters
                .backplane_dropped
                .fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Whether `seq` comes after the last one passed on from `node` (and remember it).
    fn in_order(&mut self, node: &[u8], incarnation: &[u8], seq: u64) -> bool {
        if let Some((inc, last)) = self.last.get_mut(node) {
            if &inc[..] == incarnation {
                if seq <= *last {
                    return false;
                }
                *last = seq;
                return true;
            }
        }
        if self.last.len() >= MAX_NODES {
            self.last.clear();
        }
        // Copies: a slice would keep the whole message alive.
        self.last.insert(
            Bytes::copy_from_slice(node),
            (Bytes::copy_from_slice(incarnation), seq),
        );
        true
    }
}

/// Move messages from the buffer into the hub's queue, in order, waiting for room there.
async fn forward(mut rx: mpsc::Receiver<Inbound>, hub: HubSender, queued: Arc<AtomicUsize>) {
    while let Some(msg) = rx.recv().await {
        let len = msg.frame.len();
        let sent = hub
            .send(Command::Remote {
                room: msg.room,
                frame: msg.frame,
            })
            .await;
        queued.fetch_sub(len, Ordering::AcqRel);
        if sent.is_err() {
            return; // the hub is gone
        }
    }
}
