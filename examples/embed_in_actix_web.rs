//! Mount rooms into an existing actix-web app and publish into a room from an HTTP handler.
//!
//! Run: `cargo run --example embed_in_actix_web`, then connect a WebSocket client to
//! `ws://127.0.0.1:8080/ws`, send `{"type":"join","room":"lobby"}`, and
//! `curl -d hello http://127.0.0.1:8080/notify` to see `{"type":"message","room":"lobby",...}`.
use actix_web::{web, App, HttpResponse, HttpServer};
#[rustfmt::skip] // kept as compact as the README's 15-line version
use actix_ws_manager::{config::ServerConfig, server::{self, Rooms}};
#[rustfmt::skip]
#[actix_web::main]
async fn main() -> std::io::Result<()> {
    let rooms = Rooms::start(ServerConfig::default()).expect("valid config"); // one hub, shared
    HttpServer::new(move || {
        App::new()
            .configure(rooms.mount("/ws"))            // rooms protocol; also app data Data<Rooms>
            .route("/notify", web::post().to(|rooms: web::Data<Rooms>, body: String| async move {
                HttpResponse::Ok().body(rooms.publish("lobby", &body).await.unwrap_or(0).to_string())
            }))
    })
    .on_connect(server::on_connect) // lets the server cut sockets of clients that stopped reading
    .bind(("127.0.0.1", 8080))?.run().await
}
