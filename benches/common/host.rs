//! What the `e2e` and `deflate` benches ask of the machine they run on: settings from the
//! environment, cores, one microsecond clock, a process's RSS and CPU time (through the
//! bench's `procfs` module, the `wsm` binary's own), and the open-file limit.

use std::sync::OnceLock;
use std::time::Instant;

use crate::procfs;

/// The environment variable `name` as a number, or `default`.
pub(crate) fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// The cores this process may use.
pub(crate) fn cores() -> usize {
    std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
}

/// Microseconds since the first call; one clock for every thread.
pub(crate) fn now_us() -> u64 {
    static BASE: OnceLock<Instant> = OnceLock::new();
    BASE.get_or_init(Instant::now).elapsed().as_micros() as u64
}

/// The resident set size of process `pid` (`None`: this process), in bytes; 0 when unknown.
pub(crate) fn rss_of(pid: Option<u32>) -> u64 {
    procfs::rss_bytes(pid).unwrap_or(0)
}

/// CPU time (user + system) a process has used (`None`: this process), in µs, from
/// `/proc/<pid>/stat`; the resolution is one clock tick (10 ms).
pub(crate) fn cpu_us(pid: Option<u32>) -> u64 {
    procfs::cpu_ticks(pid)
        .map(|t| t * (1_000_000 / procfs::TICKS_PER_SECOND))
        .unwrap_or(0)
}

/// Raise the open-file limit to the hard limit: thousands of connections.
pub(crate) fn raise_nofile() {
    if let Ok((_, hard)) = rlimit::Resource::NOFILE.get() {
        let _ = rlimit::Resource::NOFILE.set(hard, hard);
    }
}
