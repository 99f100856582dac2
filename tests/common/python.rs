//! The Python with `websockets` that the deflate tests drive.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Command, Stdio};

use super::{KillOnDrop, WAIT};

/// `WSM_TEST_PYTHON`, or `target/py/bin/python` (the venv `.ci/run` and
/// `tests/interop_python.rs` make); panics saying how to get one when there is none.
pub fn python() -> PathBuf {
    let python = std::env::var_os("WSM_TEST_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            let target = std::env::var_os("CARGO_TARGET_DIR")
                .map(PathBuf::from)
                .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target"));
            target.join("py/bin/python")
        });
    assert!(
        python.exists(),
        "no Python with websockets at {}: set WSM_TEST_PYTHON, or run tests/interop_python.rs \
         once (it makes the venv)",
        python.display()
    );
    python
}

/// `tests/interop/<name>`.
pub fn interop_script(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/interop")
        .join(name)
}

/// A running `tests/interop/deflate_peer.py` (a Python `websockets` echo server with
/// permessage-deflate; see its header for what it answers).
pub struct DeflatePeer {
    _child: KillOnDrop,
    /// The port it listens on (127.0.0.1).
    pub port: u16,
}

impl DeflatePeer {
    /// Start it; waits (bounded) for the port it prints.
    pub fn start(args: &[&str]) -> DeflatePeer {
        let mut child = KillOnDrop(Some(
            Command::new(python())
                .arg(interop_script("deflate_peer.py"))
                .args(args)
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .spawn()
                .expect("python runs"),
        ));
        let stdout = child
            .0
            .as_mut()
            .and_then(|c| c.stdout.take())
            .expect("stdout");
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut line = String::new();
            let _ = BufReader::new(stdout).read_line(&mut line);
            let _ = tx.send(line);
        });
        let line = rx
            .recv_timeout(WAIT)
            .expect("deflate_peer.py prints its port");
        let port = line.trim().parse().expect("a port on the first line");
        DeflatePeer {
            _child: child,
            port,
        }
    }

    /// Its URL.
    pub fn url(&self) -> String {
        format!("ws://127.0.0.1:{}/", self.port)
    }
}
