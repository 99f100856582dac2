//! Presence kept in Redis for every node, so that `presence` counts every node's members and a
//! dead node's members leave on their own.
//!
//! **Keys** (`<prefix>` is the channel prefix):
//!
//! - `<prefix>{<room>}:presence`: a hash per room, one field per member,
//!   `<node> <epoch> <session id>`, whose value is the entry as members see it
//!   (`{"session":S,"identity":U,"info":I}`). Fields are set and deleted as the hub's windows
//!   close (joins and leaves within one window cancel on the hub), so a hash holds at most one
//!   field per member and vanishes with its last member.
//! - `<prefix>{node:<node>}:alive`: this node's liveness key, holding its current *epoch* (a
//!   random id), refreshed every [`presence_refresh`](super::RedisConfig::presence_refresh)
//!   (default 5 s) with a TTL of [`presence_ttl`](super::RedisConfig::presence_ttl) (default
//!   15 s).
//! - `<prefix>{node:<node>}:rooms:<epoch>`: the rooms where the node has fields of that epoch
//!   (pruned when its last member leaves a room), so a sweep never scans Redis.
//! - `<prefix>presence:nodes`: the set of `<node> <epoch>` registrations to watch.
//!
//! **Sweeping.** Every node, every refresh, looks at each registration: when its liveness key no
//! longer holds its epoch (the node died, or was cut off for longer than the TTL, or moved on
//! to a new epoch), it removes that registration's fields room by room, each room in one Lua
//! script that deletes the fields and publishes the leaves as a `presence_diff` on the room's
//! channel. `HDEL` is atomic, so however many nodes sweep at once each leave is sent once; a
//! sweeper that dies half-way leaves the rest for the next one.
//!
//! **Epochs.** A node registers under a new epoch whenever its Redis state may be wrong: at
//! start, when its liveness key was gone (Redis restarted, or the node was cut off past the
//! TTL and swept) and after any write Redis did not take. Registering replaces, per room and
//! atomically, the node's older fields by its current members, so readers never see them twice;
//! the earlier epoch stays registered for a sweep of the rooms the node has left meanwhile.
//!
//! **Reading.** A `presence` answer reads the room's hash at answer time (one script: the other
//! nodes' count and at most the list limit of their entries) and adds this node's members
//! from the hub, so it is exact for this node at once and for the others once their windows
//! have closed and reached Redis (about 100 ms plus a round trip). Diffs travel on the room's
//! channel, in order with the publishing node's messages.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytestring::ByteString;
use serde_json::value::RawValue;

use super::presence_lua::{CHANGE, READ, REFRESH, REGISTER, SWEEP_NODE, SWEEP_ROOM};
use super::publisher::{Answer, Publish, Queue};
use super::resp::{self, Reply};
use crate::envelope::{EnvelopeParts, WireMessage};
use crate::protocol::PresenceDiff;
use crate::server::backplane::{PresenceChange, PresenceDone, PresenceRead};
use crate::server::counters::Counters;

/// Rooms re-registered before waiting for Redis to answer them.
const REGISTER_BATCH: usize = 256;

/// The SHA-1 names of the scripts, as `EVALSHA` takes them.
struct Shas {
    change: String,
    register: String,
    read: String,
    refresh: String,
    sweep_node: String,
    sweep_room: String,
}

/// This node's members as Redis should hold them, and the current epoch.
#[derive(Default)]
struct Local {
    /// Empty before the first registration (nothing is written until then).
    epoch: String,
    /// Room -> session id -> entry: what a registration writes.
    rooms: HashMap<Arc<str>, HashMap<u64, Arc<str>>>,
}

/// The presence side of a started Redis backplane, shared by the hub's thread (changes, reads)
/// and the liveness task on the backplane's thread.
pub(super) struct Presence {
    prefix: String,
    node: String,
    shas: Shas,
    refresh: Duration,
    ttl_ms: String,
    queue: Arc<Queue>,
    counters: Arc<Counters>,
    /// Locked while a change or a room's registration is submitted, so that both reach Redis
    /// in the order the mirror changed.
    local: Mutex<Local>,
    /// A write was not taken: register again (under a new epoch) at the next refresh.
    resync: Arc<AtomicBool>,
    /// The header of this node's sweeps: `w<random>` stands in for the swept node's
    /// incarnation, with its own sequence numbers.
    sweep_inc: String,
    sweep_seq: AtomicU64,
}

impl Presence {
    pub(super) fn new(
        config: &super::RedisConfig,
        queue: Arc<Queue>,
        counters: Arc<Counters>,
    ) -> Self {
        let sha = super::history::sha;
        Self {
            prefix: config.channel_prefix.clone(),
            node: config.node_id.clone(),
            shas: Shas {
                change: sha(CHANGE),
                register: sha(REGISTER),
                read: sha(READ),
                refresh: sha(REFRESH),
                sweep_node: sha(SWEEP_NODE),
                sweep_room: sha(SWEEP_ROOM),
            },
            refresh: config.presence_refresh,
            ttl_ms: config
                .presence_ttl
                .as_millis()
                .clamp(1, i64::MAX as u128)
                .to_string(),
            queue,
            counters,
            local: Mutex::new(Local::default()),
            resync: Arc::new(AtomicBool::new(false)),
            sweep_inc: format!("w{:016x}", fastrand::u64(..)),
            sweep_seq: AtomicU64::new(0),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Local> {
        // Nothing panics while it is held; a poisoned mirror is still the best there is.
        self.local.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn hash(&self, room: &str) -> String {
        super::history::key(&self.prefix, room, "presence")
    }

    fn alive(&self, node: &str) -> String {
        format!("{}{{node:{node}}}:alive", self.prefix)
    }

    fn index(&self, node: &str, epoch: &str) -> String {
        format!("{}{{node:{node}}}:rooms:{epoch}", self.prefix)
    }

    fn registry(&self) -> String {
        format!("{}presence:nodes", self.prefix)
    }

    /// Submit `command`; a refusal makes the next refresh register again.
    fn submit(&self, command: Vec<u8>) {
        let resync = self.resync.clone();
        let done = Answer::Done(Box::new(move |result| {
            if let Err(why) = result {
                tracing::debug!("a presence write was not taken ({why}); registering again");
                resync.store(true, Ordering::Relaxed);
            }
        }));
        self.queue.submit(Publish {
            command,
            done: Some(done),
        });
    }

    /// Submit `command` and wait for Redis's answer.
    async fn call(&self, command: Vec<u8>) -> Result<Reply, String> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.queue.submit(Publish {
            command,
            done: Some(Answer::Reply(Box::new(move |reply| {
                let _ = tx.send(reply);
            }))),
        });
        rx.await
            .map_err(|_| "the Redis task has stopped".to_owned())?
    }

    /// One window's changes of this node's members in `room` (on the hub's thread): the mirror
    /// follows, Redis gets the writes, and the other nodes `payload` (the diff with its header).
    pub(super) fn change(&self, room: &Arc<str>, change: &PresenceChange<'_>, payload: &[u8]) {
        let mut local = self.lock();
        let new_room = !local.rooms.contains_key(room);
        let entries = local.rooms.entry(room.clone()).or_default();
        for (id, entry) in change.joins {
            entries.insert(*id, entry.clone());
        }
        for id in change.leaves {
            entries.remove(id);
        }
        if entries.is_empty() {
            local.rooms.remove(room);
        }
        let prefix = if local.epoch.is_empty() {
            String::new() // not registered yet: the registration writes the members
        } else {
            format!("{} {} ", self.node, local.epoch)
        };
        if prefix.is_empty() && payload.is_empty() {
            return;
        }
        let channel = format!("{}{room}", self.prefix);
        let (hash, joins) = (self.hash(room), change.joins.len().to_string());
        let ids: Vec<String> = change.joins.iter().map(|(id, _)| id.to_string()).collect();
        let leaves: Vec<String> = change.leaves.iter().map(u64::to_string).collect();
        let mut args: Vec<&[u8]> = vec![
            b"EVALSHA",
            self.shas.change.as_bytes(),
            b"1",
            hash.as_bytes(),
            prefix.as_bytes(),
            channel.as_bytes(),
            payload,
            joins.as_bytes(),
        ];
        for ((_, entry), id) in change.joins.iter().zip(&ids) {
            args.push(id.as_bytes());
            args.push(entry.as_bytes());
        }
        args.extend(leaves.iter().map(String::as_bytes));
        self.submit(resp::pack(&args));
        if prefix.is_empty() {
            return;
        }
        let index = self.index(&self.node, &local.epoch);
        if change.emptied {
            self.submit(resp::pack(&[b"SREM", index.as_bytes(), room.as_bytes()]));
        } else if new_room && !change.joins.is_empty() {
            self.submit(resp::pack(&[b"SADD", index.as_bytes(), room.as_bytes()]));
        }
    }

    /// Read the other nodes' members of `room` (at most `limit` listed) for `done`.
    pub(super) fn read(&self, room: &str, limit: usize, done: PresenceDone) {
        let own = format!("{} ", self.node);
        let command = resp::pack(&[
            b"EVALSHA",
            self.shas.read.as_bytes(),
            b"1",
            self.hash(room).as_bytes(),
            own.as_bytes(),
            limit.to_string().as_bytes(),
        ]);
        let answer = Answer::Reply(Box::new(move |reply| done(reply.and_then(parse_read))));
        self.queue.submit(Publish {
            command,
            done: Some(answer),
        });
    }

    /// Keep this node registered and sweep lapsed registrations, every refresh, until the
    /// backplane's thread ends.
    pub(super) async fn run(self: Arc<Self>) {
        let mut tick = tokio::time::interval(self.refresh);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            if let Err(why) = self.keep_alive().await {
                tracing::debug!("presence liveness not refreshed: {why}");
                self.resync.store(true, Ordering::Relaxed);
                continue;
            }
            if let Err(why) = self.sweep().await {
                tracing::debug!("presence sweep unfinished: {why}");
            }
        }
    }

    /// Refresh the liveness key, or register under a new epoch when it was lost or a write
    /// failed.
    async fn keep_alive(&self) -> Result<(), String> {
        let epoch = self.lock().epoch.clone();
        let resync = self.resync.swap(false, Ordering::Relaxed);
        if !epoch.is_empty() && !resync {
            let refresh = resp::pack(&[
                b"EVALSHA",
                self.shas.refresh.as_bytes(),
                b"1",
                self.alive(&self.node).as_bytes(),
                epoch.as_bytes(),
                self.ttl_ms.as_bytes(),
            ]);
            if matches!(self.call(refresh).await?, Reply::Int(1)) {
                return Ok(());
            }
            tracing::info!(
                node = %self.node,
                "presence: this node's liveness key was gone (Redis restarted, or the node was \
                 cut off past the TTL); registering its members again"
            );
        }
        self.register().await
    }

    /// Register every local member under a new epoch (see the module docs).
    async fn register(&self) -> Result<(), String> {
        let epoch = format!("{:016x}", fastrand::u64(..));
        let (old, rooms) = {
            let mut local = self.lock();
            let old = std::mem::replace(&mut local.epoch, epoch.clone());
            (old, local.rooms.keys().cloned().collect::<Vec<_>>())
        };
        if !old.is_empty() {
            self.counters.presence_resyncs.bump();
        }
        let mine = format!("{} {epoch}", self.node);
        let mut registrations = vec![mine.clone()];
        if !old.is_empty() {
            // Its fields in rooms this node has left meanwhile are swept.
            registrations.push(format!("{} {old}", self.node));
        }
        let mut sadd: Vec<&[u8]> = vec![b"SADD"];
        let registry = self.registry();
        sadd.push(registry.as_bytes());
        sadd.extend(registrations.iter().map(String::as_bytes));
        self.call(resp::pack(&sadd)).await?;
        let alive = self.alive(&self.node);
        self.call(resp::pack(&[
            b"SET",
            alive.as_bytes(),
            epoch.as_bytes(),
            b"PX",
            self.ttl_ms.as_bytes(),
        ]))
        .await?;
        let (node, prefix) = (format!("{} ", self.node), format!("{mine} "));
        let index = self.index(&self.node, &epoch);
        for batch in rooms.chunks(REGISTER_BATCH) {
            let mut last = None;
            for room in batch {
                let local = self.lock();
                let Some(entries) = local.rooms.get(room) else {
                    continue; // left meanwhile
                };
                let hash = self.hash(room);
                let ids: Vec<String> = entries.keys().map(u64::to_string).collect();
                let mut args: Vec<&[u8]> = vec![
                    b"EVALSHA",
                    self.shas.register.as_bytes(),
                    b"1",
                    hash.as_bytes(),
                    node.as_bytes(),
                    prefix.as_bytes(),
                ];
                for (entry, id) in entries.values().zip(&ids) {
                    args.push(id.as_bytes());
                    args.push(entry.as_bytes());
                }
                self.submit(resp::pack(&args));
                let (tx, rx) = tokio::sync::oneshot::channel();
                self.queue.submit(Publish {
                    command: resp::pack(&[b"SADD", index.as_bytes(), room.as_bytes()]),
                    done: Some(Answer::Reply(Box::new(move |reply| {
                        let _ = tx.send(reply);
                    }))),
                });
                last = Some(rx);
            }
            if let Some(rx) = last {
                rx.await
                    .map_err(|_| "the Redis task has stopped".to_owned())??;
            }
        }
        Ok(())
    }

    /// Remove the members of every registration whose liveness key no longer holds its epoch.
    async fn sweep(&self) -> Result<(), String> {
        let registry = self.registry();
        let Reply::Array(members) = self
            .call(resp::pack(&[b"SMEMBERS", registry.as_bytes()]))
            .await?
        else {
            return Err("SMEMBERS did not answer a list".into());
        };
        let mine = format!("{} {}", self.node, self.lock().epoch);
        for member in members {
            let Some(member) = member.as_bytes().and_then(|b| std::str::from_utf8(b).ok()) else {
                continue;
            };
            if member == mine {
                continue;
            }
            if let Some((node, epoch)) = member.split_once(' ') {
                self.sweep_registration(node, epoch).await?;
            }
        }
        Ok(())
    }

    /// Sweep one registration, if it lapsed: its rooms one by one, then the registration.
    async fn sweep_registration(&self, node: &str, epoch: &str) -> Result<(), String> {
        let index = self.index(node, epoch);
        let reply = self
            .call(resp::pack(&[
                b"EVALSHA",
                self.shas.sweep_node.as_bytes(),
                b"2",
                self.alive(node).as_bytes(),
                index.as_bytes(),
                epoch.as_bytes(),
            ]))
            .await?;
        let Reply::Array(rooms) = reply else {
            return Ok(()); // alive
        };
        let prefix = format!("{node} {epoch} ");
        for room in rooms {
            let Some(room) = room.as_bytes().and_then(|b| std::str::from_utf8(b).ok()) else {
                continue;
            };
            let seq = self.sweep_seq.fetch_add(1, Ordering::Relaxed) + 1;
            let header = format!("{node} {} {seq} p", self.sweep_inc);
            let gone = self
                .call(resp::pack(&[
                    b"EVALSHA",
                    self.shas.sweep_room.as_bytes(),
                    b"1",
                    self.hash(room).as_bytes(),
                    prefix.as_bytes(),
                    format!("{}{room}", self.prefix).as_bytes(),
                    header.as_bytes(),
                    leaves_prefix(room).as_bytes(),
                ]))
                .await?;
            if let Reply::Int(n) = gone {
                if n > 0 {
                    tracing::info!(%node, %room, members = n, "presence: swept a lapsed node's members");
                    self.counters.presence_swept.add(n as u64);
                }
            }
            self.call(resp::pack(&[b"SREM", index.as_bytes(), room.as_bytes()]))
                .await?;
        }
        let left = self.call(resp::pack(&[b"SCARD", index.as_bytes()])).await?;
        if matches!(left, Reply::Int(0)) {
            let registry = self.registry();
            let member = format!("{node} {epoch}");
            self.call(resp::pack(&[
                b"SREM",
                registry.as_bytes(),
                member.as_bytes(),
            ]))
            .await?;
        }
        Ok(())
    }

    /// On a graceful stop: give up the liveness key and sweep this node's own registration, so
    /// the other nodes see its members leave at once instead of after the TTL.
    pub(super) async fn farewell(&self) {
        let epoch = self.lock().epoch.clone();
        if epoch.is_empty() {
            return;
        }
        let alive = self.alive(&self.node);
        if self
            .call(resp::pack(&[b"DEL", alive.as_bytes()]))
            .await
            .is_ok()
        {
            if let Err(why) = self.sweep_registration(&self.node, &epoch).await {
                tracing::debug!("presence farewell unfinished: {why}");
            }
        }
    }
}

/// A `presence_diff` of leaves only in `room`, up to its list of leaves (`"leaves":[`).
fn leaves_prefix(room: &str) -> String {
    let empty = RawValue::from_string("{\"joins\":[],\"leaves\":[]}".to_owned()).ok();
    let frame: ByteString = EnvelopeParts {
        kind: PresenceDiff::TYPE,
        room: Some(room),
        data: empty.as_deref(),
        ..EnvelopeParts::default()
    }
    .encode();
    frame.strip_suffix("]}}").unwrap_or(&frame).to_owned()
}

/// The read script's answer as a [`PresenceRead`].
fn parse_read(reply: Reply) -> Result<PresenceRead, String> {
    let bad = || format!("the presence read script answered {reply:?}");
    let Reply::Array(parts) = &reply else {
        return Err(bad());
    };
    let Some(Reply::Int(count)) = parts.first() else {
        return Err(bad());
    };
    let mut members = Vec::with_capacity(parts.len().saturating_sub(1));
    for part in &parts[1..] {
        let text = part
            .as_bytes()
            .and_then(|b| std::str::from_utf8(b).ok())
            .ok_or_else(bad)?;
        members.push(text.to_owned());
    }
    Ok(PresenceRead {
        count: (*count).max(0) as u64,
        members,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sweep_frames_are_diffs_of_leaves() {
        let prefix = leaves_prefix("r\"1");
        let frame = format!("{prefix}{{\"session\":\"a.s-1\"}}]}}}}");
        let v: serde_json::Value = serde_json::from_str(&frame).expect("JSON");
        assert_eq!(v["type"], "presence_diff");
        assert_eq!(v["room"], "r\"1");
        assert_eq!(v["data"]["joins"], serde_json::json!([]));
        assert_eq!(v["data"]["leaves"][0]["session"], "a.s-1");
    }

    #[test]
    fn reads_parse_or_say_why_not() {
        let bulk = |s: &'static str| Reply::Bulk(bytes::Bytes::from_static(s.as_bytes()));
        let read = parse_read(Reply::Array(vec![Reply::Int(3), bulk("{}")])).expect("a read");
        assert_eq!((read.count, read.members.len()), (3, 1));
        assert!(parse_read(Reply::Int(3)).is_err());
    }
}
