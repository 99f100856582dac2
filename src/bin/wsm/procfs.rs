//! Memory and CPU figures of a process, read from `/proc` (Linux only; elsewhere `None`).
//!
//! One copy for two programs: `wsm load` (this binary) and the end-to-end bench
//! (`benches/e2e`), which includes this file with `#[path]` because a bench cannot use a
//! binary's modules, and these readers are not part of the library's API. So this file uses
//! nothing but `std`, and every item here is used by both.

/// The kernel's clock ticks per second in `/proc/<pid>/stat` (`USER_HZ`, 100 on Linux
/// everywhere that matters): CPU figures have a 10 ms resolution.
pub const TICKS_PER_SECOND: u64 = 100;

/// Resident set size of process `pid` (`None`: this process), from `/proc/<pid>/status`.
pub fn rss_bytes(pid: Option<u32>) -> Option<u64> {
    let status = std::fs::read_to_string(proc_path(pid, "status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

/// CPU time (user + system, all threads) of process `pid` (`None`: this process), in clock
/// ticks ([`TICKS_PER_SECOND`]), from `/proc/<pid>/stat`.
pub fn cpu_ticks(pid: Option<u32>) -> Option<u64> {
    let stat = std::fs::read_to_string(proc_path(pid, "stat")).ok()?;
    // The command name (field 2) may hold spaces: count fields after its closing parenthesis.
    let rest = stat.rsplit_once(')')?.1;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the whole line: 11 and 12 after the name.
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some(utime + stime)
}

fn proc_path(pid: Option<u32>, file: &str) -> String {
    match pid {
        Some(pid) => format!("/proc/{pid}/{file}"),
        None => format!("/proc/self/{file}"),
    }
}
