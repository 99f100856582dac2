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

use common::client::reconnects;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use actix_ws_manager::client::{connect, Client, ConnectionState, Event};
use actix_ws_manager::config::ClientConfig;
use actix_ws_manager::testkit::{StateRecorder, TestServer};
use actix_ws_manager::ws::close::TOKEN_EXPIRED;
use actix_ws_manager::WireMessage;
use jsonwebtoken::{Algorithm, EncodingKey};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use common::jwt::*;
use common::{client_test_config, recv_until, recv_within, test_config, Peer, WAIT};

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
