//! `wsm load`'s embedded server as a child process (`wsm serve` of this same binary): client and
//! server then each have the open-file limit to themselves (10,000 connections fit under a hard
//! limit of 20,000), and their memory and CPU are measured apart.

use std::collections::VecDeque;
use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use actix_ws_manager::{Error, Result};

/// How long the child may take to print its URLs.
const START: Duration = Duration::from_secs(15);
/// Lines of the child's stderr kept to explain a failure.
const TAIL: usize = 20;

/// A running `wsm serve` child, killed (and reaped) when dropped.
pub struct ChildServer {
    child: Child,
    /// The rooms URL it printed.
    pub url: String,
    /// The echo URL it printed.
    pub echo_url: String,
    tail: Arc<Mutex<VecDeque<String>>>,
    /// Files to remove afterwards (the TLS certificate and key).
    files: Vec<PathBuf>,
}

impl ChildServer {
    /// Start `wsm serve --bind 127.0.0.1:0 <args>` and wait for its two URL lines. `pem`, when
    /// given, is a certificate chain and key to serve TLS with (written to temporary files).
    pub fn spawn(args: &[String], pem: Option<(&str, &str)>) -> Result<ChildServer> {
        Self::spawn_on("127.0.0.1:0", args, pem)
    }

    /// [`spawn`](Self::spawn) on the address `bind` (`wsm load --chaos restart` starts the
    /// server again on its port).
    pub fn spawn_on(bind: &str, args: &[String], pem: Option<(&str, &str)>) -> Result<ChildServer> {
        let exe = std::env::current_exe().map_err(|e| {
            Error::Config(format!("cannot find this program to run its server: {e}"))
        })?;
        let mut cmd = Command::new(exe);
        cmd.args(["serve", "--bind", bind]).args(args);
        let files = match pem {
            Some((cert, key)) => tls_files(&mut cmd, cert, key)?,
            None => Vec::new(),
        };
        let mut child = cmd
            .env(
                "RUST_LOG",
                std::env::var("RUST_LOG").unwrap_or_else(|_| "warn".into()),
            )
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| Error::Config(format!("cannot start the embedded server: {e}")))?;
        let tail = Arc::new(Mutex::new(VecDeque::new()));
        if let Some(stderr) = child.stderr.take() {
            keep_tail(stderr, tail.clone());
        }
        let (tx, rx) = std::sync::mpsc::channel();
        if let Some(stdout) = child.stdout.take() {
            std::thread::spawn(move || {
                for line in BufReader::new(stdout).lines().map_while(|l| l.ok()) {
                    if tx.send(line).is_err() {
                        break;
                    }
                }
            });
        }
        let mut server = ChildServer {
            child,
            url: String::new(),
            echo_url: String::new(),
            tail,
            files,
        };
        let deadline = std::time::Instant::now() + START;
        let line = || {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            rx.recv_timeout(left).ok()
        };
        match (line(), line()) {
            (Some(url), Some(echo)) => {
                server.url = url;
                server.echo_url = echo;
                Ok(server)
            }
            _ => {
                let _ = server.child.kill();
                let _ = server.child.wait();
                Err(Error::Config(format!(
                    "the embedded server (a `wsm serve` child process) did not start: {}",
                    server.last_words()
                )))
            }
        }
    }

    /// The child's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The last line it wrote on stderr, or "no output".
    fn last_words(&self) -> String {
        let tail = self.tail.lock().unwrap_or_else(|e| e.into_inner());
        tail.back().cloned().unwrap_or_else(|| "no output".into())
    }
}

impl Drop for ChildServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        for f in &self.files {
            let _ = std::fs::remove_file(f);
        }
    }
}

/// Write `cert` and `key` to temporary files and pass them to `cmd` (`--tls-cert`,
/// `--tls-key`). Answers the files, to remove when the child is gone.
fn tls_files(cmd: &mut Command, cert: &str, key: &str) -> Result<Vec<PathBuf>> {
    let dir = std::env::temp_dir();
    let stem = format!("wsm-load-{}", std::process::id());
    let (cert_path, key_path) = (
        dir.join(format!("{stem}-cert.pem")),
        dir.join(format!("{stem}-key.pem")),
    );
    std::fs::write(&cert_path, cert)?;
    std::fs::write(&key_path, key)?;
    cmd.arg("--tls-cert").arg(&cert_path);
    cmd.arg("--tls-key").arg(&key_path);
    Ok(vec![cert_path, key_path])
}

/// Keep the last [`TAIL`] lines of the child's `stderr` in `tail`, on a thread of its own.
fn keep_tail(stderr: std::process::ChildStderr, tail: Arc<Mutex<VecDeque<String>>>) {
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(|l| l.ok()) {
            let mut t = tail.lock().unwrap_or_else(|e| e.into_inner());
            if t.len() == TAIL {
                t.pop_front();
            }
            t.push_back(line);
        }
    });
}
