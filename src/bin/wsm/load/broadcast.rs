//! The broadcast driver: every connection joins a room; the first `--senders` of each room
//! publish (at `--publish-rate` each, or open loop at their share of `--rate`); every member
//! times every receipt, from the publish's due time (corrected) and from its send
//! (uncorrected).

use std::collections::{BTreeSet, HashMap};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix_ws_manager::client::{self, Client};
use actix_ws_manager::protocol::{self, ErrorReply, Joined, RoomMessage};
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;

use super::drivers::{now_us, timed, us_at, wait_start, wait_up, ConnResult, Coordination, Plan};
use super::schedule::{wake_for, Schedule, LATE};

/// The `data` of a broadcast publish: the due and send times that each receipt is timed
/// against (on the [`now_us`] clock).
#[derive(Debug, Serialize, Deserialize)]
struct Tick<'a> {
    /// The publisher (its connection's index) and its sequence number, from 1.
    p: u64,
    seq: u64,
    due_at_us: u64,
    sent_at_us: u64,
    #[serde(borrow)]
    pad: &'a str,
}

/// Broadcast: join room `load-<idx % rooms>`; the first `--senders` connections of each room
/// publish at `--publish-rate` until the deadline; every member times every receipt until the
/// coordinator says stop.
pub(crate) async fn broadcast_driver(client: Client, idx: usize, shared: Arc<Coordination>) {
    let rooms = shared.args.rooms;
    let room_idx = idx % rooms;
    let room = format!("load-{room_idx}");
    let is_sender = idx < shared.args.senders * rooms;
    // Subscribe before the join is registered: the router sees the subscription first.
    let mut joined = client.subscribe::<Joined>(4);
    let mut msgs = client.subscribe::<RoomMessage>(8192);
    let mut errors_rx = client.subscribe::<ErrorReply>(64);
    let up = join_room(&client, &room, &mut joined, shared.args.connect_timeout).await;
    let up = timed(&shared, idx, up);
    let ok = up.is_ok();
    let _ = shared.ready.send((idx, up));
    if !ok {
        return;
    }
    let Some(plan) = wait_start(&shared, idx).await else {
        return;
    };
    let own = OwnCopies::default();
    let publisher = Publisher {
        client: &client,
        shared: &shared,
        room: &room,
        room_idx,
        idx,
        own: &own,
    };
    let sending = async {
        if !is_sender {
            return Published::default();
        }
        publisher.publish_until(&plan).await
    };
    let receiving = receive_until_stop(&shared, idx, &own, &mut msgs);
    let (published, mut res) = futures_util::future::join(sending, receiving).await;
    res.sent = published.sent;
    res.late = published.late;
    res.due_not_sent = published.due_not_sent;
    res.errors += published.errors;
    while errors_rx.try_recv().is_ok() {
        res.errors += 1;
    }
    let _ = shared.results.send(res);
}

/// Join `room` on every connect (so a reconnect rejoins), wait until connected, then for the
/// server's `joined`, each within `timeout`.
async fn join_room(
    client: &Client,
    room: &str,
    joined: &mut mpsc::Receiver<client::Inbound<Joined>>,
    timeout: Duration,
) -> std::result::Result<(), String> {
    let join = protocol::join(room);
    client
        .send_on_connect(join)
        .await
        .map_err(|e| e.to_string())?;
    wait_up(client, timeout).await?;
    match tokio::time::timeout(timeout, joined.recv()).await {
        Ok(Some(_)) => Ok(()),
        Ok(None) => Err("the client closed before joining".to_owned()),
        Err(_) => Err(format!("no `joined` for {room} in time")),
    }
}

/// What one publisher did.
#[derive(Default)]
struct Published {
    sent: u64,
    errors: u64,
    /// Publishes that left more than [`LATE`] after they could have.
    late: u64,
    /// Open loop: publishes due before the end that never left (the window stayed full).
    due_not_sent: u64,
}

/// A publisher's own copies of its publishes (it is a member of its room too): a publish is
/// in flight until its own copy comes back, and `--window` caps those in flight.
#[derive(Default)]
struct OwnCopies {
    /// The highest sequence number of its own that came back.
    back: std::sync::atomic::AtomicU64,
    /// Wakes the publisher when one comes back.
    notify: tokio::sync::Notify,
}

/// One publishing connection.
struct Publisher<'a> {
    client: &'a Client,
    shared: &'a Coordination,
    room: &'a str,
    room_idx: usize,
    /// The connection's index (its schedule's seed, its series shard).
    idx: usize,
    own: &'a OwnCopies,
}

impl Publisher<'_> {
    /// Publish a [`Tick`] to the room until the deadline: open loop at the plan's rate per
    /// sender (each publish due on its [`Schedule`]), else at `--publish-rate` (each due when
    /// it is sent).
    async fn publish_until(&self, plan: &Plan) -> Published {
        let args = &self.shared.args;
        if let Some(rate) = plan.rate_at(&args.phases, plan.started, true) {
            return self.open_loop(plan, rate).await;
        }
        let mut out = Published::default();
        let mut tick = tokio::time::interval(Duration::from_secs_f64(1.0 / args.publish_rate));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut seq = 0u64;
        loop {
            tick.tick().await;
            if Instant::now() >= plan.deadline {
                break;
            }
            seq += 1;
            let ok = self.publish(seq, None).await;
            self.count(ok, &mut out);
        }
        out
    }

    /// Open loop: each publish leaves at its due time, at most `--window` in flight (sent and
    /// its own copy not back yet; one not back within `--timeout`, or in flight when the
    /// connection is lost, stops counting, as a lost connection fails the echo driver's
    /// requests at once): a publish due while the window is full waits, and its receipts count
    /// from its due time. Late and never-sent publishes count as in the echo driver.
    async fn open_loop(&self, plan: &Plan, rate: f64) -> Published {
        let (args, mut out) = (&self.shared.args, Published::default());
        // Subscribed once up: every state from here on is news.
        let mut events = self.client.subscribe_events(16);
        let mut schedule = Schedule::new(plan.started, rate, args.arrival, self.idx as u64);
        let (mut seq, mut given_up, mut freed) = (0u64, 0u64, plan.started);
        let in_flight = |seq: u64, given_up: u64| {
            seq.saturating_sub(self.own.back.load(Ordering::Relaxed).max(given_up)) as usize
        };
        loop {
            let now = Instant::now();
            while in_flight(seq, given_up) < args.window
                && wake_for(schedule.due()) <= now
                && schedule.due() < plan.deadline
                && now < plan.deadline
            {
                seq += 1;
                let due = schedule.due();
                out.late += u64::from(now.saturating_duration_since(due.max(freed)) > LATE);
                let ok = self.publish(seq, Some(due.min(now))).await;
                self.count(ok, &mut out);
                self.advance(&mut schedule, plan);
            }
            if Instant::now() >= plan.deadline || schedule.due() >= plan.deadline {
                while schedule.due() < plan.deadline {
                    out.due_not_sent += 1;
                    self.advance(&mut schedule, plan);
                }
                break;
            }
            let room = in_flight(seq, given_up) < args.window;
            tokio::select! {
                _ = self.own.notify.notified(), if !room => freed = Instant::now(),
                _ = tokio::time::sleep(args.timeout), if !room => {
                    // The oldest in flight never came back: stop waiting for it.
                    given_up = self.own.back.load(Ordering::Relaxed).max(given_up) + 1;
                }
                Some(ev) = events.recv() => {
                    if let client::Event::State(client::ConnectionState::Disconnected { .. }) = ev {
                        // Lost with the connection (a copy that still comes back, recovered
                        // after the rejoin, counts as received all the same).
                        given_up = seq;
                    }
                }
                _ = tokio::time::sleep_until(wake_for(schedule.due()).into()), if room => {}
                _ = tokio::time::sleep_until(plan.deadline.into()) => {}
            }
        }
        out
    }

    /// The schedule's next due time, at the rate in force at the current one.
    fn advance(&self, schedule: &mut Schedule, plan: &Plan) {
        if let Some(rate) = plan.rate_at(&self.shared.args.phases, schedule.due(), true) {
            schedule.set_rate(rate);
        }
        schedule.advance();
    }

    /// Count one publish: taken by the client, or failed.
    fn count(&self, ok: bool, out: &mut Published) {
        if ok {
            out.sent += 1;
            self.shared.published[self.room_idx].fetch_add(1, Ordering::Relaxed);
        } else {
            self.shared.timeline.error(self.idx);
            out.errors += 1;
        }
    }

    /// Publish tick `seq`, due at `due` (`None`: now); whether the client took it.
    async fn publish(&self, seq: u64, due: Option<Instant>) -> bool {
        let sent_at_us = now_us();
        let data = Tick {
            p: self.idx as u64,
            seq,
            due_at_us: due.map_or(sent_at_us, us_at),
            sent_at_us,
            pad: &self.shared.pad,
        };
        match protocol::publish(self.room, &data) {
            Ok(out) => self.client.send_envelope(out).await.is_ok(),
            Err(_) => false,
        }
    }
}

/// Time every room message received until the coordinator says stop (then take what is
/// already queued): latencies from the due time and from the send, receipts, messages without
/// a send time (errors), and by each publisher's sequence numbers, duplicates and reorders.
async fn receive_until_stop(
    shared: &Coordination,
    idx: usize,
    own: &OwnCopies,
    msgs: &mut mpsc::Receiver<client::Inbound<RoomMessage>>,
) -> ConnResult {
    let mut stop = shared.stop.clone();
    let mut res = ConnResult::new();
    let mut order = Sequences::default();
    let mut take = |m: client::Inbound<RoomMessage>| {
        let at = |k: &str| m.data.0.get(k).and_then(|v| v.as_u64());
        match (at("due_at_us"), at("sent_at_us"), at("p"), at("seq")) {
            (Some(due), Some(sent), Some(publisher), Some(seq)) => {
                let now = now_us();
                shared.timeline.message(idx, now.saturating_sub(due));
                res.record(now.saturating_sub(due), now.saturating_sub(sent));
                order.take(publisher, seq, &mut res);
                if publisher == idx as u64 && seq > own.back.load(Ordering::Relaxed) {
                    own.back.store(seq, Ordering::Relaxed);
                    own.notify.notify_one();
                }
                shared.receipts.fetch_add(1, Ordering::Relaxed);
            }
            _ => res.errors += 1,
        }
    };
    loop {
        tokio::select! {
            r = stop.wait_for(|s| *s) => { let _ = r; break; }
            m = msgs.recv() => match m {
                Some(m) => take(m),
                None => break,
            },
        }
    }
    while let Ok(m) = msgs.try_recv() {
        take(m);
    }
    res
}

/// The sequence numbers one member has seen, per publisher: the highest, and those of the
/// last [`WINDOW`] below it (older ones are forgotten, so the memory stays bounded).
#[derive(Default)]
struct Sequences {
    seen: HashMap<u64, (u64, BTreeSet<u64>)>,
}

/// How far below a publisher's highest sequence number a duplicate is still recognised.
const WINDOW: u64 = 4096;

impl Sequences {
    /// Publisher `p`'s message `seq` arrived: count it in `res` as a duplicate, or as
    /// reordered when a later one came first.
    fn take(&mut self, p: u64, seq: u64, res: &mut ConnResult) {
        let (highest, set) = self.seen.entry(p).or_default();
        if !set.insert(seq) {
            res.duplicated += 1;
            return;
        }
        if seq < *highest {
            res.reordered += 1;
        }
        *highest = (*highest).max(seq);
        if set.len() as u64 > 2 * WINDOW {
            let keep = set.split_off(&highest.saturating_sub(WINDOW));
            *set = keep;
        }
    }
}
