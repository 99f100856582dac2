//! Token refresh in place: the server's `token_expiring` is answered with a `refresh` that
//! carries a new token from the config's [`TokenProvider`], sent as a request (the reply is
//! `refreshed`, or an error with code `bad_token`). Each outcome is traced and published as an
//! [`Event::TokenRefresh`].
//!
//! One refresh at a time: a `token_expiring` that arrives while one is under way is left to it.
//! A refresh started on a connection that is lost before its `refresh` is queued is dropped
//! (reported as failed): the next connection dials with a fresh token anyway, so sending it
//! there would only ask the server to verify the same thing twice.

use std::time::Duration;

use actix::prelude::*;

use super::requests::RequestFrame;
use super::sink::fan_out;
use super::Router;
use crate::client::state::{ClientShared, Event};
use crate::config::TokenProvider;
use crate::envelope::{Head, Outgoing, WireMessage};
use crate::protocol::{Refresh, Refreshed, TokenExpiring};

/// How long a refresh may take, the provider's part and the server's answer each: past it the
/// refresh counts as failed. The server sends `token_expiring` 30 s before the expiry (or at half
/// the life of a short token), so this leaves time for the close-and-reconnect path.
pub const REFRESH_TIMEOUT: Duration = Duration::from_secs(10);

/// The Router's part of token refresh: the provider, and whether a refresh is under way.
pub(super) struct Refresher {
    provider: TokenProvider,
    busy: bool,
}

impl Refresher {
    pub(super) fn new(provider: TokenProvider) -> Self {
        Self {
            provider,
            busy: false,
        }
    }
}

impl Router {
    /// If `head` is `token_expiring` and the client has a token provider, start a refresh.
    /// Answers whether it did (or one was under way already); subscribers of
    /// [`TokenExpiring`] get the message too.
    pub(super) fn on_token_expiring(&mut self, head: &Head<'_>, ctx: &mut Context<Self>) -> bool {
        if head.kind != TokenExpiring::TYPE {
            return false;
        }
        let Some(refresher) = self.refresher.as_mut() else {
            return false;
        };
        let in_ms = head.data_as::<TokenExpiring>().ok().map(|t| t.in_ms);
        if refresher.busy {
            tracing::debug!(connection = %self.shared.name, ?in_ms, "token expiring; a refresh is under way already");
            return true;
        }
        refresher.busy = true;
        tracing::info!(connection = %self.shared.name, ?in_ms, "token expiring; refreshing it");
        let link = self.link;
        let fetch = refresher.provider.fetch(REFRESH_TIMEOUT);
        ctx.spawn(
            fetch
                .into_actor(self)
                .map(move |token, act, ctx| match token {
                    Ok(_) if act.link != link => act.refresh_done(
                        Err("the connection was lost before the refresh was sent".into()),
                        ctx,
                    ),
                    Ok(token) => act.send_refresh(token, ctx),
                    Err(reason) => {
                        act.refresh_done(Err(format!("token provider failed: {reason}")), ctx)
                    }
                }),
        );
        true
    }

    /// Queue `{"type":"refresh","id":N,"data":{"token":T}}` as a request and wait for its reply.
    fn send_refresh(&mut self, token: String, ctx: &mut Context<Self>) {
        let out = match Outgoing::new(&Refresh { token }) {
            Ok(out) => out,
            Err(e) => return self.refresh_done(Err(e.to_string()), ctx),
        };
        let reply = match self.register_request(RequestFrame::Envelope(out), REFRESH_TIMEOUT, ctx) {
            Ok(reply) => reply,
            Err(e) => return self.refresh_done(Err(format!("refresh not sent: {e}")), ctx),
        };
        ctx.spawn(reply.into_actor(self).map(|answer, act, ctx| {
            let outcome = match answer {
                Ok(Ok(env)) if env.kind == Refreshed::TYPE => Ok(()),
                Ok(Ok(env)) => Err(format!("the server answered {:?}, not refreshed", env.kind)),
                Ok(Err(e)) => Err(e.to_string()),
                Err(_) => Err("the refresh was dropped".into()),
            };
            act.refresh_done(outcome, ctx);
        }));
    }

    /// The refresh has ended: trace it and publish an [`Event::TokenRefresh`].
    fn refresh_done(&mut self, outcome: Result<(), String>, ctx: &mut Context<Self>) {
        if let Some(r) = self.refresher.as_mut() {
            r.busy = false;
        }
        match &outcome {
            Ok(()) => tracing::info!(connection = %self.shared.name, "token refreshed"),
            Err(reason) => tracing::warn!(
                connection = %self.shared.name,
                %reason,
                "token refresh failed; at its expiry the server closes with 4001 and the client \
                 reconnects with a new token"
            ),
        }
        let reason = outcome.err();
        let full = fan_out(&mut self.events, &mut self.waits, None, |_| {
            Event::TokenRefresh {
                refreshed: reason.is_none(),
                reason: reason.clone(),
            }
        });
        if full > 0 {
            ClientShared::add(&self.shared.counts.dropped_incoming, full);
        }
        self.wait_for_subscribers(ctx);
    }
}
