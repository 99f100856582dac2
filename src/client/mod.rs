//! The self-healing WebSocket client.
//!
//! [`connect`] starts four actors on the current arbiter and returns a [`Client`] handle:
//!
//! - *Connection*: owns the awc socket; frames to messages; bounded outbox.
//! - *Heartbeat*: pings, round-trip time, dead-peer detection.
//! - *ReconnectSupervisor*: backoff with jitter, give-up policy, on-connect replay.
//! - *Router*: typed subscriptions, request/reply, state events.
//!
//! The four actors are internal (`pub(crate)`); they message each other by design, and only
//! they refer to each other. Users see the [`Client`] handle, [`connect`], the [`Manager`] for
//! many connections, the delivered [`Inbound`] messages with their [`Overflow`] policy, the
//! [`ConnectionState`]s and [`Event`]s, and the [`Stats`].
//!
//! # Ending a connection
//!
//! - *close*: send a Close frame and wait, bounded (about 2 s), for the peer's; then the socket
//!   is cut. [`Client::close`] and [`Manager::close`] close with code 1000; a protocol fault
//!   found in the peer's frames closes with its code (1002, 1007, 1009).
//! - *cut*: drop the socket without a handshake: when the heartbeat finds the peer dead, a
//!   write fails, the writes have stalled so that not even a Close fits, or the peer does not
//!   answer our Close in time.
//! - *stop*: the actors end. After a close or a final failure the supervisor tells the others
//!   to stop and stops itself; the client is then `Closed` or `Failed` and sends nothing more.
//!
//! A lost socket (closed by the peer, or cut) is not the end of the client: the supervisor
//! reconnects unless its policy says to give up.
//!
//! # Nothing lost across a reconnect
//!
//! When the server keeps room history (room messages carry `offset` and `epoch`), the Router
//! keeps the position of the last message it delivered in each joined room: a rejoin asks for
//! what was missed (`join` with `since`), a message the server dropped for this client is
//! fetched from the history before later ones are delivered, and a repeated one is dropped. So
//! subscribers see each publication once, in order, and each recovery is reported as an
//! [`Event::Recovery`]. See [`recovery`] and [`Client::history`].
//!
//! # Keeping a session authenticated
//!
//! A [token provider](ClientConfig::token_provider) gives every connect attempt a fresh bearer
//! token, answers the server's `token_expiring` ([`Event::TokenRefresh`]), and turns a 401 or a
//! 4001 close into an immediate reconnect with a new token (see
//! [`TokenProvider`](crate::config::TokenProvider)).
//!
//! ```no_run
//! use std::time::Duration;
//! use actix_ws_manager::client::{connect, ConnectionState};
//! use actix_ws_manager::config::ClientConfig;
//! use actix_ws_manager::protocol::{self, RoomMessage};
//!
//! # async fn run() -> Result<(), actix_ws_manager::Error> {
//! let client = connect("ws://127.0.0.1:8080/ws", ClientConfig::default())?;
//! // Sent now and again after every reconnect.
//! client.send_on_connect(protocol::join("lobby")).await?;
//! let mut messages = client.subscribe::<RoomMessage>(256);
//! client.wait_connected(Duration::from_secs(5)).await?;
//! client.send_envelope(protocol::publish("lobby", &"hello")?).await?;
//! while let Some(msg) = messages.recv().await {
//!     tracing::info!("{:?} in {:?} from {:?}", msg.data, msg.room, msg.from);
//! }
//! client.close().await;
//! # Ok(()) }
//! ```

mod census;
mod connection;
mod gate;
mod heartbeat;
mod manager;
mod outbox;
pub mod presence;
mod reconnect;
pub mod recovery;
mod router;
mod state;

use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;
use bytes::Bytes;
use bytestring::ByteString;
use tokio::sync::mpsc;

pub use census::{census, wait_census, Census};
pub use connection::validate_url;
pub use gate::{CONTROL_AHEAD, ROUTE_AHEAD, ROUTE_AHEAD_BYTES};
pub use manager::{Manager, ManagerConfig, ManagerStats, StateCounts};
pub use presence::PRESENCE_TIMEOUT;
pub use recovery::{Position, Publication, RoomHistory, HISTORY_TIMEOUT};
pub use router::{Inbound, Overflow, REFRESH_TIMEOUT};
pub use state::{round_duration, ConnectionState, Event, MessageError, MessageErrorKind, Stats};

use crate::config::ClientConfig;
use crate::envelope::{Envelope, Outgoing, WireMessage};
use crate::error::{Error, Result};
use connection::{Connection, OnConnect, OutFrame, SendFrame};
use heartbeat::Heartbeat;
use outbox::Outbox;
use reconnect::{Close, ReconnectSupervisor};
use router::{
    CountSubscribers, RegisterRequest, RequestFrame, Router, Sink, Subscribe, SubscribeTo,
};
use state::ClientShared;

/// How long [`Client::close`] waits for the closing handshake (the Connection cuts the socket
/// after 2 s without the peer's Close).
const CLOSE_WAIT: Duration = Duration::from_secs(3);

/// A cheap, cloneable handle to one self-healing connection.
///
/// # Lifecycle
///
/// The connection lives while a handle does: when the last handle is dropped it is closed
/// (code 1000) and its actors stop, as with [`close`](Self::close). A [`Manager`] keeps a handle
/// for each connection it tracks, so its connections live until the manager closes them.
/// [`closed`](Self::closed) resolves when the client has ended (`Closed` or `Failed`). A
/// subscriber actor that stores a `Client` of its own keeps the connection alive that way (a
/// cycle): call [`close`](Self::close) explicitly there.
#[derive(Clone)]
pub struct Client {
    inner: Arc<ClientActors>,
}

/// What every handle of one client shares: the addresses of its actors and its shared state.
/// Dropping the last handle drops this, which closes the connection.
struct ClientActors {
    url: String,
    shared: Arc<ClientShared>,
    connection: Addr<Connection>,
    router: Addr<Router>,
    supervisor: Addr<ReconnectSupervisor>,
}

impl Drop for ClientActors {
    fn drop(&mut self) {
        // The last handle is gone: nobody can use the connection any more.
        if !self.shared.state().is_terminal() {
            self.supervisor.do_send(Close);
        }
    }
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("name", &self.inner.shared.name)
            .field("url", &self.inner.url)
            .field("state", &self.state())
            .finish()
    }
}

/// Start a client for `url` on the current arbiter and return its handle at once; the first
/// connection is made in the background (watch [`Client::subscribe_events`] or call
/// [`Client::wait_connected`]).
///
/// Fails, without panicking, on a URL that is not `ws://host...` or an invalid config. Must be
/// called from within a running actix system (an `#[actix_rt::main]`, `#[actix_web::main]` or
/// `#[actix_rt::test]` function, or an actor).
pub fn connect(url: &str, config: ClientConfig) -> Result<Client> {
    validate_url(url)?;
    config.validate()?;
    let name: Arc<str> = Arc::from(config.name.clone().unwrap_or_else(|| url.to_owned()));
    let shared = Arc::new(ClientShared::new(name));

    // The four actors refer to one another, so their addresses are made before they start.
    let conn_ctx = Context::<Connection>::new();
    let router_ctx = Context::<Router>::new();
    let sup_ctx = Context::<ReconnectSupervisor>::new();
    let conn_addr = conn_ctx.address();
    let router_addr = router_ctx.address();
    let sup_addr = sup_ctx.address();

    let heartbeat = config.heartbeat.enabled.then(|| {
        Heartbeat::new(config.heartbeat.clone(), shared.clone(), conn_addr.clone()).start()
    });

    let app_heartbeat = heartbeat
        .clone()
        .filter(|_| config.heartbeat.mode == crate::config::PingMode::Application);
    let outbox = Outbox::new(
        config.outbox.clone(),
        config.max_message_size,
        shared.clone(),
    );
    let gate = gate::ReadGate::new(shared.clone());
    let streams = router::shared_streams();
    router_ctx.run(Router::new(
        shared.clone(),
        app_heartbeat,
        outbox.clone(),
        gate.clone(),
        config.subscriber_bytes,
        streams.clone(),
        config.token_provider.clone(),
    ));
    let mut connection = Connection::new(
        url.to_owned(),
        config.clone(),
        shared.clone(),
        router_addr.clone(),
        outbox,
        gate,
        streams,
    );
    connection.set_peers(heartbeat.clone(), sup_addr.clone());
    conn_ctx.run(connection);
    sup_ctx.run(ReconnectSupervisor::new(
        config.reconnect.clone(),
        shared.clone(),
        conn_addr.clone(),
        router_addr.clone(),
        heartbeat,
        config.token_provider.is_some(),
    ));

    Ok(Client {
        inner: Arc::new(ClientActors {
            url: url.to_owned(),
            shared,
            connection: conn_addr,
            router: router_addr,
            supervisor: sup_addr,
        }),
    })
}

/// A failed message to one of the client's actors, as the user's error: an actor that has
/// stopped means the client was closed.
fn mailbox_error(e: MailboxError) -> Error {
    match e {
        MailboxError::Closed => Error::ClientClosed,
        MailboxError::Timeout => Error::Mailbox(e.to_string()),
    }
}

impl Client {
    /// Whether `other` is a handle to the same connection.
    pub(crate) fn same(&self, other: &Client) -> bool {
        Arc::ptr_eq(&self.inner, &other.inner)
    }

    /// The connection's name (from the config, or its URL).
    pub fn name(&self) -> &str {
        &self.inner.shared.name
    }

    /// The URL this client connects to.
    pub fn url(&self) -> &str {
        &self.inner.url
    }

    /// The current connection state.
    pub fn state(&self) -> ConnectionState {
        self.inner.shared.state()
    }

    /// A snapshot of the counters (read without messaging the actors).
    pub fn stats(&self) -> Stats {
        self.inner.shared.snapshot()
    }

    /// Send a typed message. Resolves once the message is accepted into the outbox (what then
    /// becomes of it is counted in [`Stats`]: written, failed, or dropped); fails with [`Error::OutboxFull`]
    /// under the `Reject` policy, [`Error::MessageTooLarge`], or [`Error::ClientClosed`].
    pub async fn send<T: WireMessage>(&self, msg: &T) -> Result<()> {
        self.send_envelope(Outgoing::new(msg)?).await
    }

    /// Publish a typed message into `room` (rooms protocol): every member, this client too,
    /// receives it as type `T::TYPE`, so subscribers of `T` get it with `room` and `from`. Join
    /// the room first ([`join`](Self::join)); the server refuses publishes from non-members.
    pub async fn publish<T: WireMessage>(&self, room: &str, msg: &T) -> Result<()> {
        self.send_envelope(crate::protocol::publish_event(room, msg)?)
            .await
    }

    /// Send a prepared envelope (with a `room`, for example).
    pub async fn send_envelope(&self, out: Outgoing) -> Result<()> {
        self.send_frame(OutFrame::Text(out.encode())).await
    }

    /// Send a binary message; it travels as bytes, untouched.
    pub async fn send_binary(&self, bytes: impl Into<Bytes>) -> Result<()> {
        self.send_frame(OutFrame::Binary(bytes.into())).await
    }

    async fn send_frame(&self, frame: OutFrame) -> Result<()> {
        self.inner
            .connection
            .send(SendFrame(frame))
            .await
            .map_err(mailbox_error)?
    }

    /// Send `msg` as a request and wait for the envelope that carries the same `id`.
    ///
    /// Fails with [`Error::RequestTimeout`] when no reply comes within `timeout`,
    /// [`Error::ConnectionLost`] when the connection drops first, [`Error::Remote`] when the
    /// reply is an `{"type":"error"}` envelope. A request that fails while its frame still waits
    /// in the outbox is taken out: it is never sent after its caller was told.
    ///
    /// The reply must be of type `Resp::TYPE`; its `data` is decoded as `Resp` (another type,
    /// or data that does not decode, is [`Error::Decode`]). For an untyped reply use
    /// [`request_envelope`](Self::request_envelope).
    pub async fn request<Req: WireMessage, Resp: WireMessage>(
        &self,
        msg: &Req,
        timeout: Duration,
    ) -> Result<Resp> {
        let reply = self.request_envelope(Outgoing::new(msg)?, timeout).await?;
        if reply.kind != Resp::TYPE {
            return Err(Error::Decode(format!(
                "expected a {:?} reply, got {:?}",
                Resp::TYPE,
                reply.kind
            )));
        }
        reply.data_as()
    }

    /// [`request`](Self::request) with a prepared envelope; its `id` is replaced.
    pub async fn request_envelope(&self, out: Outgoing, timeout: Duration) -> Result<Envelope> {
        self.request_frame(RequestFrame::Envelope(out), timeout)
            .await
    }

    async fn request_frame(&self, out: RequestFrame, timeout: Duration) -> Result<Envelope> {
        let rx = self
            .inner
            .router
            .send(RegisterRequest { out, timeout })
            .await
            .map_err(mailbox_error)??;
        match rx.await {
            Ok(result) => result,
            // The router stopped with the request still pending.
            Err(_) => Err(Error::ClientClosed),
        }
    }

    /// Register a message to send first on every connection: now if connected, and again after
    /// every reconnect, before anything that waited in the outbox (subscriptions, room joins).
    /// A message already registered (the same text) is not added twice. On-connect messages are
    /// the client's own traffic: not counted in [`Stats::accepted`].
    pub async fn send_on_connect(&self, out: Outgoing) -> Result<()> {
        self.on_connect(OnConnect::Add(out.encode())).await
    }

    /// Stop sending `out` on every connection (it must be the same message that was registered
    /// with [`send_on_connect`](Self::send_on_connect)). Nothing is sent.
    pub async fn remove_on_connect(&self, out: Outgoing) -> Result<()> {
        let text = out.encode();
        self.on_connect(OnConnect::Remove { text, then: None })
            .await
    }

    /// Join `room` (rooms protocol), now if connected and again after every reconnect, in place
    /// of the room's earlier join (one [with presence](Self::join_with_presence), say).
    pub async fn join(&self, room: &str) -> Result<()> {
        let text = crate::protocol::join(room).encode();
        self.join_frame(room, text).await
    }

    /// Leave `room`: it is no longer joined after a reconnect (however it was joined), and a
    /// `leave` is sent now if connected (when not connected there is nothing to leave).
    pub async fn leave(&self, room: &str) -> Result<()> {
        let then = crate::protocol::leave(room).encode();
        let room = room.to_owned();
        self.on_connect(OnConnect::Leave { room, then }).await
    }

    async fn on_connect(&self, edit: OnConnect) -> Result<()> {
        self.inner
            .connection
            .send(edit)
            .await
            .map_err(mailbox_error)?
    }

    // Naming: `subscribe*(capacity)` answers a bounded channel (dropping the receiver
    // unsubscribes); `subscribe*_actor(recipient)` delivers to an actor instead; `*_with` takes
    // the [`Overflow`] policy (the others use the default, `DropNewest`).

    /// Deliver every message of type `T` to an actor, bounded by the actor's mailbox capacity
    /// (actix's default is 16; `ctx.set_mailbox_capacity` changes it): when the mailbox is full
    /// the message is dropped for this actor, counted in [`Stats::dropped_incoming`] and
    /// reported as [`MessageErrorKind::SubscriberFull`]. For a subscriber that must see every
    /// message, use [`subscribe_actor_with`](Self::subscribe_actor_with) and
    /// [`Overflow::Backpressure`].
    pub fn subscribe_actor<T: WireMessage + Clone>(&self, recipient: Recipient<Inbound<T>>) {
        self.subscribe_actor_with(recipient, Overflow::DropNewest)
    }

    /// [`subscribe_actor`](Self::subscribe_actor) with the policy for a full mailbox:
    /// [`Overflow::DropNewest`] drops and counts, [`Overflow::Backpressure`] waits for room and
    /// meanwhile stops reading the socket once [`ROUTE_AHEAD`] messages wait (nothing is
    /// dropped, the peer is slowed by TCP).
    pub fn subscribe_actor_with<T: WireMessage + Clone>(
        &self,
        recipient: Recipient<Inbound<T>>,
        overflow: Overflow,
    ) {
        self.inner
            .router
            .do_send(Subscribe(Sink::actor(recipient, overflow)));
    }

    /// Deliver every message of type `T` to a bounded channel of `capacity` messages (at least
    /// 1). When it is full, messages are dropped, counted in [`Stats::dropped_incoming`] and
    /// reported as [`MessageErrorKind::SubscriberFull`]. Dropping the receiver unsubscribes.
    pub fn subscribe<T: WireMessage + Clone>(&self, capacity: usize) -> mpsc::Receiver<Inbound<T>> {
        self.subscribe_with(capacity, Overflow::DropNewest)
    }

    /// [`subscribe`](Self::subscribe) with the policy for a full channel (see [`Overflow`]).
    pub fn subscribe_with<T: WireMessage + Clone>(
        &self,
        capacity: usize,
        overflow: Overflow,
    ) -> mpsc::Receiver<Inbound<T>> {
        let (tx, rx) = mpsc::channel(capacity.max(1));
        self.inner
            .router
            .do_send(Subscribe(Sink::channel(tx, overflow)));
        rx
    }

    /// Deliver every text message, whatever its type, as an undecoded [`Envelope`]. With a raw
    /// subscriber, no type counts as unknown. A full channel drops and counts (see
    /// [`subscribe_raw_with`](Self::subscribe_raw_with)).
    pub fn subscribe_raw(&self, capacity: usize) -> mpsc::Receiver<Inbound<Envelope>> {
        self.subscribe_raw_with(capacity, Overflow::DropNewest)
    }

    /// [`subscribe_raw`](Self::subscribe_raw) with the policy for a full channel.
    pub fn subscribe_raw_with(
        &self,
        capacity: usize,
        overflow: Overflow,
    ) -> mpsc::Receiver<Inbound<Envelope>> {
        let (tx, rx) = mpsc::channel(capacity.max(1));
        self.inner
            .router
            .do_send(SubscribeTo::Raw(Sink::channel(tx, overflow)));
        rx
    }

    /// Deliver every text frame verbatim, before (and whether or not) it parses as an envelope:
    /// for tools and for peers that do not speak the envelope format. With a text subscriber,
    /// malformed JSON and unknown types are not reported as errors, and when there is no other
    /// subscriber, pending request or application heartbeat, frames are not parsed at all.
    pub fn subscribe_text(&self, capacity: usize) -> mpsc::Receiver<Inbound<ByteString>> {
        self.subscribe_text_with(capacity, Overflow::DropNewest)
    }

    /// [`subscribe_text`](Self::subscribe_text) with the policy for a full channel (`wsm
    /// connect` uses [`Overflow::Backpressure`]: a terminal that prints slowly slows the peer
    /// rather than losing lines).
    pub fn subscribe_text_with(
        &self,
        capacity: usize,
        overflow: Overflow,
    ) -> mpsc::Receiver<Inbound<ByteString>> {
        let (tx, rx) = mpsc::channel(capacity.max(1));
        self.inner
            .router
            .do_send(SubscribeTo::Text(Sink::channel(tx, overflow)));
        rx
    }

    /// Send a text frame verbatim, not wrapped in an envelope (for peers that do not speak the
    /// envelope format, and for relaying what a person typed).
    pub async fn send_text(&self, text: impl Into<ByteString>) -> Result<()> {
        self.send_frame(OutFrame::Text(text.into())).await
    }

    /// Deliver binary messages, as bytes. A full channel drops and counts.
    pub fn subscribe_binary(&self, capacity: usize) -> mpsc::Receiver<Inbound<Bytes>> {
        self.subscribe_binary_with(capacity, Overflow::DropNewest)
    }

    /// [`subscribe_binary`](Self::subscribe_binary) with the policy for a full channel.
    pub fn subscribe_binary_with(
        &self,
        capacity: usize,
        overflow: Overflow,
    ) -> mpsc::Receiver<Inbound<Bytes>> {
        let (tx, rx) = mpsc::channel(capacity.max(1));
        self.inner
            .router
            .do_send(SubscribeTo::Binary(Sink::channel(tx, overflow)));
        rx
    }

    /// State changes and message errors, to a bounded channel of `capacity` events. A full
    /// channel drops the event and counts it in [`Stats::dropped_incoming`] (events never hold
    /// up routing: the current state is always readable with [`state`](Self::state)).
    pub fn subscribe_events(&self, capacity: usize) -> mpsc::Receiver<Event> {
        let (tx, rx) = mpsc::channel(capacity.max(1));
        self.inner
            .router
            .do_send(SubscribeTo::Events(Sink::channel(tx, Overflow::DropNewest)));
        rx
    }

    /// State changes and message errors, to an actor, bounded by its mailbox capacity like
    /// [`subscribe_events`](Self::subscribe_events): a full mailbox drops the event and counts
    /// it in [`Stats::dropped_incoming`].
    pub fn subscribe_events_actor(&self, recipient: Recipient<Event>) {
        self.inner.router.do_send(SubscribeTo::Events(Sink::actor(
            recipient,
            Overflow::DropNewest,
        )));
    }

    /// Wait until the state is `Connected`. Fails with [`Error::ConnectFailed`] carrying the
    /// reason when the client reaches `Failed` first (a refused certificate, a final close code,
    /// ...), [`Error::ClientClosed`] when it was closed, or [`Error::ConnectFailed`] after
    /// `timeout`. Creates nothing that outlives the call (it watches the published state; no
    /// subscription).
    pub async fn wait_connected(&self, timeout: Duration) -> Result<()> {
        let mut state = self.inner.shared.watch_state();
        let wait = async move {
            let reached = state
                .wait_for(|s| *s == ConnectionState::Connected || s.is_terminal())
                .await;
            reached.map(|s| s.clone()).ok()
        };
        match actix_rt::time::timeout(timeout, wait).await {
            Ok(Some(ConnectionState::Connected)) => Ok(()),
            Ok(Some(ConnectionState::Failed { reason })) => Err(Error::ConnectFailed {
                url: self.inner.url.clone(),
                reason,
            }),
            Ok(_) => Err(Error::ClientClosed),
            Err(_) => Err(Error::ConnectFailed {
                url: self.inner.url.clone(),
                reason: format!(
                    "not connected within {} ({})",
                    round_duration(timeout),
                    self.state()
                ),
            }),
        }
    }

    /// Resolves when the client has ended for good (`Closed` or `Failed`), with that state.
    pub async fn closed(&self) -> ConnectionState {
        let mut state = self.inner.shared.watch_state();
        let ended = state
            .wait_for(ConnectionState::is_terminal)
            .await
            .map(|s| s.clone());
        // The sender lives in `ClientShared`, which this handle holds, so it cannot be gone.
        ended.unwrap_or_else(|_| self.state())
    }

    /// Close the connection with code 1000 and stop the client's actors; nothing reconnects and
    /// nothing more is accepted. The Close frame goes out ahead of any waiting data (when the
    /// socket is writable at all); messages still in the outbox are dropped and counted.
    /// Resolves when the client is `Closed` (or `Failed`), after the peer's answering Close or
    /// at most about 3 s.
    pub async fn close(&self) {
        let _ = self.inner.supervisor.send(Close).await;
        let _ = actix_rt::time::timeout(CLOSE_WAIT, self.closed()).await;
    }

    /// Whether the client's actors are still running (false once `Closed` or `Failed`).
    pub fn is_running(&self) -> bool {
        self.inner.supervisor.connected()
    }

    /// How many subscriptions (typed, raw, text, binary, event channels and actors) the client
    /// has, after forgetting every one whose receiver was dropped. Subscriptions are also pruned
    /// as new ones are made, so subscribing and dropping in a loop stays bounded; this is the
    /// way to check it.
    pub async fn subscriber_count(&self) -> Result<usize> {
        self.inner
            .router
            .send(CountSubscribers)
            .await
            .map_err(mailbox_error)
    }

    /// Route `text` through this client's Router as though the peer had sent it as a text frame:
    /// typed, raw and text subscribers, pending requests and the application heartbeat see it
    /// exactly as they would see a received frame (it is queued behind frames already received).
    ///
    /// For testing subscribers without a server, and for measuring dispatch cost
    /// (`benches/router.rs`). It skips the Connection, so the size and UTF-8 checks and the
    /// `messages_in`/`bytes_in` counters do not apply. Does nothing once the client is closed.
    pub fn inject_text(&self, text: impl Into<ByteString>) {
        self.inner
            .router
            .do_send(router::Incoming::Injected(text.into()));
    }
}
