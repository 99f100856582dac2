//! End-to-end benchmarks, ours vs bare tokio-tungstenite, side by side in one run, each reported
//! as a ratio (this machine is shared and noisy, so absolute figures move by tens of percent).
//!
//! Run: `cargo bench --bench e2e` (about two minutes on 2 cores), `cargo bench --bench e2e --
//! --quick` for a smoke run. Scale with environment variables:
//!
//! | variable | default | meaning |
//! | --- | --- | --- |
//! | `E2E_ECHO` | `100x16,1000x1` | echo points: connections x messages in flight, comma-separated |
//! | `E2E_SECS` | 5 | seconds each throughput point is measured |
//! | `E2E_IDLE` | 1000 | idle connections for the memory points |
//! | `E2E_MEMBERS` | 1000 | room members for the broadcast point |
//! | `E2E_BCAST_SECS` | 10 | seconds of publishing for the broadcast point |
//! | `E2E_RATE` | 20 | publishes per second (one sender) for the broadcast point |
//! | `E2E_RUNS` | 1 | repetitions; the table shows the median ratio of each point |
//! | `E2E_ONLY` | all | comma-separated points to run: `client`, `server`, `memory`, `broadcast`, `tool` |
//!
//! Every server runs in a child process (this bench binary, re-executed with `__serve ...`), so
//! that client and server memory are measured apart: server RSS from `/proc/<child>/status`
//! before and after the idle connections, client RSS by a child process of its own
//! (`__client-idle ...`) that measures its own VmRSS before and after connecting. Everything
//! targets 127.0.0.1. Each point is bounded in time (connect phases time out after 30 s).
//!
//! Servers ("bare" is the better of the two bare servers at each point):
//! - `ours`: [`actix_ws_manager::server::serve`] with the default [`ServerConfig`] (rooms at
//!   `/ws`, echo at `/echo`), actix-web's default of one worker per core.
//! - `tt`: tokio-tungstenite echo (or broadcast) server, one current-thread runtime per core
//!   accepting on one shared listener, default `WebSocketConfig` (128 KiB read buffer); `tt4k`
//!   the same with a 4 KiB read buffer.
//! - `actors`: a plain actix-web-actors echo actor (`ws::start`), one worker per core; for the
//!   broadcast point, the usual actix chat-server shape (one room actor holding every member's
//!   `Recipient`, `do_send` to each, `ctx.text` in the member).
//!
//! Clients: ours is the [`Manager`] (one arbiter per core); bare is tokio-tungstenite on one
//! current-thread runtime per core. Echo is closed loop with a window: each connection keeps
//! that many messages in flight (a 64-byte pad in an echo envelope) and sends one more per
//! reply.
//!
//! Goals, each a ratio in the same run: server `/echo` at or above
//! actix-web-actors and at least 0.9 of the tt current-thread server at 100 x 16 and 1000 x 1;
//! client echo at least 1.0 of the bare tt client; server RSS per idle connection at or below
//! actix-web-actors; client RSS per idle connection at or below the tt client with a 4 KiB
//! read buffer; broadcast p99 at 1000 members at or below actix-web-actors.
//!
//! Layout: `servers.rs` (the servers, in child processes), `clients.rs` (the bare client pool,
//! the Manager, and what each measurement does with them), `points.rs` (the points, by group),
//! `report.rs` (the table), `tool.rs` (`wsm load` itself: the generator budget).

use std::time::Duration;

mod clients;
mod points;
// The `/proc` readers of `wsm load`: one copy for both programs (a bench cannot use a binary's
// modules, and these readers are no part of the library's API).
#[path = "../common/host.rs"]
mod host;
#[path = "../../src/bin/wsm/procfs.rs"]
mod procfs;
use host::{cores, cpu_us, env_usize, now_us, raise_nofile, rss_of};
mod report;
mod servers;
mod tool;

/// How long any connect phase may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(30);
/// How long an echo reply may take before the connection stops measuring.
const REPLY_TIMEOUT: Duration = Duration::from_secs(5);

/// An echo request of the rooms protocol, with 64 bytes of padding.
fn echo_payload(seq: u64) -> String {
    format!(
        r#"{{"type":"echo","data":{{"seq":{seq},"pad":"{}"}},"id":{seq}}}"#,
        "x".repeat(64)
    )
}

fn main() {
    raise_nofile();
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("__serve") => servers::serve_child(&args[1..]),
        Some("__client-idle") => clients::client_idle_child(&args[1..]),
        _ => parent(args.iter().any(|a| a == "--quick")),
    }
}

/// The parent: run every wanted group of points `E2E_RUNS` times, then print the table.
fn parent(quick: bool) {
    let settings = points::Settings::from_env(quick);
    println!("{}", settings.describe());

    // Each run produces rows; the table shows, per point, the run with the median ratio.
    let mut runs_rows: Vec<Vec<report::Row>> = Vec::new();
    for run in 0..settings.runs {
        println!("run {}/{}", run + 1, settings.runs);
        let mut rows = Vec::new();
        if settings.want("client") {
            points::client_echo(&settings, &mut rows);
        }
        if settings.want("server") {
            points::server_echo(&settings, &mut rows);
        }
        if settings.want("memory") {
            points::memory(&settings, &mut rows);
        }
        if settings.want("broadcast") {
            points::broadcast_latency(&settings, &mut rows);
        }
        if settings.want("tool") {
            tool::tool(&settings, &mut rows);
        }
        runs_rows.push(rows);
    }
    report::print_table(&runs_rows);
}
