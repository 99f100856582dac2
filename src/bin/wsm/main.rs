//! `wsm`: the actix-ws-manager command-line tool.
//!
//! - `wsm serve`: the rooms server (and an echo endpoint), see `serve.rs`.
//!
//! Logs go to stderr through `tracing-subscriber`, filtered by `RUST_LOG` (default `info`);
//! stdout carries only what scripts read (for `serve`, the URL it listens on, first line).

use clap::{Parser, Subcommand};

mod serve;

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
}

fn main() -> std::process::ExitCode {
    init_tracing();
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Serve(args) => serve::run(args),
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e}");
            eprintln!("wsm: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}

/// Logs to stderr, filtered by `RUST_LOG` (default `info`).
fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
}
