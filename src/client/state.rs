//! Connection state, client events, and the counters behind [`Stats`].

use crate::client::census::{CensusEntry, Counted};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::Message;

/// Where a client's connection is in its life. Published to event subscribers on every change
/// (as [`Event::State`]) and readable at any time through [`Client::state`](super::Client::state).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConnectionState {
    /// A connect attempt (TCP + HTTP upgrade) is under way. `attempt` is 0 for the first
    /// connection and counts up while reconnecting.
    Connecting {
        /// Attempts since the last stable connection.
        attempt: u32,
    },
    /// The socket is open; on-connect messages have been queued ahead of the outbox.
    Connected,
    /// The socket closed or was lost. `code` is the close code the peer sent, 1006 when the
    /// socket went away without a close frame (or the heartbeat declared the peer dead), 1005
    /// when a close frame had no code.
    Disconnected {
        /// RFC 6455 close code (1006 = lost without a close frame).
        code: u16,
        /// The close reason text, or a description of why the socket was lost.
        reason: String,
    },
    /// Waiting `delay` before reconnect attempt `attempt`.
    Reconnecting {
        /// The attempt number that will run after the delay (1 for the first retry).
        attempt: u32,
        /// How long the supervisor waits before it.
        delay: Duration,
        /// Why the previous attempt or connection ended, in words (`connection refused by
        /// 127.0.0.1:8080`, `connection lost with code 1006: ...`), so nobody has to dial again
        /// to find out.
        cause: String,
    },
    /// Reconnection has ended for good: a final close code or HTTP status, the attempt limit,
    /// or reconnection disabled. The client's actors stop; sends fail with
    /// [`Error::ClientClosed`](crate::Error::ClientClosed).
    Failed {
        /// Why the supervisor gave up.
        reason: String,
    },
    /// The user called [`Client::close`](super::Client::close). Nothing reconnects.
    Closed,
}

/// A duration as people read it: `412ms`, `1.2s`, `13s`, `2m 5s` (not `270.285841ms`).
pub fn round_duration(d: Duration) -> String {
    let ms = d.as_millis();
    match ms {
        0..=999 => format!("{ms}ms"),
        1_000..=9_999 => format!("{:.1}s", d.as_secs_f64()),
        10_000..=119_999 => format!("{}s", d.as_secs()),
        _ => format!("{}m {}s", d.as_secs() / 60, d.as_secs() % 60),
    }
}

/// One line in words, durations rounded: `connecting`, `connected`, `disconnected (1006 ...)`,
/// `reconnecting in 1.2s (attempt 3): connection refused by 127.0.0.1:8080`, `failed: ...`,
/// `closed`.
impl std::fmt::Display for ConnectionState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ConnectionState::Connecting { attempt: 0 } => write!(f, "connecting"),
            ConnectionState::Connecting { attempt } => write!(f, "connecting (attempt {attempt})"),
            ConnectionState::Connected => write!(f, "connected"),
            ConnectionState::Disconnected { code, reason } if reason.is_empty() => {
                write!(f, "disconnected ({code})")
            }
            ConnectionState::Disconnected { code, reason } => {
                write!(f, "disconnected ({code} {reason})")
            }
            ConnectionState::Reconnecting {
                attempt,
                delay,
                cause,
            } => write!(
                f,
                "reconnecting in {} (attempt {attempt}): {cause}",
                round_duration(*delay)
            ),
            ConnectionState::Failed { reason } => write!(f, "failed: {reason}"),
            ConnectionState::Closed => write!(f, "closed"),
        }
    }
}

impl ConnectionState {
    /// Whether the client will never connect again (`Failed` or `Closed`).
    pub fn is_terminal(&self) -> bool {
        matches!(
            self,
            ConnectionState::Failed { .. } | ConnectionState::Closed
        )
    }
}

/// What went wrong with one incoming message. The connection stays up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MessageErrorKind {
    /// The text frame is not a JSON object with a string `type` (or a valid `id`).
    Malformed,
    /// Nobody subscribed to the `type`, no request waits for the `id`, and there is no raw
    /// subscriber.
    UnknownType,
    /// A subscriber's Rust type could not be decoded from `data`.
    BadData,
    /// A subscriber could not keep up (its channel was full) and the message was dropped.
    SubscriberFull,
}

/// In words: `malformed`, `unknown type`, `bad data`, `subscriber full`.
impl std::fmt::Display for MessageErrorKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            MessageErrorKind::Malformed => "malformed",
            MessageErrorKind::UnknownType => "unknown type",
            MessageErrorKind::BadData => "bad data",
            MessageErrorKind::SubscriberFull => "subscriber full",
        })
    }
}

/// An incoming message that could not be delivered. Counted in [`Stats`] and traced at `warn`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MessageError {
    /// What went wrong.
    pub kind: MessageErrorKind,
    /// The envelope `type`, when the head could be read.
    pub message_type: Option<String>,
    /// A description (the decoder's error, for example).
    pub detail: String,
}

/// Something that happened to a client: a state change or an undeliverable message.
#[derive(Debug, Clone, PartialEq, Eq, Message)]
#[rtype(result = "()")]
pub enum Event {
    /// The connection state changed.
    State(ConnectionState),
    /// An incoming message could not be delivered; the connection stays up.
    MessageError(MessageError),
    /// A room's missed publications were recovered from the server's history, or could not be:
    /// after each rejoin from a position (a reconnect) and each gap filled (messages the server
    /// dropped for this client). See [`recovery`](super::recovery).
    Recovery {
        /// The room.
        room: String,
        /// Whether every missed publication was (or, after a rejoin, is being) delivered.
        recovered: bool,
        /// Publications recovered when `recovered`; when not, those known to be missing (0
        /// when unknown, as after `epoch_changed`).
        missed: u64,
        /// Why not, when not: `epoch_changed` (the room's history was lost), `too_old` (no
        /// longer kept), `too_many` (more than the server recovers and than its history holds
        /// or the client holds while filling a gap), `unavailable` (the history could not be
        /// read).
        reason: Option<String>,
    },
    /// The server said the session's token is about to expire (`token_expiring`), and the
    /// client answered with a `refresh` carrying a new token from its
    /// [token provider](crate::config::ClientConfig::token_provider): `refreshed` when the server
    /// took it (`refreshed`), else `reason` says why not (the provider failed, the server
    /// answered `bad_token`, no answer in time, the connection was lost first). A failed refresh
    /// costs no message: the server closes with 4001 at the token's expiry and the client
    /// reconnects at once with a new token; this event is how to notice it before then.
    TokenRefresh {
        /// Whether the server took the new token.
        refreshed: bool,
        /// Why not, in words, when not.
        reason: Option<String>,
    },
}

/// Writes the per-connection counters out once, from one list: the public [`Stats`] snapshot
/// (plus its two round-trip times) and the atomics of [`Counters`] behind it, so a counter added
/// to the list is in both and in [`Counters::snapshot`] with nothing else to keep in step.
macro_rules! connection_counters {
    ($($(#[$doc:meta])* $name:ident,)*) => {
        /// A snapshot of a client's counters. The outgoing ones follow the outbox's accounting
        /// rule: `accepted == messages_out + failed + dropped + pending`, where pending is
        /// `outbox_len` plus the batch being written (see the `outbox` module of `client`).
        #[derive(Debug, Clone, Default, PartialEq, Eq)]
        pub struct Stats {
            $($(#[$doc])* pub $name: u64,)*
            /// The last heartbeat round-trip time.
            pub last_rtt: Option<Duration>,
            /// Smoothed round-trip time (exponentially weighted, 1/8 weight per sample as in TCP).
            pub smoothed_rtt: Option<Duration>,
        }

        /// The atomics behind [`Stats`]: one per counter, added to by the actors and read by
        /// handles and managers on any thread without messaging an actor.
        #[derive(Debug, Default)]
        pub(crate) struct Counters {
            $(pub(crate) $name: AtomicU64,)*
        }

        impl Counters {
            /// Every counter now, with the two round-trip times (microseconds, 0 for none).
            fn snapshot(&self, last_rtt_us: u64, srtt_us: u64) -> Stats {
                let rtt = |us: u64| (us > 0).then(|| Duration::from_micros(us));
                Stats {
                    $($name: self.$name.load(Ordering::Relaxed),)*
                    last_rtt: rtt(last_rtt_us),
                    smoothed_rtt: rtt(srtt_us),
                }
            }
        }
    };
}

connection_counters! {
    /// Messages (text and binary) received.
    messages_in,
    /// Messages accepted by `send`, `send_text`, `send_binary`, `send_envelope` or `request`
    /// (including ones a `DropNewest` outbox dropped at once).
    accepted,
    /// Accepted messages written to the socket (the flush that carried them completed).
    messages_out,
    /// Accepted requests that failed while waiting (their caller was told: `ConnectionLost`,
    /// `RequestTimeout`, `ClientClosed`) and were never written.
    failed,
    /// Payload bytes received.
    bytes_in,
    /// Payload bytes of the messages counted in `messages_out`.
    bytes_out,
    /// Successful reconnections (the first connection is not counted).
    reconnects,
    /// Accepted messages dropped: by the outbox policy, at a lost connection (those being
    /// written) or when the client stopped.
    dropped,
    /// Incoming messages (or events) not delivered because a subscriber was full (a channel at
    /// its capacity, an actor's mailbox at its capacity) under
    /// [`Overflow::DropNewest`](super::Overflow::DropNewest).
    dropped_incoming,
    /// Times the client paused reading its socket because it was behind: a subscriber with
    /// [`Overflow::Backpressure`](super::Overflow::Backpressure) was full, or the Router had
    /// [`ROUTE_AHEAD`](super::ROUTE_AHEAD) messages not yet routed. The peer then sees its
    /// writes slow down; nothing is dropped.
    read_pauses,
    /// Incoming messages that could not be decoded (malformed JSON, bad `data`).
    decode_errors,
    /// Incoming messages of a `type` nobody subscribed to.
    unknown_types,
    /// User messages waiting in the outbox now (not yet taken by the writer).
    outbox_len,
    /// Recoveries that brought every missed room publication: rejoins from a position answered
    /// `recovered:true`, and gaps filled from the history.
    recovered,
    /// Recoveries that could not bring every missed publication (each is an
    /// [`Event::Recovery`] with `recovered: false` and a reason).
    unrecoverable,
    /// Room messages dropped because a message with the same offset was already delivered (a
    /// replay overlapping what arrived live).
    duplicates,
}

/// Counters shared by a client's actors and its handles. Atomics, so a handle can read them
/// without messaging the actors, and a manager on another thread can add them up.
#[derive(Debug)]
pub(crate) struct ClientShared {
    /// Counted in the process-wide [`census`](crate::client::census) while alive.
    _live: Counted,
    pub(crate) name: Arc<str>,
    epoch: Instant,
    /// The counters a [`Stats`] snapshot reads.
    pub(crate) counts: Counters,
    /// Set while the Connection does not read because the client is behind (see
    /// [`gate`](super::gate)); the heartbeat does not count that time as the peer's silence.
    reading_paused: std::sync::atomic::AtomicBool,
    /// Milliseconds since `epoch` when anything last arrived on the socket.
    last_rx_ms: AtomicU64,
    /// Microseconds; 0 means "no sample yet".
    last_rtt_us: AtomicU64,
    srtt_us: AtomicU64,
    /// The one published state; handles read or wait on it without messaging an actor.
    state: tokio::sync::watch::Sender<ConnectionState>,
}

impl ClientShared {
    pub(crate) fn new(name: Arc<str>) -> Self {
        Self {
            _live: Counted::new(CensusEntry::Client),
            name,
            epoch: Instant::now(),
            counts: Counters::default(),
            reading_paused: std::sync::atomic::AtomicBool::new(false),
            last_rx_ms: AtomicU64::new(0),
            last_rtt_us: AtomicU64::new(0),
            srtt_us: AtomicU64::new(0),
            state: tokio::sync::watch::Sender::new(ConnectionState::Connecting { attempt: 0 }),
        }
    }

    pub(crate) fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }

    pub(crate) fn set(counter: &AtomicU64, n: u64) {
        counter.store(n, Ordering::Relaxed);
    }

    /// Whether reading is paused because the client is behind (not the peer).
    pub(crate) fn reading_paused(&self) -> bool {
        self.reading_paused.load(Ordering::Relaxed)
    }

    pub(crate) fn set_reading_paused(&self, paused: bool) {
        self.reading_paused.store(paused, Ordering::Relaxed);
    }

    /// Record that something arrived now.
    pub(crate) fn touch_rx(&self) {
        let ms = self.epoch.elapsed().as_millis() as u64;
        self.last_rx_ms.store(ms, Ordering::Relaxed);
    }

    /// How long since anything arrived.
    pub(crate) fn silent_for(&self) -> Duration {
        let now = self.epoch.elapsed().as_millis() as u64;
        Duration::from_millis(now.saturating_sub(self.last_rx_ms.load(Ordering::Relaxed)))
    }

    pub(crate) fn record_rtt(&self, rtt: Duration) {
        let us = (rtt.as_micros() as u64).max(1);
        self.last_rtt_us.store(us, Ordering::Relaxed);
        let old = self.srtt_us.load(Ordering::Relaxed);
        let new = if old == 0 { us } else { (old * 7 + us) / 8 };
        self.srtt_us.store(new.max(1), Ordering::Relaxed);
    }

    pub(crate) fn set_state(&self, state: ConnectionState) {
        self.state.send_replace(state);
    }

    pub(crate) fn state(&self) -> ConnectionState {
        self.state.borrow().clone()
    }

    /// A receiver of every later state, for waiting without a subscription at the Router.
    pub(crate) fn watch_state(&self) -> tokio::sync::watch::Receiver<ConnectionState> {
        self.state.subscribe()
    }

    pub(crate) fn snapshot(&self) -> Stats {
        let rtt = |us: &AtomicU64| us.load(Ordering::Relaxed);
        self.counts
            .snapshot(rtt(&self.last_rtt_us), rtt(&self.srtt_us))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_are_rounded_for_people() {
        assert_eq!(round_duration(Duration::from_nanos(270_285_841)), "270ms");
        assert_eq!(round_duration(Duration::from_millis(1_234)), "1.2s");
        assert_eq!(round_duration(Duration::from_millis(13_290)), "13s");
        assert_eq!(round_duration(Duration::from_secs(125)), "2m 5s");
        let s = ConnectionState::Reconnecting {
            attempt: 6,
            delay: Duration::from_millis(13_290),
            cause: "connection refused by 127.0.0.1:9".into(),
        };
        assert_eq!(
            s.to_string(),
            "reconnecting in 13s (attempt 6): connection refused by 127.0.0.1:9"
        );
    }
}
