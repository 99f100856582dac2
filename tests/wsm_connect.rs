//! `wsm connect`, the built binary, against servers started in the test: stdin lines go out
//! (verbatim, or as envelopes with `--json`), incoming messages come out on stdout, state changes
//! on stderr; it reconnects after a server restart, exits 0 when stdin closes, and exits non-zero
//! with one clear line for a bad URL, a refused connection, a refused upgrade and a refused TLS
//! certificate; every numeric flag out of its range gets clap's one line. With `--ca` it trusts the self-signed certificate that `openssl req -x509` makes
//! and `wsm serve --tls-cert` serves. With `--join` in a room with history, each rejoin's
//! recovery is one line on stderr (`recovered N messages in R`, or `R: could not recover
//! (REASON): messages may be missing`). With `--token-file` the file is read again for every
//! connect, and a missing one is a one-line error naming it. With `--presence` each presence diff
//! is one line on stderr.
#![cfg(unix)]

mod common;

use std::io::{BufRead, BufReader, Write};
use std::process::{Child, ChildStdin, Command, ExitStatus, Stdio};

use actix_ws_manager::server;
use common::{
    recv_until, recv_within, self_signed_ca_cert, spawn_wsm_serve_lines, start_server, test_config,
    KillOnDrop, TempFiles, WAIT,
};
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

/// `wsm serve --tls-cert FILE --tls-key FILE` on 127.0.0.1:0 with the certificate `cert` (PEM)
/// and its key, written into `files`: answers the child, the certificate's path and the echo URL
/// (the second line `wsm serve` prints).
fn serve_tls(files: &TempFiles, name: &str, cert: &str, key: &str) -> (KillOnDrop, String, String) {
    let cert_path = files.write(&format!("{name}.pem"), cert);
    let key_path = files.write(&format!("{name}.key"), key);
    let (child, lines) = spawn_wsm_serve_lines(
        &[
            "--bind",
            "127.0.0.1:0",
            "--tls-cert",
            &cert_path,
            "--tls-key",
            &key_path,
        ],
        2,
    );
    let echo = lines[1].clone();
    assert!(echo.starts_with("wss://127.0.0.1:"), "{echo}");
    (child, cert_path, echo)
}

/// The certificate that `openssl req -x509 -newkey rsa:2048 -nodes -subj /CN=localhost -addext
/// subjectAltName=DNS:localhost,IP:127.0.0.1` makes (self-signed, `CA:TRUE`), served by
/// `wsm serve --tls-cert cert.pem --tls-key key.pem`: `wsm connect --ca cert.pem
/// wss://127.0.0.1:P/echo` connects, lines echo, and closing stdin exits 0.
#[actix_rt::test]
async fn connect_with_ca_trusts_the_self_signed_certificate_wsm_serve_presents() {
    let files = TempFiles::new("connect-ca");
    let (cert, key) = self_signed_ca_cert(&["localhost", "127.0.0.1"], None);
    let (_serve, cert_path, echo) = serve_tls(&files, "cert", &cert, &key);
    let mut wsm = Wsm::start(&["--ca", &cert_path, &echo]);
    recv_until(&mut wsm.err, WAIT, "connected", |l: &String| {
        l == "wsm: connected"
    })
    .await;
    wsm.send("over tls");
    assert_eq!(recv_within(&mut wsm.out, WAIT, "echo").await, "over tls");
    let status = wsm.exit().await;
    assert!(status.success(), "{status:?}");
}

/// A refused certificate ends `wsm connect` at once (long before its 30 s connect timeout) with a
/// non-zero status and one line that names the URL once, what is wrong and what to do: a
/// self-signed certificate without `--ca` (an issuer it does not trust), with `--ca` but by an
/// address the certificate does not name, and with `--ca` but expired.
#[actix_rt::test]
async fn connect_refused_certificate_fails_at_once_in_one_line() {
    let files = TempFiles::new("connect-refused");
    let (good, good_key) = self_signed_ca_cert(&["localhost", "127.0.0.1"], None);
    let (named, named_key) = self_signed_ca_cert(&["localhost"], None);
    let (old, old_key) = self_signed_ca_cert(&["localhost", "127.0.0.1"], Some((2020, 2021)));
    let (_a, _, untrusted) = serve_tls(&files, "good", &good, &good_key);
    let (_b, named_path, wrong_name) = serve_tls(&files, "named", &named, &named_key);
    let (_c, old_path, expired) = serve_tls(&files, "old", &old, &old_key);
    let cases = [
        (
            None,
            untrusted,
            "is signed by an issuer this client does not trust (or it is self-signed); pass",
        ),
        (
            Some(named_path),
            wrong_name,
            "it is not valid for 127.0.0.1: it names only localhost;",
        ),
        (
            Some(old_path),
            expired,
            "it expired on 2021-01-01 00:00:00 UTC",
        ),
    ];
    for (ca, url, why) in cases {
        let mut args = vec!["--connect-timeout", "30s"];
        if let Some(ca) = &ca {
            args.extend(["--ca", ca.as_str()]);
        }
        args.push(&url);
        let started = std::time::Instant::now();
        let mut wsm = Wsm::start(&args);
        let status = wsm.exit().await;
        assert!(!status.success(), "{url}: {status:?}");
        assert!(started.elapsed() < WAIT, "{:?}", started.elapsed());
        let stderr = wsm.stderr().await;
        let line = format!("wsm: TLS certificate of {url} refused: ");
        // The state line, then the error: one line.
        let lines: Vec<&str> = stderr.lines().collect();
        assert_eq!(lines.len(), 2, "{stderr}");
        assert_eq!(lines[0], "wsm: connecting", "{stderr}");
        assert!(
            lines[1].starts_with(&line) && lines[1].contains(why),
            "{stderr}"
        );
        for dump in ["Other(", "OtherError", "{", "DnsName("] {
            assert!(!stderr.contains(dump), "{stderr}");
        }
    }
}

/// Every numeric flag of `wsm connect` refuses extreme values (zero, `u64::MAX`, past `u64`,
/// negative, a billion years) with clap's one line naming the flag and status 2, before it
/// dials.
#[test]
fn every_numeric_flag_is_range_checked() {
    use common::{assert_flag_refused, EXTREME_COUNTS, EXTREME_DURATIONS};
    let table: &[(&str, &[&str])] = &[
        ("--connect-timeout", EXTREME_DURATIONS),
        ("--heartbeat-interval", EXTREME_DURATIONS),
        ("--heartbeat-timeout", EXTREME_DURATIONS),
        ("--max-message-size", EXTREME_COUNTS),
    ];
    for (flag, values) in table {
        for value in *values {
            let arg = format!("{flag}={value}");
            assert_flag_refused(&["connect", &arg, "ws://127.0.0.1:1/ws"], flag);
        }
    }
}

/// The next text the peer receives (a join), answered with `answer`.
async fn answer_join(peer: &mut common::peer::Peer, answer: &str) -> String {
    use common::peer::{PeerCmd, PeerEvent};
    let join = loop {
        if let PeerEvent::Text(_, t) = peer.next().await {
            break t;
        }
    };
    peer.send(PeerCmd::Text(answer.to_owned()));
    join
}

/// `--join r` against a peer with room history: a rejoin that recovers prints
/// `recovered N messages in r` on stderr, one that cannot prints
/// `r: could not recover (REASON): messages may be missing`.
#[actix_rt::test]
async fn connect_reports_each_rejoins_recovery_on_stderr() {
    use common::peer::{Behaviour, PeerCmd};
    let mut peer = common::peer::Peer::start(Behaviour {
        echo: false,
        ..Behaviour::default()
    })
    .await;
    let mut wsm = Wsm::start(&["--join", "r", &peer.url]);
    let pubn = |o: u64| {
        format!(r#"{{"type":"message","room":"r","from":"s","data":{o},"offset":{o},"epoch":"e"}}"#)
    };
    let join = answer_join(
        &mut peer,
        r#"{"type":"joined","room":"r","data":{"offset":0,"epoch":"e"}}"#,
    )
    .await;
    assert!(!join.contains("since"), "{join}");
    peer.send(PeerCmd::Text(pubn(1)));
    recv_until(&mut wsm.out, WAIT, "message 1", |l: &String| {
        l.contains(r#""offset":1"#)
    })
    .await;

    peer.send(PeerCmd::Abort);
    let answer = r#"{"type":"joined","room":"r","data":{"offset":3,"epoch":"e","recovered":true}}"#;
    let join = answer_join(&mut peer, answer).await;
    assert!(
        join.contains(r#""since":{"offset":1,"epoch":"e"}"#),
        "{join}"
    );
    recv_until(&mut wsm.err, WAIT, "the recovery", |l: &String| {
        l == "recovered 2 messages in r"
    })
    .await;
    peer.send(PeerCmd::Text(pubn(2)));
    peer.send(PeerCmd::Text(pubn(3)));
    recv_until(&mut wsm.out, WAIT, "message 3", |l: &String| {
        l.contains(r#""offset":3"#)
    })
    .await;

    peer.send(PeerCmd::Abort);
    let answer = r#"{"type":"joined","room":"r","data":{"offset":90,"epoch":"e","recovered":false,"reason":"too_old"}}"#;
    let join = answer_join(&mut peer, answer).await;
    assert!(
        join.contains(r#""since":{"offset":3,"epoch":"e"}"#),
        "{join}"
    );
    recv_until(&mut wsm.err, WAIT, "the loss", |l: &String| {
        l == "r: could not recover (too_old): messages may be missing"
    })
    .await;
    let status = wsm.exit().await;
    assert!(status.success(), "{status:?}");
    peer.stop().await;
}

/// `--join r` against the real rooms server, cut off by a `FaultProxy` while five messages are
/// published: after the heal, stderr says `recovered 5 messages in r` and stdout has them.
#[actix_rt::test]
async fn connect_recovers_what_was_published_while_it_was_cut_off() {
    use actix_ws_manager::testkit::{FaultProxy, TestServer};
    let mut server = TestServer::start(test_config()).expect("server");
    let proxy = FaultProxy::start(server.addr()).await.expect("proxy");
    let mut wsm = Wsm::start(&["--join", "r", &proxy.url("/ws")]);
    recv_until(&mut wsm.out, WAIT, "joined", |l: &String| {
        l.contains(r#""type":"joined""#)
    })
    .await;
    let publish = |n: u64| {
        let rooms = server.rooms().expect("running").clone();
        async move {
            let data = serde_json::json!({ "n": n });
            rooms.publish_json("r", &data).await.expect("publish");
        }
    };
    publish(1).await;
    recv_until(&mut wsm.out, WAIT, "message 1", |l: &String| {
        l.contains(r#""offset":1"#)
    })
    .await;
    proxy.refuse(true);
    proxy.reset();
    for n in 2..=6 {
        publish(n).await;
    }
    proxy.refuse(false);
    recv_until(&mut wsm.err, WAIT, "the recovery", |l: &String| {
        l == "recovered 5 messages in r"
    })
    .await;
    recv_until(&mut wsm.out, WAIT, "message 6", |l: &String| {
        l.contains(r#""offset":6"#)
    })
    .await;
    let status = wsm.exit().await;
    assert!(status.success(), "{status:?}");
    server.stop().await.expect("stop");
}

/// `--token-file F` is read before every connect attempt: the first upgrade carries its token as
/// `Authorization: Bearer T` (whitespace trimmed), a close with 4001 reconnects at once with what
/// F holds by then, and a file gone missing by a later connect ends `wsm` with a non-zero
/// status and one line naming it. A missing file at the first connect does the same.
#[actix_rt::test]
async fn connect_token_file_is_read_again_for_every_connect() {
    use common::peer::{Behaviour, PeerCmd};
    let files = TempFiles::new("token-file");
    let path = files.write("token", "first\n");
    let peer = common::peer::Peer::start(Behaviour::default()).await;
    let mut wsm = Wsm::start(&["--token-file", &path, &peer.url]);
    let connected = |l: &String| l == "wsm: connected";
    recv_until(&mut wsm.err, WAIT, "connected", connected).await;
    files.write("token", "  second  \n");
    peer.send(PeerCmd::Close(4001));
    recv_until(&mut wsm.err, WAIT, "reconnected", connected).await;
    let bearer = |t: &str| Some(format!("Bearer {t}"));
    assert_eq!(peer.authorizations(), [bearer("first"), bearer("second")]);

    std::fs::remove_file(&path).expect("remove the token file");
    peer.send(PeerCmd::Close(4001));
    let missing = format!("wsm: token provider failed: cannot read token file {path}: ");
    recv_until(&mut wsm.err, WAIT, "the missing file", |l: &String| {
        l.starts_with(&missing)
    })
    .await;
    assert!(!wsm.exit().await.success());
    assert_eq!(
        peer.authorizations().len(),
        2,
        "nothing dialled without a token"
    );

    let mut wsm = Wsm::start(&["--token-file", &path, &peer.url]);
    assert!(!wsm.exit().await.success());
    let stderr = wsm.stderr().await;
    assert!(
        stderr
            .lines()
            .last()
            .unwrap_or_default()
            .starts_with(&missing),
        "{stderr}"
    );
    assert_eq!(peer.authorizations().len(), 2, "{stderr}");
    peer.stop().await;
}

/// `--join r --presence` against a scripted peer: the join (and the rejoin after a cut) carries
/// `"presence":true`, and each `presence_diff` is one line on stderr
/// (`presence r: +ann(s-3) -s-7`); `--presence` without `--join` is refused.
#[actix_rt::test]
async fn connect_presence_prints_each_diff_on_stderr() {
    use common::peer::{Behaviour, PeerCmd};
    let mut peer = common::peer::Peer::start(Behaviour {
        echo: false,
        ..Behaviour::default()
    })
    .await;
    let mut wsm = Wsm::start(&["--join", "r", "--presence", &peer.url]);
    let json = |l: &str| serde_json::from_str::<serde_json::Value>(l).unwrap_or_default();
    let joined = r#"{"type":"joined","room":"r"}"#;
    let join = answer_join(&mut peer, joined).await;
    assert_eq!(json(&join)["presence"], true, "{join}");
    peer.send(PeerCmd::Text(
        r#"{"type":"presence_diff","room":"r","data":{"joins":[{"session":"s-3","identity":"ann","info":{"x":1}}],"leaves":[{"session":"s-7"}]}}"#
            .to_owned(),
    ));
    recv_until(&mut wsm.err, WAIT, "the diff", |l: &String| {
        l == "presence r: +ann(s-3) -s-7"
    })
    .await;

    peer.send(PeerCmd::Abort);
    let join = answer_join(&mut peer, joined).await;
    assert_eq!(json(&join)["presence"], true, "the rejoin too: {join}");
    let status = wsm.exit().await;
    assert!(status.success(), "{status:?}");
    peer.stop().await;

    let out = Command::new(env!("CARGO_BIN_EXE_wsm"))
        .args(["connect", "--presence", "ws://127.0.0.1:1/ws"])
        .output()
        .expect("wsm runs");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--join"), "{err}");
}

/// `wsm connect` offers permessage-deflate by default (a Python `websockets` server answers
/// with it, and says so when asked), and `--no-deflate` offers nothing; echoes work both ways.
#[actix_rt::test]
async fn connect_offers_deflate_unless_no_deflate() {
    let peer = common::python::DeflatePeer::start(&[]);
    for (flags, expected) in [
        (
            &[][..],
            "permessage-deflate; server_no_context_takeover; client_no_context_takeover",
        ),
        (&["--no-deflate"][..], "none"),
    ] {
        let url = peer.url();
        let mut args = vec![url.as_str()];
        args.extend_from_slice(flags);
        let mut wsm = Wsm::start(&args);
        recv_until(&mut wsm.err, WAIT, "connected", |l: &String| {
            l == "wsm: connected"
        })
        .await;
        wsm.send("extensions?");
        assert_eq!(
            recv_within(&mut wsm.out, WAIT, "the answer").await,
            expected
        );
        let long = "compressible ".repeat(100);
        wsm.send(&long);
        assert_eq!(recv_within(&mut wsm.out, WAIT, "the echo").await, long);
        let status = wsm.exit().await;
        assert!(status.success(), "{flags:?}: {status:?}");
    }
}
