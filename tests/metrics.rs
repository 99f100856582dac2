//! Prometheus metrics: the server's `/metrics` mounted into an App, a `Manager`'s figures in a
//! registry, and both with the application's own metrics in one registry. Every page must parse
//! line by line and list exactly the metrics the `metrics` module documents; the figures must
//! move by what real traffic did. Each test starts its own servers on 127.0.0.1:0.

mod common;

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use actix_web::{App, HttpServer};
use actix_ws_manager::client::{Manager, ManagerConfig};
use actix_ws_manager::config::{HeartbeatConfig, RateLimit, SlowConsumerPolicy};
use actix_ws_manager::metrics::{self, prometheus_client};
use actix_ws_manager::server::Rooms;
use actix_ws_manager::testkit::{StateRecorder, TestServer};
use common::prom::{documented, get, histogram_count, parse, scrape, Samples};
use common::{client_test_config, test_config, Peer, WAIT};
use futures_util::{SinkExt, StreamExt};
use prometheus_client::registry::Registry;
use tokio_tungstenite::tungstenite::Message as TMessage;

/// Messages a session may send at once in the server test; publishes stay under it.
const BURST: u32 = 32;
/// Publishes in the server test.
const N: usize = 20;
/// Messages past the burst that the rate-limited client sends.
const OVER: usize = 5;
/// Session queue in the server test: room for every frame a test client has in flight (so none
/// is dropped while it is not reading), small enough for a stuck client to fill soon.
const QUEUE: usize = 64;

/// Start an actix-web server on 127.0.0.1:0 whose App is configured by `app`; answers its
/// address and handle.
fn start_app<F>(rooms: &Rooms, app: F) -> (SocketAddr, actix_web::dev::ServerHandle)
where
    F: Fn(&mut actix_web::web::ServiceConfig) + Clone + Send + 'static,
{
    let http = HttpServer::new(move || App::new().configure(app.clone()))
        .on_connect(rooms.on_connect())
        .workers(1)
        .disable_signals()
        .bind("127.0.0.1:0")
        .expect("bind");
    let addr = http.addrs()[0];
    let running = http.run();
    let handle = running.handle();
    actix_rt::spawn(running);
    (addr, handle)
}

/// The `# TYPE` names and types of a page, to compare with the documented table.
fn typed(types: &std::collections::BTreeMap<String, String>) -> BTreeSet<(String, String)> {
    types.iter().map(|(n, t)| (n.clone(), t.clone())).collect()
}

/// Join `room` and wait for `joined`.
async fn join(peer: &mut Peer, room: &str) -> usize {
    let text = format!(r#"{{"type":"join","room":"{room}","id":1}}"#);
    peer.text(&text).await;
    assert_eq!(peer.json().await["type"], "joined");
    text.len()
}

/// A client with a 4 KiB receive buffer that joins `room` and then never reads again, so that
/// (with the server's 16 KiB send buffer) its queue fills after a few hundred kilobytes.
async fn stuck_peer(
    addr: SocketAddr,
    room: &str,
) -> tokio_tungstenite::WebSocketStream<tokio::net::TcpStream> {
    let sock = tokio::net::TcpSocket::new_v4().expect("socket");
    sock.set_recv_buffer_size(4096).expect("rcvbuf");
    let tcp = sock.connect(addr).await.expect("connect");
    let url = format!("ws://{addr}/ws");
    let (mut ws, _) = tokio_tungstenite::client_async(url, tcp)
        .await
        .expect("handshake");
    let join = format!(r#"{{"type":"join","room":"{room}","id":1}}"#);
    ws.send(TMessage::text(join)).await.expect("join");
    for _ in 0..2 {
        // welcome, joined
        match tokio::time::timeout(WAIT, ws.next()).await {
            Ok(Some(Ok(TMessage::Text(_)))) => {}
            other => panic!("expected welcome and joined, got {other:?}"),
        }
    }
    ws
}

/// An echo round trip: its answer comes after everything the server sent before it (the
/// welcome, the joined of an on-connect join), so once it is back nothing is on its way.
async fn echo(client: &actix_ws_manager::client::Client) {
    let out = actix_ws_manager::protocol::Echo(serde_json::json!("sync"));
    let back: actix_ws_manager::protocol::Echo = client.request(&out, WAIT).await.expect("echo");
    assert_eq!(back, out);
}

/// Every figure of the page equals the struct's, read while nothing moves.
fn assert_page_is_the_struct(page: &Samples, rooms: &Rooms) {
    let m = rooms.metrics();
    let pairs = [
        ("wsm_server_sessions", m.sessions as u64),
        ("wsm_server_rooms", m.rooms),
        ("wsm_server_messages_in_total", m.messages_in),
        ("wsm_server_bytes_in_total", m.bytes_in),
        ("wsm_server_messages_out_total", m.messages_out),
        ("wsm_server_bytes_out_total", m.bytes_out),
        ("wsm_server_published_total", m.published),
        (
            "wsm_server_slow_consumer_drops_total",
            m.slow_consumer_drops,
        ),
        (
            "wsm_server_slow_consumer_disconnects_total",
            m.slow_consumer_disconnects,
        ),
        ("wsm_server_heartbeat_timeouts_total", m.heartbeat_timeouts),
        ("wsm_server_rate_limited_total", m.rate_limited),
        (
            "wsm_server_rate_limit_disconnects_total",
            m.rate_limit_disconnects,
        ),
        ("wsm_server_per_ip_refusals_total", m.per_ip_refusals),
        (
            "wsm_server_backplane_publish_errors_total",
            m.backplane_publish_errors,
        ),
        (
            "wsm_server_backplane_reconnects_total",
            m.backplane_reconnects,
        ),
        ("wsm_server_backplane_dropped_total", m.backplane_dropped),
        ("wsm_server_backplane_received_total", m.backplane_received),
        ("wsm_server_backplane_channels", m.backplane_channels),
        (
            "wsm_server_session_queue_high_water",
            m.session_queue_high_water,
        ),
        (
            "wsm_server_session_queue_bytes_high_water",
            m.session_queue_bytes_high_water,
        ),
        ("wsm_server_hub_queue_high_water", m.hub_queue_high_water),
        (
            "wsm_server_fanout_latency_seconds_count",
            m.fanout_latency.count,
        ),
    ];
    for (series, value) in pairs {
        assert_eq!(get(page, series), value as f64, "{series}");
    }
}

/// Rooms for the server test (rate limit, drop-newest slow consumers, a small queue and send
/// buffer) with `/ws` and `/metrics` mounted in one App; answers rooms, address and handle.
fn start_metered_rooms() -> (Rooms, SocketAddr, actix_web::dev::ServerHandle) {
    let config = test_config()
        .rate_limit(Some(RateLimit::new(1, BURST)))
        .slow_consumer(SlowConsumerPolicy::DropNewest)
        .session_queue(QUEUE)
        .tcp_send_buffer(Some(16 * 1024));
    let rooms = Rooms::start(config).expect("rooms");
    let app_rooms = rooms.clone();
    let (addr, http) = start_app(&rooms, move |cfg| {
        app_rooms.mount("/ws")(cfg);
        app_rooms.mount_metrics("/metrics")(cfg);
    });
    (rooms, addr, http)
}

/// The page before any traffic: the documented server metrics, no session, an empty histogram.
async fn assert_fresh_page(page: &str, rooms: &Rooms) {
    let (m, types) = scrape(page).await;
    assert_eq!(typed(&types), documented("wsm_server_"));
    assert_eq!(get(&m, "wsm_server_sessions"), 0.0);
    assert_eq!(
        histogram_count(&m, "wsm_server_fanout_latency_seconds"),
        0.0
    );
    assert_page_is_the_struct(&m, rooms);
}

/// `a` publishes N messages with ids into "lobby"; answers the bytes sent.
async fn publish_n(a: &mut Peer) -> usize {
    let mut bytes_in = 0;
    for i in 0..N {
        let text = format!(
            r#"{{"type":"publish","room":"lobby","id":{},"data":{i}}}"#,
            i + 2
        );
        a.text(&text).await;
        bytes_in += text.len();
    }
    bytes_in
}

/// The publisher gets an ack and a copy of each publish; the other member gets every copy in
/// order.
async fn assert_every_copy_arrives(a: &mut Peer, b: &mut Peer) {
    for _ in 0..2 * N {
        let got = a.json().await;
        assert!(got["type"] == "ack" || got["type"] == "message", "{got}");
    }
    for i in 0..N {
        assert_eq!(b.json().await["data"], i);
    }
}

/// The page after the lobby traffic: two sessions in one room, N publishes, `bytes_in` in.
fn assert_lobby_page(m: &Samples, bytes_in: usize, rooms: &Rooms) {
    assert_eq!(get(m, "wsm_server_sessions"), 2.0);
    assert_eq!(get(m, "wsm_server_rooms"), 1.0);
    assert_eq!(get(m, "wsm_server_published_total"), N as f64);
    assert_eq!(
        histogram_count(m, "wsm_server_fanout_latency_seconds"),
        N as f64
    );
    assert!(get(m, "wsm_server_fanout_latency_seconds_sum") > 0.0);
    assert_eq!(get(m, "wsm_server_messages_in_total"), (2 + N) as f64);
    assert_eq!(get(m, "wsm_server_bytes_in_total"), bytes_in as f64);
    // 2 welcomes, 2 joined, N copies to each member, N acks.
    assert_eq!(get(m, "wsm_server_messages_out_total"), (4 + 3 * N) as f64);
    assert!(get(m, "wsm_server_bytes_out_total") > bytes_in as f64);
    assert_eq!(get(m, "wsm_server_rate_limited_total"), 0.0);
    assert_page_is_the_struct(m, rooms);
}

/// The page after filling the stuck member's queue: `(publishes, drops)` moved since `before`,
/// the queue's high-water marks at its limit.
fn assert_slow_page(
    m: &Samples,
    before: &Samples,
    (publishes, drops): (usize, usize),
    payload_len: usize,
    rooms: &Rooms,
) {
    let moved = |name: &str| get(m, name) - get(before, name);
    assert_eq!(moved("wsm_server_slow_consumer_drops_total"), drops as f64);
    assert_eq!(moved("wsm_server_published_total"), publishes as f64);
    assert_eq!(get(m, "wsm_server_rooms"), 2.0);
    assert_eq!(get(m, "wsm_server_session_queue_high_water"), QUEUE as f64);
    assert!(
        get(m, "wsm_server_session_queue_bytes_high_water") >= (QUEUE * payload_len) as f64,
        "the full queue's bytes"
    );
    assert_eq!(
        histogram_count(m, "wsm_server_fanout_latency_seconds"),
        get(m, "wsm_server_published_total")
    );
    assert_page_is_the_struct(m, rooms);
}

/// `Rooms::mount_metrics` in an App next to the rooms: the page parses, lists exactly the
/// documented server metrics, and follows real traffic exactly. Two clients and N publishes
/// move sessions to 2, rooms to 1, published and the fan-out histogram's count by N, messages
/// in by the joins and publishes (bytes in by their exact length), messages out by welcomes,
/// joins, 2N copies and N acks; a client past its burst moves rate_limited by the errors it
/// got; server-code publishes into a stuck client's room move slow_consumer_drops by the
/// publishes that reached nobody; after shutdown sessions and rooms are back to 0. The page
/// equals `Rooms::metrics()` each time.
#[actix_rt::test]
async fn server_metrics_mounted_in_an_app_follow_real_traffic() {
    let (rooms, addr, http) = start_metered_rooms();
    let (ws, page) = (format!("ws://{addr}/ws"), format!("http://{addr}/metrics"));

    assert_fresh_page(&page, &rooms).await;

    // Two members of "lobby"; A publishes N messages with ids.
    let (mut a, _) = Peer::rooms(&ws).await;
    let (mut b, _) = Peer::rooms(&ws).await;
    let mut bytes_in = join(&mut a, "lobby").await + join(&mut b, "lobby").await;
    bytes_in += publish_n(&mut a).await;
    assert_every_copy_arrives(&mut a, &mut b).await;
    let (m, _) = scrape(&page).await;
    assert_lobby_page(&m, bytes_in, &rooms);
    let before = m;

    // C goes OVER messages past its burst: each refusal it is told of is counted once.
    let (mut c, _) = Peer::rooms(&ws).await;
    let total = BURST as usize + OVER;
    for i in 0..total {
        c.text(&format!(r#"{{"type":"ping","id":{i}}}"#)).await;
    }
    let mut refused = 0;
    for _ in 0..total {
        let got = c.json().await;
        if got["type"] == "error" {
            assert_eq!(got["data"]["code"], "rate_limited", "{got}");
            refused += 1;
        }
    }
    assert!(
        refused >= 1,
        "past the burst of {BURST}, some pings are refused"
    );
    let (m, _) = scrape(&page).await;
    assert_eq!(get(&m, "wsm_server_rate_limited_total"), refused as f64);
    let moved = |name: &str| get(&m, name) - get(&before, name);
    assert_eq!(moved("wsm_server_messages_in_total"), total as f64);
    // C's welcome and one answer (pong or error) per ping.
    assert_eq!(moved("wsm_server_messages_out_total"), (1 + total) as f64);
    assert_eq!(get(&m, "wsm_server_sessions"), 3.0);
    assert_page_is_the_struct(&m, &rooms);
    let before = m;

    // A stuck member of "slow": server-code publishes fill its queue, then each one that reaches
    // nobody is a dropped frame.
    let stuck = stuck_peer(addr, "slow").await;
    let payload = "x".repeat(4096);
    let (mut publishes, mut drops) = (0, 0);
    while drops < 3 {
        assert!(publishes < 5_000, "the stuck member's queue never filled");
        publishes += 1;
        if rooms.publish_json("slow", &payload).await.expect("publish") == 0 {
            drops += 1;
        }
    }
    let (m, _) = scrape(&page).await;
    assert_slow_page(&m, &before, (publishes, drops), payload.len(), &rooms);

    drop((stuck, a, b, c));
    rooms.shutdown().await.expect("shutdown");
    assert!(rooms.wait_sessions(0, WAIT).await, "every session ended");
    // Through the hub's queue: every session's leaving has been handled.
    rooms.stats().await.expect("stats");
    let (m, _) = scrape(&page).await;
    assert_eq!(get(&m, "wsm_server_sessions"), 0.0);
    assert_eq!(get(&m, "wsm_server_rooms"), 0.0);
    assert_page_is_the_struct(&m, &rooms);
    http.stop(true).await;
}

/// Three connections `feed-0..2` of `manager` to `url`, each connected, in "lobby" and past an
/// echo round trip; answers them with their state recorders.
async fn connect_feeds(
    manager: &Manager,
    url: &str,
) -> Vec<(StateRecorder, actix_ws_manager::client::Client)> {
    let mut feeds = Vec::new();
    for i in 0..3 {
        let client = manager
            .connect(format!("feed-{i}"), url)
            .await
            .expect("connect");
        feeds.push((StateRecorder::attach(&client), client));
    }
    for (recorder, client) in &mut feeds {
        recorder.wait_connected(WAIT).await.expect("connected");
        client.join("lobby").await.expect("join");
        echo(client).await;
    }
    feeds
}

/// The connections gauge shows 3 connected and none in any other state.
fn assert_only_three_connected(m: &Samples) {
    assert_eq!(get(m, r#"wsm_client_connections{state="connected"}"#), 3.0);
    for state in [
        "connecting",
        "disconnected",
        "reconnecting",
        "failed",
        "closed",
    ] {
        let series = format!("wsm_client_connections{{state=\"{state}\"}}");
        assert_eq!(get(m, &series), 0.0, "{series}");
    }
}

/// A `Manager` with three connections: its registry shows `connected` 3 and no reconnects;
/// after the server restarts, `reconnects_total` 3 and `connected` 3 again; with the heartbeat
/// on, the RTT gauges cover the 3 connections (mean <= max); the page lists exactly the
/// documented client metrics. Closing a connection takes it out of `connected` but not out of
/// the counters, which never go down (while `ManagerStats`, which sums tracked connections,
/// does).
#[actix_rt::test]
async fn manager_metrics_show_connections_reconnects_and_rtt() {
    let mut server = TestServer::start(test_config()).expect("server");
    let heartbeat = HeartbeatConfig::new(Duration::from_millis(50), Duration::from_secs(5));
    let config = ManagerConfig::default()
        .arbiters(Some(1))
        .connect_rate(None)
        .client(client_test_config().heartbeat(heartbeat));
    let manager = Manager::new(config).expect("manager");
    let mut registry = Registry::default();
    manager.register_metrics(&mut registry);
    let page = || parse(&metrics::render(&registry).expect("render"));

    let mut feeds = connect_feeds(&manager, &server.url()).await;
    let (m, _) = page();
    assert_only_three_connected(&m);
    assert_eq!(get(&m, "wsm_client_reconnects_total"), 0.0);
    // Each got its welcome, its joined and its echo; each sent its echo (a join is the
    // client's own on-connect traffic, not counted).
    assert_eq!(get(&m, "wsm_client_messages_in_total"), 9.0);
    assert_eq!(get(&m, "wsm_client_messages_out_total"), 3.0);

    server.restart().await.expect("restart");
    for (recorder, client) in &mut feeds {
        recorder.wait_disconnected(WAIT).await.expect("lost");
        recorder.wait_connected(WAIT).await.expect("back");
        echo(client).await;
    }
    // The heartbeat's first pongs: a bounded wait for a figure nothing else signals.
    let deadline = tokio::time::Instant::now() + WAIT;
    while manager.stats().rtt_connections < 3 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{:?}",
            manager.stats()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let (m, types) = page();
    assert_eq!(typed(&types), documented("wsm_client_"));
    assert_eq!(get(&m, r#"wsm_client_connections{state="connected"}"#), 3.0);
    assert_eq!(get(&m, "wsm_client_reconnects_total"), 3.0);
    assert_eq!(get(&m, "wsm_client_rtt_connections"), 3.0);
    let mean = get(&m, "wsm_client_smoothed_rtt_mean_seconds");
    let max = get(&m, "wsm_client_smoothed_rtt_max_seconds");
    assert!(
        0.0 < mean && mean <= max && max < 5.0,
        "mean {mean}, max {max}"
    );

    let tracked_before = manager.stats();
    assert!(manager.close("feed-0").await);
    let (after, _) = page();
    assert_eq!(
        get(&after, r#"wsm_client_connections{state="connected"}"#),
        2.0
    );
    for name in [
        "wsm_client_messages_in_total",
        "wsm_client_bytes_in_total",
        "wsm_client_messages_out_total",
        "wsm_client_bytes_out_total",
        "wsm_client_reconnects_total",
    ] {
        assert_eq!(get(&after, name), get(&m, name), "{name} after a close");
    }
    assert!(manager.stats().messages_in < tracked_before.messages_in);
    manager.shutdown().await;
}

/// One registry of the application's: its own counter, the server's metrics under a prefix and
/// a manager's, served by `metrics::mount` in the same App as the rooms.
#[actix_rt::test]
async fn one_registry_serves_the_apps_the_servers_and_a_managers_metrics() {
    let rooms = Rooms::start(test_config()).expect("rooms");
    let manager = Manager::new(
        ManagerConfig::default()
            .arbiters(Some(1))
            .client(client_test_config()),
    )
    .expect("manager");
    let mut registry = Registry::default();
    let requests = prometheus_client::metrics::counter::Counter::<u64>::default();
    registry.register("app_requests", "Requests the app served", requests.clone());
    rooms.register_metrics(registry.sub_registry_with_prefix("edge"));
    manager.register_metrics(&mut registry);
    let registry = Arc::new(registry);
    let app_rooms = rooms.clone();
    let (addr, http) = start_app(&rooms, move |cfg| {
        app_rooms.mount("/ws")(cfg);
        metrics::mount("/metrics", registry.clone())(cfg);
    });

    requests.inc();
    let client = manager
        .connect("self", &format!("ws://{addr}/ws"))
        .await
        .expect("connect");
    client.wait_connected(WAIT).await.expect("connected");
    let (m, _) = scrape(&format!("http://{addr}/metrics")).await;
    assert_eq!(get(&m, "app_requests_total"), 1.0);
    assert_eq!(get(&m, "edge_wsm_server_sessions"), 1.0);
    assert_eq!(get(&m, r#"wsm_client_connections{state="connected"}"#), 1.0);
    assert!(!m.contains_key("wsm_server_sessions"), "the prefix applies");

    manager.shutdown().await;
    rooms.shutdown().await.expect("shutdown");
    http.stop(true).await;
}
