//! 3. RSS per connection, idle and after one echo, of the server and of the clients: a fresh
//!    server child and a fresh idle-client child (`__client-idle`, here) per run.

use std::time::{Duration, Instant};

use crate::children::{say, server_stats, stdin_lines, Proc};
use crate::clients::{connect_all, manager};
use crate::market::Feed;
use crate::report::Row;
use crate::{name, rss_of, Settings, CHILD_TIMEOUT, REPLY_TIMEOUT};

/// `__client-idle URL N deflate|plain`: connect N Manager clients to URL (the rooms endpoint),
/// rest a second, print `IDLE <bytes per connection> <connected>`; on `NEXT`, one 2 KiB echo
/// request per connection (one connection after the other), rest a second, print `WARM <bytes per connection> <replies>`;
/// exit when stdin closes.
pub(crate) fn client_idle_child(args: &[String]) {
    let url = args.first().cloned().unwrap_or_default();
    let n: usize = args.get(1).and_then(|v| v.parse().ok()).unwrap_or(100);
    let deflate = args.get(2).map(String::as_str) != Some("plain");
    let sys = actix_rt::System::new();
    sys.block_on(async move {
        let mut lines = stdin_lines();
        let manager = manager(deflate);
        let before = rss_of(None);
        let (clients, up) = connect_all(&manager, "c", &url, n).await;
        actix_rt::time::sleep(Duration::from_secs(1)).await;
        let idle = rss_of(None).saturating_sub(before) / up.max(1) as u64;
        say(&format!("IDLE {idle} {up}"));
        if lines.recv().await.as_deref() != Some("NEXT") {
            return;
        }
        // One connection at a time, so that what is measured is what each connection keeps
        // afterwards, not the peak of a thousand messages in flight at once.
        let mut feed = Feed::new(99);
        let mut replies = 0;
        let deadline = Instant::now() + CHILD_TIMEOUT / 2;
        for c in &clients {
            if Instant::now() > deadline {
                eprintln!("  client-idle: echoes stopped at the deadline");
                break;
            }
            let request = format!(r#"{{"type":"echo","data":{},"id":1}}"#, feed.snapshot());
            let mut rx = c.subscribe_text(8);
            if c.send_text(request).await.is_err() {
                continue;
            }
            let reply = async {
                while let Some(m) = rx.recv().await {
                    if m.data.contains("\"echo\"") {
                        return true;
                    }
                }
                false
            };
            if let Ok(true) = actix_rt::time::timeout(REPLY_TIMEOUT, reply).await {
                replies += 1;
            }
        }
        actix_rt::time::sleep(Duration::from_secs(1)).await;
        let warm = rss_of(None).saturating_sub(before) / up.max(1) as u64;
        say(&format!("WARM {warm} {replies}"));
        // Keep every connection open until the parent has read the server's RSS.
        while lines.recv().await.is_some() {}
        drop(clients);
    });
}

/// One variant's memory figures, on a fresh server child and a fresh client child.
fn memory_run(n: usize, deflate: bool) -> Memory {
    let (mut srv, port) = Proc::start_listening(&["__serve"]);
    let url = format!("ws://127.0.0.1:{port}/ws");
    let base = rss_of(srv.pid());
    let mut cli = Proc::start(&["__client-idle", &url, &n.to_string(), name(deflate)]);
    let idle = cli.numbers(CHILD_TIMEOUT);
    let server_idle = rss_of(srv.pid()).saturating_sub(base);
    let warm = cli.ask("NEXT", CHILD_TIMEOUT);
    let server_warm = rss_of(srv.pid()).saturating_sub(base);
    let compressions = server_stats(&mut srv).2;
    drop(cli);
    let up = idle.get(1).copied().unwrap_or(0);
    Memory {
        up,
        replies: warm.get(1).copied().unwrap_or(0),
        server_idle: server_idle / up.max(1),
        client_idle: idle.first().copied().unwrap_or(0),
        server_warm: server_warm / up.max(1),
        client_warm: warm.first().copied().unwrap_or(0),
        compressions,
    }
}

struct Memory {
    up: u64,
    replies: u64,
    server_idle: u64,
    client_idle: u64,
    server_warm: u64,
    client_warm: u64,
    compressions: u64,
}

pub(crate) fn memory_point(s: &Settings, rows: &mut Vec<Row>) {
    let n = s.idle;
    // Alternating variants, each run on fresh processes; the table shows the medians.
    let mut runs: [Vec<Memory>; 2] = [Vec::new(), Vec::new()];
    for _ in 0..s.mem_runs {
        for (v, deflate) in [true, false].into_iter().enumerate() {
            let m = memory_run(n, deflate);
            print_run(deflate, &m);
            runs[v].push(m);
        }
    }
    let out = [median_run(&runs[0]), median_run(&runs[1])];
    memory_rows(s, &runs, &out, rows);
}

/// One line for a run: connections, replies and each figure.
fn print_run(deflate: bool, m: &Memory) {
    println!(
        "  memory {}: {} connected, server {} B/conn idle, {} B/conn after one echo ({} replies, {} compressions); client {} B/conn idle, {} B/conn after",
        name(deflate),
        m.up,
        m.server_idle,
        m.server_warm,
        m.replies,
        m.compressions,
        m.client_idle,
        m.client_warm
    );
}

/// Each figure's median over the runs `v`.
fn median_run(v: &[Memory]) -> Memory {
    let med = |f: fn(&Memory) -> u64| -> u64 {
        let mut x: Vec<u64> = v.iter().map(f).collect();
        x.sort_unstable();
        x.get(x.len() / 2).copied().unwrap_or(0)
    };
    Memory {
        up: med(|m| m.up),
        replies: med(|m| m.replies),
        server_idle: med(|m| m.server_idle),
        client_idle: med(|m| m.client_idle),
        server_warm: med(|m| m.server_warm),
        client_warm: med(|m| m.client_warm),
        compressions: med(|m| m.compressions),
    }
}

/// The issue's bar: with deflate no more than 1 KB per connection above plain.
fn bar(dv: u64, pv: u64) -> String {
    let extra = dv as i64 - pv as i64;
    let met = if extra <= 1024 { "met" } else { "MISSED" };
    format!("deflate {extra:+} B/conn; bar +1 KB: {met}")
}

/// With several runs, every run's figure `f`, deflate's and plain's (empty with one run).
fn all_runs(s: &Settings, runs: &[Vec<Memory>; 2], f: fn(&Memory) -> u64) -> String {
    let list = |v: &[Memory]| {
        v.iter()
            .map(|m| f(m).to_string())
            .collect::<Vec<_>>()
            .join("/")
    };
    if s.mem_runs > 1 {
        format!(
            "; medians of {} runs ({} vs {})",
            s.mem_runs,
            list(&runs[0]),
            list(&runs[1])
        )
    } else {
        String::new()
    }
}

/// The four rows: server and client RSS per connection, idle and after one echo.
fn memory_rows(s: &Settings, runs: &[Vec<Memory>; 2], out: &[Memory; 2], rows: &mut Vec<Row>) {
    let (d, p) = (&out[0], &out[1]);
    let n = s.idle;
    let all = |f: fn(&Memory) -> u64| all_runs(s, runs, f);
    for (figure, dv, pv, extra) in [
        (
            format!("server RSS per idle connection ({n})"),
            d.server_idle,
            p.server_idle,
            all(|m| m.server_idle),
        ),
        (
            format!("client RSS per idle connection ({n})"),
            d.client_idle,
            p.client_idle,
            all(|m| m.client_idle),
        ),
        (
            format!("server RSS per connection, idle after one 2 KiB echo ({n})"),
            d.server_warm,
            p.server_warm,
            format!(
                "{}; {} echoes, {} compressed (deflate), {} (plain)",
                all(|m| m.server_warm),
                d.replies,
                d.compressions,
                p.compressions
            ),
        ),
        (
            format!("client RSS per connection, idle after one 2 KiB echo ({n})"),
            d.client_warm,
            p.client_warm,
            all(|m| m.client_warm),
        ),
    ] {
        rows.push(Row {
            figure,
            deflate: dv as f64,
            plain: pv as f64,
            unit: "B",
            note: format!("{}{extra}", bar(dv, pv)),
        });
    }
}
