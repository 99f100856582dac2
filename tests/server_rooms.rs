//! The rooms protocol, message by message, broadcast fan-out, and membership clean-up when a
//! client vanishes. Each test starts its own server on 127.0.0.1:0.

mod common;

use std::time::Duration;

use common::{j, start_server, test_config, Peer, WAIT};

/// Errors: code, message, id when there was one.
fn error(v: &serde_json::Value, code: &str, id: Option<u64>) {
    assert_eq!(v["type"], "error", "{v}");
    assert_eq!(v["data"]["code"], code, "{v}");
    assert!(
        v["data"]["message"].as_str().is_some_and(|m| !m.is_empty()),
        "{v}"
    );
    assert_eq!(v["id"].as_u64(), id, "{v}");
}

/// Join "lobby" with `id`: answered `joined` at offset 0, in `epoch` when given; answers the
/// epoch.
async fn assert_joined_lobby(c: &mut Peer, id: u64, epoch: Option<&str>) -> String {
    c.text(&format!(r#"{{"type":"join","room":"lobby","id":{id}}}"#))
        .await;
    let joined = c.json().await;
    let got = joined["data"]["epoch"]
        .as_str()
        .expect("an epoch")
        .to_owned();
    let expected = format!(
        r#"{{"type":"joined","id":{id},"room":"lobby","data":{{"offset":0,"epoch":"{}"}}}}"#,
        epoch.unwrap_or(&got)
    );
    assert_eq!(joined, j(&expected));
    got
}

/// publish with an id: the message (sender included) and an ack, in either order.
async fn assert_publish_with_id(c: &mut Peer, me: &str) {
    c.text(r#"{"type":"publish","room":"lobby","data":{"text":"hi"},"id":3}"#)
        .await;
    let (a, b) = (c.json().await, c.json().await);
    let (msg, ack) = if a["type"] == "ack" { (b, a) } else { (a, b) };
    assert_eq!(ack, j(r#"{"type":"ack","id":3}"#));
    assert_eq!(msg["type"], "message");
    assert_eq!(msg["room"], "lobby");
    assert_eq!(msg["from"], me);
    assert_eq!(msg["data"], j(r#"{"text":"hi"}"#));
    assert!(msg.get("id").is_none(), "{msg}");
    let ts = msg["timestamp"].as_str().expect("timestamp");
    humantime::parse_rfc3339(ts).expect("RFC 3339 timestamp");
}

/// Each malformed envelope gets a `malformed` error without an id.
async fn assert_malformed_refused(c: &mut Peer) {
    c.text("{").await;
    error(&c.json().await, "malformed", None);
    c.text("[1,2]").await;
    error(&c.json().await, "malformed", None);
    c.text(r#"{"data":1}"#).await;
    error(&c.json().await, "malformed", None);
    // A room that is not a string makes the envelope itself malformed.
    c.text(r#"{"type":"join","room":7,"id":99}"#).await;
    error(&c.json().await, "malformed", None);
}

/// Each invalid or missing room name in a join gets a `bad_room` error with its id.
async fn assert_bad_room_names_refused(c: &mut Peer) {
    for (i, bad) in [
        r#""room":"""#,
        r#""room":"two words""#,
        r#""room":"ünïcode""#,
        &format!(r#""room":"{}""#, "x".repeat(65)),
        r#""nope":1"#,
    ]
    .iter()
    .enumerate()
    {
        let id = 100 + i as u64;
        c.text(&format!(r#"{{"type":"join",{bad},"id":{id}}}"#))
            .await;
        error(&c.json().await, "bad_room", Some(id));
    }
}

/// Every row of the rooms protocol table gets its documented answer, errors included, and the
/// session stays open after each error.
#[actix_rt::test]
async fn protocol_table_message_by_message() {
    let server = start_server(test_config().max_rooms_per_session(2));
    let (mut c, me) = Peer::rooms(&server.url()).await;
    assert!(me.starts_with("s-"), "{me}");

    // `joined` carries the room's stream position (history is on by default); joining again
    // is idempotent: the same position.
    let epoch = assert_joined_lobby(&mut c, 1, None).await;
    assert_joined_lobby(&mut c, 2, Some(&epoch)).await;

    // publish with an id: the message (sender included) and an ack, in either order.
    assert_publish_with_id(&mut c, &me).await;

    // publish without an id: the message only (the pong proves no ack came before it).
    c.text(r#"{"type":"publish","room":"lobby","data":5}"#)
        .await;
    let msg = c.json().await;
    assert_eq!(
        (msg["type"].as_str(), &msg["data"]),
        (Some("message"), &j("5"))
    );
    c.text(r#"{"type":"ping"}"#).await;
    assert_eq!(c.json().await, j(r#"{"type":"pong"}"#));

    c.text(r#"{"type":"echo","data":[1,"two",{"3":null}],"id":4}"#)
        .await;
    assert_eq!(
        c.json().await,
        j(r#"{"type":"echo","id":4,"data":[1,"two",{"3":null}]}"#)
    );

    c.text(r#"{"type":"leave","room":"lobby","id":5}"#).await;
    assert_eq!(
        c.json().await,
        j(r#"{"type":"left","id":5,"room":"lobby"}"#)
    );

    // Errors: code, message, id when there was one; the session stays open.
    c.text(r#"{"type":"leave","room":"lobby","id":6}"#).await;
    error(&c.json().await, "not_joined", Some(6));
    c.text(r#"{"type":"publish","room":"lobby","data":1,"id":7}"#)
        .await;
    error(&c.json().await, "not_joined", Some(7));
    assert_malformed_refused(&mut c).await;
    c.text(r#"{"type":"dance","id":8}"#).await;
    error(&c.json().await, "unknown_type", Some(8));
    assert_bad_room_names_refused(&mut c).await;
    c.text(r#"{"type":"publish","room":"a b","id":9}"#).await;
    error(&c.json().await, "bad_room", Some(9));
    // The longest allowed name, with every allowed character class.
    let long = format!("Az09_.:-{}", "r".repeat(56));
    c.text(&format!(r#"{{"type":"join","room":"{long}","id":10}}"#))
        .await;
    assert_eq!(c.json().await["type"], "joined");
    c.text(r#"{"type":"join","room":"second","id":11}"#).await;
    assert_eq!(c.json().await["type"], "joined");
    c.text(r#"{"type":"join","room":"third","id":12}"#).await;
    error(&c.json().await, "too_many_rooms", Some(12));
    c.send(awc::ws::Message::Binary(bytes::Bytes::from_static(
        b"\x00\x01",
    )))
    .await;
    error(&c.json().await, "binary_unsupported", None);

    // Still open, still answering.
    c.text(r#"{"type":"ping","id":13}"#).await;
    assert_eq!(c.json().await, j(r#"{"type":"pong","id":13}"#));
    server.shutdown().await.expect("shutdown");
}

/// A publish reaches every member of the room exactly once, the sender included, and nobody
/// outside the room.
#[actix_rt::test]
async fn broadcast_reaches_every_member_once_and_nobody_else() {
    let server = start_server(test_config());
    let mut members = Vec::new();
    for _ in 0..3 {
        let (mut p, name) = Peer::rooms(&server.url()).await;
        p.text(r#"{"type":"join","room":"r"}"#).await;
        assert_eq!(p.json().await["type"], "joined");
        members.push((p, name));
    }
    let (mut outsider, _) = Peer::rooms(&server.url()).await;
    outsider.text(r#"{"type":"join","room":"other"}"#).await;
    assert_eq!(outsider.json().await["type"], "joined");

    for (i, (p, _)) in members.iter_mut().enumerate() {
        p.text(&format!(r#"{{"type":"publish","room":"r","data":{i}}}"#))
            .await;
    }
    let names: Vec<String> = members.iter().map(|(_, n)| n.clone()).collect();
    for (p, _) in members.iter_mut() {
        let mut seen = Vec::new();
        for _ in 0..3 {
            let m = p.json().await;
            assert_eq!(
                (m["type"].as_str(), m["room"].as_str()),
                (Some("message"), Some("r"))
            );
            let i = m["data"].as_u64().expect("data") as usize;
            assert_eq!(m["from"], names[i].as_str(), "from is the publisher");
            seen.push(i);
        }
        seen.sort();
        assert_eq!(seen, vec![0, 1, 2]);
    }
    // Exactly once: a later message is the next thing every member sees (a duplicate would have
    // been queued before it).
    members[0]
        .0
        .text(r#"{"type":"publish","room":"r","data":"end"}"#)
        .await;
    for (p, _) in members.iter_mut() {
        assert_eq!(p.json().await["data"], "end");
    }
    // Nobody else: the hub handled every publish to "r" before this one, so a stray copy would
    // arrive before it.
    outsider
        .text(r#"{"type":"publish","room":"other","data":"mine"}"#)
        .await;
    let m = outsider.json().await;
    assert_eq!(
        (m["room"].as_str(), m["data"].as_str()),
        (Some("other"), Some("mine"))
    );

    let stats = server.rooms().stats().await.expect("stats");
    assert_eq!(stats.sessions, 4);
    assert_eq!(stats.rooms, 2);
    assert_eq!(stats.published, 5);
    server.shutdown().await.expect("shutdown");
}

/// A client whose TCP connection is reset (no close frame) is removed from every room at once.
#[actix_rt::test]
async fn abrupt_disconnect_leaves_every_room() {
    let server = start_server(test_config());
    let rooms = server.rooms().clone();
    let (mut observer, _) = Peer::rooms(&server.url()).await;
    observer.text(r#"{"type":"join","room":"a"}"#).await;
    assert_eq!(observer.json().await["type"], "joined");

    let tcp = tokio::net::TcpStream::connect(server.local_addr())
        .await
        .expect("tcp");
    let (mut ws, _) = tokio_tungstenite::client_async(server.url(), tcp)
        .await
        .expect("handshake");
    use futures_util::{SinkExt, StreamExt};
    let _welcome = ws.next().await;
    for room in ["a", "b", "c"] {
        ws.send(tokio_tungstenite::tungstenite::Message::text(format!(
            r#"{{"type":"join","room":"{room}"}}"#
        )))
        .await
        .expect("join");
        let joined = ws.next().await.expect("frame").expect("ok");
        assert!(joined.to_text().expect("text").contains("joined"));
    }
    assert_eq!(rooms.stats().await.expect("stats").rooms, 3);
    assert_eq!(rooms.publish_json("b", &"x").await.expect("publish"), 1);

    // Reset the connection: linger 0 makes close() send RST, no close frame.
    let tcp = ws.into_inner();
    #[allow(deprecated)] // blocking on drop is what we want: an immediate RST
    tcp.set_linger(Some(Duration::ZERO)).expect("linger");
    drop(tcp);

    assert!(
        rooms.wait_sessions(1, WAIT).await,
        "session still registered"
    );
    let stats = rooms.stats().await.expect("stats");
    assert_eq!((stats.sessions, stats.rooms), (1, 1), "{stats:?}");
    assert_eq!(rooms.publish_json("b", &"x").await.expect("publish"), 0);
    assert_eq!(rooms.publish_json("c", &"x").await.expect("publish"), 0);
    assert_eq!(rooms.publish_json("a", &"x").await.expect("publish"), 1);
    assert_eq!(observer.json().await["data"], "x");
    server.shutdown().await.expect("shutdown");
}
