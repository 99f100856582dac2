//! The hub's command queue: each [`Command`] handled in queue order, and the [`HubStats`]
//! snapshot.

use std::collections::HashSet;
use std::sync::Arc;

use actix::prelude::*;

use super::{Hub, MemberSink};
use crate::server::command::{Command, Publisher, SessionId};
use crate::server::counters::HubStats;

/// Handler for the command queue: one command at a time, in queue order.
impl StreamHandler<Command> for Hub {
    fn handle(&mut self, cmd: Command, ctx: &mut Context<Self>) {
        match cmd {
            Command::Connect {
                id,
                queue,
                evict,
                who,
            } => self.connect(id, MemberSink::Session { queue, evict }, who),
            Command::Attach { id, recipient } => {
                let who = Arc::new(Publisher {
                    from: format!("actor-{id}").into(),
                    session: None,
                });
                self.connect(id, MemberSink::Actor(recipient), who)
            }
            Command::Disconnect { id } => {
                self.remove(id);
            }
            Command::Join {
                id,
                room,
                reply,
                listen,
                info,
            } => self.join(id, room, reply, (listen, info)),
            Command::Presence { id, room, request } => self.answer_presence(id, &room, request),
            Command::PresenceOf { room, tell } => self.tell_presence(&room, tell),
            Command::WatchPresence { room, tx } => self.watch_presence(room, tx),
            Command::Leave { id, room } => self.leave(id, room),
            Command::Stats(tell) => {
                let _ = tell.send(self.stats());
            }
            Command::SendTo { id, frame, sent } => {
                let _ = sent.send(self.send_to(id, frame));
            }
            Command::History {
                id,
                room,
                request,
                since,
                limit,
            } => self.answer_history(id, &room, request, since.as_ref(), limit),
            Command::Members { room, tell } => {
                let mut ids: Vec<SessionId> = self
                    .rooms
                    .get(&room)
                    .map(|set| set.iter().copied().collect())
                    .unwrap_or_default();
                ids.sort_unstable();
                let _ = tell.send(ids);
            }
            Command::Remote {
                room,
                frame,
                offset,
                ..
            } => {
                self.counters.backplane_received.bump();
                self.fan_out(&room, &frame, offset);
            }
            // Not counted in `backplane_received` (room messages): the listeners' copies are
            // counted in `presence_diffs`.
            Command::RemotePresence { room, frame, .. } => self.remote_presence(&room, &frame),
            Command::Publish(msg) => {
                let reached = self.publish(&msg);
                if let Some(tell) = msg.reached {
                    let _ = tell.send(reached);
                }
            }
        }
        self.counters.rooms.set(self.rooms.len() as u64);
        self.counters
            .presence_entries
            .set(self.presence.entries() as u64);
        if self.presence.start_timer() {
            ctx.run_later(super::presence::WINDOW, |hub, _| hub.flush_all_presence());
        }
    }

    fn finished(&mut self, ctx: &mut Context<Self>) {
        // Every sender is gone: the server handle was dropped.
        ctx.stop();
    }
}

impl Hub {
    /// A [`HubStats`]: the counters, and what the hub holds now.
    fn stats(&self) -> HubStats {
        HubStats {
            sessions: self.members.len(),
            rooms: self.rooms.len(),
            members: self.rooms.values().map(HashSet::len).sum(),
            ..HubStats::read(&self.counters)
        }
    }
}
