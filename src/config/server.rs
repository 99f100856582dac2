//! The server half of the configuration: [`ServerConfig`], with [`RateLimit`] and
//! [`SlowConsumerPolicy`], for the rooms server and its echo endpoint.

use std::time::Duration;

use super::cap_duration;
use super::history::HistoryConfig;
use crate::error::{Error, Result};
use crate::ws::deflate::DeflateConfig;

/// Default largest message a server session accepts, after fragments are put together: 64 KiB
/// (the frame limit actix-http uses by default, so nothing changes for peers that never see it).
pub const DEFAULT_SERVER_MAX_MESSAGE_SIZE: usize = 64 * 1024;
/// Default time between the server's protocol pings: 10 s.
pub const DEFAULT_SERVER_HEARTBEAT_INTERVAL: Duration = Duration::from_secs(10);
/// Default time a client may stay completely silent before the server disconnects it: 30 s.
pub const DEFAULT_SERVER_HEARTBEAT_TIMEOUT: Duration = Duration::from_secs(30);
/// Default bound of each session's outbound queue, in messages: 1024, the client's default
/// outbox, so that a client flushing a full outbox after a reconnect does not make every member
/// of its room (itself included) look like a slow consumer.
pub const DEFAULT_SESSION_QUEUE: usize = 1024;
/// Default bound of each session's outbound queue in payload bytes: 4 MiB.
pub const DEFAULT_SESSION_QUEUE_BYTES: usize = 4 * 1024 * 1024;
/// Default most concurrent sessions per server: 10 000.
pub const DEFAULT_MAX_SESSIONS: usize = 10_000;
/// Default most rooms one session may be a member of: 64.
pub const DEFAULT_MAX_ROOMS_PER_SESSION: usize = 64;
/// Default most members a `presence` answer lists: 1000 (its `count` is always exact).
pub const DEFAULT_PRESENCE_LIST_LIMIT: usize = 1000;
/// Most members a `presence` answer may be set to list: 100 000.
pub const MAX_PRESENCE_LIST_LIMIT: usize = 100_000;
/// Default longest room name, in bytes: 64.
pub const DEFAULT_MAX_ROOM_NAME_LEN: usize = 64;
/// Default time a closing session waits for the client's close frame before its socket is cut:
/// 2 s.
pub const DEFAULT_CLOSE_TIMEOUT: Duration = Duration::from_secs(2);
/// Default bound of the hub's command queue (joins, leaves, publishes of every session), in
/// commands: 1024.
pub const DEFAULT_HUB_QUEUE: usize = 1024;
/// Largest accepted `session_queue` and `hub_queue`: 1 048 576 (2^20). A queue is a bound on
/// memory; past this it no longer is one in any useful sense.
pub const MAX_QUEUE: usize = 1 << 20;

/// How the rooms server (and its echo endpoint) treats each session: limits, heartbeat, the
/// outbound queue bound and what happens when a client cannot keep up.
///
/// Every field has a default chosen for a long-running public service; see each field. Values are
/// checked by [`validate`](Self::validate) when the server starts; durations above
/// [`MAX_CONFIG_DURATION`](super::MAX_CONFIG_DURATION) are capped to it, not refused (see [`config`](super)'s "Long
/// durations").
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ServerConfig {
    /// Largest message accepted, after continuation frames are put together; also the codec's
    /// frame limit. A bigger message closes the session with 1009. Default: 64 KiB.
    pub max_message_size: usize,
    /// Time between protocol Ping frames to each client. Default: 10 s.
    pub heartbeat_interval: Duration,
    /// A client from which *nothing* (no message, no pong) has arrived for this long is
    /// disconnected (close 1001 "heartbeat timeout" when the socket still takes it, then the socket
    /// is cut). Detection takes at most `heartbeat_timeout + heartbeat_interval`, and works when
    /// the client has stopped reading: the timer never waits on a socket write. Default: 30 s.
    pub heartbeat_timeout: Duration,
    /// Bound of each session's outbound queue, in messages. This is what a client that stops
    /// reading can cost the server (plus the fixed write buffers of one connection): the queue
    /// holds shared, already-encoded frames, allocated as they arrive (an idle session costs
    /// nothing here).
    ///
    /// It is also the largest burst one member can take at once: the hub offers a broadcast to
    /// every member's queue at once, and a session writes to its socket at its own pace, so a
    /// burst of more than `session_queue` messages to one room arriving faster than a member's
    /// socket drains them fills that member's queue even when its client reads promptly (and
    /// [`SlowConsumerPolicy`] applies). Size it above the largest burst you expect (a client
    /// flushing its outbox after a reconnect sends up to its outbox capacity at once).
    /// Default: 1024 ([`DEFAULT_SESSION_QUEUE`]).
    pub session_queue: usize,
    /// Bound of each session's outbound queue in payload bytes, next to
    /// [`session_queue`](Self::session_queue): whichever is reached first makes the queue full
    /// (and [`SlowConsumerPolicy`] applies). A count alone is no bound on memory when messages
    /// are large: 1024 queued 64 KiB messages are 64 MiB for one member that stopped reading,
    /// and a room full of such members multiplies it. A queue holds at most this many bytes,
    /// or one message when that message alone is bigger. Any value from 1 up is accepted
    /// (`usize::MAX` turns the byte bound off). Default: 4 MiB
    /// ([`DEFAULT_SESSION_QUEUE_BYTES`]).
    pub session_queue_bytes: usize,
    /// What happens when a session's outbound queue is full. Default:
    /// [`SlowConsumerPolicy::Disconnect`].
    pub slow_consumer: SlowConsumerPolicy,
    /// Most concurrent sessions (rooms and echo together); one more upgrade request is refused
    /// with HTTP 503. Default: 10 000.
    pub max_sessions: usize,
    /// Most rooms one session may be a member of; one more `join` is answered with the error
    /// `too_many_rooms`. Default: 64.
    pub max_rooms_per_session: usize,
    /// Longest room name in bytes. Names must also be non-empty and use only `A-Z a-z 0-9 _ . : -`.
    /// Default: 64.
    pub max_room_name_len: usize,
    /// When set, an upgrade request whose `Origin` header is not in this list (exact match, for
    /// example `https://app.example.com`) is refused with HTTP 403. Requests without an `Origin`
    /// header (non-browser clients, which could forge it anyway) are let through. Default: none
    /// (every origin is accepted).
    pub allowed_origins: Option<Vec<String>>,
    /// The closing handshake's bound: when the server closes a session (shutdown, heartbeat,
    /// slow consumer, a protocol fault) it sends its close frame and keeps reading (discarding
    /// data) until the client's close frame arrives, for at most this long; then the socket is
    /// cut. So a client that is still sending reads the server's close code instead of a reset.
    /// Graceful shutdown waits up to twice this. Default: 2 s.
    pub close_timeout: Duration,
    /// Bound of the hub's command queue, shared by every session: joins, leaves and publishes
    /// wait here in one FIFO line. A session that finds it full stops reading its socket until
    /// there is room (TCP then slows its client); nothing is reordered or dropped. Default: 1024;
    /// at most [`MAX_QUEUE`].
    pub hub_queue: usize,
    /// Per-session message rate limit (token bucket), counting every whole message a client
    /// sends (control frames excepted). Default: none.
    pub rate_limit: Option<RateLimit>,
    /// Most concurrent WebSocket sessions from one IP address (the TCP peer: behind a reverse
    /// proxy every client shares the proxy's address, so leave this off there). One more upgrade
    /// is refused with HTTP 429. Default: none.
    pub max_connections_per_ip: Option<usize>,
    /// `SO_SNDBUF` for each accepted connection, set by the server's `on_connect` hook
    /// ([`serve`](crate::server::serve) installs it). The kernel's send buffer is the one part
    /// of a stuck client's cost that the session queue does not bound: by default Linux lets it
    /// grow to `net.ipv4.tcp_wmem` (often 4 MiB). A cap also makes a stuck client show up
    /// sooner. Default: none (the OS tunes it).
    pub tcp_send_buffer: Option<usize>,
    /// Keep a duplicate descriptor of every accepted socket so that the server can cut the
    /// connection of a client that stopped reading at once (the server's `on_connect`
    /// hook keeps it beside the session). It costs one file descriptor per connection: turn it off to serve
    /// twice as many connections under the same `ulimit -n`, and set
    /// [`tcp_user_timeout`](Self::tcp_user_timeout) so the kernel still ends stuck connections.
    /// Either way the session leaves its rooms and frees its queue at once. Default: true.
    pub keep_socket_handle: bool,
    /// `TCP_USER_TIMEOUT` for each accepted connection (Linux): the kernel aborts a connection
    /// whose sent data (or zero-window probes, for a peer that stopped reading) stays unanswered
    /// this long. Needs no extra descriptor. Default: none (the kernel's retransmission limits,
    /// often 15 minutes).
    pub tcp_user_timeout: Option<Duration>,
    /// Room history and recovery after a reconnect ([`HistoryConfig`]); `None` keeps none
    /// (room messages then carry no `offset`, `joined` no position, and `history` is answered
    /// with the error `history_off`). With a remote backplane the history lives in the
    /// backplane. Default: on, with [`HistoryConfig::default`].
    pub history: Option<HistoryConfig>,
    /// Most members a `presence` answer (and [`Rooms::presence`](crate::server::Rooms::presence))
    /// lists; beyond, the list says `"truncated":true` and `count` stays exact. It bounds the
    /// answer's size (each member takes up to about 1.1 KiB with its `info`). Default: 1000; 1
    /// to [`MAX_PRESENCE_LIST_LIMIT`].
    pub presence_list_limit: usize,
    /// permessage-deflate (RFC 7692) with clients that offer it: on by default. The server
    /// asks `server_no_context_takeover` and `client_no_context_takeover`, so that no
    /// compressor or inflater is kept per session and a room broadcast is compressed once for
    /// every member (the same bytes go to each); messages under its `threshold` (256 bytes)
    /// go out uncompressed, and the size limit applies to inflated messages. See
    /// [`DeflateConfig`]; [`DeflateConfig::off`] turns it off.
    pub deflate: DeflateConfig,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            max_message_size: DEFAULT_SERVER_MAX_MESSAGE_SIZE,
            heartbeat_interval: DEFAULT_SERVER_HEARTBEAT_INTERVAL,
            heartbeat_timeout: DEFAULT_SERVER_HEARTBEAT_TIMEOUT,
            session_queue: DEFAULT_SESSION_QUEUE,
            session_queue_bytes: DEFAULT_SESSION_QUEUE_BYTES,
            slow_consumer: SlowConsumerPolicy::Disconnect,
            max_sessions: DEFAULT_MAX_SESSIONS,
            max_rooms_per_session: DEFAULT_MAX_ROOMS_PER_SESSION,
            max_room_name_len: DEFAULT_MAX_ROOM_NAME_LEN,
            allowed_origins: None,
            close_timeout: DEFAULT_CLOSE_TIMEOUT,
            tcp_send_buffer: None,
            keep_socket_handle: true,
            tcp_user_timeout: None,
            hub_queue: DEFAULT_HUB_QUEUE,
            history: Some(HistoryConfig::default()),
            rate_limit: None,
            max_connections_per_ip: None,
            presence_list_limit: DEFAULT_PRESENCE_LIST_LIMIT,
            deflate: DeflateConfig::default(),
        }
    }
}

/// A token bucket: a session may send `burst` messages at once and `per_second` on average.
/// A message past the limit is answered with the error `rate_limited` (the session stays
/// open; on the echo endpoint it is simply not echoed) and counted; a client that goes on
/// sending until it is `burst` messages *beyond* that (twice the burst in all) is closed with
/// 1008 (policy violation), which this crate's client treats as final.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct RateLimit {
    /// Messages per second, on average. At least 1.
    pub per_second: u32,
    /// Messages that may arrive at once. At least 1.
    pub burst: u32,
}

impl RateLimit {
    /// `per_second` on average, `burst` at once.
    pub fn new(per_second: u32, burst: u32) -> Self {
        Self { per_second, burst }
    }
}

impl ServerConfig {
    /// Set [`deflate`](Self::deflate).
    pub fn deflate(mut self, deflate: DeflateConfig) -> Self {
        self.deflate = deflate;
        self
    }

    /// Set [`max_message_size`](Self::max_message_size).
    pub fn max_message_size(mut self, bytes: usize) -> Self {
        self.max_message_size = bytes;
        self
    }
    /// Set [`heartbeat_interval`](Self::heartbeat_interval) and
    /// [`heartbeat_timeout`](Self::heartbeat_timeout).
    pub fn heartbeat(mut self, interval: Duration, timeout: Duration) -> Self {
        self.heartbeat_interval = interval;
        self.heartbeat_timeout = timeout;
        self
    }
    /// Set [`session_queue`](Self::session_queue).
    pub fn session_queue(mut self, messages: usize) -> Self {
        self.session_queue = messages;
        self
    }
    /// Set [`session_queue_bytes`](Self::session_queue_bytes).
    pub fn session_queue_bytes(mut self, bytes: usize) -> Self {
        self.session_queue_bytes = bytes;
        self
    }
    /// Set [`slow_consumer`](Self::slow_consumer).
    pub fn slow_consumer(mut self, policy: SlowConsumerPolicy) -> Self {
        self.slow_consumer = policy;
        self
    }
    /// Set [`max_sessions`](Self::max_sessions).
    pub fn max_sessions(mut self, sessions: usize) -> Self {
        self.max_sessions = sessions;
        self
    }
    /// Set [`presence_list_limit`](Self::presence_list_limit).
    pub fn presence_list_limit(mut self, members: usize) -> Self {
        self.presence_list_limit = members;
        self
    }

    /// Set [`max_rooms_per_session`](Self::max_rooms_per_session).
    pub fn max_rooms_per_session(mut self, rooms: usize) -> Self {
        self.max_rooms_per_session = rooms;
        self
    }
    /// Set [`max_room_name_len`](Self::max_room_name_len).
    pub fn max_room_name_len(mut self, bytes: usize) -> Self {
        self.max_room_name_len = bytes;
        self
    }
    /// Add an origin to [`allowed_origins`](Self::allowed_origins) (turning the allow-list on).
    pub fn allow_origin(mut self, origin: impl Into<String>) -> Self {
        self.allowed_origins
            .get_or_insert_with(Vec::new)
            .push(origin.into());
        self
    }
    /// Set [`close_timeout`](Self::close_timeout).
    pub fn close_timeout(mut self, timeout: Duration) -> Self {
        self.close_timeout = timeout;
        self
    }

    /// Set [`keep_socket_handle`](Self::keep_socket_handle).
    pub fn keep_socket_handle(mut self, keep: bool) -> Self {
        self.keep_socket_handle = keep;
        self
    }
    /// Set [`tcp_user_timeout`](Self::tcp_user_timeout).
    pub fn tcp_user_timeout(mut self, timeout: Option<Duration>) -> Self {
        self.tcp_user_timeout = timeout;
        self
    }
    /// Set [`tcp_send_buffer`](Self::tcp_send_buffer).
    pub fn tcp_send_buffer(mut self, bytes: Option<usize>) -> Self {
        self.tcp_send_buffer = bytes;
        self
    }
    /// Set [`hub_queue`](Self::hub_queue).
    pub fn hub_queue(mut self, commands: usize) -> Self {
        self.hub_queue = commands;
        self
    }
    /// Set [`rate_limit`](Self::rate_limit).
    pub fn rate_limit(mut self, limit: Option<RateLimit>) -> Self {
        self.rate_limit = limit;
        self
    }
    /// Set [`max_connections_per_ip`](Self::max_connections_per_ip).
    pub fn max_connections_per_ip(mut self, sessions: Option<usize>) -> Self {
        self.max_connections_per_ip = sessions;
        self
    }

    /// Keep room history with `history`.
    pub fn history(mut self, history: HistoryConfig) -> Self {
        self.history = Some(history);
        self
    }

    /// Keep no room history.
    pub fn no_history(mut self) -> Self {
        self.history = None;
        self
    }

    /// This configuration with every duration capped at [`MAX_CONFIG_DURATION`](super::MAX_CONFIG_DURATION) (the server runs
    /// with this, so no value overflows its timer arithmetic; see the module's "Long durations").
    #[cfg_attr(not(feature = "server"), allow(dead_code))]
    pub(crate) fn saturated(mut self) -> Self {
        for d in [
            &mut self.heartbeat_interval,
            &mut self.heartbeat_timeout,
            &mut self.close_timeout,
        ] {
            *d = cap_duration(*d);
        }
        self.tcp_user_timeout = self.tcp_user_timeout.map(cap_duration);
        self
    }

    /// Whether `room` follows the room name rules with this configuration's
    /// [`max_room_name_len`](Self::max_room_name_len): see
    /// [`protocol::is_valid_room`](crate::protocol::is_valid_room).
    pub fn is_valid_room(&self, room: &str) -> bool {
        crate::protocol::is_valid_room(room, self.max_room_name_len)
    }

    /// Check every value; the server calls this before it starts.
    pub fn validate(&self) -> Result<()> {
        if let Some(history) = &self.history {
            history.validate()?;
        }
        if self.max_message_size == 0 {
            return Err(Error::Config(
                "max_message_size must be at least 1 byte".into(),
            ));
        }
        if self.heartbeat_interval.is_zero() || self.heartbeat_timeout.is_zero() {
            return Err(Error::Config(
                "heartbeat interval and timeout must be above zero".into(),
            ));
        }
        if self.session_queue == 0 {
            return Err(Error::Config("session_queue must be at least 1".into()));
        }
        if self.session_queue_bytes == 0 {
            return Err(Error::Config(
                "session_queue_bytes must be at least 1".into(),
            ));
        }
        if self.max_sessions == 0 {
            return Err(Error::Config("max_sessions must be at least 1".into()));
        }
        if self.max_room_name_len == 0 {
            return Err(Error::Config("max_room_name_len must be at least 1".into()));
        }
        if self.tcp_send_buffer == Some(0) {
            return Err(Error::Config("tcp_send_buffer must be above zero".into()));
        }
        if self.close_timeout.is_zero() {
            return Err(Error::Config("close_timeout must be above zero".into()));
        }
        if self.session_queue > MAX_QUEUE {
            return Err(Error::Config(format!(
                "session_queue must be at most {MAX_QUEUE}, not {}",
                self.session_queue
            )));
        }
        if self.hub_queue == 0 || self.hub_queue > MAX_QUEUE {
            return Err(Error::Config(format!(
                "hub_queue must be 1 to {MAX_QUEUE}, not {}",
                self.hub_queue
            )));
        }
        if let Some(limit) = self.rate_limit {
            if limit.per_second == 0 || limit.burst == 0 {
                return Err(Error::Config(
                    "rate_limit per_second and burst must be at least 1".into(),
                ));
            }
        }
        if !(1..=MAX_PRESENCE_LIST_LIMIT).contains(&self.presence_list_limit) {
            return Err(Error::Config(format!(
                "presence_list_limit must be 1 to {MAX_PRESENCE_LIST_LIMIT}, not {}",
                self.presence_list_limit
            )));
        }
        if self.max_connections_per_ip == Some(0) {
            return Err(Error::Config(
                "max_connections_per_ip must be at least 1".into(),
            ));
        }
        Ok(())
    }
}

/// What a server session does when its bounded outbound queue is full (the client reads slower
/// than messages arrive for it). Either way the other members of its rooms are not slowed: the
/// hub never waits for a session's queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SlowConsumerPolicy {
    /// Disconnect the client: its queued messages are discarded, a close frame 1013 ("try again
    /// later") is attempted, and the socket is cut when the close cannot be written. Counted in
    /// the hub's `slow_consumer_disconnects`. A 1013 lets a well-behaved client reconnect (unlike
    /// 1008, which this crate's client treats as final).
    Disconnect,
    /// Keep the client and drop the message that does not fit, counted in the hub's `dropped`.
    DropNewest,
}

#[cfg(test)]
mod server_config_tests {
    use super::*;
    use crate::config::MAX_CONFIG_DURATION;

    #[test]
    fn server_defaults_are_valid_and_documented_values() {
        let c = ServerConfig::default();
        assert!(c.validate().is_ok());
        assert_eq!(c.max_message_size, 64 * 1024);
        assert_eq!(c.heartbeat_interval, Duration::from_secs(10));
        assert_eq!(c.heartbeat_timeout, Duration::from_secs(30));
        assert_eq!(c.session_queue, 1024);
        assert_eq!(c.slow_consumer, SlowConsumerPolicy::Disconnect);
        assert_eq!(c.max_sessions, 10_000);
        assert_eq!(c.max_rooms_per_session, 64);
        assert_eq!(c.max_room_name_len, 64);
        assert_eq!(c.allowed_origins, None);
        assert_eq!(c.close_timeout, Duration::from_secs(2));
        assert_eq!(c.tcp_send_buffer, None);
        assert_eq!(c.hub_queue, 1024);
        assert_eq!(c.rate_limit, None);
        assert_eq!(c.max_connections_per_ip, None);
    }

    #[test]
    fn huge_durations_saturate() {
        let c = ServerConfig::default()
            .heartbeat(Duration::MAX, Duration::MAX)
            .close_timeout(Duration::MAX)
            .tcp_user_timeout(Some(Duration::MAX));
        assert!(c.validate().is_ok());
        let s = c.saturated();
        assert_eq!(s.heartbeat_interval, MAX_CONFIG_DURATION);
        assert_eq!(s.close_timeout, MAX_CONFIG_DURATION);
        assert_eq!(s.tcp_user_timeout, Some(MAX_CONFIG_DURATION));
    }

    #[test]
    fn bad_server_values_are_config_errors() {
        let bad = [
            ServerConfig::default().max_message_size(0),
            ServerConfig::default().heartbeat(Duration::ZERO, Duration::from_secs(1)),
            ServerConfig::default().session_queue(0),
            ServerConfig::default().session_queue_bytes(0),
            ServerConfig::default().max_sessions(0),
            ServerConfig::default().max_room_name_len(0),
            ServerConfig::default().close_timeout(Duration::ZERO),
            ServerConfig::default().tcp_send_buffer(Some(0)),
            ServerConfig::default().session_queue(usize::MAX),
            ServerConfig::default().hub_queue(0),
            ServerConfig::default().hub_queue(MAX_QUEUE + 1),
            ServerConfig::default().rate_limit(Some(RateLimit::new(0, 1))),
            ServerConfig::default().rate_limit(Some(RateLimit::new(1, 0))),
            ServerConfig::default().max_connections_per_ip(Some(0)),
        ];
        for c in bad {
            assert!(matches!(c.validate(), Err(Error::Config(_))), "{c:?}");
        }
    }

    #[test]
    fn room_name_rules() {
        let c = ServerConfig::default().max_room_name_len(8);
        for ok in ["a", "lobby", "A-z_0.9:", "12345678"] {
            assert!(c.is_valid_room(ok), "{ok}");
        }
        for bad in ["", "123456789", "two words", "é", "a/b", "a\"b", "a\nb"] {
            assert!(!c.is_valid_room(bad), "{bad:?}");
        }
    }
}
