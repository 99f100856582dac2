//! Heartbeat and slow consumers: silent clients are disconnected in time, a client that stops
//! reading costs at most its bounded queue and is handled per policy, and nobody else waits for
//! it. Each test starts its own server on 127.0.0.1:0.

mod common;

use std::time::{Duration, Instant};

use actix_ws_manager::config::SlowConsumerPolicy;
use actix_ws_manager::testkit::TestServer;

/// The kit's server: rooms at `/ws`, echo at `/echo`, on 127.0.0.1.
fn start_server(config: actix_ws_manager::config::ServerConfig) -> TestServer {
    TestServer::start(config).expect("server starts")
}
use common::{test_config, Peer, WAIT};
use futures_util::{SinkExt, StreamExt};
use tokio::io::AsyncReadExt;
use tokio_tungstenite::tungstenite::Message as TMessage;
use tokio_tungstenite::WebSocketStream;

type Raw = WebSocketStream<tokio::net::TcpStream>;

/// The server's per-connection kernel send buffer in these tests, so that a stuck reader stalls
/// after a few hundred kilobytes rather than after the kernel's autotuned megabytes.
const SEND_BUFFER: usize = 16 * 1024;

/// A tungstenite peer with a tiny TCP receive buffer, so that once it stops reading the server's
/// writes to it stall quickly. It joins `room`, then the caller simply never reads again.
async fn stuck_peer(url: &str, addr: std::net::SocketAddr, room: &str) -> Raw {
    let sock = tokio::net::TcpSocket::new_v4().expect("socket");
    sock.set_recv_buffer_size(4096).expect("rcvbuf");
    let tcp = sock.connect(addr).await.expect("connect");
    let (mut ws, _) = tokio_tungstenite::client_async(url, tcp)
        .await
        .expect("handshake");
    let welcome = next_text(&mut ws).await;
    assert!(welcome.contains("welcome"), "{welcome}");
    ws.send(TMessage::text(format!(
        r#"{{"type":"join","room":"{room}"}}"#
    )))
    .await
    .expect("join");
    let joined = next_text(&mut ws).await;
    assert!(joined.contains("joined"), "{joined}");
    ws
}

async fn next_text(ws: &mut Raw) -> String {
    loop {
        match tokio::time::timeout(WAIT, ws.next()).await {
            Ok(Some(Ok(TMessage::Text(t)))) => return t.to_string(),
            Ok(Some(Ok(_))) => continue,
            other => panic!("expected a text message, got {other:?}"),
        }
    }
}

/// Read whatever the server still sends until the connection ends; panics if it does not end
/// within [`WAIT`]. Answers the close code if a close frame made it through.
async fn drain_until_closed(ws: &mut Raw) -> Option<u16> {
    let deadline = tokio::time::Instant::now() + WAIT;
    for _ in 0..1_000_000 {
        match tokio::time::timeout_at(deadline, ws.next()).await {
            Err(_) => panic!("connection of the stuck client was never closed"),
            Ok(Some(Ok(TMessage::Close(frame)))) => return frame.map(|f| u16::from(f.code)),
            Ok(Some(Ok(_))) => continue,
            Ok(Some(Err(_))) | Ok(None) => return None,
        }
    }
    panic!("more than a million frames from a bounded queue");
}

/// Two healthy members: `publisher` publishes `count` numbered messages of `pad` bytes in batches
/// of `batch`; both must receive each one, in order, before the next batch. Stops early when
/// `stop` says so after a batch. Answers how many were published.
async fn flood(
    publisher: &mut Peer,
    receiver: &mut Peer,
    count: usize,
    batch: usize,
    pad: usize,
    mut stop: impl AsyncFnMut() -> bool,
) -> usize {
    let padding = "x".repeat(pad);
    let mut seq = 0;
    while seq < count {
        for k in 0..batch {
            publisher
                .text(&format!(
                    r#"{{"type":"publish","room":"flood","data":{{"seq":{},"pad":"{padding}"}}}}"#,
                    seq + k
                ))
                .await;
        }
        for peer in [&mut *publisher, &mut *receiver] {
            for k in 0..batch {
                let m = peer.json().await;
                assert_eq!(m["data"]["seq"], seq + k, "every message, in order");
            }
        }
        seq += batch;
        if stop().await {
            break;
        }
    }
    seq
}

/// A client that never answers pings (it reads, so it is not stalled) is disconnected within
/// the timeout plus one interval, with close 1001 on the wire; a client that answers stays.
#[actix_rt::test]
async fn silent_client_is_disconnected_within_timeout_plus_interval() {
    let interval = Duration::from_millis(100);
    let timeout = Duration::from_millis(300);
    let mut server = start_server(test_config().heartbeat(interval, timeout));

    // The server's clock starts during the handshake: the lower bound is measured from before
    // it, the upper bound from after it.
    let before_handshake = Instant::now();
    let tcp = tokio::net::TcpStream::connect(server.addr())
        .await
        .expect("tcp");
    let (ws, _) = tokio_tungstenite::client_async(server.url(), tcp)
        .await
        .expect("handshake");
    let start = Instant::now();
    // From here on, raw bytes: read everything, answer nothing.
    let mut tcp = ws.into_inner();
    let mut seen = Vec::new();
    let mut buf = [0u8; 4096];
    let is_close_1001 = |w: &[u8]| w[0] == 0x88 && w[2..] == [0x03, 0xE9];
    let mut close_at = None;
    let mut close_since_before = Duration::ZERO;
    loop {
        match tokio::time::timeout(WAIT, tcp.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => break,
            Ok(Ok(n)) => seen.extend_from_slice(&buf[..n]),
            Err(_) => panic!("silent client never disconnected"),
        }
        if close_at.is_none() && seen.windows(4).any(is_close_1001) {
            close_at = Some(start.elapsed());
            close_since_before = before_handshake.elapsed();
        }
    }
    let closed_at = start.elapsed();
    // Pings were sent (0x89, empty) and the close frame carries 1001 (0x03E9).
    assert!(seen.windows(2).any(|w| w == [0x89, 0x00]), "no ping seen");
    let close_at = close_at.unwrap_or_else(|| panic!("no close 1001 in {seen:x?}"));
    // The server decides (and says so) within timeout + interval; a little slack for scheduling.
    assert!(
        close_since_before >= timeout,
        "disconnected too early: {close_since_before:?} after the connect began"
    );
    assert!(
        close_at <= timeout + interval + Duration::from_millis(100),
        "disconnected late: {close_at:?}"
    );
    // Then the connection itself is gone at the latest `close_timeout` later (the socket is cut).
    let close_timeout = server.rooms().expect("running").config().close_timeout;
    assert!(
        closed_at <= close_at + close_timeout + Duration::from_millis(200),
        "socket not cut: {closed_at:?}"
    );
    assert_eq!(server.stats().await.expect("stats").heartbeat_timeouts, 1);

    // A client that answers pings (awc, while it reads) outlives two timeouts.
    let (mut polite, _) = Peer::rooms(&server.url()).await;
    let quiet = tokio::time::timeout(timeout * 2, polite.frame()).await;
    assert!(quiet.is_err(), "polite client got {quiet:?}");
    polite.text(r#"{"type":"ping"}"#).await;
    assert_eq!(polite.json().await["type"], "pong");
    server.stop().await.expect("stop");
}

/// A member that stops reading while others publish ~2.4 MB (far more than its queue, the
/// writer's channel and a 16 KiB kernel send buffer hold): its queue never exceeds the bound,
/// it is disconnected (policy `Disconnect`, counted, socket closed), and the other members get
/// every message in order.
#[actix_rt::test]
async fn stuck_reader_is_disconnected_and_others_get_everything() {
    let queue = 16;
    let mut server = start_server(
        test_config()
            .session_queue(queue)
            .tcp_send_buffer(Some(SEND_BUFFER)),
    );
    let rooms = server.rooms().expect("running").clone();
    let mut stuck = stuck_peer(&server.url(), server.addr(), "flood").await;
    let (mut publisher, _) = Peer::rooms(&server.url()).await;
    let (mut receiver, _) = Peer::rooms(&server.url()).await;
    for p in [&mut publisher, &mut receiver] {
        p.text(r#"{"type":"join","room":"flood"}"#).await;
        assert_eq!(p.json().await["type"], "joined");
    }

    let sent = flood(&mut publisher, &mut receiver, 600, 8, 4096, async || false).await;
    assert_eq!(sent, 600);

    assert!(
        rooms.wait_sessions(2, WAIT).await,
        "stuck client still there"
    );
    let stats = rooms.stats().await.expect("stats");
    assert_eq!(stats.slow_consumer_disconnects, 1, "{stats:?}");
    assert!(stats.queue_high_water <= queue as u64, "{stats:?}");
    assert_eq!(stats.dropped, 0, "{stats:?}");
    assert_eq!(stats.published, 600, "{stats:?}");
    // The stuck client's connection is closed by the server (1013 if the close frame got
    // through, otherwise the socket was cut).
    let code = drain_until_closed(&mut stuck).await;
    assert!(matches!(code, None | Some(1013)), "{code:?}");
    // The healthy members are still connected.
    publisher.text(r#"{"type":"ping"}"#).await;
    assert_eq!(publisher.json().await["type"], "pong");
    server.stop().await.expect("stop");
}

/// With policy `DropNewest`, a stuck reader keeps its session but only up to the queue bound
/// (the rest is dropped and counted), and the heartbeat still disconnects it although every
/// write to it is stalled (actix-web issue 2441): the timer does not wait on the socket.
#[actix_rt::test]
async fn heartbeat_fires_while_writes_are_stalled() {
    let queue = 16;
    let interval = Duration::from_millis(200);
    let timeout = Duration::from_millis(1000);
    let mut server = start_server(
        test_config()
            .session_queue(queue)
            .slow_consumer(SlowConsumerPolicy::DropNewest)
            .tcp_send_buffer(Some(SEND_BUFFER))
            .heartbeat(interval, timeout),
    );
    let rooms = server.rooms().expect("running").clone();
    let mut stuck = stuck_peer(&server.url(), server.addr(), "flood").await;
    let silent_since = Instant::now();
    let (mut publisher, _) = Peer::rooms(&server.url()).await;
    let (mut receiver, _) = Peer::rooms(&server.url()).await;
    for p in [&mut publisher, &mut receiver] {
        p.text(r#"{"type":"join","room":"flood"}"#).await;
        assert_eq!(p.json().await["type"], "joined");
    }

    let mut stalled_in_time = false;
    let stop = async || {
        let stats = rooms.stats().await.expect("stats");
        if stats.dropped > 0 {
            stalled_in_time = stats.sessions == 3;
            return true;
        }
        false
    };
    flood(&mut publisher, &mut receiver, 4000, 8, 4096, stop).await;
    assert!(
        stalled_in_time,
        "writes never stalled before the heartbeat fired"
    );

    // The healthy members answer pings meanwhile; only the stuck one goes.
    let gone = tokio::select! {
        gone = rooms.wait_sessions(2, timeout + interval + WAIT) => gone,
        _ = publisher.answer_pings() => panic!("publisher disconnected"),
        _ = receiver.answer_pings() => panic!("receiver disconnected"),
    };
    assert!(gone, "stalled client never disconnected");
    let elapsed = silent_since.elapsed();
    assert!(
        elapsed <= timeout + interval + Duration::from_millis(500),
        "heartbeat late: {elapsed:?}"
    );
    let stats = rooms.stats().await.expect("stats");
    assert_eq!(stats.heartbeat_timeouts, 1, "{stats:?}");
    assert_eq!(stats.slow_consumer_disconnects, 0, "{stats:?}");
    assert!(stats.queue_high_water <= queue as u64, "{stats:?}");
    let code = drain_until_closed(&mut stuck).await;
    assert!(matches!(code, None | Some(1001)), "{code:?}");
    server.stop().await.expect("stop");
}

/// The queue's byte bound for these tests (the default is 4 MiB).
const QUEUE_BYTES: usize = 256 * 1024;
/// Messages of 64 KiB: 64 of them are 4 MiB, far below the 1024-message bound in count.
const BIG: usize = 64 * 1024;
const BIG_COUNT: usize = 64;

/// A member that stopped reading, and server code publishing `BIG_COUNT` messages of `BIG`
/// bytes to its room; answers the server, the stuck client, how many publishes reached it and
/// an upper bound of one published frame's payload bytes.
async fn big_messages_to_a_stuck_member(
    policy: SlowConsumerPolicy,
) -> (TestServer, Raw, usize, u64) {
    let server = start_server(
        test_config()
            .session_queue_bytes(QUEUE_BYTES)
            .slow_consumer(policy)
            .tcp_send_buffer(Some(SEND_BUFFER))
            .close_timeout(Duration::from_secs(5)),
    );
    let rooms = server.rooms().expect("running").clone();
    let stuck = stuck_peer(&server.url(), server.addr(), "big").await;
    let data = "x".repeat(BIG);
    let mut reached = 0;
    for _ in 0..BIG_COUNT {
        reached += rooms.publish_json("big", &data).await.expect("publish");
    }
    // A frame is the envelope around `data`: type, room, timestamp and quotes add under 256.
    (server, stuck, reached, BIG as u64 + 256)
}

/// Bounded in bytes, `DropNewest`: 64 messages of 64 KiB (4 MiB; the count bound is 1024) to a
/// member that stopped reading: its queue never holds more than `session_queue_bytes`
/// (256 KiB) plus one message, the rest is dropped and counted (reached + dropped = published),
/// and the session stays.
#[actix_rt::test]
async fn queue_bytes_bound_drops_and_counts_big_messages() {
    let (mut server, stuck, reached, frame) =
        big_messages_to_a_stuck_member(SlowConsumerPolicy::DropNewest).await;
    let stats = server.stats().await.expect("stats");
    assert!(
        stats.queue_bytes_high_water <= QUEUE_BYTES as u64 + frame,
        "queue held {} bytes: {stats:?}",
        stats.queue_bytes_high_water
    );
    assert!(
        stats.queue_bytes_high_water >= QUEUE_BYTES as u64 - frame,
        "the queue never filled: {stats:?}"
    );
    assert!(stats.dropped > 0, "{stats:?}");
    assert_eq!(
        reached as u64 + stats.dropped,
        BIG_COUNT as u64,
        "{stats:?}"
    );
    assert_eq!(stats.sessions, 1, "{stats:?}");
    assert_eq!(stats.slow_consumer_disconnects, 0, "{stats:?}");
    drop(stuck);
    server.stop().await.expect("stop");
}

/// Bounded in bytes, `Disconnect`: the same flood disconnects the member (counted, close 1013
/// when the close frame gets through, otherwise the socket is cut) once its queue holds
/// `session_queue_bytes`, long before 1024 messages.
#[actix_rt::test]
async fn queue_bytes_bound_disconnects_a_stuck_member() {
    let (mut server, mut stuck, _reached, frame) =
        big_messages_to_a_stuck_member(SlowConsumerPolicy::Disconnect).await;
    let rooms = server.rooms().expect("running").clone();
    let code = drain_until_closed(&mut stuck).await;
    assert!(matches!(code, None | Some(1013)), "{code:?}");
    // Send tungstenite's answer to the close frame, completing the handshake.
    let _ = stuck.flush().await;
    assert!(
        rooms.wait_sessions(0, WAIT).await,
        "stuck client still there"
    );
    let stats = rooms.stats().await.expect("stats");
    assert_eq!(stats.slow_consumer_disconnects, 1, "{stats:?}");
    assert!(
        stats.queue_bytes_high_water <= QUEUE_BYTES as u64 + frame,
        "{stats:?}"
    );
    server.stop().await.expect("stop");
}
