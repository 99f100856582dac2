//! With `--chaos`: how connections lived through the faults. One watcher per connection follows
//! its state changes during the measurement: each loss (a close, with its code, or a cut) until
//! the connection is back, and each reconnect attempt that failed (a handshake failure).

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

use actix_ws_manager::client::{Client, ConnectionState, Event};
use hdrhistogram::Histogram;
use serde::Serialize;

use super::coordinator::latency;
use super::drivers::{new_histogram, wait_start, Coordination};
use super::report::Latency;

/// What the watchers saw, all connections.
pub(super) struct Recovery {
    inner: Mutex<Seen>,
}

struct Seen {
    /// From each loss to the connection being back, microseconds.
    back: Histogram<u64>,
    lost: u64,
    not_back: u64,
    close_codes: BTreeMap<u16, u64>,
    handshake_failures: u64,
    /// Failed attempts by cause (at most [`MAX_CAUSES`] causes; the rest under "other").
    causes: BTreeMap<String, u64>,
}

/// Most distinct causes of failed attempts the report lists.
const MAX_CAUSES: usize = 16;

/// The recovery figures of a run, as the report has them.
#[derive(Debug, Serialize)]
pub(super) struct RecoveryOut {
    /// Losses of a connection (a connection lost twice counts twice).
    pub(super) connections_lost: u64,
    /// Connections still not back when the measurement ended.
    pub(super) not_back: u64,
    /// From each loss until the connection was back (connected again; broadcast: and joined
    /// again is on the way), microseconds.
    pub(super) recover_us: Latency,
    /// Close codes of the losses (1006: no close frame, the socket went away).
    pub(super) close_codes: BTreeMap<String, u64>,
    /// Reconnect attempts that failed (refused, upgrade failed, timed out).
    pub(super) handshake_failures: u64,
    /// The same by cause, in the client's words (at most 16 causes, then "other").
    pub(super) handshake_failure_causes: BTreeMap<String, u64>,
    /// What the faults did, in words.
    pub(super) chaos: Vec<String>,
}

fn lock(m: &Mutex<Seen>) -> MutexGuard<'_, Seen> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl Recovery {
    pub(super) fn new() -> Self {
        Recovery {
            inner: Mutex::new(Seen {
                back: new_histogram(),
                lost: 0,
                not_back: 0,
                close_codes: BTreeMap::new(),
                handshake_failures: 0,
                causes: BTreeMap::new(),
            }),
        }
    }

    /// The figures, with the faults' own account `chaos`.
    pub(super) fn out(&self, chaos: Vec<String>) -> RecoveryOut {
        let seen = lock(&self.inner);
        RecoveryOut {
            connections_lost: seen.lost,
            not_back: seen.not_back,
            recover_us: latency(&seen.back),
            close_codes: seen
                .close_codes
                .iter()
                .map(|(c, n)| (c.to_string(), *n))
                .collect(),
            handshake_failures: seen.handshake_failures,
            handshake_failure_causes: seen.causes.clone(),
            chaos,
        }
    }
}

/// Follow connection `idx` from the start of the measurement until the coordinator says stop.
pub(super) async fn watch(client: Client, idx: usize, shared: Arc<Coordination>) {
    if wait_start(&shared, idx).await.is_none() {
        return;
    }
    let mut events = client.subscribe_events(256);
    let mut stop = shared.stop.clone();
    let rec = &shared.recovery;
    let (mut lost_at, mut connecting) = (None::<Instant>, false);
    loop {
        let state = tokio::select! {
            r = stop.wait_for(|s| *s) => { let _ = r; break; }
            ev = events.recv() => match ev {
                Some(Event::State(s)) => s,
                Some(_) => continue,
                None => break,
            },
        };
        let mut seen = lock(&rec.inner);
        match state {
            ConnectionState::Disconnected { code, .. } => {
                *seen.close_codes.entry(code).or_default() += 1;
                if lost_at.is_none() {
                    seen.lost += 1;
                    lost_at = Some(Instant::now());
                }
            }
            ConnectionState::Connecting { .. } => connecting = true,
            ConnectionState::Reconnecting { cause, .. } => {
                if std::mem::take(&mut connecting) {
                    seen.handshake_failures += 1;
                    let key = if seen.causes.len() < MAX_CAUSES || seen.causes.contains_key(&cause)
                    {
                        cause
                    } else {
                        "other".to_owned()
                    };
                    *seen.causes.entry(key).or_default() += 1;
                } else if lost_at.is_none() {
                    seen.lost += 1;
                    lost_at = Some(Instant::now());
                }
            }
            ConnectionState::Connected => {
                connecting = false;
                if let Some(t) = lost_at.take() {
                    seen.back
                        .saturating_record((t.elapsed().as_micros() as u64).max(1));
                }
            }
            // Failed or closed: the connection is gone for good.
            _ => {
                if lost_at.is_none() {
                    seen.lost += 1;
                    lost_at = Some(Instant::now());
                }
                break;
            }
        }
    }
    if lost_at.is_some() {
        lock(&rec.inner).not_back += 1;
    }
}
