//! Presence (issue 22) from the client's side.
//!
//! Against a scripted peer: the frames `Client::join_with_presence` and `Client::presence` put
//! on the wire, the rejoin after a cut with the same flag and info, a join that replaces
//! another, a leave of a presence join, `PresenceDiff`s as typed messages, and info over 1 KiB
//! refused before anything is sent.

mod common;

use actix_ws_manager::client::{connect, Client};
use actix_ws_manager::protocol::{PresenceDiff, MAX_PRESENCE_INFO_BYTES};
use actix_ws_manager::Error;
use common::peer::{Behaviour, Peer, PeerCmd, PeerEvent};
use common::{client_test_config, recv_within, WAIT};
use serde_json::{json, Value};

/// The next text frame the peer receives, as JSON (pings, pongs and connects skipped).
async fn next_json(peer: &mut Peer) -> Value {
    loop {
        match peer.next().await {
            PeerEvent::Text(_, t) => return serde_json::from_str(&t).expect("JSON"),
            PeerEvent::Connected(_) => continue,
            other => panic!("expected a text frame, got {other:?}"),
        }
    }
}

/// A peer that says nothing by itself, and a client connected to it.
async fn peer_and_client() -> (Peer, Client) {
    let peer = Peer::start(Behaviour {
        echo: false,
        ..Behaviour::default()
    })
    .await;
    let client = connect(&peer.url, client_test_config()).expect("connect");
    client.wait_connected(WAIT).await.expect("connected");
    (peer, client)
}

/// `join_with_presence` sends `{"type":"join","room":R,"presence":true,"data":{"info":I}}`, and
/// sends it again (flag and info) on the next socket; `presence(R)` sends
/// `{"type":"presence","room":R,"id":N}` and decodes the answer; a `presence_diff` reaches
/// `subscribe::<PresenceDiff>` with its room.
#[actix_rt::test]
async fn presence_frames_on_the_wire_and_the_rejoin_keeps_flag_and_info() {
    let (mut peer, client) = peer_and_client().await;
    let mut diffs = client.subscribe::<PresenceDiff>(8);
    let info = json!({ "name": "ann", "status": "here" });
    client
        .join_with_presence("lobby", Some(info.clone()))
        .await
        .expect("join");
    let join = next_json(&mut peer).await;
    assert_eq!(join["type"], "join");
    assert_eq!(join["room"], "lobby");
    assert_eq!(join["presence"], true);
    assert_eq!(join["data"], json!({ "info": info }));

    let asking = {
        let client = client.clone();
        actix_rt::spawn(async move { client.presence("lobby").await })
    };
    let ask = next_json(&mut peer).await;
    assert_eq!(
        (&ask["type"], &ask["room"]),
        (&json!("presence"), &json!("lobby"))
    );
    let id = ask["id"].as_u64().expect("a request id");
    peer.send(PeerCmd::Text(format!(
        r#"{{"type":"presence","room":"lobby","id":{id},"data":{{"count":2,"members":[{{"session":"s-1","info":{info}}},{{"session":"s-2","identity":"bob"}}]}}}}"#
    )));
    let now = asking.await.expect("task").expect("answer");
    assert_eq!(now.count, 2);
    assert!(!now.truncated);
    assert_eq!(now.members[0].info.as_ref(), Some(&info));
    assert_eq!(now.members[1].identity.as_deref(), Some("bob"));

    peer.send(PeerCmd::Text(
        r#"{"type":"presence_diff","room":"lobby","data":{"joins":[{"session":"s-3"}],"leaves":[{"session":"s-2","identity":"bob"}]}}"#.to_owned(),
    ));
    let diff = recv_within(&mut diffs, WAIT, "the diff").await;
    assert_eq!(diff.room.as_deref(), Some("lobby"));
    assert_eq!(diff.data.joins[0].session, "s-3");
    assert_eq!(diff.data.leaves[0].identity.as_deref(), Some("bob"));

    // A cut: the rejoin on the new socket is the same join.
    peer.send(PeerCmd::Abort);
    let rejoin = next_json(&mut peer).await;
    assert_eq!(rejoin, join);
    client.close().await;
    peer.stop().await;
}

/// A room has one join: a plain `join` after a presence join replaces it (and is sent), a new
/// presence join with other info replaces that, and `leave` sends `leave` and takes the presence
/// join out, so the next socket joins nothing. Info over [`MAX_PRESENCE_INFO_BYTES`] is refused
/// with `PresenceInfoTooLarge` before anything is sent.
#[actix_rt::test]
async fn a_room_has_one_join_and_leave_takes_a_presence_join_out() {
    let (mut peer, client) = peer_and_client().await;
    let big = json!("x".repeat(MAX_PRESENCE_INFO_BYTES));
    match client.join_with_presence("r", Some(big)).await {
        Err(Error::PresenceInfoTooLarge { size, limit }) => {
            assert_eq!(
                (size, limit),
                (MAX_PRESENCE_INFO_BYTES + 2, MAX_PRESENCE_INFO_BYTES)
            );
        }
        other => panic!("expected PresenceInfoTooLarge, got {other:?}"),
    }
    client.join_with_presence("r", None).await.expect("join");
    let first = next_json(&mut peer).await;
    assert_eq!(
        (&first["presence"], &first["data"]),
        (&json!(true), &Value::Null)
    );
    client.join("r").await.expect("plain join");
    let plain = next_json(&mut peer).await;
    assert_eq!(plain, json!({ "type": "join", "room": "r" }));
    let info = json!({ "n": 2 });
    client
        .join_with_presence("r", Some(info.clone()))
        .await
        .expect("join with info");
    assert_eq!(next_json(&mut peer).await["data"]["info"], info);
    // The same join again is registered already: nothing is sent (the leave comes next).
    client
        .join_with_presence("r", Some(info))
        .await
        .expect("again");
    client.leave("r").await.expect("leave");
    assert_eq!(
        next_json(&mut peer).await,
        json!({ "type": "leave", "room": "r" })
    );

    // Nothing to rejoin on the next socket: the first frame there is our marker.
    peer.send(PeerCmd::Abort);
    while !matches!(peer.next().await, PeerEvent::Connected(_)) {}
    client.wait_connected(WAIT).await.expect("reconnected");
    client.send_text("marker").await.expect("send");
    assert_eq!(
        next_text(&mut peer).await,
        "marker",
        "the first frame on the new socket"
    );
    client.close().await;
    peer.stop().await;
}

/// The next text frame, verbatim.
async fn next_text(peer: &mut Peer) -> String {
    loop {
        if let PeerEvent::Text(_, t) = peer.next().await {
            return t;
        }
    }
}
