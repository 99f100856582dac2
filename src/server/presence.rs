//! Presence for server code: who is in a room ([`Rooms::presence`]) and who comes and goes
//! ([`Rooms::subscribe_presence`]), the same figures clients get with `presence` and
//! `presence_diff`. The hub keeps them (`hub/presence.rs`); these ask it through its queue.

use std::sync::Arc;

use tokio::sync::mpsc;

use super::command::Command;
use super::Rooms;
use crate::error::{Error, Result};
use crate::protocol::{PresenceData, PresenceDiff};

/// Most changes a [`Rooms::subscribe_presence`] channel may be asked to hold.
pub const MAX_PRESENCE_WATCH: usize = 65_536;

impl Rooms {
    /// Who is in `room` now: the exact `count` and the members (sessions and attached actors,
    /// with their identity and `info`), at most
    /// [`presence_list_limit`](crate::config::ServerConfig::presence_list_limit) of them in the
    /// order of their session ids. It waits its turn in the hub's queue, so it sees every join
    /// and leave queued before it.
    pub async fn presence(&self, room: &str) -> Result<PresenceData> {
        let room = Arc::from(room);
        self.ask(|tell| Command::PresenceOf { room, tell }).await
    }

    /// Receive `room`'s presence changes from now on, gathered over 100 ms like the
    /// `presence_diff`s members get (with every join: server code has no join of its own to
    /// leave out). The channel holds `capacity` changes (1 to [`MAX_PRESENCE_WATCH`]); a
    /// watcher that falls that far behind loses changes (a warning is traced) and should read
    /// [`presence`](Self::presence) again. Dropping the receiver ends the subscription.
    pub async fn subscribe_presence(
        &self,
        room: &str,
        capacity: usize,
    ) -> Result<mpsc::Receiver<PresenceDiff>> {
        if !(1..=MAX_PRESENCE_WATCH).contains(&capacity) {
            return Err(Error::Config(format!(
                "subscribe_presence capacity must be 1 to {MAX_PRESENCE_WATCH}, not {capacity}"
            )));
        }
        if !self.shared.config.is_valid_room(room) {
            return Err(Error::BadRoom(room.to_owned()));
        }
        let (tx, rx) = mpsc::channel(capacity);
        let room = Arc::from(room);
        self.command(Command::WatchPresence { room, tx }).await?;
        Ok(rx)
    }
}
