//! A real `redis-server` on a free port for the backplane tests, stopped and restarted on demand.

use super::process::KillOnDrop;
use super::WAIT;

/// A real `redis-server` on a free 127.0.0.1 port, for the backplane tests: no persistence,
/// killed when dropped. `.ci/run` installs `redis-server`; without it the test fails and says so.
pub struct RedisServer {
    port: u16,
    child: KillOnDrop,
}

impl RedisServer {
    /// Start on a free port; waits (within [`WAIT`]) until it accepts connections.
    pub fn start() -> RedisServer {
        for _ in 0..5 {
            let port = std::net::TcpListener::bind("127.0.0.1:0")
                .and_then(|l| l.local_addr())
                .expect("a free port")
                .port();
            if let Some(child) = Self::spawn(port) {
                return RedisServer { port, child };
            }
        }
        panic!("redis-server did not start on any of 5 free ports");
    }

    /// `redis://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Kill it (SIGKILL: as a crash; connections drop at once).
    pub fn stop(&mut self) {
        self.child = KillOnDrop(None);
    }

    /// Start it again on the same port.
    pub fn restart(&mut self) {
        self.stop();
        let deadline = std::time::Instant::now() + WAIT;
        loop {
            if let Some(child) = Self::spawn(self.port) {
                self.child = child;
                return;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "redis-server did not start again on port {}",
                self.port
            );
        }
    }

    /// Spawn on `port` and wait for "Ready to accept connections"; `None` if it exits first.
    fn spawn(port: u16) -> Option<KillOnDrop> {
        use std::io::{BufRead, BufReader};
        use std::process::{Command, Stdio};
        let spawned = Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no", "--protected-mode", "no"])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn();
        let mut child = match spawned {
            Ok(child) => KillOnDrop(Some(child)),
            Err(e) => panic!(
                "the backplane tests need redis-server ({e}); `.ci/run` installs it \
                 (apt-get install redis-server)"
            ),
        };
        let stdout = child.0.as_mut()?.stdout.take()?;
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if line.contains("Ready to accept connections") {
                    let _ = tx.send(true);
                }
            }
            let _ = tx.send(false);
        });
        match rx.recv_timeout(WAIT) {
            Ok(true) => Some(child),
            _ => None,
        }
    }
}
