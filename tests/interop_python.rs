//! Interop with an independent peer: Python's `websockets`. The crate's client talks to a Python
//! server (`tests/interop/peer_server.py`: echo, fragments, pings, close codes), and Python
//! clients talk to the real `wsm serve` binary (`tests/interop/rooms_*.py`: the whole rooms
//! protocol, room history and recovery, presence, JWT authentication, and 100 clients in one
//! room; `tls_rooms_client.py`: over `wss://`).
//!
//! Python comes from `WSM_TEST_PYTHON`, or the venv at `target/py` (which `.ci/run` makes); when
//! neither has `websockets`, the first test that needs it makes the venv and installs it there.
//! A missing Python is a failure that says how to fix it, never a skip.
#![cfg(unix)]

mod common;

use std::io::{BufRead, BufReader, Read};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use actix_ws_manager::client::{connect, ConnectionState};
use actix_ws_manager::config::ReconnectPolicy;
use bytes::Bytes;
use common::python::{interop_script as script, manifest_dir, python};
use common::{client_test_config, recv_within, spawn_wsm_serve, test_pki, wait_state, KillOnDrop};
use common::{recv_until, WAIT};

/// Run `tests/interop/<name>` with `args` within `bound`; assert it exits 0 printing `ok`.
/// Answers what it wrote on stderr.
fn run_script_ok(name: &str, args: &[&str], bound: Duration) -> String {
    let mut child = KillOnDrop(Some(
        Command::new(python())
            .arg(script(name))
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("python runs"),
    ));
    let running = child.0.as_mut().expect("child");
    // Read both pipes to their end (the script exiting) on threads, so the wait is bounded.
    let read_all = |pipe: Option<Box<dyn std::io::Read + Send>>| {
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut text = String::new();
            if let Some(mut pipe) = pipe {
                let _ = pipe.read_to_string(&mut text);
            }
            let _ = tx.send(text);
        });
        rx
    };
    let stdout = read_all(running.stdout.take().map(|p| Box::new(p) as _));
    let stderr = read_all(running.stderr.take().map(|p| Box::new(p) as _));
    let deadline = Instant::now() + bound;
    let output = |rx: std::sync::mpsc::Receiver<String>| {
        let left = deadline.saturating_duration_since(Instant::now());
        // On timeout the child is killed when `child` is dropped by the panic.
        rx.recv_timeout(left)
            .unwrap_or_else(|_| panic!("{name} did not finish within {bound:?}"))
    };
    let (stdout, stderr) = (output(stdout), output(stderr));
    let status = running.wait().expect("python exits");
    assert!(
        status.success() && stdout.trim() == "ok",
        "{name} failed ({status}):\n--- stdout\n{stdout}\n--- stderr\n{stderr}"
    );
    stderr
}

/// The first characters of `text`, for a failure message.
fn head(text: &str) -> String {
    format!(
        "{:?} ({} bytes)",
        text.chars().take(40).collect::<String>(),
        text.len()
    )
}

/// `tests/interop/peer_server.py`, running: its port, and the lines it prints after it (one per
/// ended connection). Killed when dropped; it also ends by itself when its stdin closes.
struct PeerServer {
    _child: KillOnDrop,
    port: u16,
    lines: tokio::sync::mpsc::Receiver<String>,
}

impl PeerServer {
    fn start() -> PeerServer {
        let mut child = KillOnDrop(Some(
            Command::new(python())
                .arg(script("peer_server.py"))
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .spawn()
                .expect("python runs"),
        ));
        let stdout = child
            .0
            .as_mut()
            .and_then(|c| c.stdout.take())
            .expect("stdout");
        let (first_tx, first_rx) = std::sync::mpsc::channel();
        let (tx, lines) = tokio::sync::mpsc::channel(256);
        std::thread::spawn(move || {
            let mut lines = BufReader::new(stdout).lines();
            if let Some(Ok(line)) = lines.next() {
                let _ = first_tx.send(line);
            }
            for line in lines.map_while(Result::ok) {
                let _ = tx.blocking_send(line);
            }
        });
        let first = first_rx
            .recv_timeout(WAIT)
            .expect("peer_server.py prints its port (its stderr is above)");
        let port = first
            .trim()
            .parse()
            .expect("a port number on the first line");
        PeerServer {
            _child: child,
            port,
            lines,
        }
    }

    fn url(&self, path: &str) -> String {
        format!("ws://127.0.0.1:{}{path}", self.port)
    }

    /// The server's line about the first connection to `path` that ended:
    /// `closed <path> sent=<code or -> received=<code> <reason>`.
    async fn closed(&mut self, path: &str) -> String {
        let prefix = format!("closed {path} ");
        recv_until(&mut self.lines, WAIT, &prefix, |l| l.starts_with(&prefix)).await
    }
}

/// Text (non-ASCII, empty, 54 KB) and binary (empty, every byte value, 100 KiB) messages go to
/// the Python server and come back byte for byte and in order; the client's close reaches
/// Python as 1000.
#[actix_rt::test]
async fn client_round_trips_text_and_binary_with_python_server() {
    let mut server = PeerServer::start();
    let client = connect(&server.url("/echo"), client_test_config()).unwrap();
    let mut events = client.subscribe_events(64);
    let mut texts = client.subscribe_text(64);
    let mut binaries = client.subscribe_binary(64);
    wait_state(&mut events, "Connected", |s| {
        *s == ConnectionState::Connected
    })
    .await;

    let long = "ü€𝄞".repeat(6_000);
    let sent_texts = [
        "héllo wörld",
        "日本語のテキスト",
        "🦀 crab",
        "",
        "plain",
        &long,
    ];
    for text in sent_texts {
        client.send_text(text.to_owned()).await.unwrap();
    }
    for text in sent_texts {
        let got = recv_within(&mut texts, WAIT, "echoed text").await.data;
        assert!(
            *got == *text,
            "text came back as {} bytes: {}",
            got.len(),
            head(&got)
        );
    }

    let every_byte: Vec<u8> = (0..=255).collect();
    let big: Vec<u8> = (0..100 * 1024).map(|i| (i * 31 % 251) as u8).collect();
    let sent_binaries = [Bytes::new(), Bytes::from(every_byte), Bytes::from(big)];
    for bytes in &sent_binaries {
        client.send_binary(bytes.clone()).await.unwrap();
    }
    for bytes in &sent_binaries {
        let got = recv_within(&mut binaries, WAIT, "echoed binary").await.data;
        assert!(
            got == bytes,
            "binary of {} bytes came back as {} bytes",
            bytes.len(),
            got.len()
        );
    }
    assert!(
        texts.try_recv().is_err() && binaries.try_recv().is_err(),
        "extra messages"
    );
    let stats = client.stats();
    assert_eq!((stats.messages_out, stats.messages_in), (9, 9), "{stats:?}");

    client.close().await;
    let line = server.closed("/echo").await;
    assert!(line.contains(" received=1000"), "{line}");
}

/// Python sends every message back cut into 7-byte fragments, each message ending with an empty
/// final fragment (a text one with multi-byte UTF-8 characters cut in half, a 3000-byte binary
/// one, a 2-byte text one in a single data fragment): each arrives whole, exactly once, in order,
/// and Python's frame count shows they really were fragmented.
#[actix_rt::test]
async fn client_reassembles_python_fragments() {
    const SIZE: usize = 7;
    let server = PeerServer::start();
    let client = connect(
        &server.url(&format!("/fragments/{SIZE}")),
        client_test_config(),
    )
    .unwrap();
    let mut events = client.subscribe_events(64);
    let mut texts = client.subscribe_text(64);
    let mut binaries = client.subscribe_binary(64);
    wait_state(&mut events, "Connected", |s| {
        *s == ConnectionState::Connected
    })
    .await;

    let text = "fragmented: héllo wörld ✓ 𝄞 日本語 ".repeat(10);
    let cut_chars = (SIZE..text.len())
        .step_by(SIZE)
        .filter(|&i| !text.is_char_boundary(i));
    assert!(
        cut_chars.count() > 5,
        "the text must have characters cut by the fragments"
    );
    let short = "ü";
    let binary: Bytes = (0..3000)
        .map(|i| (i % 256) as u8)
        .collect::<Vec<u8>>()
        .into();
    client.send_text(text.clone()).await.unwrap();
    client.send_binary(binary.clone()).await.unwrap();
    client.send_text(short).await.unwrap();
    client.send_text("stats").await.unwrap();

    let frames = |n: usize| n.div_ceil(SIZE);
    let expected_stats = format!(
        "fragments 3 {}",
        frames(text.len()) + frames(binary.len()) + frames(short.len())
    );
    for want in [text.as_str(), short, &expected_stats] {
        let got = recv_within(&mut texts, WAIT, "reassembled text").await.data;
        assert!(*got == *want, "got {}, want {}", head(&got), head(want));
    }
    let got = recv_within(&mut binaries, WAIT, "reassembled binary")
        .await
        .data;
    assert!(got == binary, "binary came back as {} bytes", got.len());
    assert!(
        texts.try_recv().is_err() && binaries.try_recv().is_err(),
        "a duplicate or a piece"
    );
    assert_eq!(client.state(), ConnectionState::Connected);
    client.close().await;
}

/// The Python server pings three times and waits for each pong (with its payload): the client
/// answers them, and Python reports `pong-ok 3`.
#[actix_rt::test]
async fn client_answers_python_server_pings() {
    let mut server = PeerServer::start();
    let client = connect(&server.url("/ping"), client_test_config()).unwrap();
    let mut events = client.subscribe_events(64);
    let mut texts = client.subscribe_text(64);
    wait_state(&mut events, "Connected", |s| {
        *s == ConnectionState::Connected
    })
    .await;
    let got = recv_within(&mut texts, WAIT, "the server's verdict")
        .await
        .data;
    assert_eq!(&*got, "pong-ok 3");
    assert_eq!(client.state(), ConnectionState::Connected);
    client.close().await;
    let line = server.closed("/ping").await;
    assert!(line.contains(" received=1000"), "{line}");
}

/// The Python server closes with 4001 and then with 1000, each with a reason: the client shows
/// `Disconnected { code, reason }` as sent (after the text sent before the close), and answers
/// the close with the same code (which Python reports).
#[actix_rt::test]
async fn python_server_close_codes_reach_the_client() {
    let mut server = PeerServer::start();
    for code in [4001u16, 1000] {
        let path = format!("/close/{code}");
        let config = client_test_config().reconnect(ReconnectPolicy::never());
        let client = connect(&server.url(&path), config).unwrap();
        let mut events = client.subscribe_events(64);
        let mut texts = client.subscribe_text(64);
        wait_state(&mut events, "Connected", |s| {
            *s == ConnectionState::Connected
        })
        .await;
        let got = recv_within(&mut texts, WAIT, "the text before the close")
            .await
            .data;
        assert_eq!(&*got, format!("closing {code}"));
        let state = wait_state(&mut events, "Disconnected", |s| {
            matches!(s, ConnectionState::Disconnected { .. })
        })
        .await;
        assert_eq!(
            state,
            ConnectionState::Disconnected {
                code,
                reason: format!("python closes with {code}")
            }
        );
        let line = server.closed(&path).await;
        assert!(
            line.starts_with(&format!("closed {path} sent={code} received={code}")),
            "the client did not answer the close with {code}: {line}"
        );
        // Reconnection is off: the client ends without dialling again.
        let end = tokio::time::timeout(WAIT, client.closed()).await;
        assert!(matches!(end, Ok(ConnectionState::Failed { .. })), "{end:?}");
    }
}

/// Two Python clients speak the whole rooms protocol to `wsm serve`: welcome, join, publish with
/// and without an event and an id (ack), echo, the ping envelope, every error code a client's
/// own input can cause (malformed, unknown_type, not_joined, bad_event, bad_room,
/// binary_unsupported; the session stays usable after each), leave, and a normal close.
#[test]
fn python_clients_speak_the_whole_rooms_protocol() {
    let (_serve, url) = spawn_wsm_serve(&["--bind", "127.0.0.1:0"]);
    assert!(url.starts_with("ws://127.0.0.1:"), "{url}");
    run_script_ok("rooms_protocol.py", &[&url], Duration::from_secs(60));
}

/// Python clients speak room history to `wsm serve` by the README's table: the position in
/// `joined`, offsets and epochs on room messages, a join with `since` (recovered, then the
/// missed publications in order, then live ones; a foreign epoch: `epoch_changed`), `history`
/// requests (the latest K, since a position, another epoch), and `bad_position`.
#[test]
fn python_clients_recover_and_read_history() {
    let (_serve, url) = spawn_wsm_serve(&["--bind", "127.0.0.1:0"]);
    run_script_ok("rooms_history.py", &[&url], Duration::from_secs(60));
}

/// Python clients read presence by the README's table: a `presence_diff` with the other's join
/// and info (never their own), `presence` with the exact count and both members, `bad_data`
/// for info over 1 KiB, and the leave.
#[test]
fn python_clients_read_presence() {
    let (_serve, url) = spawn_wsm_serve(&["--bind", "127.0.0.1:0"]);
    run_script_ok("rooms_presence.py", &[&url], Duration::from_secs(60));
}

/// 100 Python clients join one room of `wsm serve` and each publishes 20 numbered messages: every
/// client receives all 2000 (the publisher gets its own too), each publisher's sequence whole and
/// in order, and its 20 acks.
#[test]
fn hundred_python_clients_in_one_room_get_every_publication_in_order() {
    let (_serve, url) = spawn_wsm_serve(&["--bind", "127.0.0.1:0"]);
    let start = Instant::now();
    let report = run_script_ok(
        "rooms_crowd.py",
        &[&url, "100", "20"],
        Duration::from_secs(60),
    );
    eprintln!("{} (whole test {:?})", report.trim(), start.elapsed());
}

/// Python `websockets`, trusting only the test CA, joins, publishes (broadcast and ack), echoes
/// and closes against `wsm serve --tls-cert --tls-key`.
#[test]
fn python_websockets_client_speaks_rooms_over_wss() {
    /// Removes the test's temporary directory, also when the test fails.
    struct TempDir(PathBuf);
    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
    let dir = TempDir(std::env::temp_dir().join(format!("wsm-interop-{}", std::process::id())));
    let dir = &dir.0;
    std::fs::create_dir_all(dir).expect("temp dir");
    let (ca, cert, key) = test_pki();
    let (ca_path, cert_path, key_path) = (
        dir.join("ca.pem"),
        dir.join("cert.pem"),
        dir.join("key.pem"),
    );
    for (path, pem) in [(&ca_path, &ca), (&cert_path, &cert), (&key_path, &key)] {
        std::fs::write(path, pem).expect("write pem");
    }
    let (cert_arg, key_arg) = (
        cert_path.to_str().expect("utf-8 path"),
        key_path.to_str().expect("utf-8 path"),
    );
    let (_serve, url) = spawn_wsm_serve(&[
        "--bind",
        "127.0.0.1:0",
        "--tls-cert",
        cert_arg,
        "--tls-key",
        key_arg,
    ]);
    assert!(url.starts_with("wss://127.0.0.1:"), "{url}");
    let ca_arg = ca_path.to_str().expect("utf-8 path").to_owned();
    run_script_ok(
        "tls_rooms_client.py",
        &[&url, &ca_arg],
        Duration::from_secs(60),
    );
}

/// Python `websockets` + PyJWT against `wsm serve --jwt-secret-file` (and a second
/// `--jwt-public-key-file` RS256 server): 401 with a one-line reason for no token, a bad
/// signature, `alg: none`, an RS256 token, an expired one, one without `exp`, a non-bearer
/// header and a bad query token; a valid token's `sub` as `welcome`'s identity and as `from`
/// (with `session`); the `rooms` claim `chat.*` lets the session into `chat.general` and not
/// `admin`; `token_expiring` for a 2-s token, `refresh` (`bad_token` for another sub and for
/// an expired token, then `refreshed`) keeping the session past the old `exp`, and 4001 at
/// `exp` without one; algorithm confusion refused on the RS256 server. `/metrics` counts each
/// refusal by reason, the refreshes and the expiry close.
#[actix_rt::test]
async fn python_jwt_clients_are_authenticated_refreshed_and_expired() {
    let files = common::TempFiles::new("jwt-interop");
    let secret = files.write("secret", "a-test-secret-of-at-least-32-bytes!!\n");
    let fixtures = manifest_dir().join("tests/fixtures/jwt");
    let fixture = |name: &str| fixtures.join(name).to_string_lossy().into_owned();
    let (_hs, lines) = common::spawn_wsm_serve_lines(
        &[
            "--bind",
            "127.0.0.1:0",
            "--jwt-secret-file",
            &secret,
            "--metrics-bind",
            "127.0.0.1:0",
        ],
        3,
    );
    let (url, page) = (&lines[0], &lines[2]);
    let rsa_public = fixture("rsa1_public.pem");
    let (_rs, rs_url) = spawn_wsm_serve(&[
        "--bind",
        "127.0.0.1:0",
        "--jwt-public-key-file",
        &rsa_public,
    ]);
    let args = [
        url.as_str(),
        &secret,
        &fixture("rsa1_private.pem"),
        &rs_url,
        &rsa_public,
    ];
    run_script_ok("jwt_auth.py", &args, Duration::from_secs(90));

    let (m, _) = common::prom::scrape(page).await;
    let refused = |reason: &str| {
        common::prom::get(
            &m,
            &format!("wsm_server_auth_refusals_total{{reason=\"{reason}\"}}"),
        )
    };
    // none and RS256 are refused by algorithm; not-a-bearer and not-a-JWT are malformed.
    let expected = [
        ("missing", 1.0),
        ("signature", 1.0),
        ("algorithm", 2.0),
        ("expired", 1.0),
        ("claims", 1.0),
        ("malformed", 2.0),
        ("audience", 0.0),
    ];
    for (reason, n) in expected {
        assert_eq!(refused(reason), n, "refusals for {reason}");
    }
    assert_eq!(
        common::prom::get(&m, "wsm_server_token_refreshes_total"),
        1.0
    );
    assert_eq!(
        common::prom::get(&m, "wsm_server_token_refresh_failures_total"),
        2.0
    );
    assert_eq!(
        common::prom::get(&m, "wsm_server_token_expiry_closes_total"),
        1.0
    );
}
