//! permessage-deflate on the server, against Python's `websockets` (which offers it by
//! default): negotiated by `wsm serve`, echo and rooms work, fewer bytes cross the wire
//! (counted through a `FaultProxy`), `--no-deflate` declines, and a broadcast to 200 members is
//! compressed once for all of them.
//!
//! Python comes from `WSM_TEST_PYTHON`, or the venv at `target/py` that `.ci/run` (or
//! `tests/interop_python.rs`) makes; a missing Python is a failure saying so, never a skip.
#![cfg(unix)]

mod common;

use actix_ws_manager::config::ServerConfig;
use actix_ws_manager::testkit::FaultProxy;
use common::process::spawn_wsm_serve_lines;
use common::python::deflate_client_ok;
use common::{start_server, test_config};

/// `deflate_client.py` with `args` on a blocking thread (the proxy runs on this test's runtime).
async fn run_script(args: Vec<String>) {
    actix_rt::task::spawn_blocking(move || deflate_client_ok(&args))
        .await
        .expect("the script's thread");
}

/// The server's default config: deflate is on by default.
fn deflate_on() -> ServerConfig {
    assert!(test_config().deflate.enabled, "deflate is on by default");
    test_config()
}

/// The address of a `ws://127.0.0.1:PORT/...` URL.
fn addr_of(url: &str) -> std::net::SocketAddr {
    let rest = url.trim_start_matches("ws://");
    rest[..rest.find('/').unwrap_or(rest.len())]
        .parse()
        .expect("an address in the URL")
}

/// Python clients with deflate (its default) against `wsm serve` (deflate on by default): the
/// extension is negotiated, rooms and echo work, and the echo exchange sends and receives far
/// fewer bytes than the same exchange without the extension (counted by a `FaultProxy`).
#[actix_rt::test]
async fn python_against_wsm_serve_negotiates_and_moves_fewer_bytes() {
    let (_child, lines) = spawn_wsm_serve_lines(&["--bind", "127.0.0.1:0"], 2);
    let (rooms, echo) = (lines[0].clone(), lines[1].clone());
    run_script(vec!["rooms".into(), rooms, "--members".into(), "20".into()]).await;
    let mut bytes = Vec::new();
    for plain in [false, true] {
        let proxy = FaultProxy::start(addr_of(&echo)).await.expect("proxy");
        let mut args = vec!["echo".to_owned(), proxy.url("/echo")];
        if plain {
            args.push("--plain".into());
        }
        run_script(args).await;
        bytes.push((proxy.bytes_up(), proxy.bytes_down()));
    }
    eprintln!("bytes (up, down), deflate then plain: {bytes:?}");
    let [(up, down), (plain_up, plain_down)] = bytes[..] else {
        unreachable!()
    };
    assert!(up * 3 < plain_up, "up: {up} compressed, {plain_up} plain");
    assert!(
        down * 3 < plain_down,
        "down: {down} compressed, {plain_down} plain"
    );
}

/// `wsm serve --no-deflate` declines a Python client's offer, and the echo still works.
#[actix_rt::test]
async fn wsm_serve_no_deflate_declines_the_offer() {
    let (_child, lines) = spawn_wsm_serve_lines(&["--bind", "127.0.0.1:0", "--no-deflate"], 2);
    run_script(vec!["echo".into(), lines[1].clone(), "--declined".into()]).await;
}

/// 200 Python members with deflate in one room each get 5 broadcasts of about 2 KiB: each
/// broadcast was compressed exactly once (`HubStats::deflate_compressions`), not once per
/// member nor once per worker thread, and every member inflated it.
#[actix_rt::test]
async fn python_room_broadcast_to_200_members_is_compressed_once() {
    let server = start_server(deflate_on());
    let before = server
        .rooms()
        .stats()
        .await
        .expect("stats")
        .deflate_compressions;
    run_script(vec!["rooms".into(), server.url()]).await;
    let compressions = server
        .rooms()
        .stats()
        .await
        .expect("stats")
        .deflate_compressions
        - before;
    assert_eq!(
        compressions, 5,
        "5 broadcasts to 200 deflate members were compressed {compressions} times"
    );
}
