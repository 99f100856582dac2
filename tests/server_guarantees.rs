//! Server guarantees under load and hostile input: per-publisher order with the hub saturated,
//! every inbound path bounded, rate and per-address limits, and no panic from any config value.
//! Each test starts its own server on 127.0.0.1:0 and drives it with tokio-tungstenite clients.

mod common;

use std::collections::HashMap;
use std::time::Duration;

use actix_ws_manager::config::{RateLimit, ServerConfig, MAX_QUEUE};
use common::{start_server, test_config, WAIT};
use futures_util::{SinkExt, StreamExt};
use serde_json::Value;
use tokio_tungstenite::tungstenite::Message as TMessage;

type Raw =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

async fn connect(url: &str) -> Raw {
    tokio_tungstenite::connect_async(url)
        .await
        .expect("handshake")
        .0
}

/// The next text message as JSON (skipping control frames), within [`WAIT`].
async fn next_json<S>(ws: &mut tokio_tungstenite::WebSocketStream<S>) -> Value
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    for _ in 0..1000 {
        match tokio::time::timeout(WAIT, ws.next()).await {
            Ok(Some(Ok(TMessage::Text(t)))) => return serde_json::from_str(&t).expect("json"),
            Ok(Some(Ok(TMessage::Close(f)))) => panic!("closed: {f:?}"),
            Ok(Some(Ok(_))) => continue,
            other => panic!("expected a text message, got {other:?}"),
        }
    }
    panic!("no text message among 1000 frames");
}

/// Connect to the rooms endpoint, swallow the welcome, join `room`; answers the socket and the
/// session name (`from` of its publishes).
async fn member(url: &str, room: &str) -> (Raw, String) {
    let mut ws = connect(url).await;
    let welcome = next_json(&mut ws).await;
    let name = welcome["data"]["session"]
        .as_str()
        .expect("name")
        .to_owned();
    ws.send(TMessage::text(format!(
        r#"{{"type":"join","room":"{room}"}}"#
    )))
    .await
    .expect("join");
    assert_eq!(next_json(&mut ws).await["type"], "joined");
    (ws, name)
}

/// Read `expected` room messages and check that each publisher's sequence (`data` is
/// `[publisher, seq]`) is 0, 1, 2, ... with nothing missing or out of order. Answers the count
/// per publisher.
async fn read_in_order(
    mut rx: futures_util::stream::SplitStream<Raw>,
    expected: usize,
) -> HashMap<u64, u64> {
    let mut next: HashMap<u64, u64> = HashMap::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
    let mut seen = 0;
    while seen < expected {
        let frame = tokio::time::timeout_at(deadline, rx.next())
            .await
            .unwrap_or_else(|_| panic!("only {seen} of {expected} messages arrived"));
        let text = match frame {
            Some(Ok(TMessage::Text(t))) => t,
            Some(Ok(TMessage::Ping(_) | TMessage::Pong(_))) => continue,
            other => panic!("after {seen} messages: {other:?}"),
        };
        let v: Value = serde_json::from_str(&text).expect("json");
        if v["type"] != "message" {
            continue; // acks and other replies
        }
        let publisher = v["data"][0].as_u64().expect("publisher");
        let seq = v["data"][1].as_u64().expect("seq");
        let want = next.entry(publisher).or_insert(0);
        assert_eq!(seq, *want, "publisher {publisher}: out of order or missing");
        *want += 1;
        seen += 1;
    }
    next
}

/// 4 publishers x 20,000 messages, published as fast as the sockets take them, into one room of
/// 20 members, through a hub queue of 4 commands (saturated on purpose): every member receives
/// every publisher's sequence complete and strictly increasing, and the hub's queue never held
/// more than its bound. (Before the queue was FIFO, 25 % of messages arrived out of order under
/// this kind of load.)
#[actix_rt::test]
async fn per_publisher_order_holds_with_the_hub_saturated() {
    const PUBLISHERS: u64 = 4;
    const MEMBERS: usize = 20;
    const EACH: u64 = 20_000;
    let total = (PUBLISHERS * EACH) as usize;
    let config = test_config()
        .hub_queue(4)
        .session_queue(total + 16)
        .heartbeat(Duration::from_secs(60), Duration::from_secs(120));
    let server = start_server(config);
    let mut readers = Vec::new();
    let mut writers = Vec::new();
    for i in 0..MEMBERS {
        let (ws, _) = member(&server.url(), "r").await;
        let (tx, rx) = ws.split();
        readers.push(actix_rt::spawn(read_in_order(rx, total)));
        if (i as u64) < PUBLISHERS {
            writers.push(tx);
        }
    }
    for (p, mut tx) in writers.into_iter().enumerate() {
        actix_rt::spawn(async move {
            let msgs = (0..EACH).map(move |seq| {
                Ok(TMessage::text(format!(
                    r#"{{"type":"publish","room":"r","data":[{p},{seq}]}}"#
                )))
            });
            tx.send_all(&mut futures_util::stream::iter(msgs))
                .await
                .expect("publish");
            // Keep the write half (and so the session) open until the test ends.
            std::future::pending::<()>().await;
        });
    }
    for reader in readers {
        let counts = reader.await.expect("reader");
        assert_eq!(counts.len() as u64, PUBLISHERS);
        assert!(counts.values().all(|&n| n == EACH), "{counts:?}");
    }
    let stats = server.rooms().stats().await.expect("stats");
    assert_eq!(stats.published, PUBLISHERS * EACH);
    assert_eq!(stats.dropped, 0);
    assert!(
        stats.hub_queue_high_water <= 4,
        "hub queue bound broken: {stats:?}"
    );
    assert_eq!(stats.hub_queue_high_water, 4, "the hub was never saturated");
}

/// `Rooms::publish` from several tasks at once, through a saturated hub queue: each task's
/// messages reach every member in the order that task published them.
#[actix_rt::test]
async fn rooms_publish_from_many_tasks_keeps_each_tasks_order() {
    const TASKS: u64 = 4;
    const EACH: u64 = 3_000;
    let total = (TASKS * EACH) as usize;
    let server = start_server(test_config().hub_queue(2).session_queue(total + 16));
    let mut readers = Vec::new();
    let mut keep = Vec::new();
    for _ in 0..5 {
        let (ws, _) = member(&server.url(), "news").await;
        let (tx, rx) = ws.split();
        keep.push(tx);
        readers.push(actix_rt::spawn(read_in_order(rx, total)));
    }
    let mut tasks = Vec::new();
    for t in 0..TASKS {
        let rooms = server.rooms().clone();
        tasks.push(actix_rt::spawn(async move {
            for seq in 0..EACH {
                assert_eq!(
                    rooms
                        .publish_json("news", &[t, seq])
                        .await
                        .expect("publish"),
                    5
                );
            }
        }));
    }
    for t in tasks {
        t.await.expect("publisher task");
    }
    for reader in readers {
        let counts = reader.await.expect("reader");
        assert!(counts.values().all(|&n| n == EACH), "{counts:?}");
    }
}

/// The same through *full* member queues: 4 tasks x 3,000 `Rooms::publish` into a room of 6
/// members whose queues hold 32 frames and who read nothing until the publishing is over
/// (`DropNewest`). Every member gets what its queue took, each task's messages still strictly
/// in order (gaps are the drops), and nothing is lost uncounted: the members receive exactly
/// what the publishes reached, and reached + dropped is every copy published.
#[actix_rt::test]
async fn order_and_accounting_hold_through_full_member_queues() {
    const TASKS: u64 = 4;
    const EACH: u64 = 3_000;
    const MEMBERS: usize = 6;
    const QUEUE: usize = 32;
    let server = start_server(
        test_config()
            .hub_queue(2)
            .session_queue(QUEUE)
            .slow_consumer(actix_ws_manager::config::SlowConsumerPolicy::DropNewest)
            .heartbeat(Duration::from_secs(60), Duration::from_secs(120)),
    );
    let mut sockets = Vec::new();
    for _ in 0..MEMBERS {
        sockets.push(member(&server.url(), "full").await);
    }
    let mut tasks = Vec::new();
    for t in 0..TASKS {
        let rooms = server.rooms().clone();
        tasks.push(actix_rt::spawn(async move {
            let mut reached = 0;
            for seq in 0..EACH {
                reached += rooms
                    .publish_json("full", &[t, seq])
                    .await
                    .expect("publish");
            }
            reached
        }));
    }
    let mut reached = 0;
    for t in tasks {
        reached += t.await.expect("publisher task");
    }
    let stats = server.rooms().stats().await.expect("stats");
    let copies = TASKS as usize * EACH as usize * MEMBERS;
    assert!(
        stats.dropped > 0,
        "the member queues never filled: {stats:?}"
    );
    assert_eq!(reached + stats.dropped as usize, copies, "{stats:?}");
    assert!(stats.queue_high_water <= QUEUE as u64, "{stats:?}");

    // Now read: every member gets what its queue took, each task's sequence increasing.
    let (count_tx, mut count_rx) = tokio::sync::watch::channel(0usize);
    let count_tx = std::sync::Arc::new(count_tx);
    let mut keep = Vec::new();
    for (ws, _) in sockets {
        let (tx, mut rx) = ws.split();
        keep.push(tx);
        let count_tx = count_tx.clone();
        actix_rt::spawn(async move {
            let mut last: HashMap<u64, u64> = HashMap::new();
            while let Some(Ok(frame)) = rx.next().await {
                let TMessage::Text(text) = frame else {
                    continue;
                };
                let v: Value = serde_json::from_str(&text).expect("json");
                if v["type"] != "message" {
                    continue;
                }
                let (task, seq) = (v["data"][0].as_u64(), v["data"][1].as_u64());
                let (Some(task), Some(seq)) = (task, seq) else {
                    panic!("bad data: {v}")
                };
                if let Some(prev) = last.insert(task, seq) {
                    assert!(seq > prev, "task {task}: {seq} after {prev}");
                }
                count_tx.send_modify(|n| *n += 1);
            }
        });
    }
    tokio::time::timeout(WAIT, count_rx.wait_for(|&n| n >= reached))
        .await
        .expect("every message the queues took arrives")
        .expect("readers running");
    assert_eq!(*count_rx.borrow(), reached);
}

/// 50 clients flood joins and leaves (2,000 each) through a hub queue of 8: every one is
/// answered, the hub's queue never holds more than 8 commands, and afterwards no room is left.
#[actix_rt::test]
async fn join_leave_flood_keeps_the_hub_queue_bounded() {
    const CLIENTS: usize = 50;
    const EACH: usize = 2_000;
    let server = start_server(test_config().hub_queue(8));
    let mut tasks = Vec::new();
    for c in 0..CLIENTS {
        let mut ws = connect(&server.url()).await;
        next_json(&mut ws).await; // welcome
        tasks.push(actix_rt::spawn(async move {
            let (mut tx, mut rx) = ws.split();
            let msgs = (0..EACH).map(move |i| {
                let room = format!("room{}", (c + i / 2) % 7);
                let kind = if i % 2 == 0 { "join" } else { "leave" };
                Ok(TMessage::text(format!(
                    r#"{{"type":"{kind}","room":"{room}"}}"#
                )))
            });
            let send = async move {
                tx.send_all(&mut futures_util::stream::iter(msgs))
                    .await
                    .expect("flood");
                tx
            };
            let read = async {
                let mut replies = 0;
                while replies < EACH {
                    match tokio::time::timeout(WAIT, rx.next()).await {
                        Ok(Some(Ok(TMessage::Text(t)))) => {
                            assert!(t.contains("joined") || t.contains("left"), "{t}");
                            replies += 1;
                        }
                        Ok(Some(Ok(_))) => {}
                        other => panic!("after {replies} replies: {other:?}"),
                    }
                }
                replies
            };
            let (tx, replies) = tokio::join!(send, read);
            (tx, replies)
        }));
    }
    let mut keep = Vec::new();
    for t in tasks {
        let (tx, replies) = t.await.expect("client");
        assert_eq!(replies, EACH);
        keep.push(tx);
    }
    let stats = server.rooms().stats().await.expect("stats");
    assert!(stats.hub_queue_high_water <= 8, "{stats:?}");
    assert_eq!(stats.sessions, CLIENTS);
    assert_eq!(stats.rooms, 0, "every join was followed by its leave");
}

/// Rate limit: a burst passes, messages past it get `rate_limited` (with their id), and a
/// client that keeps going until twice the burst is closed with 1008; a client that waits for
/// the bucket to refill is served again.
#[actix_rt::test]
async fn rate_limit_refuses_then_closes_with_1008() {
    let config = test_config().rate_limit(Some(RateLimit::new(10, 5)));
    let server = start_server(config);

    let mut ws = connect(&server.url()).await;
    next_json(&mut ws).await; // welcome
    for id in 0..5 {
        ws.send(TMessage::text(format!(r#"{{"type":"ping","id":{id}}}"#)))
            .await
            .expect("send");
        let v = next_json(&mut ws).await;
        assert_eq!(
            (v["type"].as_str(), v["id"].as_u64()),
            (Some("pong"), Some(id))
        );
    }
    let mut refused = 0;
    let mut code = None;
    for id in 5..40u64 {
        if ws
            .send(TMessage::text(format!(r#"{{"type":"ping","id":{id}}}"#)))
            .await
            .is_err()
        {
            break;
        }
        match tokio::time::timeout(WAIT, ws.next()).await.expect("answer") {
            Some(Ok(TMessage::Text(t))) => {
                let v: Value = serde_json::from_str(&t).expect("json");
                assert_eq!(v["type"], "error", "{v}");
                assert_eq!(v["data"]["code"], "rate_limited");
                assert_eq!(v["id"].as_u64(), Some(id));
                refused += 1;
            }
            Some(Ok(TMessage::Close(f))) => {
                code = f.map(|f| u16::from(f.code));
                break;
            }
            other => panic!("{other:?}"),
        }
    }
    assert_eq!(code, Some(1008), "after {refused} refusals");
    assert!(
        (5..10).contains(&refused),
        "{refused} refusals before the close"
    );
    let stats = server.rooms().stats().await.expect("stats");
    assert_eq!(stats.rate_limited, refused);
    assert_eq!(stats.rate_limit_disconnects, 1);

    // Waiting is the thing under test here: the bucket refills at 10 per second.
    let mut calm = connect(&server.url()).await;
    next_json(&mut calm).await;
    for round in 0..2 {
        for id in 0..5 {
            calm.send(TMessage::text(format!(r#"{{"type":"ping","id":{id}}}"#)))
                .await
                .expect("send");
            assert_eq!(next_json(&mut calm).await["type"], "pong", "round {round}");
        }
        tokio::time::sleep(Duration::from_millis(600)).await;
    }
}

/// `max_connections_per_ip`: past it the upgrade gets HTTP 429; when a session ends its place
/// is free again.
#[actix_rt::test]
async fn per_ip_limit_refuses_with_429_and_frees_places() {
    let server = start_server(test_config().max_connections_per_ip(Some(2)));
    let a = connect(&server.url()).await;
    let _b = connect(&server.url()).await;
    match tokio_tungstenite::connect_async(server.url()).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(resp)) => {
            assert_eq!(resp.status().as_u16(), 429)
        }
        other => panic!("third connection from one address: {:?}", other.map(|_| ())),
    }
    drop(a);
    assert!(server.rooms().wait_sessions(1, WAIT).await);
    let _c = connect(&server.url()).await;
    assert_eq!(
        server.rooms().stats().await.expect("stats").per_ip_refusals,
        1
    );
}

/// Extreme configuration values (`Duration::MAX`, the largest queues, `usize::MAX` limits) start
/// a working server: no panic in timers, queues or the close path.
#[actix_rt::test]
async fn extreme_config_values_do_not_panic() {
    let config = ServerConfig::default()
        .heartbeat(Duration::MAX, Duration::MAX)
        .close_timeout(Duration::MAX)
        .session_queue(MAX_QUEUE)
        .session_queue_bytes(usize::MAX)
        .hub_queue(MAX_QUEUE)
        .max_sessions(usize::MAX)
        .max_rooms_per_session(usize::MAX)
        .max_room_name_len(usize::MAX)
        .max_message_size(usize::MAX)
        .tcp_send_buffer(Some(usize::MAX))
        .tcp_user_timeout(Some(Duration::MAX))
        .rate_limit(Some(RateLimit::new(u32::MAX, u32::MAX)))
        .max_connections_per_ip(Some(usize::MAX));
    let server = start_server(config);
    let (mut ws, _) = member(&server.url(), "x").await;
    ws.send(TMessage::text(
        r#"{"type":"publish","room":"x","data":1,"id":9}"#,
    ))
    .await
    .expect("publish");
    let mut kinds = vec![
        next_json(&mut ws).await["type"].clone(),
        next_json(&mut ws).await["type"].clone(),
    ];
    kinds.sort_by_key(|k| k.to_string());
    assert_eq!(kinds, ["ack", "message"]);
    ws.close(None).await.expect("close");
    assert!(server.rooms().wait_sessions(0, WAIT).await);
    server.shutdown().await.expect("shutdown");
}

/// Control before data: a client that stopped reading while its queue filled (and overflowed,
/// `DropNewest`) still gets the pong for its ping, ahead of the messages still queued for it,
/// instead of the pong being dropped with them.
#[actix_rt::test]
async fn pong_goes_ahead_of_a_full_queue() {
    use actix_ws_manager::config::SlowConsumerPolicy;
    let config = test_config()
        .session_queue(64)
        .slow_consumer(SlowConsumerPolicy::DropNewest);
    let server = start_server(config);
    let rooms = server.rooms().clone();
    // A witness in room "w" tells us when the stalled session has handled the frames before it.
    let (mut witness, _) = member(&server.url(), "w").await;
    // The stalled client: a tiny receive buffer, joins "r" and "w", then stops reading.
    let sock = tokio::net::TcpSocket::new_v4().expect("socket");
    sock.set_recv_buffer_size(4096).expect("rcvbuf");
    let tcp = sock.connect(server.local_addr()).await.expect("connect");
    let (mut ws, _) = tokio_tungstenite::client_async(server.url(), tcp)
        .await
        .expect("handshake");
    next_json(&mut ws).await; // welcome
    for room in ["r", "w"] {
        ws.send(TMessage::text(format!(
            r#"{{"type":"join","room":"{room}"}}"#
        )))
        .await
        .expect("join");
        assert_eq!(next_json(&mut ws).await["type"], "joined");
    }
    let pad = "p".repeat(4096);
    for _ in 0..2_000 {
        rooms.publish_json("r", &pad).await.expect("publish");
    }
    assert!(
        rooms.stats().await.expect("stats").dropped > 0,
        "the queue never filled"
    );
    ws.send(TMessage::Ping(b"still there?".to_vec().into()))
        .await
        .expect("ping");
    ws.send(TMessage::text(
        r#"{"type":"publish","room":"w","data":"after-ping"}"#,
    ))
    .await
    .expect("marker");
    loop {
        let v = next_json(&mut witness).await;
        if v["data"] == "after-ping" {
            break;
        }
    }
    // Now read: the pong must come, and ahead of messages that were queued before it.
    let mut data = 0;
    let mut pong_at = None;
    let deadline = tokio::time::Instant::now() + WAIT;
    for _ in 0..10_000 {
        match tokio::time::timeout_at(deadline, ws.next()).await {
            Ok(Some(Ok(TMessage::Pong(p)))) if &p[..] == b"still there?" => pong_at = Some(data),
            Ok(Some(Ok(TMessage::Text(_)))) => {
                data += 1;
                if pong_at.is_some_and(|at| data > at) {
                    break; // a queued message came after the pong
                }
            }
            Ok(Some(Ok(_))) => {}
            other => panic!("after {data} messages, pong at {pong_at:?}: {other:?}"),
        }
    }
    let at = pong_at.expect("the pong never came");
    assert!(data > at, "nothing queued came after the pong");
}
