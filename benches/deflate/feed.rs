//! 1. The feed: bytes on the wire and CPU per message, snapshots and trades as separate
//!    phases, echoed by the server's `/echo` through the byte-counting proxy child.

use std::time::{Duration, Instant};

use actix_ws_manager::client::{Client, Inbound};
use bytestring::ByteString;
use tokio::sync::mpsc;

use crate::children::{server_stats, Proc};
use crate::clients::{connect_all, manager};
use crate::market::Feed;
use crate::report::Row;
use crate::{cpu_us, name, Settings, REPLY_TIMEOUT};

/// One phase of the feed (snapshots or trades) with one variant.
#[derive(Default, Clone, Copy)]
struct Phase {
    msgs: u64,
    replies: u64,
    mismatched: u64,
    json_bytes: u64,
    up: u64,
    down: u64,
    client_cpu_us: u64,
    server_cpu_us: u64,
    compressions: u64,
    secs: f64,
}

impl Phase {
    fn per(&self, v: u64) -> f64 {
        v as f64 / self.replies.max(1) as f64
    }
}

/// The feed's messages, made once and sent with both variants.
struct Messages {
    /// Sent before any phase is measured.
    warm: Vec<ByteString>,
    snaps: Vec<ByteString>,
    trades: Vec<ByteString>,
}

impl Messages {
    /// `s.msgs` messages, one snapshot to four trades, and 200 of warm-up; described on stdout.
    fn new(s: &Settings) -> Messages {
        let mut feed = Feed::new(1);
        let n_snap = (s.msgs / 5).max(1);
        let snaps: Vec<ByteString> = (0..n_snap).map(|_| feed.snapshot().into()).collect();
        let trades: Vec<ByteString> = (0..s.msgs - n_snap).map(|_| feed.trade().into()).collect();
        let warm: Vec<ByteString> = (0..200).map(|_| feed.next_message().into()).collect();
        let (min_t, max_t) = trades.iter().fold((usize::MAX, 0), |(lo, hi), t| {
            (lo.min(t.len()), hi.max(t.len()))
        });
        println!(
            "feed: {} snapshots (mean {} B), {} trades ({min_t}-{max_t} B, mean {} B)",
            snaps.len(),
            mean_len(&snaps),
            trades.len(),
            mean_len(&trades)
        );
        Messages {
            warm,
            snaps,
            trades,
        }
    }
}

pub(crate) fn feed_point(s: &Settings, rows: &mut Vec<Row>) {
    let messages = Messages::new(s);
    let (mut srv, port) = Proc::start_listening(&["__serve"]);
    let (mut proxy, proxy_port) = Proc::start_listening(&["__proxy", &port.to_string()]);
    let url = format!("ws://127.0.0.1:{proxy_port}/echo");
    let mut results = Vec::new();
    for deflate in [true, false] {
        let phases = feed_variant(
            s,
            deflate,
            &url,
            &mut srv,
            &mut proxy,
            [&messages.warm, &messages.snaps, &messages.trades],
        );
        print_phases(deflate, &phases);
        results.push(phases);
    }
    let [d, p] = [&results[0], &results[1]];
    byte_rows(d, p, rows);
    cpu_rows(s, d, p, rows);
    rate_row(&results, rows);
}

/// One line per phase of a variant: its messages, replies, bytes and CPU per message.
fn print_phases(deflate: bool, phases: &[Phase]) {
    for (kind, p) in ["snapshots", "trades"].iter().zip(phases) {
        println!(
            "  {} {kind}: {} msgs, {} replies ({} mismatched), up {:.0} B/msg, down {:.0} B/msg, client {:.1} us/msg, server {:.1} us/msg, {} compressions, {:.0} msg/s",
            name(deflate),
            p.msgs,
            p.replies,
            p.mismatched,
            p.per(p.up),
            p.per(p.down),
            p.per(p.client_cpu_us),
            p.per(p.server_cpu_us),
            p.compressions,
            p.replies as f64 / p.secs.max(1e-9)
        );
    }
}

/// `f` summed over the whole feed (one snapshot to four trades), per reply.
fn per_message(ph: &[Phase], f: &dyn Fn(&Phase) -> u64) -> f64 {
    let n: u64 = ph.iter().map(|x| x.replies).sum();
    ph.iter().map(f).sum::<u64>() as f64 / n.max(1) as f64
}

/// Wire bytes per message: each phase each way, then the whole feed both ways.
fn byte_rows(d: &[Phase], p: &[Phase], rows: &mut Vec<Row>) {
    for (i, kind) in ["snapshot", "trade"].iter().enumerate() {
        let (dd, pp) = (&d[i], &p[i]);
        rows.push(Row {
            figure: format!("feed: wire bytes per {kind}, client -> server"),
            deflate: dd.per(dd.up),
            plain: pp.per(pp.up),
            unit: "B",
            note: format!(
                "JSON {:.0} B; through a FaultProxy, framing included",
                pp.per(pp.json_bytes)
            ),
        });
        rows.push(Row {
            figure: format!("feed: wire bytes per {kind}, server -> client"),
            deflate: dd.per(dd.down),
            plain: pp.per(pp.down),
            unit: "B",
            note: format!(
                "echo of `/echo`; server compressed {} of {} with deflate",
                dd.compressions, dd.replies
            ),
        });
    }
    rows.push(Row {
        figure: "feed (1 snapshot : 4 trades): wire bytes per message, both ways".into(),
        deflate: per_message(d, &|x| x.up + x.down),
        plain: per_message(p, &|x| x.up + x.down),
        unit: "B",
        note: format!(
            "JSON {:.0} B per message each way",
            per_message(p, &|x| x.json_bytes)
        ),
    });
}

/// CPU per message of the whole feed: the clients (this process), then the server child.
fn cpu_rows(s: &Settings, d: &[Phase], p: &[Phase], rows: &mut Vec<Row>) {
    rows.push(Row {
        figure: "feed: client CPU per message (send + receive its echo)".into(),
        deflate: per_message(d, &|x| x.client_cpu_us),
        plain: per_message(p, &|x| x.client_cpu_us),
        unit: "us",
        note: format!(
            "this process (Manager, {} conns); snapshots {:.1} vs {:.1} us, trades {:.1} vs {:.1} us",
            s.feed_conns,
            d[0].per(d[0].client_cpu_us),
            p[0].per(p[0].client_cpu_us),
            d[1].per(d[1].client_cpu_us),
            p[1].per(p[1].client_cpu_us)
        ),
    });
    rows.push(Row {
        figure: "feed: server CPU per message (receive + echo)".into(),
        deflate: per_message(d, &|x| x.server_cpu_us),
        plain: per_message(p, &|x| x.server_cpu_us),
        unit: "us",
        note: format!(
            "server child; snapshots {:.1} vs {:.1} us, trades {:.1} vs {:.1} us",
            d[0].per(d[0].server_cpu_us),
            p[0].per(p[0].server_cpu_us),
            d[1].per(d[1].server_cpu_us),
            p[1].per(p[1].server_cpu_us)
        ),
    });
}

/// Echoes per second of each variant, and what went missing or came back altered in either.
fn rate_row(results: &[Vec<Phase>], rows: &mut Vec<Row>) {
    let rate = |ph: &Vec<Phase>| {
        ph.iter().map(|x| x.replies).sum::<u64>() as f64
            / ph.iter().map(|x| x.secs).sum::<f64>().max(1e-9)
    };
    let mismatched: u64 = results.iter().flatten().map(|x| x.mismatched).sum();
    let missing: u64 = results
        .iter()
        .flatten()
        .map(|x| x.msgs - x.replies.min(x.msgs))
        .sum();
    rows.push(Row {
        figure: "feed: echo rate".into(),
        deflate: rate(&results[0]),
        plain: rate(&results[1]),
        unit: "msg/s",
        note: format!("2 cores shared by client, proxy and server; {missing} missing, {mismatched} not echoed verbatim"),
    });
}

fn mean_len(v: &[ByteString]) -> usize {
    v.iter().map(|m| m.len()).sum::<usize>() / v.len().max(1)
}

/// The feed with one variant: a warm-up, then each phase's figures (snapshots, trades).
fn feed_variant(
    s: &Settings,
    deflate: bool,
    url: &str,
    srv: &mut Proc,
    proxy: &mut Proc,
    [warm, snaps, trades]: [&Vec<ByteString>; 3],
) -> Vec<Phase> {
    let sys = actix_rt::System::new();
    sys.block_on(async move {
        let manager = manager(deflate);
        let (clients, up) = connect_all(&manager, "f", url, s.feed_conns).await;
        if up < s.feed_conns {
            eprintln!(
                "  feed {}: only {up} of {} connected",
                name(deflate),
                s.feed_conns
            );
        }
        let mut rxs: Vec<_> = clients
            .iter()
            .map(|c| c.subscribe_text(s.window * 2 + 8))
            .collect();
        let _ = echo_all(&clients, &mut rxs, warm, s.window).await;
        let mut phases = Vec::new();
        for msgs in [snaps, trades] {
            let b0 = proxy.ask("BYTES", Duration::from_secs(10));
            let c0 = server_stats(srv).2;
            let (cpu0, scpu0) = (cpu_us(None), cpu_us(srv.pid()));
            let t0 = Instant::now();
            let (replies, mismatched) = echo_all(&clients, &mut rxs, msgs, s.window).await;
            let secs = t0.elapsed().as_secs_f64();
            let (cpu1, scpu1) = (cpu_us(None), cpu_us(srv.pid()));
            // Let the proxy forward the last bytes before reading its counters.
            actix_rt::time::sleep(Duration::from_millis(100)).await;
            let b1 = proxy.ask("BYTES", Duration::from_secs(10));
            let c1 = server_stats(srv).2;
            let at = |v: &Vec<u64>, i: usize| v.get(i).copied().unwrap_or(0);
            phases.push(Phase {
                msgs: msgs.len() as u64,
                replies,
                mismatched,
                json_bytes: msgs.iter().map(|m| m.len() as u64).sum::<u64>() * replies
                    / msgs.len().max(1) as u64,
                up: at(&b1, 0).saturating_sub(at(&b0, 0)),
                down: at(&b1, 1).saturating_sub(at(&b0, 1)),
                client_cpu_us: cpu1.saturating_sub(cpu0),
                server_cpu_us: scpu1.saturating_sub(scpu0),
                compressions: c1.saturating_sub(c0),
                secs,
            });
        }
        drop(rxs);
        manager.shutdown().await;
        phases
    })
}

/// Echo `msgs` through `clients` (message `i` on connection `i % conns`), `window` in flight
/// per connection: (replies, replies that were not the message sent).
async fn echo_all(
    clients: &[Client],
    rxs: &mut [mpsc::Receiver<Inbound<ByteString>>],
    msgs: &[ByteString],
    window: usize,
) -> (u64, u64) {
    let conns = clients.len().max(1);
    let runs = clients
        .iter()
        .zip(rxs.iter_mut())
        .enumerate()
        .map(|(k, (c, rx))| {
            let mine: Vec<&ByteString> = msgs.iter().skip(k).step_by(conns).collect();
            async move {
                let (mut sent, mut got, mut bad) = (0usize, 0u64, 0u64);
                while sent < mine.len().min(window) {
                    if c.send_text(mine[sent].clone()).await.is_err() {
                        return (got, bad);
                    }
                    sent += 1;
                }
                while (got as usize) < mine.len() {
                    match actix_rt::time::timeout(REPLY_TIMEOUT, rx.recv()).await {
                        Ok(Some(m)) => {
                            if m.data != *mine[got as usize] {
                                bad += 1;
                            }
                            got += 1;
                        }
                        _ => break,
                    }
                    if sent < mine.len() {
                        if c.send_text(mine[sent].clone()).await.is_err() {
                            break;
                        }
                        sent += 1;
                    }
                }
                (got, bad)
            }
        });
    futures_util::future::join_all(runs)
        .await
        .into_iter()
        .fold((0, 0), |(g, b), (g1, b1)| (g + g1, b + b1))
}
