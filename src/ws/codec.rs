//! [`FrameCodec`]: actix-http's WebSocket codec behind a frame-header guard.

use actix_codec::{Decoder, Encoder};
use actix_http::ws::{Codec, Frame, Message, ProtocolError};
use bytes::{Buf, BytesMut};

use super::{close, Fault};

/// FIN bit of the first header byte.
const FIN: u8 = 0x80;
/// The three reserved bits; no extension is ever negotiated here, so they must be zero.
const RSV: u8 = 0x70;
/// The mask bit of the second header byte (a 4-byte masking key follows the length).
const MASK: u8 = 0x80;
/// The opcode bits of the first header byte.
const OPCODE: u8 = 0x0F;
/// Opcodes with this bit set are control frames (close, ping, pong).
const CONTROL: u8 = 0x08;
/// The Close opcode.
const CLOSE: u8 = 0x08;
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
    let Some(head) = Header::parse(src) else {
        return Ok(());
    };
    let broken = |reason: String| Err(Fault::violation(close::PROTOCOL, reason));
    if head.rsv {
        return broken("reserved bits set without a negotiated extension".into());
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
    rsv: bool,
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
            rsv: first & RSV != 0,
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
        }
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
        if let Err(fault) = check_header(src, self.max) {
            self.position = Position::AwaitingClose;
            return Err(fault);
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
        Ok(frame)
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
            if !head.fin || head.rsv || len > MAX_CONTROL {
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

impl Encoder<Message> for FrameCodec {
    type Error = ProtocolError;

    fn encode(&mut self, item: Message, dst: &mut BytesMut) -> Result<(), ProtocolError> {
        self.inner.encode(item, dst)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(first: u8, len: u64) -> Vec<u8> {
        let mut v = vec![first];
        if len < 126 {
            v.push(0x80 | len as u8);
        } else if len <= u64::from(u16::MAX) {
            v.push(0x80 | 126);
            v.extend_from_slice(&(len as u16).to_be_bytes());
        } else {
            v.push(0x80 | 127);
            v.extend_from_slice(&len.to_be_bytes());
        }
        v
    }

    fn code(r: Result<(), Fault>) -> Option<u16> {
        match r {
            Ok(()) => None,
            Err(Fault::Violation { code, .. }) => Some(code),
            Err(Fault::Lost(_)) => Some(1006),
        }
    }

    #[test]
    fn oversize_is_refused_from_the_header_alone() {
        let h = header(0x82, 1 << 30);
        assert_eq!(code(check_header(&h, 65536)), Some(1009));
        // Not enough bytes to know the length yet: no verdict.
        for cut in 0..h.len() {
            assert_eq!(code(check_header(&h[..cut], 65536)), None, "{cut}");
        }
        assert_eq!(code(check_header(&header(0x82, 65536), 65536)), None);
        assert_eq!(code(check_header(&header(0x82, 65537), 65536)), Some(1009));
        assert_eq!(code(check_header(&header(0x81, 200), 100)), Some(1009));
    }

    #[test]
    fn reserved_bits_and_bad_control_frames_are_protocol_errors() {
        assert_eq!(code(check_header(&header(0xC1, 3), 100)), Some(1002));
        assert_eq!(code(check_header(&header(0x89, 126), 1000)), Some(1002));
        assert_eq!(code(check_header(&header(0x09, 1), 1000)), Some(1002));
        assert_eq!(code(check_header(&header(0x89, 125), 1000)), None);
        assert_eq!(
            code(check_header(&header(0x82, u64::MAX), usize::MAX)),
            Some(1002)
        );
    }

    #[test]
    fn decoder_refuses_before_buffering_the_payload() {
        let mut codec = FrameCodec::server(1024);
        let mut buf = BytesMut::from(&header(0x82, 1 << 30)[..]);
        assert!(matches!(
            codec.decode(&mut buf),
            Err(Fault::Violation { code: 1009, .. })
        ));
        assert!(
            buf.capacity() < 4096,
            "the codec reserved {} bytes",
            buf.capacity()
        );
    }

    #[test]
    fn a_refused_payload_is_skipped_and_the_next_frame_is_read() {
        use actix_codec::Encoder;
        let mut peer = Codec::new().client_mode();
        let mut codec = FrameCodec::server(8);
        let mut wire = BytesMut::new();
        peer.encode(Message::Binary(vec![7u8; 20].into()), &mut wire)
            .unwrap();
        peer.encode(Message::Close(None), &mut wire).unwrap();
        // Feed it in small pieces, as a socket would.
        let mut buf = BytesMut::new();
        let mut out = Vec::new();
        for chunk in wire.chunks(3) {
            buf.extend_from_slice(chunk);
            loop {
                match codec.decode(&mut buf) {
                    Ok(Some(f)) => out.push(format!("{f:?}")),
                    Ok(None) => break,
                    Err(e) => out.push(format!("{e}")),
                }
            }
            assert!(buf.len() <= 14, "buffered {} bytes", buf.len());
        }
        assert_eq!(out.len(), 2, "{out:?}");
        assert!(out[0].contains("1009"), "{out:?}");
        assert!(out[1].starts_with("Close"), "{out:?}");
    }

    /// A frame as a peer would write it: `first` header byte, `payload`, masked or not.
    fn frame(first: u8, payload: &[u8], masked: bool) -> Vec<u8> {
        let key = [0x11, 0x22, 0x33, 0x44];
        let mut v = header(first, payload.len() as u64);
        if !masked {
            v[1] &= 0x7F;
        } else {
            v.extend_from_slice(&key);
        }
        v.extend(
            payload
                .iter()
                .enumerate()
                .map(|(i, b)| if masked { b ^ key[i % 4] } else { *b }),
        );
        v
    }

    /// Feed `wire` to `codec` in pieces of `chunk` bytes, decoding after each; every frame and
    /// fault in order, and the most bytes the buffer held meanwhile.
    fn feed(codec: &mut FrameCodec, wire: &[u8], chunk: usize) -> (Vec<String>, usize) {
        let (mut buf, mut out, mut most) = (BytesMut::new(), Vec::new(), 0);
        for piece in wire.chunks(chunk) {
            buf.extend_from_slice(piece);
            most = most.max(buf.len());
            loop {
                match codec.decode(&mut buf) {
                    Ok(Some(f)) => out.push(format!("{f:?}")),
                    Ok(None) => break,
                    Err(e) => out.push(format!("{e}")),
                }
            }
        }
        (out, most)
    }

    fn close(code: u16) -> Vec<u8> {
        frame(0x88, &code.to_be_bytes(), true)
    }

    #[test]
    fn after_a_violation_only_the_peers_close_is_read() {
        let mut rsv = frame(0xC1, b"hello", true);
        rsv[0] |= 0x40;
        let violations = [
            ("reserved bits", rsv, "1002"),
            ("reserved opcode", frame(0x83, b"x", true), "1002"),
            ("ping of 126 bytes", frame(0x89, &[0; 126], true), "1002"),
            ("fragmented ping", frame(0x09, b"p", true), "1002"),
            ("oversize binary", frame(0x82, &[0; 2000], true), "1009"),
            ("stray continuation", frame(0x80, b"c", true), "1002"),
            ("unmasked text", frame(0x81, b"u", false), "1002"),
        ];
        // What follows the violation: frames of every kind, one of them over the size limit;
        // none may come up, and none is a second violation.
        let mut rest = Vec::new();
        for f in [
            frame(0x81, b"text", true),
            frame(0x89, b"ping", true),
            frame(0x82, &[7; 3000], true),
            frame(0x84, b"reserved", true),
            frame(0x01, b"first", true),
            frame(0x00, b"middle", true),
            close(1000),
        ] {
            rest.extend_from_slice(&f);
        }
        for (what, bad, code) in violations {
            for chunk in [1, 3, 64, 1 << 20] {
                let mut codec = FrameCodec::server(1024);
                let wire = [bad.clone(), rest.clone()].concat();
                let (out, most) = feed(&mut codec, &wire, chunk);
                assert_eq!(out.len(), 2, "{what}, chunks of {chunk}: {out:?}");
                assert!(out[0].contains(code), "{what}: {out:?}");
                assert!(out[1].contains("Close(Some"), "{what}: {out:?}");
                assert!(out[1].contains("Normal"), "{what}: {out:?}");
                if chunk < 64 {
                    // Only the Close is ever gathered (at most 14 + 125 bytes).
                    assert!(most <= 139, "{what}: buffered {most} bytes");
                }
            }
        }
    }

    #[test]
    fn a_bad_close_is_still_the_peers_close_and_is_refused_once() {
        // The bad close is the first violation (Autobahn 7.3.2, 7.5.1, 7.9.*)...
        for bad in [
            frame(0x88, &[0x03], true),
            frame(0x88, &0u16.to_be_bytes(), true),
            frame(0x88, &1005u16.to_be_bytes(), true),
            frame(0x88, &[0x03, 0xE8, 0xFF], true),
            frame(0x88, &[], false),
            frame(0x88, &[b'*'; 126], true),
            frame(0x08, &1000u16.to_be_bytes(), true),
            frame(0xC8, &1000u16.to_be_bytes(), true),
        ] {
            let mut codec = FrameCodec::server(1024);
            let wire = [bad.clone(), close(1000)].concat();
            let (out, _) = feed(&mut codec, &wire[..bad.len()], 1);
            assert_eq!(out.len(), 2, "{out:?}");
            assert!(out[0].contains("1002"), "{out:?}");
            assert_eq!(out[1], "Close(None)", "{out:?}");
            // ... or comes after one: handed up as the Close, without a second violation.
            let mut codec = FrameCodec::server(1024);
            let wire = [frame(0x83, b"", true), bad].concat();
            let (out, _) = feed(&mut codec, &wire, 2);
            assert_eq!(out.len(), 2, "{out:?}");
            assert!(out[0].contains("1002"), "{out:?}");
            assert_eq!(out[1], "Close(None)", "{out:?}");
            let mut empty = BytesMut::new();
            assert!(matches!(codec.decode(&mut empty), Ok(None)));
        }
    }

    #[test]
    fn a_forged_length_after_a_violation_is_skipped_without_buffering() {
        let mut codec = FrameCodec::server(1024);
        let mut wire = frame(0xC1, b"x", true);
        wire.extend_from_slice(&header(0x82, 1 << 30));
        wire.extend_from_slice(&[1, 2, 3, 4]);
        let (out, _) = feed(&mut codec, &wire, 7);
        assert_eq!(out.len(), 1, "{out:?}");
        // 4 MiB of the forged payload, 64 KiB at a time: each piece is dropped on arrival.
        let mut buf = BytesMut::new();
        for _ in 0..64 {
            buf.extend_from_slice(&[0u8; 65536]);
            assert!(matches!(codec.decode(&mut buf), Ok(None)));
            assert!(buf.is_empty(), "kept {} bytes", buf.len());
        }
    }

    #[test]
    fn without_a_frame_boundary_everything_is_discarded() {
        let mut codec = FrameCodec::server(1024);
        let mut wire = header(0x82, u64::MAX);
        wire.extend_from_slice(&[1, 2, 3, 4]);
        wire.extend_from_slice(&close(1000));
        let (out, _) = feed(&mut codec, &wire, 5);
        assert_eq!(out.len(), 1, "{out:?}");
        assert!(out[0].contains("1002"), "{out:?}");
    }

    #[test]
    fn the_client_side_skips_to_the_close_too() {
        let mut codec = FrameCodec::client(1024);
        let mut wire = frame(0xA1, b"rsv", false);
        wire.extend_from_slice(&frame(0x82, &[0; 4000], false));
        wire.extend_from_slice(&frame(0x88, &1000u16.to_be_bytes(), false));
        let (out, most) = feed(&mut codec, &wire, 16);
        assert_eq!(out.len(), 2, "{out:?}");
        assert!(out[0].contains("1002"), "{out:?}");
        assert!(out[1].contains("Close(Some"), "{out:?}");
        assert!(most <= 139, "buffered {most} bytes");
    }

    #[test]
    fn a_large_frame_takes_its_allocation_away_from_the_read_buffer() {
        use actix_codec::Encoder;
        let mut peer = Codec::new().client_mode();
        let mut wire = BytesMut::new();
        let big = vec![9u8; 4 * RELEASE_ABOVE];
        peer.encode(Message::Binary(big.clone().into()), &mut wire)
            .unwrap();
        peer.encode(Message::Ping("p".into()), &mut wire).unwrap();
        // The large frame, and the first 3 bytes of the next, as one read would deliver them.
        let mut buf = BytesMut::from(&wire[..wire.len() - 4]);
        let mut codec = FrameCodec::server(big.len());
        let Ok(Some(Frame::Binary(payload))) = codec.decode(&mut buf) else {
            panic!("the binary frame");
        };
        assert_eq!(payload, big);
        // Nothing else holds the payload's allocation: it is freed when the frame is dropped.
        assert!(
            payload.is_unique(),
            "the read buffer still shares the frame's memory"
        );
        assert_eq!(buf.len(), 3);
        assert!(buf.capacity() < RELEASE_ABOVE, "kept {}", buf.capacity());
        buf.extend_from_slice(&wire[wire.len() - 4..]);
        assert!(matches!(codec.decode(&mut buf), Ok(Some(Frame::Ping(_)))));
    }
}
