//! The client against a raw tokio-tungstenite peer, for the frames an actix peer cannot send: a
//! single unfragmented text frame with invalid UTF-8, a close handshake whose answer the peer
//! reads back, and (writing bytes past tungstenite) frames that break the protocol.

mod common;

use actix_ws_manager::client::{connect, ConnectionState, Event};
use common::{client_test_config, recv_until, WAIT};
use futures_util::{SinkExt, StreamExt};
use tokio::net::TcpListener;
use tokio_tungstenite::tungstenite::protocol::frame::coding::{CloseCode, Data, OpCode};
use tokio_tungstenite::tungstenite::protocol::frame::Frame;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::Message;

/// Accept one WebSocket connection on `listener`.
async fn accept(
    listener: &TcpListener,
) -> tokio_tungstenite::WebSocketStream<tokio::net::TcpStream> {
    let (tcp, _) = tokio::time::timeout(WAIT, listener.accept())
        .await
        .expect("no client")
        .expect("accept");
    tokio_tungstenite::accept_async(tcp)
        .await
        .expect("handshake")
}

/// The next close frame the peer reads, within the test timeout.
async fn read_close(
    ws: &mut tokio_tungstenite::WebSocketStream<tokio::net::TcpStream>,
) -> Option<CloseFrame> {
    tokio::time::timeout(WAIT, async {
        while let Some(msg) = ws.next().await {
            match msg {
                Ok(Message::Close(frame)) => return frame,
                Ok(_) => continue,
                Err(e) => panic!("peer read failed before a close frame: {e}"),
            }
        }
        panic!("stream ended without a close frame")
    })
    .await
    .expect("no close frame in time")
}

/// One unfragmented text frame holding invalid UTF-8 closes the connection with 1007.
#[actix_rt::test]
async fn single_frame_invalid_utf8_closes_with_1007() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("ws://{}/raw", listener.local_addr().unwrap());
    let client = connect(&url, client_test_config()).unwrap();
    let mut events = client.subscribe_events(64);
    let mut ws = accept(&listener).await;
    let bad = Frame::message(
        &b"{\"type\":\"x\",\"data\":\"\xc3\x28\"}"[..],
        OpCode::Data(Data::Text),
        true,
    );
    ws.send(Message::Frame(bad)).await.unwrap();
    let close = read_close(&mut ws).await.expect("close frame with a code");
    assert_eq!(close.code, CloseCode::Invalid, "1007");
    let ev = recv_until(&mut events, WAIT, "Disconnected", |e| {
        matches!(e, Event::State(ConnectionState::Disconnected { .. }))
    })
    .await;
    assert!(
        matches!(
            ev,
            Event::State(ConnectionState::Disconnected { code: 1007, .. })
        ),
        "{ev:?}"
    );
    client.close().await;
}

/// A close from the peer is answered with a close echoing its code (RFC 6455 5.5.1), the client
/// reports it as `Disconnected` with that code and reason, and reconnects (4000 is not final by
/// default).
#[actix_rt::test]
async fn peer_close_is_echoed_and_reported() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("ws://{}/raw", listener.local_addr().unwrap());
    let client = connect(&url, client_test_config()).unwrap();
    let mut events = client.subscribe_events(64);
    let mut ws = accept(&listener).await;
    ws.close(Some(CloseFrame {
        code: CloseCode::from(4000),
        reason: "maintenance".into(),
    }))
    .await
    .unwrap();
    let answer = read_close(&mut ws).await.expect("close frame with a code");
    assert_eq!(u16::from(answer.code), 4000);
    let ev = recv_until(&mut events, WAIT, "Disconnected", |e| {
        matches!(e, Event::State(ConnectionState::Disconnected { .. }))
    })
    .await;
    assert_eq!(
        ev,
        Event::State(ConnectionState::Disconnected {
            code: 4000,
            reason: "maintenance".into()
        })
    );
    // It comes back.
    let _again = accept(&listener).await;
    recv_until(&mut events, WAIT, "Connected", |e| {
        matches!(e, Event::State(ConnectionState::Connected))
    })
    .await;
    client.close().await;
}

/// A frame with a reserved bit set (no extension was negotiated) closes the connection with 1002
/// and a close frame the peer reads, not a cut socket.
#[actix_rt::test]
async fn reserved_bits_close_with_1002() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("ws://{}/raw", listener.local_addr().unwrap());
    let client = connect(&url, client_test_config()).unwrap();
    let mut events = client.subscribe_events(64);
    let mut ws = accept(&listener).await;
    let mut bad = Frame::message(&b"{\"type\":\"x\"}"[..], OpCode::Data(Data::Text), true);
    bad.header_mut().rsv1 = true;
    ws.send(Message::Frame(bad)).await.unwrap();
    let close = read_close(&mut ws).await.expect("close frame with a code");
    assert_eq!(close.code, CloseCode::Protocol, "1002");
    let ev = recv_until(&mut events, WAIT, "Disconnected", |e| {
        matches!(e, Event::State(ConnectionState::Disconnected { .. }))
    })
    .await;
    assert!(
        matches!(
            ev,
            Event::State(ConnectionState::Disconnected { code: 1002, .. })
        ),
        "{ev:?}"
    );
    client.close().await;
}

/// Read one client frame (masked) from `tcp` into `buf` within the test timeout: its opcode and
/// unmasked payload, or `None` at the end of the stream.
async fn client_frame(tcp: &mut tokio::net::TcpStream, buf: &mut Vec<u8>) -> Option<(u8, Vec<u8>)> {
    use tokio::io::AsyncReadExt;
    loop {
        if buf.len() >= 2 {
            let (op, len7) = (buf[0] & 0x0f, usize::from(buf[1] & 0x7f));
            assert_ne!(buf[1] & 0x80, 0, "client frames are masked");
            let (len, head) = match len7 {
                126 if buf.len() >= 4 => (usize::from(u16::from_be_bytes([buf[2], buf[3]])), 4),
                126 | 127 => (usize::MAX, 0),
                n => (n, 2),
            };
            if len != usize::MAX && buf.len() >= head + 4 + len {
                let key = [buf[head], buf[head + 1], buf[head + 2], buf[head + 3]];
                let payload = buf[head + 4..head + 4 + len]
                    .iter()
                    .enumerate()
                    .map(|(i, b)| b ^ key[i % 4])
                    .collect();
                buf.drain(..head + 4 + len);
                return Some((op, payload));
            }
        }
        let mut chunk = [0u8; 4096];
        let n = tokio::time::timeout(WAIT, tcp.read(&mut chunk))
            .await
            .expect("a client frame in time")
            .expect("read from the client");
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

/// After a protocol violation by the server (reserved bits, a reserved opcode, a ping of 126
/// bytes) the client sends its Close 1002 and still reads the server's answering Close (the
/// frame layer skips to it): the client reports `Disconnected` with 1002 and ends the TCP
/// connection at once, not after its close timeout (2 s). Before the frame layer resumed
/// parsing after a violation it discarded the server's Close, and both came only at the
/// timeout.
#[actix_rt::test]
async fn after_a_violation_the_peers_close_completes_the_handshake() {
    use tokio::io::AsyncWriteExt;
    const ENDED_WITHIN: std::time::Duration = std::time::Duration::from_secs(1);
    let mut ping = vec![0x89, 126, 0, 126];
    ping.extend_from_slice(&[b'*'; 126]);
    let cases = [
        ("reserved bits", vec![0xC1, 2, b'h', b'i']),
        ("reserved opcode 3", vec![0x83, 0]),
        ("ping of 126 bytes", ping),
    ];
    for (what, bad) in cases {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("ws://{}/raw", listener.local_addr().unwrap());
        let client = connect(&url, client_test_config()).unwrap();
        let mut events = client.subscribe_events(64);
        let mut ws = accept(&listener).await;
        recv_until(&mut events, WAIT, "Connected", |e| {
            matches!(e, Event::State(ConnectionState::Connected))
        })
        .await;
        // The bytes go straight to the socket, past tungstenite (which would refuse to send
        // them); a text frame follows, which the client must skip.
        let tcp = ws.get_mut();
        let mut wire = bad;
        wire.extend_from_slice(&[0x81, 2, b'{', b'}']);
        tcp.write_all(&wire).await.unwrap();
        let mut buf = Vec::new();
        let (op, payload) = client_frame(tcp, &mut buf)
            .await
            .expect("the client's close");
        assert_eq!(op, 0x8, "{what}");
        assert_eq!(payload[..2], 1002u16.to_be_bytes(), "{what}");
        let t = std::time::Instant::now();
        tcp.write_all(&[0x88, 2, 0x03, 0xEA]).await.unwrap();
        let ev = recv_until(&mut events, WAIT, "Disconnected", |e| {
            matches!(e, Event::State(ConnectionState::Disconnected { .. }))
        })
        .await;
        assert!(
            matches!(
                ev,
                Event::State(ConnectionState::Disconnected { code: 1002, .. })
            ),
            "{what}: {ev:?}"
        );
        assert!(
            t.elapsed() < ENDED_WITHIN,
            "{what}: reported after {:?}",
            t.elapsed()
        );
        assert_eq!(client_frame(tcp, &mut buf).await, None, "{what}");
        assert!(
            t.elapsed() < ENDED_WITHIN,
            "{what}: ended after {:?}",
            t.elapsed()
        );
        client.close().await;
    }
}
