//! The hub's side of room history: answering `join` with the room's position (and recovering
//! what a member missed), answering `history`, and sweeping expired history.

use std::sync::Arc;
use std::time::Instant;

use bytestring::ByteString;
use serde::Serialize;
use serde_json::value::RawValue;

use super::{joined, offer_reply, Hub, MemberSink};
use crate::envelope::{EnvelopeParts, WireMessage};
use crate::protocol::{self, codes};
use crate::server::command::{JoinReply, SessionId};
use crate::server::counters::{on_full_queue, FullQueue};
use crate::server::history::{Position, Read, Unrecovered};
use crate::server::outbox::{Depth, Outbound, Outbox, Refused, Wakes};

/// The `data` of `joined` in a room with history.
#[derive(Serialize)]
struct JoinedData<'a> {
    offset: u64,
    epoch: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    recovered: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    reason: Option<&'static str>,
}

impl Hub {
    /// Send `joined` with the room's position to a member that just joined `room` and, when it
    /// asked with `since`, every publication it missed, in order, before anything live.
    pub(super) fn answer_join(
        &mut self,
        id: SessionId,
        queue: &Outbox,
        room: &Arc<str>,
        reply: JoinReply,
    ) {
        let Some(history) = self.history.as_mut() else {
            return;
        };
        let now = Instant::now();
        let (read, outcome) = match &reply.since {
            Some(since) => {
                let (read, failed) = history.recover(room, since, now);
                (read, Some(failed))
            }
            None => {
                let (offset, epoch) = history.position(room, now);
                let read = Read {
                    offset,
                    epoch,
                    publications: Vec::new(),
                    complete: true,
                };
                (read, None)
            }
        };
        self.counters.history_rooms.set(history.rooms() as u64);
        self.counters.history_bytes.set(history.bytes() as u64);
        let data = JoinedData {
            offset: read.offset,
            epoch: &read.epoch,
            recovered: outcome.map(|failed| failed.is_none()),
            reason: outcome.flatten().map(Unrecovered::as_str),
        };
        match outcome {
            Some(None) => self.counters.recovered.bump(),
            Some(Some(Unrecovered::EpochChanged)) => self.counters.recovery_epoch_changed.bump(),
            Some(Some(Unrecovered::TooOld)) => self.counters.recovery_too_old.bump(),
            Some(Some(Unrecovered::TooMany)) => self.counters.recovery_too_many.bump(),
            Some(Some(Unrecovered::Unavailable)) => self.counters.recovery_unavailable.bump(),
            None => {}
        }
        let raw = serde_json::value::to_raw_value(&data).ok();
        offer_reply(
            queue,
            joined(room, reply.id, raw.as_deref()),
            &self.counters,
        );
        self.offer_recovered(id, queue, room, read.publications);
    }

    /// Offer recovered publications to a member's queue, in order, under the slow-consumer
    /// policy like any broadcast: a dropped one is a gap the client fills with `history`.
    fn offer_recovered(
        &mut self,
        id: SessionId,
        queue: &Outbox,
        room: &Arc<str>,
        publications: Vec<ByteString>,
    ) {
        let mut wakes = Wakes::new();
        let (mut frames, mut bytes, mut deepest) = (0u64, 0u64, Depth::default());
        let mut evict = false;
        for frame in publications {
            let len = frame.len();
            match queue.try_send_batched(Outbound::Text(frame), &mut wakes) {
                Ok(depth) => {
                    frames += 1;
                    bytes += len as u64;
                    deepest.frames = deepest.frames.max(depth.frames);
                    deepest.bytes = deepest.bytes.max(depth.bytes);
                }
                Err(Refused::Full(_)) => {
                    if on_full_queue(self.policy, &self.counters) == FullQueue::Disconnect {
                        evict = true;
                        break;
                    }
                }
                Err(Refused::Closed(_)) => break,
            }
        }
        wakes.wake_all();
        self.counters.delivered_many(frames, bytes, deepest);
        if evict {
            tracing::warn!(%room, "slow consumer: queue full while recovering; disconnecting");
            if let Some(member) = self.remove(id) {
                member.sink.evict();
            }
        }
    }

    /// Answer a `history` request of session `id`.
    pub(super) fn answer_history(
        &mut self,
        id: SessionId,
        room: &Arc<str>,
        request: Option<u64>,
        since: Option<&Position>,
        limit: Option<u64>,
    ) {
        let Some(MemberSink::Session { queue, .. }) = self.members.get(&id).map(|m| &m.sink) else {
            return;
        };
        let queue = queue.clone();
        self.counters.history_requests.bump();
        let Some(history) = self.history.as_mut() else {
            let message = "this server keeps no room history";
            let frame = error(request, codes::HISTORY_OFF, message);
            return offer_reply(&queue, frame, &self.counters);
        };
        let cap = history.config().recover_limit;
        let limit = limit.map_or(cap, |l| (l as usize).min(cap));
        let read = history.read(room, since, limit, Instant::now());
        self.counters.history_rooms.set(history.rooms() as u64);
        self.counters.history_bytes.set(history.bytes() as u64);
        offer_reply(&queue, history_reply(room, request, &read), &self.counters);
    }

    /// Forget expired history (the hub's timer).
    pub(super) fn expire_history(&mut self) {
        let Some(history) = self.history.as_mut() else {
            return;
        };
        let rooms = &self.rooms;
        history.expire(Instant::now(), |room| rooms.contains_key(room));
        self.counters.history_rooms.set(history.rooms() as u64);
        self.counters.history_bytes.set(history.bytes() as u64);
    }
}

/// `{"type":"history","room":R,"id":N,"data":{"publications":[...],"offset":L,"epoch":"X",
/// "complete":bool}}`, the publications written as the frames they were.
fn history_reply(room: &str, id: Option<u64>, read: &Read) -> Outbound {
    let size: usize = read.publications.iter().map(|p| p.len() + 1).sum();
    let mut data = String::with_capacity(size + 96 + read.epoch.len());
    data.push_str("{\"publications\":[");
    for (i, publication) in read.publications.iter().enumerate() {
        if i > 0 {
            data.push(',');
        }
        data.push_str(publication);
    }
    data.push_str("],\"offset\":");
    data.push_str(&read.offset.to_string());
    data.push_str(",\"epoch\":");
    data.push_str(&serde_json::Value::from(&*read.epoch).to_string());
    data.push_str(",\"complete\":");
    data.push_str(if read.complete { "true" } else { "false" });
    data.push('}');
    // Every part is JSON: stored frames are envelopes the hub encoded.
    let raw = RawValue::from_string(data).ok();
    let reply = EnvelopeParts {
        kind: protocol::History::TYPE,
        id,
        room: Some(room),
        data: raw.as_deref(),
        ..EnvelopeParts::default()
    };
    Outbound::Text(reply.encode())
}

/// An `error` reply.
fn error(id: Option<u64>, code: &str, message: &str) -> Outbound {
    let reply = protocol::ErrorReply {
        code: code.to_owned(),
        message: message.to_owned(),
    };
    let raw = serde_json::value::to_raw_value(&reply).ok();
    let error = EnvelopeParts {
        kind: protocol::ErrorReply::TYPE,
        id,
        data: raw.as_deref(),
        ..EnvelopeParts::default()
    };
    Outbound::Text(error.encode())
}
