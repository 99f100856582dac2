//! The frame layer that the client [`Connection`](crate::client) and the server
//! the server's `Session` share: one place for the rules of RFC 6455 that
//! actix-http leaves to its users.
//!
//! - [`FrameCodec`]: actix-http's WebSocket codec behind a **frame-header guard**. A frame whose
//!   header declares a payload over the configured limit fails with 1009 as soon as its header is
//!   read, before a byte of payload is buffered (actix-http alone waits until the whole declared
//!   frame is in memory, so one forged 1 GiB header costs 1 GiB). Reserved bits without an
//!   extension, fragmented or oversized control frames fail with 1002 at the header too. After
//!   any violation it reads on only to find the peer's Close, skipping every other frame
//!   without buffering it, so the closing handshake completes (see
//!   [its docs](FrameCodec#after-a-violation)).
//! - [`Assembler`]: puts continuation frames back together up to the same limit (1009), checks
//!   text for UTF-8 incrementally across fragments (1007), and refuses broken fragmentation
//!   (1002). Control frames between fragments pass straight through, so pings are answered
//!   while a large message arrives.
//! - [`close`]: the close codes and the one policy for which codes may travel on the wire and
//!   how a peer's Close is answered.
//! - [`deflate`]: permessage-deflate (RFC 7692): negotiation for both sides, and per-message
//!   compression and inflation with the size limit on the inflated bytes.
//! - [`FrameReader`]: decodes a raw byte stream (actix-web's request payload) with the
//!   guarded codec, one frame at a time, so reading stops as soon as the guard trips.
//!
//! Everything that goes wrong while reading is a [`Fault`]: either a rule the peer broke (close
//! with its code) or a lost connection (nothing can be sent).

mod assemble;
mod codec;
pub mod deflate;
mod reader;

pub use assemble::{Assembler, Event};
pub use codec::{check_header, encode_compressed, FrameCodec};
pub use reader::FrameReader;
#[cfg(feature = "server")]
pub(crate) use reader::ReadGate;

use actix_http::ws::ProtocolError;

/// Close codes (RFC 6455 section 7.4) and the policy that both sides apply.
pub mod close {
    /// Normal closure.
    pub const NORMAL: u16 = 1000;
    /// Going away: server shutdown, heartbeat timeout.
    pub const AWAY: u16 = 1001;
    /// Protocol error: bad framing, reserved bits, a close code that may not be sent.
    pub const PROTOCOL: u16 = 1002;
    /// Invalid payload data: text that is not UTF-8.
    pub const INVALID_DATA: u16 = 1007;
    /// Policy violation: used for a client that keeps sending past its rate limit. This crate's
    /// client treats it as final (no reconnect).
    pub const POLICY: u16 = 1008;
    /// Message too big.
    pub const TOO_BIG: u16 = 1009;
    /// Try again later: a slow consumer whose queue overflowed.
    pub const TRY_AGAIN: u16 = 1013;
    /// The session's token expired without a `refresh` (JWT authentication): an application
    /// code, reason `token expired`. This crate's client fetches a new token from its token
    /// provider and reconnects at once.
    pub const TOKEN_EXPIRED: u16 = 4001;

    /// Whether `code` may be sent in a Close frame, or accepted in one from a peer: 1000-1003,
    /// 1007-1014 and 3000-4999. 1004, 1005, 1006 and 1015 are reserved for reporting and must
    /// never travel on the wire; everything else below 3000 is unassigned.
    pub fn is_sendable(code: u16) -> bool {
        matches!(code, 1000..=1003 | 1007..=1014 | 3000..=4999)
    }

    /// The code to answer a peer's Close with: its own code when that may be sent (RFC 6455
    /// section 5.5.1 says to echo it), 1000 for a Close without a code, and 1002 for a code that
    /// may not travel on the wire.
    pub fn reply_to(received: Option<u16>) -> u16 {
        match received {
            None => NORMAL,
            Some(code) if is_sendable(code) => code,
            Some(_) => PROTOCOL,
        }
    }
}

/// Why the frame layer stopped reading a connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fault {
    /// The peer broke a rule: close the connection with `code` (1002, 1007 or 1009); `reason`
    /// says which rule, for the close frame and for traces.
    Violation {
        /// The close code to send.
        code: u16,
        /// What went wrong, in words.
        reason: String,
    },
    /// Reading failed: the connection is gone, and nothing can be sent on it.
    Lost(String),
}

impl Fault {
    /// A rule broken by the peer.
    pub fn violation(code: u16, reason: impl Into<String>) -> Self {
        Fault::Violation {
            code,
            reason: reason.into(),
        }
    }

    /// The one mapping from actix-http's decoder errors to close codes: an oversize or invalid
    /// length is 1009, an I/O error is a lost connection, and everything else (bad opcodes,
    /// masking, broken continuations, bad close payloads, reserved bits) is 1002.
    pub fn from_protocol(e: ProtocolError) -> Self {
        match e {
            ProtocolError::Overflow => {
                Fault::violation(close::TOO_BIG, "frame exceeds the size limit")
            }
            ProtocolError::Io(e) if e.kind() == std::io::ErrorKind::InvalidData => {
                Fault::violation(close::PROTOCOL, e.to_string())
            }
            ProtocolError::Io(e) => Fault::Lost(e.to_string()),
            other => Fault::violation(close::PROTOCOL, other.to_string()),
        }
    }
}

impl From<std::io::Error> for Fault {
    fn from(e: std::io::Error) -> Self {
        Fault::Lost(e.to_string())
    }
}

impl std::fmt::Display for Fault {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Fault::Violation { code, reason } => write!(f, "{reason} (close {code})"),
            Fault::Lost(why) => write!(f, "connection lost: {why}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::close::*;

    #[test]
    fn close_policy() {
        for ok in [1000, 1001, 1002, 1003, 1007, 1011, 1013, 1014, 3000, 4999] {
            assert!(is_sendable(ok), "{ok}");
            assert_eq!(reply_to(Some(ok)), ok);
        }
        for bad in [0, 999, 1004, 1005, 1006, 1015, 1016, 2999, 5000, u16::MAX] {
            assert!(!is_sendable(bad), "{bad}");
            assert_eq!(reply_to(Some(bad)), PROTOCOL);
        }
        assert_eq!(reply_to(None), NORMAL);
    }
}
