//! The one table of a [`Manager`](super::Manager)'s figures. Each row names a figure once: its
//! Prometheus name, type and help, its row in the client table of the [`metrics`](crate::metrics)
//! docs, where it comes from in one connection's [`Stats`], and where its total sits in
//! [`ManagerStats`]. [`ManagerStats`], the retired totals and the exported families are all
//! read through this table; a test checks the docs table against it row by row.
//!
//! The four gauges are written out beside the table: [`CONNECTIONS`] (one gauge per state
//! label), [`RTT_CONNECTIONS`] and the two round-trip times ([`RTT_MEAN`], [`RTT_MAX`], in
//! seconds and absent without a measurement).

use super::stats::ManagerStats;
use crate::client::Stats;

/// One counter of a manager (every row of [`FIGURES`] only grows: a Prometheus counter, whose
/// name gets `_total`).
pub(crate) struct Figure {
    /// The Prometheus name, without the `_total` a counter gets.
    pub(crate) name: &'static str,
    /// The Prometheus `# HELP` text.
    pub(crate) help: &'static str,
    /// The "what it counts" cell of its row in the [`metrics`](crate::metrics) docs (read by
    /// the test that holds the docs to this table).
    #[cfg_attr(not(test), allow(dead_code))]
    pub(crate) doc: &'static str,
    /// Its value in one connection's [`Stats`], for figures that are sums over connections;
    /// `None` for the manager's own figures.
    pub(crate) of_connection: Option<fn(&Stats) -> u64>,
    /// Where its total sits in [`ManagerStats`].
    pub(crate) total: fn(&mut ManagerStats) -> &mut u64,
}

/// The manager's counters, in the order they are exported.
#[rustfmt::skip]
pub(crate) const FIGURES: [Figure; 12] = [
    Figure { name: "wsm_client_messages_in", help: "Messages received",
        doc: "messages received",
        of_connection: Some(|s| s.messages_in), total: |m| &mut m.messages_in },
    Figure { name: "wsm_client_bytes_in", help: "Payload bytes received",
        doc: "payload bytes received",
        of_connection: Some(|s| s.bytes_in), total: |m| &mut m.bytes_in },
    Figure { name: "wsm_client_messages_out", help: "Messages written to sockets",
        doc: "messages written to sockets",
        of_connection: Some(|s| s.messages_out), total: |m| &mut m.messages_out },
    Figure { name: "wsm_client_bytes_out", help: "Payload bytes written to sockets",
        doc: "payload bytes written to sockets",
        of_connection: Some(|s| s.bytes_out), total: |m| &mut m.bytes_out },
    Figure { name: "wsm_client_reconnects", help: "Successful reconnections",
        doc: "successful reconnections",
        of_connection: Some(|s| s.reconnects), total: |m| &mut m.reconnects },
    Figure { name: "wsm_client_dropped",
        help: "Outgoing messages dropped (outbox policy, lost connections)",
        doc: "outgoing messages dropped (outbox policy, lost connections)",
        of_connection: Some(|s| s.dropped), total: |m| &mut m.dropped },
    Figure { name: "wsm_client_dropped_incoming",
        help: "Incoming messages dropped for full subscribers (channels or actor mailboxes)",
        doc: "incoming messages dropped for full subscribers (channels or actor mailboxes)",
        of_connection: Some(|s| s.dropped_incoming), total: |m| &mut m.dropped_incoming },
    Figure { name: "wsm_client_read_pauses",
        help: "Times a connection paused reading because a backpressure subscriber or its router was behind",
        doc: "times a connection paused reading because a backpressure subscriber or its router was behind",
        of_connection: Some(|s| s.read_pauses), total: |m| &mut m.read_pauses },
    Figure { name: "wsm_client_recovered",
        help: "Recoveries of missed room messages that brought them all (rejoins, gap fills)",
        doc: "recoveries of missed room messages that brought them all (rejoins, gap fills)",
        of_connection: Some(|s| s.recovered), total: |m| &mut m.recovered },
    Figure { name: "wsm_client_unrecoverable",
        help: "Recoveries of missed room messages that could not bring them all",
        doc: "recoveries of missed room messages that could not bring them all",
        of_connection: Some(|s| s.unrecoverable), total: |m| &mut m.unrecoverable },
    Figure { name: "wsm_client_duplicates",
        help: "Room messages dropped as already delivered (same offset)",
        doc: "room messages dropped as already delivered (same offset)",
        of_connection: Some(|s| s.duplicates), total: |m| &mut m.duplicates },
    Figure { name: "wsm_client_failed_connections",
        help: "Connections that reached Failed and were forgotten",
        doc: "connections that reached `Failed` and were forgotten",
        of_connection: None, total: |m| &mut m.forgotten },
];

/// A figure written out beside the table: name, Prometheus type, help, docs cell.
pub(crate) type Special = (&'static str, &'static str, &'static str, &'static str);

/// Tracked connections, one gauge per `state` label.
pub(crate) const CONNECTIONS: Special = (
    "wsm_client_connections",
    "gauge",
    "Tracked connections by state",
    "tracked connections, by `state` label: `connecting`, `connected`, `disconnected`, \
     `reconnecting`, `failed`, `closed`",
);
/// Connected connections with a measured round-trip time.
pub(crate) const RTT_CONNECTIONS: Special = (
    "wsm_client_rtt_connections",
    "gauge",
    "Connected connections with a measured round-trip time",
    "connected connections with a measured round-trip time (heartbeat pongs)",
);
/// The mean of their smoothed round-trip times.
pub(crate) const RTT_MEAN: Special = (
    "wsm_client_smoothed_rtt_mean_seconds",
    "gauge",
    "Mean smoothed round-trip time of the connected connections",
    "mean of their smoothed round-trip times (absent without any)",
);
/// The largest of their smoothed round-trip times.
pub(crate) const RTT_MAX: Special = (
    "wsm_client_smoothed_rtt_max_seconds",
    "gauge",
    "Largest smoothed round-trip time of the connected connections",
    "the largest of them (absent without any)",
);

#[cfg(test)]
mod tests {
    use super::*;

    /// The client table in the `metrics` docs says, row for row and in order, what this table
    /// says: a figure added here without its docs row (or the reverse) fails.
    #[test]
    fn the_metrics_docs_table_is_this_table() {
        let source = include_str!("../../metrics.rs");
        let documented: Vec<&str> = source
            .lines()
            .filter(|l| l.starts_with("//! | `wsm_client_"))
            .collect();
        let row = |name: &str, kind: &str, doc: &str| format!("//! | `{name}` | {kind} | {doc} |");
        let mut expected = vec![row(CONNECTIONS.0, CONNECTIONS.1, CONNECTIONS.3)];
        for f in &FIGURES {
            expected.push(row(&format!("{}_total", f.name), "counter", f.doc));
        }
        for (name, kind, _, doc) in [RTT_CONNECTIONS, RTT_MEAN, RTT_MAX] {
            expected.push(row(name, kind, doc));
        }
        assert_eq!(documented, expected);
    }
}
