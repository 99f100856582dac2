//! The stream position of each joined room, and the gap logic built on it: a pure state machine
//! (no actors, no I/O) that the Router feeds with what arrives and that answers what to deliver,
//! what to drop, and which `history` request fills a gap.
//!
//! Per room it keeps the `(epoch, offset)` of the last publication delivered. A room message
//! arrives with its own `(epoch, offset)`:
//!
//! - at or below the last offset: a duplicate (a replay overlapping what was delivered), dropped;
//! - the next offset: delivered;
//! - past the next offset: the server dropped some for this member. The message is held, and a
//!   *fill* asks the server's history for the gap; later messages of the room are held behind it
//!   (bounded) until the fill answers, then everything goes out in offset order;
//! - another epoch: the room's history was lost on the server: the position starts again there,
//!   and the loss is reported.
//!
//! A rejoin answered `too_many` (more were missed than the server replays at a rejoin) in the
//! same epoch starts a fill too, up to the room's position: the history may still hold them all,
//! and it is read page by page.
//!
//! Items are generic (`T`), so the logic is tested with plain numbers; the Router holds frames.

use std::collections::{BTreeMap, HashMap};

/// A room's stream position: the epoch of its history and an offset in it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Position {
    /// Changes whenever the room's history is lost on the server; offsets of different epochs
    /// are not comparable.
    pub epoch: String,
    /// 1 for the room's first publication, +1 for each one after.
    pub offset: u64,
}

/// What one step of the logic asks of the Router.
#[derive(Debug)]
pub(crate) struct Outcome<T> {
    /// To deliver now, in this order.
    pub(crate) deliver: Vec<T>,
    /// Messages dropped as already delivered.
    pub(crate) duplicates: u64,
    /// A `history` request to send, for the fill of `room`.
    pub(crate) request: Option<FillRequest>,
    /// A recovery that ended (a rejoin's answer, a fill done or given up), to report.
    pub(crate) recovery: Option<Recovered>,
}

impl<T> Default for Outcome<T> {
    fn default() -> Self {
        Outcome {
            deliver: Vec::new(),
            duplicates: 0,
            request: None,
            recovery: None,
        }
    }
}

/// The `history` request a fill needs: the publications after `since`, at most `limit`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct FillRequest {
    /// Tells the answer to this request from a stale one ([`Streams::filled`]).
    pub(crate) fill: u64,
    pub(crate) since: Position,
    pub(crate) limit: u64,
}

/// How a recovery ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Recovered {
    pub(crate) recovered: bool,
    /// Publications recovered (when `recovered`), or known to be missing (when not).
    pub(crate) missed: u64,
    /// Why not, when not: `epoch_changed`, `too_old`, `too_many`, `unavailable`.
    pub(crate) reason: Option<String>,
}

impl Recovered {
    fn lost(missed: u64, reason: &str) -> Self {
        Recovered {
            recovered: false,
            missed,
            reason: Some(reason.to_owned()),
        }
    }
}

/// The current position the server reports in `joined` (`data: {offset, epoch, recovered?,
/// reason?}`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct JoinedAt {
    pub(crate) position: Position,
    /// Present when the join carried `since`.
    pub(crate) recovered: Option<bool>,
    pub(crate) reason: Option<String>,
}

/// Bounds of the logic.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Limits {
    /// Messages held behind one fill; past it the fill is given up (`too_many`).
    pub(crate) max_held: usize,
    /// Bytes held behind the fills of all rooms together; past it the fill that holds the
    /// message which went past is given up (`too_many`).
    pub(crate) max_held_bytes: usize,
    /// The largest `limit` a fill asks for (the server caps it too).
    pub(crate) fill_limit: u64,
}

/// A fill under way: the messages waiting behind it, by offset.
#[derive(Debug)]
struct Fill<T> {
    id: u64,
    held: BTreeMap<u64, T>,
    held_bytes: usize,
    /// Publications recovered so far by this fill's answers.
    recovered: u64,
    /// The offset the fill must reach besides the held messages: the room's position when a
    /// rejoin was answered `too_many` (0 for a gap before a held message).
    until: u64,
}

#[derive(Debug)]
struct RoomStream<T> {
    epoch: String,
    /// The offset of the last publication delivered.
    last: u64,
    fill: Option<Fill<T>>,
}

/// The stream positions of every room with history (see the [module docs](self)). Bounded by
/// the rooms joined (a room is forgotten when left) and, per room, by [`Limits`].
#[derive(Debug)]
pub(crate) struct Streams<T> {
    rooms: HashMap<String, RoomStream<T>>,
    limits: Limits,
    next_fill: u64,
}

impl<T> Streams<T> {
    pub(crate) fn new(limits: Limits) -> Self {
        Streams {
            rooms: HashMap::new(),
            limits,
            next_fill: 1,
        }
    }

    /// The bytes of the messages held behind every room's fill (summed when a message is held,
    /// which is rare, so nothing has to keep it in step).
    fn held_bytes(&self) -> usize {
        self.rooms
            .values()
            .filter_map(|s| s.fill.as_ref())
            .map(|f| f.held_bytes)
            .sum()
    }

    /// Whether any room has a position (the Router then reads every message's head).
    pub(crate) fn is_empty(&self) -> bool {
        self.rooms.is_empty()
    }

    /// The position to rejoin `room` from (the last publication delivered), if it has one.
    pub(crate) fn since(&self, room: &str) -> Option<Position> {
        self.rooms.get(room).map(|s| Position {
            epoch: s.epoch.clone(),
            offset: s.last,
        })
    }

    /// The room was left, or its server keeps no history: no position any more.
    pub(crate) fn forget(&mut self, room: &str) {
        self.rooms.remove(room);
    }

    /// The socket is gone: fills under way end, and their held messages are dropped (the rejoin
    /// from the last delivered position brings them again, in order).
    pub(crate) fn disconnected(&mut self) {
        for s in self.rooms.values_mut() {
            s.fill = None;
        }
    }

    /// A `joined` with a position. Without `recovered` (a first join) the position is taken as
    /// it is; with it, the rejoin's answer is reported.
    pub(crate) fn joined(&mut self, room: &str, at: JoinedAt) -> Outcome<T> {
        let mut out = Outcome::default();
        let JoinedAt {
            position,
            recovered,
            reason,
        } = at;
        let stream = self.rooms.get_mut(room);
        match (recovered, stream) {
            (Some(true), Some(s)) if s.epoch == position.epoch => {
                // The publications after `last` up to the position follow, as room messages.
                s.fill = None;
                s.last = s.last.min(position.offset);
                out.recovery = Some(Recovered {
                    recovered: true,
                    missed: position.offset - s.last,
                    reason: None,
                });
            }
            (Some(false), Some(s))
                if s.epoch == position.epoch
                    && reason.as_deref() == Some("too_many")
                    && position.offset > s.last =>
            {
                // More than one rejoin replays, yet the history may still hold them all: fetch
                // them page by page, live messages held behind.
                let id = self.next_fill;
                self.next_fill += 1;
                out.request = Some(FillRequest {
                    fill: id,
                    since: Position {
                        epoch: s.epoch.clone(),
                        offset: s.last,
                    },
                    limit: (position.offset - s.last).min(self.limits.fill_limit),
                });
                s.fill = Some(Fill {
                    id,
                    held: BTreeMap::new(),
                    held_bytes: 0,
                    recovered: 0,
                    until: position.offset,
                });
            }
            (Some(_), stream) => {
                let missed = stream
                    .filter(|s| s.epoch == position.epoch)
                    .map_or(0, |s| position.offset.saturating_sub(s.last));
                let reason = reason.unwrap_or_else(|| "epoch_changed".to_owned());
                out.recovery = Some(Recovered::lost(missed, &reason));
                self.start_at(room, position);
            }
            (None, _) => self.start_at(room, position),
        }
        out
    }

    fn start_at(&mut self, room: &str, position: Position) {
        self.rooms.insert(
            room.to_owned(),
            RoomStream {
                epoch: position.epoch,
                last: position.offset,
                fill: None,
            },
        );
    }

    /// The common case in one step, without allocating: when `room` has a position, no fill
    /// under way, and `n` of `epoch` is its next offset, move the position on and answer true
    /// (deliver the message). Otherwise nothing changes; call [`live`](Self::live).
    pub(crate) fn advance(&mut self, room: &str, epoch: &str, n: u64) -> bool {
        match self.rooms.get_mut(room) {
            Some(s) if s.fill.is_none() && s.epoch == epoch && s.last.checked_add(1) == Some(n) => {
                s.last = n;
                true
            }
            _ => false,
        }
    }

    /// A room message at offset `n` of `epoch`, weighing `bytes`.
    pub(crate) fn live(
        &mut self,
        room: &str,
        epoch: &str,
        n: u64,
        item: T,
        bytes: usize,
    ) -> Outcome<T> {
        let mut out = Outcome::default();
        let Some(s) = self.rooms.get_mut(room) else {
            // Not a room joined with a position: delivered untracked (a peer naming rooms at
            // will must not grow the map).
            out.deliver.push(item);
            return out;
        };
        if s.epoch != epoch {
            if let Some(fill) = s.fill.take() {
                out.deliver.extend(fill.held.into_values());
            }
            epoch.clone_into(&mut s.epoch);
            s.last = n;
            out.deliver.push(item);
            out.recovery = Some(Recovered::lost(0, "epoch_changed"));
            return out;
        }
        if n <= s.last || s.fill.as_ref().is_some_and(|f| f.held.contains_key(&n)) {
            out.duplicates = 1;
            return out;
        }
        if let Some(fill) = s.fill.as_mut() {
            fill.held.insert(n, item);
            fill.held_bytes += bytes;
            let too_many = fill.held.len() > self.limits.max_held;
            if too_many || self.held_bytes() > self.limits.max_held_bytes {
                if let Some(s) = self.rooms.get_mut(room) {
                    give_up(s, &mut out, "too_many");
                }
            }
            return out;
        }
        if n == s.last + 1 {
            s.last = n;
            out.deliver.push(item);
            return out;
        }
        let id = self.next_fill;
        self.next_fill += 1;
        let mut held = BTreeMap::new();
        held.insert(n, item);
        out.request = Some(FillRequest {
            fill: id,
            since: Position {
                epoch: s.epoch.clone(),
                offset: s.last,
            },
            limit: (n - 1 - s.last).min(self.limits.fill_limit),
        });
        s.fill = Some(Fill {
            id,
            held,
            held_bytes: bytes,
            recovered: 0,
            until: 0,
        });
        out
    }

    /// The answer to fill `fill` of `room`: the room's position now (`at`), publications after
    /// the fill's `since` (oldest first, with their offsets), and whether they are all of them.
    /// An answer to a fill no longer under way is ignored.
    pub(crate) fn filled(
        &mut self,
        room: &str,
        fill: u64,
        at: Position,
        publications: Vec<(u64, T)>,
        complete: bool,
    ) -> Outcome<T> {
        let mut out = Outcome::default();
        let Some(s) = self.rooms.get_mut(room) else {
            return out;
        };
        let Some(f) = s.fill.as_mut().filter(|f| f.id == fill) else {
            return out;
        };
        if at.epoch != s.epoch {
            give_up(s, &mut out, "epoch_changed");
            s.epoch = at.epoch;
            s.last = at.offset;
            if let Some(r) = out.recovery.as_mut() {
                r.missed = 0;
            }
            return out;
        }
        let before = s.last;
        for (offset, item) in publications {
            if offset > s.last && !f.held.contains_key(&offset) {
                f.held.insert(offset, item);
                f.recovered += 1;
            }
        }
        drain_in_order(s, &mut out);
        let Some(f) = s.fill.as_ref() else {
            return out;
        };
        // The next offset the fill waits for something beyond: a held message, or its target.
        let next = match f.held.first_key_value() {
            Some((&held, _)) => Some(held),
            None if s.last < f.until => Some(f.until + 1),
            None => None,
        };
        match next {
            None => {
                out.recovery = Some(Recovered {
                    recovered: true,
                    missed: f.recovered,
                    reason: None,
                });
                s.fill = None;
            }
            Some(next) if s.last > before && !complete => {
                // Progress, and the server has more: ask for the rest of the gap.
                out.request = Some(FillRequest {
                    fill,
                    since: Position {
                        epoch: s.epoch.clone(),
                        offset: s.last,
                    },
                    limit: (next - 1 - s.last).min(self.limits.fill_limit),
                });
            }
            Some(_) => give_up(s, &mut out, "too_old"),
        }
        out
    }

    /// Fill `fill` of `room` failed (no answer, an error answer): it is given up with `reason`.
    pub(crate) fn fill_failed(&mut self, room: &str, fill: u64, reason: &str) -> Outcome<T> {
        let mut out = Outcome::default();
        if let Some(s) = self.rooms.get_mut(room) {
            if s.fill.as_ref().is_some_and(|f| f.id == fill) {
                give_up(s, &mut out, reason);
            }
        }
        out
    }
}

/// Deliver the held messages that continue the position, in order; ends the fill when none is
/// left (the caller reports it).
fn drain_in_order<T>(s: &mut RoomStream<T>, out: &mut Outcome<T>) {
    let Some(f) = s.fill.as_mut() else {
        return;
    };
    while let Some(entry) = f.held.first_entry() {
        if *entry.key() != s.last + 1 {
            break;
        }
        s.last += 1;
        out.deliver.push(entry.remove());
    }
}

/// End the fill without the publications it waited for: deliver what is held, in order, and
/// report how many are missing.
fn give_up<T>(s: &mut RoomStream<T>, out: &mut Outcome<T>, reason: &str) {
    let Some(f) = s.fill.take() else {
        return;
    };
    let mut missed = 0;
    for (offset, item) in f.held {
        missed += offset - s.last - 1;
        s.last = offset;
        out.deliver.push(item);
    }
    if f.until > s.last {
        // Live messages continue after the target: what is before it is lost.
        missed += f.until - s.last;
        s.last = f.until;
    }
    out.recovery = Some(Recovered::lost(missed, reason));
}

#[cfg(test)]
mod tests;
