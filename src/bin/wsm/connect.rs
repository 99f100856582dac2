//! `wsm connect URL`: an interactive client on the crate's self-healing `Client`.
//!
//! - stdin: each line is one text message, sent verbatim; with `--json`, wrapped in an envelope
//!   `{"type":T,"room":R?,"data":D}` where D is the line parsed as JSON, or the line as a JSON
//!   string when it is not JSON.
//! - stdout: every incoming text message, verbatim, one per line; binary messages as a one-line
//!   summary (`[binary N bytes]`).
//! - stderr: state changes (`wsm: connected`, `wsm: reconnecting in 500ms (attempt 1)`, ...),
//!   and with `--presence` who comes and goes in the joined rooms (`presence lobby: +s-3 -s-7`).
//!
//! The first connection must succeed within `--connect-timeout`, else `wsm` exits 1 with one
//! line saying why (refused, HTTP status, timeout, a refused TLS certificate or an unreadable
//! `--token-file`: at once, since retrying cannot help). Later losses reconnect with backoff.
//! With `--token` or `--token-file`, every connect attempt carries `Authorization: Bearer T`
//! (the file is read again for each attempt, so a token renewed on disk is picked up at the
//! next reconnect), a 401 or a close with 4001 reconnects at once with the token read anew, and
//! the server's `token_expiring` is answered with a `refresh` (the outcome on stderr). When
//! stdin closes, the connection is closed with 1000 (replies already on the way are printed)
//! and `wsm` exits 0.

use std::time::Duration;

use actix_ws_manager::client::{self, ConnectionState, Event, Inbound, Overflow};
use actix_ws_manager::config::{ClientConfig, DeflateConfig, HeartbeatConfig, ReconnectPolicy};
use actix_ws_manager::protocol::{PresenceDiff, PresenceMember};
use actix_ws_manager::{Error, Outgoing, Result};
use clap::Args;

use crate::flags;
use tokio::sync::mpsc;

/// Flags of `wsm connect`.
#[derive(Debug, Args)]
pub struct ConnectArgs {
    /// The WebSocket URL, such as `ws://127.0.0.1:8080/ws` or `wss://example.com/feed`.
    url: String,
    /// Wrap each stdin line in a JSON envelope (`type`, `room`, `data`) instead of sending it
    /// verbatim. The line becomes `data`: parsed as JSON if it is JSON, else as a string.
    #[arg(long)]
    json: bool,
    /// The envelope `type` for `--json`. Default: `publish` when `--room` is given (the rooms
    /// protocol), else `message`.
    #[arg(long = "type", value_name = "TYPE")]
    kind: Option<String>,
    /// The envelope `room` for `--json`.
    #[arg(long)]
    room: Option<String>,
    /// Join this room on connect and again after every reconnect (rooms protocol;
    /// repeatable).
    #[arg(long = "join", value_name = "ROOM")]
    joins: Vec<String>,
    /// Join the `--join` rooms with presence, and print who comes and goes in them on stderr,
    /// one line per change (`presence lobby: +ann(s-3) -s-7`: an identity with its session, or
    /// the session alone).
    #[arg(long, requires = "joins")]
    presence: bool,
    /// Time the first connection may take (TCP, upgrade), such as `10s` (above zero, at most
    /// 365 days).
    #[arg(long, default_value = "10s", value_parser = flags::duration)]
    connect_timeout: Duration,
    /// Do not reconnect after a loss: exit 1 instead.
    #[arg(long)]
    no_reconnect: bool,
    /// Offer no permessage-deflate (by default it is offered, with no context takeover either
    /// way).
    #[arg(long)]
    no_deflate: bool,
    /// An extra HTTP header for the upgrade request, `Name: value` (repeatable).
    #[arg(short = 'H', long = "header", value_name = "NAME: VALUE", value_parser = parse_header)]
    headers: Vec<(String, String)>,
    /// A WebSocket subprotocol to offer (repeatable, in order of preference).
    #[arg(long = "protocol", value_name = "NAME")]
    protocols: Vec<String>,
    /// Time between heartbeat pings, such as `15s` (above zero, at most 365 days).
    #[arg(long, default_value = "15s", value_parser = flags::duration)]
    heartbeat_interval: Duration,
    /// Silence after which the server counts as dead and the connection is re-made, such as
    /// `30s` (above zero, at most 365 days).
    #[arg(long, default_value = "30s", value_parser = flags::duration)]
    heartbeat_timeout: Duration,
    /// Largest message accepted, in bytes, 1 to 1 GiB (bigger: close 1009).
    #[arg(long, default_value_t = actix_ws_manager::config::DEFAULT_MAX_MESSAGE_SIZE,
          value_parser = flags::count(1..=flags::MAX_MESSAGE_SIZE))]
    max_message_size: usize,
    /// A PEM file of extra root certificates to trust for `wss://` (a private CA, a
    /// self-signed server).
    #[arg(long, value_name = "FILE")]
    ca: Option<std::path::PathBuf>,
    /// A bearer token (a JWT) sent as `Authorization: Bearer T` with every connect attempt and
    /// in answer to `token_expiring`. Replaces any `-H Authorization: ...`.
    #[arg(long, value_name = "T", conflicts_with = "token_file")]
    token: Option<String>,
    /// A file holding the bearer token, read again before every connect attempt and on
    /// `token_expiring` (whitespace around the token is ignored), so a token renewed on disk
    /// is used from the next attempt on.
    #[arg(long, value_name = "FILE")]
    token_file: Option<std::path::PathBuf>,
}

/// `Name: value` -> (`Name`, `value`).
fn parse_header(text: &str) -> std::result::Result<(String, String), String> {
    match text.split_once(':') {
        Some((name, value)) if !name.trim().is_empty() => {
            Ok((name.trim().to_owned(), value.trim().to_owned()))
        }
        _ => Err(format!("{text:?} is not `Name: value`")),
    }
}

impl ConnectArgs {
    /// The envelope for one stdin line under `--json`.
    fn envelope(&self, line: &str) -> Result<Outgoing> {
        let data = serde_json::from_str(line).unwrap_or_else(|_| line.into());
        let kind = match (&self.kind, &self.room) {
            (Some(kind), _) => kind.as_str(),
            (None, Some(_)) => "publish",
            (None, None) => "message",
        };
        let out = Outgoing::dynamic(kind, Some(&data))?;
        Ok(match &self.room {
            Some(room) => out.room(room.as_str()),
            None => out,
        })
    }
}

/// The token in `path`, trimmed; a missing, unreadable or empty file is one line naming it. A
/// token file is small and read once per connect attempt, so a blocking read is fine here.
fn read_token_file(path: &std::path::Path) -> std::result::Result<String, String> {
    match std::fs::read_to_string(path) {
        Ok(text) if text.trim().is_empty() => {
            Err(format!("token file {} is empty", path.display()))
        }
        Ok(text) => Ok(text.trim().to_owned()),
        Err(e) => Err(format!("cannot read token file {}: {e}", path.display())),
    }
}

/// Run until stdin closes (Ok) or the connection fails for good (Err).
pub fn run(args: ConnectArgs) -> Result<()> {
    client::validate_url(&args.url)?;
    let policy = if args.no_reconnect {
        ReconnectPolicy::never()
    } else {
        ReconnectPolicy::default()
    };
    let mut config = ClientConfig::default()
        .connect_timeout(args.connect_timeout)
        .max_message_size(args.max_message_size)
        .heartbeat(HeartbeatConfig::new(
            args.heartbeat_interval,
            args.heartbeat_timeout,
        ))
        .reconnect(policy);
    if args.no_deflate {
        config = config.deflate(DeflateConfig::off());
    }
    config.headers = args.headers.clone();
    config.protocols = args.protocols.clone();
    if let Some(ca) = &args.ca {
        config = config.tls_root_pem(crate::tlsfiles::read_pem("--ca", ca)?);
    }
    if let Some(token) = &args.token {
        let token = token.clone();
        config = config.token_provider(move || {
            std::future::ready(Ok::<_, std::convert::Infallible>(token.clone()))
        });
    }
    if let Some(path) = &args.token_file {
        let path = path.clone();
        config = config.token_provider(move || std::future::ready(read_token_file(&path)));
    }
    config.validate()?;
    actix_rt::System::new().block_on(session(args, config))
}

/// The session: join `--join` rooms on every connect, wait for the first connection, then
/// send stdin's lines and print what arrives until stdin closes; then close and print what
/// still arrives (bounded).
async fn session(args: ConnectArgs, config: ClientConfig) -> Result<()> {
    let client = client::connect(&args.url, config)?;
    let mut events = client.subscribe_events(256);
    let mut text = client.subscribe_text_with(1024, Overflow::Backpressure);
    let mut binary = client.subscribe_binary_with(64, Overflow::Backpressure);
    let mut diffs = args.presence.then(|| client.subscribe::<PresenceDiff>(256));
    for room in &args.joins {
        if args.presence {
            client.join_with_presence(room, None).await?;
        } else {
            client.join(room).await?;
        }
    }
    if let Err(e) = first_connection(&mut events, &args).await {
        client.close().await;
        return Err(e);
    }

    let mut lines = stdin_lines();
    loop {
        tokio::select! {
            line = lines.recv() => match line {
                Some(line) => send_line(&client, &args, line).await,
                None => break,
            },
            // A closed stdout (`wsm connect URL | head -1`) ends the session like a closed stdin.
            Some(msg) = text.recv() => if print_line(&msg.data).is_err() { break },
            Some(msg) = binary.recv() => {
                if print_line(&format!("[binary {} bytes]", msg.data.len())).is_err() {
                    break;
                }
            }
            Some(diff) = next_diff(&mut diffs) => eprintln!("{}", presence_line(&diff)),
            Some(event) = events.recv() => {
                if let Some(reason) = report(&event) {
                    return Err(gave_up(&args.url, &reason));
                }
            }
        }
    }

    // stdin closed: close with 1000, print what still arrives until the socket is gone.
    client.close().await;
    let drain = async {
        loop {
            tokio::select! {
                Some(msg) = text.recv() => { let _ = print_line(&msg.data); }
                Some(msg) = binary.recv() => {
                    let _ = print_line(&format!("[binary {} bytes]", msg.data.len()));
                }
                event = events.recv() => match event {
                    Some(event) => {
                        let _ = report(&event);
                        if let Event::State(s) = event {
                            if s.is_terminal() {
                                break;
                            }
                        }
                    }
                    None => break,
                },
            }
        }
    };
    let _ = tokio::time::timeout(Duration::from_secs(3), drain).await;
    while let Ok(msg) = text.try_recv() {
        let _ = print_line(&msg.data);
    }
    Ok(())
}

/// The next presence diff, with `--presence`; never without.
async fn next_diff(
    diffs: &mut Option<mpsc::Receiver<Inbound<PresenceDiff>>>,
) -> Option<Inbound<PresenceDiff>> {
    match diffs {
        Some(diffs) => diffs.recv().await,
        None => std::future::pending().await,
    }
}

/// A presence diff as one line: `presence ROOM: +who ... -who ...`, where `who` is
/// `identity(session)`, or the session alone when the member has no identity.
fn presence_line(diff: &Inbound<PresenceDiff>) -> String {
    let who = |m: &PresenceMember| match &m.identity {
        Some(identity) => format!("{identity}({})", m.session),
        None => m.session.clone(),
    };
    let joins = diff.data.joins.iter().map(|m| format!(" +{}", who(m)));
    let leaves = diff.data.leaves.iter().map(|m| format!(" -{}", who(m)));
    let room = diff.room.as_deref().unwrap_or("?");
    format!(
        "presence {room}:{}",
        joins.chain(leaves).collect::<String>()
    )
}

/// stdin's lines, read on a thread of its own (stdin is blocking); the channel closes when
/// stdin does.
fn stdin_lines() -> mpsc::Receiver<String> {
    let (line_tx, lines) = mpsc::channel::<String>(64);
    std::thread::spawn(move || {
        for line in std::io::stdin().lines().map_while(std::result::Result::ok) {
            if line_tx.blocking_send(line).is_err() {
                break;
            }
        }
    });
    lines
}

/// Send one stdin line: verbatim, or in an envelope with `--json`; a failure is said on
/// stderr and the session goes on.
async fn send_line(client: &client::Client, args: &ConnectArgs, line: String) {
    let sent = if args.json {
        match args.envelope(&line) {
            Ok(out) => client.send_envelope(out).await,
            Err(e) => Err(e),
        }
    } else {
        client.send_text(line).await
    };
    if let Err(e) = sent {
        eprintln!("wsm: not sent: {e}");
    }
}

/// One line on stdout; an error (stdout closed) instead of `println!`'s panic.
fn print_line(line: &str) -> std::io::Result<()> {
    use std::io::Write;
    writeln!(std::io::stdout().lock(), "{line}")
}

/// Wait for the first `Connected`. On a first failure, say why in one line: the cause the
/// client reports (the `Reconnecting` state carries it, so nothing dials a second time to
/// find out), or the reason it gave up.
async fn first_connection(events: &mut mpsc::Receiver<Event>, args: &ConnectArgs) -> Result<()> {
    let failed = |reason: String| Error::ConnectFailed {
        url: args.url.clone(),
        reason,
    };
    let wait = async {
        while let Some(event) = events.recv().await {
            match event {
                Event::State(ConnectionState::Connected) => {
                    let _ = report(&Event::State(ConnectionState::Connected));
                    return Ok(());
                }
                Event::State(ConnectionState::Failed { reason }) => {
                    return Err(gave_up(&args.url, &reason))
                }
                // An immediate retry (a new token after a 401): the client is dialling again
                // already, and that attempt decides.
                Event::State(ConnectionState::Reconnecting { delay, .. }) if delay.is_zero() => {
                    let _ = report(&event);
                }
                Event::State(ConnectionState::Reconnecting { cause, .. }) => {
                    return Err(failed(cause))
                }
                other => {
                    let _ = report(&other);
                }
            }
        }
        Err(Error::ClientClosed)
    };
    // The connect timeout bounds the attempt itself; the margin covers starting the actors.
    let within = args.connect_timeout + Duration::from_secs(1);
    match tokio::time::timeout(within, wait).await {
        Ok(result) => result,
        Err(_) => Err(failed(format!(
            "not connected within {}",
            client::round_duration(args.connect_timeout)
        ))),
    }
}

/// The error for the reason of a `Failed` state, naming the URL once: a refused certificate
/// keeps its own words (what is wrong, what to do), anything else is a failed connect with its
/// cause.
fn gave_up(url: &str, reason: &str) -> Error {
    if let Some(words) = reason.strip_prefix("token provider failed: ") {
        return Error::TokenProvider {
            reason: words.to_owned(),
        };
    }
    if let Some(words) = reason.strip_prefix(&format!("TLS certificate of {url} refused: ")) {
        return Error::Certificate {
            url: url.to_owned(),
            reason: words.to_owned(),
        };
    }
    let reason = reason
        .strip_suffix(" (reconnection is disabled)")
        .unwrap_or(reason);
    let reason = reason
        .strip_prefix(&format!("connect to {url} failed: "))
        .unwrap_or(reason);
    Error::ConnectFailed {
        url: url.to_owned(),
        reason: reason.to_owned(),
    }
}

/// Print an event on stderr; answers the reason when the client has given up.
fn report(event: &Event) -> Option<String> {
    match event {
        Event::State(ConnectionState::Failed { reason }) => Some(reason.clone()),
        Event::State(state) => {
            eprintln!("wsm: {state}");
            None
        }
        Event::MessageError(e) => {
            eprintln!(
                "wsm: incoming message not delivered ({}): {}",
                e.kind, e.detail
            );
            None
        }
        Event::Recovery {
            room,
            recovered: true,
            missed,
            ..
        } => {
            eprintln!("recovered {missed} messages in {room}");
            None
        }
        Event::Recovery { room, reason, .. } => {
            let reason = reason.as_deref().unwrap_or("unknown");
            eprintln!("{room}: could not recover ({reason}): messages may be missing");
            None
        }
        Event::TokenRefresh {
            refreshed: true, ..
        } => {
            eprintln!("wsm: token refreshed");
            None
        }
        Event::TokenRefresh { reason, .. } => {
            let reason = reason.as_deref().unwrap_or("unknown");
            eprintln!("wsm: token refresh failed: {reason}");
            None
        }
    }
}
