//! `wss://` end to end with a certificate made at test time (rcgen): a client that trusts the
//! test CA talks to the rooms and echo endpoints of a TLS server; a client that does not trust it
//! fails for good, with a reason that names the certificate, and does not retry.

mod common;

use std::time::{Duration, Instant};

use actix_ws_manager::client::{connect, ConnectionState, Event};
use actix_ws_manager::protocol::RoomMessage;
use actix_ws_manager::{server, tls};
use common::{client_test_config, test_pki, WAIT};

fn tls_server() -> (server::Server, String) {
    let (ca, cert, key) = test_pki();
    let rooms = server::Rooms::start(common::test_config()).expect("rooms");
    let config = tls::server_config(cert.as_bytes(), key.as_bytes()).expect("tls config");
    let server = server::serve_tls("127.0.0.1:0", "/ws", "/echo", rooms, config).expect("serve");
    (server, ca)
}

/// A client trusting the test CA joins a room over `wss://`, publishes and receives its message,
/// and echoes text through `/echo`.
#[actix_rt::test]
async fn trusted_client_talks_to_rooms_and_echo_over_tls() {
    let (server, ca) = tls_server();
    assert!(
        server.url().starts_with("wss://127.0.0.1:"),
        "{}",
        server.url()
    );
    let config = client_test_config().tls_root_pem(ca.clone());
    let client = connect(&server.url(), config).expect("client");
    let mut messages = client.subscribe::<RoomMessage>(8);
    client
        .wait_connected(WAIT)
        .await
        .expect("connected over TLS");
    client.join("secure").await.expect("join");
    client
        .request_envelope(
            actix_ws_manager::protocol::publish("secure", &"over tls").expect("publish"),
            WAIT,
        )
        .await
        .expect("ack");
    let msg = tokio::time::timeout(WAIT, messages.recv())
        .await
        .expect("message")
        .expect("open");
    assert_eq!(msg.data, RoomMessage("over tls".into()));

    let echo =
        connect(&server.echo_url(), client_test_config().tls_root_pem(ca)).expect("echo client");
    let mut texts = echo.subscribe_text(8);
    echo.wait_connected(WAIT).await.expect("connected");
    echo.send_text("verbatim").await.expect("send");
    let back = tokio::time::timeout(WAIT, texts.recv())
        .await
        .expect("echo")
        .expect("open");
    assert_eq!(&*back.data, "verbatim");
    client.close().await;
    echo.close().await;
    server.shutdown().await.expect("shutdown");
}

/// A client that does not trust the server's certificate ends in `Failed` with a reason naming
/// the certificate, within its connect timeout, and never retries (no `Reconnecting`).
#[actix_rt::test]
async fn untrusted_certificate_fails_for_good() {
    let (server, _ca) = tls_server();
    let connect_timeout = Duration::from_secs(5);
    let config = client_test_config().connect_timeout(connect_timeout);
    let started = Instant::now();
    let client = connect(&server.url(), config).expect("client");
    let mut events = client.subscribe_events(16);
    // `wait_connected` keeps the reason of the `Failed` state.
    match client.wait_connected(WAIT).await {
        Err(actix_ws_manager::Error::ConnectFailed { reason, .. }) => {
            assert!(reason.contains("certificate"), "{reason}")
        }
        other => panic!("{other:?}"),
    }
    let ended = tokio::time::timeout(WAIT, client.closed())
        .await
        .expect("client ended");
    assert!(
        started.elapsed() < connect_timeout,
        "{:?}",
        started.elapsed()
    );
    match &ended {
        ConnectionState::Failed { reason } => {
            assert!(reason.contains("certificate"), "{reason}")
        }
        other => panic!("{other:?}"),
    }
    // The event channel ends when the client's actors stop: read it all.
    let mut seen = Vec::new();
    while let Some(ev) = tokio::time::timeout(WAIT, events.recv())
        .await
        .expect("the event channel ends")
    {
        seen.push(ev);
    }
    assert!(
        !seen
            .iter()
            .any(|e| matches!(e, Event::State(ConnectionState::Reconnecting { .. }))),
        "{seen:?}"
    );
    assert_eq!(server.rooms().sessions(), 0);
    server.shutdown().await.expect("shutdown");
}
