//! A session's token (JWT authentication): the expiry schedule (`token_expiring` ahead of
//! `exp`, then the close with 4001 at `exp`) and `refresh`, which replaces the token with a new
//! one for the same `sub`. The timer is the actor's own, which nothing a client does can stall
//! (see the module docs of `session`).

use std::time::SystemTime;

use actix::prelude::*;

use super::protocol::envelope;
use super::Session;
use crate::envelope::{Head, WireMessage};
use crate::protocol::{self, codes};
use crate::server::token::{next_step, ExpiryStep, TokenCheck, TokenGrant};
use crate::ws::close;

/// What a session holds of its token.
pub(crate) struct SessionToken {
    /// What the current token grants; replaced by each successful `refresh`.
    pub(crate) grant: TokenGrant,
    /// When the current token arrived: the notice of a short token comes at half of the life
    /// it had left then.
    received: SystemTime,
    /// Whether `token_expiring` went out for the current token.
    notified: bool,
    /// The pending look at the expiry, cancelled when a refresh moves `exp`.
    timer: Option<SpawnHandle>,
    /// Checks a `refresh`'s token the way admission checked the first one.
    check: TokenCheck,
}

impl SessionToken {
    /// The token a session was admitted with, and the check for its refreshes.
    pub(crate) fn new(grant: TokenGrant, check: TokenCheck) -> Self {
        SessionToken {
            grant,
            received: SystemTime::now(),
            notified: false,
            timer: None,
            check,
        }
    }
}

impl Session {
    /// Look at the token's expiry now and act on it: send `token_expiring`, wait, or close with
    /// 4001 at `exp`. Called when the session starts, after each wait and after a refresh.
    pub(super) fn watch_token(&mut self, ctx: &mut Context<Self>) {
        if !self.phase.is_open() {
            return;
        }
        let Some(token) = self.token.as_mut() else {
            return;
        };
        if let Some(timer) = token.timer.take() {
            ctx.cancel_future(timer);
        }
        let now = SystemTime::now();
        match next_step(now, token.received, token.grant.exp, token.notified) {
            ExpiryStep::Wait(delay) => {
                token.timer = Some(ctx.run_later(delay, |act, ctx| act.watch_token(ctx)));
            }
            ExpiryStep::Notify { in_ms } => {
                token.notified = true;
                let data = protocol::TokenExpiring { in_ms };
                let raw = serde_json::value::to_raw_value(&data).ok();
                let notice = envelope(protocol::TokenExpiring::TYPE, None, None, raw.as_deref());
                tracing::debug!(session = %self.name, in_ms, "token expiring");
                self.send(notice, ctx);
                self.watch_token(ctx);
            }
            ExpiryStep::Expired => {
                self.shared.counters.token_expiry_closes.bump();
                tracing::info!(session = %self.name, identity = ?self.identity, "token expired");
                self.close(close::TOKEN_EXPIRED, "token expired", ctx);
            }
        }
    }

    /// `refresh`: a new token for the same `sub` replaces the current one (its `exp`, `rooms`
    /// and `info`); answered `refreshed`, or `bad_token` with the session's token unchanged.
    /// Rooms the session is already in stay joined; the new `rooms` claim applies to joins
    /// from now on.
    pub(super) fn on_refresh(&mut self, head: &Head<'_>, ctx: &mut Context<Self>) {
        let id = head.id;
        let outcome = self.refreshed_grant(head);
        let Some(token) = self.token.as_mut() else {
            return self.error(id, codes::BAD_TOKEN, "this server takes no tokens", ctx);
        };
        match outcome {
            Ok(grant) => {
                token.grant = grant;
                token.received = SystemTime::now();
                token.notified = false;
                self.shared.counters.token_refreshes.bump();
                tracing::debug!(session = %self.name, "token refreshed");
                let reply = envelope(protocol::Refreshed::TYPE, id, None, None);
                self.send(reply, ctx);
                self.watch_token(ctx);
            }
            Err(why) => {
                self.shared.counters.token_refresh_failures.bump();
                tracing::debug!(session = %self.name, "refresh refused: {why}");
                self.error(id, codes::BAD_TOKEN, &why, ctx);
            }
        }
    }

    /// What the `refresh` in `head` grants, or why it is refused.
    fn refreshed_grant(&self, head: &Head<'_>) -> Result<TokenGrant, String> {
        let Some(token) = self.token.as_ref() else {
            return Err("this server takes no tokens".into());
        };
        let refresh = head
            .data
            .and_then(|raw| serde_json::from_str::<protocol::Refresh>(raw.get()).ok())
            .ok_or("refresh needs data {\"token\":T} with the new token")?;
        let grant = (token.check)(&refresh.token).map_err(|refusal| refusal.message)?;
        if grant.sub != token.grant.sub {
            return Err(format!(
                "the new token is for sub {:?}, this session is {:?}",
                grant.sub, token.grant.sub
            ));
        }
        Ok(grant)
    }
}
