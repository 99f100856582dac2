//! Sessions that came with a token: what a verified token grants (its `sub`, `exp`, `info` and
//! `rooms`), why a token is refused (in one line, and as a metric label), where an upgrade
//! request carries its token, and when a session is told its token is expiring. Independent of
//! how tokens are checked, so that sessions need no JWT library: [`JwtConfig`] (feature `jwt`,
//! `jwt.rs`) is one checker, installed with [`Rooms::with_jwt`](super::Rooms::with_jwt).
//!
//! [`JwtConfig`]: crate::config::JwtConfig

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use actix_web::http::header;
use actix_web::HttpRequest;
use serde_json::value::RawValue;

/// Most bytes the `info` claim may take as JSON text: it travels with the session's presence to
/// every member of its rooms, so a token cannot make it large.
pub const MAX_INFO_BYTES: usize = crate::protocol::MAX_PRESENCE_INFO_BYTES;

/// How long before `exp` a session is sent `token_expiring` (for a token with less than twice
/// this left when it arrives, the notice comes at half its remaining life instead).
pub const EXPIRY_NOTICE: Duration = Duration::from_secs(30);

/// What a verified token lets a session be and do.
#[derive(Debug, Clone)]
pub(crate) struct TokenGrant {
    /// The `sub` claim: the session's identity (shown as `from`), if the token named one.
    pub(crate) sub: Option<String>,
    /// The `exp` claim: the session is closed with 4001 at this time unless it refreshes.
    pub(crate) exp: SystemTime,
    /// The `info` claim (at most [`MAX_INFO_BYTES`] of JSON): what presence shows of the
    /// session, in place of what its joins say.
    pub(crate) info: Option<Arc<RawValue>>,
    /// The `rooms` claim: which rooms the session may join; `None` (no claim) is any room.
    pub(crate) rooms: Option<RoomGrant>,
}

/// The rooms a token lets its session join: exact names, and prefixes written with a trailing
/// `*` (`"chat.*"` is every room whose name starts with `chat.`; `"*"` alone is any room).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct RoomGrant {
    exact: Vec<String>,
    prefixes: Vec<String>,
}

impl RoomGrant {
    /// The grant a `rooms` claim lists.
    pub(crate) fn new(patterns: Vec<String>) -> Self {
        let mut grant = RoomGrant::default();
        for pattern in patterns {
            match pattern.strip_suffix('*') {
                Some(prefix) => grant.prefixes.push(prefix.to_owned()),
                None => grant.exact.push(pattern),
            }
        }
        grant
    }

    /// Whether `room` is one of the exact names or starts with one of the prefixes.
    pub(crate) fn allows(&self, room: &str) -> bool {
        self.exact.iter().any(|r| r == room) || self.prefixes.iter().any(|p| room.starts_with(&**p))
    }
}

/// Why a token was refused: the metric label of each reason is [`label`](Self::label).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum RefusalReason {
    /// No token in the `Authorization` header or the `token` query parameter.
    Missing,
    /// Not a JWT (three base64url parts with JSON inside), or an `Authorization` header that is
    /// not `Bearer <token>`.
    Malformed,
    /// Signed with an algorithm this server does not take for its key (`none` included).
    Algorithm,
    /// Names a `kid` the key set does not hold, or none where the set has several keys.
    UnknownKey,
    /// The signature does not verify.
    Signature,
    /// Past its `exp`.
    Expired,
    /// Before its `nbf`.
    NotYetValid,
    /// Not for this audience (`aud`).
    Audience,
    /// Not from this issuer (`iss`).
    Issuer,
    /// A claim is missing (`exp`) or has the wrong shape (`sub`, `rooms`, an `info` over 1 KiB).
    Claims,
}

impl RefusalReason {
    /// Every reason, in the order of the counters.
    pub(crate) const ALL: [RefusalReason; 10] = [
        RefusalReason::Missing,
        RefusalReason::Malformed,
        RefusalReason::Algorithm,
        RefusalReason::UnknownKey,
        RefusalReason::Signature,
        RefusalReason::Expired,
        RefusalReason::NotYetValid,
        RefusalReason::Audience,
        RefusalReason::Issuer,
        RefusalReason::Claims,
    ];

    /// The `reason` label of `wsm_server_auth_refusals_total`.
    pub(crate) fn label(self) -> &'static str {
        match self {
            RefusalReason::Missing => "missing",
            RefusalReason::Malformed => "malformed",
            RefusalReason::Algorithm => "algorithm",
            RefusalReason::UnknownKey => "unknown_key",
            RefusalReason::Signature => "signature",
            RefusalReason::Expired => "expired",
            RefusalReason::NotYetValid => "not_yet_valid",
            RefusalReason::Audience => "audience",
            RefusalReason::Issuer => "issuer",
            RefusalReason::Claims => "claims",
        }
    }

    /// Its index in [`ALL`](Self::ALL) (and in the counters).
    pub(crate) fn index(self) -> usize {
        Self::ALL.iter().position(|r| *r == self).unwrap_or(0)
    }
}

/// A refused token: why, and one line for the HTTP 401 body or the `bad_token` error.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct TokenRefusal {
    pub(crate) reason: RefusalReason,
    pub(crate) message: String,
}

impl TokenRefusal {
    pub(crate) fn new(reason: RefusalReason, message: impl Into<String>) -> Self {
        Self {
            reason,
            message: message.into(),
        }
    }
}

/// Checks one token: what it grants, or why it is refused. A plain function, so that the
/// session can check a `refresh` the same way admission checked the first token.
pub(crate) type TokenCheck =
    Arc<dyn Fn(&str) -> Result<TokenGrant, TokenRefusal> + Send + Sync + 'static>;

/// The token an upgrade request carries: `Authorization: Bearer T`, else the `token` query
/// parameter (browsers cannot set headers on a WebSocket). An `Authorization` header that is
/// not a bearer token is refused rather than passed over for the query.
pub(crate) fn token_of(req: &HttpRequest) -> Result<String, TokenRefusal> {
    if let Some(value) = req.headers().get(header::AUTHORIZATION) {
        let bearer = value.to_str().ok().and_then(|v| {
            let (scheme, token) = v.trim().split_once(' ')?;
            let token = token.trim();
            (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
        });
        return match bearer {
            Some(token) => Ok(token.to_owned()),
            None => Err(TokenRefusal::new(
                RefusalReason::Malformed,
                "the Authorization header is not \"Bearer <token>\"",
            )),
        };
    }
    let query = actix_web::web::Query::<Vec<(String, String)>>::from_query(req.query_string());
    let token = query
        .ok()
        .and_then(|q| q.into_inner().into_iter().find(|(k, _)| k == "token"))
        .map(|(_, v)| v)
        .filter(|v| !v.is_empty());
    token.ok_or_else(|| {
        TokenRefusal::new(
            RefusalReason::Missing,
            "no token: send \"Authorization: Bearer <token>\" or the token query parameter",
        )
    })
}

/// What a session with a token does next, and when.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ExpiryStep {
    /// Send `token_expiring` now, saying the token has `in_ms` left; then wait for `exp`.
    Notify { in_ms: u64 },
    /// Nothing yet: look again after this long.
    Wait(Duration),
    /// `exp` has passed: close with 4001.
    Expired,
}

/// The session's next step at `now` for a token that expires at `exp`, given whether it was
/// already told. The notice goes [`EXPIRY_NOTICE`] before `exp`, or, for a token that had less
/// than twice that left when it arrived (`received`), at half of what it had left. Waits are
/// capped at 365 days (a token that lives longer is looked at again then), so no timer
/// arithmetic can overflow, whatever `exp` a token carries.
pub(crate) fn next_step(
    now: SystemTime,
    received: SystemTime,
    exp: SystemTime,
    notified: bool,
) -> ExpiryStep {
    let Ok(left) = exp.duration_since(now) else {
        return ExpiryStep::Expired;
    };
    if left.is_zero() {
        return ExpiryStep::Expired;
    }
    let life = exp.duration_since(received).unwrap_or(Duration::ZERO);
    let lead = if life >= EXPIRY_NOTICE * 2 {
        EXPIRY_NOTICE
    } else {
        life / 2
    };
    let cap = crate::config::MAX_CONFIG_DURATION;
    if notified || left > lead {
        let until = if notified { left } else { left - lead };
        return ExpiryStep::Wait(until.min(cap));
    }
    let in_ms = u64::try_from(left.as_millis()).unwrap_or(u64::MAX);
    ExpiryStep::Notify { in_ms }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn room_grants_match_exact_names_and_prefixes() {
        let grant = RoomGrant::new(vec!["chat.*".into(), "lobby".into()]);
        assert!(grant.allows("chat.general"));
        assert!(grant.allows("lobby"));
        assert!(!grant.allows("lobby2"));
        assert!(!grant.allows("admin"));
        assert!(!grant.allows("chat"));
        assert!(RoomGrant::new(vec!["*".into()]).allows("anything"));
        assert!(!RoomGrant::new(vec![]).allows("anything"));
    }

    #[test]
    fn the_notice_comes_thirty_seconds_early_or_at_half_life() {
        let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
        let secs = Duration::from_secs;
        // A ten-minute token: wait until 30 s before exp, then notify, then wait for exp.
        let exp = t0 + secs(600);
        assert_eq!(next_step(t0, t0, exp, false), ExpiryStep::Wait(secs(570)));
        let step = next_step(t0 + secs(570), t0, exp, false);
        assert_eq!(step, ExpiryStep::Notify { in_ms: 30_000 });
        let step = next_step(t0 + secs(570), t0, exp, true);
        assert_eq!(step, ExpiryStep::Wait(secs(30)));
        assert_eq!(next_step(exp, t0, exp, true), ExpiryStep::Expired);
        // A two-second token: the notice at one second.
        let exp = t0 + secs(2);
        assert_eq!(next_step(t0, t0, exp, false), ExpiryStep::Wait(secs(1)));
        let step = next_step(t0 + secs(1), t0, exp, false);
        assert_eq!(step, ExpiryStep::Notify { in_ms: 1000 });
        // A token past its exp, and one for the year 30000: no overflow, capped waits.
        assert_eq!(
            next_step(exp + secs(1), t0, exp, false),
            ExpiryStep::Expired
        );
        let far = SystemTime::UNIX_EPOCH + secs(900_000_000_000);
        let step = next_step(t0, t0, far, false);
        assert_eq!(step, ExpiryStep::Wait(crate::config::MAX_CONFIG_DURATION));
    }
}
