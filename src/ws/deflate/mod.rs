//! permessage-deflate (RFC 7692): negotiation, and compression of whole messages, with bounded
//! memory on both ends of a message.
//!
//! - [`DeflateConfig`]: what this endpoint wants (on or off, the size under which messages go
//!   out plain, window bits, context takeover each way).
//! - Negotiation ([`negotiate`]): [`server_accept`](negotiate::server_accept) picks the first
//!   acceptable offer of a `Sec-WebSocket-Extensions` header and writes the answer;
//!   [`client_offer`](negotiate::client_offer) writes the client's offer and
//!   [`client_accept`](negotiate::client_accept) checks the server's answer. Both give an
//!   [`Agreement`]: how this endpoint compresses and how it inflates.
//! - [`Deflater`] compresses one whole message (raw deflate, sync flush, the `00 00 ff ff` tail
//!   stripped); [`Inflater`] inflates one message frame by frame, in steps of [`STEP`] bytes of
//!   output, refusing (1009) as soon as the inflated size passes the limit, so a bomb costs at
//!   most the limit plus one step.
//!
//! # Memory
//!
//! Context takeover keeps a compressor (about 256 KiB at 15 window bits) and an inflater
//! (about 40 KiB) alive for the whole connection; smaller window bits make both smaller, and
//! [`held`] counts what the process holds. Without it, which is what this crate asks for
//! by default in both directions, nothing is kept between messages: an [`Inflater`] holds its
//! state only while a message is arriving, and a [`Deflater`] borrows a compressor kept per
//! thread (reset after every message), so an idle connection costs nothing more with deflate
//! negotiated, and a room broadcast compressed once is valid for every member (its bytes do
//! not depend on any connection's history).
//!
//! # Window bits 8
//!
//! zlib (and zlib-rs) cannot compress with a window of 256 bytes: asked for 8 bits, zlib uses
//! 9, whose back-references a peer inflating with a 256-byte window cannot follow. So when
//! the peer limits this endpoint's window to 8 bits, the agreement is accepted (its inflating
//! side works with any window) but this endpoint sends every message uncompressed, which RFC
//! 7692 always allows (RSV1 clear).

mod codec;
mod frames;
pub mod negotiate;

pub use codec::{held, Deflater, Held, Inflater, STEP};
pub use frames::Incoming;

/// The extension's name on the wire.
pub const EXTENSION: &str = "permessage-deflate";

/// What an endpoint wants from permessage-deflate. The same type serves the client and the
/// server; each field says what it means on each side.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeflateConfig {
    /// Offer (client) or accept (server) the extension at all.
    pub enabled: bool,
    /// Messages shorter than this many bytes go out uncompressed: compressing them costs CPU
    /// on both ends and saves a few bytes at best. Default 256.
    pub threshold: usize,
    /// zlib compression level, 0-9 (higher values are taken as 9). Default 6, zlib's own.
    pub level: u32,
    /// This endpoint resets its compressor after every message. It costs some compression
    /// on repetitive streams, and buys no compressor kept per connection and, on the server,
    /// a broadcast compressed once for every member. Sent as `server_no_context_takeover` by a
    /// server and as `client_no_context_takeover` in a client's offer. Default true.
    pub no_context_takeover: bool,
    /// Ask the peer to reset its compressor after every message, so that this endpoint keeps
    /// no inflater between messages (about 40 KiB per connection otherwise). A server asks with
    /// `client_no_context_takeover` in its answer; a client with `server_no_context_takeover`
    /// in its offer (a server that does not support it declines the offer). Default true.
    pub peer_no_context_takeover: bool,
    /// The largest window this endpoint compresses with, 9-15. Default 15.
    pub max_window_bits: u8,
    /// The largest window the peer may compress with, 8-15 (15: no limit asked). Smaller
    /// windows make this endpoint's inflater smaller when context is taken over. Default 15.
    pub peer_max_window_bits: u8,
}

impl Default for DeflateConfig {
    /// On, with the settings described on each field.
    fn default() -> Self {
        Self {
            enabled: true,
            threshold: 256,
            level: 6,
            no_context_takeover: true,
            peer_no_context_takeover: true,
            max_window_bits: 15,
            peer_max_window_bits: 15,
        }
    }
}

impl DeflateConfig {
    /// The extension neither offered nor accepted (`wsm serve --no-deflate`, `wsm connect
    /// --no-deflate`, and `wsm load` unless `--deflate`).
    pub fn off() -> Self {
        Self {
            enabled: false,
            ..Self::default()
        }
    }

    /// The config's window bits within their ranges (9-15 for this endpoint's compression,
    /// 8-15 for the peer's), so that no config value can make a compressor panic.
    fn clamped(&self) -> (u8, u8) {
        (
            self.max_window_bits.clamp(9, 15),
            self.peer_max_window_bits.clamp(8, 15),
        )
    }
}

/// How one direction of a connection is compressed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Direction {
    /// The window of that direction, 8-15 (for inflating, a window of 8 is inflated with 9:
    /// a larger window than the sender's is always fine).
    pub window_bits: u8,
    /// The sender resets its compressor after every message: the inflater need not be kept.
    pub no_context_takeover: bool,
}

/// What the two endpoints agreed on, seen from this endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Agreement {
    /// How this endpoint compresses what it sends; `None` when it must send everything
    /// uncompressed (the peer limited its window to 8 bits: see the module docs).
    pub send: Option<Direction>,
    /// How the peer compresses what this endpoint receives.
    pub receive: Direction,
    /// Messages under this many bytes go out uncompressed.
    pub threshold: usize,
    /// The compression level.
    pub level: u32,
}

impl Agreement {
    /// A compressor for what this endpoint sends, when it compresses at all.
    pub fn deflater(&self) -> Option<Deflater> {
        self.send
            .map(|d| Deflater::new(d, self.level.min(9), self.threshold))
    }

    /// An inflater for what this endpoint receives.
    pub fn inflater(&self) -> Inflater {
        Inflater::new(self.receive)
    }

    /// What the [`FrameCodec`](crate::ws::FrameCodec) of this connection inflates with
    /// ([`FrameCodec::with_deflate`](crate::ws::FrameCodec::with_deflate)).
    pub fn incoming(&self) -> Incoming {
        Incoming::new(self.inflater())
    }
}

#[cfg(test)]
mod tests;
#[cfg(test)]
mod wire_tests;
