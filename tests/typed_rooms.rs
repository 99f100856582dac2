//! Typed events through rooms, end to end: the newcomer's program (an actix-web app mounting
//! `Rooms`, a client that binds `Trade` to `"trade"`, joins `lobby` and publishes a `Trade`)
//! delivers an `Inbound<Trade>` with `room` and `from`; server code publishes typed too; the
//! protocol's own names are refused as events.

mod common;

use actix_web::{App, HttpServer};
use actix_ws_manager::client::connect;
use actix_ws_manager::server::Rooms;
use actix_ws_manager::WireMessage;
use common::{client_test_config, test_config, Peer, WAIT};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Trade {
    symbol: String,
    price: f64,
}

impl WireMessage for Trade {
    const TYPE: &'static str = "trade";
}

/// The newcomer's program: a `Trade` published by a client into `lobby` reaches that client's
/// `Trade` subscriber (and another member's) as `Inbound<Trade>` with `room` and `from`; a
/// `Trade` published by server code arrives the same way, without `from`.
#[actix_rt::test]
async fn a_typed_publish_arrives_as_its_type() {
    let rooms = Rooms::start(test_config()).expect("rooms");
    let app_rooms = rooms.clone();
    let http = HttpServer::new(move || App::new().configure(app_rooms.mount("/ws")))
        .workers(1)
        .disable_signals()
        .bind("127.0.0.1:0")
        .expect("bind");
    let url = format!("ws://{}/ws", http.addrs()[0]);
    let running = http.run();
    let handle = running.handle();
    actix_rt::spawn(running);

    let alice = connect(&url, client_test_config()).expect("client");
    let bob = connect(&url, client_test_config()).expect("client");
    let mut alice_trades = alice.subscribe::<Trade>(8);
    let mut bob_trades = bob.subscribe::<Trade>(8);
    for c in [&alice, &bob] {
        let mut joined = c.subscribe::<actix_ws_manager::protocol::Joined>(1);
        c.wait_connected(WAIT).await.expect("connected");
        c.join("lobby").await.expect("join");
        // The server answers a join once it is in the hub's queue, ahead of anything later.
        tokio::time::timeout(WAIT, joined.recv())
            .await
            .expect("joined")
            .expect("open");
    }
    let trade = Trade {
        symbol: "ACME".into(),
        price: 12.5,
    };
    alice.publish("lobby", &trade).await.expect("publish");
    for trades in [&mut alice_trades, &mut bob_trades] {
        let got = tokio::time::timeout(WAIT, trades.recv())
            .await
            .expect("a trade arrives")
            .expect("open");
        assert_eq!(got.data, trade);
        assert_eq!(got.room.as_deref(), Some("lobby"));
        assert!(
            got.from.as_deref().is_some_and(|f| f.starts_with("s-")),
            "{got:?}"
        );
    }

    let from_server = Trade {
        symbol: "SRV".into(),
        price: 1.0,
    };
    assert_eq!(
        rooms.publish("lobby", &from_server).await.expect("publish"),
        2
    );
    let got = tokio::time::timeout(WAIT, bob_trades.recv())
        .await
        .expect("a trade arrives")
        .expect("open");
    assert_eq!((got.data, got.from), (from_server, None));
    alice.close().await;
    bob.close().await;
    handle.stop(true).await;
}

/// An `event` that is one of the protocol's own types, or not a plain name, is refused with
/// `bad_event` (the session stays open); without `event` a publish stays a `message`.
#[actix_rt::test]
async fn protocol_names_are_refused_as_events() {
    let server = common::start_server(test_config());
    let (mut peer, _) = Peer::rooms(&server.url()).await;
    peer.text(r#"{"type":"join","room":"r"}"#).await;
    assert_eq!(peer.json().await["type"], "joined");
    for event in [
        "joined",
        "error",
        "message",
        "",
        "two words",
        &"x".repeat(65),
    ] {
        peer.text(&format!(
            r#"{{"type":"publish","room":"r","event":{},"data":1,"id":5}}"#,
            serde_json::Value::from(event)
        ))
        .await;
        let reply = peer.json().await;
        assert_eq!(reply["type"], "error", "{event:?}: {reply}");
        assert_eq!(reply["data"]["code"], "bad_event", "{event:?}");
        assert_eq!(reply["id"], 5);
    }
    peer.text(r#"{"type":"publish","room":"r","event":"trade","data":2}"#)
        .await;
    let got = peer.json().await;
    assert_eq!(
        (got["type"].as_str(), got["data"].as_i64()),
        (Some("trade"), Some(2))
    );
    peer.text(r#"{"type":"publish","room":"r","data":3}"#).await;
    assert_eq!(peer.json().await["type"], "message");
    server.shutdown().await.expect("shutdown");
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Order {
    qty: u32,
}
impl WireMessage for Order {
    const TYPE: &'static str = "order";
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Filled {
    qty: u32,
    by: u64,
}
impl WireMessage for Filled {
    const TYPE: &'static str = "filled";
}

/// An application handler answers a client's own message type (a request gets the reply with
/// its id, and the handler can publish into a room); data of the wrong shape is `bad_data`;
/// types nobody handles stay `unknown_type`. `members` lists a room's sessions and `send_to`
/// reaches one of them.
#[actix_rt::test]
async fn handlers_members_and_send_to() {
    let rooms = actix_ws_manager::server::Rooms::start(test_config()).expect("rooms");
    rooms.on_message::<Order, _, _>(|ctx, order| async move {
        let filled = Filled {
            qty: order.qty,
            by: ctx.session,
        };
        let _ = ctx.reply(&filled).await;
        let _ = ctx.rooms.publish("fills", &filled).await;
    });
    let server = actix_ws_manager::server::serve_with("127.0.0.1:0", "/ws", "/echo", rooms.clone())
        .expect("serve");
    let client = connect(&server.url(), client_test_config()).expect("client");
    let mut fills = client.subscribe::<Filled>(8);
    let mut joined = client.subscribe::<actix_ws_manager::protocol::Joined>(1);
    client.wait_connected(WAIT).await.expect("connected");
    client.join("fills").await.expect("join");
    tokio::time::timeout(WAIT, joined.recv())
        .await
        .expect("joined");

    // The reply comes back typed.
    let filled: Filled = client
        .request(&Order { qty: 3 }, WAIT)
        .await
        .expect("reply");
    assert_eq!(filled.qty, 3);
    // The handler's publish reaches the room (the client is a member); the reply itself is
    // also a `Filled` for subscribers, without a room.
    let mut published = tokio::time::timeout(WAIT, fills.recv())
        .await
        .expect("a fill")
        .expect("open");
    if published.room.is_none() {
        published = tokio::time::timeout(WAIT, fills.recv())
            .await
            .expect("a fill")
            .expect("open");
    }
    assert_eq!(published.data, filled);
    assert_eq!(published.room.as_deref(), Some("fills"));

    let bad = actix_ws_manager::Outgoing::dynamic("order", Some(&serde_json::json!("x")))
        .expect("envelope");
    match client.request_envelope(bad, WAIT).await {
        Err(actix_ws_manager::Error::Remote { code, .. }) => assert_eq!(code, "bad_data"),
        other => panic!("{other:?}"),
    }
    let unknown = actix_ws_manager::Outgoing::dynamic("nobody", None).expect("envelope");
    match client.request_envelope(unknown, WAIT).await {
        Err(actix_ws_manager::Error::Remote { code, .. }) => assert_eq!(code, "unknown_type"),
        other => panic!("{other:?}"),
    }

    let members = rooms.members("fills").await.expect("members");
    assert_eq!(members, vec![filled.by]);
    let mut orders = client.subscribe::<Order>(1);
    assert!(rooms
        .send_to(filled.by, &Order { qty: 9 })
        .await
        .expect("send_to"));
    let got = tokio::time::timeout(WAIT, orders.recv())
        .await
        .expect("the order")
        .expect("open");
    assert_eq!(got.data, Order { qty: 9 });
    assert!(!rooms
        .send_to(999_999, &Order { qty: 1 })
        .await
        .expect("send_to"));
    assert!(rooms.members("empty").await.expect("members").is_empty());
    client.close().await;
    server.shutdown().await.expect("shutdown");
}
