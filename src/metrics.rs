//! Prometheus metrics for the server and the client `Manager` (feature `metrics`, on by default),
//! on [`prometheus_client`].
//!
//! Nothing is counted twice: the figures are the atomics the server's hub and sessions, and each
//! client connection, already keep for [`Rooms::metrics`](crate::server::Rooms::metrics) and
//! [`Manager::stats`](crate::client::Manager::stats). A collector reads them at each
//! scrape (a pull model), so metrics cost nothing between scrapes, need no background task, and
//! a scrape never waits in the hub's queue.
//!
//! - Server: [`Rooms::mount_metrics`](crate::server::Rooms::mount_metrics) serves them at a path
//!   of your `App`; [`Rooms::register_metrics`](crate::server::Rooms::register_metrics) adds them
//!   to a [`Registry`] of yours; `wsm serve --metrics-bind 127.0.0.1:9090` serves them at
//!   `/metrics` on a second listener.
//! - Client: [`Manager::register_metrics`](crate::client::Manager::register_metrics)
//!   adds a manager's aggregate figures to a registry.
//! - [`mount`] serves any registry (yours, with both of the above in it) at a path; [`render`]
//!   gives its text.
//!
//! ```no_run
//! use std::sync::Arc;
//! use actix_web::{App, HttpServer};
//! use actix_ws_manager::metrics::{self, prometheus_client::registry::Registry};
//! use actix_ws_manager::{client::{Manager, ManagerConfig}, config::ServerConfig, server::Rooms};
//!
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! let rooms = Rooms::start(ServerConfig::default())?;
//! let feeds = Manager::new(ManagerConfig::default())?;
//! let mut registry = Registry::default();
//! rooms.register_metrics(&mut registry);
//! feeds.register_metrics(&mut registry);
//! let registry = Arc::new(registry);
//! HttpServer::new(move || {
//!     App::new()
//!         .configure(rooms.mount("/ws"))
//!         .configure(metrics::mount("/metrics", registry.clone()))
//! })
//! .bind(("127.0.0.1", 8080))?
//! .run()
//! .await?;
//! # Ok(()) }
//! ```
//!
//! The text is the Prometheus exposition format 0.0.4 ([`CONTENT_TYPE`]). Counters carry the
//! `_total` suffix; a sub-registry made with `Registry::sub_registry_with_prefix` prefixes every
//! name.
//!
//! # Server metrics
//!
//! The same figures, as a struct: [`ServerMetrics`](crate::server::metrics::ServerMetrics).
//!
//! | name | type | what it counts |
//! | --- | --- | --- |
//! | `wsm_server_sessions` | gauge | WebSocket sessions open now (rooms and echo endpoints), upgrades waiting on the auth hook included |
//! | `wsm_server_rooms` | gauge | rooms with at least one member |
//! | `wsm_server_messages_in_total` | counter | whole messages received from clients (text and binary, refused ones included) |
//! | `wsm_server_bytes_in_total` | counter | payload bytes of those messages |
//! | `wsm_server_messages_out_total` | counter | frames handed to session queues (broadcast copies, replies, errors, welcomes) |
//! | `wsm_server_bytes_out_total` | counter | payload bytes of those frames |
//! | `wsm_server_published_total` | counter | publishes the hub took, from clients and from server code |
//! | `wsm_server_fanout_latency_seconds` | histogram | time the hub took per publish, from taking it off its queue to having offered it to every member; buckets 5 µs to 100 ms; its `_count` equals `published` |
//! | `wsm_server_slow_consumer_drops_total` | counter | frames dropped on a member's full queue (`SlowConsumerPolicy::DropNewest`) |
//! | `wsm_server_slow_consumer_disconnects_total` | counter | sessions disconnected for a full queue (`SlowConsumerPolicy::Disconnect`, close 1013) |
//! | `wsm_server_heartbeat_timeouts_total` | counter | sessions disconnected because nothing arrived within the heartbeat timeout |
//! | `wsm_server_rate_limited_total` | counter | messages refused with `rate_limited` |
//! | `wsm_server_rate_limit_disconnects_total` | counter | sessions closed with 1008 for going on past twice their burst |
//! | `wsm_server_per_ip_refusals_total` | counter | upgrades refused with HTTP 429 by the per-address limit |
//! | `wsm_server_backplane_publish_errors_total` | counter | publishes the backplane could not take |
//! | `wsm_server_backplane_reconnects_total` | counter | times the backplane connection was lost and made again |
//! | `wsm_server_backplane_dropped_total` | counter | messages from other nodes dropped: the inbound buffer was full, or a message came out of its publisher's order after a reconnect |
//! | `wsm_server_backplane_channels` | gauge | room channels this node is subscribed to in the backplane, as last confirmed (equals `wsm_server_rooms` once caught up) |
//! | `wsm_server_backplane_received_total` | counter | messages from other nodes fanned out here |
//! | `wsm_server_session_queue_high_water` | gauge | deepest any session queue has been, in frames (at most `session_queue`) |
//! | `wsm_server_session_queue_bytes_high_water` | gauge | most payload bytes any session queue has held (at most `session_queue_bytes` plus one message) |
//! | `wsm_server_history_bytes` | gauge | bytes of room history held, publications and bookkeeping (at most `HistoryConfig::total_bytes` plus the bookkeeping of rooms whose publications were evicted) |
//! | `wsm_server_history_rooms` | gauge | rooms whose history stream this node holds |
//! | `wsm_server_history_requests_total` | counter | `history` requests answered |
//! | `wsm_server_recovered_total` | counter | joins with `since` answered `"recovered":true` |
//! | `wsm_server_recovery_epoch_changed_total` | counter | joins with `since` answered `"recovered":false`, reason `epoch_changed` |
//! | `wsm_server_recovery_too_old_total` | counter | the same, reason `too_old` |
//! | `wsm_server_recovery_too_many_total` | counter | the same, reason `too_many` |
//! | `wsm_server_recovery_unavailable_total` | counter | the same, reason `unavailable` |
//! | `wsm_server_auth_refusals_total` | counter | upgrades refused with HTTP 401 for their token (JWT authentication), by `reason` label: `missing`, `malformed`, `algorithm`, `unknown_key`, `signature`, `expired`, `not_yet_valid`, `audience`, `issuer`, `claims` |
//! | `wsm_server_token_refreshes_total` | counter | `refresh` messages answered `refreshed` |
//! | `wsm_server_token_refresh_failures_total` | counter | `refresh` messages answered with the error `bad_token` |
//! | `wsm_server_token_expiry_closes_total` | counter | sessions closed with 4001 because their token reached `exp` without a refresh |
//! | `wsm_server_presence_entries` | gauge | presence entries held: one per room membership on this node |
//! | `wsm_server_presence_diffs_total` | counter | `presence_diff` messages handed to members' queues |
//! | `wsm_server_presence_swept_total` | counter | presence entries of lapsed nodes this node removed from Redis (their leaves sent) |
//! | `wsm_server_presence_resyncs_total` | counter | times this node registered its presence entries in Redis again (liveness key gone, or a write not taken) |
//! | `wsm_server_hub_queue_high_water` | gauge | deepest the hub's command queue has been, in commands (at most `hub_queue`) |
//! | `wsm_server_deflate_compressions_total` | counter | messages compressed for permessage-deflate sessions (a frame members share is compressed once for all of them) |
//!
//! # Client metrics
//!
//! Aggregates over one [`Manager`](crate::client::Manager)'s connections; the same
//! figures as a struct: [`ManagerStats`](crate::client::ManagerStats). The counters
//! keep what connections the manager no longer tracks (closed, or failed and forgotten) had
//! counted, so they never go down, as Prometheus counters must not (`ManagerStats` sums the
//! tracked connections only).
//!
//! | name | type | what it counts |
//! | --- | --- | --- |
//! | `wsm_client_connections` | gauge | tracked connections, by `state` label: `connecting`, `connected`, `disconnected`, `reconnecting`, `failed`, `closed` |
//! | `wsm_client_messages_in_total` | counter | messages received |
//! | `wsm_client_bytes_in_total` | counter | payload bytes received |
//! | `wsm_client_messages_out_total` | counter | messages written to sockets |
//! | `wsm_client_bytes_out_total` | counter | payload bytes written to sockets |
//! | `wsm_client_reconnects_total` | counter | successful reconnections |
//! | `wsm_client_dropped_total` | counter | outgoing messages dropped (outbox policy, lost connections) |
//! | `wsm_client_dropped_incoming_total` | counter | incoming messages dropped for full subscribers (channels or actor mailboxes) |
//! | `wsm_client_read_pauses_total` | counter | times a connection paused reading because a backpressure subscriber or its router was behind |
//! | `wsm_client_recovered_total` | counter | recoveries of missed room messages that brought them all (rejoins, gap fills) |
//! | `wsm_client_unrecoverable_total` | counter | recoveries of missed room messages that could not bring them all |
//! | `wsm_client_duplicates_total` | counter | room messages dropped as already delivered (same offset) |
//! | `wsm_client_failed_connections_total` | counter | connections that reached `Failed` and were forgotten |
//! | `wsm_client_rtt_connections` | gauge | connected connections with a measured round-trip time (heartbeat pongs) |
//! | `wsm_client_smoothed_rtt_mean_seconds` | gauge | mean of their smoothed round-trip times (absent without any) |
//! | `wsm_client_smoothed_rtt_max_seconds` | gauge | the largest of them (absent without any) |

// The encoding helpers below serve the server and the client; with neither, only `render` is left.
#![cfg_attr(not(any(feature = "client", feature = "server")), allow(dead_code))]

pub use prometheus_client;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::registry::Registry;

use crate::error::{Error, Result};

/// The `Content-Type` of [`render`]'s text: the Prometheus text format, version 0.0.4.
pub const CONTENT_TYPE: &str = prometheus_client::encoding::prometheus_text::CONTENT_TYPE;

/// The Prometheus text (format 0.0.4) of everything in `registry`, read now. Fails with
/// [`Error::Encode`] only if a collector of yours in the registry fails.
pub fn render(registry: &Registry) -> Result<String> {
    let mut text = String::new();
    prometheus_client::encoding::prometheus_text::encode(&mut text, registry)
        .map_err(|e| Error::Encode(format!("metrics text: {e}")))?;
    Ok(text)
}

/// An `App::configure` function that serves `registry` as Prometheus text at `GET path` (for
/// example `/metrics`): mount it into your own `App` to serve the server's, a manager's and your
/// own metrics on one page. Each scrape renders the registry anew; a failing collector answers
/// HTTP 500 with the error.
#[cfg(feature = "server")]
pub fn mount(
    path: &str,
    registry: std::sync::Arc<Registry>,
) -> impl FnOnce(&mut actix_web::web::ServiceConfig) + 'static {
    use actix_web::{web, HttpResponse};
    let path = path.to_owned();
    move |cfg: &mut web::ServiceConfig| {
        cfg.route(
            &path,
            web::get().to(move || {
                let registry = registry.clone();
                async move {
                    match render(&registry) {
                        Ok(text) => HttpResponse::Ok().content_type(CONTENT_TYPE).body(text),
                        Err(e) => {
                            tracing::warn!("cannot render metrics: {e}");
                            HttpResponse::InternalServerError().body(e.to_string())
                        }
                    }
                }
            }),
        );
    }
}

/// A metric's type, for [`figure`].
#[derive(Debug, Clone, Copy)]
pub(crate) enum Kind {
    /// Only grows (the text adds `_total` to its name).
    Counter,
    /// Goes up and down.
    Gauge,
}

/// Write one unlabelled counter or gauge.
pub(crate) fn figure(
    e: &mut DescriptorEncoder,
    kind: Kind,
    name: &str,
    help: &str,
    value: u64,
) -> std::fmt::Result {
    match kind {
        Kind::Counter => {
            let metric = ConstCounter::new(value);
            metric.encode(e.encode_descriptor(name, help, None, metric.metric_type())?)
        }
        Kind::Gauge => gauge(e, name, help, value),
    }
}

/// Write one unlabelled gauge.
pub(crate) fn gauge<V>(
    e: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    value: V,
) -> std::fmt::Result
where
    ConstGauge<V>: EncodeMetric,
{
    let metric = ConstGauge::new(value);
    metric.encode(e.encode_descriptor(name, help, None, metric.metric_type())?)
}

/// Write one gauge or counter with a value per label (`name{label="value"} n`; a counter's
/// name gets `_total`).
#[cfg(any(feature = "client", feature = "server"))]
pub(crate) fn labelled(
    e: &mut DescriptorEncoder,
    kind: Kind,
    name: &str,
    help: &str,
    label: &str,
    values: &[(&str, u64)],
) -> std::fmt::Result {
    let metric_type = match kind {
        Kind::Counter => prometheus_client::metrics::MetricType::Counter,
        Kind::Gauge => prometheus_client::metrics::MetricType::Gauge,
    };
    let mut family = e.encode_descriptor(name, help, None, metric_type)?;
    for (value, n) in values {
        let labels = [(label, *value)];
        match kind {
            Kind::Counter => ConstCounter::new(*n).encode(family.encode_family(&labels)?)?,
            Kind::Gauge => ConstGauge::new(*n).encode(family.encode_family(&labels)?)?,
        }
    }
    Ok(())
}

/// Write a latency histogram in seconds from plain figures: `(upper bound, observations at or
/// below it)` for each finite bucket, ascending and cumulative, then the count of every
/// observation (the `+Inf` bucket) and their sum.
#[cfg(feature = "server")]
pub(crate) fn histogram(
    e: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    cumulative_buckets: &[(std::time::Duration, u64)],
    count: u64,
    sum: std::time::Duration,
) -> std::fmt::Result {
    // The encoder wants counts per bucket, not cumulative ones; the last, unbounded bucket is
    // `count` itself.
    let mut previous = 0;
    let mut buckets = Vec::with_capacity(cumulative_buckets.len() + 1);
    for (bound, cumulative) in cumulative_buckets {
        buckets.push((bound.as_secs_f64(), cumulative.saturating_sub(previous)));
        previous = *cumulative;
    }
    buckets.push((f64::INFINITY, count.saturating_sub(previous)));
    let histogram = prometheus_client::metrics::MetricType::Histogram;
    let mut metric = e.encode_descriptor(name, help, None, histogram)?;
    metric.encode_histogram::<prometheus_client::encoding::NoLabelSet>(
        sum.as_secs_f64(),
        count,
        &buckets,
        None,
    )
}
