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
//! [`RedisConfig::buffer_bytes`]; the bytes stay counted until the hub has fanned the message
//! out, so the hub's queue is included), or, when that is full because the hub is slower than
//! the other nodes, is dropped and counted in `backplane_dropped`. A message larger than the
//! byte bound is refused at its header.
//!
//! **One publisher's order.** Every publish carries its node's incarnation and a sequence
//! number (see the module docs of [`redis`](super)); a message older than one already passed
//! on from the same node is dropped and counted (it can only be the tail of a publisher's
//! connection that timed out, delivered by Redis after what the new connection sent).

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use bytestring::ByteString;
use redis::ConnectionInfo;
use tokio::sync::mpsc;
use tokio::time::Instant;

use super::resp::{self, Reply};
use super::subscriptions::{Asked, Wanted};
use super::RedisConfig;
use crate::server::backplane::{HubLink, Receipt};
use crate::server::counters::Counters;

/// Nodes whose last sequence number is remembered; beyond, the memory starts again (order
/// is then not checked for one message per node).
const MAX_NODES: usize = 4096;

/// A message from Redis on its way to the hub, its bytes counted until the hub is done.
struct Inbound {
    room: Arc<str>,
    frame: ByteString,
    /// Its offset in the room's stream (history in Redis).
    offset: Option<u64>,
    /// A `presence_diff` for the room's presence listeners only.
    presence: bool,
    receipt: Receipt,
}

/// The subscribing task.
pub(super) struct Subscriber {
    info: ConnectionInfo,
    config: RedisConfig,
    probe_every: Duration,
    wanted: Arc<Wanted>,
    counters: Arc<Counters>,
    /// This node's id: its own publishes coming back are dropped (unless `history`).
    node: Bytes,
    /// Whether Redis keeps the rooms' history: every publication then comes through Redis,
    /// this node's own included, with its offset.
    history: bool,
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
        link: HubLink,
        history: bool,
    ) -> (Subscriber, impl std::future::Future<Output = ()>) {
        let (tx, rx) = mpsc::channel(config.buffer);
        let queued = Arc::new(AtomicUsize::new(0));
        let node = Bytes::from(config.node_id.clone().into_bytes());
        let counters = link.counters.clone();
        let forward = forward(rx, link);
        let task = Subscriber {
            info,
            config,
            probe_every,
            wanted,
            counters,
            node,
            history,
            inbound: tx,
            queued,
            last: HashMap::new(),
        };
        (task, forward)
    }

    /// Run until the hub is gone.
    pub(super) async fn run(mut self) {
        let url = self.config.url.clone();
        let why = format!("Redis at {url} is unreachable; subscribed when it is back");
        // Whether Redis has been found unreachable (joins are then answered at once, also
        // while a new connection is tried); before the first attempt they wait for it.
        let mut down = false;
        loop {
            let link = {
                let connecting =
                    resp::connect(&self.info, self.config.buffer_bytes, self.config.timeout);
                tokio::pin!(connecting);
                loop {
                    if down {
                        self.wanted.fail_waiting(&why);
                    }
                    tokio::select! {
                        link = &mut connecting => break link,
                        _ = self.wanted.changed.notified(), if down => {}
                        _ = self.inbound.closed() => return,
                    }
                }
            };
            match link {
                Ok((reader, writer)) => {
                    if std::mem::take(&mut down) {
                        tracing::info!("receiving rooms from Redis at {url} again");
                    }
                    let ended = self.serve(reader, writer).await;
                    self.wanted.unconfirm_all();
                    match ended {
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
                            down = true;
                        }
                    }
                }
                Err(e) => {
                    if !down {
                        tracing::warn!(
                            "cannot receive rooms from Redis at {url}: {e}; local members \
                             only, retrying"
                        );
                        down = true;
                    }
                }
            }
            // Down: joins are told at once (and subscribed when Redis is back).
            let until = Instant::now() + self.probe_every;
            loop {
                self.wanted.fail_waiting(&why);
                tokio::select! {
                    _ = self.wanted.changed.notified() => {}
                    _ = tokio::time::sleep_until(until) => break,
                    _ = self.inbound.closed() => return,
                }
            }
        }
    }

    /// Keep one connection subscribed to the wanted rooms and pass their messages on, until it
    /// fails or the hub is gone.
    async fn serve(&mut self, mut reader: resp::Reader, mut writer: resp::Writer) -> Ended {
        let timeout = self.config.timeout;
        let mut asked = Asked::default();
        // Replies owed by Redis; while any, silence for `timeout` means it is gone.
        let mut owed = 0usize;
        let mut moved = Instant::now();
        // Whether the wanted rooms may have changed since they were last compared, and whether
        // to compare them all (the first time on a connection that asked for nothing yet).
        let mut changed = true;
        let mut all = true;
        let ended = loop {
            if std::mem::take(&mut changed) {
                let (subscribe, unsubscribe) = self
                    .wanted
                    .difference(&asked.channels, std::mem::take(&mut all));
                let out = asked.ask(subscribe, unsubscribe);
                if !out.commands.is_empty() {
                    if owed == 0 {
                        moved = Instant::now();
                    }
                    owed += out.answers;
                    match tokio::time::timeout(timeout, writer.write_all(&out.commands)).await {
                        Ok(Ok(())) => {}
                        Ok(Err(e)) => break Ended::Lost(e.to_string()),
                        Err(_) => break Ended::Lost(format!("could not write within {timeout:?}")),
                    }
                }
            }
            // Not biased: a flood of messages must not keep the wanted rooms from being read.
            tokio::select! {
                reply = reader.next() => {
                    let reply = match reply {
                        Ok(reply) => reply,
                        Err(e) => break Ended::Lost(e.to_string()),
                    };
                    moved = Instant::now();
                    match self.on_reply(reply, &mut asked) {
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
    fn on_reply(&mut self, reply: Reply, asked: &mut Asked) -> Result<usize, String> {
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
                    self.on_message(&channel, payload, &asked.channels);
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
                if asked.confirmed(channel) {
                    for done in self.wanted.take_waiting(channel) {
                        done(Ok(()));
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
        let incarnation = header.next();
        let number = |s: Option<&[u8]>| {
            s.and_then(|s| std::str::from_utf8(s).ok())
                .and_then(|s| s.parse::<u64>().ok())
        };
        let seq = number(header.next());
        // A fourth field is the offset (history in Redis), or `p`: a presence diff.
        let fourth = header.next();
        let presence = fourth == Some(&b"p"[..]);
        let offset = if presence { None } else { number(fourth) };
        if node == &self.node[..] && (!self.history || presence) {
            return; // our own publish: our members had it already
        }
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
        // Only this task adds to `queued` (the hub takes away): checking, then adding, is
        // exact.
        let len = frame.len();
        let before = self.queued.load(Ordering::Acquire);
        let fits = before == 0 || before + len <= self.config.buffer_bytes;
        // Dropped with the message, or by the hub once it has fanned it out.
        let msg = fits.then(|| Inbound {
            room: Arc::from(room),
            frame,
            offset,
            presence,
            receipt: Receipt::new(len, self.queued.clone()),
        });
        if msg.is_none_or(|msg| self.inbound.try_send(msg).is_err()) {
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

/// Move messages from the buffer into the hub's queue, in order, waiting for room there. Their
/// bytes stay counted in `buffer_bytes` until the hub has fanned them out, so the hub's queue
/// is bounded by this node's bytes too.
async fn forward(mut rx: mpsc::Receiver<Inbound>, link: HubLink) {
    while let Some(msg) = rx.recv().await {
        let receipt = Some(msg.receipt);
        let sent = match msg.offset {
            _ if msg.presence => link.deliver_presence(msg.room, msg.frame, receipt).await,
            Some(offset) => link.deliver_at(msg.room, msg.frame, offset, receipt).await,
            None => link.deliver(msg.room, msg.frame, receipt).await,
        };
        if sent.is_err() {
            return; // the hub is gone
        }
    }
}
