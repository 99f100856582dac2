//! A `Manager` following many upstream feed connections: typed handlers, request/reply, and
//! per-connection stats.
//!
//! It opens `--connections` connections (default 4) through one [`Manager`], each joining the
//! room `feed` again after every reconnect. Incoming room messages are decoded into the Rust
//! type [`Tick`] and delivered to one actor (a typed `Recipient<Inbound<Tick>>`) that keeps
//! per-connection counts. Every `--every` (default 2 s) each connection sends an `echo` request
//! and waits for the reply with the same id, and a table of per-connection stats is printed:
//! state, ticks, messages in/out, reconnects, heartbeat round-trip time, echo round-trip time.
//! It stops after `--duration` (default 10 s) or on Ctrl-C, closing every connection cleanly.
//!
//! Run it alone (it starts an embedded rooms server and a tick publisher):
//!
//! ```sh
//! cargo run --example feed_follower
//! cargo run --example feed_follower -- --connections 8 --duration 30s --every 5s
//! ```
//!
//! or follow a running server (`cargo run --bin wsm -- serve`), where the first connection
//! publishes the ticks:
//!
//! ```sh
//! cargo run --example feed_follower -- --url ws://127.0.0.1:8080/ws
//! ```

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use actix::prelude::*;
use actix_ws_manager::client::{Client, Inbound, Manager, ManagerConfig};
use actix_ws_manager::config::{ClientConfig, HeartbeatConfig, ServerConfig};
use actix_ws_manager::{protocol, server, Error, WireMessage};
use serde::{Deserialize, Serialize};

/// The room every connection follows.
const ROOM: &str = "feed";

/// One price tick, the `data` of a rooms `message`. Binding it to the wire type `message`
/// makes the router decode `data` straight into this struct.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Tick {
    /// Sequence number from the publisher.
    pub seq: u64,
    /// The price.
    pub price: f64,
}
impl WireMessage for Tick {
    const TYPE: &'static str = "message";
}

/// What the follower knows about one connection's ticks.
#[derive(Debug, Clone, Default)]
struct Seen {
    ticks: u64,
    last: Option<Tick>,
}

/// The typed handler: one actor receives the ticks of every connection (`Inbound::connection`
/// says which).
#[derive(Default)]
struct Follower {
    seen: BTreeMap<String, Seen>,
}

impl Actor for Follower {
    type Context = Context<Self>;

    /// One follower serves every connection, so its mailbox (the subscription's buffer: the
    /// client `try_send`s into it and drops and counts what does not fit) is larger than
    /// actix's default of 16.
    fn started(&mut self, ctx: &mut Context<Self>) {
        ctx.set_mailbox_capacity(1024);
    }
}

/// Handler for [`Inbound<Tick>`]: count it under its connection's name.
impl Handler<Inbound<Tick>> for Follower {
    type Result = ();
    fn handle(&mut self, msg: Inbound<Tick>, _: &mut Context<Self>) {
        let seen = self.seen.entry(msg.connection.to_string()).or_default();
        seen.ticks += 1;
        seen.last = Some(msg.data);
    }
}

/// Ask the follower for what it has seen so far.
#[derive(Message)]
#[rtype(result = "BTreeMap<String, Seen>")]
struct Snapshot;

/// Handler for [`Snapshot`].
impl Handler<Snapshot> for Follower {
    type Result = MessageResult<Snapshot>;
    fn handle(&mut self, _: Snapshot, _: &mut Context<Self>) -> Self::Result {
        MessageResult(self.seen.clone())
    }
}

/// Follow N feeds with a `Manager`, a typed handler actor and request/reply.
#[derive(Debug, clap::Parser)]
#[command(name = "feed_follower")]
struct Options {
    /// The rooms server to follow (default: an embedded one on a free port).
    #[arg(long)]
    url: Option<String>,
    /// Connections to open.
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u64).range(1..))]
    connections: u64,
    /// How long to follow, such as `10s`.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    duration: Duration,
    /// How often to print the per-connection table, such as `2s` (at least 100ms).
    #[arg(long, default_value = "2s", value_parser = humantime::parse_duration)]
    every: Duration,
}

/// Publish a tick into the room through `publisher` every 100 ms, until it is closed.
async fn publish_ticks(publisher: Client) {
    let mut every = actix_rt::time::interval(Duration::from_millis(100));
    for seq in 0u64.. {
        every.tick().await;
        let tick = Tick {
            seq,
            price: 100.0 + (seq % 50) as f64 / 10.0,
        };
        let sent = match protocol::publish(ROOM, &tick) {
            Ok(msg) => publisher.send_envelope(msg).await,
            Err(e) => Err(e),
        };
        if matches!(sent, Err(Error::ClientClosed)) {
            break;
        }
    }
}

/// One echo request per connection, concurrently; the round-trip time or the error, by name.
async fn probe_all(clients: &[Client], round: u64) -> BTreeMap<String, String> {
    let probes = clients.iter().map(|c| async move {
        let started = Instant::now();
        let result = match protocol::echo(&serde_json::json!({ "probe": round })) {
            Ok(msg) => c.request_envelope(msg, Duration::from_secs(2)).await,
            Err(e) => Err(e),
        };
        let shown = match result {
            Ok(_) => format!("{:.1?}", started.elapsed()),
            Err(e) => format!("failed: {e}"),
        };
        (c.name().to_owned(), shown)
    });
    futures_util::future::join_all(probes)
        .await
        .into_iter()
        .collect()
}

async fn print_stats(manager: &Manager, follower: &Addr<Follower>, round: u64) {
    let mut clients = manager.clients();
    clients.sort_by(|a, b| a.name().cmp(b.name()));
    let echo = probe_all(&clients, round).await;
    let seen = follower.send(Snapshot).await.unwrap_or_default();
    println!(
        "{:<8} {:<11} {:>6} {:>7} {:>8} {:>7} {:>6} {:>9} {:>10}",
        "name", "state", "ticks", "last", "msgs in", "out", "recon", "hb rtt", "echo"
    );
    for c in &clients {
        let s = c.stats();
        let state = format!("{:?}", c.state());
        let state = state
            .split([' ', '{'])
            .next()
            .unwrap_or_default()
            .to_owned();
        let rtt = s
            .smoothed_rtt
            .map(|d| format!("{d:.1?}"))
            .unwrap_or_else(|| "-".into());
        let (ticks, last) = match seen.get(c.name()) {
            Some(Seen {
                ticks,
                last: Some(t),
            }) => (*ticks, format!("{:.1}", t.price)),
            Some(seen) => (seen.ticks, "-".into()),
            None => (0, "-".into()),
        };
        println!(
            "{:<8} {:<11} {:>6} {:>7} {:>8} {:>7} {:>6} {:>9} {:>10}",
            c.name(),
            state,
            ticks,
            last,
            s.messages_in,
            s.messages_out,
            s.reconnects,
            rtt,
            echo.get(c.name()).map(String::as_str).unwrap_or("-"),
        );
    }
    let total = manager.stats();
    println!(
        "total: {} connections, {} connected, {} messages in, {} dropped\n",
        total.connections, total.states.connected, total.messages_in, total.dropped
    );
}

#[actix_rt::main]
async fn main() -> std::process::ExitCode {
    let mut options = <Options as clap::Parser>::parse();
    options.every = options.every.max(Duration::from_millis(100));
    match follow(options).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("feed_follower: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn follow(options: Options) -> Result<(), Error> {
    let (url, embedded) = match options.url {
        Some(url) => (url, None),
        None => {
            let server = server::serve("127.0.0.1:0", "/ws", "/echo", ServerConfig::default())?;
            (server.url(), Some(server))
        }
    };
    println!(
        "following {url} with {} connections for {:?}",
        options.connections, options.duration
    );

    // Pings every second, so the heartbeat round-trip time shows up in the first table.
    let client = ClientConfig::default().heartbeat(HeartbeatConfig::new(
        Duration::from_secs(1),
        Duration::from_secs(5),
    ));
    let manager = Manager::new(ManagerConfig::default().client(client))?;
    let follower = Follower::default().start();
    let mut clients = Vec::new();
    for i in 0..options.connections {
        let c = manager.connect(format!("feed-{i}"), &url).await?;
        c.send_on_connect(protocol::join(ROOM)).await?; // rejoined after every reconnect
        c.subscribe_actor::<Tick>(follower.clone().recipient());
        clients.push(c);
    }
    for c in &clients {
        c.wait_connected(Duration::from_secs(10)).await?;
    }
    let first = clients.first().cloned();
    let publisher = first.map(|c| actix_rt::spawn(publish_ticks(c)));

    let deadline = actix_rt::time::sleep(options.duration);
    tokio::pin!(deadline);
    let mut every = actix_rt::time::interval(options.every);
    every.tick().await; // the first tick is immediate
    for round in 1u64.. {
        tokio::select! {
            _ = every.tick() => print_stats(&manager, &follower, round).await,
            _ = &mut deadline => break,
            _ = actix_rt::signal::ctrl_c() => break,
        }
    }
    print_stats(&manager, &follower, 0).await;
    let closed = manager.shutdown().await;
    if let Some(p) = publisher {
        p.abort();
    }
    println!("closed {closed} connections");
    if let Some(server) = embedded {
        server.shutdown().await?;
    }
    Ok(())
}
