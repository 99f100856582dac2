//! Which rooms the node wants ([`Wanted`], written by the hub) and which a connection has asked
//! Redis for ([`Asked`], the task's own): the two halves of subscriptions that cannot diverge
//! (see the module docs of [`subscriber`](super::subscriber)).

use std::collections::{HashMap, HashSet};
use std::sync::Mutex;

use tokio::sync::Notify;

use crate::server::backplane::Done;

/// Most channels named in one SUBSCRIBE or UNSUBSCRIBE.
const CHANNELS_PER_COMMAND: usize = 256;

/// Channels touched since the task last looked, at most; beyond, the task compares every
/// wanted room once instead (so this record stays bounded whatever the hub does meanwhile).
const MAX_TOUCHED: usize = 64 * 1024;

/// The rooms this node wants to receive, written by the hub, read by the task.
#[derive(Default)]
pub(super) struct Wanted {
    inner: Mutex<WantedInner>,
    /// Told on every change; the task waits on it.
    pub(super) changed: Notify,
}

#[derive(Default)]
pub(super) struct WantedInner {
    /// Channel -> the `done`s of joins waiting for the subscription to hold.
    pub(super) rooms: HashMap<String, Vec<Done>>,
    /// Channels added or removed since the task last looked (so that it compares only those).
    touched: HashSet<String>,
    /// `touched` overflowed: compare every room.
    overflowed: bool,
    /// Channels Redis confirmed on the current connection (and still wanted): a history read
    /// for a join waits until its room is in here.
    confirmed: HashSet<String>,
}

impl WantedInner {
    fn touch(&mut self, channel: &str) {
        if self.overflowed || self.touched.len() >= MAX_TOUCHED {
            self.overflowed = true;
            self.touched.clear();
        } else {
            self.touched.insert(channel.to_owned());
        }
    }
}

impl Wanted {
    /// The first local member joined: want `channel`; `done` is told once it is subscribed.
    pub(super) fn add(&self, channel: String, done: Done) {
        let mut inner = self.lock();
        inner.touch(&channel);
        inner.rooms.entry(channel).or_default().push(done);
        drop(inner);
        self.changed.notify_one();
    }

    /// The last local member left: stop wanting `channel`. Joins still waiting are told `Ok`
    /// (their members left already).
    pub(super) fn remove(&self, channel: &str) {
        let mut inner = self.lock();
        inner.touch(channel);
        inner.confirmed.remove(channel);
        let waiting = inner.rooms.remove(channel);
        drop(inner);
        self.changed.notify_one();
        for done in waiting.into_iter().flatten() {
            done(Ok(()));
        }
    }

    pub(super) fn lock(&self) -> std::sync::MutexGuard<'_, WantedInner> {
        // A panic in a `done` cannot leave the map half-updated: take it over.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// What to send so that a connection that asked for `asked` asks for exactly the wanted
    /// rooms: (subscribe, unsubscribe). `all` compares every room (a new connection).
    pub(super) fn difference(
        &self,
        asked: &HashSet<String>,
        all: bool,
    ) -> (Vec<String>, Vec<String>) {
        let mut inner = self.lock();
        let touched = std::mem::take(&mut inner.touched);
        let all = all || std::mem::take(&mut inner.overflowed);
        if all {
            let subscribe = inner
                .rooms
                .keys()
                .filter(|c| !asked.contains(*c))
                .cloned()
                .collect();
            let unsubscribe = asked
                .iter()
                .filter(|c| !inner.rooms.contains_key(*c))
                .cloned()
                .collect();
            return (subscribe, unsubscribe);
        }
        let (mut subscribe, mut unsubscribe) = (Vec::new(), Vec::new());
        for channel in touched {
            match (inner.rooms.contains_key(&channel), asked.contains(&channel)) {
                (true, false) => subscribe.push(channel),
                (false, true) => unsubscribe.push(channel),
                _ => {} // joined and left (or left and joined) in between: nothing to do
            }
        }
        (subscribe, unsubscribe)
    }

    /// `channel` is subscribed on the current connection: the `done`s waiting on it, taken,
    /// when it is still wanted.
    pub(super) fn take_waiting(&self, channel: &str) -> Vec<Done> {
        let mut inner = self.lock();
        let Some(waiting) = inner.rooms.get_mut(channel).map(std::mem::take) else {
            return Vec::new();
        };
        inner.confirmed.insert(channel.to_owned());
        waiting
    }

    /// Tell `done` once `channel` (wanted already) is subscribed: at once when it is, or with
    /// the joins waiting for it (told why not while Redis is unreachable).
    pub(super) fn when_subscribed(&self, channel: &str, done: Done) {
        let mut inner = self.lock();
        if inner.confirmed.contains(channel) {
            drop(inner);
            return done(Ok(()));
        }
        match inner.rooms.get_mut(channel) {
            Some(waiting) => waiting.push(done),
            None => {
                drop(inner);
                done(Err("the room is not received on this node".into()));
            }
        }
    }

    /// The connection is lost: nothing is subscribed any more.
    pub(super) fn unconfirm_all(&self) {
        self.lock().confirmed.clear();
    }

    /// Tell every waiting join why it is not subscribed yet (they stay wanted).
    pub(super) fn fail_waiting(&self, why: &str) {
        let waiting: Vec<Done> = self
            .lock()
            .rooms
            .values_mut()
            .flat_map(std::mem::take)
            .collect();
        for done in waiting {
            done(Err(why.to_owned()));
        }
    }
}

/// What one connection asked Redis for: after Redis has read everything sent, its
/// subscriptions are exactly `channels`.
#[derive(Default)]
pub(super) struct Asked {
    pub(super) channels: HashSet<String>,
    /// SUBSCRIBEs of a channel not yet confirmed (joins are told when the last one is).
    confirming: HashMap<String, u32>,
}

/// Commands to send, and how many answers Redis owes for them (one per channel named).
pub(super) struct Commands {
    pub(super) commands: Vec<u8>,
    pub(super) answers: usize,
}

impl Asked {
    /// Record and pack the SUBSCRIBE and UNSUBSCRIBE commands for these channels.
    pub(super) fn ask(&mut self, subscribe: Vec<String>, unsubscribe: Vec<String>) -> Commands {
        let mut commands = Vec::new();
        for (command, channels) in [("SUBSCRIBE", &subscribe), ("UNSUBSCRIBE", &unsubscribe)] {
            for chunk in channels.chunks(CHANNELS_PER_COMMAND) {
                redis::cmd(command)
                    .arg(chunk)
                    .write_packed_command(&mut commands);
            }
        }
        let answers = subscribe.len() + unsubscribe.len();
        for channel in unsubscribe {
            self.channels.remove(&channel);
        }
        for channel in subscribe {
            *self.confirming.entry(channel.clone()).or_default() += 1;
            self.channels.insert(channel);
        }
        Commands { commands, answers }
    }

    /// Redis confirmed a SUBSCRIBE of `channel`: whether that was the last one asked and the
    /// channel is still asked for (its waiting joins may then be told).
    pub(super) fn confirmed(&mut self, channel: &str) -> bool {
        let left = self.confirming.get_mut(channel).map(|n| {
            *n = n.saturating_sub(1);
            *n
        });
        if left != Some(0) {
            return false;
        }
        self.confirming.remove(channel);
        self.channels.contains(channel)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;

    /// Whatever the interleaving of joins, leaves, looks by the task and new connections (a
    /// bounded record of changes overflowing on the way), what a connection asked for ends
    /// equal to the wanted rooms, and every join is told once.
    #[test]
    fn subscriptions_converge_on_the_wanted_rooms() {
        let told = Arc::new(AtomicUsize::new(0));
        for seed in 0..50 {
            let mut rng = fastrand::Rng::with_seed(seed);
            let wanted = Wanted::default();
            let mut asked: HashSet<String> = HashSet::new();
            let mut joins = 0;
            told.store(0, Ordering::Relaxed);
            for _ in 0..2000 {
                let channel = format!("c{}", rng.usize(..40));
                match rng.usize(..10) {
                    0..=3 => {
                        let told = told.clone();
                        joins += 1;
                        wanted.add(
                            channel,
                            Box::new(move |_| {
                                told.fetch_add(1, Ordering::Relaxed);
                            }),
                        )
                    }
                    4..=6 => wanted.remove(&channel),
                    7 => asked.clear(), // a new connection
                    _ => {}
                }
                if rng.usize(..4) == 0 {
                    let all = asked.is_empty();
                    let (subscribe, unsubscribe) = wanted.difference(&asked, all);
                    for c in unsubscribe {
                        assert!(asked.remove(&c), "unsubscribes only what it asked for");
                    }
                    for c in subscribe {
                        assert!(asked.insert(c), "subscribes only what it did not ask for");
                    }
                }
            }
            let all = asked.is_empty();
            let (subscribe, unsubscribe) = wanted.difference(&asked, all);
            for c in unsubscribe {
                asked.remove(&c);
            }
            asked.extend(subscribe);
            let rooms: HashSet<String> = wanted.lock().rooms.keys().cloned().collect();
            assert_eq!(asked, rooms, "seed {seed}");
            // Joins still waiting are told when their subscription is confirmed.
            for c in &rooms {
                for done in wanted.take_waiting(c) {
                    done(Ok(()));
                }
            }
            assert_eq!(told.load(Ordering::Relaxed), joins, "seed {seed}");
        }
    }
}
