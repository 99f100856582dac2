//! A scriptable WebSocket peer for client tests: a real actix-web server on 127.0.0.1 (port 0,
//! or a given port to simulate a restart) whose sessions report what they receive and obey
//! commands, including the faults a client must survive (fragmented, oversize and invalid
//! frames, silence, abrupt drops, close codes).
#![allow(dead_code)]

use std::net::TcpListener;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use actix_web::dev::ServerHandle;
use actix_web::{web, App, HttpRequest, HttpResponse, HttpServer};
use actix_ws::{CloseCode, CloseReason, Item, Message};
use bytes::Bytes;
use tokio::sync::mpsc;

/// What a peer session saw.
#[derive(Debug, Clone, PartialEq)]
pub enum PeerEvent {
    Connected(usize),
    Text(usize, String),
    Binary(usize, Bytes),
    Ping(usize, Bytes),
    Pong(usize, Bytes),
    /// The client sent a Close frame with this code (None: no code).
    Closed(usize, Option<u16>),
    /// The client's stream ended or failed.
    Gone(usize),
    /// The session stopped reading.
    Stalled(usize),
}

/// What the test tells the newest session to do.
#[derive(Debug)]
pub enum PeerCmd {
    Text(String),
    Binary(Bytes),
    Fragment(Item),
    Ping(Bytes),
    Close(u16),
    /// Drop the socket without a close frame.
    Abort,
    /// Stop reading from the socket (until the next command), so the client's writes back up.
    Stall,
}

/// How sessions behave on their own.
#[derive(Debug, Clone)]
pub struct Behaviour {
    /// Echo text and binary messages back.
    pub echo: bool,
    /// Answer protocol pings with pongs.
    pub answer_pings: bool,
    /// Answer `{"type":"ask","id":N,"data":D}` with `{"type":"answer","id":N,"data":D}` and
    /// `{"type":"fail","id":N}` with an error envelope; ignore `{"type":"slow"}`.
    pub reply: bool,
    /// Answer the text `{"type":"ping"}` with `{"type":"pong"}` (application heartbeat).
    pub app_pong: bool,
    /// Drop every connection as soon as it is accepted.
    pub drop_at_once: bool,
}

impl Default for Behaviour {
    fn default() -> Self {
        Self {
            echo: true,
            answer_pings: true,
            reply: false,
            app_pong: false,
            drop_at_once: false,
        }
    }
}

struct State {
    behaviour: Behaviour,
    sessions: Mutex<Vec<mpsc::UnboundedSender<PeerCmd>>>,
    events: mpsc::UnboundedSender<PeerEvent>,
    counter: AtomicUsize,
    /// Each session's `Authorization` header (every value, joined by `, `), in session order.
    authorizations: Mutex<Vec<Option<String>>>,
}

/// A running peer.
pub struct Peer {
    pub port: u16,
    pub url: String,
    handle: ServerHandle,
    state: Arc<State>,
    pub events: mpsc::UnboundedReceiver<PeerEvent>,
}

impl Peer {
    /// Start on a free port.
    pub async fn start(behaviour: Behaviour) -> Peer {
        Self::start_on(0, behaviour).await
    }

    /// Start on `port` (0 for any).
    pub async fn start_on(port: u16, behaviour: Behaviour) -> Peer {
        let listener = TcpListener::bind(("127.0.0.1", port)).expect("bind test peer");
        let port = listener.local_addr().expect("local addr").port();
        let (tx, rx) = mpsc::unbounded_channel();
        let state = Arc::new(State {
            behaviour,
            sessions: Mutex::new(Vec::new()),
            events: tx,
            counter: AtomicUsize::new(0),
            authorizations: Mutex::new(Vec::new()),
        });
        let data = web::Data::from(state.clone());
        let server = HttpServer::new(move || {
            App::new()
                .app_data(data.clone())
                .route("/ws", web::get().to(ws_route))
                .route(
                    "/forbidden",
                    web::get().to(|| async { HttpResponse::Forbidden().finish() }),
                )
                .route(
                    "/unavailable",
                    web::get().to(|| async { HttpResponse::ServiceUnavailable().finish() }),
                )
        })
        .workers(1)
        .disable_signals()
        .shutdown_timeout(0)
        .listen(listener)
        .expect("listen")
        .run();
        let handle = server.handle();
        actix_rt::spawn(server);
        Peer {
            port,
            url: format!("ws://127.0.0.1:{port}/ws"),
            handle,
            state,
            events: rx,
        }
    }

    /// Command the newest session.
    pub fn send(&self, cmd: PeerCmd) {
        let sessions = self.state.sessions.lock().expect("sessions lock");
        let tx = sessions.last().expect("no session yet");
        tx.send(cmd).expect("session gone");
    }

    /// Each session's `Authorization` header so far, in session order (several values joined
    /// by `, `; `None`: no such header).
    pub fn authorizations(&self) -> Vec<Option<String>> {
        self.state.authorizations.lock().expect("lock").clone()
    }

    /// Stop the server and drop every connection.
    pub async fn stop(self) {
        for tx in self.state.sessions.lock().expect("sessions lock").iter() {
            let _ = tx.send(PeerCmd::Abort);
        }
        self.handle.stop(false).await;
    }

    /// The next event, within `within`.
    pub async fn next_within(&mut self, within: Duration) -> PeerEvent {
        match tokio::time::timeout(within, self.events.recv()).await {
            Ok(Some(e)) => e,
            Ok(None) => panic!("peer event channel closed"),
            Err(_) => panic!("no peer event within {within:?}"),
        }
    }

    /// The next event that is not a ping or pong.
    pub async fn next(&mut self) -> PeerEvent {
        loop {
            match self.next_within(super::WAIT).await {
                PeerEvent::Ping(..) | PeerEvent::Pong(..) => continue,
                e => return e,
            }
        }
    }

    /// The next text message any session received.
    pub async fn next_text(&mut self) -> String {
        match self.next().await {
            PeerEvent::Text(_, t) => t,
            other => panic!("expected a text message, got {other:?}"),
        }
    }
}

/// The `/ws` route: count and register the session, then run it (unless told to drop at once).
async fn ws_route(
    req: HttpRequest,
    body: web::Payload,
    state: web::Data<State>,
) -> Result<HttpResponse, actix_web::Error> {
    let (response, session, stream) = actix_ws::handle(&req, body)?;
    let stream = stream.max_frame_size(64 * 1024 * 1024);
    let auth: Vec<&str> = req
        .headers()
        .get_all(actix_web::http::header::AUTHORIZATION)
        .filter_map(|v| v.to_str().ok())
        .collect();
    let auth = (!auth.is_empty()).then(|| auth.join(", "));
    state.authorizations.lock().expect("lock").push(auth);
    let n = state.counter.fetch_add(1, Ordering::SeqCst);
    let (cmd_tx, cmd_rx) = mpsc::unbounded_channel();
    state.sessions.lock().expect("sessions lock").push(cmd_tx);
    let events = state.events.clone();
    let behaviour = state.behaviour.clone();
    let _ = events.send(PeerEvent::Connected(n));
    if behaviour.drop_at_once {
        return Ok(response);
    }
    let ctx = SessionCtx {
        n,
        session,
        events,
        behaviour,
    };
    actix_rt::spawn(run_session(ctx, stream, cmd_rx));
    Ok(response)
}

/// What a running session uses to answer and report.
struct SessionCtx {
    n: usize,
    session: actix_ws::Session,
    events: mpsc::UnboundedSender<PeerEvent>,
    behaviour: Behaviour,
}

/// A session's loop: the client's messages and the test's commands, until one of them ends it.
async fn run_session(
    mut ctx: SessionCtx,
    mut stream: actix_ws::MessageStream,
    mut cmd_rx: mpsc::UnboundedReceiver<PeerCmd>,
) {
    loop {
        let next = tokio::select! {
            msg = stream.recv() => on_message(&mut ctx, msg).await,
            cmd = cmd_rx.recv() => on_command(&mut ctx, cmd, &mut cmd_rx).await,
        };
        match next {
            Next::Go => {}
            Next::End => return,
            Next::Close(reason, wait_for_answer) => {
                let _ = ctx.session.close(reason).await;
                if wait_for_answer {
                    await_close_answer(ctx.n, &mut stream, &ctx.events).await;
                }
                return;
            }
        }
    }
}

/// What a session does after a message or command.
enum Next {
    /// Keep going.
    Go,
    /// End the session.
    End,
    /// Close with this reason, then (if true) wait for the client's answer, and end.
    Close(Option<CloseReason>, bool),
}

/// Report a message from the client and answer it as the behaviour says.
async fn on_message(
    ctx: &mut SessionCtx,
    msg: Option<Result<Message, actix_ws::ProtocolError>>,
) -> Next {
    let SessionCtx {
        n,
        session,
        events,
        behaviour,
    } = ctx;
    let n = *n;
    match msg {
        Some(Ok(Message::Text(t))) => {
            let _ = events.send(PeerEvent::Text(n, t.to_string()));
            if behaviour.app_pong && &*t == r#"{"type":"ping"}"# {
                let _ = session.text(r#"{"type":"pong"}"#).await;
            } else if behaviour.reply {
                if let Some(answer) = reply_to(&t) {
                    let _ = session.text(answer).await;
                }
            } else if behaviour.echo {
                let _ = session.text(t).await;
            }
        }
        Some(Ok(Message::Binary(b))) => {
            let _ = events.send(PeerEvent::Binary(n, b.clone()));
            if behaviour.echo {
                let _ = session.binary(b).await;
            }
        }
        Some(Ok(Message::Ping(p))) => {
            let _ = events.send(PeerEvent::Ping(n, p.clone()));
            if behaviour.answer_pings {
                let _ = session.pong(&p).await;
            }
        }
        Some(Ok(Message::Pong(p))) => {
            let _ = events.send(PeerEvent::Pong(n, p));
        }
        Some(Ok(Message::Close(reason))) => {
            let code = reason.as_ref().map(|r| u16::from(r.code));
            let _ = events.send(PeerEvent::Closed(n, code));
            return Next::Close(reason, false);
        }
        Some(Ok(_)) => {}
        Some(Err(_)) | None => {
            let _ = events.send(PeerEvent::Gone(n));
            return Next::End;
        }
    }
    Next::Go
}

/// Carry out a command of the test's.
async fn on_command(
    ctx: &mut SessionCtx,
    cmd: Option<PeerCmd>,
    cmd_rx: &mut mpsc::UnboundedReceiver<PeerCmd>,
) -> Next {
    let session = &mut ctx.session;
    match cmd {
        Some(PeerCmd::Text(t)) => {
            let _ = session.text(t).await;
        }
        Some(PeerCmd::Binary(b)) => {
            let _ = session.binary(b).await;
        }
        Some(PeerCmd::Fragment(item)) => {
            let _ = session.continuation(item).await;
        }
        Some(PeerCmd::Ping(p)) => {
            let _ = session.ping(&p).await;
        }
        Some(PeerCmd::Close(code)) => {
            let reason = CloseReason {
                code: CloseCode::from(code),
                description: Some("test close".into()),
            };
            // Then wait for the client's answer, bounded.
            return Next::Close(Some(reason), true);
        }
        Some(PeerCmd::Stall) => {
            let _ = ctx.events.send(PeerEvent::Stalled(ctx.n));
            // Read nothing until told otherwise; any command ends the stall.
            if cmd_rx.recv().await.is_none() {
                return Next::End;
            }
        }
        Some(PeerCmd::Abort) | None => return Next::End,
    }
    Next::Go
}

/// Wait for the client's answer to our close, bounded, and report it.
async fn await_close_answer(
    n: usize,
    stream: &mut actix_ws::MessageStream,
    events: &mpsc::UnboundedSender<PeerEvent>,
) {
    let _ = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            match stream.recv().await {
                Some(Ok(Message::Close(reason))) => {
                    let code = reason.as_ref().map(|r| u16::from(r.code));
                    let _ = events.send(PeerEvent::Closed(n, code));
                    return;
                }
                Some(Ok(_)) => {}
                _ => {
                    let _ = events.send(PeerEvent::Gone(n));
                    return;
                }
            }
        }
    })
    .await;
}

fn reply_to(text: &str) -> Option<String> {
    let v: serde_json::Value = serde_json::from_str(text).ok()?;
    let id = v.get("id")?.as_u64()?;
    match v.get("type")?.as_str()? {
        "ask" => Some(
            serde_json::json!({"type": "answer", "id": id, "data": v.get("data").cloned()}).to_string(),
        ),
        "fail" => Some(
            serde_json::json!({"type": "error", "id": id, "data": {"code": "nope", "message": "refused by the test peer"}})
                .to_string(),
        ),
        _ => None,
    }
}
