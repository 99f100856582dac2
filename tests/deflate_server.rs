//! permessage-deflate on the server, against Python's `websockets` (which offers it by
//! default): negotiated, echo and rooms work, fewer bytes cross the wire (counted through a
//! `FaultProxy`), and a broadcast is compressed once for all its members.
//!
//! Python comes from `WSM_TEST_PYTHON`, or the venv at `target/py` that `.ci/run` (or
//! `tests/interop_python.rs`) makes; a missing Python is a failure saying so, never a skip.
#![cfg(unix)]

mod common;

use std::process::{Command, Stdio};
use std::time::Duration;

use actix_ws_manager::config::ServerConfig;
use actix_ws_manager::testkit::FaultProxy;
use common::python::{interop_script, python};
use common::{start_server, test_config, KillOnDrop};

/// Run `tests/interop/deflate_client.py` with `args` on a blocking thread (the proxy runs on
/// this test's runtime), within 60 s; assert it printed `ok`.
async fn run_script(args: Vec<String>) {
    actix_rt::task::spawn_blocking(move || {
        let script = interop_script("deflate_client.py");
        let child = Command::new(python())
            .arg(script)
            .args(&args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("python runs");
        let mut guard = KillOnDrop(Some(child));
        let (tx, rx) = std::sync::mpsc::channel();
        let child = guard.0.take().expect("child");
        std::thread::spawn(move || {
            let _ = tx.send(child.wait_with_output());
        });
        let out = rx
            .recv_timeout(Duration::from_secs(60))
            .unwrap_or_else(|_| panic!("deflate_client.py {args:?} did not finish in 60 s"))
            .expect("python exits");
        let (stdout, stderr) = (
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
        );
        assert!(
            out.status.success() && stdout.trim() == "ok",
            "deflate_client.py {args:?}:\n--- stdout\n{stdout}\n--- stderr\n{stderr}"
        );
    })
    .await
    .expect("the script's thread");
}

/// The server's default config: deflate is on by default.
fn deflate_on() -> ServerConfig {
    assert!(test_config().deflate.enabled, "deflate is on by default");
    test_config()
}

/// A Python client with deflate gets the extension, its echoes back verbatim, and sends and
/// receives far fewer bytes than the same exchange without the extension.
#[actix_rt::test]
async fn python_echo_with_deflate_moves_fewer_bytes() {
    let server = start_server(deflate_on());
    let mut bytes = Vec::new();
    for plain in [false, true] {
        let proxy = FaultProxy::start(server.local_addr()).await.expect("proxy");
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
