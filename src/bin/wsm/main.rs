//! `wsm`: the actix-ws-manager command-line tool.
//!
//! - `wsm serve`: the rooms server (and an echo endpoint), see `serve.rs`.
//! - `wsm connect`: an interactive client (stdin to the socket, messages to stdout), see
//!   `connect.rs`.
//! - `wsm load`: open many connections and measure echo or broadcast latency, see `load/`.
//!
//! Logs go to stderr through `tracing-subscriber`, filtered by `RUST_LOG` (default `info`);
//! stdout carries only what scripts read (for `serve`, the URL it listens on, first line; then
//! the echo URL, and the metrics URL with `--metrics-bind`).

use clap::{Parser, Subcommand};

mod child;
mod connect;
mod flags;
mod load;
mod procfs;
mod serve;
mod tlsfiles;

/// Manage, serve and measure WebSocket connections.
#[derive(Debug, Parser)]
#[command(name = "wsm", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
enum Command {
    /// Run the rooms server (and a plain echo endpoint) until SIGINT or SIGTERM.
    Serve(Box<serve::ServeArgs>),
    /// Connect to a WebSocket URL: stdin lines are sent, incoming messages go to stdout, state
    /// changes to stderr; reconnects after a loss; exits 0 when stdin closes.
    Connect(connect::ConnectArgs),
    /// Open many connections (to an embedded rooms server by default) and measure echo round
    /// trips or room broadcasts.
    #[command(args_conflicts_with_subcommands = true)]
    Load(load::LoadArgs),
}

fn main() -> std::process::ExitCode {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    give_large_frees_back();
    let cli = Cli::parse();
    // `load` opens thousands of connections: per-connection log lines would drown the figures
    // (its errors reach stderr as one `wsm: ...` line; `RUST_LOG` turns logs back on).
    init_tracing(match cli.command {
        Command::Load(_) => "off",
        // stderr carries the state lines; library logs would repeat them.
        Command::Connect(_) => "off",
        _ => "info",
    });
    let result = match cli.command {
        Command::Serve(args) => serve::run(*args).map(|()| std::process::ExitCode::SUCCESS),
        // `load` exits 99 when a threshold was crossed.
        Command::Load(args) => load::run(args),
        Command::Connect(args) => connect::run(args).map(|()| std::process::ExitCode::SUCCESS),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            // One line, once: the log subscriber would print the same error again.
            eprintln!("wsm: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}

/// Turn off glibc's dynamic mmap threshold, so that every freed allocation of 128 KiB or more
/// goes back to the system at once.
///
/// glibc serves allocations from 128 KiB up with their own `mmap`, returned by `free`, but the
/// first time it frees such a chunk it raises the threshold to that chunk's size (up to 32 MiB)
/// and the trim threshold to twice that. After one 8 MiB message, every later buffer under
/// 8 MiB (the next messages, their encodings, actix-http's write buffer) comes from the arenas
/// instead, and freed arena memory is kept for reuse unless a whole heap top of 16 MiB is free.
/// Measured (issue 17, debug `wsm serve`, 50 sessions each echoing one 8 MiB message, after the
/// library fixes): RSS 18.9 MB idle, still 37.3 MB once idle again, of which `malloc_trim(0)`
/// gave back 8.5 MB; with the threshold fixed, 19.0 -> 19.4 MB (`BENCHMARKS.md`). Setting
/// `M_MMAP_THRESHOLD` explicitly is what turns the dynamic adjustment off (mallopt(3)); 128 KiB is
/// glibc's own starting value. The price is an `mmap`/`munmap` pair (and fresh zeroed pages) per
/// large buffer, which only large messages pay.
///
/// This is the binary's choice, made once before any thread starts; the library leaves the
/// allocator alone (an application embedding it may do the same, or set
/// `MALLOC_MMAP_THRESHOLD_=131072` in the environment). A threshold given that way is kept.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn give_large_frees_back() {
    const THRESHOLD: libc::c_int = 128 * 1024;
    if std::env::var_os("MALLOC_MMAP_THRESHOLD_").is_some() {
        return;
    }
    // SAFETY: mallopt only sets a malloc parameter; it is called before any other thread
    // exists. A failure (0) leaves glibc's defaults, which work, only keep more memory.
    if unsafe { libc::mallopt(libc::M_MMAP_THRESHOLD, THRESHOLD) } == 0 {
        eprintln!("wsm: cannot set the malloc mmap threshold; large frees may be kept");
    }
}

/// Logs to stderr, filtered by `RUST_LOG` (default `default_filter`).
fn init_tracing(default_filter: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default_filter));
    use std::io::IsTerminal;
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();
}
