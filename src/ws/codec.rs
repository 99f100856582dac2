//! [`FrameCodec`]: actix-http's WebSocket codec behind a frame-header guard.

use actix_codec::{Decoder, Encoder};
use actix_http::ws::{Codec, Frame, Message, ProtocolError};
use bytes::{Buf, BytesMut};

use super::deflate::Incoming;
use super::{close, Fault};

/// FIN bit of the first header byte.
const FIN: u8 = 0x80;
/// The three reserved bits: zero, except RSV1 on the first frame of a compressed message
/// when permessage-deflate was negotiated.
const RSV: u8 = 0x70;
/// RSV1: "this message is compressed" under permessage-deflate (RFC 7692 section 6).
const RSV1: u8 = 0x40;
/// The mask bit of the second header byte (a 4-byte masking key follows the length).
const MASK: u8 = 0x80;
/// The opcode bits of the first header byte.
const OPCODE: u8 = 0x0F;
/// Opcodes with this bit set are control frames (close, ping, pong).
const CONTROL: u8 = 0x08;
/// The Close opcode.
const CLOSE: u8 = 0x08;
/// The Text opcode.
const TEXT: u8 = 0x01;
/// The Binary opcode.
const BINARY: u8 = 0x02;
/// Longest payload of a control frame (RFC 6455 section 5.5).
const MAX_CONTROL: u64 = 125;
/// After a frame of more than this many bytes is decoded, the read buffer is let go (what is
/// left in it, the start of the next frame at most, is copied into a new one): see
/// [`FrameCodec`]'s decoder.
const RELEASE_ABOVE: usize = 64 * 1024;

/// Check the frame header at the start of `src` against the rules that must hold before any of
/// its payload is read: reserved bits clear, control frames unfragmented and at most 125 bytes,
/// and a declared payload length of at most `max` bytes (1009 otherwise).
///
/// Returns `Ok(())` when the header is fine *or not yet complete* (then it is checked again when
/// more bytes arrive). `src` must start at a frame boundary, which holds for a decoder's buffer:
/// the codec consumes whole frames only.
pub fn check_header(src: &[u8], max: usize) -> Result<(), Fault> {
    check(src, max, false)
}

/// [`check_header`], with RSV1 allowed on the first frame of a data message when `deflate`
/// (permessage-deflate negotiated); RSV1 on a continuation or control frame is still 1002.
fn check(src: &[u8], max: usize, deflate: bool) -> Result<(), Fault> {
    let Some(head) = Header::parse(src) else {
        return Ok(());
    };
    let broken = |reason: String| Err(Fault::violation(close::PROTOCOL, reason));
    if head.rsv & !RSV1 != 0 || (head.rsv != 0 && !deflate) {
        return broken("reserved bits set without a negotiated extension".into());
    }
    if head.rsv != 0 && !matches!(head.opcode, TEXT | BINARY) {
        return broken(format!(
            "RSV1 on a {} frame (only the first frame of a message may be compressed)",
            if head.control {
                "control"
            } else {
                "continuation"
            }
        ));
    }
    if head.control && !head.fin {
        return broken("fragmented control frame".into());
    }
    let Some((len, _)) = head.len else {
        return Ok(());
    };
    if head.control && len > MAX_CONTROL {
        return broken(format!(
            "control frame of {len} bytes (at most {MAX_CONTROL})"
        ));
    }
    if len > i64::MAX as u64 {
        return broken("frame length with its most significant bit set".into());
    }
    if len > max as u64 {
        return Err(Fault::violation(
            close::TOO_BIG,
            format!("frame of {len} bytes exceeds the limit of {max}"),
        ));
    }
    Ok(())
}

/// What the first bytes of a frame say, as far as they have arrived.
#[derive(Debug, Clone, Copy)]
struct Header {
    fin: bool,
    /// The reserved bits, in place.
    rsv: u8,
    opcode: u8,
    control: bool,
    /// The declared payload length and the size of the whole frame (header, masking key and
    /// payload), once the length bytes have arrived.
    len: Option<(u64, u64)>,
}

impl Header {
    /// The header at the start of `src`; `None` before its first two bytes.
    fn parse(src: &[u8]) -> Option<Header> {
        let [first, second, ..] = *src else {
            return None;
        };
        let (len, header) = match second & 0x7F {
            126 => (
                src.get(2..4)
                    .map(|b| u64::from(u16::from_be_bytes([b[0], b[1]]))),
                4,
            ),
            127 => (
                src.get(2..10).map(|b| {
                    let mut be = [0u8; 8];
                    be.copy_from_slice(b);
                    u64::from_be_bytes(be)
                }),
                10,
            ),
            n => (Some(u64::from(n)), 2),
        };
        let mask = if second & MASK != 0 { 4 } else { 0 };
        Some(Header {
            fin: first & FIN != 0,
            rsv: first & RSV,
            opcode: first & OPCODE,
            control: first & CONTROL != 0,
            len: len.map(|len| (len, len.saturating_add(header + mask))),
        })
    }
}

/// actix-http's WebSocket [`Codec`] with [`check_header`] in front of its decoder, so an
/// oversize frame is refused at its header on both sides. Encoding is actix-http's, unchanged.
///
/// # After a violation
///
/// The endpoint that refused a frame sends its Close and waits (bounded) for the peer's (RFC
/// 6455 7.1.1), so after the first violation the decoder only looks for that Close, and
/// without buffering anything else:
///
/// - when the refused frame's boundary is known (its header was read, its length is valid:
///   reserved bits, a reserved opcode, a fragmented or oversize control frame, a frame over the
///   size limit, broken continuation, a bad close payload), it goes on reading frame headers
///   and skips each frame's payload as it arrives, whatever its declared length (a forged
///   1 GiB frame is skipped, not buffered), until a Close frame, which it hands up. Nothing
///   else is handed up: no data, no ping, no further violation;
/// - a Close that is itself bad (a payload of one byte or of more than 125, a code that may not
///   be sent, a reason that is not UTF-8, reserved bits) is still the peer's Close: it is
///   handed up as `Frame::Close(None)` after its violation, once, and is never refused again
///   (so the closing handshake completes rather than loops);
/// - when the boundary is not known (a length with its most significant bit set), every
///   further byte is discarded; the caller's close timeout ends the connection.
///
/// Build it with [`client`](Self::client) or [`server`](Self::server), or wrap the codec awc
/// hands back with [`wrap`](Self::wrap) (`Framed::into_map_codec`).
#[derive(Debug)]
pub struct FrameCodec {
    inner: Codec,
    max: usize,
    /// Where the decoder stands in the peer's frames.
    position: Position,
    /// Bytes of a skipped frame still to be discarded (while awaiting the Close).
    skip: u64,
    /// The frame just refused was the peer's Close: hand it up next, as `Close(None)`.
    close_next: bool,
    /// permessage-deflate, when negotiated: RSV1 is allowed on the first frame of a data
    /// message, and such messages are inflated before they are handed up.
    incoming: Option<Incoming>,
    /// The frame being decoded had RSV1 set (the bit is cleared in the buffer, since
    /// actix-http refuses it, and remembered here until the frame is whole).
    rsv1: bool,
}

/// The decoder's position in the peer's byte stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Position {
    /// No violation yet: every frame is decoded.
    Frames,
    /// After a violation, at a known frame boundary: only a Close frame is handed up, every
    /// other frame is skipped.
    AwaitingClose,
    /// After a violation that left the frame boundary unknown: everything is discarded.
    Lost,
}

impl FrameCodec {
    /// A codec for the server side (expects masked frames) accepting frames of up to `max`
    /// bytes.
    pub fn server(max: usize) -> Self {
        Self::wrap(Codec::new(), max)
    }

    /// A codec for the client side (sends masked frames) accepting frames of up to `max` bytes.
    pub fn client(max: usize) -> Self {
        Self::wrap(Codec::new().client_mode(), max)
    }

    /// Guard an existing codec (for example the one awc's `connect` returns), setting its frame
    /// limit to `max` as well.
    pub fn wrap(inner: Codec, max: usize) -> Self {
        Self {
            inner: inner.max_size(max),
            max,
            position: Position::Frames,
            skip: 0,
            close_next: false,
            incoming: None,
            rsv1: false,
        }
    }

    /// Accept and inflate compressed messages (permessage-deflate was negotiated): RSV1 on
    /// the first frame of a data message marks it compressed, and its frames are handed up
    /// inflated, never past the size limit (see [`Incoming`]).
    pub fn with_deflate(mut self, incoming: Incoming) -> Self {
        self.incoming = Some(incoming);
        self
    }

    /// The largest frame payload accepted.
    pub fn max_size(&self) -> usize {
        self.max
    }

    /// Decode one frame before any violation. On a violation the decoder moves on to awaiting
    /// the Close: a frame refused at its header is still at the start of `src`, and is skipped
    /// there like any other; a frame that actix-http refused after taking it (broken
    /// continuation, a bad close payload) is gone, and `src` starts at the next frame.
    fn decode_frame(&mut self, src: &mut BytesMut) -> Result<Option<Frame>, Fault> {
        if let Err(fault) = check(src, self.max, self.incoming.is_some()) {
            self.position = Position::AwaitingClose;
            return Err(fault);
        }
        if src.len() >= 2 && src[0] & RSV1 != 0 {
            // Checked above: a data frame's RSV1 under permessage-deflate.
            src[0] &= !RSV1;
            self.rsv1 = true;
        }
        let before = src.len();
        let close = src.first().is_some_and(|b| b & OPCODE == CLOSE);
        let frame = self.inner.decode(src).map_err(|e| {
            self.position = Position::AwaitingClose;
            if src.len() < before && close {
                // The peer's Close, with a payload that breaks the rules: it still ends the
                // handshake from the peer's side.
                self.close_next = true;
            }
            Fault::from_protocol(e)
        })?;
        if frame.is_some() && before - src.len() > RELEASE_ABOVE {
            release(src);
        }
        match (frame, self.incoming.as_mut()) {
            (Some(frame), Some(incoming)) => {
                let rsv1 = std::mem::take(&mut self.rsv1);
                incoming
                    .frame(frame, rsv1, self.max)
                    .map(Some)
                    .inspect_err(|_| self.position = Position::AwaitingClose)
            }
            (frame, _) => Ok(frame),
        }
    }

    /// After a violation: skip frames until a Close, without buffering their payloads.
    fn await_close(&mut self, src: &mut BytesMut) -> Option<Frame> {
        loop {
            if self.skip > 0 {
                let n = usize::try_from(self.skip)
                    .unwrap_or(usize::MAX)
                    .min(src.len());
                src.advance(n);
                self.skip -= n as u64;
                if self.skip > 0 {
                    return None;
                }
            }
            let head = Header::parse(src)?;
            let (len, size) = head.len?;
            if len > i64::MAX as u64 {
                // No boundary to find the next frame by.
                self.position = Position::Lost;
                src.clear();
                return None;
            }
            if head.opcode != CLOSE {
                self.skip = size;
                continue;
            }
            if !head.fin || head.rsv != 0 || len > MAX_CONTROL {
                // A Close that breaks a rule of its header (126 bytes and more, say) is still
                // the peer's Close; its payload is skipped, not read.
                self.skip = size;
                return Some(Frame::Close(None));
            }
            // At most 14 + 125 bytes: wait for the whole Close, then let actix-http read it.
            let size = size as usize;
            if src.len() < size {
                src.reserve(size - src.len());
                return None;
            }
            let mut frame = src.split_to(size);
            return match self.inner.decode(&mut frame) {
                Ok(Some(close @ Frame::Close(_))) => Some(close),
                // A Close actix-http refuses (bad payload, wrong masking) is still the peer's
                // Close; it is not refused again.
                _ => Some(Frame::Close(None)),
            };
        }
    }
}

impl Decoder for FrameCodec {
    type Item = Frame;
    type Error = Fault;

    fn decode(&mut self, src: &mut BytesMut) -> Result<Option<Frame>, Fault> {
        if std::mem::take(&mut self.close_next) {
            return Ok(Some(Frame::Close(None)));
        }
        match self.position {
            Position::Frames => self.decode_frame(src),
            Position::AwaitingClose => Ok(self.await_close(src)),
            Position::Lost => {
                src.clear();
                Ok(None)
            }
        }
    }
}

/// Let go of the read buffer's allocation after a large frame was split off it.
///
/// actix-http's parser reserves room for the whole declared frame in the read buffer and hands
/// the payload out as a `split_to` of it: the frame and the buffer then share one allocation,
/// which lives until *both* are dropped. The frame is dropped once handled (an echoed 8 MiB
/// message once written), but the buffer stays with the connection and, while the peer sends
/// nothing more, nothing replaces it: every connection that ever received a large message kept
/// that message's memory (measured: `wsm serve`, 50 sessions each echoing one 8 MiB message,
/// RSS 19 MB idle, 449 MB after, and still 449 MB seconds later, live, not allocator caching).
/// So after a large frame whatever is left (at most the start of the next frame, usually
/// nothing) moves to a new buffer, and the large allocation is freed with the frame.
fn release(src: &mut BytesMut) {
    *src = BytesMut::from(&src[..]);
}

/// Encode a compressed data message (a payload from
/// [`Deflater::compress`](super::deflate::Deflater::compress)) as one frame with RSV1 set,
/// a text frame when `text`. actix-http's encoder has neither RSV1 nor text frames that are not
/// UTF-8 (a compressed payload is not), so the payload is encoded as binary and the first
/// header byte is set afterwards.
pub fn encode_compressed<E: Encoder<Message>>(
    codec: &mut E,
    text: bool,
    payload: bytes::Bytes,
    dst: &mut BytesMut,
) -> Result<(), E::Error> {
    let start = dst.len();
    codec.encode(Message::Binary(payload), dst)?;
    if let Some(first) = dst.get_mut(start) {
        *first = (*first & !OPCODE) | RSV1 | if text { TEXT } else { BINARY };
    }
    Ok(())
}

impl Encoder<Message> for FrameCodec {
    type Error = ProtocolError;

    fn encode(&mut self, item: Message, dst: &mut BytesMut) -> Result<(), ProtocolError> {
        self.inner.encode(item, dst)
    }
}

#[cfg(test)]
#[path = "codec_tests.rs"]
mod tests;
