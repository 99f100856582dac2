//! The client as an Autobahn|Testsuite test subject: it runs every case of a running
//! `wstest -m fuzzingserver` and echoes each text and binary message back verbatim, through the
//! public client API only (`subscribe_text_with` / `subscribe_binary_with` with
//! `Overflow::Backpressure`, so nothing is dropped; `send_text` / `send_binary`; reconnect
//! disabled; messages up to 64 MiB; permessage-deflate offered, as by default, so cases 12.* and
//! 13.* run too). `BENCHMARKS.md` has the figures.
//!
//! Start the fuzzing server (Python 2.7's `autobahntestsuite` 0.8.2, see `BENCHMARKS.md`), then
//! run the cases and ask it to write its report (`reports/client/index.html`):
//!
//! ```sh
//! cat > fuzzingserver.json <<'SPEC'
//! {"url": "ws://127.0.0.1:9001", "outdir": "./reports/client",
//!  "cases": ["*"], "exclude-cases": [], "exclude-agent-cases": {}}
//! SPEC
//! wstest -m fuzzingserver -s fuzzingserver.json &
//! cargo run --example autobahn_client                 # 12.* and 13.* want --release too
//! cargo run --example autobahn_client -- ws://127.0.0.1:9001 wsm-client   # the defaults
//! ```

use std::process::ExitCode;
use std::time::Duration;

use actix_ws_manager::client::{connect, Client, Overflow};
use actix_ws_manager::config::{ClientConfig, HeartbeatConfig, ReconnectPolicy};

/// The largest message a case sends (9.* goes up to 16 MiB).
const MAX_MESSAGE: usize = 64 * 1024 * 1024;
/// Messages waiting for the echo loop before the client stops reading the socket.
const CHANNEL: usize = 64;
/// A case that has not ended by then is abandoned (wstest records what it saw).
const CASE_LIMIT: Duration = Duration::from_secs(120);

fn config() -> ClientConfig {
    ClientConfig::default()
        .max_message_size(MAX_MESSAGE)
        .reconnect(ReconnectPolicy::never())
        // The cases decide what is sent; no pings of our own in between.
        .heartbeat(HeartbeatConfig::disabled())
}

/// Connect to `url` and echo every message until the fuzzing server ends the connection.
/// Answers the number of messages echoed.
async fn echo(url: &str) -> Result<u64, String> {
    let client = connect(url, config()).map_err(|e| e.to_string())?;
    let mut texts = client.subscribe_text_with(CHANNEL, Overflow::Backpressure);
    let mut binaries = client.subscribe_binary_with(CHANNEL, Overflow::Backpressure);
    let mut echoed = 0;
    let run = async {
        loop {
            tokio::select! {
                Some(text) = texts.recv() => {
                    if let Err(e) = client.send_text(text.data).await {
                        eprintln!("{url}: text not echoed: {e}");
                    }
                }
                Some(bytes) = binaries.recv() => {
                    if let Err(e) = client.send_binary(bytes.data).await {
                        eprintln!("{url}: binary not echoed: {e}");
                    }
                }
                _ = client.closed() => return,
            }
            echoed += 1;
        }
    };
    let ended = tokio::time::timeout(CASE_LIMIT, run).await.is_ok();
    if !ended {
        client.close().await;
        return Err(format!("{url}: not over within {CASE_LIMIT:?}"));
    }
    Ok(echoed)
}

/// The first text message at `url` (the case count), then the end of the connection.
async fn first_text(url: &str) -> Result<String, String> {
    let client: Client = connect(url, config()).map_err(|e| e.to_string())?;
    let mut texts = client.subscribe_text(1);
    let text = tokio::time::timeout(Duration::from_secs(10), texts.recv())
        .await
        .map_err(|_| format!("{url}: nothing within 10 s"))?
        .ok_or_else(|| format!("{url}: closed without a message"))?;
    client.close().await;
    Ok(text.data.to_string())
}

#[actix_rt::main]
async fn main() -> ExitCode {
    let mut args = std::env::args().skip(1);
    let base = args.next().unwrap_or_else(|| "ws://127.0.0.1:9001".into());
    let agent = args.next().unwrap_or_else(|| "wsm-client".into());
    let count: u32 = match first_text(&format!("{base}/getCaseCount")).await {
        Ok(n) => match n.trim().parse() {
            Ok(n) => n,
            Err(_) => {
                eprintln!("getCaseCount answered {n:?}");
                return ExitCode::FAILURE;
            }
        },
        Err(e) => {
            eprintln!("no case count (is `wstest -m fuzzingserver` running?): {e}");
            return ExitCode::FAILURE;
        }
    };
    println!("{count} cases");
    for case in 1..=count {
        let url = format!("{base}/runCase?case={case}&agent={agent}");
        match echo(&url).await {
            Ok(n) => println!("case {case}/{count}: {n} messages echoed"),
            Err(e) => eprintln!("case {case}/{count}: {e}"),
        }
    }
    let report = format!("{base}/updateReports?agent={agent}");
    let client = match connect(&report, config()) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("{report}: {e}");
            return ExitCode::FAILURE;
        }
    };
    let _ = tokio::time::timeout(Duration::from_secs(30), client.closed()).await;
    println!("report updated");
    ExitCode::SUCCESS
}
