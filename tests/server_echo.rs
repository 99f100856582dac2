//! The plain echo endpoint: text and binary messages, whole or fragmented, come back verbatim.

mod common;

use common::{start_server, test_config, Peer, WAIT};
use futures_util::{SinkExt, StreamExt};
use tokio_tungstenite::tungstenite::protocol::frame::coding::{Data, OpCode};
use tokio_tungstenite::tungstenite::protocol::frame::Frame;
use tokio_tungstenite::tungstenite::Message as TMessage;

fn frame(op: OpCode, data: &[u8], fin: bool) -> TMessage {
    TMessage::Frame(Frame::message(data.to_vec(), op, fin))
}

/// Text and binary messages, including fragmented ones (with a multi-byte character split
/// across fragments, and pings between fragments) and one larger than actix's default 64 KiB
/// frame limit, come back verbatim as whole messages.
#[actix_rt::test]
async fn echo_returns_text_and_binary_verbatim() {
    let server = start_server(test_config().max_message_size(1024 * 1024));
    let (mut ws, _) = tokio_tungstenite::connect_async(server.echo_url())
        .await
        .expect("handshake");
    let cases: Vec<(Vec<TMessage>, TMessage)> = vec![
        (
            vec![TMessage::text("hello, wörld")],
            TMessage::text("hello, wörld"),
        ),
        (
            vec![TMessage::binary(vec![0u8, 159, 146, 150, 255])],
            TMessage::binary(vec![0u8, 159, 146, 150, 255]),
        ),
        (vec![TMessage::text("")], TMessage::text("")),
        (
            // "é" (C3 A9) split between two fragments, a ping in between.
            vec![
                frame(OpCode::Data(Data::Text), b"caf\xc3", false),
                TMessage::Ping(b"p".to_vec().into()),
                frame(OpCode::Data(Data::Continue), b"\xa9 ", false),
                frame(OpCode::Data(Data::Continue), b"au lait", true),
            ],
            TMessage::text("café au lait"),
        ),
        (
            vec![
                frame(OpCode::Data(Data::Binary), &[1, 2, 3], false),
                frame(OpCode::Data(Data::Continue), &[], false),
                frame(OpCode::Data(Data::Continue), &[4, 5], true),
            ],
            TMessage::binary(vec![1, 2, 3, 4, 5]),
        ),
        (
            vec![TMessage::text("x".repeat(200 * 1024))],
            TMessage::text("x".repeat(200 * 1024)),
        ),
        (
            vec![TMessage::binary(vec![7u8; 300 * 1024])],
            TMessage::binary(vec![7u8; 300 * 1024]),
        ),
    ];
    for (send, expect) in cases {
        for m in send {
            ws.send(m).await.expect("send");
        }
        let got = loop {
            match tokio::time::timeout(WAIT, ws.next()).await.expect("echo") {
                Some(Ok(TMessage::Pong(_))) => continue,
                Some(Ok(m)) => break m,
                other => panic!("echo connection ended: {other:?}"),
            }
        };
        assert_eq!(got, expect);
    }

    // The same through awc, which is what most embedding apps' tests use.
    let mut peer = Peer::connect(&server.echo_url()).await;
    peer.text("via awc").await;
    match peer.frame().await {
        Some(awc::ws::Frame::Text(t)) => assert_eq!(&t[..], b"via awc"),
        other => panic!("{other:?}"),
    }
    // The echo endpoint sends no welcome and no JSON: it is a plain echo server.
    peer.send(awc::ws::Message::Binary(bytes::Bytes::from_static(b"\x01")))
        .await;
    match peer.frame().await {
        Some(awc::ws::Frame::Binary(b)) => assert_eq!(&b[..], b"\x01"),
        other => panic!("{other:?}"),
    }
    server.shutdown().await.expect("shutdown");
}
