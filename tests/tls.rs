//! `wss://` end to end with certificates made at test time (rcgen): a client that trusts the
//! test CA talks to the rooms and echo endpoints of a TLS server; a self-signed certificate marked
//! as a CA (what `openssl req -x509` makes) is trusted when the client was given that very
//! certificate; every refused certificate (untrusted, for another name, expired, not yet valid, a
//! CA certificate in the server's place) fails for good at once, in words that say what is wrong
//! and what to do, and never retries.

mod common;

use std::time::{Duration, Instant};

use actix_ws_manager::client::{connect, ConnectionState, Event};
use actix_ws_manager::config::ClientConfig;
use actix_ws_manager::protocol::RoomMessage;
use actix_ws_manager::{server, tls};
use common::{client_test_config, self_signed_ca_cert, test_pki, WAIT};

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
            assert!(
                reason.contains("signed by an issuer this client does not trust"),
                "{reason}"
            )
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

/// A TLS server on 127.0.0.1:0 presenting `cert_pem` (with `key_pem`), rooms at `/ws`, echo at
/// `/echo`.
fn serve_cert(cert_pem: &str, key_pem: &str) -> server::Server {
    let rooms = server::Rooms::start(common::test_config()).expect("rooms");
    let config = tls::server_config(cert_pem.as_bytes(), key_pem.as_bytes()).expect("tls config");
    server::serve_tls("127.0.0.1:0", "/ws", "/echo", rooms, config).expect("serve")
}

/// Connect to `url` with `config` and expect the client to fail for good: answers the reason of
/// its `Failed` state, after checking that it came within the connect timeout (the first
/// attempt, not a retry loop), that it names the URL once as a refused certificate, that it
/// carries no Debug dump, and that no `Reconnecting` state was published.
async fn refused(url: &str, config: ClientConfig) -> String {
    let connect_timeout = Duration::from_secs(5);
    let started = Instant::now();
    let client = connect(url, config.connect_timeout(connect_timeout)).expect("client");
    let mut events = client.subscribe_events(16);
    let Ok(ended) = tokio::time::timeout(WAIT, client.closed()).await else {
        panic!("{url}: the client did not end: {}", client.state());
    };
    assert!(
        started.elapsed() < connect_timeout,
        "{:?}",
        started.elapsed()
    );
    let reason = match ended {
        ConnectionState::Failed { reason } => reason,
        other => panic!("{other:?}"),
    };
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
    let prefix = format!("TLS certificate of {url} refused: ");
    assert!(reason.starts_with(&prefix), "{reason}");
    for dump in [
        "Other(",
        "OtherError",
        "Context {",
        "DnsName(",
        "IpAddress(",
    ] {
        assert!(!reason.contains(dump), "{reason}");
    }
    reason
}

/// The certificate `openssl req -x509 ... -subj /CN=localhost -addext
/// subjectAltName=DNS:localhost,IP:127.0.0.1` makes (self-signed, `CA:TRUE`), given to the client
/// as the root to trust, is accepted as the server's own: the library client echoes through
/// `wss://127.0.0.1` and `wss://localhost` (webpki alone refuses it with `CaUsedAsEndEntity`).
#[actix_rt::test]
async fn given_self_signed_ca_certificate_is_trusted_as_the_servers_own() {
    let (cert, key) = self_signed_ca_cert(&["localhost", "127.0.0.1"], None);
    let server = serve_cert(&cert, &key);
    let by_ip = server.echo_url();
    let by_name = by_ip.replace("127.0.0.1", "localhost");
    for url in [by_ip, by_name] {
        let echo = connect(&url, client_test_config().tls_root_pem(cert.clone())).expect("client");
        let mut texts = echo.subscribe_text(8);
        echo.wait_connected(WAIT).await.expect("connected");
        echo.send_text("pinned").await.expect("send");
        let back = tokio::time::timeout(WAIT, texts.recv())
            .await
            .expect("echo")
            .expect("open");
        assert_eq!(&*back.data, "pinned", "{url}");
        echo.close().await;
    }
    server.shutdown().await.expect("shutdown");
}

/// A given certificate is still checked for its names: a self-signed CA certificate without an
/// IP SAN refuses `wss://127.0.0.1`, and one for another host refuses `wss://localhost`, each in
/// a sentence that names the host and the names the certificate has; the same holds for a
/// CA-signed certificate of another name.
#[actix_rt::test]
async fn certificate_for_another_name_fails_at_once_naming_the_mismatch() {
    let (only_name, only_name_key) = self_signed_ca_cert(&["localhost"], None);
    let server = serve_cert(&only_name, &only_name_key);
    let reason = refused(
        &server.echo_url(),
        client_test_config().tls_root_pem(only_name),
    )
    .await;
    assert!(
        reason.contains("it is not valid for 127.0.0.1: it names only localhost;"),
        "{reason}"
    );
    server.shutdown().await.expect("shutdown");

    let (other, other_key) = self_signed_ca_cert(&["other.example", "10.1.2.3"], None);
    let server = serve_cert(&other, &other_key);
    let url = server.echo_url().replace("127.0.0.1", "localhost");
    let reason = refused(&url, client_test_config().tls_root_pem(other)).await;
    assert!(
        reason.contains("it is not valid for localhost: it names only other.example, 10.1.2.3;"),
        "{reason}"
    );
    server.shutdown().await.expect("shutdown");

    // The ordinary path (a certificate signed by a trusted CA) words it alike.
    let (ca, cert, key) = ca_signed(&["localhost"], false);
    let server = serve_cert(&cert, &key);
    let reason = refused(&server.echo_url(), client_test_config().tls_root_pem(ca)).await;
    assert!(
        reason.contains("it is not valid for 127.0.0.1: it names only localhost;"),
        "{reason}"
    );
    server.shutdown().await.expect("shutdown");
}

/// A CA made now, and a certificate for `names` signed by it, itself marked as a CA when
/// `is_ca`: (CA certificate PEM, certificate PEM, key PEM).
fn ca_signed(names: &[&str], is_ca: bool) -> (String, String, String) {
    let mut root = rcgen::CertificateParams::new(Vec::<String>::new()).expect("root params");
    root.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    root.distinguished_name
        .push(rcgen::DnType::CommonName, "test root");
    let root = rcgen::CertifiedIssuer::self_signed(root, rcgen::KeyPair::generate().expect("key"))
        .expect("root");
    let names: Vec<String> = names.iter().map(|n| (*n).to_owned()).collect();
    let mut params = rcgen::CertificateParams::new(names).expect("params");
    if is_ca {
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    }
    let key = rcgen::KeyPair::generate().expect("key");
    let cert = params.signed_by(&key, &root).expect("cert");
    (root.pem(), cert.pem(), key.serialize_pem())
}

/// A self-signed CA certificate the client was not given (none, or another one) is refused as
/// an untrusted issuer, with what to do (pass it with --ca / `tls_root_pem`), not webpki's
/// `CaUsedAsEndEntity`.
#[actix_rt::test]
async fn untrusted_self_signed_certificate_fails_with_the_unknown_issuer_words() {
    let (cert, key) = self_signed_ca_cert(&["localhost", "127.0.0.1"], None);
    let (another, _) = self_signed_ca_cert(&["localhost", "127.0.0.1"], None);
    let server = serve_cert(&cert, &key);
    for config in [
        client_test_config(),
        client_test_config().tls_root_pem(another),
    ] {
        let reason = refused(&server.echo_url(), config).await;
        assert!(
            reason.contains("it is signed by an issuer this client does not trust")
                && reason.contains("--ca FILE")
                && reason.contains("ClientConfig::tls_root_pem"),
            "{reason}"
        );
    }
    server.shutdown().await.expect("shutdown");
}

/// A given certificate is still checked for its validity period: one that ended on 1 January
/// 2021 is refused as expired, one that starts in 2090 as not valid yet, each with its date.
#[actix_rt::test]
async fn given_certificate_outside_its_validity_period_is_refused_with_its_dates() {
    let names = ["localhost", "127.0.0.1"];
    let cases = [
        (
            (2020, 2021),
            "it expired on 2021-01-01 00:00:00 UTC (it is now 20",
        ),
        (
            (2090, 2091),
            "it is not valid before 2090-01-01 00:00:00 UTC (it is now 20",
        ),
    ];
    for (valid, words) in cases {
        let (cert, key) = self_signed_ca_cert(&names, Some(valid));
        let server = serve_cert(&cert, &key);
        let reason = refused(&server.echo_url(), client_test_config().tls_root_pem(cert)).await;
        assert!(reason.contains(words), "{reason}");
        server.shutdown().await.expect("shutdown");
    }
}

/// A CA certificate in the server's place that is not the one the user gave (here an
/// intermediate CA signed by the trusted test CA) is refused, in words that say so.
#[actix_rt::test]
async fn ca_certificate_as_the_servers_own_is_refused_unless_given() {
    let (root, intermediate, key) = ca_signed(&["localhost", "127.0.0.1"], true);
    let server = serve_cert(&intermediate, &key);
    let reason = refused(&server.echo_url(), client_test_config().tls_root_pem(root)).await;
    assert!(
        reason.contains("the server presents a CA certificate (CA:TRUE) as its own"),
        "{reason}"
    );
    server.shutdown().await.expect("shutdown");
}
