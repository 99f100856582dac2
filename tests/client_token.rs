//! The client with a token provider (issue 21, client side): every connect attempt carries a
//! fresh `Authorization: Bearer T` from the provider, so the provider is called once per
//! attempt; a server restart, a 401 at the upgrade and a close with 4001 each lead to a new
//! token and a reconnect (the 401 and the 4001 at once, with no backoff); a second 401 in a row
//! is final; a provider error is `Failed` with its reason; the server's `token_expiring` is
//! answered with a `refresh` carrying the provider's token, and its outcome is an
//! `Event::TokenRefresh`; a Manager gives each connection its own provider.
//!
//! The servers are real (127.0.0.1:0): the rooms server with an authentication hook
//! (`Rooms::with_auth`) that reads the bearer token, and the scriptable peer for the 4001 close
//! and the refresh exchange.

mod common;

use common::client::reconnects;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use actix_web::http::header::AUTHORIZATION;
use actix_ws_manager::client::{connect, ConnectionState, Event, Manager, ManagerConfig};
use actix_ws_manager::config::{ClientConfig, ReconnectPolicy};
use actix_ws_manager::server::{AuthRejection, Rooms};
use actix_ws_manager::testkit::{StateRecorder, TestServer};
use actix_ws_manager::ws::close::TOKEN_EXPIRED;
use common::peer::{Behaviour, Peer, PeerCmd, PeerEvent};
use common::{client_test_config, recv_until, test_config, WAIT};

/// A provider that hands out `t1`, `t2`, ... and counts its calls.
#[derive(Clone, Default)]
struct Tokens {
    calls: Arc<AtomicUsize>,
}

impl Tokens {
    fn calls(&self) -> usize {
        self.calls.load(Ordering::SeqCst)
    }

    /// `config` with this provider.
    fn config(&self, config: ClientConfig) -> ClientConfig {
        let calls = self.calls.clone();
        config.token_provider(move || {
            let n = calls.fetch_add(1, Ordering::SeqCst) + 1;
            async move { Ok::<_, String>(format!("t{n}")) }
        })
    }
}

/// What the rooms server's authentication hook saw and does: every `Authorization` header it
/// was shown (all values of one request joined by `, `), and how many more requests it refuses
/// with 401.
#[derive(Clone, Default)]
struct Gate {
    seen: Arc<Mutex<Vec<String>>>,
    refuse_next: Arc<AtomicUsize>,
}

impl Gate {
    fn seen(&self) -> Vec<String> {
        self.seen.lock().expect("lock").clone()
    }

    /// A rooms server (restartable, same port) behind this gate.
    fn server(&self) -> TestServer {
        let gate = self.clone();
        TestServer::start_with(move || {
            let gate = gate.clone();
            Ok(Rooms::start(test_config())?.with_auth(move |req| {
                let auth: Vec<&str> = req
                    .headers()
                    .get_all(AUTHORIZATION)
                    .filter_map(|v| v.to_str().ok())
                    .collect();
                gate.seen.lock().expect("lock").push(auth.join(", "));
                let refuse = gate
                    .refuse_next
                    .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
                    .is_ok();
                if refuse || auth.is_empty() {
                    return Err(AuthRejection::Unauthorized("token refused".into()));
                }
                Ok(None)
            }))
        })
        .expect("server starts")
    }
}

/// A server restart: the client comes back by itself with a token fetched for each attempt
/// (attempts refused while the server was down included), the last one is what the new server
/// sees, and the provider was called exactly once per connect attempt (the first, plus one per
/// `Reconnecting`). The user's own `Authorization` header is replaced, not doubled.
#[actix_rt::test]
async fn a_restart_reconnects_with_a_new_token_from_one_call_per_attempt() {
    let gate = Gate::default();
    let mut server = gate.server();
    let tokens = Tokens::default();
    let config = tokens.config(client_test_config().header("Authorization", "Bearer stale"));
    let client = connect(&server.url(), config).expect("connect");
    let mut states = StateRecorder::attach(&client);
    states.wait_connected(WAIT).await.expect("connected");
    assert_eq!(gate.seen(), ["Bearer t1"]);

    server.restart().await.expect("restart");
    states.wait_disconnected(WAIT).await.expect("the restart");
    states.wait_connected(WAIT).await.expect("reconnected");
    let attempts = 1 + reconnects(&mut states).len();
    assert_eq!(tokens.calls(), attempts, "{:?}", states.states());
    assert_eq!(
        gate.seen().last().map(String::as_str),
        Some(format!("Bearer t{attempts}").as_str())
    );
    client.close().await;
}

/// A 401 at the upgrade fetches a new token and dials again at once (a `Reconnecting` with a
/// zero delay, not the 50 ms backoff), even though 401 is a final status by default; the
/// provider was called once per attempt.
#[actix_rt::test]
async fn a_401_fetches_a_new_token_and_reconnects_at_once() {
    let gate = Gate::default();
    gate.refuse_next.store(1, Ordering::SeqCst);
    let server = gate.server();
    let tokens = Tokens::default();
    let client = connect(&server.url(), tokens.config(client_test_config())).expect("connect");
    let mut states = StateRecorder::attach(&client);
    states.wait_connected(WAIT).await.expect("connected");
    let retries = reconnects(&mut states);
    assert_eq!(retries.len(), 1, "{retries:?}");
    assert_eq!(retries[0].0, Duration::ZERO, "{retries:?}");
    assert!(retries[0].1.contains("HTTP 401"), "{retries:?}");
    assert_eq!(gate.seen(), ["Bearer t1", "Bearer t2"]);
    assert_eq!(tokens.calls(), 2);
    client.close().await;
}

/// A second 401 in a row, with the fresh token, follows the policy: 401 is final by default,
/// so the client fails, saying so, after exactly two attempts and two provider calls.
#[actix_rt::test]
async fn a_second_401_in_a_row_is_final() {
    let gate = Gate::default();
    gate.refuse_next.store(2, Ordering::SeqCst);
    let server = gate.server();
    let tokens = Tokens::default();
    let client = connect(&server.url(), tokens.config(client_test_config())).expect("connect");
    match client.closed().await {
        ConnectionState::Failed { reason } => assert!(reason.contains("HTTP 401"), "{reason}"),
        other => panic!("{other:?}"),
    }
    assert_eq!(gate.seen(), ["Bearer t1", "Bearer t2"]);
    assert_eq!(tokens.calls(), 2);
}

/// A close with 4001 (token expired) fetches a new token and reconnects at once, although the
/// policy lists 4000..=4999 as final codes (4001 never is with a provider); the peer's second
/// session carries the new token, and a second 4001 soon after takes the backoff path.
#[actix_rt::test]
async fn a_4001_close_fetches_a_new_token_and_reconnects_at_once() {
    let mut peer = Peer::start(Behaviour::default()).await;
    let tokens = Tokens::default();
    let policy = ReconnectPolicy::default()
        .backoff(Duration::from_millis(50), 2.0, Duration::from_secs(1))
        .jitter(0.0, None)
        .final_close_codes(4000..=4999);
    let config = tokens.config(client_test_config().reconnect(policy));
    let client = connect(&peer.url, config).expect("connect");
    let mut states = StateRecorder::attach(&client);
    states.wait_connected(WAIT).await.expect("connected");
    assert_eq!(peer.next().await, PeerEvent::Connected(0));

    peer.send(PeerCmd::Close(TOKEN_EXPIRED));
    assert_eq!(
        states.wait_disconnected(WAIT).await.expect("closed"),
        TOKEN_EXPIRED
    );
    states.wait_connected(WAIT).await.expect("reconnected");
    let retries = reconnects(&mut states);
    assert_eq!(retries.len(), 1, "{retries:?}");
    assert_eq!(retries[0].0, Duration::ZERO, "{retries:?}");
    assert_eq!(
        peer.authorizations(),
        [Some("Bearer t1".to_owned()), Some("Bearer t2".to_owned())]
    );

    // A second 4001 before the connection is stable: the new token did not help, so backoff.
    peer.send(PeerCmd::Close(TOKEN_EXPIRED));
    states.wait_disconnected(WAIT).await.expect("closed again");
    states.wait_connected(WAIT).await.expect("back again");
    let retries = reconnects(&mut states);
    assert_eq!(retries.len(), 2, "{retries:?}");
    assert_eq!(retries[1].0, Duration::from_millis(100), "{retries:?}");
    assert_eq!(tokens.calls(), 3);
    assert_eq!(peer.authorizations().len(), 3);
    client.close().await;
}

/// A provider that fails ends the client in `Failed` with the provider's reason in words, and
/// nothing is dialled without a token; one that fails later (at a reconnect) does the same.
#[actix_rt::test]
async fn a_provider_error_is_failed_with_its_reason() {
    let gate = Gate::default();
    let mut server = gate.server();
    let config = client_test_config().token_provider(|| async {
        Err::<String, _>(std::io::Error::other("the vault is sealed"))
    });
    let client = connect(&server.url(), config).expect("connect");
    assert_eq!(
        client.closed().await,
        ConnectionState::Failed {
            reason: "token provider failed: the vault is sealed".into()
        }
    );
    assert!(gate.seen().is_empty(), "{:?}", gate.seen());

    // Works once, then fails at the reconnect after a restart.
    let tokens = Tokens::default();
    let calls = tokens.calls.clone();
    let config = client_test_config().token_provider(move || {
        let n = calls.fetch_add(1, Ordering::SeqCst) + 1;
        async move {
            match n {
                1 => Ok("t1".to_owned()),
                _ => Err("no more tokens"),
            }
        }
    });
    let client = connect(&server.url(), config).expect("connect");
    client.wait_connected(WAIT).await.expect("connected");
    server.restart().await.expect("restart");
    assert_eq!(
        client.closed().await,
        ConnectionState::Failed {
            reason: "token provider failed: no more tokens".into()
        }
    );
    assert_eq!(tokens.calls(), 2);
}

/// The next refresh the peer receives: its `id` and token.
async fn next_refresh(peer: &mut Peer) -> (u64, String) {
    let text = peer.next_text().await;
    let v: serde_json::Value = serde_json::from_str(&text).expect("JSON");
    assert_eq!(v["type"], "refresh", "{text}");
    let id = v["id"].as_u64().expect("an id");
    (id, v["data"]["token"].as_str().expect("a token").to_owned())
}

/// The next `TokenRefresh` event.
async fn next_token_refresh(events: &mut tokio::sync::mpsc::Receiver<Event>) -> Event {
    recv_until(events, WAIT, "a token refresh", |e| {
        matches!(e, Event::TokenRefresh { .. })
    })
    .await
}

/// `token_expiring` from the server is answered with a `refresh` carrying a new token from the
/// provider; the server's `refreshed` is reported as a refresh that worked, its `error` with
/// `bad_token` as one that did not, with the server's words. The connection stays up.
#[actix_rt::test]
async fn token_expiring_is_answered_with_a_refresh() {
    let behaviour = Behaviour {
        echo: false,
        ..Behaviour::default()
    };
    let mut peer = Peer::start(behaviour).await;
    let tokens = Tokens::default();
    let client = connect(&peer.url, tokens.config(client_test_config())).expect("connect");
    let mut events = client.subscribe_events(64);
    client.wait_connected(WAIT).await.expect("connected");
    assert_eq!(peer.next().await, PeerEvent::Connected(0));
    let expiring = r#"{"type":"token_expiring","data":{"in_ms":30000}}"#;

    peer.send(PeerCmd::Text(expiring.into()));
    let (id, token) = next_refresh(&mut peer).await;
    assert_eq!(token, "t2");
    peer.send(PeerCmd::Text(format!(
        r#"{{"type":"refreshed","id":{id}}}"#
    )));
    assert_eq!(
        next_token_refresh(&mut events).await,
        Event::TokenRefresh {
            refreshed: true,
            reason: None
        }
    );

    peer.send(PeerCmd::Text(expiring.into()));
    let (id, token) = next_refresh(&mut peer).await;
    assert_eq!(token, "t3");
    peer.send(PeerCmd::Text(format!(
        r#"{{"type":"error","id":{id},"data":{{"code":"bad_token","message":"another sub"}}}}"#
    )));
    match next_token_refresh(&mut events).await {
        Event::TokenRefresh {
            refreshed: false,
            reason: Some(reason),
        } => assert!(
            reason.contains("bad_token") && reason.contains("another sub"),
            "{reason}"
        ),
        other => panic!("{other:?}"),
    }
    assert_eq!(client.state(), ConnectionState::Connected);
    assert_eq!(tokens.calls(), 3, "one connect and two refreshes");
    client.close().await;
}

/// A Manager's connections each call the provider of their own config (`connect_with`), and
/// one made with `connect` calls the manager's.
#[actix_rt::test]
async fn a_manager_gives_each_connection_its_own_provider() {
    let gate = Gate::default();
    let server = gate.server();
    let shared = client_test_config().token_provider(|| async { Ok::<_, String>("shared".into()) });
    let manager =
        Manager::new(ManagerConfig::default().arbiters(Some(2)).client(shared)).expect("manager");
    let own = |token: &'static str| {
        client_test_config().token_provider(move || async move { Ok::<_, String>(token.into()) })
    };
    let a = manager
        .connect_with("a", &server.url(), own("alice"))
        .await
        .expect("a");
    a.wait_connected(WAIT).await.expect("a connected");
    let b = manager
        .connect_with("b", &server.url(), own("bob"))
        .await
        .expect("b");
    b.wait_connected(WAIT).await.expect("b connected");
    let c = manager.connect("c", &server.url()).await.expect("c");
    c.wait_connected(WAIT).await.expect("c connected");
    assert_eq!(gate.seen(), ["Bearer alice", "Bearer bob", "Bearer shared"]);
    manager.shutdown().await;
}
