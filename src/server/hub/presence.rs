//! Presence on this node: who is in each room (one entry per member, its JSON encoded once when
//! it joins), which members asked for changes (a `join` with `"presence":true`), and the
//! changes gathered over [`WINDOW`] before they go out as one `presence_diff`.
//!
//! A room's waiting changes go out before any message the hub fans out in that room, so a
//! member sees who joined before it sees what they published, and who left after their last
//! message: diffs are in order with the room's messages. A member's own join is never sent to
//! it. Waiting changes are bounded: a member that joins and leaves within one window cancels
//! out, so a client that flaps cannot grow them; at most one join and one leave per member wait
//! (a leave is only added when no join of the member waits, and a join replaces a waiting one).

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use bytestring::ByteString;
use serde::Serialize;
use serde_json::value::RawValue;
use tokio::sync::{mpsc, oneshot};

use super::{offer_reply, Hub, MemberSink};
use crate::envelope::{EnvelopeParts, WireMessage};
use crate::protocol::{self, PresenceData, PresenceDiff, PresenceMember};
use crate::server::backplane::{PresenceChange, PresenceRead};
use crate::server::command::{Publisher, SessionId};
use crate::server::outbox::Outbound;

/// How long changes are gathered before they go out as one `presence_diff`.
pub(crate) const WINDOW: Duration = Duration::from_millis(100);

/// Every room's presence on this node.
#[derive(Default)]
pub(super) struct Presence {
    rooms: HashMap<Arc<str>, RoomPresence>,
    /// Rooms with changes waiting for the end of the window.
    dirty: HashSet<Arc<str>>,
    /// Whether the end of the window is scheduled.
    timer: bool,
    /// Entries held, over every room (the `wsm_server_presence_entries` gauge).
    entries: usize,
    /// Most members a `presence` answer lists.
    pub(super) list_limit: usize,
}

/// One room's presence.
#[derive(Default)]
struct RoomPresence {
    /// Every local member's entry, as JSON text (`{"session":S,"identity":U,"info":I}`).
    entries: HashMap<SessionId, Arc<str>>,
    /// Members that joined with `"presence":true`.
    listeners: HashSet<SessionId>,
    /// Server code watching the room ([`Rooms::subscribe_presence`](crate::server::Rooms)).
    watchers: Vec<mpsc::Sender<PresenceDiff>>,
    /// Joins waiting for the end of the window.
    joins: Vec<(SessionId, Arc<str>)>,
    /// Leaves waiting for the end of the window.
    leaves: Vec<(SessionId, Arc<str>)>,
}

impl RoomPresence {
    fn is_idle(&self) -> bool {
        self.entries.is_empty()
            && self.watchers.is_empty()
            && self.joins.is_empty()
            && self.leaves.is_empty()
    }
}

/// An entry as presence shows it.
#[derive(Serialize)]
struct Entry<'a> {
    session: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    identity: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    info: Option<&'a RawValue>,
}

impl Presence {
    /// Entries held over every room.
    pub(super) fn entries(&self) -> usize {
        self.entries
    }

    /// Whether the end of the window must be scheduled now (changes wait and no timer is set);
    /// answers `true` once per window.
    pub(super) fn start_timer(&mut self) -> bool {
        if self.timer || self.dirty.is_empty() {
            return false;
        }
        self.timer = true;
        true
    }
}

/// The JSON text of `who`'s entry with `info`.
fn entry_of(who: &Publisher, info: Option<&RawValue>) -> Arc<str> {
    let entry = match &who.session {
        Some(session) => Entry {
            session,
            identity: Some(&who.from),
            info,
        },
        None => Entry {
            session: &who.from,
            identity: None,
            info,
        },
    };
    match serde_json::to_string(&entry) {
        Ok(text) => Arc::from(text),
        // Serialising strings and valid raw JSON cannot fail; an entry without info then.
        Err(_) => Arc::from(format!("{{\"session\":{:?}}}", &*who.from)),
    }
}

impl Hub {
    /// Member `id` (who it is: `who`) is in `room`: a new entry is announced at the end of the
    /// window; `listen` makes it a listener. A member that joins again keeps listening, and
    /// with other `info` its entry changes: announced as the old entry's leave and the new
    /// one's join (or, while its join still waits, that join shows the new entry).
    pub(super) fn presence_join(
        &mut self,
        id: SessionId,
        room: &Arc<str>,
        who: &Publisher,
        (listen, info): (bool, Option<Arc<RawValue>>),
    ) {
        let state = self.presence.rooms.entry(room.clone()).or_default();
        if listen {
            state.listeners.insert(id);
        }
        let entry = entry_of(who, info.as_deref());
        match state.entries.insert(id, entry.clone()) {
            None => self.presence.entries += 1,
            Some(old) if old == entry => return,
            Some(old) => match state.joins.iter().position(|(j, _)| *j == id) {
                Some(i) => {
                    state.joins.remove(i);
                }
                None => state.leaves.push((id, old)),
            },
        }
        state.joins.push((id, entry));
        self.presence.dirty.insert(room.clone());
    }

    /// Member `id` left `room` (or its session ended): its leave is announced at the end of the
    /// window, unless its join is still waiting, which it cancels.
    pub(super) fn presence_leave(&mut self, id: SessionId, room: &Arc<str>) {
        let Some(state) = self.presence.rooms.get_mut(room) else {
            return;
        };
        state.listeners.remove(&id);
        if let Some(entry) = state.entries.remove(&id) {
            self.presence.entries = self.presence.entries.saturating_sub(1);
            match state.joins.iter().position(|(j, _)| *j == id) {
                Some(i) => {
                    state.joins.remove(i);
                }
                None => {
                    state.leaves.push((id, entry));
                    self.presence.dirty.insert(room.clone());
                }
            }
        }
        if state.is_idle() {
            self.presence.rooms.remove(room);
        }
    }

    /// The end of the window: every room's waiting changes go out.
    pub(super) fn flush_all_presence(&mut self) {
        self.presence.timer = false;
        let dirty: Vec<Arc<str>> = self.presence.dirty.drain().collect();
        for room in dirty {
            self.flush_presence(&room);
        }
    }

    /// Send `room`'s waiting changes, if any: one `presence_diff` to each listener (without its
    /// own join) and to each watcher, and the changes to a backplane that shares presence.
    pub(super) fn flush_presence(&mut self, room: &Arc<str>) {
        let Some(state) = self.presence.rooms.get_mut(room) else {
            return;
        };
        if state.joins.is_empty() && state.leaves.is_empty() {
            return;
        }
        let joins = std::mem::take(&mut state.joins);
        let leaves = std::mem::take(&mut state.leaves);
        self.presence.dirty.remove(room);
        let listeners: Vec<SessionId> = state.listeners.iter().copied().collect();
        let emptied = state.entries.is_empty();
        if !state.watchers.is_empty() {
            let diff = PresenceDiff {
                joins: members_of(&joins),
                leaves: members_of(&leaves),
            };
            notify_watchers(room, &mut state.watchers, &diff);
        }
        if state.is_idle() {
            self.presence.rooms.remove(room);
        }
        let common = diff_text(room, &joins, &leaves, None);
        if self.backplane.shares_presence() {
            let left: Vec<SessionId> = leaves.iter().map(|(id, _)| *id).collect();
            let change = PresenceChange {
                joins: &joins,
                leaves: &left,
                emptied,
                diff: common.as_ref(),
            };
            self.backplane.presence(room, change);
        }
        for id in listeners {
            let own = joins.iter().any(|(j, _)| *j == id);
            let frame = match (own, &common) {
                (false, Some(text)) => Some(text.clone()),
                (true, _) => diff_text(room, &joins, &leaves, Some(id)),
                (false, None) => None,
            };
            if let Some(text) = frame {
                if self.send_to(id, Outbound::Text(text)) {
                    self.counters.presence_diffs.bump();
                }
            }
        }
    }

    /// A `presence_diff` another node made for `room`: after this node's own waiting changes,
    /// to every listener and watcher here (it never names a member of this node).
    pub(super) fn remote_presence(&mut self, room: &Arc<str>, frame: &ByteString) {
        self.flush_presence(room);
        let Some(state) = self.presence.rooms.get_mut(room) else {
            return;
        };
        if !state.watchers.is_empty() {
            #[derive(serde::Deserialize)]
            struct Envelope {
                data: PresenceDiff,
            }
            match serde_json::from_str::<Envelope>(frame) {
                Ok(env) => notify_watchers(room, &mut state.watchers, &env.data),
                Err(e) => tracing::debug!(%room, "a presence_diff from another node: {e}"),
            }
        }
        let listeners: Vec<SessionId> = state.listeners.iter().copied().collect();
        for id in listeners {
            if self.send_to(id, Outbound::Text(frame.clone())) {
                self.counters.presence_diffs.bump();
            }
        }
    }

    /// Answer a `presence` request of session `id`: this node's members, plus the other
    /// nodes' when the backplane shares presence (read from it; this node's own members only
    /// when it cannot be read).
    pub(super) fn answer_presence(&mut self, id: SessionId, room: &Arc<str>, request: Option<u64>) {
        if !self.backplane.shares_presence() {
            let data = self.presence_text(room);
            self.send_to(id, presence_answer(room, request, data));
            return;
        }
        let Some(MemberSink::Session { queue, .. }) = self.members.get(&id).map(|m| &m.sink) else {
            return;
        };
        let queue = queue.clone();
        let counters = self.counters.clone();
        let label = room.clone();
        self.read_all_presence(room, move |data| {
            offer_reply(&queue, presence_answer(&label, request, data), &counters);
        });
    }

    /// Tell server code `room`'s presence (every node's, like
    /// [`answer_presence`](Self::answer_presence)).
    pub(super) fn tell_presence(&mut self, room: &Arc<str>, tell: oneshot::Sender<PresenceData>) {
        self.read_all_presence(room, move |data| {
            let _ = tell.send(serde_json::from_str(&data).unwrap_or_default());
        });
    }

    /// `room`'s presence as the `data` of an answer, handed to `done`: at once on one node,
    /// once the backplane has read the other nodes' members otherwise.
    fn read_all_presence(&mut self, room: &Arc<str>, done: impl FnOnce(String) + Send + 'static) {
        if !self.backplane.shares_presence() {
            return done(self.presence_text(room));
        }
        let limit = self.presence.list_limit;
        let (count, listed) = self.local_presence(room);
        let label = room.clone();
        self.backplane.read_presence(
            room,
            limit,
            Box::new(move |read| {
                let read = read.unwrap_or_else(|why| {
                    tracing::warn!(room = %label, "presence of the other nodes unavailable, answering this node's: {why}");
                    PresenceRead::default()
                });
                let count = count as u64 + read.count;
                let listed: Vec<&str> = listed
                    .iter()
                    .map(|e| &**e)
                    .chain(read.members.iter().map(String::as_str))
                    .take(limit)
                    .collect();
                done(presence_json(count, &listed));
            }),
        );
    }

    /// Send `room`'s changes to `tx` from now on.
    pub(super) fn watch_presence(&mut self, room: Arc<str>, tx: mpsc::Sender<PresenceDiff>) {
        let state = self.presence.rooms.entry(room).or_default();
        state.watchers.retain(|tx| !tx.is_closed());
        state.watchers.push(tx);
    }

    /// This node's members of `room`: how many, and at most `list_limit` entries in the order
    /// of their session ids.
    fn local_presence(&self, room: &Arc<str>) -> (usize, Vec<Arc<str>>) {
        let Some(state) = self.presence.rooms.get(room) else {
            return (0, Vec::new());
        };
        let mut ids: Vec<&SessionId> = state.entries.keys().collect();
        ids.sort_unstable();
        let listed = ids
            .iter()
            .take(self.presence.list_limit)
            .filter_map(|id| state.entries.get(id).cloned())
            .collect();
        (ids.len(), listed)
    }

    /// The `data` of a `presence` answer from this node's members:
    /// `{"count":C,"members":[...],"truncated":true?}`.
    fn presence_text(&self, room: &Arc<str>) -> String {
        let (count, listed) = self.local_presence(room);
        let listed: Vec<&str> = listed.iter().map(|e| &**e).collect();
        presence_json(count as u64, &listed)
    }
}

/// `{"count":C,"members":[...],"truncated":true?}` (truncated when `listed` holds fewer than
/// `count`).
fn presence_json(count: u64, listed: &[&str]) -> String {
    let truncated = if (listed.len() as u64) < count {
        ",\"truncated\":true"
    } else {
        ""
    };
    format!(
        "{{\"count\":{count},\"members\":[{}]{truncated}}}",
        listed.join(",")
    )
}

/// The `presence` answer to request `request` in `room` with `data`.
fn presence_answer(room: &str, request: Option<u64>, data: String) -> Outbound {
    let raw = RawValue::from_string(data).ok();
    let answer = EnvelopeParts {
        kind: protocol::Presence::TYPE,
        id: request,
        room: Some(room),
        data: raw.as_deref(),
        ..EnvelopeParts::default()
    };
    Outbound::Text(answer.encode())
}

/// Hand `diff` to `room`'s watchers; a full one loses it (traced), a closed one is dropped.
fn notify_watchers(
    room: &str,
    watchers: &mut Vec<mpsc::Sender<PresenceDiff>>,
    diff: &PresenceDiff,
) {
    watchers.retain(|tx| match tx.try_send(diff.clone()) {
        Ok(()) => true,
        Err(mpsc::error::TrySendError::Full(_)) => {
            tracing::warn!(%room, "presence watcher full; a diff is lost to it");
            true
        }
        Err(mpsc::error::TrySendError::Closed(_)) => false,
    });
}

/// Entries decoded for server code (they are JSON this hub wrote).
fn members_of(entries: &[(SessionId, Arc<str>)]) -> Vec<PresenceMember> {
    entries
        .iter()
        .filter_map(|(_, e)| serde_json::from_str(e).ok())
        .collect()
}

/// The `presence_diff` frame of `joins` and `leaves` in `room`, leaving out the join of
/// `except`; `None` when nothing is left to say.
fn diff_text(
    room: &str,
    joins: &[(SessionId, Arc<str>)],
    leaves: &[(SessionId, Arc<str>)],
    except: Option<SessionId>,
) -> Option<ByteString> {
    let joins: Vec<&str> = joins
        .iter()
        .filter(|(id, _)| Some(*id) != except)
        .map(|(_, e)| &**e)
        .collect();
    if joins.is_empty() && leaves.is_empty() {
        return None;
    }
    let leaves: Vec<&str> = leaves.iter().map(|(_, e)| &**e).collect();
    let data = format!(
        "{{\"joins\":[{}],\"leaves\":[{}]}}",
        joins.join(","),
        leaves.join(",")
    );
    let data = RawValue::from_string(data).ok()?;
    let frame = EnvelopeParts {
        kind: PresenceDiff::TYPE,
        room: Some(room),
        data: Some(&data),
        ..EnvelopeParts::default()
    };
    Some(frame.encode())
}
