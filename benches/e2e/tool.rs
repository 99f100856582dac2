//! The generator budget (`E2E_ONLY=tool`): `wsm load` itself, the release binary of this
//! package, against the bare tokio-tungstenite client in the same run, both on the tt echo
//! server: echo round trips per second of client CPU, and RSS per idle connection; plus the
//! tool's connects per second (printed, no baseline).

use std::process::Command;

use crate::clients::{bare_echo, client_idle_rss};
use crate::points::Settings;
use crate::report::Row;
use crate::servers::ServerProc;

/// Run `wsm load <args> --json` and answer its report (panics with its stderr on failure: a
/// bench has no other way to say it).
fn wsm_load(args: &[&str]) -> serde_json::Value {
    let out = Command::new(env!("CARGO_BIN_EXE_wsm"))
        .arg("load")
        .args(args)
        .arg("--json")
        .output()
        .expect("wsm runs");
    let text = String::from_utf8_lossy(&out.stdout);
    match serde_json::from_str::<serde_json::Value>(text.trim()) {
        Ok(r) if out.status.success() => r,
        _ => panic!(
            "wsm load {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        ),
    }
}

fn num(r: &serde_json::Value, k: &str) -> f64 {
    r[k].as_f64().unwrap_or(f64::NAN)
}

/// The tool's echo round trips per client CPU second (each echo point), and its RSS per idle
/// connection, against the bare tt client.
pub(crate) fn tool(s: &Settings, rows: &mut Vec<Row>) {
    for &(conns, window) in &s.echo_points {
        let tt = ServerProc::start("tt", "echo");
        let url = tt.url("/");
        let (c, w, d) = (
            conns.to_string(),
            window.to_string(),
            format!("{}s", s.secs),
        );
        let r = wsm_load(&[
            "--url",
            &url,
            "--protocol",
            "echo",
            "--connections",
            &c,
            "--window",
            &w,
            "--duration",
            &d,
        ]);
        let ours = num(&r, "received") / num(&r, "client_cpu_seconds");
        let bare = bare_echo(url, false, conns, window, s.secs, None);
        println!(
            "  wsm load echo {conns}x{window}: {:.0}/s, {ours:.0} per client CPU s; bare tt \
             client {:.0}/s, {:.0} per client CPU s",
            num(&r, "messages_per_second"),
            bare.rate,
            1e6 / bare.cpu_us
        );
        rows.push(Row {
            point: format!("wsm load echo round trips per client CPU s, {conns} x {window}"),
            ours,
            bare: 1e6 / bare.cpu_us,
            unit: "msg/CPU s",
            goal: Some(1.0),
            higher_is_better: true,
            note: "the tool (release binary) vs the bare tt client, same tt server".into(),
        });
    }
    let tt = ServerProc::start("tt4k", "echo");
    let idle = s.idle.to_string();
    let r = wsm_load(&[
        "--url",
        &tt.url("/"),
        "--protocol",
        "echo",
        "--scenario",
        "idle",
        "--connections",
        &idle,
        "--connect-rate",
        "1000000",
        "--duration",
        "1s",
    ]);
    let bare4k = client_idle_rss("bare4k", &tt.url("/"), s.idle);
    let ours = num(&r, "rss_per_connection_bytes");
    println!(
        "  wsm load idle {idle}: {ours:.0} B/conn (tt client 4 KiB: {bare4k} B), {:.0} connects/s",
        num(&r, "connections_connected") / num(&r, "connect_seconds")
    );
    rows.push(Row {
        point: format!("wsm load RSS/idle conn ({idle}), vs tt 4 KiB read buf"),
        ours,
        bare: bare4k as f64,
        unit: "B",
        goal: None,
        higher_is_better: false,
        note: "the whole tool: client, drivers, histograms".into(),
    });
}
