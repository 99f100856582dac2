//! [`RedisBackplane`]: rooms across nodes through Redis pub/sub.
//!
//! One channel per room (`<prefix><room>`). A node subscribes to a room's channel while it has
//! local members there. Every publish is sent once as `<node id>\n<frame>`, where the frame is
//! the message exactly as members receive it, so a receiving node fans the same bytes out
//! without decoding them, and drops what carries its own node id (its members had it already).
//!
//! One RESP3 connection (the `redis` crate's `ConnectionManager`) carries both the publishes
//! and the subscriptions. Publishes go out in the order the hub made them, in pipelined
//! batches on that one connection, and Redis delivers one connection's publishes to every
//! subscriber in that order: one publisher's messages stay in order on every node.
//!
//! When the connection is lost, the node goes on delivering to its own members; publishes are
//! answered `backplane_unavailable` at once (counted in `backplane_publish_errors`) instead of
//! waiting; a probe (a new connection and a PING every `timeout / 4`, at most every 500 ms)
//! notices when Redis is back, and every room with local members is subscribed again before
//! publishes resume.
//!
//! Why not leave reconnection to the `redis` crate: its `ConnectionManager` does reconnect, and
//! with RESP3 it resubscribes by itself, but commands issued meanwhile wait for its reconnection
//! (a publish would hang for the whole timeout instead of being refused at once), and nothing
//! tells the owner when the connection is back, so that it could count the outage and know the
//! rooms are live again. So a lost connection is dropped and replaced; the crate's automatic
//! resubscription stays on for the short window before the loss is noticed.
//!
//! What arrives from Redis goes through a bounded buffer (`RedisConfig::buffer`) into the hub's
//! bounded queue; when the hub is slower than Redis for long enough to fill it, the excess is
//! dropped and counted in `backplane_dropped` (the `redis` crate hands push messages to a
//! callback that may not block, so the only alternative would be an unbounded buffer).

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use ::redis::aio::{ConnectionManager, ConnectionManagerConfig};
use ::redis::{IntoConnectionInfo, ProtocolVersion, PushInfo, PushKind, Value};
use bytes::Bytes;
use bytestring::ByteString;
use tokio::sync::{mpsc, Notify};

use super::{Backplane, Done};
use crate::error::{Error, Result};
use crate::server::hub::{Command, Counters, HubSender};

/// Default channel prefix: channels are `wsm:room:<room>`.
pub const DEFAULT_PREFIX: &str = "wsm:room:";
/// Default time a Redis operation may take before it counts as failed.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(2);
/// Default number of messages from other nodes buffered ahead of the hub.
pub const DEFAULT_BUFFER: usize = 8192;
/// Operations (publishes, subscriptions) waiting for the Redis task; beyond, a publish fails at
/// once with `backplane_unavailable`.
const OPS: usize = 8192;
/// Publishes sent to Redis in one pipeline, at most.
const BATCH: usize = 512;

/// How to reach Redis and how this node names itself there.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct RedisConfig {
    /// `redis://[user:password@]host:port[/db]`; RESP3 is used whatever the URL says.
    pub url: String,
    /// This node's id, unique among the nodes sharing the Redis (default: `n-` and 8 random
    /// hex digits). Session names and the `from` of messages carry it.
    pub node_id: String,
    /// Prefix of the room channels (default [`DEFAULT_PREFIX`]): nodes with different prefixes
    /// share a Redis without seeing each other's rooms.
    pub channel_prefix: String,
    /// How long one Redis operation (connect, publish batch, subscribe, probe) may take before
    /// it counts as failed (default [`DEFAULT_TIMEOUT`]).
    pub timeout: Duration,
    /// Messages from other nodes buffered ahead of the hub (default [`DEFAULT_BUFFER`]).
    pub buffer: usize,
}

impl RedisConfig {
    /// Redis at `url`, with the defaults above.
    pub fn new(url: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            node_id: format!("n-{:08x}", fastrand::u32(..)),
            channel_prefix: DEFAULT_PREFIX.to_owned(),
            timeout: DEFAULT_TIMEOUT,
            buffer: DEFAULT_BUFFER,
        }
    }

    /// Set [`node_id`](Self::node_id).
    pub fn node_id(mut self, id: impl Into<String>) -> Self {
        self.node_id = id.into();
        self
    }

    /// Set [`channel_prefix`](Self::channel_prefix).
    pub fn channel_prefix(mut self, prefix: impl Into<String>) -> Self {
        self.channel_prefix = prefix.into();
        self
    }

    /// Set [`timeout`](Self::timeout).
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Set [`buffer`](Self::buffer).
    pub fn buffer(mut self, messages: usize) -> Self {
        self.buffer = messages;
        self
    }
}

/// Rooms across server nodes through Redis pub/sub (see the module docs of
/// [`backplane`](crate::server::backplane)). Give it to
/// [`Rooms::start_with_backplane`](crate::server::Rooms::start_with_backplane); it connects when
/// the rooms start, and a Redis that is down then is retried like a lost one.
pub struct RedisBackplane {
    client: ::redis::Client,
    config: RedisConfig,
    ops: Option<mpsc::Sender<Op>>,
}

impl std::fmt::Debug for RedisBackplane {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisBackplane")
            .field("config", &self.config)
            .field("started", &self.ops.is_some())
            .finish()
    }
}

/// Work for the Redis task, in the hub's order.
enum Op {
    Subscribe(String, Done),
    Unsubscribe(String),
    Publish {
        channel: String,
        payload: Bytes,
        done: Option<Done>,
    },
}

impl RedisBackplane {
    /// Check `config` (the URL parses; the node id and prefix are usable); nothing connects
    /// yet.
    pub fn new(config: RedisConfig) -> Result<Self> {
        let bad = |why: String| Error::Config(why);
        if config.node_id.is_empty()
            || config.node_id.len() > 64
            || !config
                .node_id
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-_.:".contains(&b))
        {
            return Err(bad(format!(
                "node id {:?} must be 1 to 64 characters of A-Z a-z 0-9 - _ . :",
                config.node_id
            )));
        }
        if config.channel_prefix.contains(char::is_whitespace) {
            return Err(bad(format!(
                "channel prefix {:?} may not contain whitespace",
                config.channel_prefix
            )));
        }
        crate::config::check_duration("redis timeout", config.timeout)?;
        if config.timeout.is_zero() || config.buffer == 0 {
            return Err(bad("redis timeout and buffer must be above zero".into()));
        }
        let info = config
            .url
            .as_str()
            .into_connection_info()
            .map_err(|e| bad(format!("invalid Redis URL {:?}: {e}", config.url)))?;
        let settings = info
            .redis_settings()
            .clone()
            .set_protocol(ProtocolVersion::RESP3);
        let client = ::redis::Client::open(info.set_redis_settings(settings))
            .map_err(|e| bad(format!("invalid Redis URL {:?}: {e}", config.url)))?;
        Ok(Self {
            client,
            config,
            ops: None,
        })
    }

    /// The configuration.
    pub fn config(&self) -> &RedisConfig {
        &self.config
    }

    fn channel(&self, room: &str) -> String {
        format!("{}{room}", self.config.channel_prefix)
    }

    /// Hand `op` to the task; a full or closed queue fails it at once.
    fn submit(&self, op: Op) {
        let Some(ops) = &self.ops else {
            return fail(op, "the backplane has not started");
        };
        if let Err(e) = ops.try_send(op) {
            let (op, why) = match e {
                mpsc::error::TrySendError::Full(op) => (op, "too many Redis operations waiting"),
                mpsc::error::TrySendError::Closed(op) => (op, "the Redis task has stopped"),
            };
            fail(op, why);
        }
    }
}

/// Tell `op`'s caller it failed.
fn fail(op: Op, why: &str) {
    match op {
        Op::Subscribe(_, done) => done(Err(why.to_owned())),
        Op::Publish {
            done: Some(done), ..
        } => done(Err(why.to_owned())),
        _ => {}
    }
}

impl Backplane for RedisBackplane {
    fn is_remote(&self) -> bool {
        true
    }

    fn node_id(&self) -> Option<&str> {
        Some(&self.config.node_id)
    }

    fn start(&mut self, hub: HubSender, counters: Arc<Counters>) {
        let (ops_tx, ops_rx) = mpsc::channel(OPS);
        let (in_tx, in_rx) = mpsc::channel(self.config.buffer);
        let lost = Arc::new(Lost::default());
        let prefix: Arc<str> = Arc::from(self.config.channel_prefix.as_str());
        let node = Bytes::from(self.config.node_id.clone().into_bytes());
        actix_rt::spawn(inbound(in_rx, hub, prefix, node));
        let task = Task {
            client: self.client.clone(),
            config: self.config.clone(),
            conn: None,
            channels: HashSet::new(),
            lost,
            inbound: in_tx,
            counters,
        };
        actix_rt::spawn(task.run(ops_rx));
        self.ops = Some(ops_tx);
    }

    fn subscribe(&mut self, room: &Arc<str>, done: Done) {
        self.submit(Op::Subscribe(self.channel(room), done));
    }

    fn unsubscribe(&mut self, room: &Arc<str>) {
        self.submit(Op::Unsubscribe(self.channel(room)));
    }

    fn publish(&mut self, room: &Arc<str>, frame: &ByteString, done: Option<Done>) {
        let node = self.config.node_id.as_bytes();
        let mut payload = Vec::with_capacity(node.len() + 1 + frame.len());
        payload.extend_from_slice(node);
        payload.push(b'\n');
        payload.extend_from_slice(frame.as_bytes());
        self.submit(Op::Publish {
            channel: self.channel(room),
            payload: Bytes::from(payload),
            done,
        });
    }
}

/// Set by the push callback when the connection is lost; the task notices.
#[derive(Default)]
struct Lost {
    flag: AtomicBool,
    notify: Notify,
}

/// A message from Redis on its way to the hub.
struct Inbound {
    channel: Vec<u8>,
    payload: Vec<u8>,
}

/// The Redis task: one connection, the operations in order, and the probe while it is down.
struct Task {
    client: ::redis::Client,
    config: RedisConfig,
    /// `None` while down (never connected, or lost and not yet back).
    conn: Option<ConnectionManager>,
    /// Channels of rooms with local members: subscribed again whenever the connection is back.
    channels: HashSet<String>,
    lost: Arc<Lost>,
    inbound: mpsc::Sender<Inbound>,
    counters: Arc<Counters>,
}

impl Task {
    async fn run(mut self, mut ops: mpsc::Receiver<Op>) {
        self.connect().await;
        if self.conn.is_none() {
            tracing::warn!(
                "Redis at {} is unreachable; delivering to local members only, retrying",
                self.config.url
            );
        }
        let probe_every = (self.config.timeout / 4).min(Duration::from_millis(500));
        // A fixed schedule, so that a stream of operations cannot starve the probe.
        let mut next_probe = tokio::time::Instant::now() + probe_every;
        let mut next: Option<Op> = None;
        loop {
            if self.lost.flag.swap(false, Ordering::AcqRel) && self.conn.is_some() {
                self.counters
                    .backplane_disconnects
                    .fetch_add(1, Ordering::Relaxed);
                tracing::warn!(
                    "lost the Redis connection; delivering to local members only until it is back"
                );
                self.conn = None;
            }
            let op = match next.take() {
                Some(op) => op,
                None if self.conn.is_none() => {
                    tokio::select! {
                        op = ops.recv() => match op {
                            Some(op) => op,
                            None => return,
                        },
                        _ = tokio::time::sleep_until(next_probe) => {
                            self.connect().await;
                            next_probe = tokio::time::Instant::now() + probe_every;
                            continue;
                        }
                    }
                }
                None => {
                    tokio::select! {
                        op = ops.recv() => match op {
                            Some(op) => op,
                            None => return,
                        },
                        _ = self.lost.notify.notified() => continue,
                    }
                }
            };
            match op {
                Op::Subscribe(channel, done) => {
                    self.channels.insert(channel.clone());
                    done(self.subscribe(&channel).await);
                }
                Op::Unsubscribe(channel) => {
                    self.channels.remove(&channel);
                    if let Some(conn) = self.conn.as_mut() {
                        let r =
                            tokio::time::timeout(self.config.timeout, conn.unsubscribe(&channel))
                                .await;
                        if !matches!(r, Ok(Ok(()))) {
                            tracing::debug!(%channel, "unsubscribe failed; the channel stays until the connection is renewed");
                        }
                    }
                }
                Op::Publish {
                    channel,
                    payload,
                    done,
                } => {
                    let mut batch = vec![(channel, payload, done)];
                    while batch.len() < BATCH {
                        match ops.try_recv() {
                            Ok(Op::Publish {
                                channel,
                                payload,
                                done,
                            }) => batch.push((channel, payload, done)),
                            Ok(other) => {
                                next = Some(other);
                                break;
                            }
                            Err(_) => break,
                        }
                    }
                    self.publish(batch).await;
                }
            }
        }
    }

    /// Connect (or check a connection is back) and subscribe every channel with local members.
    async fn connect(&mut self) {
        let ready = match self.conn.take() {
            Some(conn) => Some(conn),
            None => self.new_connection().await,
        };
        let Some(mut conn) = ready else { return };
        let ping = tokio::time::timeout(
            self.config.timeout,
            ::redis::cmd("PING").query_async::<String>(&mut conn),
        )
        .await;
        if !matches!(ping, Ok(Ok(_))) {
            return;
        }
        for channel in self.channels.clone() {
            let r = tokio::time::timeout(self.config.timeout, conn.subscribe(&channel)).await;
            if !matches!(r, Ok(Ok(()))) {
                tracing::debug!(%channel, "resubscribe failed; retrying");
                return;
            }
        }
        self.lost.flag.store(false, Ordering::Release);
        tracing::info!(
            rooms = self.channels.len(),
            node = %self.config.node_id,
            "connected to Redis; rooms with local members subscribed"
        );
        self.conn = Some(conn);
    }

    async fn new_connection(&self) -> Option<ConnectionManager> {
        let (inbound, counters, lost) = (
            self.inbound.clone(),
            self.counters.clone(),
            self.lost.clone(),
        );
        let push = move |info: PushInfo| -> std::result::Result<(), std::convert::Infallible> {
            match info.kind {
                PushKind::Message => {
                    let mut data = info.data.into_iter();
                    if let (Some(Value::BulkString(channel)), Some(Value::BulkString(payload))) =
                        (data.next(), data.next())
                    {
                        if inbound.try_send(Inbound { channel, payload }).is_err() {
                            counters.backplane_dropped.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                }
                PushKind::Disconnection => {
                    lost.flag.store(true, Ordering::Release);
                    lost.notify.notify_one();
                }
                _ => {}
            }
            Ok(())
        };
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(self.config.timeout))
            .set_response_timeout(Some(self.config.timeout))
            .set_number_of_retries(1)
            .set_max_delay(self.config.timeout)
            .set_push_sender(push)
            .set_automatic_resubscription();
        match tokio::time::timeout(
            self.config.timeout * 2,
            ConnectionManager::new_with_config(self.client.clone(), config),
        )
        .await
        {
            Ok(Ok(conn)) => Some(conn),
            Ok(Err(e)) => {
                tracing::debug!("cannot reach Redis at {}: {e}", self.config.url);
                None
            }
            Err(_) => {
                tracing::debug!("Redis at {} did not answer in time", self.config.url);
                None
            }
        }
    }

    async fn subscribe(&mut self, channel: &str) -> std::result::Result<(), String> {
        let Some(conn) = self.conn.as_mut() else {
            return Err(format!(
                "Redis at {} is unreachable; subscribed when it is back",
                self.config.url
            ));
        };
        match tokio::time::timeout(self.config.timeout, conn.subscribe(channel)).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => {
                self.conn = None;
                Err(format!("Redis subscribe failed: {e}"))
            }
            Err(_) => {
                self.conn = None;
                Err(format!(
                    "Redis did not answer a subscribe within {:?}",
                    self.config.timeout
                ))
            }
        }
    }

    async fn publish(&mut self, batch: Vec<(String, Bytes, Option<Done>)>) {
        let result = match self.conn.as_mut() {
            None => Err(format!("Redis at {} is unreachable", self.config.url)),
            Some(conn) => {
                let mut pipe = ::redis::pipe();
                for (channel, payload, _) in &batch {
                    pipe.publish(channel, &payload[..]).ignore();
                }
                match tokio::time::timeout(self.config.timeout, pipe.query_async::<()>(conn)).await
                {
                    Ok(Ok(())) => Ok(()),
                    Ok(Err(e)) => Err(format!("Redis publish failed: {e}")),
                    Err(_) => Err(format!(
                        "Redis did not answer within {:?}",
                        self.config.timeout
                    )),
                }
            }
        };
        if result.is_err() && self.conn.take().is_some() {
            self.counters
                .backplane_disconnects
                .fetch_add(1, Ordering::Relaxed);
            tracing::warn!(
                "Redis publish failed; delivering to local members only until it is back"
            );
        }
        for (_, _, done) in batch {
            if let Some(done) = done {
                done(result.clone());
            }
        }
    }
}

/// Messages from other nodes into the hub's queue, in order, waiting for room there.
async fn inbound(mut rx: mpsc::Receiver<Inbound>, hub: HubSender, prefix: Arc<str>, node: Bytes) {
    while let Some(msg) = rx.recv().await {
        let Some(room) = msg
            .channel
            .strip_prefix(prefix.as_bytes())
            .and_then(|r| std::str::from_utf8(r).ok())
        else {
            continue;
        };
        let Some(split) = msg.payload.iter().position(|b| *b == b'\n') else {
            tracing::debug!(room, "a Redis message without a node id; ignored");
            continue;
        };
        if msg.payload[..split] == node[..] {
            continue; // our own publish: our members had it already
        }
        let frame = Bytes::from(msg.payload).slice(split + 1..);
        let Ok(frame) = ByteString::try_from(frame) else {
            tracing::debug!(room, "a Redis message that is not UTF-8; ignored");
            continue;
        };
        let room: Arc<str> = Arc::from(room);
        if hub.send(Command::Remote { room, frame }).await.is_err() {
            return; // the hub is gone
        }
    }
}
