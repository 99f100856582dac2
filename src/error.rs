//! The crate's one error type.
//!
//! Every fallible public function returns [`Error`]. Each variant says when it happens, so that a
//! caller can decide whether to retry, give up, or report a bug.

use std::time::Duration;

/// Everything that can go wrong in actix-ws-manager.
///
/// The enum is `#[non_exhaustive]`: new failure modes may be added without a breaking release,
/// so a `match` needs a wildcard arm.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The URL given to `connect` (or to the CLI) cannot be used: it does not parse, has no host,
    /// or its scheme is not `ws://` (or `wss://`, which needs a TLS-enabled build).
    #[error("invalid WebSocket URL {url:?}: {reason}")]
    InvalidUrl {
        /// The URL as the user gave it.
        url: String,
        /// Why it was refused.
        reason: String,
    },

    /// The TCP connection or the HTTP upgrade request failed before the server answered
    /// (connection refused, DNS failure, timeout while connecting).
    #[error("connect to {url} failed: {reason}")]
    ConnectFailed {
        /// The URL that was dialled.
        url: String,
        /// The underlying I/O or HTTP error, as text.
        reason: String,
    },

    /// The server answered the upgrade request with something other than
    /// `101 Switching Protocols` (for example 401, 403, 404 or 503).
    #[error("WebSocket handshake with {url} rejected with HTTP {status}")]
    HandshakeRejected {
        /// The URL that was dialled.
        url: String,
        /// The HTTP status code the server answered with.
        status: u16,
    },

    /// The server's TLS certificate was refused (not signed by a trusted root, expired or not
    /// yet valid, for another name, a CA certificate in the server's place). Final for a
    /// client: retrying cannot help, so it ends in `Failed` without reconnecting. Trust an
    /// extra root, or a self-signed server certificate as it is, with
    /// `ClientConfig::tls_root_pem` (`wsm --ca FILE`).
    #[error("TLS certificate of {url} refused: {reason}")]
    Certificate {
        /// The URL that was dialled.
        url: String,
        /// What is wrong with the certificate and what to do about it, as a sentence (the
        /// host and the names the certificate has, the dates of its validity period, where to
        /// pass a certificate to trust).
        reason: String,
    },

    /// The client's [`TokenProvider`](crate::config::TokenProvider) answered an error before a
    /// connect attempt, answered no token within the connect timeout, or answered one that
    /// cannot be sent (empty, or with control characters). Final for a client: it ends in
    /// `Failed` with these words, since dialling without credentials cannot help and a retry
    /// loop would only hammer a broken credential source.
    #[error("token provider failed: {reason}")]
    TokenProvider {
        /// The provider's error in words (its `Display`), or what was wrong with its answer.
        reason: String,
    },

    /// The connection was lost while the operation was pending (a request waiting for its
    /// reply, for example): the peer closed it with `code`, or it went away without a close
    /// frame (1006, which also covers a heartbeat timeout). The client may reconnect; the
    /// operation itself is not retried.
    #[error("connection lost while the operation was pending (code {code}: {reason})")]
    ConnectionLost {
        /// RFC 6455 close code; 1006 means "lost without a close frame".
        code: u16,
        /// The close reason text, or a description of why the socket was lost.
        reason: String,
    },

    /// The client was closed by the user (or has given up reconnecting) and accepts no more work.
    #[error("the client is closed")]
    ClientClosed,

    /// A message could not be queued: the connection is not writable and the outbox already holds
    /// `capacity` messages, under [`OutboxPolicy`](crate::config::OutboxPolicy)'s default
    /// `Reject` overflow behaviour.
    #[error("outbox full ({capacity} messages waiting); message rejected")]
    OutboxFull {
        /// The configured outbox capacity.
        capacity: usize,
    },

    /// A request got no reply carrying its `id` within the timeout.
    #[error("request {id} timed out after {timeout:?}")]
    RequestTimeout {
        /// The envelope `id` the request was sent with.
        id: u64,
        /// The timeout that elapsed.
        timeout: Duration,
    },

    /// The peer answered a request with an `{"type":"error"}` envelope.
    #[error("the peer answered with error {code}: {message}")]
    Remote {
        /// The error code from the reply's `data.code`.
        code: String,
        /// The human-readable message from the reply's `data.message`.
        message: String,
    },

    /// A frame could not be decoded into an envelope or into the subscribed Rust type
    /// (malformed JSON, missing `type`, wrong `data` shape, invalid UTF-8).
    #[error("decode failed: {0}")]
    Decode(String),

    /// A value could not be encoded to JSON (a `Serialize` impl returned an error), or a
    /// metrics registry could not be rendered as text (a collector of its returned an error).
    #[error("encode failed: {0}")]
    Encode(String),

    /// A message is larger than the configured maximum message size.
    #[error("message of {size} bytes exceeds the limit of {limit} bytes")]
    MessageTooLarge {
        /// The size of the message in bytes.
        size: usize,
        /// The configured limit in bytes.
        limit: usize,
    },

    /// [`Client::join`](crate::client::Client::join) or
    /// [`Client::send_on_connect`](crate::client::Client::send_on_connect) would keep more
    /// distinct on-connect messages than the configured limit.
    #[error(
        "too many on-connect messages (at most {limit}: joins and send_on_connect registrations); \
         leave a room or remove one first, or raise ClientConfig::max_on_connect"
    )]
    OnConnectFull {
        /// The limit ([`ClientConfig::max_on_connect`](crate::config::ClientConfig::max_on_connect)).
        limit: usize,
    },
    /// The `info` given to
    /// [`Client::join_with_presence`](crate::client::Client::join_with_presence) takes more
    /// than [`MAX_PRESENCE_INFO_BYTES`](crate::protocol::MAX_PRESENCE_INFO_BYTES) as JSON: the
    /// server would refuse the join (`bad_data`), at every reconnect.
    #[error("presence info of {size} bytes exceeds the limit of {limit} bytes")]
    PresenceInfoTooLarge {
        /// Its size as JSON text, in bytes.
        size: usize,
        /// The limit in bytes.
        limit: usize,
    },
    /// A configuration value is out of range or malformed; the text names the field.
    #[error("invalid configuration: {0}")]
    Config(String),

    /// What this handle talks to has stopped: an actor's mailbox (the actix system is shutting
    /// down, or the client's actors were stopped) or the queue of the rooms hub, which is a
    /// tokio channel rather than a mailbox (the hub stopped with its server). The name is the
    /// mailbox's because both mean the same to a caller. Nothing more can be sent through this
    /// handle.
    #[error("actor mailbox closed: {0}")]
    Mailbox(String),

    /// Something awaited did not happen in time: a connection state, a message or an event
    /// awaited by the test kit's helpers. `last` says what was seen instead, so the failure
    /// explains itself.
    #[error("timed out after {within:?} waiting for {what} (last seen: {last})")]
    Timeout {
        /// What was awaited, in words.
        what: String,
        /// How long it was awaited.
        within: Duration,
        /// The last state or value seen, in words (`nothing` when nothing arrived).
        last: String,
    },

    /// A room name given to the server's HTTP-side publish breaks the room name rules of
    /// [`ServerConfig`](crate::config::ServerConfig) (empty, too long, or characters outside
    /// `A-Z a-z 0-9 _ . : -`).
    #[error("invalid room name {0:?}")]
    BadRoom(String),

    /// A client `Manager` already tracks a connection with this
    /// name; names are unique within a manager.
    #[error("a connection named {0:?} already exists")]
    NameTaken(String),

    /// An I/O error outside a connection (binding a listener, raising a resource limit).
    #[error("I/O error: {0}")]
    Io(#[from] std::io::Error),
}

/// So that `main` and other `io::Result` code can use `?` on this crate's results. An
/// [`Error::Io`] keeps its kind; everything else becomes `ErrorKind::Other` with the same words.
impl From<Error> for std::io::Error {
    fn from(e: Error) -> Self {
        match e {
            Error::Io(io) => io,
            other => std::io::Error::other(other),
        }
    }
}

/// So that actix-web handlers can use `?` on this crate's results: a bad room name is the
/// caller's fault (400), a stopped hub or client is 503, anything else 500; the body is the
/// error in words.
#[cfg(feature = "server")]
impl actix_web::ResponseError for Error {
    fn status_code(&self) -> actix_web::http::StatusCode {
        use actix_web::http::StatusCode;
        match self {
            Error::BadRoom(_) | Error::Encode(_) | Error::MessageTooLarge { .. } => {
                StatusCode::BAD_REQUEST
            }
            Error::Mailbox(_) | Error::ClientClosed | Error::OutboxFull { .. } => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            _ => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
}

impl From<actix::MailboxError> for Error {
    fn from(e: actix::MailboxError) -> Self {
        Error::Mailbox(e.to_string())
    }
}

/// Shorthand for `Result<T, actix_ws_manager::Error>`.
pub type Result<T, E = Error> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn converts_for_question_marks_in_io_and_actix_web_code() {
        let io: std::io::Error = Error::BadRoom("a b".into()).into();
        assert_eq!(io.kind(), std::io::ErrorKind::Other);
        assert!(io.to_string().contains("a b"));
        let io: std::io::Error =
            Error::Io(std::io::Error::from(std::io::ErrorKind::AddrInUse)).into();
        assert_eq!(io.kind(), std::io::ErrorKind::AddrInUse);
        #[cfg(feature = "server")]
        {
            use actix_web::ResponseError;
            assert_eq!(Error::BadRoom("x".into()).status_code().as_u16(), 400);
            assert_eq!(Error::ClientClosed.status_code().as_u16(), 503);
            assert_eq!(Error::Config("x".into()).status_code().as_u16(), 500);
        }
    }
}
