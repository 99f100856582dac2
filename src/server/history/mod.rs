//! Room history on one node: each room's latest publications with their stream positions, kept
//! by the hub (which assigns the positions, so the offset order is the delivery order), and
//! what a recovery or a `history` request reads from it.
//!
//! Bounds, all enforced at each publication: [`HistoryConfig::size`] and
//! [`HistoryConfig::max_bytes`] per room, [`HistoryConfig::total_bytes`] for every room together
//! (the oldest publications of the least recently published rooms go first), and
//! [`HistoryConfig::ttl`] after a room's last publication (swept by the hub's timer). A stream
//! whose publications expired while its room still has members keeps its position, so a member
//! that missed nothing recovers; one without members is forgotten, and its room starts a new
//! epoch.
//!
//! The stored publication is the encoded frame the hub shares with the members (a reference
//! count, not a copy).

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytestring::ByteString;
use serde::Deserialize;

use crate::config::HistoryConfig;

/// Bytes a stored publication costs beyond its frame (its offset and the queue slot).
const ENTRY_OVERHEAD: usize = 32;
/// Bytes a room's stream costs beyond its publications (the map entries, epoch and name).
const STREAM_OVERHEAD: usize = 160;

/// A position in a room's stream, as a client sends it in `since`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Position {
    /// The last offset the client has.
    pub offset: u64,
    /// The epoch that offset counts in.
    pub epoch: String,
}

/// Why a recovery could not give everything that was missed (the `reason` of
/// `"recovered":false`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Unrecovered {
    /// The room's history was lost since (a restart, an expired stream): another epoch.
    EpochChanged,
    /// Some missed publications are no longer kept (size, bytes, budget or age).
    TooOld,
    /// More were missed than `recover_limit`.
    TooMany,
    /// The history could not be read (its store is unreachable).
    // Answered by a history kept outside the hub (a backplane's), which this node reaches.
    #[allow(dead_code)]
    Unavailable,
}

impl Unrecovered {
    /// The `reason` on the wire.
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Unrecovered::EpochChanged => "epoch_changed",
            Unrecovered::TooOld => "too_old",
            Unrecovered::TooMany => "too_many",
            Unrecovered::Unavailable => "unavailable",
        }
    }
}

/// One room's stream.
struct Stream {
    epoch: Arc<str>,
    /// The offset of the room's last publication (0 before the first).
    last: u64,
    /// Kept publications, oldest first, with consecutive offsets ending at `last`.
    entries: VecDeque<(u64, ByteString)>,
    /// Bytes of `entries`, overhead included.
    bytes: usize,
    /// Its key in [`History::by_age`] (and in `evictable` while it has entries).
    tick: u64,
    /// When its publications expire.
    expires: Instant,
}

/// Every room's stream on this node, and the bookkeeping that keeps them bounded.
pub(crate) struct History {
    config: HistoryConfig,
    streams: HashMap<Arc<str>, Stream>,
    /// Every stream by last publication (oldest first): expiry order, since all share one TTL.
    by_age: BTreeMap<u64, Arc<str>>,
    /// Streams holding publications, by last publication: the budget's eviction order.
    evictable: BTreeMap<u64, Arc<str>>,
    tick: u64,
    /// Bytes of every stream, publications and overhead.
    bytes: usize,
    /// Makes this node's epochs differ from another run's.
    epoch_base: u64,
    epochs: u64,
}

/// What a read of a stream found: the position now and the publications asked for.
pub(crate) struct Read {
    /// The room's last offset.
    pub(crate) offset: u64,
    /// Its epoch.
    pub(crate) epoch: Arc<str>,
    /// The publications, oldest first.
    pub(crate) publications: Vec<ByteString>,
    /// Whether `publications` is every publication after the position asked from (or, with
    /// none, since the stream began), up to `offset`.
    pub(crate) complete: bool,
}

impl History {
    /// An empty history bounded by `config`.
    pub(crate) fn new(config: HistoryConfig) -> Self {
        Self {
            config,
            streams: HashMap::new(),
            by_age: BTreeMap::new(),
            evictable: BTreeMap::new(),
            tick: 0,
            bytes: 0,
            epoch_base: fastrand::u64(..),
            epochs: 0,
        }
    }

    /// The configuration.
    pub(crate) fn config(&self) -> &HistoryConfig {
        &self.config
    }

    /// Bytes held now, publications and bookkeeping.
    pub(crate) fn bytes(&self) -> usize {
        self.bytes
    }

    /// Rooms with a stream now.
    pub(crate) fn rooms(&self) -> usize {
        self.streams.len()
    }

    /// The position the next publication to `room` gets, and its epoch (the stream is made
    /// when the room has none).
    pub(crate) fn next_position(&mut self, room: &Arc<str>, now: Instant) -> (u64, Arc<str>) {
        let stream = self.stream(room, now);
        (stream.last + 1, stream.epoch.clone())
    }

    /// Store `frame`, the publication at the position [`next_position`](Self::next_position)
    /// answered, and apply every bound.
    pub(crate) fn append(&mut self, room: &Arc<str>, frame: ByteString, now: Instant) {
        let ttl = self.config.ttl;
        let (size, max_bytes) = (self.config.size, self.config.max_bytes);
        self.tick += 1;
        let tick = self.tick;
        let Some(stream) = self.streams.get_mut(room) else {
            return;
        };
        self.by_age.remove(&stream.tick);
        self.evictable.remove(&stream.tick);
        stream.tick = tick;
        stream.expires = now + ttl;
        stream.last += 1;
        let cost = frame.len() + ENTRY_OVERHEAD;
        stream.entries.push_back((stream.last, frame));
        stream.bytes += cost;
        self.bytes += cost;
        while stream.entries.len() > size || stream.bytes - STREAM_OVERHEAD - room.len() > max_bytes
        {
            let Some((_, old)) = stream.entries.pop_front() else {
                break;
            };
            stream.bytes -= old.len() + ENTRY_OVERHEAD;
            self.bytes -= old.len() + ENTRY_OVERHEAD;
        }
        self.by_age.insert(tick, room.clone());
        if !stream.entries.is_empty() {
            self.evictable.insert(tick, room.clone());
        }
        self.keep_to_budget();
    }

    /// The stream of `room`, made (with a new epoch) when it has none.
    fn stream(&mut self, room: &Arc<str>, now: Instant) -> &mut Stream {
        let tick = self.tick + 1;
        let epoch = self.epochs + 1;
        let (base, ttl) = (self.epoch_base, self.config.ttl);
        let mut made = None;
        let stream = self.streams.entry(room.clone()).or_insert_with(|| {
            let bytes = STREAM_OVERHEAD + room.len();
            made = Some(bytes);
            Stream {
                epoch: format!("{base:x}-{epoch:x}").into(),
                last: 0,
                entries: VecDeque::new(),
                bytes,
                tick,
                expires: now + ttl,
            }
        });
        if let Some(bytes) = made {
            self.tick = tick;
            self.epochs = epoch;
            self.bytes += bytes;
            self.by_age.insert(tick, room.clone());
        }
        stream
    }

    /// The position of `room` now (made when it has none: a room joined before its first
    /// publication gets its epoch at once).
    pub(crate) fn position(&mut self, room: &Arc<str>, now: Instant) -> (u64, Arc<str>) {
        let stream = self.stream(room, now);
        (stream.last, stream.epoch.clone())
    }

    /// What a member that has `since` missed of `room`: every publication after it, or why not.
    pub(crate) fn recover(
        &mut self,
        room: &Arc<str>,
        since: &Position,
        now: Instant,
    ) -> (Read, Option<Unrecovered>) {
        let limit = self.config.recover_limit;
        let stream = self.stream(room, now);
        let mut read = Read {
            offset: stream.last,
            epoch: stream.epoch.clone(),
            publications: Vec::new(),
            complete: false,
        };
        // A position this stream never had (offset ahead of it) is another history's too.
        if *stream.epoch != *since.epoch || since.offset > stream.last {
            return (read, Some(Unrecovered::EpochChanged));
        }
        let missed = stream.last - since.offset;
        if missed > limit as u64 {
            return (read, Some(Unrecovered::TooMany));
        }
        let first_kept = stream.entries.front().map_or(stream.last + 1, |e| e.0);
        if missed > 0 && first_kept > since.offset + 1 {
            return (read, Some(Unrecovered::TooOld));
        }
        read.publications = after(stream, since.offset, limit);
        read.complete = true;
        (read, None)
    }

    /// A `history` answer: at most `limit` publications of `room` after `since`, or the latest
    /// `limit` without one (or with one of another epoch), oldest first.
    pub(crate) fn read(
        &mut self,
        room: &Arc<str>,
        since: Option<&Position>,
        limit: usize,
        now: Instant,
    ) -> Read {
        let stream = self.stream(room, now);
        let first_kept = stream.entries.front().map_or(stream.last + 1, |e| e.0);
        let from = match since {
            Some(p) if *p.epoch == *stream.epoch && p.offset <= stream.last => p.offset,
            // The latest `limit`: from the start of the stream as far as it is kept.
            _ => stream.last.saturating_sub(limit as u64).max(first_kept - 1),
        };
        let publications = after(stream, from, limit);
        // Whether the list starts right after what the client asked from.
        let starts_right = match since {
            Some(p) if *p.epoch == *stream.epoch && p.offset <= stream.last => {
                from + 1 >= first_kept || from == stream.last
            }
            Some(_) => false,
            None => from == 0,
        };
        let upto = from.max(first_kept - 1) + publications.len() as u64;
        Read {
            offset: stream.last,
            epoch: stream.epoch.clone(),
            complete: starts_right && upto == stream.last,
            publications,
        }
    }

    /// Forget what expired by `now`: publications `ttl` after their room's last one; the whole
    /// stream when `has_members` says the room has none here.
    pub(crate) fn expire(&mut self, now: Instant, has_members: impl Fn(&str) -> bool) {
        let ttl = self.config.ttl;
        while let Some((&tick, room)) = self.by_age.first_key_value() {
            let Some(stream) = self.streams.get_mut(room) else {
                self.by_age.remove(&tick);
                continue;
            };
            if stream.expires > now {
                break;
            }
            let room = room.clone();
            self.by_age.remove(&tick);
            self.evictable.remove(&tick);
            let freed: usize = stream.bytes - STREAM_OVERHEAD - room.len();
            self.bytes -= freed;
            stream.entries = VecDeque::new();
            stream.bytes -= freed;
            if has_members(&room) {
                // Keep the position; look again a TTL later.
                self.tick += 1;
                stream.tick = self.tick;
                stream.expires = now + ttl;
                self.by_age.insert(self.tick, room);
            } else {
                self.bytes -= stream.bytes;
                self.streams.remove(&room);
            }
        }
    }

    /// Drop the oldest publications of the least recently published rooms until every stream
    /// together is within `total_bytes` (bookkeeping alone is not evicted: it expires).
    fn keep_to_budget(&mut self) {
        while self.bytes > self.config.total_bytes {
            let Some((&tick, room)) = self.evictable.first_key_value() else {
                return;
            };
            let Some(stream) = self.streams.get_mut(room) else {
                self.evictable.remove(&tick);
                continue;
            };
            match stream.entries.pop_front() {
                Some((_, old)) => {
                    stream.bytes -= old.len() + ENTRY_OVERHEAD;
                    self.bytes -= old.len() + ENTRY_OVERHEAD;
                }
                None => {
                    self.evictable.remove(&tick);
                }
            }
            if stream.entries.is_empty() {
                self.evictable.remove(&tick);
            }
        }
    }

    /// How often the hub should sweep for expired history: a quarter of the TTL, between 10 ms
    /// and 1 s.
    pub(crate) fn sweep_every(&self) -> Duration {
        (self.config.ttl / 4).clamp(Duration::from_millis(10), Duration::from_secs(1))
    }
}

/// At most `limit` kept publications of `stream` after offset `from`, oldest first.
fn after(stream: &Stream, from: u64, limit: usize) -> Vec<ByteString> {
    let Some(&(first, _)) = stream.entries.front() else {
        return Vec::new();
    };
    let skip = from.saturating_sub(first - 1) as usize;
    stream
        .entries
        .iter()
        .skip(skip)
        .take(limit)
        .map(|(_, frame)| frame.clone())
        .collect()
}

#[cfg(test)]
mod tests;
