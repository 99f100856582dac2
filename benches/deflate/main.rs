//! permessage-deflate figures (issue 23), each as deflate against plain in the same run.
//!
//! Run: `cargo bench --bench deflate` (about a minute on 2 cores), `cargo bench --bench
//! deflate -- --quick` for a smoke run. Scale with environment variables:
//!
//! | variable | default (quick) | meaning |
//! | --- | --- | --- |
//! | `DEFLATE_MSGS` | 30000 (2000) | feed messages echoed per variant (1 snapshot : 4 trades) |
//! | `DEFLATE_FEED_CONNS` | 4 | connections sharing the feed |
//! | `DEFLATE_WINDOW` | 8 | feed messages in flight per connection |
//! | `DEFLATE_MEMBERS` | 1000 (200) | room members for the broadcast point |
//! | `DEFLATE_BCAST_SECS` | 10 (3) | seconds of publishing for the broadcast point |
//! | `DEFLATE_RATE` | 20 | publishes per second for the broadcast point |
//! | `DEFLATE_IDLE` | 1000 (200) | idle connections for the memory point |
//! | `DEFLATE_MEM_RUNS` | 3 (1) | memory runs per variant, alternating; the table shows medians |
//! | `DEFLATE_ONLY` | all | comma-separated points: `feed`, `broadcast`, `memory` |
//!
//! Every server is [`server::serve`] with the default [`ServerConfig`] (deflate on; rooms at
//! `/ws`, echo at `/echo`) in a child process (this bench binary re-executed with `__serve`),
//! so that its CPU and RSS are measured apart; the clients are [`Manager`] clients, with the
//! default [`DeflateConfig`] ("deflate") or [`DeflateConfig::off`] ("plain"), against the same
//! server. Everything targets 127.0.0.1 and every wait is bounded.
//!
//! 1. Feed: market-data-like JSON (order-book snapshots of about 2 KiB, trades of 200-400
//!    bytes, prices and sizes moving per message) echoed by `/echo` through a
//!    [`FaultProxy`] in a child process of its own (`__proxy`), which counts the bytes each
//!    way; snapshots and trades run as separate phases so each gets its own bytes per message.
//!    CPU per message: this process (the clients) from `/proc/self/stat`, and the server
//!    child's from `/proc/<pid>/stat` (10 ms ticks).
//! 2. Broadcast: members join one room; member 0 publishes a feed message carrying its send
//!    time (`"t"`, µs) `DEFLATE_RATE` times a second; latency = publish to each member's
//!    receipt, all members, p50/p99, and how many receipts never came.
//! 3. Memory: a fresh server child per variant, and a client child (`__client-idle`) that
//!    connects `DEFLATE_IDLE` Manager clients to it and reports its own VmRSS delta; the server's
//!    delta is read by this process. Measured idle right after connecting, and again after one
//!    2 KiB echo each way per connection (compressed with deflate; one connection at a time, so
//!    the figure is what a connection keeps, not the peak of many messages at once) and a
//!    second of rest, which is where a compressor or inflater kept per connection would show. The bar: with
//!    deflate no more than 1 KB per connection above plain.
//!
//! Layout: `market.rs` (the market-data messages and their send time), `children.rs` (the
//! server and proxy children, and [`children::Proc`], how the parent speaks to a child),
//! `clients.rs` (the Manager of each variant), `feed.rs`, `broadcast.rs` and `memory.rs` (the
//! three points; `memory.rs` also holds the `__client-idle` child), `report.rs` (the table).

use std::time::Duration;

mod broadcast;
mod children;
mod clients;
mod feed;
mod market;
mod memory;
// The `/proc` readers of `wsm load` (as in `benches/e2e`).
#[path = "../common/host.rs"]
mod host;
#[path = "../../src/bin/wsm/procfs.rs"]
mod procfs;
use host::{cores, cpu_us, env_usize, now_us, raise_nofile, rss_of};
mod report;

/// How long any connect phase may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(30);
/// How long one echo reply may take.
const REPLY_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a child may take to answer a line (connect phases included).
const CHILD_TIMEOUT: Duration = Duration::from_secs(90);
/// Receipts are awaited this long after the last publish.
const BCAST_GRACE: Duration = Duration::from_secs(2);

/// The variant's name in the output: `deflate` or `plain`.
fn name(deflate: bool) -> &'static str {
    if deflate {
        "deflate"
    } else {
        "plain"
    }
}

fn main() {
    raise_nofile();
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("__serve") => children::serve_child(),
        Some("__proxy") => children::proxy_child(&args[1..]),
        Some("__client-idle") => memory::client_idle_child(&args[1..]),
        _ => parent(args.iter().any(|a| a == "--quick")),
    }
}

// ---------------------------------------------------------------------------------------------
// The parent.

struct Settings {
    msgs: usize,
    feed_conns: usize,
    window: usize,
    members: usize,
    bsecs: u64,
    rate: u64,
    idle: usize,
    mem_runs: usize,
    only: String,
}

impl Settings {
    fn from_env(quick: bool) -> Settings {
        let (msgs, members, bsecs, idle, mem_runs) = if quick {
            (2000, 200, 3, 200, 1)
        } else {
            (30_000, 1000, 10, 1000, 3)
        };
        Settings {
            msgs: env_usize("DEFLATE_MSGS", msgs).max(10),
            feed_conns: env_usize("DEFLATE_FEED_CONNS", 4).max(1),
            window: env_usize("DEFLATE_WINDOW", 8).max(1),
            members: env_usize("DEFLATE_MEMBERS", members).max(1),
            bsecs: env_usize("DEFLATE_BCAST_SECS", bsecs).max(1) as u64,
            rate: env_usize("DEFLATE_RATE", 20).max(1) as u64,
            idle: env_usize("DEFLATE_IDLE", idle).max(1),
            mem_runs: env_usize("DEFLATE_MEM_RUNS", mem_runs).max(1),
            only: std::env::var("DEFLATE_ONLY").unwrap_or_else(|_| "feed,broadcast,memory".into()),
        }
    }

    fn want(&self, p: &str) -> bool {
        self.only.split(',').any(|o| o.trim() == p)
    }
}

fn parent(quick: bool) {
    let s = Settings::from_env(quick);
    println!(
        "deflate: {} cores, feed {} msgs over {} conns x {} in flight, broadcast {} members x {}s at {}/s, idle {} x {} runs",
        cores(),
        s.msgs,
        s.feed_conns,
        s.window,
        s.members,
        s.bsecs,
        s.rate,
        s.idle,
        s.mem_runs
    );
    let mut rows = Vec::new();
    if s.want("feed") {
        feed::feed_point(&s, &mut rows);
    }
    if s.want("broadcast") {
        broadcast::broadcast_point(&s, &mut rows);
    }
    if s.want("memory") {
        memory::memory_point(&s, &mut rows);
    }
    report::print_table(&rows);
}
