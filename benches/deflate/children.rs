//! The children of this bench: the server (`__serve`) and the byte-counting proxy (`__proxy`),
//! the line protocol they share with the idle client (`__client-idle`, in `memory.rs`), and
//! [`Proc`], how the parent starts one and speaks to it.

use std::io::{BufRead, BufReader, Write};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc as std_mpsc;
use std::time::{Duration, Instant};

use actix_ws_manager::config::ServerConfig;
use actix_ws_manager::server;
use actix_ws_manager::testkit::FaultProxy;
use tokio::sync::mpsc;

use crate::CHILD_TIMEOUT;

/// Lines of stdin, for a child's command loop; the child exits when stdin closes.
pub(crate) fn stdin_lines() -> mpsc::UnboundedReceiver<String> {
    let (tx, rx) = mpsc::unbounded_channel();
    std::thread::spawn(move || {
        let stdin = std::io::stdin();
        let mut line = String::new();
        loop {
            line.clear();
            match stdin.lock().read_line(&mut line) {
                Ok(0) | Err(_) => std::process::exit(0),
                Ok(_) => {
                    if tx.send(line.trim().to_owned()).is_err() {
                        std::process::exit(0);
                    }
                }
            }
        }
    });
    rx
}

/// Print one line for the parent.
pub(crate) fn say(line: &str) {
    let mut out = std::io::stdout();
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
}

/// `__serve`: the default server (deflate on); prints `PORT <n>`, answers `STATS` with
/// `STATS <sessions> <members> <deflate_compressions>`, exits when stdin closes.
pub(crate) fn serve_child() {
    let sys = actix_rt::System::new();
    sys.block_on(async {
        let config = ServerConfig::default().max_sessions(100_000);
        let srv = match server::serve("127.0.0.1:0", "/ws", "/echo", config) {
            Ok(s) => s,
            Err(e) => panic!("serve: {e}"),
        };
        let rooms = srv.rooms().clone();
        let mut lines = stdin_lines();
        say(&format!("PORT {}", srv.local_addr().port()));
        while let Some(line) = lines.recv().await {
            if line == "STATS" {
                match rooms.stats().await {
                    Ok(s) => say(&format!(
                        "STATS {} {} {}",
                        s.sessions, s.members, s.deflate_compressions
                    )),
                    Err(e) => say(&format!("ERR {e}")),
                }
            } else {
                say("ERR unknown command");
            }
        }
    });
}

/// `__proxy PORT`: a [`FaultProxy`] in front of 127.0.0.1:PORT; prints `PORT <n>`, answers
/// `BYTES` with `BYTES <up> <down>`, exits when stdin closes.
pub(crate) fn proxy_child(args: &[String]) {
    let target: u16 = args.first().and_then(|p| p.parse().ok()).unwrap_or(0);
    let sys = actix_rt::System::new();
    sys.block_on(async move {
        let proxy = match FaultProxy::start(([127, 0, 0, 1], target).into()).await {
            Ok(p) => p,
            Err(e) => panic!("proxy: {e}"),
        };
        let mut lines = stdin_lines();
        say(&format!("PORT {}", proxy.addr().port()));
        while let Some(line) = lines.recv().await {
            if line == "BYTES" {
                say(&format!(
                    "BYTES {} {}",
                    proxy.bytes_up(),
                    proxy.bytes_down()
                ));
            } else {
                say("ERR unknown command");
            }
        }
    });
}

/// A child process of this bench, spoken to by lines; killed (and reaped) when dropped.
pub(crate) struct Proc {
    what: String,
    child: Child,
    stdin: Option<ChildStdin>,
    lines: std_mpsc::Receiver<String>,
}

impl Proc {
    pub(crate) fn start(args: &[&str]) -> Proc {
        let what = args.join(" ");
        let exe = match std::env::current_exe() {
            Ok(e) => e,
            Err(e) => panic!("current_exe: {e}"),
        };
        let mut child = match Command::new(exe)
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
        {
            Ok(c) => c,
            Err(e) => panic!("spawn {what}: {e}"),
        };
        let (tx, lines) = std_mpsc::channel();
        if let Some(out) = child.stdout.take() {
            std::thread::spawn(move || {
                for line in BufReader::new(out).lines() {
                    let Ok(line) = line else { break };
                    if tx.send(line).is_err() {
                        break;
                    }
                }
            });
        }
        let stdin = child.stdin.take();
        Proc {
            what,
            child,
            stdin,
            lines,
        }
    }

    /// A server or proxy child and the port it announced.
    pub(crate) fn start_listening(args: &[&str]) -> (Proc, u16) {
        let p = Proc::start(args);
        let line = p.line(CHILD_TIMEOUT);
        let port = line
            .strip_prefix("PORT ")
            .and_then(|p| p.parse().ok())
            .unwrap_or_else(|| panic!("{} announced no port: {line:?}", p.what));
        // Let the workers settle before any baseline is read.
        std::thread::sleep(Duration::from_millis(300));
        (p, port)
    }

    /// The next line, or an empty one after `within`.
    fn line(&self, within: Duration) -> String {
        match self.lines.recv_timeout(within) {
            Ok(l) => l,
            Err(_) => {
                eprintln!("  {}: no answer within {within:?}", self.what);
                String::new()
            }
        }
    }

    /// Send `line`, return the answer's numbers after its first word (zeros when none came).
    pub(crate) fn ask(&mut self, line: &str, within: Duration) -> Vec<u64> {
        if let Some(stdin) = self.stdin.as_mut() {
            let _ = writeln!(stdin, "{line}");
            let _ = stdin.flush();
        }
        self.numbers(within)
    }

    /// The next line's numbers after its first word.
    pub(crate) fn numbers(&self, within: Duration) -> Vec<u64> {
        let answer = self.line(within);
        let v: Vec<u64> = answer
            .split_whitespace()
            .skip(1)
            .filter_map(|w| w.parse().ok())
            .collect();
        if v.is_empty() {
            eprintln!("  {}: unexpected answer {answer:?}", self.what);
        }
        v
    }

    pub(crate) fn pid(&self) -> Option<u32> {
        Some(self.child.id())
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        drop(self.stdin.take());
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The server's `STATS`: (sessions, members, deflate_compressions).
pub(crate) fn server_stats(srv: &mut Proc) -> (u64, u64, u64) {
    let v = srv.ask("STATS", Duration::from_secs(10));
    (
        v.first().copied().unwrap_or(0),
        v.get(1).copied().unwrap_or(0),
        v.get(2).copied().unwrap_or(0),
    )
}

/// Wait (bounded) until the server has no sessions left.
pub(crate) fn wait_no_sessions(srv: &mut Proc) {
    let deadline = Instant::now() + Duration::from_secs(15);
    while server_stats(srv).0 > 0 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
    }
}
