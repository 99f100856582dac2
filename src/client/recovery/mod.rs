//! Recovery of room messages across a reconnect, and of messages the server dropped for this
//! client, from the server's room history.
//!
//! A server with history stamps every room message with its stream position (`offset` and
//! `epoch`, see [`Position`]). The client keeps, per joined room, the position of the last
//! message it delivered, and:
//!
//! - rejoins from it after a reconnect (`join` with `since`): the server replays what was missed,
//!   or says why it cannot (`recovered:false` and a reason);
//! - drops a message at or below it (a replay overlapping what was delivered), counted in
//!   [`Stats::duplicates`](super::Stats::duplicates);
//! - on a message past the next offset (the server dropped some for this client), asks the
//!   history for the gap and holds the room's later messages (bounded) until it is filled;
//! - when a rejoin is answered `too_many` (more were missed than the server replays at a
//!   rejoin), reads them from the history page by page in the same way.
//!
//! Held messages are bounded: 1024 behind one room's fill and 16 MiB behind all of them; past
//! either, or when the history does not answer within 10 s, the fill is given up: what is held
//! is delivered in order and the loss reported (`too_many`, `unavailable`). A lost socket ends
//! the fills under way; the rejoin then asks from the last message delivered.
//!
//! So subscribers see each publication once, in offset order; every rejoin from a position and
//! every gap is reported as an [`Event::Recovery`](super::Event::Recovery). A gap fill's
//! `history` request is a request like the user's: counted in
//! [`Stats::accepted`](super::Stats::accepted) and then written or failed. Text subscribers see
//! frames as they arrive (the `history` answer included), before any of this. A server without
//! history sends no positions, and none of this happens. [`Client::history`] reads a room's
//! history directly.

mod streams;
mod wire;

use std::borrow::Cow;
use std::time::Duration;

use bytestring::ByteString;

use super::{Client, RequestFrame};
use crate::envelope::{Envelope, Head, WireMessage};
use crate::error::{Error, Result};

pub use streams::Position;
pub(crate) use streams::{FillRequest, Limits, Outcome, Recovered, Streams};
pub(crate) use wire::{joined_at, with_since, HistoryData, HistoryQuery, HISTORY};

/// How long [`Client::history`] waits for the answer.
pub const HISTORY_TIMEOUT: Duration = Duration::from_secs(10);

/// One publication from a room's history.
#[derive(Debug, Clone, PartialEq)]
pub struct Publication {
    /// Its offset in the room's stream.
    pub offset: u64,
    /// The room message, as members received it live.
    pub envelope: Envelope,
}

/// A room's history, as [`Client::history`] answers it.
#[derive(Debug, Clone, PartialEq)]
pub struct RoomHistory {
    /// Oldest first.
    pub publications: Vec<Publication>,
    /// The room's position now: the offset of its latest publication, and its epoch.
    pub position: Position,
    /// Whether `publications` holds every publication after the request's `since` up to
    /// `position` (false when the history no longer keeps them all, or `limit` cut them).
    pub complete: bool,
}

impl RoomHistory {
    /// Decode a `history` answer. Publications without an offset are skipped (they cannot be
    /// placed in the stream).
    fn decode(reply: &Envelope) -> Result<Self> {
        let data = HistoryData::parse(reply.data.as_deref())?;
        let mut publications = Vec::with_capacity(data.publications.len());
        for raw in data.publications {
            let head = Head::parse(raw.get())?;
            if let Some(offset) = wire::offset_of(raw) {
                publications.push(Publication {
                    offset,
                    envelope: head.to_owned_envelope(),
                });
            }
        }
        Ok(RoomHistory {
            publications,
            position: Position {
                epoch: data.epoch,
                offset: data.offset,
            },
            complete: data.complete,
        })
    }
}

impl Client {
    /// Read `room`'s history: the publications after `since` (without it, the latest ones), at
    /// most `limit` (the server's default and cap when `None`), oldest first, with the room's
    /// current position. Waits at most [`HISTORY_TIMEOUT`].
    ///
    /// Fails with [`Error::Remote`] when the server refuses (no history, the join check, an
    /// unknown room), and as [`request`](Client::request) does otherwise.
    pub async fn history(
        &self,
        room: &str,
        since: Option<Position>,
        limit: Option<u64>,
    ) -> Result<RoomHistory> {
        let query = HistoryQuery {
            room: room.to_owned(),
            since,
            limit,
        };
        let reply = self
            .request_frame(RequestFrame::History(query), HISTORY_TIMEOUT)
            .await?;
        if reply.kind != HISTORY {
            return Err(Error::Decode(format!(
                "expected a {HISTORY:?} reply, got {:?}",
                reply.kind
            )));
        }
        RoomHistory::decode(&reply)
    }
}

/// The on-connect frames to send on a new socket: each `join` of a room with a position gets
/// `since` (the last publication delivered), so the server replays what was missed.
pub(crate) fn rejoin_frames<'a>(
    on_connect: &'a [ByteString],
    streams: &Streams<ByteString>,
) -> Cow<'a, [ByteString]> {
    if streams.is_empty() {
        return Cow::Borrowed(on_connect);
    }
    let rejoin = |text: &ByteString| {
        let head = Head::parse(text).ok()?;
        if head.kind != crate::protocol::Join::TYPE {
            return None;
        }
        with_since(text, &streams.since(head.room.as_deref()?)?)
    };
    Cow::Owned(
        on_connect
            .iter()
            .map(|text| rejoin(text).unwrap_or_else(|| text.clone()))
            .collect(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::client::recovery::streams::JoinedAt;

    #[test]
    fn only_joins_of_rooms_with_a_position_get_since() {
        let mut streams = Streams::new(Limits {
            max_held: 1,
            max_held_bytes: 1,
            fill_limit: 1,
        });
        let frames = vec![
            crate::protocol::join("a").encode(),
            crate::protocol::join("b").encode(),
            crate::protocol::leave("a").encode(),
        ];
        assert!(matches!(rejoin_frames(&frames, &streams), Cow::Borrowed(_)));
        let at = JoinedAt {
            position: Position {
                epoch: "e".into(),
                offset: 7,
            },
            recovered: None,
            reason: None,
        };
        let _ = streams.joined("a", at);
        let out = rejoin_frames(&frames, &streams);
        assert_eq!(
            &*out[0],
            r#"{"type":"join","room":"a","since":{"offset":7,"epoch":"e"}}"#
        );
        assert_eq!(out[1], frames[1]);
        assert_eq!(out[2], frames[2]);
    }
}
