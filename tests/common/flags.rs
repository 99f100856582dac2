//! Out-of-range values for the `wsm` flags, and the check that the built `wsm` refuses one the
//! way it refuses every out-of-range flag.

use super::WAIT;

/// Values a count flag refuses: zero (each count is at least 1), the largest `u64`, a number
/// past `u64`, and a negative number.
pub const EXTREME_COUNTS: &[&str] = &["0", "18446744073709551615", "99999999999999999999999", "-1"];

/// Values a duration flag refuses: zero, a billion years (fits a `Duration`, overflows timer
/// arithmetic), a number past `u64`, and no number at all.
pub const EXTREME_DURATIONS: &[&str] =
    &["0s", "1000000000years", "99999999999999999999years", "-1s"];

/// Values a per-second rate flag refuses: zero, negative, the largest `f64`, infinity, NaN.
pub const EXTREME_RATES: &[&str] = &["0", "-1", "1.7976931348623157e308", "inf", "NaN"];

/// Run the built `wsm` with `args` (one of them `FLAG=VALUE` with an out-of-range value) and
/// check that it is refused the way every out-of-range flag is: status 2 (clap's usage error)
/// within [`WAIT`] (a value wrongly accepted would start a server or a run: it is killed and
/// the test fails), nothing on stdout, no panic, and on stderr clap's one error line naming
/// `flag`, followed only by clap's hint "For more information, try '--help'." (kept: it is
/// clap's standard shape, and the one line before it says all).
#[cfg(unix)]
pub fn assert_flag_refused(args: &[&str], flag: &str) {
    use std::process::{Command, Stdio};
    let child = Command::new(env!("CARGO_BIN_EXE_wsm"))
        .args(args)
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("wsm runs");
    let pid = child.id().to_string();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    let out = match rx.recv_timeout(WAIT) {
        Ok(out) => out.expect("wait for wsm"),
        Err(_) => {
            let _ = Command::new("kill").args(["-KILL", &pid]).status();
            panic!("wsm {args:?} was still running: the value was accepted");
        }
    };
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
    assert!(out.stdout.is_empty(), "{args:?}: stdout {:?}", out.stdout);
    assert!(!stderr.contains("panicked"), "{args:?}: {stderr}");
    let lines: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(lines.len(), 2, "{args:?}: {stderr}");
    assert!(
        lines[0].starts_with("error: invalid value ")
            && lines[0].contains(&format!(" for '{flag} <")),
        "{args:?}: {stderr}"
    );
    assert_eq!(lines[1], "For more information, try '--help'.", "{args:?}");
}
