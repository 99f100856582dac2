//! An ordinary actix-web app that embeds rooms, publishes into them from HTTP, and follows an
//! upstream feed with a background `Manager`.
//!
//! It shows:
//!
//! - the app's own HTTP routes next to the WebSocket ones: `GET /health`, `GET /stats` (hub and
//!   upstream counters as JSON);
//! - the rooms server mounted at `/ws` (and the echo endpoint at `/echo`) with one
//!   `configure` call each;
//! - `POST /rooms/{room}`: the request body is published into the room;
//! - a background [`Manager`] that keeps an outbound connection to an upstream feed alive
//!   (reconnects, rejoins) and forwards every message it receives into the room `feed`;
//! - state shared with handlers through `web::Data` (the `Rooms` handle registers itself; the
//!   manager is added with `app_data`);
//! - a clean Ctrl-C: close the manager's connections, close every session with 1001, stop the
//!   HTTP server.
//!
//! Run it alone (the "upstream feed" is then a second, in-process rooms server whose room
//! `ticks` gets a tick every second):
//!
//! ```sh
//! cargo run --example embed_in_actix_web
//! cargo run --example embed_in_actix_web -- --bind 127.0.0.1:9000 --upstream ws://127.0.0.1:8080/ws
//! ```
//!
//! then, in other terminals:
//!
//! ```sh
//! cargo run --bin wsm -- connect --join feed ws://127.0.0.1:8080/ws    # the forwarded ticks
//! cargo run --bin wsm -- connect --join lobby ws://127.0.0.1:8080/ws
//! curl -d 'hello from HTTP' http://127.0.0.1:8080/rooms/lobby          # reaches the second one
//! curl http://127.0.0.1:8080/stats
//! ```
//!
//! With `--upstream URL`, the manager joins the room `ticks` on that rooms server instead.

use std::time::Duration;

use actix_web::{web, App, HttpResponse, HttpServer};
use actix_ws_manager::client::{Manager, ManagerConfig};
use actix_ws_manager::config::ServerConfig;
use actix_ws_manager::protocol::{self, RoomMessage};
use actix_ws_manager::server::{self, Rooms, Server};
use actix_ws_manager::Error;

/// The room this app forwards the upstream feed into.
const FEED_ROOM: &str = "feed";
/// The room the manager joins upstream.
const UPSTREAM_ROOM: &str = "ticks";

/// `GET /health`: the app's own route, untouched by the WebSocket machinery.
async fn health() -> HttpResponse {
    HttpResponse::Ok().body("ok")
}

/// `GET /stats`: the rooms hub's counters and the upstream connections', as JSON.
async fn stats(rooms: web::Data<Rooms>, manager: web::Data<Manager>) -> HttpResponse {
    let hub = match rooms.stats().await {
        Ok(hub) => hub,
        Err(e) => return HttpResponse::ServiceUnavailable().body(e.to_string()),
    };
    let up = manager.stats();
    HttpResponse::Ok().json(serde_json::json!({
        "rooms": {
            "sessions": hub.sessions,
            "rooms": hub.rooms,
            "published": hub.published,
            "delivered": hub.delivered,
            "dropped": hub.dropped,
        },
        "upstream": {
            "connections": up.connections,
            "connected": up.states.connected,
            "messages_in": up.messages_in,
            "reconnects": up.reconnects,
        },
    }))
}

/// `POST /rooms/{room}`: publish the body (as a JSON string) into the room; answers how many
/// members it reached.
async fn publish(rooms: web::Data<Rooms>, room: web::Path<String>, body: String) -> HttpResponse {
    match rooms.publish_json(&room, &body).await {
        Ok(n) => HttpResponse::Ok().json(serde_json::json!({ "delivered": n })),
        Err(e @ Error::BadRoom(_)) => HttpResponse::BadRequest().body(e.to_string()),
        Err(e) => HttpResponse::ServiceUnavailable().body(e.to_string()),
    }
}

/// Without `--upstream`: a second rooms server in this process, standing in for a remote feed,
/// with a tick published into its room `ticks` every second.
fn start_fake_feed() -> Result<Server, Error> {
    let feed = server::serve("127.0.0.1:0", "/ws", "/echo", ServerConfig::default())?;
    let rooms = feed.rooms().clone();
    actix_rt::spawn(async move {
        let mut every = actix_rt::time::interval(Duration::from_secs(1));
        for seq in 0u64.. {
            every.tick().await;
            let tick = serde_json::json!({ "seq": seq, "price": 100.0 + (seq % 7) as f64 });
            if rooms.publish_json(UPSTREAM_ROOM, &tick).await.is_err() {
                break; // the feed server is gone
            }
        }
    });
    Ok(feed)
}

/// Rooms inside an actix-web app with routes of its own, fed by an upstream connection.
#[derive(Debug, clap::Parser)]
#[command(name = "embed_in_actix_web")]
struct Args {
    /// Where the app listens.
    #[arg(long, default_value = "127.0.0.1:8080")]
    bind: String,
    /// The upstream rooms server to forward into the app's room (default: a fake feed).
    #[arg(long)]
    upstream: Option<String>,
}

#[actix_web::main]
async fn main() -> std::process::ExitCode {
    // One line in words on failure (an `io::Result` main would print a Debug dump).
    match run().await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("embed_in_actix_web: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn run() -> std::io::Result<()> {
    let Args { bind, upstream } = clap::Parser::parse();

    // One rooms hub for every HTTP worker: started once, outside the App factory.
    let rooms = Rooms::start(ServerConfig::default())?;

    // The upstream feed and the manager that follows it.
    let (upstream_url, fake_feed) = match upstream {
        Some(url) => (url, None),
        None => {
            let feed = start_fake_feed()?;
            (feed.url(), Some(feed))
        }
    };
    let manager = web::Data::new(Manager::new(ManagerConfig::default().arbiters(Some(1)))?);
    let feed = manager.connect("upstream", &upstream_url).await?;
    feed.send_on_connect(protocol::join(UPSTREAM_ROOM)).await?;
    let mut ticks = feed.subscribe::<RoomMessage>(256);
    let forward_to = rooms.clone();
    actix_rt::spawn(async move {
        // Ends when the manager closes the connection (the channel closes with it).
        while let Some(msg) = ticks.recv().await {
            if let Err(e) = forward_to.publish_json(FEED_ROOM, &msg.data.0).await {
                eprintln!("forwarding a tick failed: {e}");
            }
        }
    });

    let app_rooms = rooms.clone();
    let app_manager = manager.clone();
    let http = HttpServer::new(move || {
        App::new()
            .configure(app_rooms.mount("/ws")) // rooms protocol; also registers Data<Rooms>
            .configure(app_rooms.mount_echo("/echo"))
            .app_data(app_manager.clone())
            .route("/health", web::get().to(health))
            .route("/stats", web::get().to(stats))
            .route("/rooms/{room}", web::post().to(publish))
    })
    .on_connect(rooms.on_connect()) // socket options from the config; cuts stuck sockets
    .disable_signals() // Ctrl-C is handled below, so that sessions get their 1001 first
    .bind(bind.as_str())
    .map_err(|e| std::io::Error::new(e.kind(), format!("cannot listen on {bind}: {e}")))?;
    for addr in http.addrs() {
        println!("listening on http://{addr} (rooms at ws://{addr}/ws); upstream {upstream_url}");
    }
    let http = http.run();
    let handle = http.handle();
    let running = actix_rt::spawn(http);

    tokio::select! {
        signal = actix_rt::signal::ctrl_c() => signal?,
        ended = running => ended.map_err(std::io::Error::other)??, // stopped by itself
    }
    println!("shutting down");
    manager.close_all().await; // outbound connections close with 1000
    let _ = rooms.shutdown().await; // every session gets 1001
    handle.stop(true).await;
    if let Some(feed) = fake_feed {
        let _ = feed.shutdown().await;
    }
    Ok(())
}
