//! Presence across nodes through a real Redis (issue 22, test 3), spoken raw: members on two
//! nodes see each other's joins and leaves and both nodes count them all; a node that stops
//! (gracefully, or cut off from Redis so that only its liveness key's TTL can tell) leaves the
//! other's presence within 20 s; a Redis restart is survived and presence counts every member
//! again; a room whose members left leaves no key in Redis.

mod common;

use std::time::{Duration, Instant};

use actix_ws_manager::server::backplane::{RedisBackplane, RedisConfig};
use actix_ws_manager::server::Rooms;
use actix_ws_manager::testkit::{FaultProxy, TestServer};
use common::cluster::{eventually, redis_addr, redis_conn, subscribers, TIMEOUT};
use common::{test_config, Peer, RedisServer, WAIT};
use futures_util::{SinkExt, StreamExt};
use serde_json::Value;

/// A node `id` on the Redis at `url`, refreshing its liveness every `refresh` with `ttl`.
fn node(url: String, id: &str, refresh: Duration, ttl: Duration) -> TestServer {
    let id = id.to_owned();
    TestServer::start_with(move || {
        let config = RedisConfig::new(url.clone())
            .node_id(id.clone())
            .timeout(TIMEOUT)
            .presence_refresh(refresh)
            .presence_ttl(ttl);
        Rooms::start_with_backplane(test_config(), RedisBackplane::new(config)?)
    })
    .expect("node starts")
}

/// A raw member of `server`'s `room` joined with presence; answers it and its session name.
async fn listener(server: &TestServer, room: &str) -> (Peer, String) {
    let (mut peer, session) = Peer::rooms(&server.url()).await;
    peer.text(&format!(
        r#"{{"type":"join","room":"{room}","id":1,"presence":true}}"#
    ))
    .await;
    let joined = peer.json().await;
    assert_eq!(joined["type"], "joined", "{joined}");
    (peer, session)
}

/// The sessions of a diff's or an answer's list.
fn sessions(list: &Value) -> Vec<String> {
    list.as_array()
        .into_iter()
        .flatten()
        .filter_map(|e| e["session"].as_str().map(str::to_owned))
        .collect()
}

/// Read `peer`'s frames (answering pings) until a `presence_diff` whose `key` list names
/// `session`, for at most `within` and 10,000 frames.
async fn diff_naming(peer: &mut Peer, key: &str, session: &str, within: Duration) -> Value {
    let deadline = tokio::time::Instant::now() + within;
    for _ in 0..10_000 {
        let next = tokio::time::timeout_at(deadline, peer.framed.next())
            .await
            .unwrap_or_else(|_| panic!("no presence_diff with {key} {session} in {within:?}"));
        match next {
            Some(Ok(awc::ws::Frame::Ping(p))) => {
                let _ = peer.framed.send(awc::ws::Message::Pong(p)).await;
            }
            Some(Ok(awc::ws::Frame::Text(t))) => {
                let v: Value = serde_json::from_slice(&t).expect("JSON");
                if v["type"] == "presence_diff"
                    && sessions(&v["data"][key]).contains(&session.into())
                {
                    return v;
                }
            }
            Some(Ok(_)) => {}
            other => panic!("the connection ended waiting for a diff: {other:?}"),
        }
    }
    panic!("no presence_diff with {key} {session} in 10000 frames");
}

/// Wait (within `within`) until `server`'s presence of `room` counts and lists exactly
/// `expected` (sorted session names).
async fn converge(server: &TestServer, room: &str, expected: &[&str], within: Duration) {
    let rooms = server.rooms().expect("running").clone();
    let mut expected: Vec<String> = expected.iter().map(|s| (*s).to_owned()).collect();
    expected.sort();
    eventually(within, async || {
        let seen = rooms.presence(room).await.map_err(|e| e.to_string())?;
        let mut names: Vec<String> = seen.members.iter().map(|m| m.session.clone()).collect();
        names.sort();
        if seen.count == expected.len() as u64 && names == expected {
            Ok(())
        } else {
            Err(format!(
                "count {} {names:?}, expected {expected:?}",
                seen.count
            ))
        }
    })
    .await
    .unwrap_or_else(|why| panic!("presence of {room} did not converge: {why}"));
}

/// `presence` asked by a client counts every node's members too.
async fn client_count(peer: &mut Peer, room: &str) -> u64 {
    peer.text(&format!(r#"{{"type":"presence","room":"{room}","id":77}}"#))
        .await;
    for _ in 0..1000 {
        let v = peer.json().await;
        if v["type"] == "presence" && v["id"] == 77 {
            return v["data"]["count"].as_u64().expect("a count");
        }
    }
    panic!("no presence answer in 1000 frames");
}

/// Members on two nodes see each other's joins and count each other; a node that stops
/// gracefully takes its members out of the other's presence (with their leaves) at once, not
/// after the TTL; once every member is gone no presence key is left in Redis.
#[actix_rt::test]
async fn two_nodes_see_each_other_and_a_stopped_node_leaves() {
    let redis = RedisServer::start();
    let (refresh, ttl) = (Duration::from_millis(500), Duration::from_secs(15));
    let a = node(redis.url(), "a", refresh, ttl);
    let mut b = node(redis.url(), "b", refresh, ttl);
    let (mut x, xs) = listener(&a, "r").await;
    let (mut y, ys) = listener(&b, "r").await;
    assert!(ys.starts_with("b."), "{ys}");
    let started = Instant::now();
    let diff = diff_naming(&mut x, "joins", &ys, WAIT).await;
    assert_eq!(diff["room"], "r");
    eprintln!("a's member saw b's join after {:?}", started.elapsed());
    converge(&a, "r", &[&xs, &ys], WAIT).await;
    converge(&b, "r", &[&xs, &ys], WAIT).await;
    assert_eq!(client_count(&mut x, "r").await, 2);
    assert_eq!(client_count(&mut y, "r").await, 2);

    let stopping = Instant::now();
    b.stop().await.expect("b stops");
    diff_naming(&mut x, "leaves", &ys, Duration::from_secs(20)).await;
    converge(&a, "r", &[&xs], WAIT).await;
    let took = stopping.elapsed();
    eprintln!("b's member left a's presence {took:?} after b stopped");
    assert!(
        took < ttl,
        "a graceful stop is not left to the TTL: {took:?}"
    );

    drop(x);
    let mut conn = redis_conn(&redis);
    eventually(WAIT, async || {
        let keys: Vec<String> = redis::cmd("KEYS")
            .arg("wsm:room:{r}:presence")
            .query(&mut conn)
            .map_err(|e| e.to_string())?;
        let index: Vec<String> = redis::cmd("KEYS")
            .arg("wsm:room:{node:a}:rooms:*")
            .query(&mut conn)
            .map_err(|e| e.to_string())?;
        if keys.is_empty() && index.is_empty() {
            Ok(())
        } else {
            Err(format!("left in Redis: {keys:?} {index:?}"))
        }
    })
    .await
    .expect("no presence keys once the room is empty");
}

/// A node cut off from Redis (its link blackholed: it cannot clean up, only its liveness key's
/// TTL can tell) leaves the other node's presence, with the leaves sent, within 20 s with the
/// default refresh (5 s) and TTL (15 s); once its link is back it registers its members again.
#[actix_rt::test]
async fn a_node_cut_off_from_redis_is_swept_within_twenty_seconds() {
    let redis = RedisServer::start();
    let proxy = FaultProxy::start(redis_addr(&redis))
        .await
        .expect("proxy starts");
    let (refresh, ttl) = (Duration::from_secs(5), Duration::from_secs(15));
    let a = node(format!("redis://{}", proxy.addr()), "a", refresh, ttl);
    let b = node(redis.url(), "b", refresh, ttl);
    let (_x, xs) = listener(&a, "r").await;
    let (mut y, ys) = listener(&b, "r").await;
    converge(&b, "r", &[&xs, &ys], WAIT).await;

    let cut = Instant::now();
    proxy.blackhole();
    let leave = diff_naming(&mut y, "leaves", &xs, Duration::from_secs(21)).await;
    let took = cut.elapsed();
    eprintln!("a's member left b's presence {took:?} after a was cut off: {leave}");
    // TTL + one refresh, plus the sweep's own round trips.
    assert!(took <= Duration::from_millis(20_500), "{took:?}");
    converge(&b, "r", &[&ys], WAIT).await;
    assert_eq!(b.rooms().expect("b").metrics().presence_swept, 1);

    proxy.pass();
    proxy.reset();
    converge(&b, "r", &[&xs, &ys], Duration::from_secs(30)).await;
    eprintln!(
        "a's member back in b's presence {:?} after the cut",
        cut.elapsed()
    );
}

/// A Redis restart loses every presence key; both nodes register their members again within
/// a refresh of reconnecting, counts are exact again, and diffs flow again.
#[actix_rt::test]
async fn presence_reconverges_after_a_redis_restart() {
    let mut redis = RedisServer::start();
    let (refresh, ttl) = (Duration::from_millis(300), Duration::from_secs(2));
    let a = node(redis.url(), "a", refresh, ttl);
    let b = node(redis.url(), "b", refresh, ttl);
    let (mut x, xs) = listener(&a, "r").await;
    let (_y, ys) = listener(&b, "r").await;
    converge(&a, "r", &[&xs, &ys], WAIT).await;

    redis.restart();
    let restarted = Instant::now();
    converge(&a, "r", &[&xs, &ys], WAIT).await;
    converge(&b, "r", &[&xs, &ys], WAIT).await;
    eprintln!(
        "presence exact again {:?} after the restart",
        restarted.elapsed()
    );
    let mut conn = redis_conn(&redis);
    let fields: u64 = redis::cmd("HLEN")
        .arg("wsm:room:{r}:presence")
        .query(&mut conn)
        .expect("HLEN");
    assert_eq!(fields, 2, "one field per member, none twice");
    assert!(a.rooms().expect("a").metrics().presence_resyncs >= 1);

    // Diffs flow again once both nodes receive the room again.
    eventually(WAIT, async || match subscribers(&mut conn, "wsm:room:r") {
        2 => Ok(()),
        n => Err(format!("{n} subscribers")),
    })
    .await
    .expect("both nodes subscribe the room again");
    let (_z, zs) = listener(&b, "r").await;
    diff_naming(&mut x, "joins", &zs, WAIT).await;
    converge(&a, "r", &[&xs, &ys, &zs], WAIT).await;
}
