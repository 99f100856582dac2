//! Presence (issue 22) from the client's side.
//!
//! Against a scripted peer: the frames `Client::join_with_presence` and `Client::presence` put
//! on the wire, the rejoin after a cut with the same flag and info, a join that replaces
//! another, a leave of a presence join, `PresenceDiff`s as typed messages, and info over 1 KiB
//! refused before anything is sent.
//!
//! Against the real server (the test kit's `TestServer` on 127.0.0.1:0, and a `FaultProxy`):
//! three members see each other come and go, one closed and one cut (the server's heartbeat
//! ends it) within the heartbeat's bounds; 200 clients joining at once reach each member in few
//! coalesced diffs and the count is exact; a rejoin after a server restart keeps the presence
//! flag and info. Waits are channels with deadlines, never sleeps.

mod common;

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use actix_ws_manager::client::{connect, Client, Inbound};
use actix_ws_manager::config::{ClientConfig, ServerConfig};
use actix_ws_manager::protocol::{Joined, PresenceDiff, Welcome, MAX_PRESENCE_INFO_BYTES};
use actix_ws_manager::testkit::{FaultProxy, TestServer};
use actix_ws_manager::Error;
use common::peer::{Behaviour, Peer, PeerCmd, PeerEvent};
use common::{client_test_config, recv_until, recv_within, WAIT};
use serde_json::{json, Value};
use tokio::sync::mpsc;

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

/// The server's heartbeat in the tests that cut a member: a silent client is ended within
/// `HB_TIMEOUT + HB_INTERVAL`. The timeout also applies to the members that stay: at 600 ms a
/// busy machine (CI beside a release build) delayed a member's pong past it, the server ended
/// that member too, and its rejoin never showed the leave the test waited for; 3 s rides out
/// such stalls and still bounds the cut member's leave well within the wait.
const HB_INTERVAL: Duration = Duration::from_millis(500);
const HB_TIMEOUT: Duration = Duration::from_secs(3);
/// The server gathers presence changes over at most this long.
const WINDOW: Duration = Duration::from_millis(100);
/// Scheduling slack on a busy test machine.
const SLACK: Duration = Duration::from_secs(1);

/// A client in a room with presence: its session id and its presence diffs.
struct Member {
    client: Client,
    session: String,
    diffs: mpsc::Receiver<Inbound<PresenceDiff>>,
}

/// Connect to `url`, join `room` with presence (and `info`), and wait for the `joined`.
async fn member(url: &str, room: &str, info: Option<Value>, config: ClientConfig) -> Member {
    let client = connect(url, config).expect("connect");
    // Subscribed before the first connection is made, so neither is missed.
    let mut welcome = client.subscribe::<Welcome>(4);
    let mut joined = client.subscribe::<Joined>(4);
    let diffs = client.subscribe::<PresenceDiff>(1024);
    client.join_with_presence(room, info).await.expect("join");
    let session = recv_within(&mut welcome, WAIT, "welcome")
        .await
        .data
        .session;
    recv_within(&mut joined, WAIT, "joined").await;
    Member {
        client,
        session,
        diffs,
    }
}

/// Who `m` sees in `room`: the `presence` answer, with the diffs applied until `done` holds
/// (applying by session absorbs a diff the answer overlaps).
async fn view_until(
    m: &mut Member,
    room: &str,
    done: impl Fn(&BTreeSet<String>) -> bool,
) -> BTreeSet<String> {
    let now = m.client.presence(room).await.expect("presence");
    let view = now.members.into_iter().map(|e| e.session).collect();
    apply_diffs_until(m, room, view, done).await.0
}

/// `view` with `m`'s diffs applied until `done` holds (a join adds, a leave removes); answers
/// the view and how many diffs it took.
async fn apply_diffs_until(
    m: &mut Member,
    room: &str,
    mut view: BTreeSet<String>,
    done: impl Fn(&BTreeSet<String>) -> bool,
) -> (BTreeSet<String>, usize) {
    let mut diffs = 0;
    let deadline = tokio::time::Instant::now() + WAIT;
    while !done(&view) {
        let Ok(Some(diff)) = tokio::time::timeout_at(deadline, m.diffs.recv()).await else {
            panic!("{} saw {view:?} after {diffs} diffs", m.session);
        };
        assert_eq!(diff.room.as_deref(), Some(room));
        diffs += 1;
        view.extend(diff.data.joins.into_iter().map(|e| e.session));
        for gone in diff.data.leaves {
            view.remove(&gone.session);
        }
    }
    (view, diffs)
}

/// The next diff `m` receives that names `session` as a leave; answers when it came.
async fn leave_of(m: &mut Member, session: &str) -> Instant {
    recv_until(&mut m.diffs, WAIT, "a leave", |d| {
        d.data.leaves.iter().any(|e| e.session == session)
    })
    .await;
    Instant::now()
}

/// Three clients join with presence: each sees the others (the first two through their diffs,
/// the newer ones in the `presence` answer), with their info. Then one closes and one is cut by
/// a blackholing `FaultProxy`: the remaining member sees the closed one leave within the
/// coalescing window, and the cut one once the server's heartbeat ended it (within
/// `HB_TIMEOUT + HB_INTERVAL` and the window).
#[actix_rt::test]
async fn three_members_see_joins_and_both_leaves_within_heartbeat_bounds() {
    let server = TestServer::start(ServerConfig::default().heartbeat(HB_INTERVAL, HB_TIMEOUT))
        .expect("server");
    let proxy = FaultProxy::start(server.addr()).await.expect("proxy");
    let info = |n: &str| Some(json!({ "name": n }));
    let mut a = member(&server.url(), "r", info("a"), client_test_config()).await;
    let mut b = member(&server.url(), "r", info("b"), client_test_config()).await;
    let mut c = member(&proxy.url("/ws"), "r", info("c"), client_test_config()).await;
    let all: BTreeSet<String> = [&a, &b, &c].iter().map(|m| m.session.clone()).collect();

    // The first joined before the others: its diffs name both, with their info.
    let joins = recv_until(&mut a.diffs, WAIT, "b's join", |d| !d.data.joins.is_empty()).await;
    assert_eq!(joins.data.joins[0].session, b.session);
    assert_eq!(joins.data.joins[0].info, info("b"));
    for m in [&mut a, &mut b, &mut c] {
        assert_eq!(view_until(m, "r", |v| *v == all).await, all);
    }
    let now = c.client.presence("r").await.expect("presence");
    assert_eq!(now.count, 3);
    let infos: Vec<_> = now.members.iter().map(|e| e.info.clone()).collect();
    assert!(
        infos.contains(&info("a")) && infos.contains(&info("c")),
        "{infos:?}"
    );

    // a closes: b sees it leave at once (the window, no heartbeat involved).
    let closed = Instant::now();
    a.client.close().await;
    let left = leave_of(&mut b, &a.session).await;
    assert!(left - closed < WINDOW + SLACK, "{:?}", left - closed);

    // c goes silent: the server's heartbeat ends it, and b sees it leave.
    let cut = Instant::now();
    proxy.blackhole();
    let left = leave_of(&mut b, &c.session).await;
    let bound = HB_TIMEOUT + HB_INTERVAL + WINDOW + SLACK;
    assert!(left - cut < bound, "{:?} (bound {bound:?})", left - cut);
    let now = b.client.presence("r").await.expect("presence");
    assert_eq!((now.count, now.members.len()), (1, 1));
    assert_eq!(now.members[0].session, b.session);
    b.client.close().await;
    // c's socket goes nowhere: dropping its last handle lets it end in the background.
    drop(c);
}

/// 200 clients join one room at once: each of three members that were there first sees all of
/// them in far fewer diffs than joins (the server gathers them over 100 ms), and the final
/// `count` is exact: 200.
#[actix_rt::test]
async fn two_hundred_joins_at_once_come_in_few_diffs_and_the_count_is_exact() {
    const CLIENTS: usize = 200;
    const WATCHERS: usize = 3;
    let server = TestServer::start(ServerConfig::default()).expect("server");
    let mut watchers = Vec::new();
    for _ in 0..WATCHERS {
        watchers.push(member(&server.url(), "big", None, client_test_config()).await);
    }
    let mut others = Vec::new();
    for _ in WATCHERS..CLIENTS {
        others.push(connect(&server.url(), client_test_config()).expect("connect"));
    }
    for client in &others {
        client.wait_connected(WAIT).await.expect("connected");
    }
    // Every join at once.
    let joins = others.iter().map(|c| c.join_with_presence("big", None));
    for joined in futures_util::future::join_all(joins).await {
        joined.expect("join");
    }

    // Each watcher's diffs alone (no `presence` answer) name every client.
    let first: BTreeSet<String> = watchers.iter().map(|w| w.session.clone()).collect();
    for w in &mut watchers {
        let all = |v: &BTreeSet<String>| v.len() == CLIENTS;
        let (view, diffs) = apply_diffs_until(w, "big", first.clone(), all).await;
        assert_eq!(view.len(), CLIENTS);
        assert!(
            diffs <= CLIENTS / 10,
            "{} diffs for {} joins at once",
            diffs,
            CLIENTS - WATCHERS
        );
    }
    let now = watchers[0].client.presence("big").await.expect("presence");
    assert_eq!((now.count, now.members.len()), (CLIENTS as u64, CLIENTS));
    assert!(!now.truncated);
    let rooms = server.rooms().expect("running");
    assert_eq!(
        rooms.presence("big").await.expect("presence").count,
        CLIENTS as u64
    );

    let closes = others
        .iter()
        .chain(watchers.iter().map(|w| &w.client))
        .map(Client::close);
    futures_util::future::join_all(closes).await;
}

/// A member joined with presence and info rejoins the same way after a server restart: a
/// member of the new server sees its join, with its info, and it receives the diff of a later
/// join (it is a presence listener again).
#[actix_rt::test]
async fn a_rejoin_after_a_server_restart_keeps_the_presence_flag_and_info() {
    let mut server = TestServer::start(ServerConfig::default()).expect("server");
    let proxy = FaultProxy::start(server.addr()).await.expect("proxy");
    let info = json!({ "name": "x", "role": "pilot" });
    let mut x = member(
        &proxy.url("/ws"),
        "r",
        Some(info.clone()),
        client_test_config(),
    )
    .await;
    let mut welcomes = x.client.subscribe::<Welcome>(4);

    // x cannot come back until the fresh member is in.
    proxy.refuse(true);
    server.restart().await.expect("restart");
    let mut fresh = member(&server.url(), "r", None, client_test_config()).await;
    proxy.refuse(false);
    let again = recv_within(&mut welcomes, WAIT, "x's new session")
        .await
        .data
        .session;
    assert_ne!(again, x.session);
    let diff = recv_until(&mut fresh.diffs, WAIT, "x's rejoin", |d| {
        d.data.joins.iter().any(|e| e.session == again)
    })
    .await;
    let entry = diff.data.joins.iter().find(|e| e.session == again);
    assert_eq!(entry.and_then(|e| e.info.as_ref()), Some(&info));

    let later = member(&server.url(), "r", None, client_test_config()).await;
    recv_until(&mut x.diffs, WAIT, "the later join", |d| {
        d.data.joins.iter().any(|e| e.session == later.session)
    })
    .await;
    for m in [&x, &fresh, &later] {
        m.client.close().await;
    }
}
