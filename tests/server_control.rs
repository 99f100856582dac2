//! Control before data, from a raw TCP client's point of view: every ping is answered, in
//! order, however many arrive at once and however long the client leaves them unread; and the
//! server's own close frame is not stuck behind a backlog of data.

mod common;

use common::raw::{masked, RawWs, ServerFrame};
use common::{start_server, test_config, WAIT};

const PINGS: usize = 1_000;

/// `PINGS` masked ping frames with distinct payloads (`ping-0000` ... padded to `len` bytes), in
/// one buffer.
fn pings(len: usize) -> (Vec<u8>, Vec<Vec<u8>>) {
    let payloads: Vec<Vec<u8>> = (0..PINGS)
        .map(|i| {
            let mut p = format!("ping-{i:04}").into_bytes();
            p.resize(len.max(p.len()), b'.');
            p
        })
        .collect();
    let bytes = payloads.iter().flat_map(|p| masked(0x9, p)).collect();
    (bytes, payloads)
}

/// Read until `expected.len()` pongs have arrived and check them against `expected`, in order;
/// other frames (text, binary, the server's own pings) go to `others`.
async fn read_pongs(ws: &mut RawWs, expected: &[Vec<u8>], others: &mut Vec<ServerFrame>) {
    let mut got = 0;
    while got < expected.len() {
        let frame = match ws.frame().await {
            Some(frame) => frame,
            None => panic!("connection ended after {got} of {} pongs", expected.len()),
        };
        match frame.opcode {
            0xA => {
                assert_eq!(
                    frame.payload, expected[got],
                    "pong {got} out of order or altered"
                );
                got += 1;
            }
            0x8 => panic!("closed ({:?}) after {got} pongs", frame.close_code()),
            _ => others.push(frame),
        }
    }
}

/// 1,000 masked pings written in one `write_all` to the echo and to the rooms endpoint are
/// answered by exactly 1,000 pongs carrying the pings' payloads in order (the control path
/// holds 8 frames: the session must stop reading while it is full, not skip pongs).
#[actix_rt::test]
async fn a_thousand_pings_in_one_write_get_a_thousand_pongs_in_order() {
    let server = start_server(test_config());
    for path in ["/echo", "/ws"] {
        let mut ws = RawWs::connect(server.local_addr(), path).await;
        let (bytes, payloads) = pings(12);
        ws.write(&bytes).await;
        let mut others = Vec::new();
        read_pongs(&mut ws, &payloads, &mut others).await;
        // Nothing more: a further ping is answered next, not a stray 1,001st pong.
        ws.write(&masked(0x9, b"last")).await;
        let mut next = Vec::new();
        read_pongs(&mut ws, &[b"last".to_vec()], &mut next).await;
        assert!(
            others.iter().chain(&next).all(|f| f.opcode != 0xA),
            "{path}: an extra pong"
        );
    }
    server.shutdown().await.expect("shutdown");
}

/// The same 1,000 pings (125-byte payloads, 127 KB of pongs) sent while the client is not
/// reading and the server's socket is already full of echoed data: the client reads only once
/// the server holds a backlog it cannot write (its queue high-water mark shows it), and still
/// gets every echo and then 1,000 pongs in order.
#[actix_rt::test]
async fn pings_sent_while_the_client_does_not_read_are_all_answered() {
    const ECHOES: usize = 48;
    const ECHO: usize = 64 * 1024;
    let server = start_server(test_config().tcp_send_buffer(Some(4096)));
    let socket = tokio::net::TcpSocket::new_v4().expect("socket");
    socket.set_recv_buffer_size(4096).expect("SO_RCVBUF");
    let tcp = socket
        .connect(server.local_addr())
        .await
        .expect("tcp connect");
    let mut ws = RawWs::upgrade(tcp, "/echo").await;
    // A backlog first (more than both sockets' buffers hold), then the pings, in one write.
    let mut bytes: Vec<u8> = (0..ECHOES)
        .flat_map(|i| masked(0x2, &vec![i as u8; ECHO]))
        .collect();
    let (ping_bytes, payloads) = pings(125);
    bytes.extend_from_slice(&ping_bytes);
    let mut writer = ws.tx.take().expect("writer");
    let write = actix_rt::spawn(async move {
        use tokio::io::AsyncWriteExt;
        let res = writer.write_all(&bytes).await;
        (writer, res)
    });
    // Not reading until the server holds echoes it cannot write: its socket is full.
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let stats = server.rooms().stats().await.expect("stats");
        if stats.queue_high_water >= 8 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no backlog in the server's queue: {stats:?}"
        );
        actix_rt::task::yield_now().await;
    }
    let mut others = Vec::new();
    read_pongs(&mut ws, &payloads, &mut others).await;
    // Each echo arrives whole and in order (ahead of, or among, the pongs).
    let mut echoed = others.iter().filter(|f| f.opcode == 0x2);
    for i in 0..ECHOES {
        let mut frame = echoed.next().cloned();
        while frame.is_none() {
            frame = ws.frame().await.filter(|f| f.opcode == 0x2);
        }
        let frame = frame.expect("an echo");
        assert_eq!(frame.payload.len(), ECHO, "echo {i}");
        assert!(frame.payload.iter().all(|b| *b == i as u8), "echo {i}");
    }
    // The write completes once the server reads again, which it does as the client reads.
    let (_writer, res) = tokio::time::timeout(WAIT, write)
        .await
        .expect("the write completes")
        .expect("writer task");
    res.expect("the frames are written");
    server.shutdown().await.expect("shutdown");
}

/// A client that sends pings without end and never reads our pongs: the session stops reading
/// once 8 pongs wait, so it no longer hears from the client, and the heartbeat timeout (1 s
/// here) ends it; the server never buffers more than the control lane and TCP's buffers.
#[actix_rt::test]
async fn a_client_that_pings_but_never_reads_meets_the_heartbeat_timeout() {
    use std::time::Duration;
    let server = start_server(
        test_config()
            .heartbeat(Duration::from_millis(200), Duration::from_secs(1))
            .tcp_send_buffer(Some(4096)),
    );
    let socket = tokio::net::TcpSocket::new_v4().expect("socket");
    socket.set_recv_buffer_size(4096).expect("SO_RCVBUF");
    let tcp = socket
        .connect(server.local_addr())
        .await
        .expect("tcp connect");
    let mut ws = RawWs::upgrade(tcp, "/echo").await;
    assert!(server.rooms().wait_sessions_at_least(1, WAIT).await);
    let mut writer = ws.tx.take().expect("writer");
    let batch: Vec<u8> = (0..100).flat_map(|_| masked(0x9, &[b'p'; 125])).collect();
    let pinger = actix_rt::spawn(async move {
        use tokio::io::AsyncWriteExt;
        // Until the server cuts the connection (bounded by the heartbeat timeout).
        while writer.write_all(&batch).await.is_ok() {}
    });
    assert!(
        server.rooms().wait_sessions(0, WAIT).await,
        "the session ended"
    );
    let stats = server.rooms().stats().await.expect("stats");
    assert_eq!(stats.heartbeat_timeouts, 1, "{stats:?}");
    tokio::time::timeout(WAIT, pinger)
        .await
        .expect("the connection was cut")
        .expect("pinger");
    drop(ws);
    server.shutdown().await.expect("shutdown");
}

/// A rate-limited client that floods publishes without reading the room messages they bring
/// back, then reads slowly (1 KiB per 5 ms, about 200 KB/s): it still gets the server's close
/// 1008 before the close timeout (2 s) cuts the socket, because the close frame goes ahead of
/// the 1.3 MB backlog instead of behind it (behind it, the socket was cut first and the client
/// saw only an abnormal end, 1006, and would reconnect).
#[actix_rt::test]
async fn rate_limit_close_overtakes_a_backlog_the_client_reads_slowly() {
    use actix_ws_manager::config::RateLimit;
    use std::time::Duration;
    const BURST: u32 = 40;
    let server = start_server(
        test_config()
            .rate_limit(Some(RateLimit::new(1, BURST)))
            .tcp_send_buffer(Some(4096))
            .close_timeout(Duration::from_secs(2)),
    );
    let socket = tokio::net::TcpSocket::new_v4().expect("socket");
    socket.set_recv_buffer_size(4096).expect("SO_RCVBUF");
    let tcp = socket
        .connect(server.local_addr())
        .await
        .expect("tcp connect");
    let mut ws = RawWs::upgrade(tcp, "/ws").await;
    let welcome = ws.frame().await.expect("welcome");
    assert_eq!(welcome.opcode, 0x1);
    ws.write(&masked(0x1, br#"{"type":"join","room":"r"}"#))
        .await;
    let joined = ws.frame().await.expect("joined");
    assert!(
        String::from_utf8_lossy(&joined.payload).contains("joined"),
        "{joined:?}"
    );
    // The join took a token: BURST - 1 publishes pass (32 KiB each, back to this member),
    // the next BURST + 1 are refused, and then the session closes with 1008.
    let data = "x".repeat(32 * 1024);
    let publish = format!(r#"{{"type":"publish","room":"r","data":"{data}"}}"#);
    let flood: Vec<u8> = (0..3 * BURST)
        .flat_map(|_| masked(0x1, publish.as_bytes()))
        .collect();
    let mut writer = ws.tx.take().expect("writer");
    let flooding = actix_rt::spawn(async move {
        use tokio::io::AsyncWriteExt;
        let _ = writer.write_all(&flood).await;
        writer
    });
    ws.read_slowly(1024, Duration::from_millis(5));
    let mut texts = 0;
    let code = loop {
        match ws.frame().await {
            Some(f) if f.opcode == 0x8 => break f.close_code(),
            Some(f) if f.opcode == 0x1 => texts += 1,
            Some(_) => {}
            None => panic!("the connection ended without a close frame after {texts} texts"),
        }
    };
    assert_eq!(code, Some(1008), "after {texts} texts");
    let stats = server.rooms().stats().await.expect("stats");
    assert_eq!(stats.rate_limit_disconnects, 1, "{stats:?}");
    let _ = tokio::time::timeout(WAIT, flooding).await;
    server.shutdown().await.expect("shutdown");
}

/// After a complete closing handshake the server closes the TCP connection (RFC 6455 7.1.1:
/// the server closes it first), whoever started the handshake: the client reads the server's
/// close frame and then the end of the stream, without having to drop the connection itself.
#[actix_rt::test]
async fn the_server_ends_the_tcp_connection_after_the_handshake() {
    const ENDED_WITHIN: std::time::Duration = std::time::Duration::from_millis(750);
    let server = start_server(test_config().close_timeout(std::time::Duration::from_secs(30)));
    // The client closes first.
    let mut ws = RawWs::connect(server.local_addr(), "/echo").await;
    ws.write(&masked(0x8, &1000u16.to_be_bytes())).await;
    let reply = ws.frame().await.expect("the close reply");
    assert_eq!(reply.close_code(), Some(1000));
    let t = std::time::Instant::now();
    assert_eq!(ws.frame().await, None, "the server ended the connection");
    // Not left to actix-http's timers (about a second).
    assert!(t.elapsed() < ENDED_WITHIN, "ended after {:?}", t.elapsed());
    // The server closes first (invalid UTF-8: 1007; the frames after it are still read).
    let mut ws = RawWs::connect(server.local_addr(), "/echo").await;
    ws.write(&masked(0x1, &[0xff])).await;
    let close = ws.frame().await.expect("the server's close");
    assert_eq!(close.close_code(), Some(1007));
    ws.write(&masked(0x8, &1007u16.to_be_bytes())).await;
    let t = std::time::Instant::now();
    assert_eq!(ws.frame().await, None, "the server ended the connection");
    assert!(t.elapsed() < ENDED_WITHIN, "ended after {:?}", t.elapsed());
    server.shutdown().await.expect("shutdown");
}

/// A reply queued just before a protocol fault still reaches the client ahead of the close:
/// a text message and then a frame with a reserved bit set get the echo, then close 1002
/// (Autobahn 3.2; the close overtakes only what is past one chunk of queued data).
#[actix_rt::test]
async fn an_echo_queued_before_a_fault_goes_ahead_of_the_close() {
    let server = start_server(test_config());
    let mut ws = RawWs::connect(server.local_addr(), "/echo").await;
    let mut bytes = masked(0x1, b"Hello, world!");
    let mut rsv = masked(0x1, b"Hello, world!");
    rsv[0] |= 0x20;
    bytes.extend_from_slice(&rsv);
    bytes.extend_from_slice(&masked(0x9, b""));
    ws.write(&bytes).await;
    let echo = ws.frame().await.expect("the echo");
    assert_eq!(
        (echo.opcode, &echo.payload[..]),
        (0x1, &b"Hello, world!"[..])
    );
    let close = ws.frame().await.expect("the close");
    assert_eq!(close.close_code(), Some(1002), "{close:?}");
    server.shutdown().await.expect("shutdown");
}
