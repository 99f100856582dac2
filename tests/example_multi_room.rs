//! `examples/multi_room_client.rs`, driven through a server restart: the example's `run` joins
//! two rooms, publishes from its input lines, and after the server comes back on the same port
//! it reconnects and rejoins both rooms by itself; it shows who is in a room and who comes and
//! goes (presence).

mod common;

#[path = "../examples/multi_room_client.rs"]
mod multi_room_client;

use std::time::Duration;

use actix_ws_manager::config::{ClientConfig, HeartbeatConfig, ReconnectPolicy};
use actix_ws_manager::server;
use common::{recv_until, recv_within, test_config, WAIT};
use tokio::sync::mpsc;

/// Fast retries and no jitter, so the reconnect happens within milliseconds of the restart.
fn fast_reconnect() -> ClientConfig {
    ClientConfig::default()
        .heartbeat(HeartbeatConfig::new(
            Duration::from_secs(5),
            Duration::from_secs(10),
        ))
        .reconnect(
            ReconnectPolicy::default()
                .backoff(Duration::from_millis(20), 2.0, Duration::from_millis(200))
                .jitter(0.0, None),
        )
}

async fn expect_line(out: &mut mpsc::Receiver<String>, line: &str) {
    recv_until(out, WAIT, line, |l: &String| l == line).await;
}

/// Messages flow in both rooms (typed lines published, received with room and sender); after
/// `Server::shutdown` and a new server on the same address, the example reconnects, rejoins both
/// rooms without help, and messages in each room (from the server and from its own input) reach
/// it again; closing the input ends `run` with `Ok`.
#[actix_rt::test]
async fn multi_room_client_rejoins_every_room_after_a_server_restart() {
    let first = server::serve("127.0.0.1:0", "/ws", "/echo", test_config()).expect("server");
    let addr = first.local_addr();
    let url = first.url();
    let rooms = vec!["lobby".to_owned(), "news".to_owned()];
    let (line_tx, line_rx) = mpsc::channel(16);
    let (out_tx, mut out) = mpsc::channel(256);
    let client = actix_rt::spawn(async move {
        multi_room_client::run(&url, &rooms, fast_reconnect(), line_rx, out_tx).await
    });

    expect_line(&mut out, "* joined lobby").await;
    expect_line(&mut out, "* joined news").await;
    for room in ["lobby", "news"] {
        line_tx
            .send(format!("{room}: hello {room}"))
            .await
            .expect("input");
        let got = recv_until(&mut out, WAIT, "own publish", |l: &String| {
            l.starts_with(&format!("[{room}] s-")) && l.ends_with(&format!(": hello {room}"))
        })
        .await;
        assert!(got.contains(room), "{got}");
    }

    first.shutdown().await.expect("shutdown");
    recv_until(&mut out, WAIT, "close 1001", |l: &String| {
        l.starts_with("* disconnected (1001")
    })
    .await;
    let second = server::serve(addr, "/ws", "/echo", test_config()).expect("same port again");

    // The rejoin is the example's own doing (send_on_connect), seen as fresh `joined` answers.
    expect_line(&mut out, "* connected").await;
    let mut rejoined = Vec::new();
    for _ in 0..2 {
        let line = recv_until(&mut out, WAIT, "rejoin", |l: &String| {
            l.starts_with("* joined ")
        })
        .await;
        rejoined.push(line);
    }
    rejoined.sort();
    assert_eq!(rejoined, ["* joined lobby", "* joined news"]);

    for room in ["lobby", "news"] {
        let reached = second
            .rooms()
            .publish_json(room, &format!("after restart in {room}"))
            .await
            .expect("publish");
        assert_eq!(reached, 1, "the example is a member of {room} again");
        expect_line(
            &mut out,
            &format!("[{room}] server: after restart in {room}"),
        )
        .await;
        line_tx
            .send(format!("{room}: typed again"))
            .await
            .expect("input");
        recv_until(&mut out, WAIT, "own publish after restart", |l: &String| {
            l.starts_with(&format!("[{room}] s-")) && l.ends_with(": typed again")
        })
        .await;
    }

    drop(line_tx); // stdin closes
    let result = tokio::time::timeout(WAIT, client)
        .await
        .expect("run returns once its input ends")
        .expect("task");
    assert!(result.is_ok(), "{result:?}");
    second.shutdown().await.expect("shutdown");
}

/// Piped input (`echo 'lobby: hi' | multi_room_client lobby`): the input ends at once, and `run`
/// still waits for its own message to come back before it returns, so it is printed.
#[actix_rt::test]
async fn piped_input_waits_for_its_answers() {
    let server = server::serve("127.0.0.1:0", "/ws", "/echo", test_config()).expect("serve");
    let (line_tx, line_rx) = mpsc::channel(4);
    line_tx.send("lobby: hi".to_owned()).await.expect("line");
    drop(line_tx);
    let (out_tx, mut out_rx) = mpsc::channel(64);
    let rooms = vec!["lobby".to_owned()];
    let result =
        multi_room_client::run(&server.url(), &rooms, fast_reconnect(), line_rx, out_tx).await;
    assert!(result.is_ok(), "{result:?}");
    let mut lines = Vec::new();
    while let Ok(line) = out_rx.try_recv() {
        lines.push(line);
    }
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("[lobby] s-") && l.ends_with(": hi")),
        "{lines:?}"
    );
    server.shutdown().await.expect("shutdown");
}

/// Presence: after its join the example says who is in the room (`* in lobby (1): s-N`, itself),
/// then prints another client's join and leave as `* presence lobby: +s-M` and `-s-M`.
#[actix_rt::test]
async fn shows_who_is_in_a_room_and_who_comes_and_goes() {
    use actix_ws_manager::protocol::{Joined, Welcome};
    let server = server::serve("127.0.0.1:0", "/ws", "/echo", test_config()).expect("serve");
    let (line_tx, line_rx) = mpsc::channel(4);
    let (out_tx, mut out) = mpsc::channel(64);
    let url = server.url();
    let rooms = vec!["lobby".to_owned()];
    let example = actix_rt::spawn(async move {
        multi_room_client::run(&url, &rooms, fast_reconnect(), line_rx, out_tx).await
    });
    let alone = recv_until(&mut out, WAIT, "who is in", |l: &String| {
        l.starts_with("* in lobby")
    })
    .await;
    assert!(alone.starts_with("* in lobby (1): s-"), "{alone}");

    let other = actix_ws_manager::client::connect(&server.url(), fast_reconnect()).expect("other");
    let mut welcome = other.subscribe::<Welcome>(2);
    let mut joined = other.subscribe::<Joined>(2);
    other.join("lobby").await.expect("join");
    let session = recv_within(&mut welcome, WAIT, "welcome")
        .await
        .data
        .session;
    recv_within(&mut joined, WAIT, "joined").await;
    expect_line(&mut out, &format!("* presence lobby: +{session}")).await;
    other.close().await;
    expect_line(&mut out, &format!("* presence lobby: -{session}")).await;

    drop(line_tx);
    let result = tokio::time::timeout(WAIT, example)
        .await
        .expect("ends")
        .expect("task");
    assert!(result.is_ok(), "{result:?}");
    server.shutdown().await.expect("shutdown");
}
