//! Configuration: [`ClientConfig`] and the policies it is made of ([`HeartbeatConfig`],
//! [`ReconnectPolicy`], [`OutboxPolicy`]), and [`ServerConfig`] (with [`SlowConsumerPolicy`]) for
//! the rooms server.
//!
//! Every struct has a `Default` that is safe for a long-running service, documented field by
//! field, and builder-style setters; they are `#[non_exhaustive]` (build them from `default()`
//! and the setters, or assign fields), so a new knob is not a breaking change. Values are checked by `validate()` when a client starts, so a
//! bad value is an [`Error::Config`], never a panic.

use std::ops::RangeInclusive;
use std::time::Duration;

use crate::error::{Error, Result};

/// The longest duration a configuration uses: 365 days. Longer ones would overflow timer
/// arithmetic. A [`ClientConfig`] refuses them in `validate()` (for "never", turn the feature
/// off instead, for example [`HeartbeatConfig::disabled`]); a [`ServerConfig`] treats them as
/// this value, which is "never" for a heartbeat or a timeout.
pub const MAX_CONFIG_DURATION: Duration = Duration::from_secs(365 * 24 * 3600);

/// `Error::Config` naming `field` when `value` is above [`MAX_CONFIG_DURATION`].
pub(crate) fn check_duration(field: &str, value: Duration) -> Result<()> {
    if value > MAX_CONFIG_DURATION {
        return Err(Error::Config(format!(
            "{field} must be at most 365 days, not {value:?}"
        )));
    }
    Ok(())
}

/// Default largest message (after reassembling fragments) a client accepts: 16 MiB.
pub const DEFAULT_MAX_MESSAGE_SIZE: usize = 16 * 1024 * 1024;

/// How a client behaves: limits, timeouts, and its heartbeat, reconnect and outbox policies.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct ClientConfig {
    /// A name for this connection, carried by every [`Inbound`](crate::client::Inbound) and in
    /// traces, so that a subscriber of many connections knows where a message came from.
    /// Default: the URL.
    pub name: Option<String>,
    /// Largest message accepted, after continuation frames are put together. A bigger message
    /// closes the connection with 1009 (the peer is sending what we said we cannot take), and
    /// the same value is the codec's frame limit. Default: 16 MiB.
    pub max_message_size: usize,
    /// Time allowed for TCP connect plus the HTTP upgrade. Default: 10 s.
    pub connect_timeout: Duration,
    /// Most messages the socket's writer takes from the outbox at once and writes in one
    /// flush (the batch "in flight"). A bigger batch means fewer system calls; it is also what
    /// a lost connection can cost (the batch being written is counted dropped, not resent). Memory
    /// stays bounded by `outbox.capacity + write_queue` messages. Default: 256.
    pub write_queue: usize,
    /// Extra HTTP headers sent with the upgrade request (for example `Authorization`).
    pub headers: Vec<(String, String)>,
    /// WebSocket subprotocols offered in `Sec-WebSocket-Protocol`, in order of preference.
    /// Default: none.
    pub protocols: Vec<String>,
    /// Liveness checking.
    pub heartbeat: HeartbeatConfig,
    /// What happens after the connection is lost.
    pub reconnect: ReconnectPolicy,
    /// Where messages wait while the connection is down or the socket is slow.
    pub outbox: OutboxPolicy,
    /// Extra root certificates to trust for `wss://`, each a PEM text holding one or more
    /// certificates, beside the web PKI roots (feature `rustls`). For a private CA or a
    /// self-signed server: a server presenting one of these very certificates as its own is
    /// trusted even when it is marked as a CA (`openssl req -x509` makes such certificates), as
    /// long as it names the URL's host and is within its validity period. Default: none.
    pub tls_roots_pem: Vec<Vec<u8>>,
    /// Most distinct on-connect messages ([`Client::join`](crate::client::Client::join),
    /// [`Client::send_on_connect`](crate::client::Client::send_on_connect)) a client keeps; one
    /// more fails with [`Error::OnConnectFull`]. They are sent first on every connection, ahead
    /// of the outbox (which may then hold up to `outbox.capacity` plus this many messages), so
    /// the bound keeps both memory and the replay after a reconnect in check. Default: 1024.
    pub max_on_connect: usize,
    /// Most bytes (of the messages' size on the wire) that one subscription may hold: messages
    /// in its channel or mailbox, or taken and not yet dropped (or taken apart) by the
    /// subscriber. Past it the
    /// subscription counts as full, as at its capacity in messages (whichever comes first):
    /// the newest message is dropped and counted, or, with
    /// [`Overflow::Backpressure`](crate::client::Overflow::Backpressure), the client waits for
    /// bytes to be given back. One message always fits, whatever its size, so this never
    /// refuses a message the connection accepted. Why: a channel of 1,024 messages of up to
    /// `max_message_size` each could otherwise hold gigabytes. Default: 16 MiB.
    pub subscriber_bytes: usize,
}

impl Default for ClientConfig {
    fn default() -> Self {
        Self {
            name: None,
            max_message_size: DEFAULT_MAX_MESSAGE_SIZE,
            connect_timeout: Duration::from_secs(10),
            write_queue: 256,
            headers: Vec::new(),
            protocols: Vec::new(),
            heartbeat: HeartbeatConfig::default(),
            reconnect: ReconnectPolicy::default(),
            outbox: OutboxPolicy::default(),
            tls_roots_pem: Vec::new(),
            max_on_connect: 1024,
            subscriber_bytes: 16 * 1024 * 1024,
        }
    }
}

impl ClientConfig {
    /// Set [`name`](Self::name).
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.name = Some(name.into());
        self
    }
    /// Set [`max_message_size`](Self::max_message_size).
    pub fn max_message_size(mut self, bytes: usize) -> Self {
        self.max_message_size = bytes;
        self
    }
    /// Set [`write_queue`](Self::write_queue).
    pub fn write_queue(mut self, frames: usize) -> Self {
        self.write_queue = frames;
        self
    }
    /// Set [`subscriber_bytes`](Self::subscriber_bytes).
    pub fn subscriber_bytes(mut self, bytes: usize) -> Self {
        self.subscriber_bytes = bytes;
        self
    }
    /// Set [`max_on_connect`](Self::max_on_connect).
    pub fn max_on_connect(mut self, messages: usize) -> Self {
        self.max_on_connect = messages;
        self
    }
    /// Set [`connect_timeout`](Self::connect_timeout).
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }
    /// Offer the subprotocol `protocol` (see [`protocols`](Self::protocols)).
    pub fn protocol(mut self, protocol: impl Into<String>) -> Self {
        self.protocols.push(protocol.into());
        self
    }
    /// Trust the root certificate(s) in `pem` for `wss://` too (see
    /// [`tls_roots_pem`](Self::tls_roots_pem)).
    pub fn tls_root_pem(mut self, pem: impl Into<Vec<u8>>) -> Self {
        self.tls_roots_pem.push(pem.into());
        self
    }
    /// Add an HTTP header to the upgrade request.
    pub fn header(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.headers.push((name.into(), value.into()));
        self
    }
    /// Set [`heartbeat`](Self::heartbeat).
    pub fn heartbeat(mut self, heartbeat: HeartbeatConfig) -> Self {
        self.heartbeat = heartbeat;
        self
    }
    /// Set [`reconnect`](Self::reconnect).
    pub fn reconnect(mut self, reconnect: ReconnectPolicy) -> Self {
        self.reconnect = reconnect;
        self
    }
    /// Set [`outbox`](Self::outbox).
    pub fn outbox(mut self, outbox: OutboxPolicy) -> Self {
        self.outbox = outbox;
        self
    }

    /// Check every value; the client calls this before it starts.
    pub fn validate(&self) -> Result<()> {
        if self.max_message_size == 0 {
            return Err(Error::Config(
                "max_message_size must be at least 1 byte".into(),
            ));
        }
        if self.connect_timeout.is_zero() {
            return Err(Error::Config("connect_timeout must be above zero".into()));
        }
        check_duration("connect_timeout", self.connect_timeout)?;
        if self.write_queue == 0 {
            return Err(Error::Config("write_queue must be at least 1".into()));
        }
        if self.subscriber_bytes == 0 {
            return Err(Error::Config(
                "subscriber_bytes must be at least 1 byte".into(),
            ));
        }
        if self.max_on_connect == 0 {
            return Err(Error::Config("max_on_connect must be at least 1".into()));
        }
        for (name, value) in &self.headers {
            let bad = |what: &str| {
                Error::Config(format!(
                    "headers: {what} in header {name:?} (a name is an HTTP token, a value has no \
                     control characters)"
                ))
            };
            actix_http::header::HeaderName::from_bytes(name.as_bytes())
                .map_err(|_| bad("invalid name"))?;
            actix_http::header::HeaderValue::from_str(value).map_err(|_| bad("invalid value"))?;
        }
        #[cfg(feature = "rustls")]
        if !self.tls_roots_pem.is_empty() {
            crate::tls::client_config(&self.tls_roots_pem)?;
        }
        #[cfg(not(feature = "rustls"))]
        if !self.tls_roots_pem.is_empty() {
            return Err(Error::Config(
                "tls_roots_pem needs the `rustls` feature of actix-ws-manager".into(),
            ));
        }
        self.heartbeat.validate()?;
        self.reconnect.validate()?;
        self.outbox.validate()
    }
}

/// How the heartbeat checks that the peer is alive.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct HeartbeatConfig {
    /// Time between pings. Default: 15 s.
    pub interval: Duration,
    /// The peer is declared dead when *nothing at all* (no message, no pong) has arrived for this
    /// long; detection therefore takes at most `timeout + interval`. It does not depend on the
    /// socket being writable. Default: 30 s.
    pub timeout: Duration,
    /// What a ping is on the wire. Default: [`PingMode::Protocol`].
    pub mode: PingMode,
    /// Turn the heartbeat off entirely (a dead peer is then noticed only by TCP). Default: on.
    pub enabled: bool,
}

impl Default for HeartbeatConfig {
    fn default() -> Self {
        Self {
            interval: Duration::from_secs(15),
            timeout: Duration::from_secs(30),
            mode: PingMode::Protocol,
            enabled: true,
        }
    }
}

impl HeartbeatConfig {
    /// A heartbeat with the given interval and timeout and the default mode.
    pub fn new(interval: Duration, timeout: Duration) -> Self {
        Self {
            interval,
            timeout,
            ..Self::default()
        }
    }
    /// Set [`mode`](Self::mode).
    pub fn mode(mut self, mode: PingMode) -> Self {
        self.mode = mode;
        self
    }
    /// No heartbeat at all.
    pub fn disabled() -> Self {
        Self {
            enabled: false,
            ..Self::default()
        }
    }
    fn validate(&self) -> Result<()> {
        if self.enabled {
            check_duration("heartbeat.interval", self.interval)?;
            check_duration("heartbeat.timeout", self.timeout)?;
        }
        if self.enabled && (self.interval.is_zero() || self.timeout.is_zero()) {
            return Err(Error::Config(
                "heartbeat interval and timeout must be above zero".into(),
            ));
        }
        Ok(())
    }
}

/// What the heartbeat sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PingMode {
    /// RFC 6455 Ping control frames carrying an 8-byte nonce; round-trip time comes from the Pong
    /// that echoes it.
    Protocol,
    /// An application-level `{"type":"ping"}` text message, for peers (or proxies) that do not
    /// answer protocol pings; round-trip time comes from the next `{"type":"pong"}`.
    Application,
}

/// What a lost connection means and how long to wait before the next attempt.
///
/// The delay before attempt `n` (counting from 0) is
/// `min(max_delay, initial_delay * factor^n)`, then reduced by a random fraction of up to
/// `jitter` of itself, *after* the cap, so that many clients that lost the same server do not come
/// back in step ("full jitter" when `jitter` is 1.0).
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct ReconnectPolicy {
    /// Reconnect at all. Default: true.
    pub enabled: bool,
    /// Delay before the first reconnect attempt. Default: 500 ms.
    pub initial_delay: Duration,
    /// Growth per attempt. Default: 2.0.
    pub factor: f64,
    /// Cap on the delay, before jitter. Default: 30 s.
    pub max_delay: Duration,
    /// Fraction of the delay that is randomised, from 0.0 (none) to 1.0 (full jitter: uniform in
    /// `[0, delay]`). Default: 1.0.
    pub jitter: f64,
    /// Seed for the jitter, so tests are repeatable. Default: none (seeded from the OS).
    pub jitter_seed: Option<u64>,
    /// Give up (state `Failed`) after this many failed attempts in a row. Default: never.
    pub max_attempts: Option<u32>,
    /// A connection must stay up this long before the attempt counter goes back to zero, so a
    /// server that accepts and drops at once still sees growing delays. Default: 10 s.
    pub stable_after: Duration,
    /// Close codes from the server that end reconnection (state `Failed`). Default: 1008
    /// (policy violation). Add `4000..=4999` for servers that use application codes to say "go
    /// away".
    pub final_close_codes: Vec<RangeInclusive<u16>>,
    /// HTTP statuses of a refused upgrade that end reconnection. Default: 400, 401, 403, 404,
    /// 405, 426 (retrying cannot help); 429 and 5xx are retried.
    pub final_http_statuses: Vec<u16>,
}

impl Default for ReconnectPolicy {
    fn default() -> Self {
        Self {
            enabled: true,
            initial_delay: Duration::from_millis(500),
            factor: 2.0,
            max_delay: Duration::from_secs(30),
            jitter: 1.0,
            jitter_seed: None,
            max_attempts: None,
            stable_after: Duration::from_secs(10),
            final_close_codes: vec![1008..=1008],
            final_http_statuses: vec![400, 401, 403, 404, 405, 426],
        }
    }
}

impl ReconnectPolicy {
    /// Never reconnect: the first lost connection is final.
    pub fn never() -> Self {
        Self {
            enabled: false,
            ..Self::default()
        }
    }
    /// Set the delay curve.
    pub fn backoff(mut self, initial_delay: Duration, factor: f64, max_delay: Duration) -> Self {
        self.initial_delay = initial_delay;
        self.factor = factor;
        self.max_delay = max_delay;
        self
    }
    /// Set [`jitter`](Self::jitter) and, optionally, its seed.
    pub fn jitter(mut self, jitter: f64, seed: Option<u64>) -> Self {
        self.jitter = jitter;
        self.jitter_seed = seed;
        self
    }
    /// Set [`max_attempts`](Self::max_attempts).
    pub fn max_attempts(mut self, attempts: Option<u32>) -> Self {
        self.max_attempts = attempts;
        self
    }
    /// Set [`stable_after`](Self::stable_after).
    pub fn stable_after(mut self, after: Duration) -> Self {
        self.stable_after = after;
        self
    }
    /// Add close codes that end reconnection.
    pub fn final_close_codes(mut self, codes: RangeInclusive<u16>) -> Self {
        self.final_close_codes.push(codes);
        self
    }

    /// Whether a close code from the server ends reconnection.
    pub fn is_final_close_code(&self, code: u16) -> bool {
        self.final_close_codes.iter().any(|r| r.contains(&code))
    }

    /// The un-jittered delay before attempt `attempt` (0-based): `min(max_delay, initial *
    /// factor^attempt)`.
    pub fn base_delay(&self, attempt: u32) -> Duration {
        let exp = self.factor.powi(attempt.min(1024) as i32);
        let secs = self.initial_delay.as_secs_f64() * exp;
        let cap = self.max_delay.as_secs_f64();
        let secs = if secs.is_finite() { secs.min(cap) } else { cap };
        Duration::try_from_secs_f64(secs.max(0.0)).unwrap_or(self.max_delay)
    }

    /// The delay before attempt `attempt`, with jitter drawn from `rng` and applied after the cap.
    pub fn delay(&self, attempt: u32, rng: &mut fastrand::Rng) -> Duration {
        let base = self.base_delay(attempt);
        let cut = self.jitter.clamp(0.0, 1.0) * rng.f64();
        base.mul_f64(1.0 - cut)
    }

    fn validate(&self) -> Result<()> {
        check_duration("reconnect.initial_delay", self.initial_delay)?;
        check_duration("reconnect.max_delay", self.max_delay)?;
        check_duration("reconnect.stable_after", self.stable_after)?;
        if !(self.factor.is_finite() && self.factor >= 1.0) {
            return Err(Error::Config(
                "reconnect factor must be a finite number >= 1.0".into(),
            ));
        }
        if !(0.0..=1.0).contains(&self.jitter) {
            return Err(Error::Config(
                "reconnect jitter must be between 0.0 and 1.0".into(),
            ));
        }
        if self.max_delay < self.initial_delay {
            return Err(Error::Config(
                "reconnect max_delay must be >= initial_delay".into(),
            ));
        }
        Ok(())
    }
}

/// Where outgoing messages wait while the connection is down (or the socket is slower than the
/// sender), and what happens when that place is full.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct OutboxPolicy {
    /// Most messages that may wait. Default: 1024.
    pub capacity: usize,
    /// What a full outbox does with one more message. Default: [`Overflow::Reject`].
    pub overflow: Overflow,
}

impl Default for OutboxPolicy {
    fn default() -> Self {
        Self {
            capacity: 1024,
            overflow: Overflow::Reject,
        }
    }
}

impl OutboxPolicy {
    /// An outbox of `capacity` messages with the given overflow behaviour.
    pub fn new(capacity: usize, overflow: Overflow) -> Self {
        Self { capacity, overflow }
    }
    fn validate(&self) -> Result<()> {
        if self.capacity == 0 && self.overflow == Overflow::DropOldest {
            return Err(Error::Config(
                "an outbox of capacity 0 cannot drop its oldest message; use Reject or DropNewest"
                    .into(),
            ));
        }
        Ok(())
    }
}

/// What a full outbox does with one more message. Every dropped message is counted in
/// [`Stats::dropped`](crate::client::Stats::dropped) and traced at `warn`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Overflow {
    /// `send` fails with [`Error::OutboxFull`]; nothing already queued is lost.
    Reject,
    /// The oldest waiting message is dropped to make room; `send` succeeds.
    DropOldest,
    /// The new message is dropped; `send` succeeds (fire-and-forget feeds where the newest data
    /// matters least, or where the caller must never see an error).
    DropNewest,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_then_caps() {
        let p = ReconnectPolicy::default().backoff(
            Duration::from_millis(100),
            2.0,
            Duration::from_millis(1000),
        );
        let d: Vec<_> = (0..6).map(|a| p.base_delay(a).as_millis()).collect();
        assert_eq!(d, vec![100, 200, 400, 800, 1000, 1000]);
        assert_eq!(p.base_delay(u32::MAX), Duration::from_millis(1000));
    }

    #[test]
    fn jitter_is_applied_after_the_cap_and_is_repeatable_with_a_seed() {
        let p = ReconnectPolicy::default()
            .backoff(Duration::from_millis(100), 2.0, Duration::from_millis(1000))
            .jitter(1.0, Some(42));
        let run = |seed| {
            let mut rng = fastrand::Rng::with_seed(seed);
            (0..50).map(|_| p.delay(20, &mut rng)).collect::<Vec<_>>()
        };
        let a = run(42);
        assert_eq!(a, run(42));
        assert!(a.iter().all(|d| *d <= Duration::from_millis(1000)));
        // Capped delays still spread: not all in the top 10 % of the range.
        assert!(
            a.iter()
                .filter(|d| **d < Duration::from_millis(900))
                .count()
                > 25
        );
    }

    #[test]
    fn bad_values_are_config_errors() {
        let overflowing = [
            ClientConfig::default().connect_timeout(Duration::MAX),
            ClientConfig::default().heartbeat(HeartbeatConfig::new(Duration::MAX, Duration::MAX)),
            ClientConfig::default().reconnect(ReconnectPolicy::default().backoff(
                Duration::from_secs(1),
                2.0,
                Duration::MAX,
            )),
            ClientConfig::default()
                .reconnect(ReconnectPolicy::default().stable_after(Duration::MAX)),
            ClientConfig::default().header("bad name", "v"),
            ClientConfig::default().header("x-ok", "line\nbreak"),
        ];
        for c in overflowing {
            match c.validate() {
                Err(Error::Config(msg)) => assert!(!msg.is_empty()),
                other => panic!("{c:?}: {other:?}"),
            }
        }
        // base_delay itself never panics, whatever the policy says.
        let p = ReconnectPolicy::default().backoff(Duration::from_secs(1), 10.0, Duration::MAX);
        assert_eq!(p.base_delay(u32::MAX), Duration::MAX);
        let mut c = ClientConfig::default();
        c.reconnect.factor = f64::NAN;
        assert!(matches!(c.validate(), Err(Error::Config(_))));
        let c =
            ClientConfig::default().heartbeat(HeartbeatConfig::new(Duration::ZERO, Duration::ZERO));
        assert!(matches!(c.validate(), Err(Error::Config(_))));
        assert!(ClientConfig::default().validate().is_ok());
    }
}

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
/// checked by [`validate`](Self::validate) when the server starts.
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
    /// connection of a client that stopped reading at once (`on_connect` hook; see
    /// `server::session`). It costs one file descriptor per connection: turn it off to serve
    /// twice as many connections under the same `ulimit -n`, and set
    /// [`tcp_user_timeout`](Self::tcp_user_timeout) so the kernel still ends stuck connections.
    /// Either way the session leaves its rooms and frees its queue at once. Default: true.
    pub keep_socket_handle: bool,
    /// `TCP_USER_TIMEOUT` for each accepted connection (Linux): the kernel aborts a connection
    /// whose sent data (or zero-window probes, for a peer that stopped reading) stays unanswered
    /// this long. Needs no extra descriptor. Default: none (the kernel's retransmission limits,
    /// often 15 minutes).
    pub tcp_user_timeout: Option<Duration>,
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
            rate_limit: None,
            max_connections_per_ip: None,
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

    /// This configuration with every duration capped at [`MAX_CONFIG_DURATION`] (the server runs with
    /// this, so no value overflows its timer arithmetic).
    #[cfg_attr(not(feature = "server"), allow(dead_code))]
    pub(crate) fn saturated(mut self) -> Self {
        for d in [
            &mut self.heartbeat_interval,
            &mut self.heartbeat_timeout,
            &mut self.close_timeout,
        ] {
            *d = (*d).min(MAX_CONFIG_DURATION);
        }
        self.tcp_user_timeout = self.tcp_user_timeout.map(|d| d.min(MAX_CONFIG_DURATION));
        self
    }

    /// Whether `room` follows the room name rules: 1 to
    /// [`max_room_name_len`](Self::max_room_name_len) bytes of `A-Z a-z 0-9 _ . : -`.
    pub fn is_valid_room(&self, room: &str) -> bool {
        !room.is_empty()
            && room.len() <= self.max_room_name_len
            && room
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b':' | b'-'))
    }

    /// Check every value; the server calls this before it starts.
    pub fn validate(&self) -> Result<()> {
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
