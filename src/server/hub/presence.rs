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

use serde::Serialize;
use serde_json::value::RawValue;
use tokio::sync::mpsc;

use super::Hub;
use crate::envelope::{EnvelopeParts, WireMessage};
use crate::protocol::{self, PresenceData, PresenceDiff, PresenceMember};
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
    /// own join) and to each watcher.
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
        if !state.watchers.is_empty() {
            let diff = PresenceDiff {
                joins: members_of(&joins),
                leaves: members_of(&leaves),
            };
            state.watchers.retain(|tx| match tx.try_send(diff.clone()) {
                Ok(()) => true,
                Err(mpsc::error::TrySendError::Full(_)) => {
                    tracing::warn!(%room, "presence watcher full; a diff is lost to it");
                    true
                }
                Err(mpsc::error::TrySendError::Closed(_)) => false,
            });
        }
        if state.is_idle() {
            self.presence.rooms.remove(room);
        }
        let common = diff_frame(room, &joins, &leaves, None);
        for id in listeners {
            let own = joins.iter().any(|(j, _)| *j == id);
            let frame = match (own, &common) {
                (false, Some(frame)) => Some(frame.clone()),
                (true, _) => diff_frame(room, &joins, &leaves, Some(id)),
                (false, None) => None,
            };
            if let Some(frame) = frame {
                if self.send_to(id, frame) {
                    self.counters.presence_diffs.bump();
                }
            }
        }
    }

    /// Answer a `presence` request of session `id`.
    pub(super) fn answer_presence(&mut self, id: SessionId, room: &Arc<str>, request: Option<u64>) {
        let data = self.presence_text(room);
        let raw = RawValue::from_string(data).ok();
        let answer = EnvelopeParts {
            kind: protocol::Presence::TYPE,
            id: request,
            room: Some(room),
            data: raw.as_deref(),
            ..EnvelopeParts::default()
        };
        self.send_to(id, Outbound::Text(answer.encode()));
    }

    /// `room`'s presence for server code.
    pub(super) fn presence_of(&self, room: &Arc<str>) -> PresenceData {
        serde_json::from_str(&self.presence_text(room)).unwrap_or_default()
    }

    /// Send `room`'s changes to `tx` from now on.
    pub(super) fn watch_presence(&mut self, room: Arc<str>, tx: mpsc::Sender<PresenceDiff>) {
        let state = self.presence.rooms.entry(room).or_default();
        state.watchers.retain(|tx| !tx.is_closed());
        state.watchers.push(tx);
    }

    /// The `data` of a `presence` answer: `{"count":C,"members":[...],"truncated":true?}`, the
    /// members in the order of their session ids, at most `list_limit` of them.
    fn presence_text(&self, room: &Arc<str>) -> String {
        let Some(state) = self.presence.rooms.get(room) else {
            return "{\"count\":0,\"members\":[]}".to_owned();
        };
        let mut ids: Vec<&SessionId> = state.entries.keys().collect();
        ids.sort_unstable();
        let limit = self.presence.list_limit;
        let listed: Vec<&str> = ids
            .iter()
            .take(limit)
            .filter_map(|id| state.entries.get(id).map(|e| &**e))
            .collect();
        let truncated = if ids.len() > limit {
            ",\"truncated\":true"
        } else {
            ""
        };
        format!(
            "{{\"count\":{},\"members\":[{}]{truncated}}}",
            ids.len(),
            listed.join(",")
        )
    }
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
fn diff_frame(
    room: &str,
    joins: &[(SessionId, Arc<str>)],
    leaves: &[(SessionId, Arc<str>)],
    except: Option<SessionId>,
) -> Option<Outbound> {
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
    Some(Outbound::Text(frame.encode()))
}
