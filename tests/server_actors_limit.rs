//! Why the session transport is actix-ws and not actix-web-actors: with actix-web-actors, an
//! actor whose socket writes stall stops running its timers (actix-web issue 2441), so a
//! heartbeat living in it cannot notice the stuck client. This test shows it on this stack; the
//! crate's own sessions pass the matching test in `server_slow.rs`
//! (`heartbeat_fires_while_writes_are_stalled`).

mod common;

use std::time::Duration;

use actix::prelude::*;
use actix_web::{web, App, HttpRequest, HttpServer};
use actix_web_actors::ws;
use common::WAIT;
use futures_util::StreamExt;

/// An actix-web-actors session that writes 16 KiB every 5 ms from a timer and reports each tick.
struct Flooder {
    ticks: tokio::sync::watch::Sender<u64>,
}

impl Actor for Flooder {
    type Context = ws::WebsocketContext<Self>;
    fn started(&mut self, ctx: &mut Self::Context) {
        ctx.run_interval(Duration::from_millis(5), |act, ctx| {
            act.ticks.send_modify(|t| *t += 1);
            ctx.binary(vec![0u8; 16 * 1024]);
        });
    }
}

impl StreamHandler<Result<ws::Message, ws::ProtocolError>> for Flooder {
    fn handle(&mut self, _: Result<ws::Message, ws::ProtocolError>, _: &mut Self::Context) {}
}

/// Wait until `ticks` has not changed for `quiet`; false if it kept changing for `within`.
async fn goes_quiet(
    ticks: &mut tokio::sync::watch::Receiver<u64>,
    quiet: Duration,
    within: Duration,
) -> bool {
    let deadline = tokio::time::Instant::now() + within;
    while tokio::time::Instant::now() < deadline {
        if tokio::time::timeout(quiet, ticks.changed()).await.is_err() {
            return true;
        }
    }
    false
}

/// With actix-web-actors, a 5 ms timer stops firing while the client does not read (writes
/// stalled) and resumes when it reads again: timers inside the actor are starved by stalled
/// writes.
#[actix_rt::test]
async fn actix_web_actors_timers_stall_with_writes() {
    let (tx, mut ticks) = tokio::sync::watch::channel(0u64);
    // Only the socket option of our hook is used here (a small SO_SNDBUF, so writes stall soon).
    let config = actix_ws_manager::config::ServerConfig::default()
        .tcp_send_buffer(Some(16 * 1024))
        .keep_socket_handle(false);
    let hook = actix_ws_manager::server::Rooms::start(config)
        .expect("config")
        .on_connect();
    let http = HttpServer::new(move || {
        let tx = tx.clone();
        App::new().route(
            "/",
            web::get().to(move |req: HttpRequest, body: web::Payload| {
                let ticks = tx.clone();
                async move { ws::start(Flooder { ticks }, &req, body) }
            }),
        )
    })
    .workers(1)
    .on_connect(hook)
    .disable_signals()
    .bind("127.0.0.1:0")
    .expect("bind");
    let addr = http.addrs()[0];
    let running = http.run();
    let handle = running.handle();
    actix_rt::spawn(running);

    let sock = tokio::net::TcpSocket::new_v4().expect("socket");
    sock.set_recv_buffer_size(4096).expect("rcvbuf");
    let tcp = sock.connect(addr).await.expect("connect");
    let (mut client, _) = tokio_tungstenite::client_async(format!("ws://{addr}/"), tcp)
        .await
        .expect("handshake");

    // Not reading: the timer, which should tick 200 times a second, goes silent.
    assert!(
        goes_quiet(&mut ticks, Duration::from_millis(300), WAIT).await,
        "timer kept running"
    );
    let stalled_at = *ticks.borrow_and_update();
    assert!(
        goes_quiet(
            &mut ticks,
            Duration::from_millis(300),
            Duration::from_millis(300)
        )
        .await,
        "timer ran while writes were stalled"
    );
    // Reading again unblocks the writes, and with them the timer.
    let reader = async { while let Some(Ok(_)) = client.next().await {} };
    let resumed = async {
        tokio::time::timeout(WAIT, ticks.wait_for(|t| *t > stalled_at + 10))
            .await
            .is_ok()
    };
    let resumed = tokio::select! {
        r = resumed => r,
        _ = reader => false,
    };
    assert!(resumed, "timer did not resume once the client read");
    handle.stop(false).await;
}
