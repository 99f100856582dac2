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

async fn ws_route(
    req: HttpRequest,
    body: web::Payload,
    state: web::Data<State>,
) -> Result<HttpResponse, actix_web::Error> {
    let (response, mut session, stream) = actix_ws::handle(&req, body)?;
    let mut stream = stream.max_frame_size(64 * 1024 * 1024);
    let n = state.counter.fetch_add(1, Ordering::SeqCst);
    let (cmd_tx, mut cmd_rx) = mpsc::unbounded_channel();
    state.sessions.lock().expect("sessions lock").push(cmd_tx);
    let events = state.events.clone();
    let behaviour = state.behaviour.clone();
    let _ = events.send(PeerEvent::Connected(n));
    if behaviour.drop_at_once {
        return Ok(response);
    }
    actix_rt::spawn(async move {
        loop {
            tokio::select! {
                msg = stream.recv() => match msg {
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
                        let _ = session.close(reason).await;
                        return;
                    }
                    Some(Ok(_)) => {}
                    Some(Err(_)) | None => {
                        let _ = events.send(PeerEvent::Gone(n));
                        return;
                    }
                },
                cmd = cmd_rx.recv() => match cmd {
                    Some(PeerCmd::Text(t)) => { let _ = session.text(t).await; }
                    Some(PeerCmd::Binary(b)) => { let _ = session.binary(b).await; }
                    Some(PeerCmd::Fragment(item)) => { let _ = session.continuation(item).await; }
                    Some(PeerCmd::Ping(p)) => { let _ = session.ping(&p).await; }
                    Some(PeerCmd::Close(code)) => {
                        let _ = session
                            .close(Some(CloseReason { code: CloseCode::from(code), description: Some("test close".into()) }))
                            .await;
                        // Wait for the client's answer, bounded.
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
                        return;
                    }
                    Some(PeerCmd::Stall) => {
                        let _ = events.send(PeerEvent::Stalled(n));
                        // Read nothing until told otherwise; any command ends the stall.
                        if cmd_rx.recv().await.is_none() {
                            return;
                        }
                    }
                    Some(PeerCmd::Abort) | None => return,
                }
            }
        }
    });
    Ok(response)
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
