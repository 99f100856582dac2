//! The crate's own client against the crate's own server: the rooms protocol through typed
//! requests and subscriptions, errors as `Error::Remote`, and shutdown seen as close 1001.

mod common;

use actix_ws_manager::client::{connect, ConnectionState, Event};
use actix_ws_manager::config::{ClientConfig, ReconnectPolicy};
use actix_ws_manager::protocol::{self, RoomMessage};
use actix_ws_manager::Error;
use common::{recv_until, recv_within, start_server, test_config, WAIT};

/// Join, publish (acked, delivered to the publisher's typed subscription with `from`), echo and
/// a `not_joined` error all work through the client; `Server::shutdown` reaches it as 1001.
#[actix_rt::test]
async fn crate_client_speaks_the_rooms_protocol() {
    let server = start_server(test_config());
    let client = connect(
        &server.url(),
        ClientConfig::default().reconnect(ReconnectPolicy::never()),
    )
    .expect("client");
    let mut events = client.subscribe_events(64);
    let mut messages = client.subscribe::<RoomMessage>(16);
    client.wait_connected(WAIT).await.expect("connected");

    let joined = client
        .request_envelope(protocol::join("lobby"), WAIT)
        .await
        .expect("joined");
    assert_eq!(
        (joined.kind.as_str(), joined.room.as_deref()),
        ("joined", Some("lobby"))
    );

    let data = serde_json::json!({"text": "hi"});
    let ack = client
        .request_envelope(protocol::publish("lobby", &data).expect("publish"), WAIT)
        .await
        .expect("ack");
    assert_eq!(ack.kind, "ack");
    let msg = recv_within(&mut messages, WAIT, "room message").await;
    assert_eq!(msg.room.as_deref(), Some("lobby"));
    assert!(msg.from.as_deref().is_some_and(|f| f.starts_with("s-")));
    assert!(msg.timestamp.is_some());
    assert_eq!(msg.data, RoomMessage(data.clone()));

    let echo = client
        .request_envelope(protocol::echo(&data).expect("echo"), WAIT)
        .await
        .expect("echo");
    assert_eq!(echo.data_as::<serde_json::Value>().expect("data"), data);

    let err = client
        .request_envelope(protocol::publish("elsewhere", &1).expect("publish"), WAIT)
        .await
        .expect_err("not joined");
    assert!(
        matches!(&err, Error::Remote { code, .. } if code == protocol::codes::NOT_JOINED),
        "{err:?}"
    );

    server.shutdown().await.expect("shutdown");
    let closed = recv_until(&mut events, WAIT, "close 1001", |e| {
        matches!(e, Event::State(ConnectionState::Disconnected { .. }))
    })
    .await;
    match closed {
        Event::State(ConnectionState::Disconnected { code, .. }) => assert_eq!(code, 1001),
        other => panic!("{other:?}"),
    }
}
