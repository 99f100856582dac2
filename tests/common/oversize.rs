//! Shared by the frame-guard tests: a forged header that declares 1 GiB, followed by 256 MiB,
//! and the bounds on memory growth it must stay within.

use std::time::Duration;

/// The largest frame accepted in these tests.
pub const LIMIT: usize = 64 * 1024;
/// What the forged header declares.
pub const DECLARED: u64 = 1 << 30;
/// How much payload the sender tries to send behind it.
pub const PAYLOAD: usize = 256 * 1024 * 1024;
/// One write of payload.
pub const CHUNK: usize = 64 * 1024;
/// Bound on the whole exchange.
pub const BOUND: Duration = Duration::from_secs(20);
/// Allowed growth of the process's resident memory, in kB.
pub const MAX_GROWTH_KB: u64 = 1024;
/// Allowed growth on the server side, in kB. After its close frame the server session goes
/// on reading (and discarding) what the client sends, to find the client's close frame:
/// the 256 MiB behind the refused header pass through actix-http's payload queue in small
/// chunks, and the allocator's high-water from that churn measured 0.5-1.3 MiB here
/// (0.6-0.8 MiB when actix-http dropped the payload itself). Buffering the frame would
/// cost 256 MiB.
pub const MAX_SERVER_GROWTH_KB: u64 = 2048;

/// The payload: zeros, never reallocated.
pub static ZEROS: [u8; CHUNK] = [0; CHUNK];

/// A line of /proc/self/status in kB (`VmRSS`, `RssAnon`, `RssFile`).
pub fn status_kb(field: &str) -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").expect("read /proc/self/status");
    status
        .lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or_else(|| panic!("no {field} line in kB in /proc/self/status"))
}

/// This process's resident set size (VmRSS), in kB.
pub fn vm_rss_kb() -> u64 {
    status_kb("VmRSS")
}
