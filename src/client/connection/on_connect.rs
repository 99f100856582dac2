//! The on-connect set: the messages sent first on every socket (room joins, subscriptions), and
//! the [`OnConnect`] edits the [`Client`](crate::client::Client) handles make to it.
//!
//! A room is joined by at most one `join` in the set: [`Client::join`] and
//! [`Client::join_with_presence`] replace the room's earlier join (a plain join by one with
//! presence, or presence with other `info`), so the rejoin after a reconnect is the one asked
//! for last, and [`Client::leave`] takes out whichever join the room has.
//!
//! [`Client::join`]: crate::client::Client::join
//! [`Client::join_with_presence`]: crate::client::Client::join_with_presence
//! [`Client::leave`]: crate::client::Client::leave

use std::collections::HashSet;

use actix::prelude::*;
use bytestring::ByteString;

use super::Connection;
use crate::envelope::{Head, WireMessage};
use crate::error::Error;
use crate::protocol::Join;

/// Sent by a [`Client`](crate::client::Client) handle: change the on-connect set. Every edit
/// that puts a message in the set also sends it now when a socket is open; an edit that takes
/// one out sends `then` (a `leave` after removing a `join`) when a socket is open.
#[derive(Message)]
#[rtype(result = "Result<(), Error>")]
pub(crate) enum OnConnect {
    /// Add a message (once: the same text again changes nothing).
    Add(ByteString),
    /// Join `room` with `text` (a `join` frame), in place of any other join of the room.
    Join { room: String, text: ByteString },
    /// Take out the message with this text.
    Remove {
        text: ByteString,
        then: Option<ByteString>,
    },
    /// Take out every join of `room`.
    Leave { room: String, then: ByteString },
}

/// Handler for [`OnConnect`].
impl Handler<OnConnect> for Connection {
    type Result = Result<(), Error>;
    fn handle(&mut self, msg: OnConnect, _: &mut Context<Self>) -> Self::Result {
        let open = self.link.as_ref().is_some_and(|l| l.closing.is_none());
        let mut outbox = self.outbox.borrow_mut();
        if outbox.is_refusing() {
            return Err(Error::ClientClosed);
        }
        let limit = self.config.max_on_connect;
        let (send, forget) = match msg {
            OnConnect::Add(text) => (self.on_connect.add(text, limit)?, None),
            OnConnect::Join { room, text } => (self.on_connect.join(&room, text, limit)?, None),
            OnConnect::Remove { text, then } => {
                let room = self.on_connect.remove(&text).then(|| joined_room(&text));
                (then, room.flatten())
            }
            OnConnect::Leave { room, then } => {
                let had = self.on_connect.leave(&room);
                (Some(then), had.then_some(room))
            }
        };
        // A room no longer joined has no position to rejoin from.
        if let Some(room) = forget {
            self.streams.borrow_mut().forget(&room);
        }
        match send {
            Some(text) if open => outbox.push_replay(text),
            _ => Ok(()),
        }
    }
}

/// The room of a `join` frame; `None` for any other frame.
fn joined_room(text: &str) -> Option<String> {
    let head = Head::parse(text).ok()?;
    (head.kind == Join::TYPE).then(|| head.room.map(String::from))?
}

/// The messages sent first on every socket, in registration order, without duplicates.
#[derive(Debug, Default)]
pub(super) struct OnConnectSet {
    frames: Vec<ByteString>,
    /// The same texts as `frames`, so that the duplicate check is O(1).
    texts: HashSet<ByteString>,
}

impl OnConnectSet {
    /// The messages, in the order they are sent.
    pub(super) fn frames(&self) -> &[ByteString] {
        &self.frames
    }

    /// Add `text` unless it is there already; answers the message to send now (`None` when it
    /// was there). Fails when the set holds `limit` messages.
    fn add(&mut self, text: ByteString, limit: usize) -> Result<Option<ByteString>, Error> {
        if self.texts.contains(&text) {
            return Ok(None);
        }
        if self.frames.len() >= limit {
            return Err(Error::OnConnectFull { limit });
        }
        self.texts.insert(text.clone());
        self.frames.push(text.clone());
        Ok(Some(text))
    }

    /// Make `text` the join of `room`: it takes the place of the room's first join in the set
    /// (so the rooms keep their order) and any other join of the room goes; answers the message
    /// to send now (`None` when it was the room's join already).
    fn join(
        &mut self,
        room: &str,
        text: ByteString,
        limit: usize,
    ) -> Result<Option<ByteString>, Error> {
        if self.texts.contains(&text) {
            return Ok(None);
        }
        let Some(first) = self.frames.iter().position(|t| is_join_of(t, room)) else {
            return self.add(text, limit);
        };
        let old = std::mem::replace(&mut self.frames[first], text.clone());
        self.texts.remove(&old);
        self.texts.insert(text.clone());
        // Joins of the room registered by hand (`send_on_connect`) after the first one.
        let (mut index, texts) = (0, &mut self.texts);
        self.frames.retain(|t| {
            let keep = index <= first || !is_join_of(t, room);
            index += 1;
            if !keep {
                texts.remove(t);
            }
            keep
        });
        Ok(Some(text))
    }

    /// Take out `text`; answers whether it was there.
    fn remove(&mut self, text: &ByteString) -> bool {
        let had = self.texts.remove(text);
        if had {
            self.frames.retain(|t| t != text);
        }
        had
    }

    /// Take out every join of `room`; answers whether there was one.
    fn leave(&mut self, room: &str) -> bool {
        let before = self.frames.len();
        let texts = &mut self.texts;
        self.frames.retain(|t| {
            let join = is_join_of(t, room);
            if join {
                texts.remove(t);
            }
            !join
        });
        self.frames.len() != before
    }
}

/// Whether `text` is a `join` of `room`.
fn is_join_of(text: &str, room: &str) -> bool {
    joined_room(text).is_some_and(|r| r == room)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol;

    fn presence_join(room: &str, info: &str) -> ByteString {
        let info = serde_json::json!({ "name": info });
        protocol::join_with_presence(room, Some(&info))
            .expect("json")
            .encode()
    }

    #[test]
    fn a_join_with_presence_takes_the_place_of_the_rooms_join() {
        let mut set = OnConnectSet::default();
        let plain = protocol::join("a").encode();
        set.add(plain.clone(), 8).unwrap();
        set.add(protocol::join("b").encode(), 8).unwrap();
        let with = presence_join("a", "x");
        assert_eq!(set.join("a", with.clone(), 8).unwrap(), Some(with.clone()));
        assert_eq!(set.frames(), [with.clone(), protocol::join("b").encode()]);
        // The same join again: nothing to send.
        assert_eq!(set.join("a", with.clone(), 8).unwrap(), None);
        // Other info replaces it; a plain join replaces that.
        let other = presence_join("a", "y");
        set.join("a", other.clone(), 8).unwrap();
        assert_eq!(set.frames()[0], other);
        set.join("a", plain.clone(), 8).unwrap();
        assert_eq!(set.frames()[0], plain);
        assert_eq!(set.texts.len(), 2);
    }

    #[test]
    fn every_join_of_a_room_goes_on_leave_and_on_a_new_join() {
        let mut set = OnConnectSet::default();
        // Both registered by hand (send_on_connect), so the set holds two joins of `a`.
        set.add(protocol::join("a").encode(), 8).unwrap();
        set.add(protocol::join("b").encode(), 8).unwrap();
        set.add(presence_join("a", "x"), 8).unwrap();
        let with = presence_join("a", "z");
        set.join("a", with.clone(), 8).unwrap();
        assert_eq!(set.frames(), [with, protocol::join("b").encode()]);
        set.add(presence_join("a", "x"), 8).unwrap();
        assert!(set.leave("a"));
        assert!(!set.leave("a"));
        assert_eq!(set.frames(), [protocol::join("b").encode()]);
        assert_eq!(set.texts.len(), 1);
    }

    #[test]
    fn the_limit_holds_for_new_rooms_not_for_replacements() {
        let mut set = OnConnectSet::default();
        set.add(protocol::join("a").encode(), 1).unwrap();
        assert!(matches!(
            set.join("b", protocol::join("b").encode(), 1),
            Err(Error::OnConnectFull { limit: 1 })
        ));
        assert!(set.join("a", presence_join("a", "x"), 1).is_ok());
        assert!(set.remove(&presence_join("a", "x")));
        assert!(set.frames().is_empty());
    }
}
