//! JWT authentication end to end (issue 21): the crate's client with a token provider against
//! the real JWT server (`Rooms::with_jwt`, HS256) through a 401, a 4001 and a restart, and a
//! token kept fresh by refreshes; RS256 with a PEM public key and with a JWKS document (keys
//! chosen by `kid`) and ES256, through the library and through `wsm serve --jwt-*`; audience
//! and issuer checks; `from` and `session` on a room message from a JWT session; and a flood of
//! bad tokens from one address, which costs no session slot and no per-address count.
//!
//! Tokens are signed here with `jsonwebtoken` and the keys of `tests/fixtures/jwt`. Servers
//! listen on 127.0.0.1:0; nothing sleeps: every wait is on an event or a channel with a
//! deadline, and every loop is bounded. The Python side (PyJWT against `wsm serve
//! --jwt-secret-file`) is `tests/interop/jwt_auth.py`.

mod common;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use actix_ws_manager::client::{connect, Client, ConnectionState, Event};
use actix_ws_manager::config::{ClientConfig, JwtConfig};
use actix_ws_manager::server::Rooms;
use actix_ws_manager::testkit::{StateRecorder, TestServer};
use actix_ws_manager::ws::close::TOKEN_EXPIRED;
use actix_ws_manager::WireMessage;
use futures_util::{SinkExt, StreamExt};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use common::{client_test_config, recv_until, recv_within, test_config, Peer, WAIT};

/// The HS256 secret of the library servers.
const SECRET: &[u8] = b"a test secret that is long enough for HS256";

// ---------------------------------------------------------------------------------------------
// Tokens and keys

/// A fixture of `tests/fixtures/jwt`.
fn fixture(name: &str) -> String {
    let path = format!("{}/tests/fixtures/jwt/{name}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("read {path}: {e}"))
}

/// The path of a fixture, for `wsm serve --jwt-*-file`.
fn fixture_path(name: &str) -> String {
    format!("{}/tests/fixtures/jwt/{name}", env!("CARGO_MANIFEST_DIR"))
}

/// Seconds since the epoch, now.
fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("after 1970")
        .as_secs()
}

/// Claims for `sub` expiring `ttl` seconds from now (negative: in the past).
fn claims(sub: &str, ttl: i64) -> Value {
    let exp = now_secs().saturating_add_signed(ttl);
    json!({ "sub": sub, "exp": exp })
}

/// `claims` with more fields.
fn claims_with(sub: &str, ttl: i64, extra: Value) -> Value {
    let mut c = claims(sub, ttl);
    for (k, v) in extra.as_object().expect("an object") {
        c[k] = v.clone();
    }
    c
}

/// A token of `claims` signed with `alg` and `key`, `kid` in its header.
fn sign(alg: Algorithm, kid: Option<&str>, key: &EncodingKey, claims: &Value) -> String {
    let mut header = Header::new(alg);
    header.kid = kid.map(str::to_owned);
    jsonwebtoken::encode(&header, claims, key).expect("sign a token")
}

/// An HS256 token with [`SECRET`].
fn hs(claims: &Value) -> String {
    sign(
        Algorithm::HS256,
        None,
        &EncodingKey::from_secret(SECRET),
        claims,
    )
}

/// An RS256 token signed with the fixture's private key `rsa1` or `rsa2`.
fn rs(private: &str, kid: Option<&str>, claims: &Value) -> String {
    let pem = fixture(&format!("{private}_private.pem"));
    let key = EncodingKey::from_rsa_pem(pem.as_bytes()).expect("RSA private key");
    sign(Algorithm::RS256, kid, &key, claims)
}

/// An ES256 token signed with the fixture's EC private key.
fn es(claims: &Value) -> String {
    let key = EncodingKey::from_ec_pem(fixture("ec_private.pem").as_bytes()).expect("EC key");
    sign(Algorithm::ES256, None, &key, claims)
}

/// An HS256 configuration with [`SECRET`].
fn hs_config() -> JwtConfig {
    JwtConfig::hs256(SECRET).expect("HS256 config")
}

/// A rooms server (restartable, same port) that requires tokens checked with `jwt`.
fn jwt_server(config: actix_ws_manager::config::ServerConfig, jwt: JwtConfig) -> TestServer {
    TestServer::start_with(move || Ok(Rooms::start(config.clone())?.with_jwt(jwt.clone())))
        .expect("server starts")
}

// ---------------------------------------------------------------------------------------------
// Upgrades by hand

/// What an upgrade request got: the status, the response head (lower-cased) and, for a refusal,
/// its body; for a 101 the open socket.
struct Upgrade {
    status: u16,
    head: String,
    body: String,
    tcp: TcpStream,
}

/// Ask `addr` to upgrade `path`, with `Authorization: Bearer <token>` when a token is given.
/// A refusal's body is read to its `content-length` (or to the end of the connection).
async fn upgrade(addr: SocketAddr, path: &str, token: Option<&str>) -> Upgrade {
    let mut tcp = tokio::time::timeout(WAIT, TcpStream::connect(addr))
        .await
        .expect("connect in time")
        .expect("tcp connect");
    let mut req = format!(
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n"
    );
    if let Some(token) = token {
        req.push_str(&format!("Authorization: Bearer {token}\r\n"));
    }
    req.push_str("\r\n");
    tcp.write_all(req.as_bytes())
        .await
        .expect("write the upgrade");
    let (status, head, mut rest) = response_head(&mut tcp).await;
    if status == 101 {
        return Upgrade {
            status,
            head,
            body: String::new(),
            tcp,
        };
    }
    let length = head.lines().find_map(|l| {
        l.strip_prefix("content-length:")
            .and_then(|v| v.trim().parse::<usize>().ok())
    });
    let mut chunk = [0u8; 4096];
    // Bounded: the body is short, and each read waits at most WAIT.
    for _ in 0..1000 {
        if length.is_some_and(|n| rest.len() >= n) {
            break;
        }
        let n = tokio::time::timeout(WAIT, tcp.read(&mut chunk))
            .await
            .expect("the response body in time")
            .unwrap_or(0);
        if n == 0 {
            break;
        }
        rest.extend_from_slice(&chunk[..n]);
    }
    Upgrade {
        status,
        head,
        body: String::from_utf8_lossy(&rest).into_owned(),
        tcp,
    }
}

/// Read an HTTP response head within [`WAIT`]: its status, the head in lower case, and the
/// bytes read past it.
async fn response_head(tcp: &mut TcpStream) -> (u16, String, Vec<u8>) {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    // Bounded: a head is far shorter than 1000 reads, and each waits at most WAIT.
    for _ in 0..1000 {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..i + 4]).to_lowercase();
            let status = head
                .split(' ')
                .nth(1)
                .and_then(|s| s.parse().ok())
                .unwrap_or_else(|| panic!("an HTTP status line: {head}"));
            return (status, head, buf[i + 4..].to_vec());
        }
        let n = tokio::time::timeout(WAIT, tcp.read(&mut chunk))
            .await
            .expect("a response head in time")
            .expect("read the response head");
        assert!(n > 0, "connection closed before the response head");
        buf.extend_from_slice(&chunk[..n]);
    }
    panic!("no response head in 1000 reads");
}

/// The upgrade with `token` (the case `what`) is refused with 401, a `WWW-Authenticate: Bearer` header and a
/// one-line body that contains `cause`; answers the body.
async fn assert_refused(what: &str, addr: SocketAddr, token: Option<&str>, cause: &str) -> String {
    let up = upgrade(addr, "/ws", token).await;
    assert_eq!(
        up.status, 401,
        "{what}: expected 401 ({cause}): {}{}",
        up.head, up.body
    );
    assert!(
        up.head.contains("www-authenticate: bearer"),
        "no WWW-Authenticate: {}",
        up.head
    );
    assert_one_line(&up.body, cause);
    up.body
}

/// `body` is one non-empty line naming `cause`.
fn assert_one_line(body: &str, cause: &str) {
    assert!(!body.trim().is_empty(), "an empty 401 body");
    assert!(
        !body.contains('\n') && !body.contains('\r'),
        "the 401 body is not one line: {body:?}"
    );
    assert!(body.contains(cause), "{body:?} does not name {cause:?}");
}

/// A rooms session opened with `token` in the `Authorization` header (awc): the peer and its
/// welcome; the welcome's `identity` must be `sub`.
async fn assert_connects(url: &str, token: &str, sub: &str) -> (Peer, Value) {
    let (_resp, framed) = awc::Client::new()
        .ws(url)
        .bearer_auth(token)
        .connect()
        .await
        .unwrap_or_else(|e| panic!("the token for {sub} connects: {e}"));
    let mut peer = Peer { framed };
    let welcome = peer.json().await;
    assert_eq!(welcome["type"], "welcome", "{welcome}");
    assert_eq!(welcome["data"]["identity"], sub, "{welcome}");
    (peer, welcome)
}

/// `ws://127.0.0.1:PORT/ws` -> `127.0.0.1:PORT`.
fn addr_of(url: &str) -> SocketAddr {
    let host = url
        .strip_prefix("ws://")
        .and_then(|rest| rest.split('/').next())
        .expect("a ws:// URL");
    host.parse().expect("a socket address")
}

// ---------------------------------------------------------------------------------------------
// The crate's client

/// The welcome as the client receives it, with the identity the server took from `sub`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct WelcomeId {
    session: String,
    #[serde(default)]
    identity: Option<String>,
}
impl WireMessage for WelcomeId {
    const TYPE: &'static str = "welcome";
}

/// A chat line published into a room.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Chat {
    text: String,
}
impl WireMessage for Chat {
    const TYPE: &'static str = "chat";
}

/// What a [`Minter`] answers for call `n`: the claims, and the HS256 secret to sign them with.
type Mint = dyn Fn(usize) -> (Value, &'static [u8]) + Send + Sync;

/// A token provider that mints HS256 tokens with jsonwebtoken and counts its calls: call `n`
/// signs what `mint(n)` answers, and the `exp` of every token is kept.
#[derive(Clone)]
struct Minter {
    calls: Arc<AtomicUsize>,
    exps: Arc<Mutex<Vec<u64>>>,
    mint: Arc<Mint>,
}

impl Minter {
    /// Tokens of `mint(n)`'s claims, signed with [`SECRET`].
    fn new(mint: impl Fn(usize) -> Value + Send + Sync + 'static) -> Self {
        Self::signed(move |n| (mint(n), SECRET))
    }

    /// Tokens of `mint(n)`'s claims, signed with its secret.
    fn signed(mint: impl Fn(usize) -> (Value, &'static [u8]) + Send + Sync + 'static) -> Self {
        Minter {
            calls: Arc::default(),
            exps: Arc::default(),
            mint: Arc::new(mint),
        }
    }

    fn calls(&self) -> usize {
        self.calls.load(Ordering::SeqCst)
    }

    /// The `exp` of each token minted, in order.
    fn exps(&self) -> Vec<u64> {
        self.exps.lock().expect("lock").clone()
    }

    /// `config` with this provider.
    fn config(&self, config: ClientConfig) -> ClientConfig {
        let this = self.clone();
        config.token_provider(move || {
            let n = this.calls.fetch_add(1, Ordering::SeqCst) + 1;
            let (claims, secret) = (this.mint)(n);
            if let Some(exp) = claims["exp"].as_u64() {
                this.exps.lock().expect("lock").push(exp);
            }
            let key = EncodingKey::from_secret(secret);
            let token = sign(Algorithm::HS256, None, &key, &claims);
            async move { Ok::<_, String>(token) }
        })
    }
}

/// The `Reconnecting` states a recorder saw: (delay, cause).
fn reconnects(states: &mut StateRecorder) -> Vec<(Duration, String)> {
    states
        .states()
        .iter()
        .filter_map(|s| match s {
            ConnectionState::Reconnecting { delay, cause, .. } => Some((*delay, cause.clone())),
            _ => None,
        })
        .collect()
}

/// The next welcome the client receives: its identity must be `sub`.
async fn next_welcome(
    welcomes: &mut tokio::sync::mpsc::Receiver<actix_ws_manager::client::Inbound<WelcomeId>>,
    sub: &str,
) -> WelcomeId {
    let welcome = recv_within(welcomes, WAIT, "a welcome").await.data;
    assert_eq!(welcome.identity.as_deref(), Some(sub), "{welcome:?}");
    welcome
}

/// The next `Event::TokenRefresh` among `events`.
async fn next_token_refresh(events: &mut tokio::sync::mpsc::Receiver<Event>) -> Event {
    recv_until(events, WAIT, "a token refresh", |e| {
        matches!(e, Event::TokenRefresh { .. })
    })
    .await
}

/// Connect the crate's client with `minter` to `server`; answers the client, its state
/// recorder, its welcomes and its events.
fn client_of(
    server: &TestServer,
    minter: &Minter,
    config: ClientConfig,
) -> (
    Client,
    StateRecorder,
    tokio::sync::mpsc::Receiver<actix_ws_manager::client::Inbound<WelcomeId>>,
    tokio::sync::mpsc::Receiver<Event>,
) {
    let client = connect(&server.url(), minter.config(config)).expect("connect");
    let states = StateRecorder::attach(&client);
    let welcomes = client.subscribe::<WelcomeId>(16);
    let events = client.subscribe_events(256);
    (client, states, welcomes, events)
}

/// A 401 from the real JWT server (the provider's first token expired, or signed with another
/// secret) makes the client fetch a new token and dial again at once (a zero-delay
/// `Reconnecting` naming HTTP 401); it connects with the second token, the provider was called
/// exactly twice, and the server counted one refusal of the right reason.
#[actix_rt::test]
async fn a_401_from_the_jwt_server_brings_a_new_token_and_an_immediate_retry() {
    let expired = |n| match n {
        1 => (claims("alice", -30), SECRET),
        _ => (claims("alice", 60), SECRET),
    };
    let forged = |n| match n {
        1 => (claims("alice", 60), &b"another secret"[..]),
        _ => (claims("alice", 60), SECRET),
    };
    for (first, minter) in [
        ("expired", Minter::signed(expired)),
        ("signature", Minter::signed(forged)),
    ] {
        let server = jwt_server(test_config(), hs_config());
        let config = minter.config(client_test_config());
        let client = connect(&server.url(), config).expect("connect");
        let mut states = StateRecorder::attach(&client);
        let mut welcomes = client.subscribe::<WelcomeId>(16);
        states.wait_connected(WAIT).await.expect("connected");
        next_welcome(&mut welcomes, "alice").await;
        let retries = reconnects(&mut states);
        assert_eq!(retries.len(), 1, "{first}: {retries:?}");
        assert_eq!(retries[0].0, Duration::ZERO, "{first}: {retries:?}");
        assert!(retries[0].1.contains("HTTP 401"), "{first}: {retries:?}");
        assert_eq!(minter.calls(), 2, "{first}: one call per connect attempt");
        let metrics = server.rooms().expect("running").metrics();
        let refused: u64 = metrics.auth_refusals.values().sum();
        assert_eq!(metrics.auth_refusals[first], 1, "{first}: {metrics:?}");
        assert_eq!(refused, 1, "{first}: {:?}", metrics.auth_refusals);
        assert_eq!(metrics.sessions, 1);
        client.close().await;
    }
}

/// A token that lives about 2 s and a provider whose refresh is refused (it answers a token for
/// another `sub`, so the server replies `bad_token`): the client reports the failed refresh, the
/// server closes with 4001 at `exp` (not before), and the client reconnects at once with a new
/// token. Provider calls = connects (2) + refreshes (1); the server counted one refused refresh
/// and one expiry close.
#[actix_rt::test]
async fn a_4001_at_exp_after_a_refused_refresh_brings_a_new_token_and_an_immediate_reconnect() {
    let server = jwt_server(test_config(), hs_config());
    let minter = Minter::new(|n| match n {
        1 => claims("alice", 2),
        2 => claims("mallory", 60),
        _ => claims("alice", 60),
    });
    let (client, mut states, mut welcomes, mut events) =
        client_of(&server, &minter, client_test_config());
    states.wait_connected(WAIT).await.expect("connected");
    next_welcome(&mut welcomes, "alice").await;

    match next_token_refresh(&mut events).await {
        Event::TokenRefresh {
            refreshed: false,
            reason: Some(reason),
        } => assert!(
            reason.contains("bad_token") && reason.contains("mallory"),
            "{reason}"
        ),
        other => panic!("the refresh must be refused: {other:?}"),
    }
    let (code, reason) = states
        .wait_disconnected_reason(WAIT)
        .await
        .expect("closed at exp");
    let closed_at = SystemTime::now();
    assert_eq!((code, reason.as_str()), (TOKEN_EXPIRED, "token expired"));
    let exp = UNIX_EPOCH + Duration::from_secs(minter.exps()[0]);
    assert!(
        closed_at >= exp,
        "closed {:?} before exp",
        exp.duration_since(closed_at).unwrap_or_default()
    );
    assert!(
        closed_at <= exp + Duration::from_secs(2),
        "closed {:?} after exp",
        closed_at.duration_since(exp).unwrap_or_default()
    );

    states.wait_connected(WAIT).await.expect("reconnected");
    next_welcome(&mut welcomes, "alice").await;
    let retries = reconnects(&mut states);
    assert_eq!(retries.len(), 1, "{retries:?}");
    assert_eq!(retries[0].0, Duration::ZERO, "{retries:?}");
    assert_eq!(minter.calls(), 3, "two connects and one refresh");
    let metrics = server.rooms().expect("running").metrics();
    assert_eq!(metrics.token_refresh_failures, 1);
    assert_eq!(metrics.token_refreshes, 0);
    assert_eq!(metrics.token_expiry_closes, 1);
    assert_eq!(metrics.auth_refusals.values().sum::<u64>(), 0);
    assert_eq!(metrics.sessions, 1);
    client.close().await;
}

/// A provider that refreshes correctly keeps ONE connection through several expiries of
/// ~2 s tokens: every `token_expiring` is answered (`Event::TokenRefresh` refreshed), the
/// session outlives the `exp` of its first three tokens, no disconnect or reconnect happens,
/// and it still carries room messages (`from` is the `sub`). Provider calls = 1 connect +
/// the refreshes the server counted.
#[actix_rt::test]
async fn refreshes_keep_one_connection_past_several_expiries() {
    let server = jwt_server(test_config(), hs_config());
    let minter = Minter::new(|_| claims("alice", 2));
    let (client, mut states, mut welcomes, mut events) =
        client_of(&server, &minter, client_test_config());
    let mut chats = client.subscribe::<Chat>(16);
    states.wait_connected(WAIT).await.expect("connected");
    next_welcome(&mut welcomes, "alice").await;
    client.join("lobby").await.expect("join");

    let mut refreshed = 0;
    // Each refresh comes at about half a token's life (0.5 to 1 s): 20 is far more than needed.
    for _ in 0..20 {
        let past = minter.exps().get(2).is_some_and(|&exp| now_secs() > exp);
        if past {
            break;
        }
        match next_token_refresh(&mut events).await {
            Event::TokenRefresh {
                refreshed: true,
                reason: None,
            } => refreshed += 1,
            other => panic!("a refresh failed: {other:?}"),
        }
    }
    let exps = minter.exps();
    assert!(
        exps.len() >= 3 && now_secs() > exps[2],
        "not past the third exp after {refreshed} refreshes: {exps:?}"
    );
    assert_eq!(client.state(), ConnectionState::Connected);
    assert!(
        states.states().iter().all(|s| !matches!(
            s,
            ConnectionState::Disconnected { .. } | ConnectionState::Reconnecting { .. }
        )),
        "{:?}",
        states.states()
    );
    assert_eq!(client.stats().reconnects, 0);

    client
        .publish(
            "lobby",
            &Chat {
                text: "still here".into(),
            },
        )
        .await
        .expect("publish");
    let chat = recv_within(&mut chats, WAIT, "my own chat").await;
    assert_eq!(chat.from.as_deref(), Some("alice"));
    assert_eq!(chat.data.text, "still here");

    let metrics = server.rooms().expect("running").metrics();
    assert_eq!(metrics.token_refreshes, refreshed);
    assert_eq!(metrics.token_expiry_closes, 0);
    assert_eq!(metrics.token_refresh_failures, 0);
    assert_eq!(
        minter.calls() as u64,
        1 + refreshed,
        "one connect plus the refreshes"
    );
    client.close().await;
}

/// A restart of the JWT server (same port, fresh `Rooms::with_jwt`): the client comes back by
/// itself, each attempt with a token of its own (the welcome's identity names the call that
/// minted it), and the provider was called exactly once per connect attempt.
#[actix_rt::test]
async fn a_restart_of_the_jwt_server_reconnects_with_a_new_token_per_attempt() {
    let mut server = jwt_server(test_config(), hs_config());
    let minter = Minter::new(|n| claims(&format!("user-{n}"), 60));
    let (client, mut states, mut welcomes, _events) =
        client_of(&server, &minter, client_test_config());
    states.wait_connected(WAIT).await.expect("connected");
    next_welcome(&mut welcomes, "user-1").await;

    server.restart().await.expect("restart");
    assert_eq!(
        states.wait_disconnected(WAIT).await.expect("the restart"),
        1001
    );
    states.wait_connected(WAIT).await.expect("reconnected");
    let attempts = 1 + reconnects(&mut states).len();
    assert!(attempts >= 2, "{:?}", states.states());
    assert_eq!(minter.calls(), attempts, "{:?}", states.states());
    next_welcome(&mut welcomes, &format!("user-{attempts}")).await;
    let metrics = server.rooms().expect("running").metrics();
    assert_eq!(metrics.sessions, 1);
    assert_eq!(metrics.auth_refusals.values().sum::<u64>(), 0);
    assert_eq!(client.stats().reconnects, 1);
    client.close().await;
}

/// A room message from a JWT session carries the token's `sub` as `from` and the session id
/// (the one its welcome named) as `session`, as a raw member sees it; the crate client's own
/// copy has `from` = `sub` too. The raw member came in with the `token` query parameter.
#[actix_rt::test]
async fn a_room_message_from_a_jwt_session_names_its_sub_and_session() {
    let server = jwt_server(test_config(), hs_config());
    let minter = Minter::new(|_| claims("alice", 60));
    let (client, mut states, mut welcomes, _events) =
        client_of(&server, &minter, client_test_config());
    let mut chats = client.subscribe::<Chat>(16);
    states.wait_connected(WAIT).await.expect("connected");
    let alice = next_welcome(&mut welcomes, "alice").await;
    let mut joined = client.subscribe::<actix_ws_manager::protocol::Joined>(4);
    client.join("lobby").await.expect("join");
    recv_within(&mut joined, WAIT, "alice joined").await;

    let bob_token = hs(&claims("bob", 60));
    let (mut bob, bob_welcome) = Peer::rooms(&format!("{}?token={bob_token}", server.url())).await;
    assert_ne!(bob_welcome, alice.session);
    bob.text(r#"{"type":"join","room":"lobby","id":1}"#).await;
    assert_eq!(bob.json().await["type"], "joined");

    client
        .publish("lobby", &Chat { text: "hi".into() })
        .await
        .expect("publish");
    let msg = bob.json().await;
    assert_eq!(msg["type"], "chat", "{msg}");
    assert_eq!(msg["room"], "lobby", "{msg}");
    assert_eq!(msg["from"], "alice", "{msg}");
    assert_eq!(msg["session"], alice.session.as_str(), "{msg}");
    assert_eq!(msg["data"], json!({ "text": "hi" }), "{msg}");
    let own = recv_within(&mut chats, WAIT, "alice's own chat").await;
    assert_eq!(own.from.as_deref(), Some("alice"));

    // And the other way: bob's publish names bob and bob's session.
    bob.text(r#"{"type":"publish","room":"lobby","event":"chat","data":{"text":"yo"}}"#)
        .await;
    let msg = bob.json().await;
    assert_eq!(msg["from"], "bob", "{msg}");
    assert_eq!(msg["session"], bob_welcome.as_str(), "{msg}");
    let theirs = recv_within(&mut chats, WAIT, "bob's message").await;
    assert_eq!(theirs.from.as_deref(), Some("bob"));
    client.close().await;
}

// ---------------------------------------------------------------------------------------------
// Keys: RS256 (PEM and JWKS), ES256

/// What one token is expected to do.
enum Expect {
    /// Connect, with this identity.
    Connects(&'static str),
    /// HTTP 401 whose one-line body contains this.
    Refused(&'static str),
}

/// Run each case against the rooms endpoint at `url`.
async fn check_cases(url: &str, cases: &[(&str, String, Expect)]) {
    let addr = addr_of(url);
    for (label, token, expect) in cases {
        match expect {
            Expect::Connects(sub) => {
                let (mut peer, _) = assert_connects(url, token, sub).await;
                let _ = peer.framed.close().await;
            }
            Expect::Refused(cause) => {
                assert_refused(label, addr, Some(token), cause).await;
            }
        }
    }
}

/// The RS256 cases of a server with the rsa1 public key alone: rsa1 connects (with or without
/// a `kid`), rsa2 and an HS256 token are refused.
fn rsa_pem_cases() -> Vec<(&'static str, String, Expect)> {
    vec![
        (
            "rsa1",
            rs("rsa1", None, &claims("alice", 60)),
            Expect::Connects("alice"),
        ),
        (
            "rsa1 with a kid",
            rs("rsa1", Some("anything"), &claims("bob", 60)),
            Expect::Connects("bob"),
        ),
        (
            "rsa2",
            rs("rsa2", None, &claims("eve", 60)),
            Expect::Refused("signature"),
        ),
        ("HS256", hs(&claims("eve", 60)), Expect::Refused("HS256")),
        (
            "expired",
            rs("rsa1", None, &claims("eve", -30)),
            Expect::Refused("expired"),
        ),
    ]
}

/// The cases of a server with `jwks.json` (key-1: rsa1, key-2: rsa2), audience `wsm` and
/// issuer `https://issuer.example`.
fn jwks_cases() -> Vec<(&'static str, String, Expect)> {
    let ok = |sub: &str| {
        claims_with(
            sub,
            60,
            json!({ "aud": "wsm", "iss": "https://issuer.example" }),
        )
    };
    vec![
        (
            "rsa1 key-1",
            rs("rsa1", Some("key-1"), &ok("alice")),
            Expect::Connects("alice"),
        ),
        (
            "rsa2 key-2",
            rs("rsa2", Some("key-2"), &ok("bob")),
            Expect::Connects("bob"),
        ),
        (
            "rsa2 named key-1",
            rs("rsa2", Some("key-1"), &ok("eve")),
            Expect::Refused("signature"),
        ),
        (
            "rsa1 named key-2",
            rs("rsa1", Some("key-2"), &ok("eve")),
            Expect::Refused("signature"),
        ),
        (
            "an unknown kid",
            rs("rsa1", Some("key-9"), &ok("eve")),
            Expect::Refused("key-9"),
        ),
        (
            "no kid",
            rs("rsa1", None, &ok("eve")),
            Expect::Refused("no kid"),
        ),
        (
            "no aud",
            rs(
                "rsa1",
                Some("key-1"),
                &claims_with("eve", 60, json!({ "iss": "https://issuer.example" })),
            ),
            Expect::Refused("no aud"),
        ),
        (
            "another audience",
            rs(
                "rsa1",
                Some("key-1"),
                &claims_with(
                    "eve",
                    60,
                    json!({ "aud": "other", "iss": "https://issuer.example" }),
                ),
            ),
            Expect::Refused("audience"),
        ),
        (
            "another issuer",
            rs(
                "rsa2",
                Some("key-2"),
                &claims_with(
                    "eve",
                    60,
                    json!({ "aud": "wsm", "iss": "https://evil.example" }),
                ),
            ),
            Expect::Refused("issuer"),
        ),
    ]
}

/// The ES256 cases of a server with `ec_public.pem`: an ES256 token connects; an RS256 one is
/// refused for its algorithm.
fn ec_cases() -> Vec<(&'static str, String, Expect)> {
    vec![
        ("ES256", es(&claims("alice", 60)), Expect::Connects("alice")),
        (
            "RS256",
            rs("rsa1", None, &claims("eve", 60)),
            Expect::Refused("RS256"),
        ),
        (
            "ES256 expired",
            es(&claims("eve", -30)),
            Expect::Refused("expired"),
        ),
    ]
}

/// RS256 with a PEM public key, through the library (`JwtConfig::public_key_pem`): tokens
/// signed by the matching private key connect, with or without a `kid`; another key's
/// signature, an HS256 token and an expired token are refused with a one-line 401 naming why.
#[actix_rt::test]
async fn rs256_with_a_pem_public_key_through_the_library() {
    let jwt = JwtConfig::public_key_pem(fixture("rsa1_public.pem")).expect("RSA PEM");
    let server = jwt_server(test_config(), jwt);
    check_cases(&server.url(), &rsa_pem_cases()).await;
    let refusals = server.rooms().expect("running").metrics().auth_refusals;
    assert_eq!(refusals["signature"], 1, "{refusals:?}");
    assert_eq!(refusals["algorithm"], 1, "{refusals:?}");
    assert_eq!(refusals["expired"], 1, "{refusals:?}");
}

/// RS256 with a JWKS document of two keys, through the library (`JwtConfig::jwks`), with an
/// audience and an issuer: a token signed by rsa1 as key-1 and one signed by rsa2 as key-2 both
/// connect; rsa2's signature under kid key-1 (and the reverse), an unknown kid, no kid with
/// two keys, another audience, no audience and another issuer are each a one-line 401 naming
/// the cause.
#[actix_rt::test]
async fn rs256_with_a_jwks_document_through_the_library() {
    let jwt = JwtConfig::jwks(&fixture("jwks.json"))
        .expect("JWKS")
        .audience("wsm")
        .issuer("https://issuer.example");
    let server = jwt_server(test_config(), jwt);
    check_cases(&server.url(), &jwks_cases()).await;
    let refusals = server.rooms().expect("running").metrics().auth_refusals;
    assert_eq!(refusals["signature"], 2, "{refusals:?}");
    assert_eq!(refusals["unknown_key"], 2, "{refusals:?}");
    assert_eq!(refusals["audience"], 2, "{refusals:?}");
    assert_eq!(refusals["issuer"], 1, "{refusals:?}");
    assert_eq!(refusals.values().sum::<u64>(), 7, "{refusals:?}");
}

/// ES256 with an EC (P-256) PEM public key, through the library: an ES256 token connects; an
/// RS256 one is refused for its algorithm, an expired one for its expiry.
#[actix_rt::test]
async fn es256_with_an_ec_public_key_through_the_library() {
    let jwt = JwtConfig::public_key_pem(fixture("ec_public.pem")).expect("EC PEM");
    let server = jwt_server(test_config(), jwt);
    check_cases(&server.url(), &ec_cases()).await;
}

/// The same RS256 (PEM and JWKS, with `--jwt-audience` and `--jwt-issuer`) and ES256 cases
/// against the built `wsm serve --jwt-public-key-file` / `--jwt-jwks-file`.
#[cfg(unix)]
#[actix_rt::test]
async fn rs256_and_es256_through_wsm_serve() {
    let rsa = fixture_path("rsa1_public.pem");
    let (_child, url) =
        common::spawn_wsm_serve(&["--bind", "127.0.0.1:0", "--jwt-public-key-file", &rsa]);
    check_cases(&url, &rsa_pem_cases()).await;

    let jwks = fixture_path("jwks.json");
    let (_child, url) = common::spawn_wsm_serve(&[
        "--bind",
        "127.0.0.1:0",
        "--jwt-jwks-file",
        &jwks,
        "--jwt-audience",
        "wsm",
        "--jwt-issuer",
        "https://issuer.example",
    ]);
    check_cases(&url, &jwks_cases()).await;

    let ec = fixture_path("ec_public.pem");
    let (_child, url) =
        common::spawn_wsm_serve(&["--bind", "127.0.0.1:0", "--jwt-public-key-file", &ec]);
    check_cases(&url, &ec_cases()).await;
}

/// Audience and issuer checks through the library (HS256): the right `aud` (alone or in a
/// list) and `iss` connect; another audience, another issuer, and a token lacking `aud` or
/// `iss` are each a one-line 401 naming the claim, counted under `audience` or `issuer`.
#[actix_rt::test]
async fn audience_and_issuer_are_checked() {
    let jwt = hs_config().audience("wsm").issuer("https://issuer.example");
    let server = jwt_server(test_config(), jwt);
    let iss = "https://issuer.example";
    let token = |extra: Value| hs(&claims_with("alice", 60, extra));
    let cases = [
        (
            "right",
            token(json!({ "aud": "wsm", "iss": iss })),
            Expect::Connects("alice"),
        ),
        (
            "aud in a list",
            token(json!({ "aud": ["other", "wsm"], "iss": iss })),
            Expect::Connects("alice"),
        ),
        (
            "another audience",
            token(json!({ "aud": "other", "iss": iss })),
            Expect::Refused("audience"),
        ),
        (
            "another issuer",
            token(json!({ "aud": "wsm", "iss": "https://evil.example" })),
            Expect::Refused("issuer"),
        ),
        (
            "no aud",
            token(json!({ "iss": iss })),
            Expect::Refused("aud"),
        ),
        (
            "no iss",
            token(json!({ "aud": "wsm" })),
            Expect::Refused("iss"),
        ),
    ];
    check_cases(&server.url(), &cases).await;
    let refusals = server.rooms().expect("running").metrics().auth_refusals;
    assert_eq!(refusals["audience"], 2, "{refusals:?}");
    assert_eq!(refusals["issuer"], 2, "{refusals:?}");
    assert_eq!(refusals.values().sum::<u64>(), 4, "{refusals:?}");
}

// ---------------------------------------------------------------------------------------------
// A flood of bad tokens

/// A flood of bad tokens from one address costs no session slot and respects
/// `max_connections_per_ip`: with the limit at 3 and 3 valid sessions open, 300 upgrades with
/// bad tokens (20 at a time; missing, malformed, badly signed and expired, 75 each) are every
/// one a 401 (none a 429), the server holds 3 sessions throughout, and each refusal is counted
/// under its reason with no per-address refusal; a 4th valid token then gets 429, and once a
/// valid session closes a new one connects (its slot was released).
#[actix_rt::test]
async fn a_flood_of_bad_tokens_costs_no_slot_and_respects_the_per_address_limit() {
    const FLOOD: usize = 300;
    const AT_ONCE: usize = 20;
    let config = test_config().max_connections_per_ip(Some(3));
    let server = jwt_server(config, hs_config());
    let rooms = server.rooms().expect("running").clone();
    let addr = server.addr();

    let mut valid = Vec::new();
    for i in 0..3 {
        let token = hs(&claims(&format!("user-{i}"), 60));
        let up = upgrade(addr, "/ws", Some(&token)).await;
        assert_eq!(up.status, 101, "valid session {i}: {}", up.head);
        valid.push(up.tcp);
    }
    assert_eq!(rooms.metrics().sessions, 3);

    let forged = sign(
        Algorithm::HS256,
        None,
        &EncodingKey::from_secret(b"another secret"),
        &claims("eve", 60),
    );
    let expired = hs(&claims("eve", -30));
    let bad: [(&str, Option<&str>, &str); 4] = [
        ("missing", None, "no token"),
        ("malformed", Some("not.a-jwt"), "not a JWT"),
        ("signature", Some(&forged), "signature"),
        ("expired", Some(&expired), "expired"),
    ];
    let statuses: Vec<(u16, String, usize)> = futures_util::stream::iter(0..FLOOD)
        .map(|i| {
            let (_, token, cause) = bad[i % bad.len()];
            let rooms = rooms.clone();
            async move {
                let up = upgrade(addr, "/ws", token).await;
                assert_one_line(&up.body, cause);
                (up.status, up.body, rooms.metrics().sessions)
            }
        })
        .buffer_unordered(AT_ONCE)
        .collect()
        .await;
    assert_eq!(statuses.len(), FLOOD);
    for (status, body, sessions) in &statuses {
        assert_eq!(*status, 401, "{body}");
        assert_eq!(*sessions, 3, "a bad token took a slot");
    }
    let metrics = rooms.metrics();
    assert_eq!(metrics.sessions, 3);
    assert_eq!(metrics.per_ip_refusals, 0);
    for (reason, _, _) in &bad {
        assert_eq!(
            metrics.auth_refusals[reason],
            (FLOOD / bad.len()) as u64,
            "{reason}: {:?}",
            metrics.auth_refusals
        );
    }
    assert_eq!(
        metrics.auth_refusals.values().sum::<u64>(),
        FLOOD as u64,
        "{:?}",
        metrics.auth_refusals
    );

    // A 4th valid token from the same address: the per-address limit, now.
    let fourth = hs(&claims("user-3", 60));
    let up = upgrade(addr, "/ws", Some(&fourth)).await;
    assert_eq!(up.status, 429, "{}{}", up.head, up.body);
    assert_eq!(rooms.metrics().per_ip_refusals, 1);

    // One valid session goes: its slot is released and a new valid token gets it.
    drop(valid.pop());
    assert!(
        rooms.wait_sessions(2, WAIT).await,
        "the closed session's slot"
    );
    let up = upgrade(addr, "/ws", Some(&fourth)).await;
    assert_eq!(up.status, 101, "{}{}", up.head, up.body);
    valid.push(up.tcp);
    assert_eq!(rooms.metrics().sessions, 3);
    assert_eq!(
        rooms.metrics().auth_refusals.values().sum::<u64>(),
        FLOOD as u64
    );
}
