//! Decompression bombs each way (issue 23, test 3), with the memory they cost: one message of
//! 16 MiB of zeros (about 16 KiB compressed, in one frame) and one of 512 compressed fragments
//! of 64 KiB of zeros each, against a 1 MiB message limit. Each ends with 1009, and the peak RSS
//! (`VmHWM`) of the side under test grows by less than 2 MiB: the limit applies to the inflated
//! bytes as they are inflated, in bounded steps, so a bomb costs at most the limit plus one
//! step.
//!
//! The server side is the built `wsm serve` in a child process (its `/proc/<pid>/status` is
//! read), bombed by Python `websockets` clients (`tests/interop/deflate_client.py`). The
//! client side is the crate's client in this process (this binary holds this one test, so no
//! other test's memory mixes in), bombed by a Python server (`tests/interop/deflate_peer.py`).
#![cfg(target_os = "linux")]

mod common;

use actix_ws_manager::client::{connect, ConnectionState};
use common::process::spawn_wsm_serve_lines;
use common::python::{deflate_client_ok, DeflatePeer};
use common::{client_test_config, recv_within, wait_state, WAIT};

/// The message limit of the side under test.
const LIMIT: usize = 1 << 20;
/// What a bomb may add to the peak RSS.
const BUDGET_KB: u64 = 2048;

/// A `/proc/<pid>/status` line's value in kB.
fn status_kb(pid: u32, field: &str) -> u64 {
    let path = format!("/proc/{pid}/status");
    let status = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("read {path}: {e}"));
    status
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or_else(|| panic!("no {field} in {path}"))
}

/// `deflate_client.py mode url` (it checks the 1009 itself).
fn python_client(mode: &str, url: &str) {
    deflate_client_ok(&[mode.to_owned(), url.to_owned()]);
}

#[actix_rt::test]
async fn bombs_each_way_end_with_1009_within_2_mib() {
    server_side();
    client_side().await;
    contexts_are_counted_and_released().await;
}

/// What `ws::deflate::held` counts in this process: nothing while idle without context
/// takeover (the default), a compressor and an inflater per connection that keeps context
/// (about 256 + 39 KiB at 15 window bits), and nothing again once that connection is gone.
/// (Here, in the one test of this binary, no other connection of this process can interfere.)
async fn contexts_are_counted_and_released() {
    use actix_ws_manager::config::DeflateConfig;
    use actix_ws_manager::ws::deflate::held;
    let peer = DeflatePeer::start(&[]);
    let echo_one = |config: actix_ws_manager::config::ClientConfig| {
        let url = peer.url();
        async move {
            let client = connect(&url, config).expect("connect");
            let mut texts = client.subscribe_text(4);
            let mut events = client.subscribe_events(16);
            wait_state(&mut events, "Connected", |s| {
                *s == ConnectionState::Connected
            })
            .await;
            client.send_text("y".repeat(4096)).await.expect("send");
            recv_within(&mut texts, WAIT, "the echo").await;
            client
        }
    };
    let idle = echo_one(client_test_config()).await;
    let now = held();
    assert_eq!((now.compressors, now.inflaters), (0, 0), "{now:?}");
    let keeping = DeflateConfig {
        no_context_takeover: false,
        peer_no_context_takeover: false,
        ..DeflateConfig::default()
    };
    let kept = echo_one(client_test_config().deflate(keeping)).await;
    let now = held();
    assert_eq!((now.compressors, now.inflaters), (1, 1), "{now:?}");
    assert_eq!(now.bytes, (256 << 10) + (39 << 10), "{now:?}");
    kept.close().await;
    drop(kept);
    idle.close().await;
    // The connection's actors let go of their codec as they stop: wait for it (bounded).
    common::wait::until("every compressor and inflater let go", WAIT, || {
        held() == Default::default()
    })
    .await;
    assert_eq!(held(), Default::default());
}

/// `wsm serve` (deflate on by default) under both Python bombs.
fn server_side() {
    let limit = LIMIT.to_string();
    let (child, lines) =
        spawn_wsm_serve_lines(&["--bind", "127.0.0.1:0", "--max-message-size", &limit], 2);
    let pid = child.0.as_ref().expect("child").id();
    let echo = &lines[1];
    // Warm up: a plain echo exchange with deflate, so that what the first session and the
    // per-thread compressor cost is in the baseline.
    python_client("echo", echo);
    let before = status_kb(pid, "VmHWM:");
    for mode in ["bomb", "bombs", "bomb", "bombs"] {
        python_client(mode, echo);
    }
    let grown = status_kb(pid, "VmHWM:").saturating_sub(before);
    eprintln!("server: peak RSS {before} kB before the bombs, +{grown} kB after four");
    assert!(
        grown < BUDGET_KB,
        "the server's peak RSS grew by {grown} kB under bombs of 16 MiB and 32 MiB inflated"
    );
}

/// The crate's client (1 MiB limit) bombed by a Python server, twice each way.
async fn client_side() {
    let peer = DeflatePeer::start(&[]);
    let pid = std::process::id();
    let config = client_test_config().max_message_size(LIMIT);
    // Warm up: one connection that echoes a compressed message.
    let warm = connect(&peer.url(), config.clone()).expect("connect");
    let mut texts = warm.subscribe_text(4);
    let mut events = warm.subscribe_events(16);
    wait_state(&mut events, "Connected", |s| {
        *s == ConnectionState::Connected
    })
    .await;
    warm.send_text("x".repeat(4096)).await.expect("send");
    recv_within(&mut texts, WAIT, "the warm-up echo").await;
    warm.close().await;
    let before = status_kb(pid, "VmHWM:");
    for bomb in ["bomb", "bombs", "bomb", "bombs"] {
        let client = connect(&peer.url(), config.clone()).expect("connect");
        let mut events = client.subscribe_events(16);
        wait_state(&mut events, "Connected", |s| {
            *s == ConnectionState::Connected
        })
        .await;
        client.send_text(bomb).await.expect("send");
        let state = wait_state(&mut events, "Disconnected", |s| {
            matches!(s, ConnectionState::Disconnected { .. })
        })
        .await;
        assert!(
            matches!(state, ConnectionState::Disconnected { code: 1009, .. }),
            "{bomb}: {state:?}"
        );
        client.close().await;
    }
    let grown = status_kb(pid, "VmHWM:").saturating_sub(before);
    eprintln!("client: peak RSS {before} kB before the bombs, +{grown} kB after four");
    assert!(
        grown < BUDGET_KB,
        "the client's peak RSS grew by {grown} kB under bombs of 16 MiB and 32 MiB inflated"
    );
}
