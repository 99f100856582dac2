//! A session's rate limit: a token bucket per session
//! ([`rate_limit`](crate::config::ServerConfig::rate_limit)) and what the session does past it.

use std::time::Instant;

use actix::Context;

use super::{Mode, Session};
use crate::config::RateLimit;
use crate::protocol::codes;
use crate::ws::close;

/// A session's token bucket (see [`RateLimit`]).
pub(super) struct Bucket {
    tokens: f64,
    last: Instant,
    per_second: f64,
    burst: f64,
}

/// What the bucket says about one message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Verdict {
    /// Within the limit.
    Pass,
    /// Past the limit: refuse it (`rate_limited`), the session stays.
    Refuse,
    /// `burst` messages past the limit: close with 1008.
    Close,
}

impl Bucket {
    pub(super) fn new(limit: RateLimit) -> Self {
        Self {
            tokens: f64::from(limit.burst),
            last: Instant::now(),
            per_second: f64::from(limit.per_second),
            burst: f64::from(limit.burst),
        }
    }

    /// Take a token for one message. Refused messages take one too (the bucket goes into
    /// debt), so a client must actually slow down to be served again.
    fn take(&mut self) -> Verdict {
        let now = Instant::now();
        let refill = now.duration_since(self.last).as_secs_f64() * self.per_second;
        self.last = now;
        self.tokens = (self.tokens + refill).min(self.burst) - 1.0;
        if self.tokens >= 0.0 {
            Verdict::Pass
        } else if self.tokens < -self.burst {
            Verdict::Close
        } else {
            Verdict::Refuse
        }
    }
}
impl Session {
    /// Apply the rate limit to one whole message; answers whether to handle it. `id` is the
    /// request id to refuse it with, when known.
    pub(super) fn admit(&mut self, id: Option<u64>, ctx: &mut Context<Self>) -> bool {
        let Some(bucket) = self.bucket.as_mut() else {
            return true;
        };
        let counters = &self.shared.counters;
        match bucket.take() {
            Verdict::Pass => true,
            Verdict::Refuse => {
                counters.rate_limited.bump();
                if self.mode == Mode::Rooms {
                    self.error(
                        id,
                        codes::RATE_LIMITED,
                        "rate limit exceeded; slow down",
                        ctx,
                    );
                }
                false
            }
            Verdict::Close => {
                counters.rate_limit_disconnects.bump();
                tracing::info!(session = %self.name, "rate limit: still sending at twice the burst; closing");
                self.close(close::POLICY, "rate limit exceeded", ctx);
                false
            }
        }
    }
}
