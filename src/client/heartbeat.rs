//! The Heartbeat actor: pings the peer, measures round-trip time from the answers, and declares
//! the peer dead when nothing at all has arrived within the timeout.
//!
//! It lives in its own actor, beside the Connection, and reads "when did anything last arrive"
//! from the client's shared counters. It never waits on the socket, so a socket whose writes
//! have stalled cannot stop its timer (the actix-web #2441 trap): a silent peer is declared dead
//! within `timeout + interval` whatever state the socket is in, and the Connection then cuts it.
//!
//! **While the client itself has paused reading** (a subscriber with
//! [`Overflow::Backpressure`](super::Overflow::Backpressure) is full, or the Router is behind:
//! see [`gate`](super::gate)), the peer is not declared dead: it is alive, we are slow, and
//! whatever it sends waits unread in the socket. The heartbeat keeps pinging, and its silence
//! clock starts again when reading resumes. A subscriber that never catches up therefore keeps
//! the connection open but not read; the peer's own slow-consumer policy decides what happens
//! to it (a server of this crate closes it with 1013 or drops messages for it, as configured).

use crate::client::census::{CensusEntry, Counted};
use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Instant;

use actix::prelude::*;
use bytes::Bytes;

use super::connection::{Connection, PeerDead, SendPing};
use super::state::ClientShared;
use crate::config::HeartbeatConfig;

/// Pings in flight that we remember for RTT; older ones are forgotten (their pongs then give
/// no sample).
const MAX_OUTSTANDING_PINGS: usize = 16;

/// The Heartbeat actor of one client. See the [module docs](self).
pub(crate) struct Heartbeat {
    /// Counted in the process-wide [`census`](crate::client::census) while alive.
    _live: Counted,
    config: HeartbeatConfig,
    shared: Arc<ClientShared>,
    connection: Addr<Connection>,
    /// The socket generation being watched; `None` while not connected (or after a death was
    /// reported, until the next connection).
    watching: Option<u64>,
    next_nonce: u64,
    outstanding: VecDeque<(u64, Instant)>,
}

impl Heartbeat {
    pub(crate) fn new(
        config: HeartbeatConfig,
        shared: Arc<ClientShared>,
        connection: Addr<Connection>,
    ) -> Self {
        Self {
            _live: Counted::new(CensusEntry::Actor),
            config,
            shared,
            connection,
            watching: None,
            next_nonce: 1,
            outstanding: VecDeque::new(),
        }
    }

    fn tick(&mut self) {
        let Some(gen) = self.watching else { return };
        if self.shared.reading_paused() {
            // We stopped reading because we are behind (a full subscriber that asked for
            // backpressure): the peer may be sending into a socket we do not read, so its
            // silence is not evidence. The clock starts again when reading resumes. Pings still
            // go out; their pongs are read with everything else.
            self.ping(gen);
            return;
        }
        let silent = self.shared.silent_for();
        if silent >= self.config.timeout {
            tracing::warn!(
                connection = %self.shared.name,
                silent_ms = silent.as_millis() as u64,
                "peer silent past the heartbeat timeout; declaring it dead"
            );
            self.watching = None;
            self.connection.do_send(PeerDead {
                gen,
                silent_for: silent,
            });
            return;
        }
        self.ping(gen);
    }

    fn ping(&mut self, gen: u64) {
        let nonce = self.next_nonce;
        self.next_nonce += 1;
        if self.outstanding.len() == MAX_OUTSTANDING_PINGS {
            self.outstanding.pop_front();
        }
        self.outstanding.push_back((nonce, Instant::now()));
        self.connection.do_send(SendPing {
            gen,
            mode: self.config.mode,
            payload: Bytes::copy_from_slice(&nonce.to_be_bytes()),
        });
    }
}

impl Actor for Heartbeat {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        if self.config.enabled {
            ctx.run_interval(self.config.interval, |act, _| act.tick());
        }
    }
}

/// Sent by the Connection: watch socket `gen` (a socket opened; the silence clock starts now),
/// or, with `None`, nothing (the socket closed).
#[derive(Message)]
#[rtype(result = "()")]
pub(crate) struct Watch(pub(crate) Option<u64>);

/// Handler for [`Watch`].
impl Handler<Watch> for Heartbeat {
    type Result = ();
    fn handle(&mut self, msg: Watch, _: &mut Context<Self>) {
        if msg.0.is_some() {
            self.shared.touch_rx();
        }
        self.outstanding.clear();
        self.watching = msg.0;
    }
}

/// Sent by the Connection: a protocol Pong arrived with this payload.
#[derive(Message)]
#[rtype(result = "()")]
pub(crate) struct PongReceived(pub(crate) Bytes);

/// Handler for [`PongReceived`]: match the nonce, record the round-trip time.
impl Handler<PongReceived> for Heartbeat {
    type Result = ();
    fn handle(&mut self, msg: PongReceived, _: &mut Context<Self>) {
        let Ok(bytes) = <[u8; 8]>::try_from(msg.0.as_ref()) else {
            return; // an unsolicited pong, or one from another pinger
        };
        let nonce = u64::from_be_bytes(bytes);
        if let Some(pos) = self.outstanding.iter().position(|(n, _)| *n == nonce) {
            let (_, sent) = self.outstanding[pos];
            self.outstanding.drain(..=pos);
            self.shared.record_rtt(sent.elapsed());
        }
    }
}

/// Sent by the Router (application ping mode): a `{"type":"pong"}` arrived; it answers the
/// oldest outstanding ping.
#[derive(Message)]
#[rtype(result = "()")]
pub(crate) struct AppPong;

/// Handler for [`AppPong`].
impl Handler<AppPong> for Heartbeat {
    type Result = ();
    fn handle(&mut self, _: AppPong, _: &mut Context<Self>) {
        // The Router only sends this in application mode.
        if let Some((_, sent)) = self.outstanding.pop_front() {
            self.shared.record_rtt(sent.elapsed());
        }
    }
}

/// Sent by the supervisor when the client was closed or gave up: stop the actor.
#[derive(Message)]
#[rtype(result = "()")]
pub(crate) struct Stop;

/// Handler for [`Stop`].
impl Handler<Stop> for Heartbeat {
    type Result = ();
    fn handle(&mut self, _: Stop, ctx: &mut Context<Self>) {
        ctx.stop();
    }
}
