//! `wsm load`, run as the built binary: its JSON report for the echo and broadcast scenarios
//! against the embedded server, one clear error line plus a non-zero exit on bad targets, and
//! clap's one-line error for every numeric flag out of its range.

mod common;

use std::process::Command;

use actix_ws_manager::config::ServerConfig;
use actix_ws_manager::server;
use common::load::{assert_one_line_error, report, run_bounded, wsm, wsm_async};

fn check_common(r: &serde_json::Value, scenario: &str) {
    assert_eq!(r["scenario"], scenario);
    assert_eq!(r["connections_requested"], 50);
    assert_eq!(r["connections_connected"], 50);
    assert_eq!(r["missing"], 0, "{r}");
    assert_eq!(r["errors"], 0, "{r}");
    assert!(r["connect_seconds"].as_f64().unwrap() > 0.0);
    assert!(r["messages_per_second"].as_f64().unwrap() > 0.0, "{r}");
    let l = &r["latency_us"];
    let p = |k: &str| {
        l[k].as_u64()
            .unwrap_or_else(|| panic!("latency_us.{k} in {r}"))
    };
    assert!(
        p("p50") > 0 && p("p50") <= p("p90") && p("p90") <= p("p99"),
        "{r}"
    );
    assert!(p("p99") <= p("p999") && p("p999") <= p("max"), "{r}");
    assert!(r["reconnects"].is_u64());
    assert!(r["client_rss_bytes"].as_u64().unwrap() > 0);
    // The embedded server is a child process, measured on its own.
    assert!(r["server_rss_bytes"].as_u64().unwrap() > 0, "{r}");
}

/// The echo scenario against the embedded server: 50 connections all connect, every echo
/// comes back (missing 0, errors 0), and the JSON report carries every field.
#[test]
fn echo_scenario_reports_json() {
    let out = wsm(&["load", "--connections", "50", "--duration", "2s", "--json"]);
    let r = report(&out);
    check_common(&r, "echo");
    assert_eq!(r["sent"], r["received"]);
    // Closed loop: each message is due when it is sent, so both latencies are the same.
    assert_eq!(r["latency_us"], r["latency_uncorrected_us"], "{r}");
    assert_eq!(r["late_sends"], 0, "{r}");
}

/// The broadcast scenario: every receipt of every publish reaches every member
/// (received == publishes × 50, missing 0).
#[test]
fn broadcast_scenario_reports_json() {
    let out = wsm(&[
        "load",
        "--scenario",
        "broadcast",
        "--connections",
        "50",
        "--duration",
        "2s",
        "--json",
    ]);
    let r = report(&out);
    check_common(&r, "broadcast");
    let sent = r["sent"].as_u64().unwrap();
    assert!(sent > 0, "{r}");
    assert_eq!(r["received"].as_u64().unwrap(), sent * 50, "{r}");
    assert_eq!(r["latency_us"], r["latency_uncorrected_us"], "{r}");
}

/// Nothing listening: one clear line on stderr and a non-zero exit, within the bound.
#[test]
fn unreachable_url_fails_cleanly() {
    let out = wsm(&[
        "load",
        "--url",
        "ws://127.0.0.1:1/ws",
        "--connect-timeout",
        "2s",
        "--json",
    ]);
    assert_one_line_error(&out, "nothing accepts TCP connections on 127.0.0.1:1");
}

/// An HTTP server that answers 404 instead of upgrading: the status is in the one-line error.
#[actix_rt::test]
async fn non_websocket_url_fails_cleanly() {
    let server = server::serve("127.0.0.1:0", "/ws", "/echo", ServerConfig::default()).unwrap();
    let url = format!("ws://{}/not-here", server.local_addr());
    let out = wsm_async(&["load", "--url", &url, "--connect-timeout", "2s"]).await;
    assert_one_line_error(&out, "rejected with HTTP 404");
    server.shutdown().await.unwrap();
}

/// A server that completes the upgrade and closes at once: one-line error, non-zero exit.
#[actix_rt::test]
async fn server_closing_at_once_fails_cleanly() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    actix_rt::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            // Upgrade, then drop the socket without a close frame.
            actix_rt::spawn(async move {
                let _ = tokio_tungstenite::accept_async(stream).await;
            });
        }
    });
    let url = format!("ws://{addr}/ws");
    let out = wsm_async(&["load", "--url", &url, "--connect-timeout", "2s"]).await;
    assert_one_line_error(&out, "connected, but");
}

/// Flags that cannot work are refused before anything connects.
#[test]
fn bad_flags_fail_cleanly() {
    let out = wsm(&["load", "--scenario", "broadcast", "--protocol", "echo"]);
    assert_one_line_error(&out, "broadcast scenario needs the rooms protocol");
    let out = wsm(&["load", "--scenario", "idle", "--rate", "100"]);
    assert_one_line_error(&out, "the idle scenario sends none");
}

/// Any host is a target (issue 24): a name that does not resolve fails with one line naming the
/// host and the resolution, not a loopback refusal; `--sender-url` is checked the same way.
#[test]
fn unresolvable_host_fails_with_a_resolution_error() {
    let out = wsm(&["load", "--url", "ws://no-such-host.invalid/ws"]);
    assert_one_line_error(&out, "cannot resolve host \"no-such-host.invalid\"");
    let out = wsm(&[
        "load",
        "--scenario",
        "broadcast",
        "--url",
        "ws://127.0.0.1:9/ws",
        "--sender-url",
        "wss://no-such-host.invalid/ws",
        "--json",
    ]);
    assert_one_line_error(&out, "cannot resolve host \"no-such-host.invalid\"");
}

/// A target not on this machine is tried (no loopback refusal), with one note on stderr that
/// the figures include the network. 192.0.2.1 (TEST-NET-1) answers nobody, so the run then
/// fails on the connect: the note and the error, one line each.
#[test]
fn remote_target_gets_one_note() {
    let out = wsm(&[
        "load",
        "--url",
        "ws://192.0.2.1:9/ws",
        "--connect-timeout",
        "1s",
    ]);
    assert!(!out.status.success(), "must fail");
    let stderr = String::from_utf8_lossy(&out.stderr);
    let lines: Vec<&str> = stderr.trim().lines().collect();
    assert_eq!(lines.len(), 2, "the note and the error: {stderr}");
    assert!(
        lines[0].contains("ws://192.0.2.1:9/ws is not on this machine"),
        "{stderr}"
    );
    assert!(lines[1].contains("192.0.2.1:9"), "{stderr}");
    assert!(!stderr.contains("loopback"), "{stderr}");
}

/// The idle scenario: 50 connections stay up for the whole run, nothing is lost, and the report
/// includes the memory per connection.
#[test]
fn idle_scenario_reports_memory() {
    let out = wsm(&[
        "load",
        "--scenario",
        "idle",
        "--connections",
        "50",
        "--duration",
        "1s",
        "--json",
    ]);
    let r = report(&out);
    assert_eq!(r["scenario"], "idle");
    assert_eq!(r["connections_connected"], 50);
    assert_eq!(r["errors"], 0, "{r}");
    assert_eq!(r["reconnects"], 0, "{r}");
    assert!(r["rss_per_connection_bytes"].is_u64(), "{r}");
}

/// The churn scenario: connections are closed and reopened during the run; every reopen
/// reaches `Connected` (received == sent > 0, missing 0, errors 0).
#[test]
fn churn_scenario_reopens_connections() {
    let out = wsm(&[
        "load",
        "--scenario",
        "churn",
        "--connections",
        "50",
        "--window",
        "2",
        "--duration",
        "1s",
        "--json",
    ]);
    let r = report(&out);
    assert_eq!(r["scenario"], "churn");
    assert_eq!(r["connections_connected"], 50);
    let sent = r["sent"].as_u64().unwrap();
    assert!(sent > 0, "{r}");
    assert_eq!(r["received"].as_u64().unwrap(), sent, "{r}");
    assert_eq!(r["missing"], 0, "{r}");
    assert_eq!(r["errors"], 0, "{r}");
}

/// Messages over the target's size limit: the probe reports the server's 1009 close in one line
/// instead of a run full of missing replies.
#[actix_rt::test]
async fn oversized_messages_fail_cleanly_with_the_close_code() {
    let server = server::serve("127.0.0.1:0", "/ws", "/echo", ServerConfig::default()).unwrap();
    let url = server.url();
    let out = wsm_async(&["load", "--url", &url, "--size", "100000"]).await;
    assert_one_line_error(&out, "closed it with 1009");
    server.shutdown().await.unwrap();
}

/// Under an open-file limit too small for the run, `wsm load` says so on stderr, measures with
/// the connections that came up, and its totals cover exactly those (sent == received). The
/// embedded server runs as a child process with its own limit (inherited here: 200, enough for
/// the ~170 connections the client can hold).
#[test]
fn fd_limit_is_reported_and_the_run_still_completes() {
    let mut cmd = Command::new("sh");
    cmd.args([
        "-c",
        r#"ulimit -Sn 200 && ulimit -Hn 200 && exec "$0" "$@""#,
        env!("CARGO_BIN_EXE_wsm"),
        "load",
        "--connections",
        "300",
        "--duration",
        "1s",
        "--connect-timeout",
        "2s",
        "--json",
    ]);
    let out = run_bounded(cmd);
    let stderr = String::from_utf8_lossy(&out.stderr);
    // 1 descriptor per connection here: (200 - 128) / 1 = 72 can come up by the estimate.
    assert!(
        stderr.contains("the open-file limit is 200; 300 connections need about 428 (1 each here; the server child has its own limit), so about 72 can come up"),
        "{stderr}"
    );
    let r = report(&out);
    let up = r["connections_connected"].as_u64().unwrap();
    assert!(up > 0 && up < 300, "{r}");
    assert!(
        stderr.contains(&format!("{up} of 300 connections came up")),
        "{stderr}"
    );
    assert!(stderr.contains("EMFILE"), "the cause is named: {stderr}");
    assert_eq!(r["sent"], r["received"], "{r}");
    assert_eq!(r["errors"], 0, "{r}");
    assert_eq!(r["server_mode"], "child process", "{r}");
}

/// `--in-process` keeps the server in this process: 3 descriptors per connection, one RSS.
#[test]
fn in_process_server_shares_the_process() {
    let out = wsm(&[
        "load",
        "--in-process",
        "--connections",
        "20",
        "--duration",
        "1s",
        "--json",
    ]);
    let r = report(&out);
    assert_eq!(r["server_mode"], "in process", "{r}");
    assert_eq!(r["connections_connected"], 20, "{r}");
    assert!(r["server_rss_bytes"].is_null(), "{r}");
}

/// The default child server reports its own memory and CPU beside the client's.
#[test]
fn child_server_reports_its_own_memory_and_cpu() {
    let out = wsm(&["load", "--connections", "20", "--duration", "1s", "--json"]);
    let r = report(&out);
    assert_eq!(r["server_mode"], "child process", "{r}");
    for key in [
        "server_rss_bytes",
        "server_rss_per_connection_bytes",
        "client_rss_bytes",
    ] {
        assert!(r[key].is_u64(), "{key}: {r}");
    }
    for key in ["client_cpu_seconds", "server_cpu_seconds"] {
        assert!(r[key].as_f64().is_some_and(|s| s > 0.0), "{key}: {r}");
    }
}

/// The idle table shows `–` where nothing was sent, and the churn table speaks of reopening,
/// not of messages and zero latencies.
#[test]
fn idle_and_churn_tables_use_their_own_words() {
    let idle = wsm(&[
        "load",
        "--scenario",
        "idle",
        "--connections",
        "10",
        "--duration",
        "1s",
    ]);
    assert!(idle.status.success());
    let table = String::from_utf8_lossy(&idle.stdout);
    assert!(table.contains("latency µs  –"), "{table}");
    assert!(table.contains("messages/s  –"), "{table}");
    let churn = wsm(&[
        "load",
        "--scenario",
        "churn",
        "--connections",
        "10",
        "--duration",
        "1s",
    ]);
    assert!(churn.status.success());
    let table = String::from_utf8_lossy(&churn.stdout);
    assert!(
        table.contains("reopened") && table.contains("reopen µs"),
        "{table}"
    );
    assert!(!table.contains("messages/s"), "{table}");
}

/// `--tls` runs the embedded server over `wss://` with a certificate made at start, and the
/// clients trust it: every echo comes back.
#[test]
fn tls_embedded_server_echoes() {
    let out = wsm(&[
        "load",
        "--tls",
        "--connections",
        "20",
        "--duration",
        "1s",
        "--json",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let r = report(&out);
    assert!(
        r["url"]
            .as_str()
            .is_some_and(|u| u.starts_with("wss://127.0.0.1:")),
        "{r}"
    );
    assert_eq!(r["connections_connected"], 20, "{r}");
    assert!(r["sent"].as_u64().unwrap() > 0, "{r}");
    assert_eq!(r["sent"], r["received"], "{r}");
}

/// Broadcast across two `wsm serve --redis` nodes: members on one, senders (`--sender-url`) on
/// the other; every publish reaches every member (received == sent x members, none missing).
#[cfg(unix)]
#[test]
fn broadcast_across_two_nodes_with_sender_url() {
    let redis = common::RedisServer::start();
    let url = redis.url();
    let (_a, a_url) = common::spawn_wsm_serve(&["--bind", "127.0.0.1:0", "--redis", &url]);
    let (_b, b_url) = common::spawn_wsm_serve(&["--bind", "127.0.0.1:0", "--redis", &url]);
    let out = wsm(&[
        "load",
        "--scenario",
        "broadcast",
        "--connections",
        "20",
        "--duration",
        "1s",
        "--url",
        &a_url,
        "--sender-url",
        &b_url,
        "--json",
    ]);
    let r = report(&out);
    let sent = r["sent"].as_u64().expect("sent");
    assert!(sent > 0, "{r}");
    assert_eq!(r["received"].as_u64(), Some(sent * 20), "{r}");
    assert_eq!(r["missing"], 0, "{r}");
    assert_eq!(r["errors"], 0, "{r}");
}

/// Every numeric flag of `wsm load` refuses extreme values (zero where at least 1 is needed,
/// `u64::MAX`, past `u64`, negative, a billion years, infinite or NaN rates) with clap's one line
/// naming the flag and status 2, before anything starts: no panic, no capacity overflow.
#[cfg(unix)]
#[test]
fn every_numeric_flag_is_range_checked() {
    use common::{assert_flag_refused, EXTREME_COUNTS, EXTREME_DURATIONS, EXTREME_RATES};
    // --size may be 0, so its extremes are the ones past its top (16 MiB less 4 KiB).
    let sizes: &[&str] = &["16773121", "18446744073709551615", "-1"];
    let table: &[(&str, &[&str])] = &[
        ("--connections", EXTREME_COUNTS),
        ("--duration", EXTREME_DURATIONS),
        ("--window", EXTREME_COUNTS),
        ("--size", sizes),
        ("--rate", EXTREME_RATES),
        ("--connect-rate", EXTREME_RATES),
        ("--rooms", EXTREME_COUNTS),
        ("--senders", EXTREME_COUNTS),
        ("--publish-rate", EXTREME_RATES),
        ("--connect-timeout", EXTREME_DURATIONS),
        ("--timeout", EXTREME_DURATIONS),
        ("--arbiters", EXTREME_COUNTS),
    ];
    for (flag, values) in table {
        for value in *values {
            assert_flag_refused(&["load", &format!("{flag}={value}")], flag);
        }
    }
}
