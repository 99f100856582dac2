//! The hub's side of room history kept by the backplane for every node
//! ([`Backplane::keep_history`]): publishing through it, recovering a joining member (holding
//! back the live publications of its room until the read of what it missed is back, then
//! merging by offset), and answering `history` from it.
//!
//! The read of the range and the subscription are two connections to Redis, so live
//! publications the range already holds may still reach the hub after the read is back: once
//! a member has recovered up to offset L, the hub passes it only publications after L (the
//! subscription delivers in offset order, so the first one after L ends the check).
//!
//! A recovering member's held-back publications are bounded by the history's
//! `recover_limit` and `max_bytes` (the most a recovery could send anyway). Past either, its
//! recovery gives up: what was held is dropped (counted in `dropped`), and the member is told
//! `"recovered":false,"reason":"too_many"` (a join without `since` just continues, and its
//! client sees the gap in the offsets).

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

use actix::prelude::*;
use actix::WeakAddr;
use bytestring::ByteString;

use super::history::{error, history_reply, JoinedData};
use super::{joined, offer_reply, Hub, MemberSink};
use crate::config::HistoryConfig;
use crate::envelope::{EnvelopeParts, WireMessage};
use crate::protocol::{self, codes};
use crate::server::backplane::{StreamQuery, StreamRead};
use crate::server::command::{JoinReply, Publish, SessionId};
use crate::server::counters::Counters;
use crate::server::history::{Position, Read, Unrecovered};

/// What the hub holds for the members of one room that are recovering.
pub(super) type Recovering = HashMap<Arc<str>, HashMap<SessionId, Held>>;

/// Live publications held back from one recovering member, in the order received.
#[derive(Default)]
pub(super) struct Held {
    /// The `join`'s envelope id, to answer it should the member leave before its read is back.
    pub(super) join_id: Option<u64>,
    /// It was a member already (a `join` again): what it has not received yet of the
    /// publications up to the position it is told is its own, so a plain join gets those
    /// before `joined`.
    already: bool,
    frames: VecDeque<(Option<u64>, ByteString)>,
    bytes: usize,
    /// Past the bound: the recovery gives up (`too_many`).
    overflowed: bool,
    /// Once the read is back: the offset up to which the member has everything.
    upto: Option<u64>,
}

/// What to do with a live publication for a member that has a [`Held`] entry.
enum Live {
    /// Held back (its recovery is being read); `dropped` publications were given up.
    Held { dropped: usize },
    /// Already sent to it with its recovery: skip.
    Recovered,
    /// After what it recovered: deliver, and stop checking.
    New,
}

/// Whether a live publication (`frame` at `offset`) is kept from member `id` of a room where
/// members are recovering (`held`): held back, or already sent with its recovery.
pub(super) fn keep_back(
    held: &mut HashMap<SessionId, Held>,
    config: &HistoryConfig,
    id: SessionId,
    (offset, frame): (Option<u64>, &ByteString),
    counters: &Counters,
) -> bool {
    match held.get_mut(&id).map(|h| h.on_live(offset, frame, config)) {
        Some(Live::Held { dropped }) => {
            counters.dropped.add(dropped as u64);
            true
        }
        Some(Live::Recovered) => true,
        Some(Live::New) => {
            held.remove(&id);
            false
        }
        None => false,
    }
}

impl Held {
    /// Whether its read is still awaited.
    pub(super) fn reading(&self) -> bool {
        self.upto.is_none()
    }

    /// A live publication at `offset` for this member.
    fn on_live(&mut self, offset: Option<u64>, frame: &ByteString, config: &HistoryConfig) -> Live {
        match (self.upto, offset) {
            (None, _) => Live::Held {
                dropped: self.hold(offset, frame, config),
            },
            (Some(upto), Some(offset)) if offset <= upto => Live::Recovered,
            (Some(_), _) => Live::New,
        }
    }

    /// Its held publications: those up to `upto` (none without it), and the rest.
    fn split_at(self, upto: Option<u64>) -> (Vec<ByteString>, Vec<(Option<u64>, ByteString)>) {
        let Some(upto) = upto else {
            return (Vec::new(), self.frames.into());
        };
        let (earlier, rest): (Vec<_>, Vec<_>) = self
            .frames
            .into_iter()
            .partition(|(offset, _)| offset.is_some_and(|o| o <= upto));
        (earlier.into_iter().map(|(_, f)| f).collect(), rest)
    }

    /// Hold `frame` (at `offset`); past `config`'s bounds, give up and drop what was held.
    /// Answers how many publications were dropped.
    fn hold(&mut self, offset: Option<u64>, frame: &ByteString, config: &HistoryConfig) -> usize {
        if self.overflowed {
            return 1;
        }
        self.frames.push_back((offset, frame.clone()));
        self.bytes += frame.len();
        if self.frames.len() <= config.recover_limit && self.bytes <= config.max_bytes {
            return 0;
        }
        self.overflowed = true;
        self.bytes = 0;
        std::mem::take(&mut self.frames).len()
    }
}

/// The backplane's answer to a recovering member's read, back on the hub's thread.
#[derive(Message)]
#[rtype(result = "()")]
pub(super) struct Recovered {
    id: SessionId,
    room: Arc<str>,
    reply: JoinReply,
    read: Result<StreamRead, String>,
}

impl Handler<Recovered> for Hub {
    type Result = ();

    fn handle(&mut self, msg: Recovered, _: &mut Context<Self>) {
        self.finish_recovery(msg);
    }
}

impl Hub {
    /// Publish `msg` through the backplane, which gives it its position and hands it back to
    /// every node, this one included: nothing is delivered here before that. Answers how many
    /// local members the room has (they get it once Redis has taken it).
    pub(super) fn publish_shared(&mut self, msg: &Publish) -> usize {
        // Who came and went goes to the backplane before this publication (in order with it).
        self.flush_presence(&msg.room);
        let timestamp = crate::envelope::now_rfc3339();
        let text = EnvelopeParts {
            kind: msg.event.as_deref().unwrap_or(protocol::RoomMessage::TYPE),
            room: Some(&msg.room),
            from: msg.from.as_ref().map(|p| &*p.from),
            session: msg.from.as_ref().and_then(|p| p.session.as_deref()),
            data: msg.data.as_deref(),
            timestamp: Some(&timestamp),
            ..EnvelopeParts::default()
        }
        .encode();
        // Without its closing `}`: the backplane appends the position.
        let open = ByteString::from(text.strip_suffix('}').unwrap_or(&text));
        self.publish_to_backplane(msg, &open, true);
        self.rooms.get(&msg.room).map_or(0, |set| set.len())
    }

    /// Member `id` joined `room` (`already` a member, or the backplane is asked to receive it
    /// already): hold back the room's live publications for it and read its position (and
    /// what it missed).
    pub(super) fn start_recovery(
        &mut self,
        id: SessionId,
        room: &Arc<str>,
        (reply, already): (JoinReply, bool),
        me: WeakAddr<Hub>,
    ) {
        let Some(config) = self.shared else {
            return;
        };
        self.recovering.entry(room.clone()).or_default().insert(
            id,
            Held {
                join_id: reply.id,
                already,
                ..Held::default()
            },
        );
        let query = StreamQuery::Join {
            since: reply.since.clone(),
            limit: config.recover_limit,
        };
        let label = room.clone();
        self.backplane.read(
            room,
            query,
            Box::new(move |read| {
                // The hub is gone when this fails: nobody is waiting.
                if let Some(hub) = me.upgrade() {
                    hub.do_send(Recovered {
                        id,
                        room: label,
                        reply,
                        read,
                    });
                }
            }),
        );
    }

    /// The read of a recovering member is back: `joined`, what it missed, then what was held
    /// back after that, in offset order.
    fn finish_recovery(&mut self, msg: Recovered) {
        let Recovered {
            id,
            room,
            reply,
            read,
        } = msg;
        let Some(held) = self.take_held(id, &room) else {
            return; // left, or gone, meanwhile
        };
        let Some(MemberSink::Session { queue, .. }) = self.members.get(&id).map(|m| &m.sink) else {
            return;
        };
        let queue = queue.clone();
        let limit = self.shared.map_or(0, |c| c.recover_limit);
        let since = reply.since.as_ref();
        // The position `joined` carries, the verdict with `since`, what was missed, and the
        // offset after which held-back publications are new to the member.
        let (position, verdict, publications, after) = match read {
            Err(why) => {
                tracing::warn!(%room, "room history unavailable for a join: {why}");
                // What is known is the client's own position: a client that checks offsets
                // fills the gap with `history` once the backplane is back.
                let position = since.map(|s| (s.offset, s.epoch.clone()));
                let verdict = since.map(|_| Some(Unrecovered::Unavailable));
                (position, verdict, Vec::new(), None)
            }
            Ok(read) => {
                let verdict = since.map(|s| judge(s, &read, limit, held.overflowed));
                let publications = match verdict {
                    Some(None) => read.publications,
                    _ => Vec::new(),
                };
                let position = Some((read.offset, read.epoch));
                (position, verdict, publications, Some(read.offset))
            }
        };
        self.count_recovery(verdict);
        // A member already, joining without `since`: what it has not received yet up to the
        // position it is told goes first.
        let first_up_to = after.filter(|_| held.already && since.is_none());
        let (earlier, held) = held.split_at(first_up_to);
        self.offer_recovered(id, &queue, &room, earlier);
        let raw = position.and_then(|(offset, epoch)| {
            let data = JoinedData {
                offset,
                epoch: &epoch,
                recovered: verdict.map(|failed| failed.is_none()),
                reason: verdict.flatten().map(Unrecovered::as_str),
            };
            serde_json::value::to_raw_value(&data).ok()
        });
        offer_reply(
            &queue,
            joined(&room, reply.id, raw.as_deref()),
            &self.counters,
        );
        self.offer_recovered(id, &queue, &room, publications);
        let live = held
            .into_iter()
            .filter(|(offset, _)| match (offset, after) {
                (Some(offset), Some(after)) => *offset > after,
                _ => true,
            })
            .map(|(_, frame)| frame)
            .collect();
        self.offer_recovered(id, &queue, &room, live);
        // Still a member (not evicted meanwhile): skip what the range held when it comes late.
        let member = self.rooms.get(&room).is_some_and(|set| set.contains(&id));
        if let (Some(upto), true) = (after, member) {
            let skip = Held {
                upto: Some(upto),
                ..Held::default()
            };
            self.recovering.entry(room).or_default().insert(id, skip);
        }
    }

    /// Member `id` leaves `room` while its history is being read: its `join` is still
    /// answered (every request is), without a position, since what it would have recovered is
    /// no longer its.
    pub(super) fn answer_unread_join(&mut self, id: SessionId, room: &Arc<str>) {
        let Some(held) = self.take_held(id, room).filter(Held::reading) else {
            return;
        };
        if let Some(MemberSink::Session { queue, .. }) = self.members.get(&id).map(|m| &m.sink) {
            offer_reply(queue, joined(room, held.join_id, None), &self.counters);
        }
    }

    /// Stop holding back for member `id` in `room`; what was held, if it was recovering.
    pub(super) fn take_held(&mut self, id: SessionId, room: &Arc<str>) -> Option<Held> {
        let members = self.recovering.get_mut(room)?;
        let held = members.remove(&id);
        if members.is_empty() {
            self.recovering.remove(room);
        }
        held
    }

    /// Count a recovery's result (`None`: a join without `since`).
    pub(super) fn count_recovery(&self, verdict: Option<Option<Unrecovered>>) {
        let counter = match verdict {
            None => return,
            Some(None) => &self.counters.recovered,
            Some(Some(Unrecovered::EpochChanged)) => &self.counters.recovery_epoch_changed,
            Some(Some(Unrecovered::TooOld)) => &self.counters.recovery_too_old,
            Some(Some(Unrecovered::TooMany)) => &self.counters.recovery_too_many,
            Some(Some(Unrecovered::Unavailable)) => &self.counters.recovery_unavailable,
        };
        counter.bump();
    }

    /// Answer a `history` request of a session from the backplane's history.
    pub(super) fn answer_history_shared(
        &mut self,
        queue: crate::server::outbox::Outbox,
        room: &Arc<str>,
        request: Option<u64>,
        since: Option<&Position>,
        limit: Option<u64>,
    ) {
        let cap = self.shared.map_or(0, |c| c.recover_limit);
        let limit = limit.map_or(cap, |l| (l as usize).min(cap));
        let counters = self.counters.clone();
        let label = room.clone();
        let since = since.cloned();
        let query = StreamQuery::History {
            since: since.clone(),
            limit,
        };
        self.backplane.read(
            room,
            query,
            Box::new(move |read| {
                let frame = match read {
                    Ok(read) => history_reply(&label, request, &as_read(since.as_ref(), read)),
                    Err(why) => {
                        let message = format!("the room's history cannot be read now: {why}");
                        error(request, codes::BACKPLANE_UNAVAILABLE, &message)
                    }
                };
                offer_reply(&queue, frame, &counters);
            }),
        );
    }
}

/// A backplane's read as a `history` answer: `complete` when it holds every publication after
/// `since` (without one: since the stream began) up to the room's offset.
fn as_read(since: Option<&Position>, read: StreamRead) -> Read {
    let count = read.publications.len() as u64;
    let ends_at_offset = count == 0 || read.first + count - 1 == read.offset;
    let complete = match since {
        Some(p) if p.epoch == read.epoch && p.offset <= read.offset => {
            count == read.offset - p.offset && (count == 0 || read.first == p.offset + 1)
        }
        Some(_) => false,
        None => read.offset == 0 || (count > 0 && read.first == 1 && ends_at_offset),
    };
    Read {
        offset: read.offset,
        epoch: Arc::from(read.epoch),
        publications: read.publications,
        complete,
    }
}

/// Why a recovery from `since` cannot give everything `read` would, if it cannot.
fn judge(
    since: &Position,
    read: &StreamRead,
    limit: usize,
    overflowed: bool,
) -> Option<Unrecovered> {
    if read.epoch != since.epoch || since.offset > read.offset {
        return Some(Unrecovered::EpochChanged);
    }
    let missed = read.offset - since.offset;
    if missed > limit as u64 || overflowed {
        return Some(Unrecovered::TooMany);
    }
    if missed > 0 && (read.publications.len() as u64 != missed || read.first != since.offset + 1) {
        return Some(Unrecovered::TooOld);
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(offset: u64, first: u64, count: u64) -> StreamRead {
        StreamRead {
            offset,
            epoch: "e".into(),
            first,
            publications: (0..count)
                .map(|i| ByteString::from(i.to_string()))
                .collect(),
        }
    }

    fn at(offset: u64) -> Position {
        Position {
            offset,
            epoch: "e".into(),
        }
    }

    #[test]
    fn recoveries_are_judged_like_on_one_node() {
        assert_eq!(judge(&at(5), &read(8, 6, 3), 10, false), None);
        assert_eq!(judge(&at(8), &read(8, 0, 0), 10, false), None);
        let other = Position {
            offset: 5,
            epoch: "x".into(),
        };
        assert_eq!(
            judge(&other, &read(8, 6, 3), 10, false),
            Some(Unrecovered::EpochChanged)
        );
        assert_eq!(
            judge(&at(9), &read(8, 0, 0), 10, false),
            Some(Unrecovered::EpochChanged),
            "a position the stream never had"
        );
        assert_eq!(
            judge(&at(5), &read(20, 0, 0), 10, false),
            Some(Unrecovered::TooMany)
        );
        assert_eq!(
            judge(&at(5), &read(8, 6, 3), 10, true),
            Some(Unrecovered::TooMany),
            "the hold-back overflowed"
        );
        assert_eq!(
            judge(&at(5), &read(8, 7, 2), 10, false),
            Some(Unrecovered::TooOld)
        );
    }

    #[test]
    fn history_answers_say_whether_they_are_complete() {
        assert!(as_read(Some(&at(5)), read(8, 6, 3)).complete);
        assert!(!as_read(Some(&at(5)), read(8, 6, 2)).complete, "limited");
        assert!(as_read(None, read(3, 1, 3)).complete);
        assert!(!as_read(None, read(8, 6, 3)).complete, "the start is gone");
        assert!(as_read(None, read(0, 0, 0)).complete, "an empty room");
        let other = Position {
            offset: 1,
            epoch: "x".into(),
        };
        assert!(!as_read(Some(&other), read(3, 1, 3)).complete);
    }

    /// The hold-back of a recovering member is bounded by `recover_limit` and `max_bytes`;
    /// past either it gives up (and the recovery answers `too_many`). Once the read is back,
    /// what the range held is skipped, and the first later publication ends the check.
    #[test]
    fn the_hold_back_is_bounded_then_skips_what_was_recovered() {
        let config = HistoryConfig::default().recover_limit(3).max_bytes(1000);
        let frame = ByteString::from("x".repeat(100));
        let mut held = Held::default();
        for offset in 1..=3 {
            assert!(matches!(
                held.on_live(Some(offset), &frame, &config),
                Live::Held { dropped: 0 }
            ));
        }
        assert!(matches!(
            held.on_live(Some(4), &frame, &config),
            Live::Held { dropped: 4 }
        ));
        assert!(held.overflowed && held.frames.is_empty());
        assert!(matches!(
            held.on_live(Some(5), &frame, &config),
            Live::Held { dropped: 1 }
        ));
        let big = ByteString::from("x".repeat(1001));
        let mut by_bytes = Held::default();
        assert!(matches!(
            by_bytes.on_live(Some(1), &big, &config),
            Live::Held { dropped: 1 }
        ));

        // A member joining again without `since` gets what it had not received up to the
        // position it is told first, and the rest after.
        let mut again = Held {
            already: true,
            ..Held::default()
        };
        for offset in [7, 8, 9] {
            let _ = again.on_live(Some(offset), &frame, &config);
        }
        let (earlier, rest) = again.split_at(Some(8));
        assert_eq!((earlier.len(), rest.len()), (2, 1));
        assert_eq!(rest[0].0, Some(9));

        let mut done = Held {
            upto: Some(10),
            ..Held::default()
        };
        assert!(!done.reading());
        assert!(matches!(
            done.on_live(Some(9), &frame, &config),
            Live::Recovered
        ));
        assert!(matches!(
            done.on_live(Some(10), &frame, &config),
            Live::Recovered
        ));
        assert!(matches!(done.on_live(Some(11), &frame, &config), Live::New));
    }
}
