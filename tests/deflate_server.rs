//! permessage-deflate on the server, against Python's `websockets` (which offers it by
//! default): negotiated, echo and rooms work, fewer bytes cross the wire (counted through a
//! `FaultProxy`), and a broadcast is compressed once per worker thread, not once per member.
//!
//! Python comes from `WSM_TEST_PYTHON`, or the venv at `target/py` that `.ci/run` (or
//! `tests/interop_python.rs`) makes; a missing Python is a failure saying so, never a skip.
#![cfg(unix)]

mod common;

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

use actix_ws_manager::config::{DeflateConfig, ServerConfig};
use actix_ws_manager::testkit::FaultProxy;
use common::{start_server, test_config, KillOnDrop};

fn python() -> PathBuf {
    let python = std::env::var_os("WSM_TEST_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            let target = std::env::var_os("CARGO_TARGET_DIR")
                .map(PathBuf::from)
                .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target"));
            target.join("py/bin/python")
        });
    assert!(
        python.exists(),
        "no Python with websockets at {}: set WSM_TEST_PYTHON, or run tests/interop_python.rs \
         once (it makes the venv)",
        python.display()
    );
    python
}

/// Run `tests/interop/deflate_client.py` with `args` on a blocking thread (the proxy runs on
/// this test's runtime), within 60 s; assert it printed `ok`.
async fn run_script(args: Vec<String>) {
    actix_rt::task::spawn_blocking(move || {
        let script =
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/interop/deflate_client.py");
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

fn deflate_on() -> ServerConfig {
    test_config().deflate(DeflateConfig {
        enabled: true,
        ..DeflateConfig::default()
    })
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

/// 20 Python members with deflate in one room each get 5 broadcasts of about 2 KiB; each
/// broadcast was compressed once per worker thread holding members, not once per member.
#[actix_rt::test]
async fn python_room_broadcast_is_compressed_once_per_worker() {
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
    eprintln!("{compressions} compressions");
    let workers = std::thread::available_parallelism().map_or(1, |n| n.get()) as u64;
    assert!(
        (5..=5 * workers).contains(&compressions),
        "{compressions} compressions for 5 broadcasts to 20 members on {workers} workers"
    );
}

/// Decompression bombs from a Python client end with 1009: one message of 16 MiB of zeros
/// whose compressed frame is well under the 64 KiB frame limit, and one fragmented into 512
/// frames of about 100 bytes each that inflate to 64 KiB apiece.
#[actix_rt::test]
async fn python_bombs_are_refused_with_1009() {
    let server = start_server(deflate_on());
    for mode in ["bomb", "bombs"] {
        run_script(vec![mode.into(), server.echo_url()]).await;
    }
}
