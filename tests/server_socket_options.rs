//! Socket options of the server's `on_connect` hook: without the duplicate socket handle (one
//! descriptor per connection saved) and with `TCP_USER_TIMEOUT`, sessions work as usual and the
//! heartbeat still removes a silent client from its rooms.

mod common;

use std::time::Duration;

use actix_ws_manager::client::{connect, ConnectionState};
use actix_ws_manager::config::ClientConfig;
use actix_ws_manager::protocol;
use common::{start_server, test_config, WAIT};

/// With `keep_socket_handle(false)` and a `tcp_user_timeout`, the rooms protocol works, and a
/// client that never answers pings is still evicted by the heartbeat while a live one stays.
#[actix_rt::test]
async fn sessions_work_without_a_socket_handle_and_with_a_user_timeout() {
    let config = test_config()
        .keep_socket_handle(false)
        .tcp_user_timeout(Some(Duration::from_secs(5)))
        .heartbeat(Duration::from_millis(100), Duration::from_millis(300));
    let server = start_server(config);

    // The crate's client answers pings by itself.
    let live = connect(&server.url(), ClientConfig::default()).expect("client");
    live.wait_connected(WAIT).await.expect("connected");
    let joined = live
        .request_envelope(protocol::join("r"), WAIT)
        .await
        .expect("joined");
    assert_eq!(joined.kind, "joined");
    let ack = live
        .request_envelope(protocol::publish("r", &"hi").expect("publish"), WAIT)
        .await
        .expect("ack");
    assert_eq!(ack.kind, "ack");

    // A raw awc connection that is never polled never answers pings.
    let (_resp, silent) = awc::Client::new()
        .ws(server.url())
        .connect()
        .await
        .expect("silent client connects");
    assert!(
        server.rooms().wait_sessions(1, WAIT).await,
        "silent client not evicted"
    );
    let stats = server.rooms().stats().await.expect("stats");
    assert_eq!(stats.heartbeat_timeouts, 1, "{stats:?}");
    assert_eq!(live.state(), ConnectionState::Connected);
    drop(silent);
    live.close().await;
    server.shutdown().await.expect("shutdown");
}
