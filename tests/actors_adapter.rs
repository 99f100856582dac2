//! Services already built on actix-web-actors take part in rooms without rewriting their
//! sessions: a `WebsocketContext` actor attaches itself with `Rooms::join_recipient` and gets
//! room messages as `RoomFrame`s through its bounded mailbox.

mod common;

use actix::prelude::*;
use actix_web::{web, App, HttpRequest, HttpResponse, HttpServer};
use actix_web_actors::ws;
use actix_ws_manager::server::RoomFrame;
use actix_ws_manager::server::Rooms;
use common::{test_config, Peer, WAIT};

/// An existing actix-web-actors session: it echoes what its client sends, and since this change
/// it is also a member of `lobby`.
struct LegacySession {
    rooms: Rooms,
}

impl Actor for LegacySession {
    type Context = ws::WebsocketContext<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        let rooms = self.rooms.clone();
        let me = ctx.address().recipient();
        ctx.wait(
            async move { rooms.join_recipient("lobby", me).await }
                .into_actor(self)
                .map(|joined, _, ctx: &mut Self::Context| match joined {
                    Ok(_) => ctx.text(r#"{"type":"attached"}"#),
                    Err(e) => ctx.close(Some(ws::CloseReason {
                        code: ws::CloseCode::Error,
                        description: Some(e.to_string()),
                    })),
                }),
        );
    }
}

/// Handler for room messages: write the shared frame as it is.
impl Handler<RoomFrame> for LegacySession {
    type Result = ();
    fn handle(&mut self, frame: RoomFrame, ctx: &mut Self::Context) {
        ctx.text(frame.0);
    }
}

impl StreamHandler<Result<ws::Message, ws::ProtocolError>> for LegacySession {
    fn handle(&mut self, msg: Result<ws::Message, ws::ProtocolError>, ctx: &mut Self::Context) {
        match msg {
            Ok(ws::Message::Text(t)) => ctx.text(t),
            Ok(ws::Message::Ping(p)) => ctx.pong(&p),
            Ok(ws::Message::Close(r)) => {
                ctx.close(r);
                ctx.stop();
            }
            _ => {}
        }
    }
}

/// A rooms client publishes into `lobby`, server code publishes too, and the legacy
/// actix-web-actors session's client receives both; the rooms server lists it as a member.
#[actix_rt::test]
async fn an_actix_web_actors_session_joins_rooms() {
    let rooms = Rooms::start(test_config()).expect("rooms");
    let app_rooms = rooms.clone();
    let http = HttpServer::new(move || {
        let legacy_rooms = app_rooms.clone();
        App::new().configure(app_rooms.mount("/ws")).route(
            "/legacy",
            web::get().to(move |req: HttpRequest, body: web::Payload| {
                let rooms = legacy_rooms.clone();
                async move {
                    ws::start(LegacySession { rooms }, &req, body)
                        .or_else(|e| Ok::<_, actix_web::Error>(HttpResponse::from_error(e)))
                }
            }),
        )
    })
    .workers(1)
    .disable_signals()
    .bind("127.0.0.1:0")
    .expect("bind");
    let addr = http.addrs()[0];
    let running = http.run();
    let handle = running.handle();
    actix_rt::spawn(running);

    let mut legacy = Peer::connect(&format!("ws://{addr}/legacy")).await;
    assert_eq!(legacy.json().await["type"], "attached");
    assert_eq!(rooms.members("lobby").await.expect("members").len(), 1);

    let (mut member, _) = Peer::rooms(&format!("ws://{addr}/ws")).await;
    member.text(r#"{"type":"join","room":"lobby"}"#).await;
    assert_eq!(member.json().await["type"], "joined");
    member
        .text(r#"{"type":"publish","room":"lobby","event":"chat","data":"hi from ws"}"#)
        .await;
    let got = legacy.json().await;
    assert_eq!(
        (got["type"].as_str(), got["data"].as_str()),
        (Some("chat"), Some("hi from ws"))
    );
    assert_eq!(got["room"], "lobby");

    rooms
        .publish_json("lobby", &"from the server")
        .await
        .expect("publish");
    // The member sees its own publish first, then the server's; the legacy client the server's.
    assert_eq!(legacy.json().await["data"], "from the server");
    // The legacy session still does its own job.
    legacy.text("plain echo").await;
    let echoed = tokio::time::timeout(WAIT, legacy.frame())
        .await
        .expect("echo");
    assert!(matches!(echoed, Some(awc::ws::Frame::Text(t)) if &t[..] == b"plain echo"));
    // Not graceful: the open sockets would hold a graceful stop for its whole timeout.
    handle.stop(false).await;
}

/// An attached actor that stops handling messages (here: stuck in a wait that never ends, its
/// mailbox bounded at 2) is a slow consumer like any session: it is removed from its rooms and
/// counted, and the other members keep getting every message.
#[actix_rt::test]
async fn a_stuck_actor_is_a_slow_consumer() {
    struct Stuck;
    impl Actor for Stuck {
        type Context = Context<Self>;
        fn started(&mut self, ctx: &mut Context<Self>) {
            ctx.set_mailbox_capacity(2);
        }
    }
    impl Handler<RoomFrame> for Stuck {
        type Result = ();
        fn handle(&mut self, _: RoomFrame, ctx: &mut Context<Self>) {
            ctx.wait(actix::fut::wrap_future(std::future::pending::<()>()));
        }
    }
    let server = common::start_server(test_config());
    let rooms = server.rooms().clone();
    let stuck = rooms
        .join_recipient("busy", Stuck.start().recipient())
        .await
        .expect("attach");
    let (mut member, _) = Peer::rooms(&server.url()).await;
    member.text(r#"{"type":"join","room":"busy"}"#).await;
    assert_eq!(member.json().await["type"], "joined");
    for i in 0..20 {
        rooms.publish_json("busy", &i).await.expect("publish");
    }
    for i in 0..20 {
        assert_eq!(member.json().await["data"], i);
    }
    let stats = rooms.stats().await.expect("stats");
    assert_eq!(stats.slow_consumer_disconnects, 1, "{stats:?}");
    let members = rooms.members("busy").await.expect("members");
    assert!(!members.contains(&stuck), "{members:?}");
    server.shutdown().await.expect("shutdown");
}
