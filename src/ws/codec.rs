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
/// Opcodes with this bit set are control frames (close, ping, pong).
const CONTROL: u8 = 0x08;
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
    check(src, max).map_err(|(fault, _)| fault)
}

/// [`check_header`], also answering, for a frame refused as too big, how many bytes the whole
/// frame takes (header, mask and payload), so that the codec can skip it.
fn check(src: &[u8], max: usize) -> Result<(), (Fault, Option<u64>)> {
    let [first, second, ..] = *src else {
        return Ok(());
    };
    let broken = |reason: String| Err((Fault::violation(close::PROTOCOL, reason), None));
    if first & RSV != 0 {
        return broken("reserved bits set without a negotiated extension".into());
    }
    let control = first & CONTROL != 0;
    if control && first & FIN == 0 {
        return broken("fragmented control frame".into());
    }
    let (len, header) = match second & 0x7F {
        126 => match src.get(2..4) {
            Some(b) => (u64::from(u16::from_be_bytes([b[0], b[1]])), 4),
            None => return Ok(()),
        },
        127 => match src.get(2..10) {
            Some(b) => {
                let mut be = [0u8; 8];
                be.copy_from_slice(b);
                (u64::from_be_bytes(be), 10)
            }
            None => return Ok(()),
        },
        n => (u64::from(n), 2),
    };
    if control && len > MAX_CONTROL {
        return broken(format!(
            "control frame of {len} bytes (at most {MAX_CONTROL})"
        ));
    }
    if len > i64::MAX as u64 {
        return broken("frame length with its most significant bit set".into());
    }
    if len > max as u64 {
        let mask = if second & MASK != 0 { 4 } else { 0 };
        let fault = Fault::violation(
            close::TOO_BIG,
            format!("frame of {len} bytes exceeds the limit of {max}"),
        );
        return Err((fault, Some(len + header + mask)));
    }
    Ok(())
}

/// actix-http's WebSocket [`Codec`] with [`check_header`] in front of its decoder, so an
/// oversize frame is refused at its header on both sides. Encoding is actix-http's, unchanged.
///
/// After a refusal the decoder keeps the connection readable without buffering: the payload of
/// a frame refused as too big is skipped as it arrives (so the peer's answer to our 1009, its
/// close frame, is still read), and after any other violation, where frame boundaries can no
/// longer be trusted, every byte is discarded.
///
/// Build it with [`client`](Self::client) or [`server`](Self::server), or wrap the codec awc
/// hands back with [`wrap`](Self::wrap) (`Framed::into_map_codec`).
#[derive(Debug)]
pub struct FrameCodec {
    inner: Codec,
    max: usize,
    /// Bytes of a refused frame still to be discarded.
    skip: u64,
    /// A violation broke frame sync: discard everything.
    broken: bool,
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
            skip: 0,
            broken: false,
        }
    }

    /// The largest frame payload accepted.
    pub fn max_size(&self) -> usize {
        self.max
    }
}

impl Decoder for FrameCodec {
    type Item = Frame;
    type Error = Fault;

    fn decode(&mut self, src: &mut BytesMut) -> Result<Option<Frame>, Fault> {
        if self.broken {
            src.clear();
            return Ok(None);
        }
        if self.skip > 0 {
            let n = usize::try_from(self.skip)
                .unwrap_or(usize::MAX)
                .min(src.len());
            src.advance(n);
            self.skip -= n as u64;
            if self.skip > 0 {
                return Ok(None);
            }
        }
        if let Err((fault, skip)) = check(src, self.max) {
            match skip {
                Some(n) => self.skip = n,
                None => self.broken = true,
            }
            return Err(fault);
        }
        let before = src.len();
        let frame = self.inner.decode(src).map_err(|e| {
            // actix-http's errors leave frame boundaries unknown.
            self.broken = true;
            Fault::from_protocol(e)
        })?;
        if frame.is_some() && before - src.len() > RELEASE_ABOVE {
            release(src);
        }
        Ok(frame)
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
