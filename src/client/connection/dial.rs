//! Dialling: the awc client (connection pool, timeouts, TLS roots), the opening handshake with
//! the config's headers and subprotocols, and the words for a connect error.

use std::time::Duration;

use super::socket::{reframe, WsFramed};
use crate::config::ClientConfig;
use crate::error::{Error, Result};
use crate::ws::deflate::negotiate::{client_accept, client_offer};
use crate::ws::FrameCodec;
use awc::http::header::SEC_WEBSOCKET_EXTENSIONS;

/// An awc client whose connector has no connection limit (awc's default pool allows 100
/// connections per client and a WebSocket holds its permit for its whole life, so connection 101
/// would wait and time out), no timeouts of its own (ours apply), and, with the `rustls`
/// feature, `tls` for `wss://`.
fn awc_client(#[cfg(feature = "rustls")] tls: std::sync::Arc<rustls::ClientConfig>) -> awc::Client {
    let connector = awc::Connector::new()
        .limit(0)
        .timeout(Duration::from_secs(3600));
    #[cfg(feature = "rustls")]
    let connector = connector.rustls_0_23(tls);
    awc::Client::builder()
        .connector(connector)
        .disable_timeout()
        .finish()
}

/// The awc client for connections that trust the default roots only.
fn default_awc_client() -> awc::Client {
    #[cfg(feature = "rustls")]
    match crate::tls::client_config(&[]) {
        Ok(tls) => awc_client(tls),
        Err(e) => {
            // Cannot happen with the bundled roots; `wss://` then fails to connect, in words.
            tracing::error!("no TLS configuration for wss://: {e}");
            awc::Client::default()
        }
    }
    #[cfg(not(feature = "rustls"))]
    awc_client()
}

thread_local! {
    /// One awc client per thread (arbiter) for every connection that trusts only the default
    /// roots; a config with extra roots gets a client of its own.
    static AWC: awc::Client = default_awc_client();
}

/// A failed handshake in words: a refused certificate, a refused or unanswered connection, an
/// unresolvable host, or the HTTP status of a refused upgrade.
fn connect_error(url: String, e: awc::error::WsClientError) -> Error {
    use awc::error::{ConnectError, SendRequestError, WsClientError};
    // Where the URL points, for the words below.
    let (host, authority) = match url.parse::<awc::http::Uri>() {
        Ok(uri) => {
            let host = uri.host().unwrap_or_default().to_owned();
            let port = uri.port_u16().unwrap_or(match uri.scheme_str() {
                Some("wss") => 443,
                _ => 80,
            });
            let authority = format!("{host}:{port}");
            (host, authority)
        }
        Err(_) => (url.clone(), url.clone()),
    };
    #[cfg(feature = "rustls")]
    {
        // awc's errors do not expose their sources: the TLS error sits in the connect I/O error.
        let refusal = match &e {
            WsClientError::SendRequest(SendRequestError::Connect(ConnectError::Io(io))) => {
                crate::tls::certificate_refusal(io, &host)
            }
            other => crate::tls::certificate_refusal(other, &host),
        };
        if let Some(reason) = refusal {
            return Error::Certificate { url, reason };
        }
    }
    let reason = match e {
        WsClientError::InvalidResponseStatus(status) => {
            return Error::HandshakeRejected {
                url,
                status: status.as_u16(),
            }
        }
        WsClientError::SendRequest(SendRequestError::Connect(c)) => match c {
            ConnectError::Io(io) if io.kind() == std::io::ErrorKind::ConnectionRefused => {
                format!("connection refused by {authority} (nothing listens there)")
            }
            ConnectError::Io(io) => format!("cannot connect to {authority}: {io}"),
            ConnectError::Resolver(why) => format!("cannot resolve host {host}: {why}"),
            ConnectError::NoRecords | ConnectError::Unresolved => {
                format!("host {host} resolves to no address")
            }
            ConnectError::Timeout => format!("no answer from {authority} in time"),
            other => format!("cannot connect to {authority}: {other}"),
        },
        other => other.to_string(),
    };
    Error::ConnectFailed { url, reason }
}

/// The awc client of a connection whose config trusts extra TLS roots; `None` when it trusts the
/// default roots only (it then shares its thread's client).
pub(super) fn own_awc_client(config: &ClientConfig) -> Option<awc::Client> {
    // `connect` validated the config, so the roots parse.
    #[cfg(feature = "rustls")]
    let awc = (!config.tls_roots_pem.is_empty())
        .then(|| crate::tls::client_config(&config.tls_roots_pem).ok())
        .flatten()
        .map(awc_client);
    #[cfg(not(feature = "rustls"))]
    let awc = {
        let _ = config;
        None
    };
    awc
}

/// Open a socket to `url`: the opening handshake with the config's headers and subprotocols,
/// within [`connect_timeout`](ClientConfig::connect_timeout), through `own` or this thread's
/// shared awc client. The frame-header guard goes in front of awc's codec.
///
/// With a [token provider](ClientConfig::token_provider), the provider is asked first (within
/// the same timeout, counted separately) and its token replaces any `Authorization` header;
/// a provider that fails is [`Error::TokenProvider`], and nothing is dialled.
pub(super) fn handshake(
    url: &str,
    config: &ClientConfig,
    own: Option<&awc::Client>,
) -> impl std::future::Future<Output = Result<WsFramed, Error>> + 'static {
    let mut req = match own {
        Some(own) => own.ws(url),
        None => AWC.with(|c| c.ws(url)),
    }
    .max_frame_size(config.max_message_size);
    for (name, value) in &config.headers {
        req = req.header(name.as_str(), value.as_str());
    }
    if !config.protocols.is_empty() {
        req = req.protocols(&config.protocols);
    }
    if let Some(offer) = client_offer(&config.deflate) {
        req = req.header(SEC_WEBSOCKET_EXTENSIONS, offer);
    }
    let deflate = config.deflate.clone();
    let url = url.to_owned();
    let timeout = config.connect_timeout;
    let max = config.max_message_size;
    let token = config
        .token_provider
        .as_ref()
        .map(|provider| provider.fetch(timeout));
    async move {
        if let Some(token) = token {
            let token = token
                .await
                .map_err(|reason| Error::TokenProvider { reason })?;
            // `fetch` checked that the value is a valid header; `set_header` replaces the
            // user's `Authorization`, if any.
            req = req.set_header(
                awc::http::header::AUTHORIZATION,
                crate::config::bearer(&token),
            );
        }
        match actix_rt::time::timeout(timeout, req.connect()).await {
            Err(_) => Err(Error::ConnectFailed {
                url,
                reason: format!("no WebSocket handshake within {timeout:?}"),
            }),
            Ok(Err(e)) => Err(connect_error(url, e)),
            Ok(Ok((response, framed))) => {
                let answer = extension_answer(response.headers());
                let agreed = client_accept(&answer, &deflate).map_err(|why| {
                    // RFC 7692 section 5: the client fails the connection (the socket is
                    // dropped with `framed`).
                    Error::ConnectFailed {
                        url: url.clone(),
                        reason: format!("the server's permessage-deflate answer is refused: {why}"),
                    }
                })?;
                let deflater = agreed.as_ref().and_then(|a| a.deflater());
                Ok(reframe(
                    framed.into_map_codec(|codec| {
                        let codec = FrameCodec::wrap(codec, max);
                        match agreed {
                            Some(agreed) => codec.with_deflate(agreed.incoming()),
                            None => codec,
                        }
                    }),
                    deflater,
                ))
            }
        }
    }
}

/// Every `Sec-WebSocket-Extensions` value of the server's answer, joined as one list (a value
/// that is not visible ASCII is kept as such, so that the answer check refuses it).
fn extension_answer(headers: &awc::http::header::HeaderMap) -> String {
    let values: Vec<String> = headers
        .get_all(SEC_WEBSOCKET_EXTENSIONS)
        .map(|v| match v.to_str() {
            Ok(v) => v.to_owned(),
            Err(_) => String::from_utf8_lossy(v.as_bytes()).into_owned(),
        })
        .collect();
    values.join(", ")
}

/// Check a WebSocket URL without connecting: it must parse, have a host, and use `ws://` (or
/// `wss://`, with the `rustls` feature).
pub fn validate_url(url: &str) -> Result<()> {
    let bad = |reason: &str| Error::InvalidUrl {
        url: url.to_owned(),
        reason: reason.to_owned(),
    };
    let uri: awc::http::Uri = url
        .parse()
        .map_err(|e: awc::http::uri::InvalidUri| bad(&e.to_string()))?;
    match uri.scheme_str() {
        Some("ws") => {}
        #[cfg(feature = "rustls")]
        Some("wss") => {}
        #[cfg(not(feature = "rustls"))]
        Some("wss") => {
            return Err(bad(
                "wss:// needs TLS: build actix-ws-manager with its `rustls` feature",
            ))
        }
        Some(other) => return Err(bad(&format!("scheme {other:?} is not ws:// or wss://"))),
        None => return Err(bad("no scheme; expected ws://host:port/path")),
    }
    if uri.host().is_none_or(str::is_empty) {
        return Err(bad("no host"));
    }
    Ok(())
}
