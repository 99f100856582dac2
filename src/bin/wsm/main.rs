//! `wsm`: the actix-ws-manager command-line tool.
//!
//! - `wsm serve`: the rooms server (and an echo endpoint), see `serve.rs`.
//! - `wsm connect`: an interactive client (stdin to the socket, messages to stdout), see
//!   `connect.rs`.
//! - `wsm load`: open many connections and measure echo or broadcast latency, see `load.rs`.
//!
//! Logs go to stderr through `tracing-subscriber`, filtered by `RUST_LOG` (default `info`);
//! stdout carries only what scripts read (for `serve`, the URL it listens on, first line; then
//! the echo URL, and the metrics URL with `--metrics-bind`).

use clap::{Parser, Subcommand};

mod child;
mod connect;
mod flags;
mod load;
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
    Serve(serve::ServeArgs),
    /// Connect to a WebSocket URL: stdin lines are sent, incoming messages go to stdout, state
    /// changes to stderr; reconnects after a loss; exits 0 when stdin closes.
    Connect(connect::ConnectArgs),
    /// Open many connections (to an embedded rooms server by default) and measure echo round
    /// trips or room broadcasts.
    Load(load::LoadArgs),
}

fn main() -> std::process::ExitCode {
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
        Command::Serve(args) => serve::run(args),
        Command::Load(args) => load::run(args),
        Command::Connect(args) => connect::run(args),
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            // One line, once: the log subscriber would print the same error again.
            eprintln!("wsm: {e}");
            std::process::ExitCode::FAILURE
        }
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
