//! The servers under test, each in a child process of its own (this bench binary, re-executed
//! with `__serve KIND MODE`): ours, bare tokio-tungstenite (`tt`, `tt4k`) and plain
//! actix-web-actors (`actors`), each as an echo server or a broadcast room (`bcast`).

use std::io::{BufRead, BufReader, Write};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use actix::prelude::*;
use actix_web::{web, App, HttpRequest, HttpResponse, HttpServer};
use actix_web_actors::ws as actors_ws;
use actix_ws_manager::config::ServerConfig;
use actix_ws_manager::server;
use futures_util::{SinkExt, StreamExt};
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::Message;

use crate::{cores, rss_of};

/// `__serve KIND MODE`: print `PORT <n>`, serve until stdin closes.
pub(crate) fn serve_child(args: &[String]) {
    let kind = args.first().map(String::as_str).unwrap_or("tt");
    let mode = args.get(1).map(String::as_str).unwrap_or("echo");
    let listener = match std::net::TcpListener::bind("127.0.0.1:0") {
        Ok(l) => l,
        Err(e) => panic!("bind: {e}"),
    };
    let port = listener.local_addr().map(|a| a.port()).unwrap_or(0);
    // Exit when the parent closes our stdin (or dies).
    std::thread::spawn(|| {
        let mut line = String::new();
        let _ = std::io::stdin().read_line(&mut line);
        std::process::exit(0);
    });
    let broadcast = mode == "bcast";
    match kind {
        "ours" => {
            drop(listener);
            serve_ours();
        }
        "actors" => serve_actors(listener, port, broadcast),
        _ => serve_tt(listener, port, kind == "tt4k", broadcast),
    }
}

/// Ours: [`server::serve`] with the default [`ServerConfig`] (rooms at `/ws`, echo at
/// `/echo`) on a port of its own choosing.
fn serve_ours() {
    let sys = actix_rt::System::new();
    sys.block_on(async {
        let config = ServerConfig::default().max_sessions(100_000);
        let srv = match server::serve("127.0.0.1:0", "/ws", "/echo", config) {
            Ok(s) => s,
            Err(e) => panic!("serve: {e}"),
        };
        announce(srv.local_addr().port());
        std::future::pending::<()>().await;
    });
}

/// Plain actix-web-actors on `listener`: an echo actor, or a member of one broadcast room.
fn serve_actors(listener: std::net::TcpListener, port: u16, broadcast: bool) {
    let sys = actix_rt::System::new();
    sys.block_on(async move {
        // One room for every worker, as a plain actix chat server would have it.
        let room = BcastRoom::default().start();
        let srv = HttpServer::new(move || {
            let app = App::new().app_data(web::Data::new(room.clone()));
            if broadcast {
                app.route("/", web::get().to(actors_bcast))
            } else {
                app.route("/", web::get().to(actors_echo))
            }
        })
        .disable_signals()
        .listen(listener);
        let srv = match srv {
            Ok(s) => s.run(),
            Err(e) => panic!("listen: {e}"),
        };
        announce(port);
        let _ = srv.await;
    });
}

/// Bare tokio-tungstenite on `listener`: one current-thread runtime per core accepting on it,
/// the default `WebSocketConfig` (`small_buffer`: a 4 KiB read buffer).
fn serve_tt(listener: std::net::TcpListener, port: u16, small_buffer: bool, broadcast: bool) {
    let config = if small_buffer {
        WebSocketConfig::default().read_buffer_size(4096)
    } else {
        WebSocketConfig::default()
    };
    let _ = listener.set_nonblocking(true);
    let members: Members = Arc::new(Mutex::new(Vec::new()));
    let threads: Vec<_> = (0..cores())
        .filter_map(|_| listener.try_clone().ok())
        .map(|l| {
            let members = members.clone();
            std::thread::spawn(move || tt_server_thread(l, config, broadcast, members))
        })
        .collect();
    announce(port);
    for t in threads {
        let _ = t.join();
    }
}

/// Tell the parent the port: the first line on stdout.
fn announce(port: u16) {
    let mut out = std::io::stdout();
    let _ = writeln!(out, "PORT {port}");
    let _ = out.flush();
}

/// A socket the bare server accepted.
type TtSocket = tokio_tungstenite::WebSocketStream<tokio::net::TcpStream>;

/// The bare server's broadcast list: every connection's bounded outbound queue.
type Members = Arc<Mutex<Vec<(u64, mpsc::Sender<Message>)>>>;

/// One of the bare server's threads: a current-thread runtime accepting on its copy of the
/// listener.
fn tt_server_thread(
    listener: std::net::TcpListener,
    config: WebSocketConfig,
    broadcast: bool,
    members: Members,
) {
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => panic!("runtime: {e}"),
    };
    let local = tokio::task::LocalSet::new();
    local.block_on(&rt, async move {
        let listener = match tokio::net::TcpListener::from_std(listener) {
            Ok(l) => l,
            Err(e) => panic!("listener: {e}"),
        };
        static NEXT: AtomicU64 = AtomicU64::new(0);
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                continue;
            };
            let _ = tcp.set_nodelay(true);
            let members = members.clone();
            tokio::task::spawn_local(async move {
                let Ok(ws) = tokio_tungstenite::accept_async_with_config(tcp, Some(config)).await
                else {
                    return;
                };
                if broadcast {
                    tt_member(ws, NEXT.fetch_add(1, Ordering::Relaxed), members).await;
                } else {
                    tt_echo(ws).await;
                }
            });
        }
    });
}

/// The bare echo connection: every text or binary frame goes back.
async fn tt_echo(mut ws: TtSocket) {
    while let Some(Ok(msg)) = ws.next().await {
        if (msg.is_text() || msg.is_binary()) && ws.send(msg).await.is_err() {
            break;
        }
    }
}

/// A bare broadcast member: its bounded queue joins `members`; every text frame it sends goes
/// to every member's queue (dropped where full).
async fn tt_member(ws: TtSocket, id: u64, members: Members) {
    let (qtx, mut qrx) = mpsc::channel::<Message>(256);
    if let Ok(mut m) = members.lock() {
        m.push((id, qtx));
    }
    let (mut tx, mut rx) = ws.split();
    let writer = tokio::task::spawn_local(async move {
        while let Some(msg) = qrx.recv().await {
            if tx.send(msg).await.is_err() {
                break;
            }
        }
    });
    while let Some(Ok(msg)) = rx.next().await {
        if msg.is_text() {
            if let Ok(m) = members.lock() {
                for (_, q) in m.iter() {
                    let _ = q.try_send(msg.clone());
                }
            }
        }
    }
    if let Ok(mut m) = members.lock() {
        m.retain(|(i, _)| *i != id);
    }
    writer.abort();
}

/// The plain actix-web-actors echo actor.
struct ActorsEcho;
impl Actor for ActorsEcho {
    type Context = actors_ws::WebsocketContext<Self>;
}
impl StreamHandler<Result<actors_ws::Message, actors_ws::ProtocolError>> for ActorsEcho {
    fn handle(
        &mut self,
        msg: Result<actors_ws::Message, actors_ws::ProtocolError>,
        ctx: &mut Self::Context,
    ) {
        match msg {
            Ok(actors_ws::Message::Text(t)) => ctx.text(t),
            Ok(actors_ws::Message::Binary(b)) => ctx.binary(b),
            Ok(actors_ws::Message::Ping(p)) => ctx.pong(&p),
            Ok(actors_ws::Message::Close(r)) => {
                ctx.close(r);
                ctx.stop();
            }
            Ok(_) => {}
            Err(_) => ctx.stop(),
        }
    }
}

async fn actors_echo(
    req: HttpRequest,
    body: web::Payload,
) -> Result<HttpResponse, actix_web::Error> {
    actors_ws::start(ActorsEcho, &req, body)
}

/// The plain actix-web-actors broadcast room: every member's address; a text frame from any
/// member goes to all of them (`do_send`, the usual actix chat-server shape).
#[derive(Default)]
struct BcastRoom {
    members: Vec<Recipient<BcastFrame>>,
}
impl Actor for BcastRoom {
    type Context = Context<Self>;
}

#[derive(Message, Clone)]
#[rtype(result = "()")]
struct BcastFrame(bytestring::ByteString);

#[derive(Message)]
#[rtype(result = "()")]
struct BcastJoin(Recipient<BcastFrame>);

impl Handler<BcastJoin> for BcastRoom {
    type Result = ();
    fn handle(&mut self, msg: BcastJoin, _: &mut Context<Self>) {
        self.members.push(msg.0);
    }
}
impl Handler<BcastFrame> for BcastRoom {
    type Result = ();
    fn handle(&mut self, msg: BcastFrame, _: &mut Context<Self>) {
        self.members.retain(|m| m.connected());
        for m in &self.members {
            m.do_send(msg.clone());
        }
    }
}

/// One member of the actix-web-actors broadcast room.
struct ActorsMember(Addr<BcastRoom>);
impl Actor for ActorsMember {
    type Context = actors_ws::WebsocketContext<Self>;
    fn started(&mut self, ctx: &mut Self::Context) {
        self.0.do_send(BcastJoin(ctx.address().recipient()));
    }
}
impl Handler<BcastFrame> for ActorsMember {
    type Result = ();
    fn handle(&mut self, msg: BcastFrame, ctx: &mut Self::Context) {
        ctx.text(msg.0);
    }
}
impl StreamHandler<Result<actors_ws::Message, actors_ws::ProtocolError>> for ActorsMember {
    fn handle(
        &mut self,
        msg: Result<actors_ws::Message, actors_ws::ProtocolError>,
        ctx: &mut Self::Context,
    ) {
        match msg {
            Ok(actors_ws::Message::Text(t)) => self.0.do_send(BcastFrame(t)),
            Ok(actors_ws::Message::Ping(p)) => ctx.pong(&p),
            Ok(actors_ws::Message::Close(r)) => {
                ctx.close(r);
                ctx.stop();
            }
            Ok(_) => {}
            Err(_) => ctx.stop(),
        }
    }
}

async fn actors_bcast(
    req: HttpRequest,
    body: web::Payload,
    room: web::Data<Addr<BcastRoom>>,
) -> Result<HttpResponse, actix_web::Error> {
    actors_ws::start(ActorsMember(room.get_ref().clone()), &req, body)
}

/// A server in a child process, killed (and reaped) when dropped.
pub(crate) struct ServerProc {
    child: Child,
    port: u16,
}

impl ServerProc {
    /// Start `__serve KIND MODE` and read the port it announces.
    pub(crate) fn start(kind: &str, mode: &str) -> ServerProc {
        let exe = match std::env::current_exe() {
            Ok(e) => e,
            Err(e) => panic!("current_exe: {e}"),
        };
        let mut child = match Command::new(exe)
            .args(["__serve", kind, mode])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
        {
            Ok(c) => c,
            Err(e) => panic!("spawn server {kind}: {e}"),
        };
        let mut line = String::new();
        if let Some(out) = child.stdout.as_mut() {
            let _ = BufReader::new(out).read_line(&mut line);
        }
        let port = line
            .trim()
            .strip_prefix("PORT ")
            .and_then(|p| p.parse().ok())
            .unwrap_or_else(|| panic!("server {kind} did not announce a port: {line:?}"));
        // Let the workers settle before any baseline is read.
        std::thread::sleep(Duration::from_millis(300));
        ServerProc { child, port }
    }

    /// `ws://127.0.0.1:<port><path>`.
    pub(crate) fn url(&self, path: &str) -> String {
        format!("ws://127.0.0.1:{}{path}", self.port)
    }

    /// Its process id, for its CPU figures.
    pub(crate) fn pid(&self) -> Option<u32> {
        Some(self.child.id())
    }

    /// Its resident set size now, in bytes (0 when unknown).
    pub(crate) fn rss(&self) -> u64 {
        rss_of(self.pid())
    }
}

impl Drop for ServerProc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
