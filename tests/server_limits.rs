//! Limits and safety: message size, UTF-8, Origin allow-list, authentication hook, session
//! limit. Each test starts its own server on 127.0.0.1:0.

mod common;

use actix_ws_manager::server::{self, AuthRejection, Rooms};
use common::{start_server, test_config, Peer, WAIT};
use futures_util::{SinkExt, StreamExt};
use tokio_tungstenite::tungstenite::protocol::frame::coding::{Data, OpCode};
use tokio_tungstenite::tungstenite::protocol::frame::Frame;
use tokio_tungstenite::tungstenite::Message as TMessage;

type Raw =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

async fn raw(url: &str) -> Raw {
    tokio_tungstenite::connect_async(url)
        .await
        .expect("handshake")
        .0
}

/// The close code the server sends next, skipping data frames.
async fn raw_close_code(ws: &mut Raw) -> Option<u16> {
    for _ in 0..1000 {
        match tokio::time::timeout(WAIT, ws.next())
            .await
            .expect("no close")
        {
            Some(Ok(TMessage::Close(f))) => return f.map(|f| u16::from(f.code)),
            Some(Ok(_)) => continue,
            _ => return None,
        }
    }
    panic!("no close frame");
}

fn frame(op: OpCode, data: &[u8], fin: bool) -> TMessage {
    TMessage::Frame(Frame::message(data.to_vec(), op, fin))
}

/// The upgrade's HTTP status when the server refuses it.
async fn refused_status(req: awc::ws::WebsocketsRequest) -> u16 {
    match req.connect().await {
        Err(awc::error::WsClientError::InvalidResponseStatus(s)) => s.as_u16(),
        Err(e) => panic!("unexpected error {e}"),
        Ok(_) => panic!("upgrade was accepted"),
    }
}

/// A message bigger than `max_message_size` closes with 1009, whether it comes in one frame or
/// in fragments; a message at the limit passes.
#[actix_rt::test]
async fn oversize_messages_close_with_1009() {
    let server = start_server(test_config().max_message_size(1024));

    let mut ws = raw(&server.echo_url()).await;
    ws.send(TMessage::text("a".repeat(1024)))
        .await
        .expect("send");
    let back = tokio::time::timeout(WAIT, ws.next()).await.expect("echo");
    assert_eq!(back.expect("frame").expect("ok").len(), 1024);
    ws.send(TMessage::text("a".repeat(1025)))
        .await
        .expect("send");
    assert_eq!(raw_close_code(&mut ws).await, Some(1009));

    // Fragments of 600 bytes each: fine one by one, too big together.
    let mut ws = raw(&server.echo_url()).await;
    ws.send(frame(OpCode::Data(Data::Text), &[b'a'; 600], false))
        .await
        .expect("send");
    ws.send(frame(OpCode::Data(Data::Continue), &[b'a'; 600], true))
        .await
        .expect("send");
    assert_eq!(raw_close_code(&mut ws).await, Some(1009));

    // Same on the rooms endpoint, with an awc client.
    let (mut c, _) = Peer::rooms(&server.url()).await;
    c.text(&format!(
        r#"{{"type":"echo","data":"{}"}}"#,
        "a".repeat(2000)
    ))
    .await;
    assert_eq!(c.close_code().await, Some(1009));
    server.shutdown().await.expect("shutdown");
}

/// Text that is not UTF-8 closes with 1007: in one frame, and split across fragments (checked
/// as they arrive).
#[actix_rt::test]
async fn invalid_utf8_closes_with_1007() {
    let server = start_server(test_config());
    let mut ws = raw(&server.url()).await;
    ws.send(frame(
        OpCode::Data(Data::Text),
        b"{\"type\":\"\xff\"}",
        true,
    ))
    .await
    .expect("send");
    assert_eq!(raw_close_code(&mut ws).await, Some(1007));

    // "é" is C3 A9: the first fragment ends inside it (fine so far), the next one breaks it.
    let mut ws = raw(&server.echo_url()).await;
    ws.send(frame(OpCode::Data(Data::Text), b"caf\xc3", false))
        .await
        .expect("send");
    ws.send(frame(OpCode::Data(Data::Continue), b"\x28 and more", false))
        .await
        .expect("send");
    assert_eq!(raw_close_code(&mut ws).await, Some(1007));

    // A message that ends inside a character is invalid too.
    let mut ws = raw(&server.echo_url()).await;
    ws.send(frame(OpCode::Data(Data::Text), b"ok", false))
        .await
        .expect("send");
    ws.send(frame(OpCode::Data(Data::Continue), b"\xe2\x82", true))
        .await
        .expect("send");
    assert_eq!(raw_close_code(&mut ws).await, Some(1007));
    server.shutdown().await.expect("shutdown");
}

/// With an Origin allow-list, other origins get 403; listed origins and requests without an
/// Origin header get through.
#[actix_rt::test]
async fn origin_allow_list_refuses_other_origins() {
    let server = start_server(test_config().allow_origin("https://good.example"));
    let client = awc::Client::new();
    let status = refused_status(client.ws(server.url()).origin("https://evil.example")).await;
    assert_eq!(status, 403);
    let (_, mut ok) = client
        .ws(server.url())
        .origin("https://good.example")
        .connect()
        .await
        .expect("allowed origin");
    assert!(ok.next().await.is_some(), "welcome");
    let (_welcome, _) = Peer::rooms(&server.url()).await;
    server.shutdown().await.expect("shutdown");
}

/// The authentication hook sees the upgrade request: no credentials give 401, bad ones 403,
/// good ones a session whose welcome carries the identity the hook attached.
#[actix_rt::test]
async fn auth_hook_refuses_or_attaches_identity() {
    let rooms = Rooms::start(test_config())
        .expect("config")
        .with_auth(|req| {
            match req
                .headers()
                .get("authorization")
                .and_then(|v| v.to_str().ok())
            {
                None => Err(AuthRejection::Unauthorized("token required".into())),
                Some("Bearer alice-token") => Ok(Some("alice".into())),
                Some(_) => Err(AuthRejection::Forbidden("bad token".into())),
            }
        });
    let server = server::serve_with("127.0.0.1:0", "/ws", "/echo", rooms).expect("serve");
    let client = awc::Client::new();
    assert_eq!(refused_status(client.ws(server.url())).await, 401);
    assert_eq!(
        refused_status(client.ws(server.url()).bearer_auth("mallory")).await,
        403
    );
    let (_, framed) = client
        .ws(server.url())
        .bearer_auth("alice-token")
        .connect()
        .await
        .expect("authorised");
    let mut peer = Peer { framed };
    let welcome = peer.json().await;
    assert_eq!(welcome["data"]["identity"], "alice", "{welcome}");
    assert_eq!(server.rooms().sessions(), 1);
    server.shutdown().await.expect("shutdown");
}

/// An async authentication hook (here it awaits a lookup that completes later, as a database
/// call would) attaches the identity, and the join check decides per identity and room:
/// alice may join `alice-*` rooms only, anything else is `forbidden_room`.
#[actix_rt::test]
async fn async_auth_and_join_check() {
    let rooms = Rooms::start(test_config())
        .expect("config")
        .with_async_auth(|req: actix_web::HttpRequest| async move {
            let token = req
                .headers()
                .get("authorization")
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned);
            // An await point stands for the lookup.
            actix_rt::task::yield_now().await;
            match token.as_deref() {
                Some("Bearer alice-token") => Ok(Some("alice".to_owned())),
                _ => Err(AuthRejection::Unauthorized("token required".into())),
            }
        })
        .with_join_check(|identity, room| {
            identity.is_some_and(|who| room.starts_with(&format!("{who}-")))
        });
    let server = server::serve_with("127.0.0.1:0", "/ws", "/echo", rooms).expect("serve");
    let client = awc::Client::new();
    assert_eq!(refused_status(client.ws(server.url())).await, 401);
    let (_, framed) = client
        .ws(server.url())
        .bearer_auth("alice-token")
        .connect()
        .await
        .expect("authorised");
    let mut peer = Peer { framed };
    assert_eq!(peer.json().await["data"]["identity"], "alice");
    peer.text(r#"{"type":"join","room":"alice-inbox","id":1}"#)
        .await;
    assert_eq!(peer.json().await["type"], "joined");
    peer.text(r#"{"type":"join","room":"bob-inbox","id":2}"#)
        .await;
    let refused = peer.json().await;
    assert_eq!(refused["data"]["code"], "forbidden_room", "{refused}");
    assert_eq!(refused["id"], 2);
    server.shutdown().await.expect("shutdown");
}

/// Past `max_sessions` the upgrade is refused with 503; a freed slot can be used again.
#[actix_rt::test]
async fn session_limit_refuses_with_503() {
    let server = start_server(test_config().max_sessions(2));
    let (a, _) = Peer::rooms(&server.url()).await;
    let (_b, _) = Peer::rooms(&server.url()).await;
    let client = awc::Client::new();
    assert_eq!(refused_status(client.ws(server.url())).await, 503);
    assert_eq!(refused_status(client.ws(server.echo_url())).await, 503);
    drop(a);
    assert!(server.rooms().wait_sessions(1, WAIT).await);
    let (_c, _) = Peer::rooms(&server.url()).await;
    server.shutdown().await.expect("shutdown");
}

/// A client's close frame is answered with its code when that code may travel on the wire, with
/// 1002 when it may not, and with 1000 when it carried none.
#[actix_rt::test]
async fn client_close_is_answered_with_a_sendable_code() {
    use tokio_tungstenite::tungstenite::protocol::CloseFrame;
    let server = start_server(test_config());
    for (sent, answered) in [
        (Some(1000), Some(1000)),
        (Some(4321), Some(4321)),
        (Some(1016), Some(1002)),
        (Some(2999), Some(1002)),
        (None, Some(1000)),
    ] {
        let mut ws = raw(&server.url()).await;
        let frame = sent.map(|code: u16| CloseFrame {
            code: code.into(),
            reason: "".into(),
        });
        ws.send(TMessage::Close(frame)).await.expect("close");
        assert_eq!(raw_close_code(&mut ws).await, answered, "sent {sent:?}");
    }
    server.shutdown().await.expect("shutdown");
}

/// Broken framing closes with 1002: a continuation without a first fragment, a new message
/// started inside a fragmented one, a reserved bit set, a control frame over 125 bytes.
#[actix_rt::test]
async fn broken_fragmentation_closes_with_1002() {
    let server = start_server(test_config());
    let mut ws = raw(&server.echo_url()).await;
    ws.send(frame(OpCode::Data(Data::Continue), b"orphan", true))
        .await
        .expect("send");
    assert_eq!(raw_close_code(&mut ws).await, Some(1002));

    let mut ws = raw(&server.echo_url()).await;
    ws.send(frame(OpCode::Data(Data::Text), b"first", false))
        .await
        .expect("send");
    ws.send(frame(OpCode::Data(Data::Binary), b"second", true))
        .await
        .expect("send");
    assert_eq!(raw_close_code(&mut ws).await, Some(1002));

    // A reserved bit without a negotiated extension (actix-http alone reports it as invalid
    // data, which used to become 1007).
    let mut ws = raw(&server.echo_url()).await;
    let mut bad = Frame::message(&b"hello"[..], OpCode::Data(Data::Text), true);
    bad.header_mut().rsv1 = true;
    ws.send(TMessage::Frame(bad)).await.expect("send");
    assert_eq!(raw_close_code(&mut ws).await, Some(1002));

    // A ping that declares more than 125 bytes, refused at its header.
    let mut ws = raw(&server.echo_url()).await;
    ws.send(TMessage::Frame(Frame::ping(vec![0u8; 200])))
        .await
        .expect("send");
    assert_eq!(raw_close_code(&mut ws).await, Some(1002));
    server.shutdown().await.expect("shutdown");
}

/// The cheap checks come before the authentication hook. With a hook that never answers and
/// `max_connections_per_ip` 3, five upgrade requests from 127.0.0.1 reach the hook three times:
/// the fourth and fifth are refused with 429 at once (while the first three still wait on the
/// hook), and a plain GET without the upgrade headers gets 400 without reaching it.
#[actix_rt::test]
async fn limits_and_handshake_are_checked_before_auth() {
    use common::raw::{request, response_head};
    use std::sync::atomic::{AtomicUsize, Ordering};
    use tokio::io::AsyncWriteExt;

    const LIMIT: usize = 3;
    let calls = std::sync::Arc::new(AtomicUsize::new(0));
    let (called_tx, mut called) = tokio::sync::mpsc::unbounded_channel::<()>();
    let counted = calls.clone();
    let rooms = Rooms::start(test_config().max_connections_per_ip(Some(LIMIT)))
        .expect("config")
        .with_async_auth(move |_req: actix_web::HttpRequest| {
            counted.fetch_add(1, Ordering::SeqCst);
            let _ = called_tx.send(());
            // A lookup that never completes.
            std::future::pending()
        });
    let server = server::serve_with("127.0.0.1:0", "/ws", "/echo", rooms).expect("serve");
    let addr = server.local_addr();
    let mut waiting = Vec::new();
    for _ in 0..LIMIT {
        let mut tcp = tokio::net::TcpStream::connect(addr).await.expect("connect");
        tcp.write_all(&request(addr, "/ws", true))
            .await
            .expect("write");
        tokio::time::timeout(WAIT, called.recv())
            .await
            .expect("the hook is called in time")
            .expect("hook alive");
        waiting.push(tcp);
    }
    for path in ["/ws", "/echo"] {
        let mut tcp = tokio::net::TcpStream::connect(addr).await.expect("connect");
        tcp.write_all(&request(addr, path, true))
            .await
            .expect("write");
        let (status, _) = response_head(&mut tcp).await;
        assert_eq!(status, 429, "past the per-address limit on {path}");
    }
    let mut plain = tokio::net::TcpStream::connect(addr).await.expect("connect");
    plain
        .write_all(&request(addr, "/ws", false))
        .await
        .expect("write");
    let (status, _) = response_head(&mut plain).await;
    assert_eq!(status, 400, "a GET without upgrade headers");
    assert_eq!(calls.load(Ordering::SeqCst), LIMIT, "auth calls");
    assert!(called.try_recv().is_err(), "no further auth call");
    drop(waiting);
    server.shutdown().await.expect("shutdown");
}
