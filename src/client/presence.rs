//! Presence on the client: join a room so as to be seen and to see who comes and goes, and ask
//! who is there.
//!
//! - [`Client::join_with_presence`] joins with `"presence":true` (and the `info` shown to the
//!   others). Like every join it is an on-connect message, so the rejoin after a reconnect
//!   carries the same flag and info (and `since`, when the server keeps history).
//! - The server then pushes [`PresenceDiff`](crate::protocol::PresenceDiff)s: subscribe them
//!   like any message, `client.subscribe::<PresenceDiff>(n)`; each comes with its `room`. They
//!   name who joined and who left since the last one, gathered over at most 100 ms, never this
//!   client's own join, in order with the room's messages. (Diffs are not held back by a
//!   [recovery](super::recovery) gap fill: one may reach subscribers before room messages held
//!   for the fill.)
//! - [`Client::presence`] asks for the room's members now ([`PresenceData`]: an exact count and
//!   the members up to the server's list limit).
//!
//! A view of who is in a room is the answer to [`Client::presence`] with the diffs applied in
//! the order they arrive (by `session`: a join adds, a leave removes). A diff can overlap the
//! answer (a join the answer already holds), which applying by `session` absorbs. After a
//! reconnect the client is a new session and its diffs start again from its rejoin: ask again
//! (the rejoin's `joined` is the moment).
//!
//! ```no_run
//! use actix_ws_manager::client::Client;
//! use actix_ws_manager::protocol::PresenceDiff;
//!
//! # async fn run(client: Client) -> Result<(), actix_ws_manager::Error> {
//! let mut diffs = client.subscribe::<PresenceDiff>(64);
//! client
//!     .join_with_presence("lobby", Some(serde_json::json!({ "name": "ann" })))
//!     .await?;
//! let now = client.presence("lobby").await?;
//! tracing::info!(count = now.count, "in the lobby");
//! while let Some(diff) = diffs.recv().await {
//!     tracing::info!(room = ?diff.room, joins = diff.data.joins.len(), leaves = diff.data.leaves.len());
//! }
//! # Ok(()) }
//! ```

use std::time::Duration;

use bytestring::ByteString;

use super::connection::OnConnect;
use super::Client;
use crate::envelope::WireMessage;
use crate::error::{Error, Result};
use crate::protocol::{self, Presence, PresenceData, MAX_PRESENCE_INFO_BYTES};

/// How long [`Client::presence`] waits for the answer.
pub const PRESENCE_TIMEOUT: Duration = Duration::from_secs(10);

impl Client {
    /// Join `room` with presence: be shown to the room's other presence members (with `info`,
    /// at most [`MAX_PRESENCE_INFO_BYTES`] of JSON) and receive the room's
    /// [`PresenceDiff`](crate::protocol::PresenceDiff)s. Sent now if connected and again after
    /// every reconnect, with the same flag and info, in place of the room's earlier join (a plain
    /// [`join`](Self::join), or this with other info). Like `join`, it does not wait for the
    /// server's `joined`: subscribe [`Joined`](crate::protocol::Joined) to see it.
    ///
    /// On one connection the server keeps the entry it made at the room's first join: joining
    /// again turns presence changes on but keeps the first info, and a plain `join` does not
    /// turn them off. The new way shows from the next connection on; to apply it at once,
    /// [`leave`](Self::leave) first (the others then see this client leave and join).
    ///
    /// Fails with [`Error::PresenceInfoTooLarge`] (nothing sent: the server would refuse it at
    /// every reconnect), and as [`join`](Self::join) does otherwise.
    pub async fn join_with_presence(
        &self,
        room: &str,
        info: Option<serde_json::Value>,
    ) -> Result<()> {
        if let Some(info) = &info {
            let size = serde_json::to_string(info)
                .map_err(|e| Error::Encode(e.to_string()))?
                .len();
            if size > MAX_PRESENCE_INFO_BYTES {
                return Err(Error::PresenceInfoTooLarge {
                    size,
                    limit: MAX_PRESENCE_INFO_BYTES,
                });
            }
        }
        let text = protocol::join_with_presence(room, info.as_ref())?.encode();
        self.join_frame(room, text).await
    }

    /// Who is in `room` now: the exact count, and the members up to the server's list limit
    /// (`truncated` says when there are more). Waits at most [`PRESENCE_TIMEOUT`]. Need not be
    /// a member, if the server's join check lets this client into the room.
    ///
    /// Fails with [`Error::Remote`] when the server refuses (`forbidden_room`, `bad_room`), and
    /// as [`request`](Self::request) does otherwise.
    pub async fn presence(&self, room: &str) -> Result<PresenceData> {
        let reply = self
            .request_envelope(protocol::presence(room), PRESENCE_TIMEOUT)
            .await?;
        if reply.kind != Presence::TYPE {
            return Err(Error::Decode(format!(
                "expected a {:?} reply, got {:?}",
                Presence::TYPE,
                reply.kind
            )));
        }
        reply.data_as()
    }

    /// Make `text` (a `join` frame) the room's one join in the on-connect set.
    pub(super) async fn join_frame(&self, room: &str, text: ByteString) -> Result<()> {
        let room = room.to_owned();
        self.on_connect(OnConnect::Join { room, text }).await
    }
}
