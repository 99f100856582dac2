//! The fault scenarios, on the test kit (`testkit::{TestServer, FaultProxy, StateRecorder}`):
//!
//! 1. half-open link: both heartbeats notice within their timeout plus one interval, and the
//!    client reconnects and rejoins once the link heals;
//! 2. partition while sending 2,000 messages: every accepted message is written, failed or
//!    dropped (counted), none arrives twice, order is kept;
//! 3. restart storm: 200 clients reconnect and rejoin, spread out by jitter;
//! 4. slow link: the client outbox and the server's session queue stay within their bounds and
//!    count what they drop;
//! 5. leaks: 10,000 connect/close cycles through a `Manager` leave no client, actor,
//!    subscription, session or room member behind.
//!
//! They run one at a time (a lock), so that the timing bounds of one are not the load of
//! another, and the process-wide census of scenario 5 counts only its own clients.

mod common;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use actix_ws_manager::client::{
    self, census, wait_census, Census, Client, ConnectionState, Event, Inbound, Manager,
    ManagerConfig,
};
use actix_ws_manager::config::{
    ClientConfig, HeartbeatConfig, OutboxPolicy, Overflow, ReconnectPolicy, ServerConfig,
    SlowConsumerPolicy,
};
use actix_ws_manager::protocol::Joined;
use actix_ws_manager::testkit::{next_matching, FaultProxy, StateRecorder, TestServer};
use actix_ws_manager::WireMessage;
use serde::{Deserialize, Serialize};

use common::WAIT;

#[path = "faults/helpers.rs"]
mod helpers;
use helpers::*;

/// One scenario at a time.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// A numbered message.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Seq {
    n: u32,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pad: String,
}
impl WireMessage for Seq {
    const TYPE: &'static str = "seq";
}

fn seq(n: u32) -> Seq {
    Seq {
        n,
        pad: String::new(),
    }
}

fn server_config() -> ServerConfig {
    ServerConfig::default()
        .heartbeat(Duration::from_secs(10), Duration::from_secs(30))
        .close_timeout(Duration::from_millis(200))
}

fn fast_reconnect() -> ReconnectPolicy {
    ReconnectPolicy::default()
        .backoff(Duration::from_millis(50), 2.0, Duration::from_millis(500))
        .jitter(0.0, None)
}

/// Join `room` and wait for the server's `joined`.
async fn join(
    client: &Client,
    joined: &mut tokio::sync::mpsc::Receiver<Inbound<Joined>>,
    room: &str,
) {
    client.join(room).await.expect("join");
    wait_joined(joined, room).await;
}

async fn wait_joined(joined: &mut tokio::sync::mpsc::Receiver<Inbound<Joined>>, room: &str) {
    next_matching(joined, &format!("joined {room}"), WAIT, |j| {
        j.room.as_deref() == Some(room)
    })
    .await
    .expect("joined");
}

/// 1. A live connection is blackholed: the client's heartbeat (200 ms / 600 ms) and the
///    server's (300 ms / 900 ms) each declare the peer dead within their timeout plus one
///    interval (with 400 ms of slack for a loaded CI machine, and the server's 200 ms close
///    timeout); after `pass()` the client reconnects and rejoins, and a publish reaches it.
#[actix_rt::test]
async fn half_open_link_is_noticed_by_both_heartbeats() {
    let _serial = SERIAL.lock().await;
    let (ci, ct) = (Duration::from_millis(200), Duration::from_millis(600));
    let (si, st) = (Duration::from_millis(300), Duration::from_millis(900));
    let server = TestServer::start(server_config().heartbeat(si, st)).expect("server");
    let proxy = FaultProxy::start(server.addr()).await.expect("proxy");
    let config = ClientConfig::default()
        .heartbeat(HeartbeatConfig::new(ci, ct))
        .reconnect(fast_reconnect());
    let client = client::connect(&proxy.url("/ws"), config).expect("client");
    let mut states = StateRecorder::attach(&client);
    let mut joined = client.subscribe::<Joined>(8);
    let mut seqs = client.subscribe::<Seq>(8);
    states.wait_connected(WAIT).await.expect("connected");
    join(&client, &mut joined, "half").await;

    let blackholed = Instant::now();
    proxy.blackhole();
    let (client_saw, server_saw) = tokio::join!(
        async {
            let code = states
                .wait_disconnected(WAIT)
                .await
                .expect("client notices");
            (code, blackholed.elapsed())
        },
        async {
            server.wait_sessions(0, WAIT).await.expect("server notices");
            blackholed.elapsed()
        }
    );
    let slack = Duration::from_millis(400);
    let (code, client_took) = client_saw;
    assert_eq!(code, 1006, "a dead peer is a 1006");
    assert!(
        client_took >= ct - ci && client_took <= ct + ci + slack,
        "client heartbeat noticed after {client_took:?} (timeout {ct:?}, interval {ci:?})"
    );
    let close_timeout = Duration::from_millis(200);
    assert!(
        server_saw >= st - si && server_saw <= st + si + close_timeout + slack,
        "server heartbeat noticed after {server_saw:?} (timeout {st:?}, interval {si:?})"
    );
    let stats = server.stats().await.expect("stats");
    assert_eq!(stats.heartbeat_timeouts, 1, "{stats:?}");
    assert_eq!(stats.members, 0, "{stats:?}");

    proxy.pass();
    states.wait_connected(WAIT).await.expect("reconnected");
    wait_joined(&mut joined, "half").await;
    let rooms = server.rooms().expect("running");
    assert_eq!(rooms.members("half").await.expect("members").len(), 1);
    rooms.publish("half", &seq(7)).await.expect("publish");
    let got = next_matching(&mut seqs, "seq 7", WAIT, |_| true)
        .await
        .expect("delivered after the rejoin");
    assert_eq!(got.data.n, 7);
    eprintln!("half-open: client noticed after {client_took:?}, server after {server_saw:?}");
    client.close().await;
}

/// 2. 2,000 messages sent across a partition longer than both heartbeat timeouts: 500 before
///    it, 500 into the dead link, 1,000 while the client knows it is disconnected (into an
///    outbox of 512 that drops its oldest). Afterwards `written + failed + dropped == accepted`
///    exactly, the receiver sees no duplicate and every sequence in order, everything before
///    the partition, and the newest 512 after it.
#[actix_rt::test]
async fn partition_while_sending_accounts_for_every_message() {
    let _serial = SERIAL.lock().await;
    let server = TestServer::start(
        server_config().heartbeat(Duration::from_millis(300), Duration::from_millis(900)),
    )
    .expect("server");
    let proxy = FaultProxy::start(server.addr()).await.expect("proxy");
    let sender = client::connect(&proxy.url("/ws"), partition_sender_config()).expect("sender");
    let receiver = client::connect(&server.url(), ClientConfig::default()).expect("receiver");
    let mut states = StateRecorder::attach(&sender);
    let mut sender_joined = sender.subscribe::<Joined>(8);
    let mut receiver_joined = receiver.subscribe::<Joined>(8);
    let mut got = receiver.subscribe::<Seq>(4096);
    states.wait_connected(WAIT).await.expect("sender up");
    receiver.wait_connected(WAIT).await.expect("receiver up");
    join(&receiver, &mut receiver_joined, "p").await;
    join(&sender, &mut sender_joined, "p").await;

    // Before the partition, in steps of 100 that the outbox always holds (a loaded machine's
    // writer may lag the publishing loop; a full outbox would drop the oldest by policy).
    let mut seen = send_first_500_in_steps(&sender, &mut got).await;

    proxy.blackhole();
    for n in 500..1000 {
        sender
            .publish("p", &seq(n))
            .await
            .expect("accepted into the dead link");
    }
    assert_eq!(states.wait_disconnected(WAIT).await.expect("noticed"), 1006);
    for n in 1000..2000 {
        sender
            .publish("p", &seq(n))
            .await
            .expect("accepted while disconnected");
    }
    // Heal only once the server has let go of the old session too, so that nothing stale
    // from the old connection can arrive after the new one.
    server
        .wait_sessions(1, WAIT)
        .await
        .expect("server dropped the sender");
    proxy.pass();
    states.wait_connected(WAIT).await.expect("reconnected");
    wait_joined(&mut sender_joined, "p").await;
    receive_until_1999(&mut got, &mut seen, &sender).await;
    sender.close().await;
    let s = sender.stats();
    assert_eq!(s.accepted, 2000, "{s:?}");
    // One reconnection, for the partition: the burst after it (the outbox flushing 512 at once
    // into a room of two) made nobody look like a slow consumer.
    assert_eq!(s.reconnects, 1, "{s:?}");
    assert_eq!(receiver.stats().reconnects, 0, "{:?}", receiver.stats());
    assert_partition_accounting(&s, &seen);
    eprintln!(
        "partition: {} of 2000 arrived; written {}, dropped {}, failed {}",
        seen.len(),
        s.messages_out,
        s.dropped,
        s.failed
    );
    receiver.close().await;
}

/// 3. 200 clients (a `Manager`) in 10 rooms; the server restarts while it is publishing to
///    them. Every client reconnects and rejoins (a publish afterwards reaches all 200), and
///    the reconnections are spread by the jitter: with 1 s of full jitter, no 100 ms window
///    holds more than 60 of them (without jitter all 200 would land in one).
#[actix_rt::test]
async fn restart_storm_reconnects_everyone_spread_by_jitter() {
    let _serial = SERIAL.lock().await;
    const CLIENTS: usize = 200;
    const ROOMS: usize = 10;
    let mut server = TestServer::start(server_config()).expect("server");
    let manager = Manager::new(storm_manager_config()).expect("manager");
    let connected_at: Arc<Mutex<Vec<Instant>>> = Arc::default();
    let mut clients = connect_storm_clients(&manager, &server.url(), CLIENTS, &connected_at).await;
    for (i, (c, joined, _)) in clients.iter_mut().enumerate() {
        c.wait_connected(WAIT).await.expect("up");
        join(c, joined, &format!("r{}", i % ROOMS)).await;
    }
    assert_eq!(server.stats().await.expect("stats").members, CLIENTS);
    connected_at.lock().expect("lock").clear();

    // Mid-burst: a task publishes into every room until the server it talks to is gone.
    let (burst, started_rx) = spawn_burst(server.rooms().expect("running").clone(), ROOMS);
    started_rx.await.expect("burst under way");
    let restarted = Instant::now();
    server.restart().await.expect("restart");
    let published = burst.await.expect("burst task");
    assert!((500..100_000).contains(&published), "{published}");

    for (i, (c, joined, seqs)) in clients.iter_mut().enumerate() {
        c.wait_connected(WAIT).await.expect("reconnected");
        wait_joined(joined, &format!("r{}", i % ROOMS)).await;
        // The burst may have filled this subscription (nobody read it meanwhile; a full one
        // drops with a reported overflow). The old connection's messages were all routed
        // before the rejoin's reply, so emptying it now leaves room for the publish below.
        while seqs.try_recv().is_ok() {}
    }
    let stats = server.stats().await.expect("stats");
    assert_eq!(
        (stats.sessions, stats.members),
        (CLIENTS, CLIENTS),
        "{stats:?}"
    );
    let rooms = server.rooms().expect("running");
    for r in 0..ROOMS {
        let reached = rooms
            .publish(&format!("r{r}"), &seq(1_000_000))
            .await
            .expect("publish");
        assert_eq!(reached, CLIENTS / ROOMS);
    }
    for (_, _, seqs) in clients.iter_mut() {
        next_matching(seqs, "the publish after the restart", WAIT, |m| {
            m.data.n == 1_000_000
        })
        .await
        .expect("reached");
    }

    let times = connected_at.lock().expect("lock").clone();
    assert_eq!(times.len(), CLIENTS, "each client reconnected once");
    let windows = per_100ms_window(&times, restarted);
    let busiest = windows.values().copied().max().unwrap_or(0);
    eprintln!("restart storm: reconnections per 100 ms window: {windows:?}");
    assert!(
        busiest <= 60,
        "reconnections are spread by jitter, yet {busiest} landed in one 100 ms window: {windows:?}"
    );
    assert_eq!(manager.stats().reconnects, CLIENTS as u64);
    manager.shutdown().await;
    server.stop().await.expect("stop");
}

/// 4. A link throttled to 8 KB/s each way. A member behind it is sent 1,000 messages of 4 KiB:
///    its session queue (64) never holds more than its bound and the server counts what it
///    drops (`DropNewest`). The client behind it sends 1,000 messages of 16 KiB into an outbox
///    of 64 that drops its oldest: the outbox never holds more than 64, the client counts the
///    dropped ones, and the process does not grow by what was sent (20 MiB in all).
#[actix_rt::test]
async fn slow_link_stays_within_bounds_and_counts_drops() {
    let _serial = SERIAL.lock().await;
    let server = TestServer::start(
        server_config()
            .session_queue(64)
            .slow_consumer(SlowConsumerPolicy::DropNewest)
            .tcp_send_buffer(Some(16 * 1024)),
    )
    .expect("server");
    let proxy = FaultProxy::start(server.addr()).await.expect("proxy");
    let client = client::connect(
        &proxy.url("/ws"),
        ClientConfig::default()
            .heartbeat(HeartbeatConfig::disabled())
            .outbox(OutboxPolicy::new(64, Overflow::DropOldest)),
    )
    .expect("client");
    let mut joined = client.subscribe::<Joined>(8);
    client.wait_connected(WAIT).await.expect("up");
    join(&client, &mut joined, "slow").await;
    proxy.throttle(8 * 1024);
    let rss_before = common::oversize::vm_rss_kb();

    // Server to the slow member.
    let rooms = server.rooms().expect("running");
    // Incompressible: permessage-deflate would shrink a repeated pad to almost nothing.
    let pad = common::incompressible(4096, 1);
    for n in 0..1000 {
        rooms
            .publish(
                "slow",
                &Seq {
                    n,
                    pad: pad.clone(),
                },
            )
            .await
            .expect("publish");
    }
    let hub = server.stats().await.expect("stats");
    assert!(hub.queue_high_water <= 64, "{hub:?}");
    assert!(hub.dropped > 0, "a full queue drops and counts: {hub:?}");
    assert_eq!(
        hub.slow_consumer_disconnects, 0,
        "DropNewest keeps the member: {hub:?}"
    );
    assert_eq!(server.sessions(), 1);

    eprintln!(
        "slow link: server dropped {} (queue high water {})",
        hub.dropped, hub.queue_high_water
    );
    slow_client_to_the_server(&client, rss_before).await;
    proxy.pass();
    client.close().await;
    let s = client.stats();
    assert_eq!(s.messages_out + s.failed + s.dropped, s.accepted, "{s:?}");
}

/// The slow client of test 4 to the server: 16 MiB, more than the kernel's socket buffers
/// hold, into an outbox of 64 that drops its oldest; the process does not grow by it.
async fn slow_client_to_the_server(client: &Client, rss_before: u64) {
    let big = common::incompressible(16 * 1024, 2);
    let mut outbox_max = 0;
    for n in 0..1000 {
        client
            .publish(
                "slow",
                &Seq {
                    n,
                    pad: big.clone(),
                },
            )
            .await
            .expect("accepted (the oldest waiting one is dropped when full)");
        outbox_max = outbox_max.max(client.stats().outbox_len);
    }
    let s = client.stats();
    assert!(outbox_max <= 64, "outbox held {outbox_max}");
    assert!(s.dropped > 0, "the outbox dropped and counted: {s:?}");
    let grown = common::oversize::vm_rss_kb().saturating_sub(rss_before);
    assert!(
        grown < 8 * 1024,
        "20 MiB sent through a slow link grew the process by {grown} kB"
    );
    eprintln!(
        "slow link: client dropped {} (outbox max {outbox_max}), RSS +{grown} kB",
        s.dropped
    );
}

/// 5. 10,000 connect / join / subscribe / close cycles through one `Manager` (50 at a time):
///    afterwards the manager tracks nothing, and the process-wide census (clients, actors,
///    subscriptions), the server's sessions and its room members are back where they started.
#[actix_rt::test]
async fn ten_thousand_cycles_leave_nothing_behind() {
    let _serial = SERIAL.lock().await;
    const CYCLES: usize = 10_000;
    const AT_ONCE: usize = 50;
    let server = TestServer::start(server_config()).expect("server");
    // The scenarios run one at a time: what an earlier one left (its manager's arbiters stop
    // on their own threads) must be gone before counting starts.
    let zero = Census::default();
    assert!(
        wait_census(|c| *c == zero, WAIT).await,
        "leftovers before the start: {:?}",
        census()
    );
    let manager = Arc::new(
        Manager::new(
            ManagerConfig::default()
                .connect_rate(None)
                .client(ClientConfig::default().heartbeat(HeartbeatConfig::disabled())),
        )
        .expect("manager"),
    );
    let url = server.url();
    let started = Instant::now();
    let mut workers = Vec::new();
    for w in 0..AT_ONCE {
        let (manager, url) = (manager.clone(), url.clone());
        workers.push(actix_rt::spawn(async move {
            for i in 0..CYCLES / AT_ONCE {
                let c = manager
                    .connect(format!("w{w}-{i}"), &url)
                    .await
                    .expect("connect");
                let mut joined = c.subscribe::<Joined>(4);
                let _events = c.subscribe_events(4);
                c.wait_connected(WAIT).await.expect("up");
                join(&c, &mut joined, &format!("room{}", w % 5)).await;
                c.close().await;
            }
        }));
    }
    for w in workers {
        w.await.expect("worker");
    }
    let took = started.elapsed();
    server
        .wait_sessions(0, WAIT)
        .await
        .expect("every session gone");
    let hub = server.stats().await.expect("stats");
    assert_eq!((hub.sessions, hub.rooms, hub.members), (0, 0, 0), "{hub:?}");
    // Woken by every release; a client the manager still tracked would keep the count up.
    assert!(
        wait_census(|c| *c == zero, WAIT).await,
        "left behind: {:?}",
        census()
    );
    assert!(
        manager.is_empty(),
        "the manager still tracks {}",
        manager.len()
    );
    let stats = manager.stats();
    assert_eq!(stats.connections, 0, "{stats:?}");
    assert_eq!(stats.live, zero, "{stats:?}");
    eprintln!("leaks: {CYCLES} cycles in {took:?}; census {:?}", census());
}
