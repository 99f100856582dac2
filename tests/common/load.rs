//! Running the built `wsm load` in tests: bounded runs, its one JSON report, its one-line
//! errors.

use std::process::{Command, Output};
use std::sync::mpsc;
use std::time::Duration;

/// Every run must end well within this; a hang fails the test instead of blocking it.
pub const BOUND: Duration = Duration::from_secs(30);

/// Run `wsm` with `args` on a thread, and give up after `BOUND`.
pub fn wsm(args: &[&str]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_wsm"));
    cmd.args(args);
    run_bounded(cmd)
}

/// Run `cmd` on a thread, and give up after `BOUND`.
pub fn run_bounded(mut cmd: Command) -> Output {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let out = cmd.env_remove("RUST_LOG").output();
        let _ = tx.send(out);
    });
    rx.recv_timeout(BOUND)
        .expect("wsm load finished within the bound")
        .expect("wsm runs")
}

/// [`wsm`] from an async test, without blocking the actix system that serves the target.
pub async fn wsm_async(args: &[&str]) -> Output {
    let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
    actix_rt::task::spawn_blocking(move || {
        let refs: Vec<&str> = args.iter().map(String::as_str).collect();
        wsm(&refs)
    })
    .await
    .expect("runner thread")
}

pub fn report(out: &Output) -> serde_json::Value {
    assert!(
        out.status.success(),
        "exit {:?}, stderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(
        lines.len(),
        1,
        "exactly one JSON object on stdout: {stdout}"
    );
    serde_json::from_str(lines[0]).expect("stdout is JSON")
}

pub fn assert_one_line_error(out: &Output, needle: &str) {
    assert!(!out.status.success(), "must fail");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains(needle), "stderr: {stderr}");
    assert!(!stderr.contains("panicked"), "stderr: {stderr}");
    assert_eq!(stderr.trim().lines().count(), 1, "one line: {stderr}");
    // Without --json nothing goes to stdout; with it, one JSON object with the error.
    let stdout = String::from_utf8_lossy(&out.stdout);
    if !stdout.is_empty() {
        assert_eq!(
            stdout.trim().lines().count(),
            1,
            "one JSON object: {stdout}"
        );
        let v: serde_json::Value = serde_json::from_str(stdout.trim()).expect("JSON on stdout");
        assert!(
            v["error"].as_str().is_some_and(|e| e.contains(needle)),
            "{stdout}"
        );
    }
}
