//! The client half of the configuration: [`ClientConfig`] and the policies it is made of
//! ([`HeartbeatConfig`], [`ReconnectPolicy`], [`OutboxPolicy`]).

use std::fmt::Display;
use std::future::Future;
use std::ops::RangeInclusive;
use std::time::Duration;

use super::{check_duration, TokenProvider};
use crate::error::{Error, Result};
use crate::ws::deflate::DeflateConfig;

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
    /// Extra HTTP headers sent with the upgrade request (for example `Authorization`). With a
    /// [`token_provider`](Self::token_provider), its `Authorization: Bearer T` replaces any
    /// `Authorization` header given here.
    pub headers: Vec<(String, String)>,
    /// Where the bearer token of each connect attempt comes from; see [`TokenProvider`]. With
    /// one, the client keeps a session authenticated by itself: a fresh token for every connect
    /// attempt; a 401 at the upgrade or a close with 4001
    /// ([`TOKEN_EXPIRED`](crate::ws::close::TOKEN_EXPIRED)) reconnects at once with a new token
    /// (see [`ReconnectPolicy`]'s "Token provider"); and the server's `token_expiring` is
    /// answered with a `refresh` carrying a new token, each outcome an
    /// [`Event::TokenRefresh`](crate::client::Event::TokenRefresh). Default: none.
    pub token_provider: Option<TokenProvider>,
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
    /// permessage-deflate (RFC 7692): offered by default, with `client_max_window_bits`,
    /// `server_no_context_takeover` and `client_no_context_takeover`, so that no compressor or
    /// inflater is kept per connection between messages (see [`DeflateConfig`]); a server
    /// that declines gets an uncompressed connection, and an answer the offer did not allow
    /// fails the connection attempt. [`DeflateConfig::off`] offers nothing.
    pub deflate: DeflateConfig,
}

impl Default for ClientConfig {
    fn default() -> Self {
        Self {
            name: None,
            max_message_size: DEFAULT_MAX_MESSAGE_SIZE,
            connect_timeout: Duration::from_secs(10),
            write_queue: 256,
            headers: Vec::new(),
            token_provider: None,
            protocols: Vec::new(),
            heartbeat: HeartbeatConfig::default(),
            reconnect: ReconnectPolicy::default(),
            outbox: OutboxPolicy::default(),
            tls_roots_pem: Vec::new(),
            max_on_connect: 1024,
            subscriber_bytes: 16 * 1024 * 1024,
            deflate: DeflateConfig::default(),
        }
    }
}

impl ClientConfig {
    /// Set [`deflate`](Self::deflate).
    pub fn deflate(mut self, deflate: DeflateConfig) -> Self {
        self.deflate = deflate;
        self
    }
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
    /// Set [`token_provider`](Self::token_provider): `provider` is called before every connect
    /// attempt and on `token_expiring`, and answers a token or an error (see [`TokenProvider`]).
    ///
    /// ```
    /// use actix_ws_manager::config::ClientConfig;
    /// let config = ClientConfig::default().token_provider(|| async {
    ///     std::fs::read_to_string("/run/secrets/ws-token")
    /// });
    /// # let _ = config;
    /// ```
    pub fn token_provider<F, Fut, E>(mut self, provider: F) -> Self
    where
        F: Fn() -> Fut + Send + Sync + 'static,
        Fut: Future<Output = std::result::Result<String, E>> + 'static,
        E: Display,
    {
        self.token_provider = Some(TokenProvider::new(provider));
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

    /// Check every value; the client calls this before it starts. A duration above
    /// [`MAX_CONFIG_DURATION`](super::MAX_CONFIG_DURATION) is refused (see
    /// [`config`](super)'s "Long durations").
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

/// How the heartbeat checks that the peer is alive: a ping every `interval`, and the peer is
/// declared dead (the socket cut, a reconnect follows) when nothing at all has arrived within
/// `timeout`. While the client itself has paused reading (a subscriber with
/// [`Overflow::Backpressure`](crate::client::Overflow::Backpressure) is full, or its messages
/// wait for routing), the peer is not declared dead: it is alive and we are slow; the silence
/// clock starts again when reading resumes.
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
///
/// # Token provider
///
/// With a [`token_provider`](ClientConfig::token_provider), two failures mean "the token is
/// stale" rather than "the server is down": a 401 refusing the upgrade, and a close with 4001
/// ([`TOKEN_EXPIRED`](crate::ws::close::TOKEN_EXPIRED)). The first of them is retried at once
/// (`Reconnecting` with a zero delay), with a new token, since waiting cannot make a token
/// fresher. The policy still applies otherwise: reconnection disabled or `max_attempts` reached
/// end in `Failed` as for any loss, and the immediate retry counts as an attempt. If that
/// retry meets a 401 again (or its connection is closed with 4001 again before it has stayed up
/// for `stable_after`), the new token did not help and the failure takes the ordinary path: a
/// second 401 in a row is final by default (`final_http_statuses`), a second 4001 waits the
/// backoff delay (4001 is never final with a provider, see `final_close_codes`). So a server
/// that keeps refusing fresh tokens meets backoff, not a storm.
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
    /// away". With a token provider, 4001 (token expired) is never final, whatever this says:
    /// it means "come back with a new token", which the client can do.
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
