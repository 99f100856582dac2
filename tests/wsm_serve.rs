//! `wsm serve`, the built binary: prints its URL first, applies its flags, exits cleanly on
//! SIGTERM after closing sessions with 1001, and refuses every numeric flag out of its range.
#![cfg(unix)]

mod common;

use std::process::Command;

use common::prom::{documented, get, histogram_count, scrape};
use common::{spawn_wsm_serve, spawn_wsm_serve_lines, Peer, WAIT};

async fn refused(req: awc::ws::WebsocketsRequest) -> u16 {
    match req.connect().await {
        Err(awc::error::WsClientError::InvalidResponseStatus(s)) => s.as_u16(),
        Err(e) => panic!("unexpected error {e}"),
        Ok(_) => panic!("upgrade was accepted"),
    }
}

/// The first stdout line is the ws:// URL (port 0 resolved); the flags take effect (paths,
/// message size, session limit, origin allow-list); SIGTERM closes the session with 1001 and the
/// process exits with status 0.
#[actix_rt::test]
async fn serve_prints_url_applies_flags_and_exits_on_sigterm() {
    let (mut child, url) = spawn_wsm_serve(&[
        "--bind",
        "127.0.0.1:0",
        "--path",
        "/rooms",
        "--echo-path",
        "/e",
        "--max-message-size",
        "100",
        "--heartbeat-interval",
        "200ms",
        "--heartbeat-timeout",
        "2s",
        "--max-sessions",
        "2",
        "--session-queue",
        "8",
        "--allowed-origin",
        "https://a.example",
        "--allowed-origin",
        "https://b.example",
    ]);
    assert!(url.starts_with("ws://127.0.0.1:"), "{url}");
    assert!(url.ends_with("/rooms"), "{url}");
    assert!(!url.contains(":0/"), "{url}");
    let echo_url = url.replace("/rooms", "/e");

    let client = awc::Client::new();
    assert_eq!(
        refused(client.ws(&url).origin("https://c.example")).await,
        403
    );
    let (_, framed) = client
        .ws(&url)
        .origin("https://b.example")
        .connect()
        .await
        .expect("allowed origin");
    let mut rooms = Peer { framed };
    assert_eq!(rooms.json().await["type"], "welcome");

    let mut echo = Peer::connect(&echo_url).await;
    assert_eq!(refused(client.ws(&url)).await, 503, "--max-sessions 2");
    echo.text(&"a".repeat(101)).await;
    assert_eq!(
        echo.close_code().await,
        Some(1009),
        "--max-message-size 100"
    );

    let pid = child.0.as_ref().map(|c| c.id()).expect("child").to_string();
    let status = Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .expect("kill");
    assert!(status.success());
    assert_eq!(rooms.close_code().await, Some(1001));

    // Wait for the exit on a thread (std has no async wait); kill -9 if it never comes.
    let (tx, rx) = std::sync::mpsc::channel();
    let mut process = child.0.take().expect("child");
    std::thread::spawn(move || {
        let _ = tx.send(process.wait());
    });
    let code = match rx.recv_timeout(WAIT) {
        Ok(status) => status.expect("wait"),
        Err(_) => {
            let _ = Command::new("kill").args(["-KILL", &pid]).status();
            panic!("wsm did not exit after SIGTERM");
        }
    };
    assert!(code.success(), "{code:?}");
}

/// `--max-per-ip`, `--rate-limit` and `--rate-burst` take effect: a second connection from the
/// same address gets HTTP 429; past the burst a message gets `rate_limited`, and past twice the
/// burst the session is closed with 1008.
#[actix_rt::test]
async fn serve_applies_rate_and_per_address_limits() {
    let (_child, url) = spawn_wsm_serve(&[
        "--bind",
        "127.0.0.1:0",
        "--max-per-ip",
        "1",
        "--rate-limit",
        "1",
        "--rate-burst",
        "1",
    ]);
    let (mut peer, _) = Peer::rooms(&url).await;
    assert_eq!(
        refused(awc::Client::new().ws(&url)).await,
        429,
        "--max-per-ip 1"
    );
    peer.text(r#"{"type":"ping","id":1}"#).await;
    assert_eq!(peer.json().await["type"], "pong");
    peer.text(r#"{"type":"ping","id":2}"#).await;
    assert_eq!(peer.json().await["data"]["code"], "rate_limited");
    peer.text(r#"{"type":"ping","id":3}"#).await;
    assert_eq!(peer.close_code().await, Some(1008));
}

/// `--metrics-bind 127.0.0.1:0` serves Prometheus text at `/metrics` on a second listener
/// whose URL is the third stdout line (port 0 resolved; the rooms URL stays first). The page
/// lists the documented server metrics and follows real traffic: 3 sessions and 1 room, 5
/// publishes in published and the fan-out histogram, every message in and out counted exactly,
/// and the `rate_limited` errors a client got past its burst.
#[actix_rt::test]
async fn serve_metrics_bind_serves_prometheus_text() {
    let (_child, lines) = spawn_wsm_serve_lines(
        &[
            "--bind",
            "127.0.0.1:0",
            "--metrics-bind",
            "127.0.0.1:0",
            "--rate-limit",
            "1",
            "--rate-burst",
            "8",
        ],
        3,
    );
    let (url, page) = (&lines[0], &lines[2]);
    assert!(
        url.starts_with("ws://127.0.0.1:") && url.ends_with("/ws"),
        "{url}"
    );
    assert!(page.starts_with("http://127.0.0.1:"), "{page}");
    assert!(
        page.ends_with("/metrics") && !page.contains(":0/"),
        "{page}"
    );

    let (mut a, _) = Peer::rooms(url).await;
    let (mut b, _) = Peer::rooms(url).await;
    for peer in [&mut a, &mut b] {
        peer.text(r#"{"type":"join","room":"lobby","id":1}"#).await;
        assert_eq!(peer.json().await["type"], "joined");
    }
    for i in 0..5 {
        a.text(&format!(
            r#"{{"type":"publish","room":"lobby","id":{i},"data":{i}}}"#
        ))
        .await;
    }
    for _ in 0..10 {
        a.json().await; // 5 copies and 5 acks
    }
    for i in 0..5 {
        assert_eq!(b.json().await["data"], i);
    }
    // C pings 10 times with a burst of 8: the errors it is told of are the ones counted.
    let (mut c, _) = Peer::rooms(url).await;
    for i in 0..10 {
        c.text(&format!(r#"{{"type":"ping","id":{i}}}"#)).await;
    }
    let mut refused = 0;
    for _ in 0..10 {
        if c.json().await["type"] == "error" {
            refused += 1;
        }
    }
    assert!(refused >= 1, "past the burst, pings are refused");

    let (m, types) = scrape(page).await;
    let names: std::collections::BTreeSet<_> = types.into_iter().collect();
    assert_eq!(names, documented("wsm_server_"));
    assert_eq!(get(&m, "wsm_server_sessions"), 3.0);
    assert_eq!(get(&m, "wsm_server_rooms"), 1.0);
    assert_eq!(get(&m, "wsm_server_published_total"), 5.0);
    assert_eq!(
        histogram_count(&m, "wsm_server_fanout_latency_seconds"),
        5.0
    );
    // 2 joins, 5 publishes, 10 pings.
    assert_eq!(get(&m, "wsm_server_messages_in_total"), 17.0);
    // 3 welcomes, 2 joined, 10 copies, 5 acks, 10 answers to pings.
    assert_eq!(get(&m, "wsm_server_messages_out_total"), 30.0);
    assert_eq!(get(&m, "wsm_server_rate_limited_total"), f64::from(refused));
}

/// A bind address that does not parse, a port already in use, and a missing TLS file each end
/// with exit status 1 and one `wsm: ...` line naming the input, printed once; so do a
/// `--metrics-bind` address that does not parse and one already in use.
#[test]
fn serve_names_bad_inputs_once() {
    let busy = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let busy = busy.local_addr().expect("addr").to_string();
    let metrics_busy = format!("--metrics-bind: cannot listen on {busy}");
    let cases: [(&[&str], &str); 7] = [
        (
            &["--bind", "127.0.0.1:0", "--redis", "http://x"],
            "invalid Redis URL \"http://x\"",
        ),
        (
            &[
                "--bind",
                "127.0.0.1:0",
                "--redis",
                "redis://127.0.0.1:1",
                "--node-id",
                "a b",
            ],
            "node id \"a b\"",
        ),
        (&["--bind", "nonsense"], "cannot listen on \"nonsense\""),
        (&["--bind", &busy], &format!("cannot listen on {busy}")),
        (
            &["--bind", "127.0.0.1:0", "--metrics-bind", "nonsense"],
            "--metrics-bind: cannot listen on \"nonsense\"",
        ),
        (
            &["--bind", "127.0.0.1:0", "--metrics-bind", &busy],
            &metrics_busy,
        ),
        (
            &[
                "--bind",
                "127.0.0.1:0",
                "--tls-cert",
                "/nonexistent/c.pem",
                "--tls-key",
                "/k",
            ],
            "cannot read --tls-cert /nonexistent/c.pem",
        ),
    ];
    for (args, needle) in cases {
        let out = Command::new(env!("CARGO_BIN_EXE_wsm"))
            .arg("serve")
            .args(args)
            .env("RUST_LOG", "off")
            .output()
            .expect("wsm runs");
        assert!(!out.status.success(), "{args:?}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        let lines: Vec<&str> = stderr.lines().collect();
        assert_eq!(lines.len(), 1, "{args:?}: {stderr}");
        assert!(
            lines[0].starts_with("wsm: ") && lines[0].contains(needle),
            "{stderr}"
        );
    }
}

/// Two `wsm serve --redis` processes share rooms: a member of one receives what a member of the
/// other publishes, with the publisher's session name carrying its node id.
#[actix_rt::test]
async fn two_serve_processes_share_rooms_through_redis() {
    let redis = common::RedisServer::start();
    let url = redis.url();
    let (_a, a_url) =
        common::spawn_wsm_serve(&["--bind", "127.0.0.1:0", "--redis", &url, "--node-id", "na"]);
    let (_b, b_url) =
        common::spawn_wsm_serve(&["--bind", "127.0.0.1:0", "--redis", &url, "--node-id", "nb"]);
    let (mut a, _) = Peer::rooms(&a_url).await;
    let (mut b, b_name) = Peer::rooms(&b_url).await;
    assert!(b_name.starts_with("nb."), "{b_name}");
    for p in [&mut a, &mut b] {
        p.text(r#"{"type":"join","room":"lobby"}"#).await;
        assert_eq!(p.json().await["type"], "joined");
    }
    b.text(r#"{"type":"publish","room":"lobby","event":"chat","data":{"text":"hi"},"id":1}"#)
        .await;
    let got = a.json().await;
    assert_eq!(got["type"], "chat", "{got}");
    assert_eq!(got["data"]["text"], "hi");
    assert_eq!(got["from"], b_name.as_str());
}

/// Every numeric flag of `wsm serve` refuses extreme values (zero where at least 1 is needed,
/// `u64::MAX`, past `u64`, negative, a billion years) with clap's one line naming the flag and
/// status 2, before anything listens.
#[test]
fn every_numeric_flag_is_range_checked() {
    use common::{assert_flag_refused, EXTREME_COUNTS, EXTREME_DURATIONS};
    // Flags that need another flag get it, so that only the value is wrong.
    let table: &[(&str, &[&str], &[&str])] = &[
        ("--max-message-size", EXTREME_COUNTS, &[]),
        ("--heartbeat-interval", EXTREME_DURATIONS, &[]),
        ("--heartbeat-timeout", EXTREME_DURATIONS, &[]),
        ("--max-sessions", EXTREME_COUNTS, &[]),
        ("--session-queue", EXTREME_COUNTS, &[]),
        ("--tcp-user-timeout", EXTREME_DURATIONS, &[]),
        ("--rate-limit", EXTREME_COUNTS, &[]),
        ("--rate-burst", EXTREME_COUNTS, &["--rate-limit", "1"]),
        ("--max-per-ip", EXTREME_COUNTS, &[]),
        ("--hub-queue", EXTREME_COUNTS, &[]),
        ("--presence-list-limit", EXTREME_COUNTS, &[]),
        (
            "--redis-timeout",
            EXTREME_DURATIONS,
            &["--redis", "redis://127.0.0.1:1"],
        ),
    ];
    for (flag, values, extra) in table {
        for value in *values {
            let mut args = vec!["serve", "--bind", "127.0.0.1:0"];
            args.extend_from_slice(extra);
            let arg = format!("{flag}={value}");
            args.push(&arg);
            assert_flag_refused(&args, flag);
        }
    }
}
