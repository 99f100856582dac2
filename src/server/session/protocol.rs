//! The rooms protocol as a session speaks it: one whole message in, the client's answer and the
//! hub's command out. One function per message type (`join`, `leave`, `publish`, `echo`,
//! `ping`, application types), each checking what the protocol asks before it acts.

use std::sync::Arc;

use actix::prelude::*;
use bytes::Bytes;
use bytestring::ByteString;
use serde_json::value::RawValue;

use super::{Mode, Session};
use crate::envelope::{EnvelopeParts, Head, WireMessage};
use crate::protocol::{self, codes};
use crate::server::command::{Command, JoinReply, Publish};
use crate::server::handler::{ErasedHandler, MessageContext};
use crate::server::history::Position;
use crate::server::outbox::Outbound;
use crate::server::token::MAX_INFO_BYTES;
use crate::server::Rooms;

/// A reply envelope with only a type, an id, a room and data.
pub(crate) fn envelope(
    kind: &str,
    id: Option<u64>,
    room: Option<&str>,
    data: Option<&RawValue>,
) -> Outbound {
    Outbound::Text(
        EnvelopeParts {
            kind,
            id,
            room,
            data,
            ..EnvelopeParts::default()
        }
        .encode(),
    )
}

impl Session {
    /// Send an `error` envelope; the session stays open.
    pub(super) fn error(
        &mut self,
        id: Option<u64>,
        code: &str,
        message: &str,
        ctx: &mut Context<Self>,
    ) {
        let reply = protocol::ErrorReply {
            code: code.to_owned(),
            message: message.to_owned(),
        };
        let raw = serde_json::value::to_raw_value(&reply).ok();
        let out = envelope(protocol::ErrorReply::TYPE, id, None, raw.as_deref());
        self.send(out, ctx);
    }

    /// Send a reply envelope with only a type, an id, a room and data.
    fn reply(
        &mut self,
        kind: &str,
        id: Option<u64>,
        room: Option<&str>,
        data: Option<&RawValue>,
        ctx: &mut Context<Self>,
    ) {
        let out = envelope(kind, id, room, data);
        self.send(out, ctx);
    }

    /// A whole text message (unfragmented, or put together): parse its head, apply the rate
    /// limit, and hand it to the function for its type.
    pub(super) fn on_text(&mut self, text: ByteString, ctx: &mut Context<Self>) {
        self.shared.counters.received(text.len());
        if self.mode == Mode::Echo {
            if self.admit(None, ctx) {
                self.send(Outbound::Text(text), ctx);
            }
            return;
        }
        let head = match Head::parse(&text) {
            Ok(head) => head,
            Err(e) => {
                if !self.admit(None, ctx) {
                    return;
                }
                let msg = format!("not a JSON object with a string \"type\": {e}");
                return self.error(None, codes::MALFORMED, &msg, ctx);
            }
        };
        if !self.admit(head.id, ctx) {
            return;
        }
        let kind = head.kind.as_ref();
        if kind == protocol::Join::TYPE {
            self.on_join(&head, ctx);
        } else if kind == protocol::History::TYPE {
            self.on_history(&head, ctx);
        } else if kind == protocol::Leave::TYPE {
            self.on_leave(&head, ctx);
        } else if kind == protocol::Publish::TYPE {
            self.on_publish(head, ctx);
        } else if kind == protocol::Echo::TYPE {
            let data = head.data.map(ToOwned::to_owned);
            self.reply(protocol::Echo::TYPE, head.id, None, data.as_deref(), ctx);
        } else if kind == protocol::Presence::TYPE {
            self.on_presence(&head, ctx);
        } else if kind == protocol::Refresh::TYPE {
            self.on_refresh(&head, ctx);
        } else if kind == protocol::Ping::TYPE {
            self.reply(protocol::Pong::TYPE, head.id, None, None, ctx);
        } else if let Some(handler) = self.handler(kind) {
            self.on_application(handler, head, ctx);
        } else {
            let msg = format!("unknown message type {kind:?}");
            self.error(head.id, codes::UNKNOWN_TYPE, &msg, ctx);
        }
    }

    /// `join`: check the name, `since`, the join check and the room limit, then ask the hub;
    /// answered `joined` (by the hub when it keeps history or has other nodes).
    fn on_join(&mut self, head: &Head<'_>, ctx: &mut Context<Self>) {
        let id = head.id;
        let Some(room) = self.checked_room(head, ctx) else {
            return;
        };
        let Ok(since) = self.checked_since(head, ctx) else {
            return;
        };
        let listen = head.presence == Some(true);
        let Ok(info) = self.join_info(head, ctx) else {
            return;
        };
        let member = self.rooms.contains(room.as_ref());
        if member && !self.shared.history && !listen {
            return self.reply(protocol::Joined::TYPE, id, Some(&room), None, ctx);
        }
        if !member {
            if !self.may_join(&room) {
                let msg = format!("not allowed to join room {room:?}");
                return self.error(id, codes::FORBIDDEN_ROOM, &msg, ctx);
            }
            let max = self.shared.config.max_rooms_per_session;
            if self.rooms.len() >= max {
                let msg = format!("a session may be in at most {max} rooms");
                return self.error(id, codes::TOO_MANY_ROOMS, &msg, ctx);
            }
            self.rooms.insert(room.clone());
        }
        // The hub answers when it has the room's position or waits for other nodes.
        let (reply, joined) = if self.shared.remote_backplane || self.shared.history {
            (Some(JoinReply { id, since }), None)
        } else {
            let joined = envelope(protocol::Joined::TYPE, id, Some(&room), None);
            (None, Some(joined))
        };
        let join = Command::Join {
            id: self.id,
            room,
            reply,
            listen,
            info,
        };
        self.submit(join, joined, ctx);
    }

    /// What this session shows in presence when it joins: what the authentication hook said,
    /// else its token's `info` claim, else the join's `data.info` (at most 1 KiB of JSON; more is answered `bad_data` and the join is
    /// not made).
    fn join_info(
        &mut self,
        head: &Head<'_>,
        ctx: &mut Context<Self>,
    ) -> Result<Option<Arc<RawValue>>, ()> {
        let given = self.info.clone();
        if let Some(info) = given.or_else(|| self.token.as_ref().and_then(|t| t.grant.info.clone()))
        {
            return Ok(Some(info));
        }
        #[derive(serde::Deserialize)]
        struct JoinData {
            #[serde(default)]
            info: Option<Box<RawValue>>,
        }
        let Some(data) = head.data else {
            return Ok(None);
        };
        // Only `info` means something in a join's data; anything else there is left alone,
        // as it was before presence.
        let info = serde_json::from_str::<JoinData>(data.get())
            .ok()
            .and_then(|d| d.info)
            .filter(|i| i.get() != "null");
        match info {
            Some(info) if info.get().len() > MAX_INFO_BYTES => {
                let msg = format!(
                    "info takes {} bytes of JSON, more than {MAX_INFO_BYTES}",
                    info.get().len()
                );
                self.error(head.id, codes::BAD_DATA, &msg, ctx);
                Err(())
            }
            info => Ok(info.map(Arc::from)),
        }
    }

    /// The envelope's room when this session may look into it: a member, or a session the
    /// join check would let in; otherwise answers `bad_room` or `forbidden_room`.
    fn readable_room(&mut self, head: &Head<'_>, ctx: &mut Context<Self>) -> Option<Arc<str>> {
        let room = self.checked_room(head, ctx)?;
        if !self.rooms.contains(room.as_ref()) && !self.may_join(&room) {
            let msg = format!("not allowed to look into room {room:?}");
            self.error(head.id, codes::FORBIDDEN_ROOM, &msg, ctx);
            return None;
        }
        Some(room)
    }

    /// `presence`: anyone the join check lets into the room may ask who is there.
    fn on_presence(&mut self, head: &Head<'_>, ctx: &mut Context<Self>) {
        let Some(room) = self.readable_room(head, ctx) else {
            return;
        };
        let presence = Command::Presence {
            id: self.id,
            room,
            request: head.id,
        };
        self.submit(presence, None, ctx);
    }

    /// `history`: anyone the join check lets into the room may read its history.
    fn on_history(&mut self, head: &Head<'_>, ctx: &mut Context<Self>) {
        let Some(room) = self.readable_room(head, ctx) else {
            return;
        };
        let Ok(since) = self.checked_since(head, ctx) else {
            return;
        };
        let history = Command::History {
            id: self.id,
            room,
            request: head.id,
            since,
            limit: head.limit,
        };
        self.submit(history, None, ctx);
    }

    /// The envelope's `since` when it is `{"offset":O,"epoch":"X"}` or absent; otherwise
    /// answers `bad_position`.
    fn checked_since(
        &mut self,
        head: &Head<'_>,
        ctx: &mut Context<Self>,
    ) -> Result<Option<Position>, ()> {
        let Some(raw) = head.since else {
            return Ok(None);
        };
        match serde_json::from_str::<Position>(raw.get()) {
            Ok(position) => Ok(Some(position)),
            Err(e) => {
                let msg = format!("since must be {{\"offset\":O,\"epoch\":\"X\"}}: {e}");
                self.error(head.id, codes::BAD_POSITION, &msg, ctx);
                Err(())
            }
        }
    }

    /// `leave`: only a member leaves; answered `left`.
    fn on_leave(&mut self, head: &Head<'_>, ctx: &mut Context<Self>) {
        let id = head.id;
        let Some(room) = self.checked_room(head, ctx) else {
            return;
        };
        if !self.rooms.remove(room.as_ref()) {
            let msg = format!("not a member of room {room:?}");
            return self.error(id, codes::NOT_JOINED, &msg, ctx);
        }
        let left = envelope(protocol::Left::TYPE, id, Some(&room), None);
        let leave = Command::Leave { id: self.id, room };
        self.submit(leave, Some(left), ctx);
    }

    /// `publish`: only a member publishes, under a valid event name; with an `id` it is
    /// answered `ack`.
    fn on_publish(&mut self, head: Head<'_>, ctx: &mut Context<Self>) {
        let id = head.id;
        let Some(room) = self.checked_room(&head, ctx) else {
            return;
        };
        // Rule: only members publish to a room, so a typo in a room name is an error the
        // publisher sees rather than a message that silently reaches nobody.
        let Some(room) = self.rooms.get(room.as_ref()).cloned() else {
            let msg = format!("join room {room:?} before publishing to it");
            return self.error(id, codes::NOT_JOINED, &msg, ctx);
        };
        let event = match head.event.as_deref() {
            None => None,
            Some(event) if protocol::is_valid_event(event) => Some(Arc::from(event)),
            Some(event) => {
                let msg = format!(
                    "event {event:?} must be 1 to 64 characters of A-Z a-z 0-9 _ . : - and \
                     not one of the protocol's own types ({})",
                    protocol::RESERVED_TYPES.join(" ")
                );
                return self.error(id, codes::BAD_EVENT, &msg, ctx);
            }
        };
        // With other nodes, the hub answers once the backplane took it (or says it could
        // not); otherwise the ack goes once the publish is in the hub's queue.
        let remote = self.shared.remote_backplane;
        let publish = Command::Publish(Publish {
            room,
            from: Some(self.publisher.clone()),
            event,
            data: head.data.map(ToOwned::to_owned),
            reached: None,
            reply_to: id.filter(|_| remote).map(|id| (self.id, id)),
        });
        let ack = id
            .filter(|_| !remote)
            .map(|_| envelope(protocol::Ack::TYPE, id, None, None));
        self.submit(publish, ack, ctx);
    }

    /// A message type the application handles ([`Rooms::on_message`]).
    fn on_application(&mut self, handler: ErasedHandler, head: Head<'_>, ctx: &mut Context<Self>) {
        let sender = MessageContext {
            session: self.id,
            identity: self.identity.clone(),
            id: head.id,
            room: head.room.as_deref().map(str::to_owned),
            rooms: Rooms::from_parts(self.hub.clone(), self.shared.clone()),
        };
        match handler(sender, head.data) {
            // The next message of this client is read when the handler is done: in order,
            // and a slow handler slows its own client only.
            Ok(fut) => {
                ctx.wait(actix::fut::wrap_future::<_, Self>(fut));
            }
            Err(e) => {
                let msg = format!("data of {:?} does not decode: {e}", head.kind);
                self.error(head.id, codes::BAD_DATA, &msg, ctx);
            }
        }
    }

    /// Whether this session may join `room`: its token's `rooms` claim (if any) and the join
    /// check (if any) must both allow it.
    fn may_join(&self, room: &str) -> bool {
        let granted = self.token.as_ref().and_then(|t| t.grant.rooms.as_ref());
        if granted.is_some_and(|rooms| !rooms.allows(room)) {
            return false;
        }
        let check = self
            .shared
            .join_check
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        check.is_none_or(|check| check(self.identity.as_deref(), room))
    }

    /// The application handler for message type `kind`, if one is registered.
    fn handler(&self, kind: &str) -> Option<ErasedHandler> {
        let handlers = self
            .shared
            .handlers
            .read()
            .unwrap_or_else(|e| e.into_inner());
        handlers.get(kind).cloned()
    }

    /// The envelope's room if it follows the rules; otherwise answers `bad_room`.
    fn checked_room(&mut self, head: &Head<'_>, ctx: &mut Context<Self>) -> Option<Arc<str>> {
        match head.room.as_deref() {
            Some(room) if self.shared.config.is_valid_room(room) => Some(Arc::from(room)),
            other => {
                let msg = format!(
                    "room {other:?} must be 1 to {} characters of A-Z a-z 0-9 _ . : -",
                    self.shared.config.max_room_name_len
                );
                self.error(head.id, codes::BAD_ROOM, &msg, ctx);
                None
            }
        }
    }

    /// A whole binary message.
    pub(super) fn on_binary(&mut self, bytes: Bytes, ctx: &mut Context<Self>) {
        self.shared.counters.received(bytes.len());
        if !self.admit(None, ctx) {
            return;
        }
        match self.mode {
            Mode::Echo => self.send(Outbound::Binary(bytes), ctx),
            Mode::Rooms => self.error(
                None,
                codes::BINARY_UNSUPPORTED,
                "the rooms endpoint speaks JSON text frames only",
                ctx,
            ),
        }
    }
}
