//! The ReconnectSupervisor actor: decides what a lost connection means, waits with exponential
//! backoff and jitter, reconnects, and replays the user's on-connect messages before the outbox.
//!
//! # Lifecycle and guarantees
//!
//! - The first connection starts as soon as the client is created (state `Connecting`).
//! - After a loss the supervisor publishes `Disconnected { code, reason }`, then either gives up
//!   (`Failed`) or publishes `Reconnecting { attempt, delay, cause }` and dials again after `delay`.
//! - It gives up when reconnection is disabled, when the server's TLS certificate is refused,
//!   when the server closed with a code in
//!   [`final_close_codes`](crate::config::ReconnectPolicy::final_close_codes), when the upgrade
//!   was refused with a status in
//!   [`final_http_statuses`](crate::config::ReconnectPolicy::final_http_statuses), or after
//!   [`max_attempts`](crate::config::ReconnectPolicy::max_attempts) failures in a row.
//! - The attempt counter goes back to zero only once a connection has stayed up for
//!   [`stable_after`](crate::config::ReconnectPolicy::stable_after), so a server that accepts
//!   and drops at once still sees growing delays.
//! - With a [token provider](crate::config::ClientConfig::token_provider), a 401 refusing the
//!   upgrade or a close with 4001 is retried at once (a zero delay), with a new token, unless
//!   the previous retry was already such an immediate one (see
//!   [`ReconnectPolicy`]'s "Token provider"); 4001 is then never a final code.
//! - The user's [`close`](super::Client::close) never reconnects: state `Closed`.
//! - On every connection, the on-connect messages go out first, in registration order, then the
//!   messages that waited in the outbox, in their order (the Connection sees to it).
//!
//! # One owner
//!
//! The supervisor is the one place the connection's lifecycle lives: it alone decides (dial,
//! wait, give up, close) and publishes [`ConnectionState`]s. The Connection owns only the socket
//! of the moment; it is told `Dial`, `CloseSocket` and `Stop`, and tells back
//! `Established`, `ConnectFailed` and `Lost`. Nobody asks anybody for state.
//!
//! Not guaranteed: messages in the batch being written when a socket is lost may or may not
//! have reached the peer (they are counted dropped, not resent; see the outbox's accounting
//! rule); requests pending at the loss fail with [`Error::ConnectionLost`] rather than being
//! resent.

use crate::client::census::{CensusEntry, Counted};
use std::sync::Arc;
use std::time::Instant;

use actix::prelude::*;

use super::connection::{CloseSocket, Connection, Dial, Stop};
use super::heartbeat::{self, Heartbeat};
use super::router::{PublishState, Router};
use super::state::{ClientShared, ConnectionState};
use crate::config::ReconnectPolicy;
use crate::error::Error;
use crate::ws::close::TOKEN_EXPIRED;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Connecting,
    Connected,
    Waiting,
    Closing,
    Done,
}

/// The ReconnectSupervisor actor of one client. See the [module docs](self).
pub(crate) struct ReconnectSupervisor {
    /// Counted in the process-wide [`census`](crate::client::census) while alive.
    _live: Counted,
    policy: ReconnectPolicy,
    shared: Arc<ClientShared>,
    connection: Addr<Connection>,
    router: Addr<Router>,
    heartbeat: Option<Addr<Heartbeat>>,
    rng: fastrand::Rng,
    /// Failed attempts since the last stable connection.
    attempt: u32,
    phase: Phase,
    connected_once: bool,
    /// Bumped on every connection, so a stale "stable" timer does nothing.
    epoch: u64,
    connected_at: Option<Instant>,
    retry: Option<SpawnHandle>,
    /// The timer that resets the attempt counter once a connection has been up long enough.
    stable: Option<SpawnHandle>,
    /// A socket is open (between `Established` and `Lost`): only then is a loss a
    /// `Disconnected`.
    socket_open: bool,
    /// The config has a token provider: each attempt dials with a fresh token, so a 401 or a
    /// 4001 is worth an immediate retry.
    fresh_tokens: bool,
    /// The last retry was an immediate one for a stale token, and no connection has been
    /// stable since: a second 401 or 4001 takes the ordinary path (no storm of retries).
    token_retried: bool,
}

impl ReconnectSupervisor {
    pub(crate) fn new(
        policy: ReconnectPolicy,
        shared: Arc<ClientShared>,
        connection: Addr<Connection>,
        router: Addr<Router>,
        heartbeat: Option<Addr<Heartbeat>>,
        fresh_tokens: bool,
    ) -> Self {
        let rng = match policy.jitter_seed {
            Some(seed) => fastrand::Rng::with_seed(seed),
            None => fastrand::Rng::new(),
        };
        Self {
            _live: Counted::new(CensusEntry::Actor),
            policy,
            shared,
            connection,
            router,
            heartbeat,
            rng,
            attempt: 0,
            phase: Phase::Connecting,
            connected_once: false,
            epoch: 0,
            connected_at: None,
            retry: None,
            stable: None,
            socket_open: false,
            fresh_tokens,
            token_retried: false,
        }
    }

    fn publish(&self, state: ConnectionState) {
        self.shared.set_state(state.clone());
        self.router.do_send(PublishState(state));
    }

    fn dial(&mut self) {
        self.phase = Phase::Connecting;
        self.publish(ConnectionState::Connecting {
            attempt: self.attempt,
        });
        self.connection.do_send(Dial);
    }

    /// End for good: publish the terminal state and stop every actor of the client.
    fn finish(&mut self, ctx: &mut Context<Self>, state: ConnectionState) {
        if self.phase == Phase::Done {
            return;
        }
        self.phase = Phase::Done;
        if let Some(h) = self.retry.take() {
            ctx.cancel_future(h);
        }
        match &state {
            ConnectionState::Failed { reason } => {
                tracing::warn!(connection = %self.shared.name, %reason, "giving up on the connection")
            }
            _ => tracing::info!(connection = %self.shared.name, "client closed"),
        }
        self.publish(state);
        self.connection.do_send(Stop);
        if let Some(hb) = &self.heartbeat {
            hb.do_send(heartbeat::Stop);
        }
        ctx.stop();
    }

    /// Whether a failure that a new token may cure (a 401, a 4001) is retried at once: only with
    /// a token provider, and not right after another such retry.
    fn retry_at_once(&self, stale_token: bool) -> bool {
        stale_token && self.fresh_tokens && !self.token_retried && self.phase != Phase::Closing
    }

    /// Decide what to do after a failed attempt or a lost connection.
    /// `cause` says what failed (the connect error, or the close code and reason); it ends up in
    /// the `Failed` reason when reconnection is disabled. With `at_once` (a stale token, see
    /// [`retry_at_once`](Self::retry_at_once)) the retry has no delay.
    fn after_failure(
        &mut self,
        ctx: &mut Context<Self>,
        final_reason: Option<String>,
        cause: String,
        at_once: bool,
    ) {
        if self.phase == Phase::Closing {
            return self.finish(ctx, ConnectionState::Closed);
        }
        if let Some(reason) = final_reason {
            return self.finish(ctx, ConnectionState::Failed { reason });
        }
        if !self.policy.enabled {
            return self.finish(
                ctx,
                ConnectionState::Failed {
                    reason: format!("{cause} (reconnection is disabled)"),
                },
            );
        }
        if let Some(max) = self.policy.max_attempts {
            if self.attempt >= max {
                return self.finish(
                    ctx,
                    ConnectionState::Failed {
                        reason: format!("gave up after {max} reconnect attempts"),
                    },
                );
            }
        }
        let (delay, cause) = if at_once {
            tracing::info!(connection = %self.shared.name, %cause, "the token is stale; reconnecting at once with a new one");
            (
                std::time::Duration::ZERO,
                format!("{cause}; retrying at once with a new token"),
            )
        } else {
            (self.policy.delay(self.attempt, &mut self.rng), cause)
        };
        self.token_retried = at_once;
        self.attempt = self.attempt.saturating_add(1);
        self.phase = Phase::Waiting;
        tracing::info!(connection = %self.shared.name, attempt = self.attempt, delay_ms = delay.as_millis() as u64, "reconnecting");
        self.publish(ConnectionState::Reconnecting {
            attempt: self.attempt,
            delay,
            cause,
        });
        self.retry = Some(ctx.run_later(delay, |act, _| {
            act.retry = None;
            if act.phase == Phase::Waiting {
                act.dial();
            }
        }));
    }
}

impl Actor for ReconnectSupervisor {
    type Context = Context<Self>;

    fn started(&mut self, _: &mut Context<Self>) {
        self.dial();
    }
}

/// Sent by the Connection when a socket opened (its on-connect messages are queued first).
#[derive(Message)]
#[rtype(result = "()")]
pub(crate) struct Established;

/// Handler for [`Established`]: publish `Connected` and arm the timer that resets the attempt
/// counter once the connection is stable.
impl Handler<Established> for ReconnectSupervisor {
    type Result = ();
    fn handle(&mut self, _: Established, ctx: &mut Context<Self>) {
        if self.phase == Phase::Done {
            return;
        }
        self.socket_open = true;
        if self.phase == Phase::Closing {
            // close() arrived while dialling: the new socket is closed at once.
            self.connection.do_send(CloseSocket {
                code: 1000,
                reason: "closed by the client",
                last: true,
            });
            return;
        }
        if self.connected_once {
            ClientShared::add(&self.shared.counts.reconnects, 1);
        }
        self.connected_once = true;
        self.phase = Phase::Connected;
        self.epoch += 1;
        self.connected_at = Some(Instant::now());
        let epoch = self.epoch;
        self.stable = Some(ctx.run_later(self.policy.stable_after, move |act, _| {
            act.stable = None;
            if act.epoch == epoch && act.phase == Phase::Connected {
                act.attempt = 0;
                act.token_retried = false;
            }
        }));
        self.publish(ConnectionState::Connected);
    }
}

/// Sent by the Connection when a connect attempt failed.
#[derive(Message)]
#[rtype(result = "()")]
pub(crate) struct ConnectFailed {
    pub(crate) error: Error,
}

/// Handler for [`ConnectFailed`].
impl Handler<ConnectFailed> for ReconnectSupervisor {
    type Result = ();
    fn handle(&mut self, msg: ConnectFailed, ctx: &mut Context<Self>) {
        if self.phase == Phase::Done {
            return;
        }
        let at_once = self.retry_at_once(matches!(
            msg.error,
            Error::HandshakeRejected { status: 401, .. }
        ));
        let final_reason = match &msg.error {
            // Retried at once with a new token; a second 401 in a row is judged below.
            _ if at_once => None,
            Error::HandshakeRejected { status, .. }
                if self.policy.final_http_statuses.contains(status) =>
            {
                Some(msg.error.to_string())
            }
            // A refused certificate stays refused, a failing token provider keeps failing: no
            // reconnect loop.
            Error::Certificate { .. } | Error::TokenProvider { .. } => Some(msg.error.to_string()),
            _ => None,
        };
        tracing::debug!(connection = %self.shared.name, error = %msg.error, "connect attempt failed");
        let cause = match &msg.error {
            Error::ConnectFailed { reason, .. } => reason.clone(),
            other => other.to_string(),
        };
        self.after_failure(ctx, final_reason, cause, at_once);
    }
}

/// Sent by the Connection when the open socket was lost or closed (or when told to close with
/// no socket open).
#[derive(Message)]
#[rtype(result = "()")]
pub(crate) struct Lost {
    pub(crate) code: u16,
    pub(crate) reason: String,
}

/// Handler for [`Lost`].
impl Handler<Lost> for ReconnectSupervisor {
    type Result = ();
    fn handle(&mut self, msg: Lost, ctx: &mut Context<Self>) {
        if self.phase == Phase::Done {
            return;
        }
        let was_connected = std::mem::take(&mut self.socket_open);
        self.connected_at = None;
        if let Some(h) = self.stable.take() {
            ctx.cancel_future(h);
        }
        if was_connected {
            self.publish(ConnectionState::Disconnected {
                code: msg.code,
                reason: msg.reason.clone(),
            });
        }
        // With a token provider, 4001 (token expired) means "come back with a new token": never
        // final, whatever the policy's final codes say.
        let expired = msg.code == TOKEN_EXPIRED;
        let at_once = self.retry_at_once(expired);
        let final_reason = (self.phase != Phase::Closing
            && !(expired && self.fresh_tokens)
            && self.policy.is_final_close_code(msg.code))
        .then(|| format!("server closed with final code {}: {}", msg.code, msg.reason));
        let cause = format!("connection lost with code {}: {}", msg.code, msg.reason);
        self.after_failure(ctx, final_reason, cause, at_once);
    }
}

/// Sent by a [`Client`](super::Client) handle: `close()`, or the last handle was dropped.
#[derive(Message)]
#[rtype(result = "()")]
pub(crate) struct Close;

/// Handler for [`Close`]: close the socket with 1000, or stop waiting; then `Closed`.
impl Handler<Close> for ReconnectSupervisor {
    type Result = ();
    fn handle(&mut self, _: Close, ctx: &mut Context<Self>) {
        match self.phase {
            Phase::Done | Phase::Closing => {}
            Phase::Waiting => self.finish(ctx, ConnectionState::Closed),
            Phase::Connecting | Phase::Connected => {
                self.phase = Phase::Closing;
                self.connection.do_send(CloseSocket {
                    code: 1000,
                    reason: "closed by the client",
                    last: true,
                });
            }
        }
    }
}
