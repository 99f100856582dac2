//! Embedding: the rooms route mounted into an ordinary actix-web `App`, publishing into a room
//! from a plain HTTP handler of the same app, and graceful shutdown with 1001.

mod common;

use actix_web::{web, App, HttpResponse, HttpServer};
use actix_ws_manager::server::Rooms;
use common::{j, start_server, test_config, Peer, WAIT};

/// An HTTP handler publishes into a room through `web::Data<Rooms>`: members get the message
/// (without `from`), the handler learns how many it reached; then `Rooms::shutdown` closes
/// every session with 1001.
#[actix_rt::test]
async fn http_handler_publishes_into_a_room_and_shutdown_closes_with_1001() {
    let rooms = Rooms::start(test_config()).expect("config");
    let app_rooms = rooms.clone();
    let http = HttpServer::new(move || {
        App::new()
            .configure(app_rooms.mount("/live"))
            .configure(app_rooms.mount_echo("/live-echo"))
            .route(
                "/notify/{room}",
                web::post().to(
                    |rooms: web::Data<Rooms>,
                     room: web::Path<String>,
                     body: web::Json<serde_json::Value>| async move {
                        match rooms.publish_json(&room, &body.into_inner()).await {
                            Ok(n) => HttpResponse::Ok().body(n.to_string()),
                            Err(e) => HttpResponse::BadRequest().body(e.to_string()),
                        }
                    },
                ),
            )
    })
    .workers(1)
    .on_connect(rooms.on_connect())
    .disable_signals()
    .bind("127.0.0.1:0")
    .expect("bind");
    let addr = http.addrs()[0];
    let running = http.run();
    let handle = running.handle();
    actix_rt::spawn(running);

    let url = format!("ws://{addr}/live");
    let (mut a, _) = Peer::rooms(&url).await;
    let (mut b, _) = Peer::rooms(&url).await;
    let mut echo = Peer::connect(&format!("ws://{addr}/live-echo")).await;
    for p in [&mut a, &mut b] {
        p.text(r#"{"type":"join","room":"news"}"#).await;
        assert_eq!(p.json().await["type"], "joined");
    }

    let client = awc::Client::new();
    let mut resp = client
        .post(format!("http://{addr}/notify/news"))
        .send_json(&j(r#"{"headline":"hello"}"#))
        .await
        .expect("POST");
    assert_eq!(resp.status().as_u16(), 200);
    assert_eq!(&resp.body().await.expect("body")[..], b"2");
    for p in [&mut a, &mut b] {
        let m = p.json().await;
        assert_eq!(m["type"], "message");
        assert_eq!(m["room"], "news");
        assert_eq!(m["data"], j(r#"{"headline":"hello"}"#));
        assert!(m.get("from").is_none(), "{m}");
        assert!(m["timestamp"].is_string());
    }
    let resp = client
        .post(format!("http://{addr}/notify/bad%20room"))
        .send_json(&j("1"))
        .await
        .expect("POST");
    assert_eq!(resp.status().as_u16(), 400);

    assert_eq!(rooms.shutdown().await.expect("shutdown"), 0);
    assert_eq!(a.close_code().await, Some(1001));
    assert_eq!(b.close_code().await, Some(1001));
    assert_eq!(echo.close_code().await, Some(1001));
    // New upgrades are refused while the app shuts down.
    match client.ws(url).connect().await {
        Err(awc::error::WsClientError::InvalidResponseStatus(s)) => assert_eq!(s.as_u16(), 503),
        other => panic!("{:?}", other.map(|_| ())),
    }
    handle.stop(true).await;
}

/// `serve` gives a standalone server on port 0 whose `shutdown` closes sessions with 1001 and
/// stops listening.
#[actix_rt::test]
async fn standalone_shutdown_closes_with_1001_and_stops_listening() {
    let server = start_server(test_config());
    let addr = server.local_addr();
    assert_ne!(addr.port(), 0);
    let (mut c, _) = Peer::rooms(&server.url()).await;
    let stop = actix_rt::spawn(server.shutdown());
    assert_eq!(c.close_code().await, Some(1001));
    tokio::time::timeout(WAIT, stop)
        .await
        .expect("shutdown finishes")
        .expect("task")
        .expect("shutdown");
    assert!(tokio::net::TcpStream::connect(addr).await.is_err());
}
