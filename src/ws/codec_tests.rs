//! Tests of the frame-header guard and of reading on after a violation.
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
