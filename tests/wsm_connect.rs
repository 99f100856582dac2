//! `wsm connect`, the built binary, against servers started in the test: stdin lines go out
//! (verbatim, or as envelopes with `--json`), incoming messages come out on stdout, state changes
//! on stderr; it reconnects after a server restart, exits 0 when stdin closes, and exits non-zero
//! with one clear line for a bad URL, a refused connection and a refused upgrade.
#![cfg(unix)]

mod common;

use std::io::{BufRead, BufReader, Write};
use std::process::{Child, ChildStdin, Command, ExitStatus, Stdio};

use actix_ws_manager::server;
use common::{recv_until, recv_within, start_server, test_config, WAIT};
use tokio::sync::mpsc;

/// A running `wsm connect`: its stdin, and its stdout and stderr lines as channels (read on
/// threads, so the test's actix system, which runs the server, never blocks).
struct Wsm {
    child: Option<Child>,
    stdin: Option<ChildStdin>,
    out: mpsc::Receiver<String>,
    err: mpsc::Receiver<String>,
}

fn lines(reader: impl std::io::Read + Send + 'static) -> mpsc::Receiver<String> {
    let (tx, rx) = mpsc::channel(1024);
    std::thread::spawn(move || {
        for line in BufReader::new(reader).lines().map_while(Result::ok) {
            if tx.blocking_send(line).is_err() {
                break;
            }
        }
    });
    rx
}

impl Wsm {
    fn start(args: &[&str]) -> Wsm {
        let mut child = Command::new(env!("CARGO_BIN_EXE_wsm"))
            .arg("connect")
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("wsm starts");
        let stdin = child.stdin.take();
        let out = lines(child.stdout.take().expect("stdout"));
        let err = lines(child.stderr.take().expect("stderr"));
        Wsm {
            child: Some(child),
            stdin,
            out,
            err,
        }
    }

    fn send(&mut self, line: &str) {
        let stdin = self.stdin.as_mut().expect("stdin open");
        writeln!(stdin, "{line}").expect("write stdin");
        stdin.flush().expect("flush stdin");
    }

    /// Close stdin (if open) and wait, bounded, for the exit status.
    async fn exit(&mut self) -> ExitStatus {
        self.stdin = None;
        let mut child = self.child.take().expect("running");
        let (tx, mut rx) = mpsc::channel(1);
        std::thread::spawn(move || {
            let _ = tx.blocking_send(child.wait().expect("wait"));
        });
        recv_within(&mut rx, WAIT, "wsm to exit").await
    }

    /// Every stderr line until the stream ends (after `exit`).
    async fn stderr(&mut self) -> String {
        let mut all = Vec::new();
        for _ in 0..1000 {
            match tokio::time::timeout(WAIT, self.err.recv()).await {
                Ok(Some(line)) => all.push(line),
                Ok(None) => break,
                Err(_) => panic!("stderr did not end; so far: {all:?}"),
            }
        }
        all.join("\n")
    }
}

impl Drop for Wsm {
    fn drop(&mut self) {
        if let Some(child) = self.child.as_mut() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Plain mode on the echo endpoint: each stdin line comes back on stdout verbatim; after the
/// server restarts on the same port, stderr shows the loss and the reconnect and lines flow
/// again; closing stdin ends with status 0 after a clean close.
#[actix_rt::test]
async fn connect_echoes_lines_reconnects_and_exits_0_on_stdin_close() {
    let first = start_server(test_config());
    let addr = first.local_addr();
    let mut wsm = Wsm::start(&[&first.echo_url()]);
    recv_until(&mut wsm.err, WAIT, "connected", |l: &String| {
        l == "wsm: connected"
    })
    .await;
    wsm.send("hello");
    assert_eq!(recv_within(&mut wsm.out, WAIT, "echo").await, "hello");
    wsm.send(r#"{"not":"wrapped"}"#);
    assert_eq!(
        recv_within(&mut wsm.out, WAIT, "echo").await,
        r#"{"not":"wrapped"}"#
    );

    first.shutdown().await.expect("shutdown");
    recv_until(&mut wsm.err, WAIT, "the loss", |l: &String| {
        l.starts_with("wsm: disconnected (1001")
    })
    .await;
    let second = server::serve(addr, "/ws", "/echo", test_config()).expect("same port");
    recv_until(&mut wsm.err, WAIT, "reconnected", |l: &String| {
        l == "wsm: connected"
    })
    .await;
    wsm.send("again");
    assert_eq!(recv_within(&mut wsm.out, WAIT, "echo").await, "again");

    let status = wsm.exit().await;
    assert!(status.success(), "{status:?}");
    assert!(wsm.stderr().await.contains("wsm: closed"));
    second.shutdown().await.expect("shutdown");
}

/// `--json --join lobby --room lobby` speaks the rooms protocol: JSON lines become `data` as
/// JSON, other lines as strings, both published to the room and received back as `message`
/// envelopes; a publish from the server reaches stdout too.
#[actix_rt::test]
async fn connect_json_publishes_into_a_room() {
    let server = start_server(test_config());
    let mut wsm = Wsm::start(&[
        "--json",
        "--join",
        "lobby",
        "--room",
        "lobby",
        &server.url(),
    ]);
    let json = |l: &String| serde_json::from_str::<serde_json::Value>(l).unwrap_or_default();
    recv_until(&mut wsm.out, WAIT, "joined", |l: &String| {
        json(l)["type"] == "joined"
    })
    .await;
    wsm.send(r#"{"text":"hi"}"#);
    wsm.send("plain words");
    for data in [
        serde_json::json!({"text": "hi"}),
        serde_json::json!("plain words"),
    ] {
        let line = recv_until(&mut wsm.out, WAIT, "room message", |l: &String| {
            json(l)["type"] == "message"
        })
        .await;
        let msg = json(&line);
        assert_eq!(
            (&msg["room"], &msg["data"]),
            (&"lobby".into(), &data),
            "{line}"
        );
    }
    let reached = server
        .rooms()
        .publish_json("lobby", "from the server")
        .await
        .expect("publish");
    assert_eq!(reached, 1);
    let line = recv_within(&mut wsm.out, WAIT, "server publish").await;
    assert_eq!(json(&line)["data"], "from the server", "{line}");

    assert!(wsm.exit().await.success());
    server.shutdown().await.expect("shutdown");
}

/// A URL that is not ws://, a port where nothing listens, and a path the server does not serve
/// (HTTP 404) each end with a non-zero status and one `wsm: ...` line that says why.
#[actix_rt::test]
async fn connect_fails_clearly_on_bad_url_refusal_and_http_error() {
    let server = start_server(test_config());
    let free_port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        l.local_addr().expect("addr").port()
    };
    let not_found = format!("ws://{}/nope", server.local_addr());
    let refused = format!("ws://127.0.0.1:{free_port}/ws");
    let refused_why = format!("connection refused by 127.0.0.1:{free_port}");
    let cases = [
        ("http://example.com/ws", "invalid WebSocket URL"),
        (refused.as_str(), refused_why.as_str()),
        (not_found.as_str(), "HTTP 404"),
    ];
    for (url, why) in cases {
        let mut wsm = Wsm::start(&["--connect-timeout", "3s", url]);
        let status = wsm.exit().await;
        assert!(!status.success(), "{url}: {status:?}");
        let stderr = wsm.stderr().await;
        let last = stderr.lines().last().unwrap_or_default();
        assert!(
            last.starts_with("wsm: ") && last.contains(why),
            "{url}: {stderr}"
        );
        // One line that names the cause, never a Debug dump.
        assert!(!stderr.contains(" {"), "{url}: {stderr}");
    }
    server.shutdown().await.expect("shutdown");
}
