//! The points of the table, by group (`E2E_ONLY`): client echo, server echo, idle memory and
//! broadcast. Each group measures ours and the bare baselines in the same run and adds its rows.

use crate::clients::{bare_echo, broadcast, client_idle_rss, manager_echo, server_idle_rss};
use crate::report::Row;
use crate::servers::ServerProc;
use crate::{cores, env_usize};

/// The bench's scale, from the environment (see the table in `main.rs`).
pub(crate) struct Settings {
    /// `E2E_ECHO` as given.
    pub(crate) echo_spec: String,
    /// The echo points: connections and messages in flight.
    pub(crate) echo_points: Vec<(usize, usize)>,
    /// Seconds each throughput point is measured.
    pub(crate) secs: u64,
    /// Idle connections for the memory points.
    pub(crate) idle: usize,
    /// Room members for the broadcast point.
    pub(crate) members: usize,
    /// Seconds of publishing for the broadcast point.
    pub(crate) bsecs: u64,
    /// Publishes per second for the broadcast point.
    pub(crate) rate: u64,
    /// Repetitions.
    pub(crate) runs: usize,
    /// The groups to run, comma-separated.
    only: String,
}

impl Settings {
    /// Read the environment; `quick` (`--quick`) lowers the defaults.
    pub(crate) fn from_env(quick: bool) -> Self {
        let (d_echo, d_secs, d_idle, d_members, d_bsecs) = if quick {
            ("20x4,100x1", 2, 200, 200, 3)
        } else {
            ("100x16,1000x1", 5, 1000, 1000, 10)
        };
        let echo_spec = std::env::var("E2E_ECHO").unwrap_or_else(|_| d_echo.into());
        let echo_points: Vec<(usize, usize)> = echo_spec
            .split(',')
            .filter_map(|p| {
                let (c, w) = p.trim().split_once('x')?;
                Some((c.parse().ok()?, w.parse().ok()?))
            })
            .collect();
        Settings {
            echo_spec,
            echo_points,
            secs: env_usize("E2E_SECS", d_secs) as u64,
            idle: env_usize("E2E_IDLE", d_idle),
            members: env_usize("E2E_MEMBERS", d_members),
            bsecs: env_usize("E2E_BCAST_SECS", d_bsecs) as u64,
            rate: env_usize("E2E_RATE", 20).max(1) as u64,
            runs: env_usize("E2E_RUNS", 1).max(1),
            only: std::env::var("E2E_ONLY")
                .unwrap_or_else(|_| "client,server,memory,broadcast,tool".into()),
        }
    }

    /// Whether group `p` runs.
    pub(crate) fn want(&self, p: &str) -> bool {
        self.only.split(',').any(|o| o.trim() == p)
    }

    /// The line that opens the output.
    pub(crate) fn describe(&self) -> String {
        let Settings {
            echo_spec,
            secs,
            idle,
            members,
            bsecs,
            rate,
            runs,
            ..
        } = self;
        format!(
            "e2e: {} cores, echo {echo_spec} (connections x in flight) x {secs}s, idle {idle}, broadcast {members} members x {bsecs}s at {rate}/s, {runs} run(s)",
            cores()
        )
    }
}

/// Client echo: the Manager against a bare tokio-tungstenite client, both on the tt server.
pub(crate) fn client_echo(s: &Settings, rows: &mut Vec<Row>) {
    let secs = s.secs;
    for &(conns, window) in &s.echo_points {
        let tt = ServerProc::start("tt", "echo");
        let ours = manager_echo(tt.url("/"), conns, window, secs);
        let bare = bare_echo(tt.url("/"), false, conns, window, secs, None);
        println!(
            "  client echo {conns}x{window}: manager {:.0}/s ({:.2} CPU us/msg), bare tt client {:.0}/s ({:.2} CPU us/msg)",
            ours.rate, ours.cpu_us, bare.rate, bare.cpu_us
        );
        rows.push(Row {
            point: format!("client echo msg/s, {conns} conns x {window} in flight"),
            ours: ours.rate,
            bare: bare.rate,
            unit: "msg/s",
            goal: Some(1.0),
            higher_is_better: true,
            note: "Manager vs a bare tokio-tungstenite client, same tt server".into(),
        });
        rows.push(Row {
            point: format!("client CPU us per echo, {conns}x{window}"),
            ours: ours.cpu_us,
            bare: bare.cpu_us,
            unit: "us",
            goal: None,
            higher_is_better: false,
            note: "client process CPU / replies (10 ms tick resolution)".into(),
        });
    }
}

/// Server echo: ours (`/echo` and the rooms protocol's echo on `/ws`) against tt and
/// actix-web-actors, each driven by the bare client.
pub(crate) fn server_echo(s: &Settings, rows: &mut Vec<Row>) {
    for &(conns, window) in &s.echo_points {
        server_echo_point(conns, window, s.secs, rows);
    }
}

/// One server echo point: `conns` connections, `window` messages in flight each.
fn server_echo_point(conns: usize, window: usize, secs: u64, rows: &mut Vec<Row>) {
    let (ours_ws, ours_echo) = {
        let s = ServerProc::start("ours", "echo");
        let pid = s.pid();
        (
            bare_echo(s.url("/ws"), true, conns, window, secs, pid),
            bare_echo(s.url("/echo"), false, conns, window, secs, pid),
        )
    };
    let tt = {
        let s = ServerProc::start("tt", "echo");
        bare_echo(s.url("/"), false, conns, window, secs, s.pid())
    };
    let actors = {
        let s = ServerProc::start("actors", "echo");
        bare_echo(s.url("/"), false, conns, window, secs, s.pid())
    };
    println!(
        "  server echo {conns}x{window} msg/s (CPU us/msg): ours /ws {:.0} ({:.2}), ours /echo {:.0} ({:.2}), tt {:.0} ({:.2}), actix-web-actors {:.0} ({:.2})",
        ours_ws.rate, ours_ws.cpu_us, ours_echo.rate, ours_echo.cpu_us, tt.rate, tt.cpu_us, actors.rate, actors.cpu_us
    );
    let at = format!("{conns} conns x {window}");
    rows.push(Row {
        point: format!("server echo msg/s, /echo, {at}, vs actix-web-actors"),
        ours: ours_echo.rate,
        bare: actors.rate,
        unit: "msg/s",
        goal: Some(1.0),
        higher_is_better: true,
        note: String::new(),
    });
    rows.push(Row {
        point: format!("server echo msg/s, /echo, {at}, vs tt current-thread"),
        ours: ours_echo.rate,
        bare: tt.rate,
        unit: "msg/s",
        goal: Some(0.9),
        higher_is_better: true,
        note: "tt: one current-thread runtime per core".into(),
    });
    rows.push(Row {
        point: format!("server echo msg/s, rooms /ws, {at}, vs actix-web-actors"),
        ours: ours_ws.rate,
        bare: actors.rate,
        unit: "msg/s",
        goal: None,
        higher_is_better: true,
        note: "the rooms protocol's echo request, parsed and answered".into(),
    });
    rows.push(Row {
        point: format!("server CPU us per echo, /echo, {at}"),
        ours: ours_echo.cpu_us,
        bare: actors.cpu_us,
        unit: "us",
        goal: None,
        higher_is_better: false,
        note: "server process CPU / replies; bare = actix-web-actors".into(),
    });
}

/// Idle memory: server RSS per idle connection (ours, actix-web-actors, tt with a 4 KiB read
/// buffer), and client RSS per idle connection (the Manager, the tt client with a 4 KiB read
/// buffer).
pub(crate) fn memory(s: &Settings, rows: &mut Vec<Row>) {
    let idle = s.idle;
    let mut server_mem = Vec::new();
    for (kind, path, welcome) in [
        ("ours", "/ws", true),
        ("actors", "/", false),
        ("tt4k", "/", false),
    ] {
        let s = ServerProc::start(kind, "echo");
        let per = server_idle_rss(&s, s.url(path), welcome, idle);
        println!("  server idle RSS/conn {kind}: {per} B");
        server_mem.push(per as f64);
    }
    rows.push(Row {
        point: format!("server RSS/idle conn ({idle}), vs actix-web-actors"),
        ours: server_mem[0],
        bare: server_mem[1],
        unit: "B",
        goal: Some(1.0),
        higher_is_better: false,
        note: String::new(),
    });
    rows.push(Row {
        point: format!("server RSS/idle conn ({idle}), vs tt 4 KiB read buf"),
        ours: server_mem[0],
        bare: server_mem[2],
        unit: "B",
        goal: None,
        higher_is_better: false,
        note: String::new(),
    });
    let tt = ServerProc::start("tt4k", "echo");
    let ours = client_idle_rss("ours", &tt.url("/"), idle);
    let bare4k = client_idle_rss("bare4k", &tt.url("/"), idle);
    println!(
        "  client idle RSS/conn: manager {ours} B, tt client with 4 KiB read buffer {bare4k} B"
    );
    rows.push(Row {
        point: format!("client RSS/idle conn ({idle}), vs tt 4 KiB read buf"),
        ours: ours as f64,
        bare: bare4k as f64,
        unit: "B",
        goal: Some(1.0),
        higher_is_better: false,
        note: "Manager vs tt client, read_buffer_size 4096".into(),
    });
}

/// Broadcast latency to `E2E_MEMBERS` members: ours against actix-web-actors and tt.
pub(crate) fn broadcast_latency(s: &Settings, rows: &mut Vec<Row>) {
    let (members, rate, bsecs) = (s.members, s.rate, s.bsecs);
    let (o50, o99, omiss) = {
        let s = ServerProc::start("ours", "echo");
        broadcast(s.url("/ws"), true, members, rate, bsecs)
    };
    let (a50, a99, amiss) = {
        let s = ServerProc::start("actors", "bcast");
        broadcast(s.url("/"), false, members, rate, bsecs)
    };
    let (b50, b99, bmiss) = {
        let s = ServerProc::start("tt", "bcast");
        broadcast(s.url("/"), false, members, rate, bsecs)
    };
    println!(
        "  broadcast to {members}: ours p50 {o50} us p99 {o99} us (missing {omiss}); actix-web-actors p50 {a50} us p99 {a99} us (missing {amiss}); bare tt p50 {b50} us p99 {b99} us (missing {bmiss})"
    );
    rows.push(Row {
        point: format!("broadcast p99 us ({members} members), vs actix-web-actors"),
        ours: o99 as f64,
        bare: a99 as f64,
        unit: "us",
        goal: Some(1.0),
        higher_is_better: false,
        note: format!("p50 {o50} vs {a50}; missing ours {omiss}, actors {amiss}"),
    });
    rows.push(Row {
        point: format!("broadcast p99 us ({members} members), vs tt"),
        ours: o99 as f64,
        bare: b99 as f64,
        unit: "us",
        goal: None,
        higher_is_better: false,
        note: format!("p50 {o50} vs {b50}; missing tt {bmiss}"),
    });
}
