//! Presence on one node, from raw WebSocket peers and server code: what a `presence_diff` holds
//! and when it comes (never the receiver's own join, before the joiner's first message), the
//! `presence` answer (exact count, the list limit, the join check), `info` (1 KiB, and who may
//! set it: the join, the token, the auth hook), a flapping client that cannot grow anything,
//! and `Rooms::presence` / `Rooms::subscribe_presence`. Each test starts its own server on
//! 127.0.0.1:0. The client side (`Client::join_with_presence`) is tested in tests/presence.rs.

mod common;

use actix_ws_manager::config::JwtConfig;
use actix_ws_manager::server::{self, Authenticated, Rooms};
use common::{start_server, test_config, Peer, WAIT};
use serde_json::{json, Value};

/// Join `room` with presence (and `info`); answers the `joined`, passing over the diffs and
/// room messages that arrive before it.
async fn join_presence(peer: &mut Peer, room: &str, info: Option<Value>) -> Value {
    let mut join = json!({"type":"join","room":room,"id":1,"presence":true});
    if let Some(info) = info {
        join["data"] = json!({ "info": info });
    }
    peer.text(&join.to_string()).await;
    // What came before the answer (diffs, room messages) is passed over.
    loop {
        let got = peer.json().await;
        if got["type"] == "joined" {
            return got;
        }
        assert!(
            got["type"] == "presence_diff" || got["type"] == "message",
            "joined expected: {got}"
        );
    }
}

/// The sessions a diff list names.
fn sessions(list: &Value) -> Vec<String> {
    list.as_array()
        .map(|l| {
            l.iter()
                .filter_map(|e| e["session"].as_str())
                .map(str::to_owned)
                .collect()
        })
        .unwrap_or_default()
}

/// A listener sees a newcomer's join, with its info, before the newcomer's first message, and
/// never its own join; a leave names the member that left; the newcomer's own diffs never name
/// itself.
#[actix_rt::test]
async fn diffs_come_before_the_joiners_messages_and_never_name_the_receiver() {
    let server = start_server(test_config());
    let (mut a, a_id) = Peer::rooms(&server.url()).await;
    join_presence(&mut a, "r", Some(json!({"name":"A"}))).await;
    let (mut b, b_id) = Peer::rooms(&server.url()).await;
    join_presence(&mut b, "r", Some(json!({"name":"B"}))).await;
    b.text(r#"{"type":"publish","room":"r","data":"hi"}"#).await;
    let diff = a.json().await;
    assert_eq!(diff["type"], "presence_diff", "the diff first: {diff}");
    assert_eq!(diff["room"], "r");
    assert_eq!(
        diff["data"]["joins"],
        json!([{"session":b_id,"info":{"name":"B"}}])
    );
    assert_eq!(diff["data"]["leaves"], json!([]));
    let msg = a.json().await;
    assert_eq!(
        (msg["type"].as_str(), msg["from"].as_str()),
        (Some("message"), Some(&*b_id))
    );
    // b's own diff (if any) names a, never b.
    let mut seen = Vec::new();
    for _ in 0..2 {
        let got = b.json().await;
        if got["type"] == "presence_diff" {
            seen.extend(sessions(&got["data"]["joins"]));
        }
    }
    assert!(!seen.contains(&b_id), "{seen:?}");
    b.text(r#"{"type":"leave","room":"r","id":2}"#).await;
    let left = a.json().await;
    assert_eq!(left["type"], "presence_diff", "{left}");
    assert_eq!(sessions(&left["data"]["leaves"]), vec![b_id]);
    assert_eq!(sessions(&left["data"]["joins"]), Vec::<String>::new());
    drop(a_id);
    server.shutdown().await.expect("shutdown");
}

/// `presence` answers the exact count and at most `presence_list_limit` members (then
/// `"truncated":true`), in session order, to members and to anyone the join check lets in;
/// others get `forbidden_room`. Server code sees the same through `Rooms::presence`.
#[actix_rt::test]
async fn presence_answers_count_and_limited_list_under_the_join_check() {
    let rooms = Rooms::start(test_config().presence_list_limit(5))
        .expect("rooms")
        .with_join_check(|_, room| room != "secret");
    let server = server::serve_with("127.0.0.1:0", "/ws", "/echo", rooms).expect("server");
    let mut peers = Vec::new();
    for _ in 0..8 {
        let (mut p, _) = Peer::rooms(&server.url()).await;
        p.text(r#"{"type":"join","room":"big","id":1}"#).await;
        assert_eq!(p.json().await["type"], "joined");
        peers.push(p);
    }
    let (mut outsider, _) = Peer::rooms(&server.url()).await;
    outsider
        .text(r#"{"type":"presence","room":"big","id":7}"#)
        .await;
    let answer = outsider.json().await;
    assert_eq!(answer["type"], "presence", "{answer}");
    assert_eq!(answer["id"], 7);
    assert_eq!(answer["room"], "big");
    assert_eq!(answer["data"]["count"], 8);
    assert_eq!(answer["data"]["truncated"], true);
    let listed = sessions(&answer["data"]["members"]);
    assert_eq!(listed, ["s-1", "s-2", "s-3", "s-4", "s-5"]);
    outsider
        .text(r#"{"type":"presence","room":"secret","id":8}"#)
        .await;
    let refused = outsider.json().await;
    assert_eq!(refused["data"]["code"], "forbidden_room", "{refused}");
    outsider
        .text(r#"{"type":"presence","room":"empty","id":9}"#)
        .await;
    let empty = outsider.json().await;
    assert_eq!(empty["data"], json!({"count":0,"members":[]}));
    let seen = server.rooms().presence("big").await.expect("presence");
    assert_eq!(
        (seen.count, seen.members.len(), seen.truncated),
        (8, 5, true)
    );
    server.shutdown().await.expect("shutdown");
}

/// `info` over 1 KiB is refused with `bad_data` and the join is not made; 1 KiB exactly is
/// taken.
#[actix_rt::test]
async fn info_over_one_kib_is_refused() {
    let server = start_server(test_config());
    let (mut a, _) = Peer::rooms(&server.url()).await;
    let big =
        json!({"type":"join","room":"r","id":3,"presence":true,"data":{"info":"x".repeat(1100)}});
    a.text(&big.to_string()).await;
    let refused = a.json().await;
    assert_eq!(refused["type"], "error", "{refused}");
    assert_eq!(
        (refused["id"].as_u64(), refused["data"]["code"].as_str()),
        (Some(3), Some("bad_data"))
    );
    let seen = server.rooms().presence("r").await.expect("presence");
    assert_eq!(seen.count, 0);
    // 1024 bytes of JSON: a 1022-character string and its quotes.
    let exact =
        json!({"type":"join","room":"r","id":4,"presence":true,"data":{"info":"y".repeat(1022)}});
    a.text(&exact.to_string()).await;
    assert_eq!(a.json().await["type"], "joined");
    let seen = server.rooms().presence("r").await.expect("presence");
    assert_eq!(seen.members[0].info, Some(json!("y".repeat(1022))));
    server.shutdown().await.expect("shutdown");
}

/// The identity and info in presence come from the token (`sub`, `info`) over what the join
/// says, and from the auth hook over both.
#[actix_rt::test]
async fn token_and_hook_set_identity_and_info() {
    use jsonwebtoken::{encode, EncodingKey, Header};
    let secret = b"a-test-secret-of-at-least-32-bytes!!";
    let exp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs()
        + 60;
    let token = encode(
        &Header::default(),
        &json!({"sub":"alice","exp":exp,"info":{"name":"Alice"}}),
        &EncodingKey::from_secret(secret),
    )
    .expect("token");
    let rooms = Rooms::start(test_config())
        .expect("rooms")
        .with_jwt(JwtConfig::hs256(secret).expect("jwt"));
    let server = server::serve_with("127.0.0.1:0", "/ws", "/echo", rooms).expect("server");
    let url = format!("{}?token={token}", server.url());
    let (mut a, a_id) = Peer::rooms(&url).await;
    join_presence(&mut a, "r", Some(json!({"name":"forged"}))).await;
    let seen = server.rooms().presence("r").await.expect("presence");
    let member = &seen.members[0];
    assert_eq!(member.session, a_id);
    assert_eq!(member.identity.as_deref(), Some("alice"));
    assert_eq!(member.info, Some(json!({"name":"Alice"})));
    server.shutdown().await.expect("shutdown");

    let rooms = Rooms::start(test_config())
        .expect("rooms")
        .with_async_auth_info(|_req| async {
            Ok(Authenticated {
                identity: Some("bob".into()),
                info: Some(json!({"role":"admin"})),
            })
        });
    let server = server::serve_with("127.0.0.1:0", "/ws", "/echo", rooms).expect("server");
    let (mut b, _) = Peer::rooms(&server.url()).await;
    join_presence(&mut b, "r", Some(json!({"role":"forged"}))).await;
    let seen = server.rooms().presence("r").await.expect("presence");
    assert_eq!(seen.members[0].identity.as_deref(), Some("bob"));
    assert_eq!(seen.members[0].info, Some(json!({"role":"admin"})));
    server.shutdown().await.expect("shutdown");
}

/// A client that joins and leaves a room 2000 times as fast as it can cannot grow the hub:
/// entries go back to the one listener, a listener gets few diffs (a join and leave inside one
/// window cancel out), and the room's presence ends exact.
#[actix_rt::test]
async fn a_flapping_client_grows_nothing() {
    let server = start_server(test_config());
    let rooms = server.rooms().clone();
    let (mut watcher, _) = Peer::rooms(&server.url()).await;
    join_presence(&mut watcher, "r", None).await;
    let (mut flapper, _) = Peer::rooms(&server.url()).await;
    const FLAPS: usize = 2000;
    for i in 0..FLAPS {
        flapper
            .text(&format!(
                r#"{{"type":"join","room":"r","presence":true,"id":{i}}}"#
            ))
            .await;
        flapper
            .text(&format!(r#"{{"type":"leave","room":"r","id":{i}}}"#))
            .await;
    }
    // Every answer arrives (2 per flap), so every command was handled.
    let mut answers = 0;
    while answers < 2 * FLAPS {
        let got = tokio::time::timeout(WAIT, flapper.json())
            .await
            .expect("answers");
        if got["type"] == "joined" || got["type"] == "left" {
            answers += 1;
        }
    }
    let seen = rooms.presence("r").await.expect("presence");
    assert_eq!(seen.count, 1, "only the watcher is left");
    assert_eq!(rooms.metrics().presence_entries, 1);
    // A last join and a message: the room's waiting diff goes out before the message, so the
    // watcher has every diff once it reads the message.
    flapper.text(r#"{"type":"join","room":"r","id":9}"#).await;
    flapper
        .text(r#"{"type":"publish","room":"r","data":"end"}"#)
        .await;
    // The watcher's diffs: each names the flapper at most once per list; far fewer than flaps.
    let mut diffs = 0;
    let mut balance: i64 = 0;
    loop {
        let got = tokio::time::timeout(WAIT, watcher.json())
            .await
            .expect("the watcher reads");
        if got["type"] == "message" {
            assert_eq!(got["data"], "end");
            break;
        }
        assert_eq!(got["type"], "presence_diff", "{got}");
        assert!(sessions(&got["data"]["joins"]).len() <= 1, "{got}");
        assert!(sessions(&got["data"]["leaves"]).len() <= 1, "{got}");
        balance += sessions(&got["data"]["joins"]).len() as i64;
        balance -= sessions(&got["data"]["leaves"]).len() as i64;
        diffs += 1;
    }
    assert_eq!(
        balance, 1,
        "every join seen was followed by its leave, but the last"
    );
    assert!(diffs < FLAPS / 4, "{diffs} diffs for {FLAPS} flaps");
    server.shutdown().await.expect("shutdown");
}

/// Server code watching a room gets every join and leave (its own included: it has none),
/// gathered like the members'; a session that ends leaves at once.
#[actix_rt::test]
async fn server_code_subscribes_to_a_rooms_presence() {
    let server = start_server(test_config());
    let mut changes = server
        .rooms()
        .subscribe_presence("r", 64)
        .await
        .expect("subscribe");
    let (mut a, a_id) = Peer::rooms(&server.url()).await;
    join_presence(&mut a, "r", Some(json!(1))).await;
    let diff = tokio::time::timeout(WAIT, changes.recv())
        .await
        .expect("a diff")
        .expect("open");
    assert_eq!(diff.joins.len(), 1);
    assert_eq!(diff.joins[0].session, a_id);
    assert_eq!(diff.joins[0].info, Some(json!(1)));
    drop(a); // the socket goes away: the session ends and leaves
    let diff = tokio::time::timeout(WAIT, changes.recv())
        .await
        .expect("a diff")
        .expect("open");
    assert_eq!(diff.leaves.len(), 1);
    assert_eq!(diff.leaves[0].session, a_id);
    assert!(server.rooms().subscribe_presence("r", 0).await.is_err());
    assert!(server
        .rooms()
        .subscribe_presence("no spaces", 8)
        .await
        .is_err());
    server.shutdown().await.expect("shutdown");
}

/// A member that joins again with other `info` is shown with it: the listeners get the old
/// entry's leave and the new one's join in one diff, and `presence` lists the new info.
#[actix_rt::test]
async fn joining_again_with_other_info_changes_the_entry() {
    let server = start_server(test_config());
    let (mut a, _) = Peer::rooms(&server.url()).await;
    join_presence(&mut a, "r", None).await;
    let (mut b, b_id) = Peer::rooms(&server.url()).await;
    join_presence(&mut b, "r", Some(json!({"status":"away"}))).await;
    // A message after each change: the diff before it is complete.
    b.text(r#"{"type":"publish","room":"r","data":1}"#).await;
    let first = a.json().await;
    assert_eq!(
        sessions(&first["data"]["joins"]),
        vec![b_id.clone()],
        "{first}"
    );
    assert_eq!(a.json().await["type"], "message");
    join_presence(&mut b, "r", Some(json!({"status":"here"}))).await;
    b.text(r#"{"type":"publish","room":"r","data":2}"#).await;
    let change = a.json().await;
    assert_eq!(change["type"], "presence_diff", "{change}");
    let old = json!([{"session":b_id,"info":{"status":"away"}}]);
    let new = json!([{"session":b_id,"info":{"status":"here"}}]);
    assert_eq!(
        (&change["data"]["leaves"], &change["data"]["joins"]),
        (&old, &new)
    );
    assert_eq!(a.json().await["type"], "message");
    let seen = server.rooms().presence("r").await.expect("presence");
    assert_eq!(seen.count, 2);
    let b_entry = seen
        .members
        .iter()
        .find(|m| m.session == b_id)
        .expect("b listed");
    assert_eq!(b_entry.info, Some(json!({"status":"here"})));
    server.shutdown().await.expect("shutdown");
}
