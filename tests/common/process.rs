//! Child processes and their files: a child killed when dropped, a temporary directory for the
//! files a child reads, and the built `wsm serve` started with its first stdout lines read.

use super::WAIT;

/// Files that a test writes for a child process (a certificate, a key), in a directory of
/// their own that is removed when dropped.
pub struct TempFiles(pub std::path::PathBuf);

impl TempFiles {
    /// A new, empty directory under the system's temporary directory, named for `test`.
    pub fn new(test: &str) -> TempFiles {
        static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("wsm-{test}-{}-{n}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("make a temporary directory");
        TempFiles(dir)
    }

    /// Write `contents` to `name` in the directory; answers the path as text.
    pub fn write(&self, name: &str, contents: &str) -> String {
        let path = self.0.join(name);
        std::fs::write(&path, contents).expect("write a temporary file");
        path.to_string_lossy().into_owned()
    }
}

impl Drop for TempFiles {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A child process killed (and reaped) when dropped, so a failing test leaves none behind.
pub struct KillOnDrop(pub Option<std::process::Child>);
impl Drop for KillOnDrop {
    fn drop(&mut self) {
        if let Some(child) = self.0.as_mut() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Start the built `wsm serve` with `args`; answers the child and its first stdout line (the
/// rooms URL). Stdout is drained on a thread so the child never blocks on a full pipe.
#[cfg(unix)]
pub fn spawn_wsm_serve(args: &[&str]) -> (KillOnDrop, String) {
    let (child, mut lines) = spawn_wsm_serve_lines(args, 1);
    (child, lines.remove(0))
}

/// [`spawn_wsm_serve`], answering the first `n` stdout lines (rooms URL, echo URL, and the
/// metrics URL with `--metrics-bind`).
#[cfg(unix)]
pub fn spawn_wsm_serve_lines(args: &[&str], n: usize) -> (KillOnDrop, Vec<String>) {
    spawn_serve_of(env!("CARGO_BIN_EXE_wsm").as_ref(), args, n)
}

/// [`spawn_wsm_serve_lines`] with another `wsm` binary (a test comparing builds).
#[cfg(unix)]
pub fn spawn_serve_of(bin: &std::ffi::OsStr, args: &[&str], n: usize) -> (KillOnDrop, Vec<String>) {
    let mut cmd = std::process::Command::new(bin);
    cmd.arg("serve")
        .args(args)
        .env("RUST_LOG", "warn")
        .stderr(std::process::Stdio::null());
    spawn_lines(&mut cmd, n, "wsm serve")
}

/// Start `cmd` (killed when dropped) and answer its first `n` stdout lines, each within
/// [`WAIT`]; later lines are read and dropped, so the child never blocks on a full pipe.
/// `what` names the child in the panic of a line that does not come.
pub fn spawn_lines(
    cmd: &mut std::process::Command,
    n: usize,
    what: &str,
) -> (KillOnDrop, Vec<String>) {
    use std::io::{BufRead, BufReader};
    let mut child = KillOnDrop(Some(
        cmd.stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("{what} runs: {e}")),
    ));
    let stdout = child
        .0
        .as_mut()
        .and_then(|c| c.stdout.take())
        .expect("stdout");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut lines = BufReader::new(stdout).lines();
        for _ in 0..n {
            if let Some(Ok(line)) = lines.next() {
                let _ = tx.send(line);
            }
        }
        for _ in lines {}
    });
    let deadline = std::time::Instant::now() + WAIT;
    let lines = (0..n)
        .map(|i| {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            rx.recv_timeout(left)
                .unwrap_or_else(|_| panic!("stdout line {} of {what}", i + 1))
        })
        .collect();
    (child, lines)
}
