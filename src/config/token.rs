//! [`TokenProvider`]: where a client gets the bearer token it connects with, fresh for every
//! connect attempt (see [`ClientConfig::token_provider`](super::ClientConfig::token_provider)).

use std::fmt::Display;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use futures_util::future::LocalBoxFuture;
use futures_util::FutureExt;

/// What the boxed provider returns: the token, or why there is none, in words.
type Fetch = LocalBoxFuture<'static, Result<String, String>>;

/// An async function that answers a bearer token (a JWT, typically) for the server, or an error.
///
/// The client calls it before *every* connect attempt (the first connection and each reconnect)
/// and when the server says the token is about to expire (`token_expiring`), so a token is
/// never older than the attempt that carries it: a provider that caches tokens and renews them
/// near their expiry is the provider's business, the client just asks. The token goes in the
/// upgrade request's `Authorization: Bearer T` header, in place of any `Authorization` header
/// of [`ClientConfig::headers`](super::ClientConfig::headers). Whitespace around the token is
/// trimmed (a token read from a file usually ends with a newline); an empty token is an error.
///
/// The future runs on the connection's arbiter (it need not be `Send`); the function itself is
/// `Send + Sync` because a config travels to the arbiter a
/// [`Manager`](crate::client::Manager) picks. Cloning the provider shares the function (an
/// `Arc`), so every connection made from one config calls the same function; each calls it for
/// itself, before each of its own attempts.
///
/// A provider error is final for a connect attempt: the client ends in `Failed` with the
/// provider's reason (`token provider failed: ...`) rather than dial without credentials or
/// retry a broken credential source in a loop. A provider that should ride out a flaky token
/// service retries inside its future. A provider that has not answered within
/// [`connect_timeout`](super::ClientConfig::connect_timeout) counts as failed, so a hung token
/// service cannot hold a client in `Connecting` for ever.
#[derive(Clone)]
pub struct TokenProvider {
    fetch: Arc<dyn Fn() -> Fetch + Send + Sync>,
}

/// Shows no token (there is none to show until it is called, and tokens are secrets).
impl std::fmt::Debug for TokenProvider {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TokenProvider(..)")
    }
}

impl TokenProvider {
    /// A provider from an async function; its error is kept in words (`Display`).
    ///
    /// ```
    /// use actix_ws_manager::config::TokenProvider;
    /// let provider = TokenProvider::new(|| async {
    ///     // Ask the identity service here.
    ///     Ok::<_, std::io::Error>("eyJhbGciOi...".to_owned())
    /// });
    /// # let _ = provider;
    /// ```
    pub fn new<F, Fut, E>(provider: F) -> Self
    where
        F: Fn() -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<String, E>> + 'static,
        E: Display,
    {
        Self {
            fetch: Arc::new(move || {
                provider()
                    .map(|res| res.map_err(|e| e.to_string()))
                    .boxed_local()
            }),
        }
    }

    /// Call the provider; its answer within `within`, or why there is none, in words (never the
    /// token). A token that cannot travel in an HTTP header (control characters) is an error too,
    /// so that it fails here, named, rather than as a puzzling handshake failure.
    pub(crate) fn fetch(&self, within: Duration) -> Fetch {
        let fetch = (self.fetch)();
        async move {
            let token = match actix_rt::time::timeout(within, fetch).await {
                Err(_) => return Err(format!("no token within {within:?}")),
                Ok(answer) => answer?,
            };
            let token = token.trim().to_owned();
            if token.is_empty() {
                return Err("the token is empty".into());
            }
            if actix_http::header::HeaderValue::from_str(&bearer(&token)).is_err() {
                return Err(
                    "the token cannot travel in an HTTP header (it has control characters)".into(),
                );
            }
            Ok(token)
        }
        .boxed_local()
    }
}

/// The `Authorization` header value for `token`.
pub(crate) fn bearer(token: &str) -> String {
    format!("Bearer {token}")
}
