//! The client against a raw tokio-tungstenite peer, for the frames an actix peer cannot send: a
//! single unfragmented text frame with invalid UTF-8, and a close handshake whose answer the
//! peer reads back.

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
