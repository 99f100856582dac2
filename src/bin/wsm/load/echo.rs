//! The echo driver: each connection sends echo messages and times each reply, in a closed loop
//! (the next message as soon as a reply frees the `--window`) or, with `--rate`, in an open
//! loop (each message has a due time; latency is timed from it as well as from the send).

use std::sync::Arc;
use std::time::{Duration, Instant};

use actix_ws_manager::client::Client;
use actix_ws_manager::protocol::{self, ErrorReply};
use actix_ws_manager::Error;
use futures_util::stream::{FuturesUnordered, StreamExt};

use super::drivers::{timed, wait_start, wait_up, ConnResult, Coordination, EchoData, Plan};
use super::schedule::{wake_for, Schedule, LATE};

/// Echo: keep up to `--window` echo messages in flight until the deadline and time each reply.
pub(crate) async fn echo_driver(client: Client, idx: usize, shared: Arc<Coordination>) {
    let mut errors_rx = client.subscribe::<ErrorReply>(64);
    let up = timed(
        &shared,
        idx,
        wait_up(&client, shared.args.connect_timeout).await,
    );
    let ok = up.is_ok();
    let _ = shared.ready.send((idx, up));
    if !ok {
        return;
    }
    let Some(plan) = wait_start(&shared, idx).await else {
        return;
    };
    let mut res = ConnResult::new();
    let echo = Echo {
        client: &client,
        idx,
        shared: &shared,
    };
    match plan.rate_at(&shared.args.phases, plan.started, false) {
        Some(rate) => echo.open_loop(&plan, rate, &mut res).await,
        None => echo.closed_loop(&plan, &mut res).await,
    }
    while errors_rx.try_recv().is_ok() {
        res.errors += 1;
    }
    let _ = shared.results.send(res);
}

/// One connection's echo loop.
struct Echo<'a> {
    client: &'a Client,
    idx: usize,
    shared: &'a Coordination,
}

impl Echo<'_> {
    /// Closed loop: a new message whenever the window has room, until the deadline (with
    /// `--plan`, only while the phases have this connection send).
    async fn closed_loop(&self, plan: &Plan, res: &mut ConnResult) {
        let (phases, deadline) = (&self.shared.args.phases, plan.deadline);
        let mut inflight = FuturesUnordered::new();
        let mut seq = 0u64;
        loop {
            let t = plan.started.elapsed();
            while inflight.len() < self.shared.args.window
                && Instant::now() < deadline
                && phases.sends(self.idx, t)
            {
                seq += 1;
                res.sent += 1;
                inflight.push(self.one(seq, None));
            }
            if inflight.is_empty() {
                if Instant::now() >= deadline {
                    break;
                }
                // Not this connection's turn: wait for it (or the end).
                let turn = phases.next_active(self.idx, t + Duration::from_millis(1));
                let wake = turn.map_or(deadline, |n| (plan.started + n).min(deadline));
                tokio::time::sleep_until(wake.into()).await;
                continue;
            }
            if let Some(outcome) = inflight.next().await {
                self.take(outcome, res);
            }
        }
    }

    /// With `--plan`: move `schedule` past the times the phases have this connection idle
    /// (to the deadline when it never sends again).
    fn gate(&self, schedule: &mut Schedule, plan: &Plan) {
        let phases = &self.shared.args.phases;
        if !phases.planned {
            return;
        }
        let t = schedule.due().saturating_duration_since(plan.started);
        match phases.next_active(self.idx, t) {
            Some(n) if n == t => {}
            Some(n) => schedule.restart_at(plan.started + n),
            None => schedule.restart_at(plan.deadline),
        }
    }

    /// The schedule's next due time, at the rate in force at the current one (phases change
    /// it), past the times this connection is idle.
    fn advance(&self, schedule: &mut Schedule, plan: &Plan) {
        if let Some(rate) = plan.rate_at(&self.shared.args.phases, schedule.due(), false) {
            schedule.set_rate(rate);
        }
        schedule.advance();
        self.gate(schedule, plan);
    }

    /// Open loop: each message leaves at its due time in `rate` messages per second (or, with
    /// the window full, as soon as a reply frees it), until `plan.deadline`. A message due
    /// before the deadline that has not left by then never does (`due_not_sent`). A send is
    /// *late* when it leaves more than [`LATE`] after it could have: its due time, or the reply
    /// that freed the window (the wait for the server is the corrected latency's business).
    async fn open_loop(&self, plan: &Plan, rate: f64, res: &mut ConnResult) {
        let args = &self.shared.args;
        let mut schedule = Schedule::new(plan.started, rate, args.arrival, self.idx as u64);
        self.gate(&mut schedule, plan);
        let mut inflight = FuturesUnordered::new();
        let (mut seq, mut freed) = (0u64, plan.started);
        loop {
            let now = Instant::now();
            while inflight.len() < args.window
                && wake_for(schedule.due()) <= now
                && schedule.due() < plan.deadline
                && now < plan.deadline
            {
                seq += 1;
                res.sent += 1;
                let due = schedule.due();
                inflight.push(self.one(seq, Some((due, due.max(freed)))));
                self.advance(&mut schedule, plan);
            }
            if now >= plan.deadline {
                while schedule.due() < plan.deadline {
                    res.due_not_sent += 1;
                    self.advance(&mut schedule, plan);
                }
            }
            let room = inflight.len() < args.window && schedule.due() < plan.deadline;
            if inflight.is_empty() && !room {
                break;
            }
            tokio::select! {
                Some(outcome) = inflight.next(), if !inflight.is_empty() => {
                    freed = Instant::now();
                    self.take(outcome, res);
                }
                _ = tokio::time::sleep_until(wake_for(schedule.due()).into()), if room => {}
                // The window is full past the deadline: wake at the deadline to count the rest.
                _ = tokio::time::sleep_until(plan.deadline.into()), if !room && now < plan.deadline => {}
            }
        }
    }

    /// Count one finished round trip.
    fn take(&self, (outcome, late): (EchoOutcome, bool), res: &mut ConnResult) {
        res.late += u64::from(late);
        let timeline = &self.shared.timeline;
        match outcome {
            EchoOutcome::Reply {
                seq,
                corrected,
                uncorrected,
            } => {
                timeline.message(self.idx, corrected);
                res.record(corrected, uncorrected);
                // Replies are matched to requests by id, so none counts twice; one that comes
                // back after a later one was reordered.
                if seq < res.highest_seq {
                    res.reordered += 1;
                }
                res.highest_seq = res.highest_seq.max(seq);
            }
            EchoOutcome::Missing => {
                timeline.missing(self.idx);
                res.missing += 1;
            }
            EchoOutcome::Error(e) => {
                timeline.error(self.idx);
                tracing::debug!(connection = self.idx, error = %e, "echo failed");
                res.errors += 1;
            }
        }
    }

    /// Send echo message `seq` and wait (up to `--timeout`) for its reply. `due`: when it was
    /// due, and when it could leave at the earliest (`None`: now). Answers how it ended, and
    /// whether it left late.
    async fn one(&self, seq: u64, due: Option<(Instant, Instant)>) -> (EchoOutcome, bool) {
        let started = Instant::now();
        // A send that left early (see `wake_for`) is timed from its actual send.
        let (due, ready) = due.map_or((started, started), |(d, r)| (d.min(started), r));
        let late = started.saturating_duration_since(ready) > LATE;
        let outcome = one_echo(self.client, seq, &self.shared.pad, self.shared.args.timeout).await;
        let outcome = match outcome {
            Ok(()) => {
                let end = Instant::now();
                EchoOutcome::Reply {
                    seq,
                    corrected: end.duration_since(due).as_micros() as u64,
                    uncorrected: end.duration_since(started).as_micros() as u64,
                }
            }
            Err(o) => o,
        };
        (outcome, late)
    }
}

/// How one echo round trip ended.
enum EchoOutcome {
    /// The matching reply came back: microseconds after the message was due, and after it was
    /// sent.
    Reply {
        seq: u64,
        corrected: u64,
        uncorrected: u64,
    },
    /// No reply in time, or the connection was lost meanwhile.
    Missing,
    /// Anything else: what went wrong.
    Error(String),
}

/// Send echo message `seq` and wait (up to `timeout`) for its reply: `Ok` when the matching
/// reply came back.
async fn one_echo(
    client: &Client,
    seq: u64,
    pad: &str,
    timeout: Duration,
) -> Result<(), EchoOutcome> {
    let out =
        protocol::echo(&EchoData { seq, pad }).map_err(|e| EchoOutcome::Error(e.to_string()))?;
    match client.request_envelope(out, timeout).await {
        // Only `seq` is decoded (the pad is skipped, not copied): this runs once per reply.
        Ok(env) => match env.data_as::<SeqOnly>() {
            Ok(v) if v.seq == Some(seq) => Ok(()),
            Ok(v) => Err(EchoOutcome::Error(format!(
                "reply does not match seq {seq}: seq {:?}",
                v.seq
            ))),
            Err(e) => Err(EchoOutcome::Error(e.to_string())),
        },
        Err(Error::RequestTimeout { .. } | Error::ConnectionLost { .. }) => {
            Err(EchoOutcome::Missing)
        }
        Err(e) => Err(EchoOutcome::Error(e.to_string())),
    }
}

/// The part of an echo reply's `data` the driver checks.
#[derive(serde::Deserialize)]
struct SeqOnly {
    seq: Option<u64>,
}
