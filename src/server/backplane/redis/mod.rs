//! [`RedisBackplane`]: rooms across nodes through Redis pub/sub.
//!
//! One channel per room (`<prefix><room>`). A node subscribes to a room's channel while it has
//! local members there. Every publish is sent once as `<node id> <incarnation> <seq>\n<frame>`:
//! the frame is the message exactly as members receive it, so a receiving node fans the same
//! bytes out without decoding them; it drops what carries its own node id (its members had it
//! already; not with room history, below), and what is not newer than the last message it
//! passed on from that node's incarnation (a random id per start) by sequence number. A header
//! of only `<node id>` (as older versions send) is accepted, without the order check. With
//! room history the header ends with the publication's offset (`<node id> <incarnation> <seq>
//! <offset>`).
//!
//! Two connections to Redis, both on the backplane's own thread (`wsm-redis`), so that the
//! socket is read however busy the hub is:
//!
//! - **publishing** ([`publisher`]): publishes go out in the order the hub made them,
//!   pipelined on one connection, and Redis delivers one connection's publishes to every
//!   subscriber in that order. They wait in a queue bounded by count and bytes
//!   ([`RedisConfig::publish_queue`], [`RedisConfig::publish_queue_bytes`]); beyond, a publish
//!   is answered `backplane_unavailable` at once and counted in `backplane_publish_errors`.
//!   Redis counts as unreachable only when nothing moved for the whole
//!   [`timeout`](RedisConfig::timeout) while it owed an answer, so a slow link is not a dead
//!   one. When a connection is given up, its socket is reset (what the kernel still held for
//!   Redis is discarded) and the sequence numbers let the other nodes drop anything of it that
//!   Redis still runs after the new connection's publishes: one publisher's messages are never
//!   seen out of order or twice.
//! - **receiving** ([`subscriber`]): the hub says which rooms it wants, without a queue that
//!   could refuse; the connection converges on that set, after every change and every
//!   reconnect. What arrives goes into a buffer bounded by count and bytes
//!   ([`RedisConfig::buffer`], [`RedisConfig::buffer_bytes`]) and is dropped and counted in
//!   `backplane_dropped` when the hub falls that far behind.
//!
//! While Redis is unreachable the node goes on delivering to its own members; publishes are
//! answered `backplane_unavailable` at once instead of waiting; joins are answered at once and
//! their rooms subscribed when Redis is back; a new connection is tried every `timeout / 4`
//! (from 50 ms to 500 ms). Redis pub/sub itself is at-most-once: what is published while a
//! node is away does not reach it later.
//!
//! **Room history** ([`history`]): when the server keeps history, Redis keeps it for every
//! node (a stream per room, positions assigned by a Lua script per publish), and every
//! publication reaches the hub through the subscription, this node's own included, so that the
//! offset order is the delivery order everywhere. A publish Redis did not take then reaches
//! nobody: not even this node's members get it while Redis is unreachable (its publisher, when
//! it gave an `id`, is told `backplane_unavailable`; one without an `id` cannot know). A join
//! with `since` is answered `"recovered":false,"reason":"unavailable"` within the timeout.
//!
//! The connections are this crate's own ([`resp`] says why the `redis` crate's are not
//! used); the `redis` crate parses the URL and packs commands.

mod history;
mod presence;
mod presence_lua;
mod publisher;
mod resp;
mod subscriber;
mod subscriptions;

use std::sync::Arc;
use std::time::Duration;

use ::redis::{ConnectionInfo, IntoConnectionInfo};
use bytestring::ByteString;

use self::history::Scripts;
use self::publisher::{Answer, Publish, Publisher, Queue};
use self::subscriber::Subscriber;
use self::subscriptions::Wanted;
use super::{Backplane, Done, HubLink, PresenceChange, PresenceDone, ReadDone, StreamQuery};
use crate::config::HistoryConfig;
use crate::error::{Error, Result};

/// Default channel prefix: channels are `wsm:room:<room>`.
pub const DEFAULT_PREFIX: &str = "wsm:room:";
/// Default time Redis may leave an operation without any progress before it counts as
/// unreachable.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(2);
/// Default number of messages from other nodes buffered ahead of the hub.
pub const DEFAULT_BUFFER: usize = 8192;
/// Default bytes of messages from other nodes buffered ahead of the hub (also the largest
/// message accepted from Redis).
pub const DEFAULT_BUFFER_BYTES: usize = 16 * 1024 * 1024;
/// Default number of publishes waiting for Redis.
pub const DEFAULT_PUBLISH_QUEUE: usize = 8192;
/// Default bytes of publishes waiting for Redis.
pub const DEFAULT_PUBLISH_QUEUE_BYTES: usize = 16 * 1024 * 1024;
/// Default time between refreshes of a node's presence liveness key (and sweeps of lapsed
/// nodes' members).
pub const DEFAULT_PRESENCE_REFRESH: Duration = Duration::from_secs(5);
/// Default TTL of a node's presence liveness key: its members are swept once it lapses.
pub const DEFAULT_PRESENCE_TTL: Duration = Duration::from_secs(15);
/// Shortest [`RedisConfig::presence_refresh`].
pub const MIN_PRESENCE_REFRESH: Duration = Duration::from_millis(10);
/// Shortest [`RedisConfig::timeout`]: below, a reconnect probe would spin.
pub const MIN_TIMEOUT: Duration = Duration::from_millis(10);
/// Most messages in [`RedisConfig::buffer`] and [`RedisConfig::publish_queue`].
pub const MAX_QUEUE: usize = 1 << 20;
/// Fewest and most bytes in [`RedisConfig::buffer_bytes`] and
/// [`RedisConfig::publish_queue_bytes`].
pub const QUEUE_BYTES: std::ops::RangeInclusive<usize> = 64 * 1024..=1 << 30;

/// How to reach Redis, how this node names itself there, and how much may wait on the way.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct RedisConfig {
    /// `redis://[user:password@]host:port` or `redis+unix:///path`; `rediss://` (TLS) is not
    /// supported yet.
    pub url: String,
    /// This node's id, unique among the nodes sharing the Redis (default: `n-` and 8 random
    /// hex digits). Session names and the `from` of messages carry it.
    pub node_id: String,
    /// Prefix of the room channels (default [`DEFAULT_PREFIX`]): nodes with different prefixes
    /// share a Redis without seeing each other's rooms.
    pub channel_prefix: String,
    /// How long Redis may owe an answer (to a connect, a publish, a subscribe, a ping) without
    /// anything moving on the connection before it counts as unreachable (default
    /// [`DEFAULT_TIMEOUT`], at least [`MIN_TIMEOUT`], at most 365 days).
    pub timeout: Duration,
    /// Messages from other nodes buffered ahead of the hub (default [`DEFAULT_BUFFER`], 1 to
    /// [`MAX_QUEUE`]); beyond, they are dropped and counted in `backplane_dropped`.
    pub buffer: usize,
    /// Bytes of messages from other nodes buffered ahead of the hub, counted until the hub has
    /// fanned them out (so its queue included; default [`DEFAULT_BUFFER_BYTES`], within
    /// [`QUEUE_BYTES`]). A message larger than this is refused at its header (the connection is
    /// made again): it could never be buffered.
    pub buffer_bytes: usize,
    /// Publishes waiting for Redis (default [`DEFAULT_PUBLISH_QUEUE`], 1 to [`MAX_QUEUE`]);
    /// beyond, a publish is answered `backplane_unavailable` at once.
    pub publish_queue: usize,
    /// Bytes of publishes waiting for Redis (default [`DEFAULT_PUBLISH_QUEUE_BYTES`], within
    /// [`QUEUE_BYTES`]; one publish always fits in an empty queue).
    pub publish_queue_bytes: usize,
    /// How often this node refreshes its presence liveness key and sweeps the members of nodes
    /// whose key lapsed (default [`DEFAULT_PRESENCE_REFRESH`], at least
    /// [`MIN_PRESENCE_REFRESH`]). After a Redis restart the node's members are registered again
    /// within one refresh of reconnecting.
    pub presence_refresh: Duration,
    /// TTL of the liveness key (default [`DEFAULT_PRESENCE_TTL`], longer than
    /// `presence_refresh`): a node that stops refreshing it (dead, or cut off from Redis) has
    /// its members removed from every room's presence, and their leaves sent, within
    /// `presence_ttl + presence_refresh` (20 s by default).
    pub presence_ttl: Duration,
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
            buffer_bytes: DEFAULT_BUFFER_BYTES,
            publish_queue: DEFAULT_PUBLISH_QUEUE,
            publish_queue_bytes: DEFAULT_PUBLISH_QUEUE_BYTES,
            presence_refresh: DEFAULT_PRESENCE_REFRESH,
            presence_ttl: DEFAULT_PRESENCE_TTL,
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

    /// Set [`buffer_bytes`](Self::buffer_bytes).
    pub fn buffer_bytes(mut self, bytes: usize) -> Self {
        self.buffer_bytes = bytes;
        self
    }

    /// Set [`publish_queue`](Self::publish_queue).
    pub fn publish_queue(mut self, messages: usize) -> Self {
        self.publish_queue = messages;
        self
    }

    /// Set [`publish_queue_bytes`](Self::publish_queue_bytes).
    pub fn publish_queue_bytes(mut self, bytes: usize) -> Self {
        self.publish_queue_bytes = bytes;
        self
    }

    /// Set [`presence_refresh`](Self::presence_refresh).
    pub fn presence_refresh(mut self, every: Duration) -> Self {
        self.presence_refresh = every;
        self
    }

    /// Set [`presence_ttl`](Self::presence_ttl).
    pub fn presence_ttl(mut self, ttl: Duration) -> Self {
        self.presence_ttl = ttl;
        self
    }

    /// Check every field; the error names the first one out of range.
    fn validate(&self) -> Result<()> {
        let bad = |why: String| Err(Error::Config(why));
        if self.node_id.is_empty()
            || self.node_id.len() > 64
            || !self
                .node_id
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-_.:".contains(&b))
        {
            return bad(format!(
                "redis node id {:?} must be 1 to 64 characters of A-Z a-z 0-9 - _ . :",
                self.node_id
            ));
        }
        if self.channel_prefix.contains(char::is_whitespace) {
            return bad(format!(
                "redis channel prefix {:?} may not contain whitespace",
                self.channel_prefix
            ));
        }
        crate::config::check_duration("redis timeout", self.timeout)?;
        if self.timeout < MIN_TIMEOUT {
            return bad(format!(
                "redis timeout must be at least {MIN_TIMEOUT:?}, not {:?}",
                self.timeout
            ));
        }
        crate::config::check_duration("redis presence refresh", self.presence_refresh)?;
        crate::config::check_duration("redis presence ttl", self.presence_ttl)?;
        if self.presence_refresh < MIN_PRESENCE_REFRESH
            || self.presence_ttl <= self.presence_refresh
        {
            return bad(format!(
                "redis presence refresh ({:?}) must be at least {MIN_PRESENCE_REFRESH:?} and \
                 shorter than the presence ttl ({:?})",
                self.presence_refresh, self.presence_ttl
            ));
        }
        for (field, value) in [
            ("redis buffer", self.buffer),
            ("redis publish queue", self.publish_queue),
        ] {
            if !(1..=MAX_QUEUE).contains(&value) {
                return bad(format!(
                    "{field} must be 1 to {MAX_QUEUE} messages, not {value}"
                ));
            }
        }
        for (field, value) in [
            ("redis buffer bytes", self.buffer_bytes),
            ("redis publish queue bytes", self.publish_queue_bytes),
        ] {
            if !QUEUE_BYTES.contains(&value) {
                return bad(format!(
                    "{field} must be {} to {} bytes, not {value}",
                    QUEUE_BYTES.start(),
                    QUEUE_BYTES.end()
                ));
            }
        }
        Ok(())
    }
}

/// Rooms across server nodes through Redis pub/sub (see the module docs of
/// [`backplane`](crate::server::backplane)). Give it to
/// [`Rooms::start_with_backplane`](crate::server::Rooms::start_with_backplane); it connects when
/// the rooms start, and a Redis that is down then is retried like a lost one.
pub struct RedisBackplane {
    info: ConnectionInfo,
    config: RedisConfig,
    /// The room history Redis keeps ([`Backplane::keep_history`]).
    history: Option<HistoryConfig>,
    started: Option<Started>,
}

/// What runs once the hub has started the backplane.
struct Started {
    publishes: Arc<Queue>,
    /// With history in Redis.
    scripts: Option<Arc<Scripts>>,
    wanted: Arc<Wanted>,
    /// The rooms' presence in Redis.
    presence: Arc<presence::Presence>,
    /// `<node id> <incarnation> `: the start of every publish's header.
    header: Vec<u8>,
    /// The sequence number of the last publish.
    seq: u64,
    /// Dropped with the backplane: the backplane's thread then ends, closing its connections.
    _stop: tokio::sync::oneshot::Sender<()>,
}

impl std::fmt::Debug for RedisBackplane {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisBackplane")
            .field("config", &self.config)
            .field("started", &self.started.is_some())
            .finish()
    }
}

impl RedisBackplane {
    /// Check `config` (the URL parses; every field is in range); nothing connects yet.
    pub fn new(config: RedisConfig) -> Result<Self> {
        config.validate()?;
        if config.url.starts_with("rediss://") {
            return Err(Error::Config(format!(
                "Redis URL {:?}: {}",
                config.url,
                resp::NO_TLS
            )));
        }
        let info = config
            .url
            .as_str()
            .into_connection_info()
            .map_err(|e| Error::Config(format!("invalid Redis URL {:?}: {e}", config.url)))?;
        if !resp::supported(info.addr()) {
            return Err(Error::Config(format!(
                "Redis URL {:?}: {}",
                config.url,
                resp::unsupported(info.addr())
            )));
        }
        Ok(Self {
            info,
            config,
            history: None,
            started: None,
        })
    }

    /// The configuration.
    pub fn config(&self) -> &RedisConfig {
        &self.config
    }

    fn channel(&self, room: &str) -> String {
        format!("{}{room}", self.config.channel_prefix)
    }
}

impl Backplane for RedisBackplane {
    fn is_remote(&self) -> bool {
        true
    }

    fn node_id(&self) -> Option<&str> {
        Some(&self.config.node_id)
    }

    fn start(&mut self, link: HubLink) {
        let counters = link.counters.clone();
        let probe_every =
            (self.config.timeout / 4).clamp(Duration::from_millis(50), Duration::from_millis(500));
        let (publishes, publisher) = Publisher::new(
            self.info.clone(),
            self.config.url.clone(),
            self.config.timeout,
            probe_every,
            counters.clone(),
            self.config.publish_queue,
            self.config.publish_queue_bytes,
        );
        let scripts = self.history.as_ref().map(|h| Arc::new(Scripts::new(h)));
        let mut loaded = presence_lua::scripts();
        let mut max_array = 1 << 20;
        if let Some(scripts) = &scripts {
            loaded.extend([history::publish_script(), history::read_script()]);
            max_array = scripts.limit().saturating_add(8).max(max_array);
        }
        let publisher = publisher.with_scripts(loaded, self.config.buffer_bytes, max_array);
        let publishes = Arc::new(publishes);
        let presence = Arc::new(presence::Presence::new(
            &self.config,
            publishes.clone(),
            counters.clone(),
        ));
        let wanted = Arc::new(Wanted::default());
        let (subscriber, forward) = Subscriber::new(
            self.info.clone(),
            self.config.clone(),
            probe_every,
            wanted.clone(),
            link,
            scripts.is_some(),
        );
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let (liveness, timeout) = (presence.clone(), self.config.timeout);
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build();
        let spawned = runtime.and_then(|runtime| {
            std::thread::Builder::new()
                .name("wsm-redis".into())
                .spawn(move || {
                    // Three tasks, each with its own turn and budget: the socket reader must
                    // not keep the forwarder (or the publisher) from running.
                    runtime.block_on(async move {
                        tokio::spawn(publisher.run());
                        tokio::spawn(subscriber.run());
                        tokio::spawn(forward);
                        let alive = tokio::spawn(liveness.clone().run());
                        let _ = stopped.await;
                        alive.abort();
                        // Bounded: a Redis that does not answer leaves it to the TTL.
                        let _ = tokio::time::timeout(timeout, liveness.farewell()).await;
                    })
                    // Dropping the runtime here ends the tasks and closes the connections.
                })
        });
        if let Err(e) = spawned {
            // Publishes are then refused (counted) and joins answered with the reason.
            tracing::error!("cannot start the Redis backplane's thread: {e}; local members only");
            return;
        }
        let header = format!("{} {:016x} ", self.config.node_id, fastrand::u64(..)).into_bytes();
        self.started = Some(Started {
            publishes,
            scripts,
            wanted,
            presence,
            header,
            seq: 0,
            _stop: stop,
        });
    }

    fn subscribe(&mut self, room: &Arc<str>, done: Done) {
        let channel = self.channel(room);
        match &self.started {
            Some(started) => started.wanted.add(channel, done),
            None => done(Err("the Redis backplane has not started".into())),
        }
    }

    fn unsubscribe(&mut self, room: &Arc<str>) {
        if let Some(started) = &self.started {
            started.wanted.remove(&self.channel(room));
        }
    }

    fn publish(&mut self, room: &Arc<str>, frame: &ByteString, done: Option<Done>) {
        let Some(started) = self.started.as_mut() else {
            if let Some(done) = done {
                done(Err("the Redis backplane has not started".into()));
            }
            return;
        };
        started.seq += 1;
        let prefix = &self.config.channel_prefix;
        let command = match &started.scripts {
            Some(scripts) => {
                let mut header = started.header.clone();
                header.extend_from_slice(started.seq.to_string().as_bytes());
                scripts.publish(prefix, room, &header, frame)
            }
            // Packed in one allocation: this runs on the hub's thread for every publish.
            None => {
                resp::publish_command(prefix, room, &started.header, started.seq, frame.as_bytes())
            }
        };
        let done = done.map(Answer::Done);
        started.publishes.submit(Publish { command, done });
    }

    fn shares_presence(&self) -> bool {
        true
    }

    fn presence(&mut self, room: &Arc<str>, change: PresenceChange<'_>) {
        let Some(started) = self.started.as_mut() else {
            return;
        };
        // The diff goes with this node's header and next sequence number, marked `p`, so the
        // other nodes hand it to listeners only, in order with this node's messages.
        let payload = match change.diff {
            Some(diff) => {
                started.seq += 1;
                let mut payload = started.header.clone();
                payload.extend_from_slice(format!("{} p\n", started.seq).as_bytes());
                payload.extend_from_slice(diff.as_bytes());
                payload
            }
            None => Vec::new(),
        };
        started.presence.change(room, &change, &payload);
    }

    fn read_presence(&mut self, room: &Arc<str>, limit: usize, done: PresenceDone) {
        match &self.started {
            Some(started) => started.presence.read(room, limit, done),
            None => done(Err("the Redis backplane has not started".into())),
        }
    }

    fn keep_history(&mut self, config: &HistoryConfig) -> bool {
        self.history = Some(*config);
        true
    }

    fn read(&mut self, room: &Arc<str>, query: StreamQuery, done: ReadDone) {
        let Some(started) = self.started.as_ref() else {
            return done(Err("the Redis backplane has not started".into()));
        };
        let Some(scripts) = &started.scripts else {
            return done(Err("this node keeps no history in Redis".into()));
        };
        let command = scripts.read(&self.config.channel_prefix, room, &query);
        let answer = Answer::Reply(Box::new(move |reply| {
            done(reply.and_then(history::parse_read));
        }));
        let read = Publish {
            command,
            done: Some(answer),
        };
        match query {
            // Read once this node receives the room: every publication after the read's range
            // then reaches the hub through the subscription.
            StreamQuery::Join { .. } => {
                let queue = started.publishes.clone();
                started.wanted.when_subscribed(
                    &self.channel(room),
                    Box::new(move |subscribed| match subscribed {
                        Ok(()) => queue.submit(read),
                        Err(why) => {
                            if let Some(answer) = read.done {
                                answer.tell(Err(why));
                            }
                        }
                    }),
                );
            }
            StreamQuery::History { .. } => started.publishes.submit(read),
        }
    }
}
