//! `wsm load`: open many connections through the client [`Manager`] and measure echo round
//! trips or room broadcasts (the hashrocket websocket-shootout method), against an embedded
//! rooms server (the default) or any `ws://` or `wss://` server.
//!
//! Every wait is bounded: the connect phase by `--connect-timeout` (plus the time the rate
//! limit needs), the measurement by `--duration`, and the drain by `--timeout`.
//!
//! - `args.rs`: the flags, and the checks of their combinations.
//! - `target.rs`: the server under load (URL checks, the embedded server, the open-file limit,
//!   the preflight connection).
//! - `drivers.rs`: one task per connection, per scenario: what they share, and idle (churn's
//!   connections too); `echo.rs` and `broadcast.rs` the other two.
//! - `schedule.rs`: the open-loop due times of one connection's sends (`--rate`).
//! - `series.rs`: per-second figures of a run; `hist.rs`: histograms out (base64 V2, `--hgrm`).
//! - `merge.rs`: `wsm load merge`, several runs' reports as one.
//! - `html.rs`: `--report`, the HTML page with the charts.
//! - `plan.rs`: `--plan`, a run in phases (and the flags' one phase).
//! - `chaos.rs`: `--chaos` faults (restart, blackhole, reset); `recovery.rs`: what they did
//!   to the connections.
//! - `phases.rs`: connect, measure, drain and collect.
//! - `coordinator.rs`: runs the phases in order and turns the figures into the report.
//! - `report.rs`: the report, as a table or one JSON object.
//! - `thresholds.rs`: `--threshold` expressions, judged against the report (exit code 99).
//!
//! [`Manager`]: actix_ws_manager::client::Manager

use std::io::Write;
use std::process::ExitCode;
use std::sync::{Arc, Mutex};

use actix_ws_manager::{server, Error, Result};

use crate::child::ChildServer;

mod args;
mod broadcast;
mod chaos;
mod coordinator;
mod drivers;
mod echo;
mod hist;
mod html;
mod merge;
mod phases;
mod plan;
mod recovery;
mod report;
mod schedule;
mod series;
mod target;
mod thresholds;

pub use args::LoadArgs;
use report::Report;
use target::{Pem, ServerMode};

/// Run `wsm load`. With `--json`, a failure also prints one JSON object on stdout, `{"error":
/// ..., "url": ...}`, besides the one line on stderr. Answers the exit code: success, or 99 when
/// a `--threshold` was crossed (each named on stderr after the report).
pub fn run(args: LoadArgs) -> Result<ExitCode> {
    if let Some(args::LoadCommand::Merge(m)) = &args.command {
        return merge::run(m);
    }
    let (json, url) = (args.json, args.url.clone());
    let result = run_inner(args);
    if let (Err(e), true) = (&result, json) {
        let text = serde_json::json!({ "error": e.to_string(), "url": url }).to_string();
        let _ = writeln!(std::io::stdout().lock(), "{text}");
    }
    result
}

fn run_inner(mut args: LoadArgs) -> Result<ExitCode> {
    let pem = prepare(&mut args)?;
    let mode = ServerMode::of(&args);
    args.fd_limit = target::raise_fd_limit(args.connections, mode);
    let child = match mode {
        ServerMode::Child => Some(target::spawn_child(&args, pem.as_ref())?),
        _ => None,
    };
    drivers::now_us();
    actix_rt::System::new().block_on(async move {
        let embedded = match mode {
            ServerMode::InProcess => Some(target::start_in_process(&args, pem.as_ref())?),
            _ => None,
        };
        let url = target::target_url(&args, embedded.as_ref(), child.as_ref())?;
        // The child is shared with `--chaos restart`, which replaces it.
        let child: chaos::SharedChild = Arc::new(Mutex::new(child));
        let (injector, load_url) = chaos::Injector::new(&args, &url, child.clone(), pem).await?;
        let pid = || lock(&child).as_ref().map(ChildServer::pid);
        let result = coordinator::drive(&args, &load_url, mode, &pid, &injector).await;
        let last_child = lock(&child).take();
        stop_servers(embedded, last_child).await;
        drop(injector);
        let mut report = result?;
        report.url = url.clone();
        if let Some(file) = &args.hgrm {
            std::fs::write(file, hist::hgrm(&report.latency_hist))
                .map_err(|e| args::bad(format!("cannot write --hgrm {}: {e}", file.display())))?;
        }
        let crossed = judge_thresholds(&args.threshold, &args.phases, &mut report);
        if let Some(file) = &args.report {
            let (rows, notes) = report.table();
            let page = html::Page {
                title: &format!("wsm load: {} against {}", report.scenario, report.url),
                rows,
                notes,
                series: &report.series,
                span_seconds: report.duration_seconds,
                corrected: &report.latency_hist,
                uncorrected: &report.uncorrected_hist,
            };
            html::write(file, &page)?;
        }
        report.print(args.json)?;
        judge(&report, url)?;
        Ok(thresholds::exit_code("wsm load", &crossed))
    })
}

/// Check the flags, read `--ca`, make the embedded server's certificate with `--tls` (its CA
/// joins the roots the clients trust), and resolve the URLs (saying which are not on this
/// machine). Answers the embedded server's certificate and key, with `--tls`.
fn prepare(args: &mut LoadArgs) -> Result<Option<Pem>> {
    args.phases = plan::Phases::one(args);
    if let Some(file) = &args.plan {
        let (phases, overall) = plan::Phases::read(file, args.scenario)?;
        args.duration = phases.total();
        args.connections = phases.max_connections();
        args.rate = phases.list.iter().filter_map(|p| p.rate).reduce(f64::max);
        args.threshold.extend(overall);
        args.phases = phases;
    }
    args.check()?;
    if let Some(ca) = &args.ca {
        args.roots.push(crate::tlsfiles::read_pem("--ca", ca)?);
    }
    let pem = if args.tls {
        let (ca, cert, key) = crate::tlsfiles::loopback_pki()?;
        args.roots.push(ca.into_bytes());
        Some((cert, key))
    } else {
        None
    };
    let urls: Vec<&str> = [&args.url, &args.sender_url]
        .into_iter()
        .flatten()
        .map(String::as_str)
        .collect();
    target::check_targets(&urls)?;
    Ok(pem)
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Stop the embedded server, in this process or the child.
async fn stop_servers(embedded: Option<server::Server>, child: Option<ChildServer>) {
    if let Some(server) = embedded {
        if let Err(e) = server.shutdown().await {
            tracing::warn!(error = %e, "embedded server shutdown");
        }
    }
    drop(child);
}

/// Judge `report` against every threshold, the run's and each phase's, recording the outcomes
/// in it. Answers the stderr line of each crossed one.
fn judge_thresholds(
    thresholds: &[thresholds::Threshold],
    phases: &plan::Phases,
    report: &mut Report,
) -> Vec<String> {
    let mut crossed = Vec::new();
    for t in thresholds {
        let outcome = t.judge(&report.figures());
        if !outcome.passed {
            crossed.push(t.crossed_line(&outcome));
        }
        report.thresholds.push(outcome);
    }
    for (i, phase) in phases.list.iter().enumerate() {
        for t in &phase.thresholds {
            let Some(out) = report.phases.get(i) else {
                break;
            };
            let outcome = t.judge(&out.figures(report));
            if !outcome.passed {
                let in_phase = format!("threshold crossed in phase {}:", phase.name);
                crossed.push(
                    t.crossed_line(&outcome)
                        .replacen("threshold crossed:", &in_phase, 1),
                );
            }
            report.phases[i].thresholds.push(outcome);
        }
    }
    crossed
}

/// A run that measured nothing is a failure: no connection came up, or nothing came back.
fn judge(report: &Report, url: String) -> Result<()> {
    if report.connections_connected == 0 {
        return Err(Error::ConnectFailed {
            url,
            reason: "no connection succeeded".into(),
        });
    }
    if report.sent > 0 && report.received == 0 {
        return Err(Error::ConnectFailed {
            url,
            reason: format!(
                "connections came up, but none of the {} messages sent came back (missing {}, \
                 reconnects {})",
                report.sent, report.missing, report.reconnects
            ),
        });
    }
    Ok(())
}
