//! An existing actix-web-actors service joins rooms without rewriting its sessions.
//!
//! Run: `cargo run --example actix_web_actors_rooms` (add `-- 127.0.0.1:9000` to choose the
//! address). `/legacy` is an ordinary `actix_web_actors::ws` session (it echoes); on start it
//! attaches itself to room `lobby` with `Rooms::join_recipient` and writes every room message
//! it gets. `/ws` is the rooms endpoint. Try `wsm connect ws://127.0.0.1:8080/legacy` in one
//! terminal and `wsm connect --json --join lobby --room lobby ws://127.0.0.1:8080/ws` in
//! another: what the second publishes appears in the first. Ctrl-C stops it.

use actix::prelude::*;
use actix_web::{web, App, HttpRequest, HttpResponse, HttpServer};
use actix_web_actors::ws;
use actix_ws_manager::config::ServerConfig;
use actix_ws_manager::server::{RoomFrame, Rooms};

/// The session the service already had; the only additions are `started` and the
/// `RoomFrame` handler.
struct LegacySession {
    rooms: Rooms,
}

impl Actor for LegacySession {
    type Context = ws::WebsocketContext<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        let rooms = self.rooms.clone();
        let me = ctx.address().recipient();
        // Wait for the hub before reading the client, so nothing is missed.
        ctx.wait(
            async move { rooms.join_recipient("lobby", me).await }
                .into_actor(self)
                .map(|joined, _, ctx: &mut Self::Context| {
                    if let Err(e) = joined {
                        ctx.close(Some(ws::CloseReason {
                            code: ws::CloseCode::Error,
                            description: Some(e.to_string()),
                        }));
                        ctx.stop();
                    }
                }),
        );
    }
}

/// Handler for room messages: the envelope, already encoded, goes out as it is.
impl Handler<RoomFrame> for LegacySession {
    type Result = ();
    fn handle(&mut self, frame: RoomFrame, ctx: &mut Self::Context) {
        ctx.text(frame.0);
    }
}

/// The session's own job, unchanged: echo.
impl StreamHandler<Result<ws::Message, ws::ProtocolError>> for LegacySession {
    fn handle(&mut self, msg: Result<ws::Message, ws::ProtocolError>, ctx: &mut Self::Context) {
        match msg {
            Ok(ws::Message::Text(t)) => ctx.text(t),
            Ok(ws::Message::Ping(p)) => ctx.pong(&p),
            Ok(ws::Message::Close(r)) => {
                ctx.close(r);
                ctx.stop();
            }
            Ok(_) => {}
            Err(_) => ctx.stop(),
        }
    }
}

async fn legacy(
    req: HttpRequest,
    body: web::Payload,
    rooms: web::Data<Rooms>,
) -> actix_web::Result<HttpResponse> {
    ws::start(
        LegacySession {
            rooms: rooms.get_ref().clone(),
        },
        &req,
        body,
    )
}

/// An actix-web-actors session and the rooms endpoint side by side.
#[derive(Debug, clap::Parser)]
#[command(name = "actix_web_actors_rooms")]
struct Args {
    /// Where to listen.
    #[arg(default_value = "127.0.0.1:8080")]
    bind: String,
}

#[actix_web::main]
async fn main() -> std::process::ExitCode {
    // One line in words on failure (an `io::Result` main would print a Debug dump).
    match run().await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("actix_web_actors_rooms: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn run() -> std::io::Result<()> {
    let Args { bind } = clap::Parser::parse();
    let rooms = Rooms::start(ServerConfig::default())?;
    let hook = rooms.on_connect();
    let server = HttpServer::new(move || {
        App::new()
            .configure(rooms.mount("/ws")) // also registers web::Data<Rooms>
            .route("/legacy", web::get().to(legacy))
    })
    .on_connect(hook)
    .bind(bind.as_str())
    .map_err(|e| std::io::Error::new(e.kind(), format!("cannot listen on {bind}: {e}")))?;
    for addr in server.addrs() {
        println!("listening: ws://{addr}/legacy (actix-web-actors) and ws://{addr}/ws (rooms)");
    }
    server.run().await
}
