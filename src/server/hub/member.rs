//! The hub's view of one member (a session's bounded queue, or an application's actor), how a
//! frame is offered to it, and the small replies the hub writes itself.

use std::collections::HashSet;
use std::sync::Arc;

use actix::prelude::*;
use serde_json::value::RawValue;

use crate::envelope::{EnvelopeParts, WireMessage};
use crate::protocol;
use crate::server::command::{Evict, EvictReason, Publisher, RoomFrame};
use crate::server::counters::Counters;
use crate::server::outbox::{Depth, Outbound, Outbox, Refused, Wakes};

/// Who the hub knows: one entry per live session.
pub(super) struct Member {
    /// Where its messages go; the hub only ever offers with `try_send`.
    pub(super) sink: MemberSink,
    /// The rooms it is in, so that leaving every room on disconnect does not scan all rooms.
    pub(super) rooms: HashSet<Arc<str>>,
    /// Who it is, as its presence entries show it.
    pub(super) who: Arc<Publisher>,
}

/// A member's way in: a session's bounded queue, or an actor of the application's (for
/// example an existing actix-web-actors session) through its bounded mailbox.
pub(super) enum MemberSink {
    Session {
        queue: Outbox,
        /// Where to send [`Evict`].
        evict: Recipient<Evict>,
    },
    Actor(Recipient<RoomFrame>),
}

/// What offering a frame to a member did.
pub(super) enum Offer {
    /// Taken; the member's queue now holds this much (zero when unknown).
    Taken(Depth),
    Full,
    Gone,
}

impl MemberSink {
    pub(super) fn offer(&self, frame: &Outbound, wakes: &mut Wakes) -> Offer {
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
    pub(super) fn evict(&self) {
        if let MemberSink::Session { evict, .. } = self {
            evict.do_send(Evict {
                reason: EvictReason::SlowConsumer,
            });
        }
    }
}

/// `joined` for `room`, with `id` and `data` (the position, and the recovery's outcome).
pub(super) fn joined(room: &str, id: Option<u64>, data: Option<&RawValue>) -> Outbound {
    let joined = EnvelopeParts {
        kind: protocol::Joined::TYPE,
        id,
        room: Some(room),
        data,
        ..EnvelopeParts::default()
    };
    Outbound::Text(joined.encode())
}

/// Offer a reply frame to a session's queue; a full queue drops it (counted: the session is
/// too slow to read even its replies).
pub(super) fn offer_reply(queue: &Outbox, frame: Outbound, counters: &Counters) {
    let len = frame.len();
    match queue.try_send(frame) {
        Ok(depth) => counters.delivered(len, depth),
        Err(Refused::Full(_)) => counters.dropped.bump(),
        Err(Refused::Closed(_)) => {}
    }
}

/// The `error` a publisher gets when its publish could not reach the other nodes (`shared`:
/// the backplane keeps the history, and a publish it did not take reached nobody).
pub(super) fn backplane_error(id: u64, why: &str, shared: bool) -> Outbound {
    let message = if shared {
        format!("not delivered to anyone: the room's history did not take it: {why}")
    } else {
        format!(
            "delivered on this node; other nodes may not have it (Redis pub/sub is at-most-once): \
             {why}"
        )
    };
    let reply = protocol::ErrorReply {
        code: protocol::codes::BACKPLANE_UNAVAILABLE.to_owned(),
        message,
    };
    let raw = serde_json::value::to_raw_value(&reply).ok();
    let error = EnvelopeParts {
        kind: protocol::ErrorReply::TYPE,
        id: Some(id),
        data: raw.as_deref(),
        ..EnvelopeParts::default()
    };
    Outbound::Text(error.encode())
}
