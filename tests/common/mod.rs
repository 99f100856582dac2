//! Helpers shared by the integration tests: waiting on channels with a timeout (never sleeping to
//! synchronise).
#![allow(dead_code)]

pub mod cluster;
pub mod peer;
pub mod prom;
pub mod raw;

use std::time::Duration;

/// Default time a test waits for an event before it fails.
pub const WAIT: Duration = Duration::from_secs(10);

/// Receive from `rx` within `within`, panicking with `what` on timeout or a closed channel.
pub async fn recv_within<T>(
    rx: &mut tokio::sync::mpsc::Receiver<T>,
    within: Duration,
    what: &str,
) -> T {
    match tokio::time::timeout(within, rx.recv()).await {
        Ok(Some(v)) => v,
        Ok(None) => panic!("channel closed while waiting for {what}"),
        Err(_) => panic!("timed out after {within:?} waiting for {what}"),
    }
}

/// Receive from `rx` until `pred` accepts a value, within `within` in total.
pub async fn recv_until<T: std::fmt::Debug>(
    rx: &mut tokio::sync::mpsc::Receiver<T>,
    within: Duration,
    what: &str,
    mut pred: impl FnMut(&T) -> bool,
) -> T {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        let v = recv_within(rx, left, what).await;
        if pred(&v) {
            return v;
        }
    }
}

// ---- server-side helpers (tests/server_*.rs) ----

use actix_ws_manager::config::ServerConfig;
use actix_ws_manager::server::{self, Server};
use futures_util::{SinkExt, StreamExt};

/// A server configuration for tests: heartbeat long enough not to interfere (tests of the
/// heartbeat set their own), short close timeout so cut sockets go quickly.
pub fn test_config() -> ServerConfig {
    ServerConfig::default()
        .heartbeat(Duration::from_secs(10), Duration::from_secs(30))
        .close_timeout(Duration::from_millis(300))
}

/// Start a standalone server on 127.0.0.1:0 with the rooms route at `/ws` and echo at `/echo`.
pub fn start_server(config: ServerConfig) -> Server {
    server::serve("127.0.0.1:0", "/ws", "/echo", config).expect("server starts")
}

/// A raw awc WebSocket client that answers pings and parses text frames as JSON.
pub struct Peer {
    pub framed: actix_codec::Framed<awc::BoxedSocket, awc::ws::Codec>,
}

impl Peer {
    /// Connect to `url` (frames up to 16 MiB accepted).
    pub async fn connect(url: &str) -> Peer {
        let (_resp, framed) = awc::Client::new()
            .ws(url)
            .max_frame_size(16 * 1024 * 1024)
            .connect()
            .await
            .expect("websocket connects");
        Peer { framed }
    }

    /// Connect to the rooms endpoint and swallow the welcome; returns the session name too.
    pub async fn rooms(url: &str) -> (Peer, String) {
        let mut peer = Peer::connect(url).await;
        let welcome = peer.json().await;
        assert_eq!(welcome["type"], "welcome", "{welcome}");
        let session = welcome["data"]["session"]
            .as_str()
            .expect("session name")
            .to_owned();
        (peer, session)
    }

    /// Send a text frame.
    pub async fn text(&mut self, text: &str) {
        self.framed
            .send(awc::ws::Message::Text(text.to_owned().into()))
            .await
            .expect("send text");
    }

    /// Send any message.
    pub async fn send(&mut self, msg: awc::ws::Message) {
        self.framed.send(msg).await.expect("send");
    }

    /// The next data or close frame within [`WAIT`], answering pings; `None` on end of stream.
    pub async fn frame(&mut self) -> Option<awc::ws::Frame> {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let next = tokio::time::timeout_at(deadline, self.framed.next())
                .await
                .expect("timed out waiting for a frame");
            match next {
                Some(Ok(awc::ws::Frame::Ping(p))) => {
                    let _ = self.framed.send(awc::ws::Message::Pong(p)).await;
                }
                Some(Ok(awc::ws::Frame::Pong(_))) => {}
                Some(Ok(frame)) => return Some(frame),
                Some(Err(_)) | None => return None,
            }
        }
    }

    /// The next text frame, parsed as JSON.
    pub async fn json(&mut self) -> serde_json::Value {
        match self.frame().await {
            Some(awc::ws::Frame::Text(t)) => serde_json::from_slice(&t).expect("JSON text"),
            other => panic!("expected a text frame, got {other:?}"),
        }
    }

    /// Read until the server's close frame; its code, or `None` when the stream ended without.
    pub async fn close_code(&mut self) -> Option<u16> {
        for _ in 0..100_000 {
            match self.frame().await {
                Some(awc::ws::Frame::Close(reason)) => return reason.map(|r| u16::from(r.code)),
                Some(_) => continue,
                None => return None,
            }
        }
        panic!("no close frame within 100000 frames");
    }
}

/// Parse a JSON literal (test shorthand).
pub fn j(text: &str) -> serde_json::Value {
    serde_json::from_str(text).expect("valid JSON in test")
}

impl Peer {
    /// Answer pings (and discard everything else) until the stream ends: run it next to a wait,
    /// so that an idle test client is not taken for a dead one by the server's heartbeat.
    pub async fn answer_pings(&mut self) {
        while let Some(Ok(frame)) = self.framed.next().await {
            if let awc::ws::Frame::Ping(p) = frame {
                let _ = self.framed.send(awc::ws::Message::Pong(p)).await;
            }
        }
    }
}

/// A client config for tests: quiet heartbeat, fast deterministic reconnects (50 ms doubling to
/// 1 s, no jitter).
pub fn client_test_config() -> actix_ws_manager::config::ClientConfig {
    use actix_ws_manager::config::{ClientConfig, HeartbeatConfig, ReconnectPolicy};
    ClientConfig::default()
        .heartbeat(HeartbeatConfig::disabled())
        .reconnect(
            ReconnectPolicy::default()
                .backoff(Duration::from_millis(50), 2.0, Duration::from_secs(1))
                .jitter(0.0, None),
        )
}

// ---- client-side helpers ----

/// Wait, within [`WAIT`], for a state event that `pred` accepts.
pub async fn wait_state(
    events: &mut tokio::sync::mpsc::Receiver<actix_ws_manager::client::Event>,
    what: &str,
    pred: impl Fn(&actix_ws_manager::client::ConnectionState) -> bool,
) -> actix_ws_manager::client::ConnectionState {
    use actix_ws_manager::client::Event;
    match recv_until(
        events,
        WAIT,
        what,
        |e| matches!(e, Event::State(s) if pred(s)),
    )
    .await
    {
        Event::State(s) => s,
        other => panic!("{other:?}"),
    }
}

/// Shared by the frame-guard tests: a forged header that declares 1 GiB, followed by 256 MiB.
pub mod oversize {
    use std::time::Duration;

    /// The largest frame accepted in these tests.
    pub const LIMIT: usize = 64 * 1024;
    /// What the forged header declares.
    pub const DECLARED: u64 = 1 << 30;
    /// How much payload the sender tries to send behind it.
    pub const PAYLOAD: usize = 256 * 1024 * 1024;
    /// One write of payload.
    pub const CHUNK: usize = 64 * 1024;
    /// Bound on the whole exchange.
    pub const BOUND: Duration = Duration::from_secs(20);
    /// Allowed growth of the process's resident memory, in kB.
    pub const MAX_GROWTH_KB: u64 = 1024;
    /// Allowed growth on the server side, in kB. After its close frame the server session goes
    /// on reading (and discarding) what the client sends, to find the client's close frame:
    /// the 256 MiB behind the refused header pass through actix-http's payload queue in small
    /// chunks, and the allocator's high-water from that churn measured 0.5-1.3 MiB here
    /// (0.6-0.8 MiB when actix-http dropped the payload itself). Buffering the frame would
    /// cost 256 MiB.
    pub const MAX_SERVER_GROWTH_KB: u64 = 2048;

    /// The payload: zeros, never reallocated.
    pub static ZEROS: [u8; CHUNK] = [0; CHUNK];

    /// A line of /proc/self/status in kB (`VmRSS`, `RssAnon`, `RssFile`).
    pub fn status_kb(field: &str) -> u64 {
        let status = std::fs::read_to_string("/proc/self/status").expect("read /proc/self/status");
        status
            .lines()
            .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap_or_else(|| panic!("no {field} line in kB in /proc/self/status"))
    }

    /// This process's resident set size (VmRSS), in kB.
    pub fn vm_rss_kb() -> u64 {
        status_kb("VmRSS")
    }
}

/// A test PKI made at test time: a CA, and a certificate for 127.0.0.1 and localhost signed by
/// it. Answers (CA certificate PEM, server certificate PEM, server key PEM).
pub fn test_pki() -> (String, String, String) {
    let mut ca = rcgen::CertificateParams::new(Vec::<String>::new()).expect("ca params");
    ca.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca.distinguished_name
        .push(rcgen::DnType::CommonName, "actix-ws-manager test CA");
    let ca_key = rcgen::KeyPair::generate().expect("ca key");
    let ca = rcgen::CertifiedIssuer::self_signed(ca, ca_key).expect("ca cert");
    let params =
        rcgen::CertificateParams::new(vec!["127.0.0.1".to_owned(), "localhost".to_owned()])
            .expect("params");
    let key = rcgen::KeyPair::generate().expect("key");
    let cert = params.signed_by(&key, &ca).expect("cert");
    (ca.pem(), cert.pem(), key.serialize_pem())
}

/// A self-signed certificate marked as a CA, like the one that
/// `openssl req -x509 -newkey rsa:2048 -nodes -subj /CN=localhost
/// -addext subjectAltName=DNS:localhost,IP:127.0.0.1` makes (`CA:TRUE`), for the names `sans`
/// (an IP address becomes an IP SAN) and, when given, valid only from `valid.0` to `valid.1`
/// (calendar years, 1 January). Answers (certificate PEM, key PEM).
pub fn self_signed_ca_cert(sans: &[&str], valid: Option<(i32, i32)>) -> (String, String) {
    let names: Vec<String> = sans.iter().map(|s| (*s).to_owned()).collect();
    let mut params = rcgen::CertificateParams::new(names).expect("params");
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    params.distinguished_name.push(
        rcgen::DnType::CommonName,
        sans.first().copied().unwrap_or("none"),
    );
    if let Some((from, to)) = valid {
        params.not_before = rcgen::date_time_ymd(from, 1, 1);
        params.not_after = rcgen::date_time_ymd(to, 1, 1);
    }
    let key = rcgen::KeyPair::generate().expect("key");
    let cert = params.self_signed(&key).expect("self-signed");
    (cert.pem(), key.serialize_pem())
}

/// Files that a test writes for a child process (a certificate, a key), in a directory of
/// their own that is removed when dropped.
pub struct TempFiles(pub std::path::PathBuf);

impl TempFiles {
    /// A new, empty directory under the system's temporary directory, named for `test`.
    pub fn new(test: &str) -> TempFiles {
        static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("wsm-{test}-{}-{n}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("make a temporary directory");
        TempFiles(dir)
    }

    /// Write `contents` to `name` in the directory; answers the path as text.
    pub fn write(&self, name: &str, contents: &str) -> String {
        let path = self.0.join(name);
        std::fs::write(&path, contents).expect("write a temporary file");
        path.to_string_lossy().into_owned()
    }
}

impl Drop for TempFiles {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A child process killed (and reaped) when dropped, so a failing test leaves none behind.
pub struct KillOnDrop(pub Option<std::process::Child>);
impl Drop for KillOnDrop {
    fn drop(&mut self) {
        if let Some(child) = self.0.as_mut() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Values a count flag refuses: zero (each count is at least 1), the largest `u64`, a number
/// past `u64`, and a negative number.
pub const EXTREME_COUNTS: &[&str] = &["0", "18446744073709551615", "99999999999999999999999", "-1"];

/// Values a duration flag refuses: zero, a billion years (fits a `Duration`, overflows timer
/// arithmetic), a number past `u64`, and no number at all.
pub const EXTREME_DURATIONS: &[&str] =
    &["0s", "1000000000years", "99999999999999999999years", "-1s"];

/// Values a per-second rate flag refuses: zero, negative, the largest `f64`, infinity, NaN.
pub const EXTREME_RATES: &[&str] = &["0", "-1", "1.7976931348623157e308", "inf", "NaN"];

/// Run the built `wsm` with `args` (one of them `FLAG=VALUE` with an out-of-range value) and
/// check that it is refused the way every out-of-range flag is: status 2 (clap's usage error)
/// within [`WAIT`] (a value wrongly accepted would start a server or a run: it is killed and
/// the test fails), nothing on stdout, no panic, and on stderr clap's one error line naming
/// `flag`, followed only by clap's hint "For more information, try '--help'." (kept: it is
/// clap's standard shape, and the one line before it says all).
#[cfg(unix)]
pub fn assert_flag_refused(args: &[&str], flag: &str) {
    use std::process::{Command, Stdio};
    let child = Command::new(env!("CARGO_BIN_EXE_wsm"))
        .args(args)
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("wsm runs");
    let pid = child.id().to_string();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    let out = match rx.recv_timeout(WAIT) {
        Ok(out) => out.expect("wait for wsm"),
        Err(_) => {
            let _ = Command::new("kill").args(["-KILL", &pid]).status();
            panic!("wsm {args:?} was still running: the value was accepted");
        }
    };
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
    assert!(out.stdout.is_empty(), "{args:?}: stdout {:?}", out.stdout);
    assert!(!stderr.contains("panicked"), "{args:?}: {stderr}");
    let lines: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(lines.len(), 2, "{args:?}: {stderr}");
    assert!(
        lines[0].starts_with("error: invalid value ")
            && lines[0].contains(&format!(" for '{flag} <")),
        "{args:?}: {stderr}"
    );
    assert_eq!(lines[1], "For more information, try '--help'.", "{args:?}");
}

/// Start the built `wsm serve` with `args`; answers the child and its first stdout line (the
/// rooms URL). Stdout is drained on a thread so the child never blocks on a full pipe.
#[cfg(unix)]
pub fn spawn_wsm_serve(args: &[&str]) -> (KillOnDrop, String) {
    let (child, mut lines) = spawn_wsm_serve_lines(args, 1);
    (child, lines.remove(0))
}

/// [`spawn_wsm_serve`], answering the first `n` stdout lines (rooms URL, echo URL, and the
/// metrics URL with `--metrics-bind`).
#[cfg(unix)]
pub fn spawn_wsm_serve_lines(args: &[&str], n: usize) -> (KillOnDrop, Vec<String>) {
    use std::io::{BufRead, BufReader};
    use std::process::{Command, Stdio};
    let mut child = KillOnDrop(Some(
        Command::new(env!("CARGO_BIN_EXE_wsm"))
            .arg("serve")
            .args(args)
            .env("RUST_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("wsm runs"),
    ));
    let stdout = child
        .0
        .as_mut()
        .and_then(|c| c.stdout.take())
        .expect("stdout");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut lines = BufReader::new(stdout).lines();
        for _ in 0..n {
            if let Some(Ok(line)) = lines.next() {
                let _ = tx.send(line);
            }
        }
        for _ in lines {}
    });
    let deadline = std::time::Instant::now() + WAIT;
    let lines = (0..n)
        .map(|i| {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            rx.recv_timeout(left)
                .unwrap_or_else(|_| panic!("stdout line {} of wsm serve", i + 1))
        })
        .collect();
    (child, lines)
}

/// A real `redis-server` on a free 127.0.0.1 port, for the backplane tests: no persistence,
/// killed when dropped. `.ci/run` installs `redis-server`; without it the test fails and says so.
pub struct RedisServer {
    port: u16,
    child: KillOnDrop,
}

impl RedisServer {
    /// Start on a free port; waits (within [`WAIT`]) until it accepts connections.
    pub fn start() -> RedisServer {
        for _ in 0..5 {
            let port = std::net::TcpListener::bind("127.0.0.1:0")
                .and_then(|l| l.local_addr())
                .expect("a free port")
                .port();
            if let Some(child) = Self::spawn(port) {
                return RedisServer { port, child };
            }
        }
        panic!("redis-server did not start on any of 5 free ports");
    }

    /// `redis://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Kill it (SIGKILL: as a crash; connections drop at once).
    pub fn stop(&mut self) {
        self.child = KillOnDrop(None);
    }

    /// Start it again on the same port.
    pub fn restart(&mut self) {
        self.stop();
        let deadline = std::time::Instant::now() + WAIT;
        loop {
            if let Some(child) = Self::spawn(self.port) {
                self.child = child;
                return;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "redis-server did not start again on port {}",
                self.port
            );
        }
    }

    /// Spawn on `port` and wait for "Ready to accept connections"; `None` if it exits first.
    fn spawn(port: u16) -> Option<KillOnDrop> {
        use std::io::{BufRead, BufReader};
        use std::process::{Command, Stdio};
        let spawned = Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no", "--protected-mode", "no"])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn();
        let mut child = match spawned {
            Ok(child) => KillOnDrop(Some(child)),
            Err(e) => panic!(
                "the backplane tests need redis-server ({e}); `.ci/run` installs it \
                 (apt-get install redis-server)"
            ),
        };
        let stdout = child.0.as_mut()?.stdout.take()?;
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if line.contains("Ready to accept connections") {
                    let _ = tx.send(true);
                }
            }
            let _ = tx.send(false);
        });
        match rx.recv_timeout(WAIT) {
            Ok(true) => Some(child),
            _ => None,
        }
    }
}
