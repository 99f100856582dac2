//! 2. Broadcast latency to many members: member 0 publishes to one room, every member records
//!    how long each publication took to reach it.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use actix_ws_manager::client::{Client, Inbound, Manager};
use bytestring::ByteString;
use tokio::sync::mpsc;

use crate::children::{server_stats, wait_no_sessions, Proc};
use crate::clients::{connect_all, manager};
use crate::market::{send_time, with_send_time, Feed};
use crate::report::Row;
use crate::{cpu_us, name, now_us, Settings, BCAST_GRACE, CONNECT_TIMEOUT};

struct Bcast {
    p50: u64,
    p99: u64,
    missing: u64,
    sent: u64,
    up: usize,
    server_cpu_us: u64,
    client_cpu_us: u64,
    compressions: u64,
}

pub(crate) fn broadcast_point(s: &Settings, rows: &mut Vec<Row>) {
    let (mut srv, port) = Proc::start_listening(&["__serve"]);
    let url = format!("ws://127.0.0.1:{port}/ws");
    let mut out = Vec::new();
    for deflate in [true, false] {
        let b = broadcast_variant(s, deflate, &url, &mut srv);
        println!(
            "  broadcast {} to {} members ({} publishes): p50 {} us, p99 {} us, missing {}, server CPU {} ms, clients' CPU {} ms, {} compressions",
            name(deflate),
            b.up,
            b.sent,
            b.p50,
            b.p99,
            b.missing,
            b.server_cpu_us / 1000,
            b.client_cpu_us / 1000,
            b.compressions
        );
        out.push(b);
        wait_no_sessions(&mut srv);
    }
    let (d, p) = (&out[0], &out[1]);
    let m = s.members;
    rows.push(Row {
        figure: format!(
            "broadcast p50 ({m} members, {}/s for {} s)",
            s.rate, s.bsecs
        ),
        deflate: d.p50 as f64,
        plain: p.p50 as f64,
        unit: "us",
        note: "publish -> each member's receipt, all Manager clients in one process".into(),
    });
    rows.push(Row {
        figure: format!("broadcast p99 ({m} members)"),
        deflate: d.p99 as f64,
        plain: p.p99 as f64,
        unit: "us",
        note: format!(
            "missing: deflate {} of {}, plain {} of {}",
            d.missing,
            d.sent * d.up as u64,
            p.missing,
            p.sent * p.up as u64
        ),
    });
    rows.push(Row {
        figure: format!("broadcast: server CPU per publish ({m} members)"),
        deflate: d.server_cpu_us as f64 / d.sent.max(1) as f64,
        plain: p.server_cpu_us as f64 / p.sent.max(1) as f64,
        unit: "us",
        note: format!(
            "deflate_compressions: {} for {} publishes (deflate), {} (plain)",
            d.compressions, d.sent, p.compressions
        ),
    });
    rows.push(Row {
        figure: format!("broadcast: members' CPU per publish ({m} members)"),
        deflate: d.client_cpu_us as f64 / d.sent.max(1) as f64,
        plain: p.client_cpu_us as f64 / p.sent.max(1) as f64,
        unit: "us",
        note: "this process: every member's receipt (inflate with deflate), and the publisher"
            .into(),
    });
}

fn percentile(sorted: &[u64], p: f64) -> u64 {
    sorted
        .get(((sorted.len() as f64 * p) as usize).min(sorted.len().saturating_sub(1)))
        .copied()
        .unwrap_or(0)
}

/// The members of one variant, connected and joined.
struct Members {
    clients: Vec<Client>,
    rxs: Vec<mpsc::Receiver<Inbound<ByteString>>>,
    /// How many joined (as the server counts them).
    joined: usize,
}

/// The receipts of every member: their latencies, and how many members have finished.
struct Receipts {
    latencies: Arc<Mutex<Vec<u64>>>,
    done: Arc<AtomicUsize>,
    /// How many members' receivers were spawned.
    spawned: usize,
}

fn broadcast_variant(s: &Settings, deflate: bool, url: &str, srv: &mut Proc) -> Bcast {
    let room = format!("bench-{}", name(deflate));
    let (members, rate, bsecs) = (s.members, s.rate, s.bsecs);
    let sys = actix_rt::System::new();
    sys.block_on(async move {
        let manager = manager(deflate);
        let m = join_members(&manager, srv, &room, url, members, deflate).await;
        let start = Instant::now() + Duration::from_millis(500);
        let end = start + Duration::from_secs(bsecs);
        let stop = end + BCAST_GRACE;
        let capacity = members * (rate * bsecs) as usize;
        let receipts = spawn_receivers(&manager, &m.clients, m.rxs, stop, capacity);
        // Member 0 publishes.
        let compressions0 = server_stats(srv).2;
        let (cpu0, ccpu0) = (cpu_us(srv.pid()), cpu_us(None));
        actix_rt::time::sleep_until(start.into()).await;
        let sent = match m.clients.first() {
            Some(publisher) => publish(publisher, &room, rate, end).await,
            None => 0,
        };
        actix_rt::time::sleep_until(stop.into()).await;
        let cpu = cpu_us(srv.pid()).saturating_sub(cpu0);
        let client_cpu = cpu_us(None).saturating_sub(ccpu0);
        let compressions = server_stats(srv).2.saturating_sub(compressions0);
        let all = collect_latencies(&receipts).await;
        manager.shutdown().await;
        Bcast {
            p50: percentile(&all, 0.50),
            p99: percentile(&all, 0.99),
            missing: (sent * m.joined as u64).saturating_sub(all.len() as u64),
            sent,
            up: m.joined,
            server_cpu_us: cpu,
            client_cpu_us: client_cpu,
            compressions,
        }
    })
}

/// Connect `members` clients, then subscribe each and join `room`, and wait (bounded) until
/// every connected member joined.
async fn join_members(
    manager: &Manager,
    srv: &mut Proc,
    room: &str,
    url: &str,
    members: usize,
    deflate: bool,
) -> Members {
    let base_members = server_stats(srv).1;
    let (clients, up) = connect_all(manager, "m", url, members).await;
    let mut rxs = Vec::with_capacity(clients.len());
    for (i, c) in clients.iter().enumerate() {
        rxs.push(c.subscribe_text(1024));
        if let Err(e) = c.join(room).await {
            eprintln!("  join m{i}: {e}");
        }
    }
    let deadline = Instant::now() + CONNECT_TIMEOUT;
    while server_stats(srv).1 < base_members + up as u64 && Instant::now() < deadline {
        actix_rt::time::sleep(Duration::from_millis(100)).await;
    }
    let joined = server_stats(srv).1.saturating_sub(base_members) as usize;
    if up < members || joined < up {
        eprintln!(
            "  broadcast {}: {up} of {members} connected, {joined} joined",
            name(deflate)
        );
    }
    Members {
        clients,
        rxs,
        joined,
    }
}

/// On each member's arbiter, a task that records the latency of every publication it
/// receives until `stop`.
fn spawn_receivers(
    manager: &Manager,
    clients: &[Client],
    rxs: Vec<mpsc::Receiver<Inbound<ByteString>>>,
    stop: Instant,
    capacity: usize,
) -> Receipts {
    let latencies = Arc::new(Mutex::new(Vec::with_capacity(capacity)));
    let done = Arc::new(AtomicUsize::new(0));
    let mut spawned = 0;
    for (c, mut rx) in clients.iter().zip(rxs) {
        let (latencies, done) = (latencies.clone(), done.clone());
        let task = async move {
            let mut got = Vec::new();
            let stop = tokio::time::Instant::from_std(stop);
            while let Ok(Some(m)) = tokio::time::timeout_at(stop, rx.recv()).await {
                if let Some(t) = send_time(&m.data) {
                    got.push(now_us().saturating_sub(t));
                }
            }
            if let Ok(mut all) = latencies.lock() {
                all.extend(got);
            }
            done.fetch_add(1, Ordering::Relaxed);
        };
        if manager.spawn_on(c.name(), task) {
            spawned += 1;
        }
    }
    Receipts {
        latencies,
        done,
        spawned,
    }
}

/// Publish a feed message carrying its send time to `room` `rate` times a second until `end`:
/// how many were sent.
async fn publish(publisher: &Client, room: &str, rate: u64, end: Instant) -> u64 {
    let mut sent = 0;
    let mut feed = Feed::new(2);
    let mut tick = actix_rt::time::interval(Duration::from_micros(1_000_000 / rate));
    while Instant::now() < end {
        tick.tick().await;
        let data = with_send_time(&feed.next_message(), now_us());
        let publish = format!(r#"{{"type":"publish","room":"{room}","data":{data}}}"#);
        if publisher.send_text(publish).await.is_err() {
            break;
        }
        sent += 1;
    }
    sent
}

/// Every latency recorded, sorted, once the receivers finished (waiting at most 5 s).
async fn collect_latencies(r: &Receipts) -> Vec<u64> {
    let bound = Instant::now() + Duration::from_secs(5);
    while r.done.load(Ordering::Relaxed) < r.spawned && Instant::now() < bound {
        actix_rt::time::sleep(Duration::from_millis(20)).await;
    }
    let mut all = r.latencies.lock().map(|v| v.clone()).unwrap_or_default();
    all.sort_unstable();
    all
}
