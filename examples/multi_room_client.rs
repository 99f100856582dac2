//! A chat client in several rooms at once, which survives server restarts on its own.
//!
//! It joins every room named on the command line with presence, prints who is in each room once
//! it is in (and again after every rejoin) and who comes and goes, prints each message with its
//! room and sender, prints connection-state changes, publishes the lines typed on stdin
//! (`room: text`), and exits cleanly when stdin closes (Ctrl-D). Joins are on-connect messages
//! (`Client::join_with_presence`), so after a server restart the client reconnects (backoff with
//! jitter) and rejoins every room by itself, still with presence.
//!
//! Run it alone (it starts an embedded rooms server on a free port):
//!
//! ```sh
//! cargo run --example multi_room_client -- lobby news
//! ```
//!
//! or against a running server (`cargo run --bin wsm -- serve` in another terminal):
//!
//! ```sh
//! cargo run --example multi_room_client -- --url ws://127.0.0.1:8080/ws lobby news
//! ```
//!
//! then type `lobby: hello` or `news: {"headline": "json works too"}`. Start a second one to
//! watch it come (`* presence lobby: +s-2`) and go. Stop and restart the server to watch it
//! reconnect and rejoin. `tests/example_multi_room.rs` drives [`run`] through
//! a server restart.

use std::time::Duration;

use actix_ws_manager::client::{connect, Client, ConnectionState, Event, Inbound};
use actix_ws_manager::config::{ClientConfig, ServerConfig};
use actix_ws_manager::protocol::{
    self, ErrorReply, Joined, PresenceData, PresenceDiff, PresenceMember, RoomMessage, Welcome,
};
use actix_ws_manager::{server, Error};
use tokio::sync::mpsc;

/// How long [`run`] waits for the first connection before it gives up.
pub const FIRST_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// How long [`run`] waits, after its input ends, for the answers to what it published.
pub const DRAIN_TIMEOUT: Duration = Duration::from_secs(5);

/// The client: connect to `url`, join `rooms` (again after every reconnect), publish each
/// `room: text` line from `lines`, and write what happens to `out` (one line per message,
/// `[room] sender: data`, and `* ...` lines for joins, who is in a room (`* in lobby (2): s-1,
/// s-2`), who came and went (`* presence lobby: +s-3 -s-2`), state changes and problems).
///
/// Returns `Ok` once `lines` ends, the answers to what it published have arrived (its own
/// messages coming back, or errors; at most [`DRAIN_TIMEOUT`] later), and the client is closed;
/// fails when the first connection
/// does not come up within [`FIRST_CONNECT_TIMEOUT`], or when the server refuses the client for
/// good (`Failed`).
pub async fn run(
    url: &str,
    rooms: &[String],
    config: ClientConfig,
    mut lines: mpsc::Receiver<String>,
    out: mpsc::Sender<String>,
) -> Result<(), Error> {
    let client = connect(url, config)?;
    // Subscribed before the first connection, so nothing is missed.
    let mut events = client.subscribe_events(64);
    let mut messages = client.subscribe::<RoomMessage>(256);
    let mut joined = client.subscribe::<Joined>(64);
    let mut welcomes = client.subscribe::<Welcome>(4);
    let mut errors = client.subscribe::<ErrorReply>(16);
    let mut diffs = client.subscribe::<PresenceDiff>(256);
    for room in rooms {
        // Sent now and, first of all, after every reconnect: the rejoin needs no code of ours.
        client.join_with_presence(room, None).await?;
    }
    if let Err(e) = client.wait_connected(FIRST_CONNECT_TIMEOUT).await {
        client.close().await;
        return Err(e);
    }

    // What was published and what came back for it (its own message, or an error), so that
    // piped input (`echo 'lobby: hi' | multi_room_client lobby`) sees its answers before exit.
    let (mut published, mut answered) = (0usize, 0usize);
    let mut me: Option<String> = None;
    let mut drain_until: Option<tokio::time::Instant> = None;
    let result = loop {
        if drain_until.is_some() && answered >= published {
            break Ok(());
        }
        tokio::select! {
            _ = sleep_until(drain_until) => break Ok(()),
            line = lines.recv(), if drain_until.is_none() => {
                let Some(line) = line else {
                    // stdin closed: wait (bounded) for the answers to what was published.
                    drain_until = Some(tokio::time::Instant::now() + DRAIN_TIMEOUT);
                    continue;
                };
                match publish_line(&client, &line).await {
                    Ok(sent) => published += usize::from(sent),
                    Err(note) => {
                        let _ = out.send(note).await;
                    }
                }
            }
            Some(msg) = messages.recv() => {
                if me.is_some() && msg.from == me {
                    answered += 1;
                }
                let _ = out.send(message_line(&msg)).await;
            }
            Some(j) = joined.recv() => report_joined(&client, j.room.as_deref(), &out).await,
            Some(diff) = diffs.recv() => {
                let _ = out.send(diff_line(&diff)).await;
            }
            Some(w) = welcomes.recv() => {
                let _ = out.send(format!("* welcome, you are {}", w.data.session)).await;
                me = Some(w.data.session);
            }
            Some(e) = errors.recv() => {
                // A publish's error has no id (the publish had none); a request's is its answer.
                answered += usize::from(e.id.is_none());
                let _ = out.send(format!("* server error {}: {}", e.data.code, e.data.message)).await;
            }
            Some(event) = events.recv() => {
                if let Some(e) = report_event(event, url, &out).await {
                    break Err(e);
                }
            }
        }
    };
    client.close().await;
    result
}

/// Sleep until `deadline`; forever without one.
async fn sleep_until(deadline: Option<tokio::time::Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline).await,
        None => std::future::pending().await,
    }
}

/// Publish one `room: text` line: `Ok(true)` when sent, `Ok(false)` for a blank line, else the
/// note to print (not sent, or not in the `room: text` form).
async fn publish_line(client: &Client, line: &str) -> Result<bool, String> {
    match parse_line(line) {
        Some((room, data)) => {
            let msg = protocol::publish(room, &data).map_err(|e| format!("* not sent: {e}"))?;
            client
                .send_envelope(msg)
                .await
                .map_err(|e| format!("* not sent: {e}"))?;
            Ok(true)
        }
        None if line.trim().is_empty() => Ok(false),
        None => Err("* type `room: text`".to_owned()),
    }
}

/// A room joined (or rejoined): say so, and who is there, which the diffs that follow change.
async fn report_joined(client: &Client, room: Option<&str>, out: &mpsc::Sender<String>) {
    let room = room.unwrap_or("?");
    let _ = out.send(format!("* joined {room}")).await;
    let line = match client.presence(room).await {
        Ok(now) => members_line(room, &now),
        Err(e) => format!("* who is in {room}: {e}"),
    };
    let _ = out.send(line).await;
}

/// Who is in a room, as one line: `* in lobby (2): s-1, s-2` (with `...` when the server's list
/// was cut).
fn members_line(room: &str, now: &PresenceData) -> String {
    let names: Vec<String> = now.members.iter().map(member_name).collect();
    let more = if now.truncated { ", ..." } else { "" };
    format!("* in {room} ({}): {}{more}", now.count, names.join(", "))
}

/// A presence diff as one line: `* presence lobby: +s-3 -s-2`.
fn diff_line(diff: &Inbound<PresenceDiff>) -> String {
    let room = diff.room.as_deref().unwrap_or("?");
    let joins = diff
        .data
        .joins
        .iter()
        .map(|m| format!(" +{}", member_name(m)));
    let leaves = diff
        .data
        .leaves
        .iter()
        .map(|m| format!(" -{}", member_name(m)));
    format!(
        "* presence {room}:{}",
        joins.chain(leaves).collect::<String>()
    )
}

/// A member as people read it: `identity(session)`, or its session.
fn member_name(m: &PresenceMember) -> String {
    match &m.identity {
        Some(identity) => format!("{identity}({})", m.session),
        None => m.session.clone(),
    }
}

/// A room message as one line: `[room] sender: data` (a JSON string's text, else the JSON).
fn message_line(msg: &Inbound<RoomMessage>) -> String {
    let room = msg.room.as_deref().unwrap_or("?");
    let from = msg.from.as_deref().unwrap_or("server");
    let text = match &msg.data.0 {
        serde_json::Value::String(s) => s.clone(),
        other => other.to_string(),
    };
    format!("[{room}] {from}: {text}")
}

/// Print a state change or a bad message as a `* ...` line. Answers the error to end with
/// when the server refused the client for good (`Failed`).
async fn report_event(event: Event, url: &str, out: &mpsc::Sender<String>) -> Option<Error> {
    match event {
        Event::State(state) => {
            let _ = out.send(format!("* {}", describe(&state))).await;
            if let ConnectionState::Failed { reason } = state {
                return Some(Error::ConnectFailed {
                    url: url.to_owned(),
                    reason,
                });
            }
        }
        Event::MessageError(e) => {
            let _ = out
                .send(format!("* bad message ({:?}): {}", e.kind, e.detail))
                .await;
        }
        Event::Recovery {
            room,
            recovered,
            missed,
            reason,
        } => {
            let line = match (recovered, reason) {
                (true, _) => format!("* recovered {missed} messages in {room}"),
                (false, reason) => format!("* {room}: could not recover ({reason:?})"),
            };
            let _ = out.send(line).await;
        }
        // Only with a token provider, which this example does not set.
        Event::TokenRefresh { refreshed, reason } => {
            let _ = out
                .send(format!("* token refreshed: {refreshed} {reason:?}"))
                .await;
        }
    }
    None
}

/// `"room: text"` → `("room", data)`, where data is the text parsed as JSON when it is JSON,
/// else the text as a JSON string.
pub fn parse_line(line: &str) -> Option<(&str, serde_json::Value)> {
    let (room, text) = line.split_once(':')?;
    let (room, text) = (room.trim(), text.trim());
    if room.is_empty() || text.is_empty() {
        return None;
    }
    let data = serde_json::from_str(text).unwrap_or_else(|_| text.into());
    Some((room, data))
}

/// One human-readable line per state.
pub fn describe(state: &ConnectionState) -> String {
    // One line in words, durations rounded (the state's Display).
    state.to_string()
}

#[allow(dead_code)] // used by `main` only
/// A chat client in several rooms at once; lines `room: text` on stdin are published.
#[derive(Debug, clap::Parser)]
#[command(name = "multi_room_client")]
struct Args {
    /// The rooms server (default: an embedded one on a free port).
    #[arg(long)]
    url: Option<String>,
    /// Rooms to join [default: lobby].
    rooms: Vec<String>,
}

#[allow(dead_code)] // tests/example_multi_room.rs compiles this file as a module and uses `run`
#[actix_rt::main]
async fn main() -> std::process::ExitCode {
    let Args { url, mut rooms } = clap::Parser::parse();
    if rooms.is_empty() {
        rooms.push("lobby".to_owned());
    }
    // Without --url, an embedded rooms server on a free port makes the example run alone.
    let (url, embedded) = match url {
        Some(url) => (url, None),
        None => match server::serve("127.0.0.1:0", "/ws", "/echo", ServerConfig::default()) {
            Ok(s) => (s.url(), Some(s)),
            Err(e) => {
                eprintln!("cannot start the embedded server: {e}");
                return std::process::ExitCode::FAILURE;
            }
        },
    };
    println!("* {url}, rooms {rooms:?}; type `room: text`, Ctrl-D to quit");

    // stdin is blocking: read it on its own thread. The channel closes when stdin does.
    let (line_tx, line_rx) = mpsc::channel(16);
    std::thread::spawn(move || {
        for line in std::io::stdin().lines().map_while(Result::ok) {
            if line_tx.blocking_send(line).is_err() {
                break;
            }
        }
    });
    let (out_tx, mut out_rx) = mpsc::channel::<String>(256);
    let printer = actix_rt::spawn(async move {
        while let Some(line) = out_rx.recv().await {
            println!("{line}");
        }
    });

    let result = run(&url, &rooms, ClientConfig::default(), line_rx, out_tx).await;
    let _ = printer.await; // `run` dropped the sender: everything has been printed
    if let Some(server) = embedded {
        let _ = server.shutdown().await;
    }
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("multi_room_client: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}
