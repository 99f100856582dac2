//! The figures one server counts, defined once: the table at the bottom of this file is the one
//! place where a figure gets its counter, its name in [`ServerMetrics`] and in [`HubStats`],
//! its Prometheus name, type and help, and its documentation. [`Counters`] (the atomics the hub,
//! the sessions and the backplane count into), [`ServerMetrics`], [`HubStats`] and the
//! Prometheus families (`FIGURES`) are generated from it; the table of metrics in
//! [`crate::metrics`] is checked against it by a test.
//!
//! A leaf module: it imports no other server module but the latency histogram, the outbox's
//! [`Depth`] and the token refusal reasons. The slow-consumer policy lives here too, because what it decides is what it
//! counts.

use std::sync::atomic::{AtomicU64, Ordering};

use super::latency::{LatencyHistogram, LatencySnapshot};
use super::outbox::Depth;
use super::token::RefusalReason;
use crate::config::SlowConsumerPolicy;
use std::collections::BTreeMap;

/// One figure's atomic. Plain relaxed atomics: each figure is independent, so no ordering
/// between them is promised, and sessions on other arbiters count without a message round
/// trip. Derefs to the atomic for code that needs another operation.
#[derive(Debug, Default)]
pub struct Count(AtomicU64);

impl Count {
    /// Count one.
    pub fn bump(&self) {
        self.add(1);
    }

    /// Count `n`.
    pub fn add(&self, n: u64) {
        self.0.fetch_add(n, Ordering::Relaxed);
    }

    /// The value now.
    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }

    /// Set a gauge.
    pub fn set(&self, value: u64) {
        self.0.store(value, Ordering::Relaxed);
    }

    /// Raise a high-water mark to `value` if it is higher. Reads first: the mark rarely moves,
    /// and a read keeps the cache line shared between the worker threads where a
    /// read-modify-write on every frame would not.
    pub fn raise_to(&self, value: u64) {
        if value > self.get() {
            self.0.fetch_max(value, Ordering::Relaxed);
        }
    }
}

impl std::ops::Deref for Count {
    type Target = AtomicU64;

    fn deref(&self) -> &AtomicU64 {
        &self.0
    }
}

/// Whether a figure only grows or goes up and down (Prometheus' counter and gauge).
// Read by the Prometheus collector only (feature `metrics`) and the docs-table test.
#[cfg_attr(not(feature = "metrics"), allow(dead_code))]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    /// Only grows (Prometheus adds `_total` to its name).
    Counter,
    /// Goes up and down, or is a high-water mark.
    Gauge,
}

/// One exported figure of [`ServerMetrics`], as the Prometheus text names it.
#[cfg_attr(not(feature = "metrics"), allow(dead_code))]
#[derive(Debug, Clone, Copy)]
pub(crate) struct Figure {
    /// The Prometheus name, without the `_total` a counter gets.
    pub(crate) name: &'static str,
    /// The Prometheus help text.
    pub(crate) help: &'static str,
    pub(crate) kind: Kind,
    /// Its value in a snapshot.
    pub(crate) value: fn(&ServerMetrics) -> u64,
}

/// What the slow-consumer policy made of a full queue (already counted).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum FullQueue {
    /// The frame was dropped ([`SlowConsumerPolicy::DropNewest`]).
    Dropped,
    /// The member must go: a session closes with 1013 and its socket is cut
    /// ([`SlowConsumerPolicy::Disconnect`]).
    Disconnect,
}

/// The slow-consumer policy, the one place it is applied: a member's queue was full. Counts
/// the outcome and answers it; the caller drops the member on [`FullQueue::Disconnect`].
pub(crate) fn on_full_queue(policy: SlowConsumerPolicy, counters: &Counters) -> FullQueue {
    match policy {
        SlowConsumerPolicy::DropNewest => {
            counters.dropped.bump();
            FullQueue::Dropped
        }
        SlowConsumerPolicy::Disconnect => {
            counters.slow_consumer_disconnects.bump();
            FullQueue::Disconnect
        }
    }
}

/// Generates [`Counters`], [`ServerMetrics`], [`HubStats`] and [`FIGURES`] from one row per
/// figure: `counter => metrics_name [hub hub_name]: Kind "prometheus_name" "help", "doc";`.
macro_rules! figures {
    ($(
        $field:ident => $metric:ident $(hub $hub:ident)? :
            $kind:ident $prom:literal $help:literal, $doc:literal;
    )*) => {
        /// The atomics of one server, shared by the hub, every session and the backplane. One
        /// per row of the table in `counters`; only the hub's fan-out latency is kept
        /// apart, as a histogram.
        #[derive(Debug, Default)]
        pub struct Counters {
            $(
                #[doc = $doc]
                pub $field: Count,
            )*
            /// How long each publish took the hub, from taking it off the queue to having
            /// offered it to every member (see [`LatencyHistogram`]).
            pub fanout: LatencyHistogram,
            /// Upgrades refused for their token, one count per
            /// token refusal reason (in the order of `token::RefusalReason::ALL`).
            pub auth_refused: [Count; RefusalReason::ALL.len()],
        }

        /// What a rooms server has done since it started, and what it holds now: the figures
        /// that [`Rooms::register_metrics`](super::Rooms::register_metrics) exports, as a
        /// struct, for code that wants them without Prometheus (a status page, a log line, a
        /// test).
        ///
        /// Read from atomics by [`Rooms::metrics`](super::Rooms::metrics) without waiting in
        /// the hub's queue, so figures that two threads update (a session counts a message in,
        /// the hub counts it out) may be a message apart from each other. Counters only grow;
        /// gauges are marked as such. `#[non_exhaustive]`, so that a new figure is not a
        /// breaking change.
        #[derive(Debug, Clone, Default, PartialEq, Eq)]
        #[non_exhaustive]
        pub struct ServerMetrics {
            /// Gauge: WebSocket sessions open now, rooms and echo endpoints (each holds a slot
            /// under `max_sessions` from before the authentication hook runs until its actor is
            /// gone, so upgrades waiting on the hook count too).
            pub sessions: usize,
            $(
                #[doc = $doc]
                pub $metric: u64,
            )*
            /// How long each publish took the hub, from taking it off its queue to having
            /// offered it to every member (encoding included; time spent waiting in the queue
            /// not). Every publish is observed, to an empty room too, so its count equals
            /// `published`.
            pub fanout_latency: LatencySnapshot,
            /// Upgrades refused with HTTP 401 for their token (JWT authentication), by reason:
            /// `missing`, `malformed`, `algorithm`, `unknown_key`, `signature`, `expired`,
            /// `not_yet_valid`, `audience`, `issuer`, `claims`. Every reason is present, at 0
            /// until it happens.
            pub auth_refusals: BTreeMap<&'static str, u64>,
        }

        impl ServerMetrics {
            /// Read every figure of one server, which holds `sessions` slots now.
            pub(crate) fn read(counters: &Counters, sessions: usize) -> Self {
                ServerMetrics {
                    sessions,
                    $($metric: counters.$field.get(),)*
                    fanout_latency: counters.fanout.snapshot(),
                    auth_refusals: RefusalReason::ALL
                        .iter()
                        .map(|r| (r.label(), counters.auth_refused[r.index()].get()))
                        .collect(),
                }
            }
        }

        /// A snapshot of a server's counters, the answer to
        /// [`Rooms::stats`](super::Rooms::stats). It waits its turn in the hub's queue, so it
        /// sees every command queued before it and counts room memberships.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
        pub struct HubStats {
            /// Sessions (and attached actors) registered with the hub now.
            pub sessions: usize,
            /// Rooms with at least one member now.
            pub rooms: usize,
            /// Room memberships now (a session in three rooms counts three): back to its
            /// earlier value once the sessions that joined since have left or gone.
            pub members: usize,
            $($(
                #[doc = $doc]
                pub $hub: u64,
            )?)*
        }

        impl HubStats {
            /// The counters' part of a snapshot; the hub fills in what it holds.
            pub(crate) fn read(counters: &Counters) -> Self {
                HubStats {
                    $($($hub: counters.$field.get(),)?)*
                    ..HubStats::default()
                }
            }
        }

        /// Every figure of [`ServerMetrics`] but `sessions` and the latency histogram, in table
        /// order, as Prometheus names them.
        #[cfg_attr(not(feature = "metrics"), allow(dead_code))]
        pub(crate) const FIGURES: &[Figure] = &[
            $(Figure {
                name: $prom,
                help: $help,
                kind: Kind::$kind,
                value: |m: &ServerMetrics| m.$metric,
            },)*
        ];
    };
}

figures! {
    rooms => rooms: Gauge "wsm_server_rooms" "Rooms with at least one member",
        "Gauge: rooms with at least one member, as of the hub's last command (the hub stores \
         it after each command, so a scrape reads it without waiting in the hub's queue).";
    messages_in => messages_in: Counter "wsm_server_messages_in"
        "Whole messages received from clients (text and binary, refused ones included)",
        "Whole messages (text and binary, both endpoints) received from clients, refused ones \
         included: counted before the rate limit or the protocol looks at them.";
    bytes_in => bytes_in: Counter "wsm_server_bytes_in"
        "Payload bytes of the messages received from clients",
        "Payload bytes of the messages counted in `messages_in`.";
    delivered => messages_out hub delivered: Counter "wsm_server_messages_out"
        "Frames handed to session queues (broadcast copies, replies, errors, welcomes)",
        "Frames handed to session queues: broadcast copies, replies, errors, welcomes.";
    bytes => bytes_out hub bytes: Counter "wsm_server_bytes_out"
        "Payload bytes of the frames handed to session queues",
        "Payload bytes of the frames handed to session queues.";
    published => published hub published: Counter "wsm_server_published"
        "Publishes the hub took, from clients and from server code",
        "Publishes the hub took (from clients and from server code).";
    dropped => slow_consumer_drops hub dropped: Counter "wsm_server_slow_consumer_drops"
        "Frames dropped because a member's queue was full (policy drop_newest)",
        "Frames dropped because a member's queue was full \
         ([`SlowConsumerPolicy::DropNewest`](crate::config::SlowConsumerPolicy::DropNewest)), \
         replies included.";
    slow_consumer_disconnects => slow_consumer_disconnects hub slow_consumer_disconnects: Counter
        "wsm_server_slow_consumer_disconnects"
        "Sessions disconnected because their queue was full (policy disconnect, close 1013)",
        "Sessions disconnected because their queue was full \
         ([`SlowConsumerPolicy::Disconnect`](crate::config::SlowConsumerPolicy::Disconnect)).";
    heartbeat_timeouts => heartbeat_timeouts hub heartbeat_timeouts: Counter
        "wsm_server_heartbeat_timeouts"
        "Sessions disconnected because nothing arrived within the heartbeat timeout",
        "Sessions disconnected because nothing arrived from them within the heartbeat timeout.";
    rate_limited => rate_limited hub rate_limited: Counter "wsm_server_rate_limited"
        "Messages refused with rate_limited",
        "Messages refused with `rate_limited` (or, on the echo endpoint, not echoed) because a \
         session went past its rate limit.";
    rate_limit_disconnects => rate_limit_disconnects hub rate_limit_disconnects: Counter
        "wsm_server_rate_limit_disconnects"
        "Sessions closed with 1008 for going on past twice their burst",
        "Sessions closed with 1008 for going on past twice their burst.";
    per_ip_refusals => per_ip_refusals hub per_ip_refusals: Counter "wsm_server_per_ip_refusals"
        "Upgrades refused with HTTP 429 by the per-address limit",
        "Upgrades refused with HTTP 429 by `max_connections_per_ip`.";
    backplane_publish_errors => backplane_publish_errors hub backplane_publish_errors: Counter
        "wsm_server_backplane_publish_errors"
        "Publishes the backplane could not take (other nodes did not get them)",
        "Publishes that could not be handed to the backplane (other nodes did not get them; the \
         publisher was told when its publish had an `id`).";
    backplane_disconnects => backplane_reconnects hub backplane_disconnects: Counter
        "wsm_server_backplane_reconnects" "Times the backplane connection was lost and made again",
        "Times the backplane's connection was lost (each is followed by reconnecting and \
         subscribing again to every room with local members).";
    backplane_dropped => backplane_dropped hub backplane_dropped: Counter
        "wsm_server_backplane_dropped"
        "Messages from other nodes dropped (full inbound buffer, or out of their publisher's order)",
        "Messages from other nodes dropped: this node's inbound backplane buffer was full (the \
         hub fell behind the other nodes), or a message came out of its publisher's order (the \
         late tail of a connection that publisher gave up).";
    backplane_channels => backplane_channels hub backplane_channels: Gauge
        "wsm_server_backplane_channels"
        "Room channels this node is subscribed to in the backplane, as last confirmed",
        "Gauge: room channels this node is subscribed to in the backplane, as last confirmed by \
         it (0 while disconnected); equal to `rooms` once the backplane has caught up.";
    backplane_received => backplane_received hub backplane_received: Counter
        "wsm_server_backplane_received" "Messages from the backplane fanned out here",
        "Messages from the backplane fanned out here: other nodes' publications, and with room \
         history kept in Redis this node's own too (every publication then comes through it).";
    queue_high_water => session_queue_high_water hub queue_high_water: Gauge
        "wsm_server_session_queue_high_water" "Deepest any session queue has been, in frames",
        "Gauge (high-water mark): the deepest any session queue has been, in frames; never \
         above the configured `session_queue`.";
    queue_bytes_high_water => session_queue_bytes_high_water hub queue_bytes_high_water: Gauge
        "wsm_server_session_queue_bytes_high_water" "Most payload bytes any session queue has held",
        "Gauge (high-water mark): the most payload bytes any session queue has held; never above \
         the configured `session_queue_bytes` plus one message (an empty queue takes one frame \
         whatever its size), so next to that setting it says how close members came to it.";
    history_bytes => history_bytes hub history_bytes: Gauge "wsm_server_history_bytes"
        "Bytes of room history held (publications and bookkeeping)",
        "Gauge: bytes of room history this node holds, publications and each room's \
         bookkeeping; at most `HistoryConfig::total_bytes` plus the bookkeeping of rooms whose \
         publications were evicted (it expires with their TTL). 0 when Redis keeps the history.";
    history_rooms => history_rooms hub history_rooms: Gauge "wsm_server_history_rooms"
        "Rooms with a history stream held",
        "Gauge: rooms whose history stream (position, publications) this node holds.";
    history_requests => history_requests hub history_requests: Counter
        "wsm_server_history_requests" "history requests answered",
        "`history` requests answered.";
    recovered => recovered hub recovered: Counter "wsm_server_recovered"
        "Joins with since that recovered every missed publication",
        "Joins with `since` answered `\"recovered\":true` (every missed publication followed).";
    recovery_epoch_changed => recovery_epoch_changed hub recovery_epoch_changed: Counter
        "wsm_server_recovery_epoch_changed" "Recoveries refused: the room's history was lost",
        "Joins with `since` answered `\"recovered\":false`, reason `epoch_changed`.";
    recovery_too_old => recovery_too_old hub recovery_too_old: Counter
        "wsm_server_recovery_too_old" "Recoveries refused: missed publications no longer kept",
        "Joins with `since` answered `\"recovered\":false`, reason `too_old`.";
    recovery_too_many => recovery_too_many hub recovery_too_many: Counter
        "wsm_server_recovery_too_many" "Recoveries refused: more missed than recover_limit",
        "Joins with `since` answered `\"recovered\":false`, reason `too_many`.";
    recovery_unavailable => recovery_unavailable hub recovery_unavailable: Counter
        "wsm_server_recovery_unavailable" "Recoveries refused: the history store was unreachable",
        "Joins with `since` answered `\"recovered\":false`, reason `unavailable`.";
    token_refreshes => token_refreshes hub token_refreshes: Counter "wsm_server_token_refreshes"
        "Sessions' tokens replaced by a refresh",
        "`refresh` messages answered `refreshed`: a session took a new token (JWT \
         authentication).";
    token_refresh_failures => token_refresh_failures hub token_refresh_failures: Counter
        "wsm_server_token_refresh_failures" "refresh messages answered bad_token",
        "`refresh` messages answered with the error `bad_token` (the session kept its token).";
    token_expiry_closes => token_expiry_closes hub token_expiry_closes: Counter
        "wsm_server_token_expiry_closes" "Sessions closed with 4001 at their token's exp",
        "Sessions closed with 4001 (`token expired`) because their token reached `exp` without \
         a `refresh`.";
    presence_entries => presence_entries hub presence_entries: Gauge "wsm_server_presence_entries"
        "Presence entries held (one per room member on this node)",
        "Gauge: presence entries this node holds, one per room membership of its sessions (and \
         attached actors), as of the hub's last command.";
    presence_diffs => presence_diffs hub presence_diffs: Counter "wsm_server_presence_diffs"
        "presence_diff messages sent to members",
        "`presence_diff` messages handed to members' queues (one per listener per window in \
         which its room changed).";
    presence_swept => presence_swept hub presence_swept: Counter "wsm_server_presence_swept"
        "Presence entries of lapsed nodes this node removed",
        "Presence entries this node removed from Redis because their node's liveness key lapsed \
         (the node died or was cut off from Redis past the TTL), their leaves sent.";
    presence_resyncs => presence_resyncs hub presence_resyncs: Counter
        "wsm_server_presence_resyncs" "Times this node registered its presence entries again",
        "Times this node registered its presence entries in Redis again, under a new epoch: its \
         liveness key was gone (Redis restarted, or the node was cut off past the TTL) or a \
         write was not taken.";
    hub_queue_high_water => hub_queue_high_water hub hub_queue_high_water: Gauge
        "wsm_server_hub_queue_high_water" "Deepest the hub's command queue has been, in commands",
        "Gauge (high-water mark): the deepest the hub's command queue has been, in commands; \
         never above the configured `hub_queue`.";
    deflate_compressions => deflate_compressions hub deflate_compressions: Counter
        "wsm_server_deflate_compressions" "Messages compressed for permessage-deflate sessions",
        "Messages compressed for sessions that negotiated permessage-deflate. Without context \
         takeover (the server's default) a frame that several members' queues share, as a \
         broadcast's copy for one worker thread is, is compressed once for all of them: with \
         one worker this grows by one per broadcast, not one per member.";
}

impl Counters {
    /// Count one whole message of `len` bytes received from a client.
    pub(crate) fn received(&self, len: usize) {
        self.messages_in.bump();
        self.bytes_in.add(len as u64);
    }

    /// Count one frame of `len` bytes handed to a queue that now holds `depth`.
    pub(crate) fn delivered(&self, len: usize, depth: Depth) {
        self.delivered_many(1, len as u64, depth);
    }

    /// Count `frames` frames of `bytes` bytes in all, the deepest queue holding `max_depth`
    /// after them (frames and bytes, each the maximum over the queues): a broadcast counts
    /// once, not once per member (these counters are shared with sessions on every worker
    /// thread).
    pub(crate) fn delivered_many(&self, frames: u64, bytes: u64, max_depth: Depth) {
        if frames == 0 {
            return;
        }
        self.delivered.add(frames);
        self.bytes.add(bytes);
        self.queue_high_water.raise_to(max_depth.frames as u64);
        self.queue_bytes_high_water.raise_to(max_depth.bytes as u64);
    }
}
