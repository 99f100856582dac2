//! permessage-deflate through the frame codec and the assembler: RSV1 rules, fragments,
//! bombs, invalid data, and RSV1 on what this side sends.

use actix_codec::{Decoder, Encoder};
use actix_http::ws::{Codec, Frame, Message};
use bytes::{Bytes, BytesMut};

use super::negotiate::server_accept;
use super::*;
use crate::ws::{encode_compressed, Assembler, Event, Fault, FrameCodec};

/// The server's agreement for a browser's offer, with the default config switched on.
fn agreement() -> Agreement {
    let config = DeflateConfig {
        enabled: true,
        ..DeflateConfig::default()
    };
    server_accept("permessage-deflate; client_max_window_bits", &config)
        .unwrap()
        .1
}

/// A masked frame as a client writes it.
fn frame(first: u8, payload: &[u8]) -> Vec<u8> {
    let key = [0x37, 0xfa, 0x21, 0x3d];
    let mut v = vec![first];
    let len = payload.len();
    if len < 126 {
        v.push(0x80 | len as u8);
    } else if len <= 0xffff {
        v.push(0x80 | 126);
        v.extend_from_slice(&(len as u16).to_be_bytes());
    } else {
        v.push(0x80 | 127);
        v.extend_from_slice(&(len as u64).to_be_bytes());
    }
    v.extend_from_slice(&key);
    v.extend(payload.iter().enumerate().map(|(i, b)| b ^ key[i % 4]));
    v
}

fn compress(message: &[u8]) -> Bytes {
    Deflater::new(
        Direction {
            window_bits: 15,
            no_context_takeover: true,
        },
        6,
        0,
    )
    .compress(message)
    .unwrap()
}

/// Feed `wire` in pieces of `chunk` bytes to a deflate server codec of limit `max`, and every
/// frame through an assembler: the events and faults in order.
fn run(wire: &[u8], chunk: usize, max: usize) -> Vec<Result<Event, Fault>> {
    let mut codec = FrameCodec::server(max).with_deflate(agreement().incoming());
    let mut asm = Assembler::new(max);
    let (mut buf, mut out) = (BytesMut::new(), Vec::new());
    for piece in wire.chunks(chunk) {
        buf.extend_from_slice(piece);
        loop {
            match codec.decode(&mut buf) {
                Ok(Some(f)) => match asm.push(f) {
                    Ok(Some(ev)) => out.push(Ok(ev)),
                    Ok(None) => {}
                    Err(fault) => out.push(Err(fault)),
                },
                Ok(None) => break,
                Err(fault) => out.push(Err(fault)),
            }
        }
    }
    out
}

fn code(r: &Result<Event, Fault>) -> u16 {
    match r {
        Err(Fault::Violation { code, .. }) => *code,
        other => panic!("expected a violation, got {other:?}"),
    }
}

const CLOSE: [u8; 2] = [0x03, 0xe8];

#[test]
fn compressed_messages_whole_and_fragmented_come_up_inflated() {
    let text = "permessage-deflate ".repeat(200) + "€";
    let packed = compress(text.as_bytes());
    let third = packed.len() / 3;
    let mut wire = frame(0xC1, &packed);
    // Fragmented: RSV1 on the first frame only, a ping between fragments.
    wire.extend(frame(0x41, &packed[..third]));
    wire.extend(frame(0x89, b"ping"));
    wire.extend(frame(0x00, &packed[third..2 * third]));
    wire.extend(frame(0x80, &packed[2 * third..]));
    // A plain message on the same connection, and a compressed binary one.
    wire.extend(frame(0x81, b"plain"));
    wire.extend(frame(0xC2, &compress(&[9u8; 5000])));
    wire.extend(frame(0x88, &CLOSE));
    for chunk in [1, 7, 1 << 20] {
        let out = run(&wire, chunk, 1 << 20);
        let want = [
            Event::Text(text.as_str().into()),
            Event::Ping(Bytes::from_static(b"ping")),
            Event::Text(text.as_str().into()),
            Event::Text("plain".into()),
            Event::Binary(Bytes::from(vec![9u8; 5000])),
        ];
        assert_eq!(out.len(), want.len() + 1, "{chunk}: {out:?}");
        for (got, want) in out.iter().zip(want) {
            assert_eq!(got.as_ref().ok(), Some(&want), "{chunk}");
        }
        assert!(matches!(out[5], Ok(Event::Close(Some(_)))), "{out:?}");
    }
}

#[test]
fn rsv1_only_on_the_first_frame_of_a_data_message() {
    let packed = compress(&[b'x'; 1000]);
    let cases = [
        (
            "RSV1 on a continuation",
            [frame(0x41, &packed[..5]), frame(0xC0, &packed[5..])].concat(),
        ),
        ("RSV1 on a ping", frame(0xC9, b"p")),
        ("RSV1 on a close", frame(0xC8, &CLOSE)),
        ("RSV2", frame(0xA1, b"x")),
        ("RSV3", frame(0x91, b"x")),
        ("RSV1 and RSV2", frame(0xE1, &packed)),
    ];
    for (what, bad) in cases {
        let wire = [bad, frame(0x81, b"after"), frame(0x88, &CLOSE)].concat();
        let out = run(&wire, 3, 1 << 20);
        // (A bad Close is still the peer's Close: it comes up after its violation.)
        assert!(out.len() == 2 || what.contains("close"), "{what}: {out:?}");
        assert_eq!(code(&out[0]), 1002, "{what}");
        assert!(matches!(out[1], Ok(Event::Close(_))), "{what}: {out:?}");
    }
    // Without the extension, RSV1 is refused as before.
    let mut codec = FrameCodec::server(1024);
    let mut buf = BytesMut::from(&frame(0xC1, &packed)[..]);
    assert!(matches!(
        codec.decode(&mut buf),
        Err(Fault::Violation { code: 1002, .. })
    ));
}

#[test]
fn bombs_are_refused_at_the_limit() {
    let max = 1 << 20;
    let bomb = Deflater::new(
        Direction {
            window_bits: 15,
            no_context_takeover: false,
        },
        9,
        0,
    )
    .compress(&vec![0u8; 16 << 20])
    .unwrap();
    // One frame.
    let wire = [frame(0xC2, &bomb), frame(0x88, &CLOSE)].concat();
    let out = run(&wire, 4096, max);
    assert_eq!(code(&out[0]), 1009, "{out:?}");
    assert!(matches!(out.last(), Some(Ok(Event::Close(_)))), "{out:?}");
    // Many small fragments: refused once their inflated total passes the limit, without the
    // assembler ever holding more than the limit.
    let mut wire = frame(0x42, &bomb[..64]);
    for piece in bomb[64..].chunks(64) {
        wire.extend(frame(0x00, piece));
    }
    wire.extend(frame(0x88, &CLOSE));
    let out = run(&wire, 4096, max);
    assert_eq!(code(&out[0]), 1009, "{out:?}");
    assert_eq!(out.len(), 2, "{out:?}");
    // Exactly at the limit, fragmented, is fine.
    let exact = compress(&vec![b'a'; max]);
    let half = exact.len() / 2;
    let wire = [frame(0x41, &exact[..half]), frame(0x80, &exact[half..])].concat();
    let out = run(&wire, 4096, max);
    assert!(
        matches!(&out[..], [Ok(Event::Text(t))] if t.len() == max),
        "{}",
        out.len()
    );
}

#[test]
fn bad_compressed_data_is_1007_and_so_is_bad_utf8_inside() {
    let wire = [frame(0xC1, &[0xff, 0xff, 0xff]), frame(0x88, &CLOSE)].concat();
    let out = run(&wire, 2, 1024);
    assert_eq!(code(&out[0]), 1007, "{out:?}");
    assert!(matches!(out[1], Ok(Event::Close(_))), "{out:?}");
    let wire = frame(0xC1, &compress(&[0xff; 300]));
    assert_eq!(code(&run(&wire, 5, 1024)[0]), 1007);
}

#[test]
fn what_this_side_compresses_carries_rsv1_and_reads_back() {
    let text = "{\"type\":\"message\",\"data\":1}".repeat(50);
    let mut server = Codec::new();
    let mut wire = BytesMut::new();
    let packed = compress(text.as_bytes());
    encode_compressed(&mut server, true, packed, &mut wire).unwrap();
    assert_eq!(wire[0], 0xC1);
    server
        .encode(Message::Text("plain".into()), &mut wire)
        .unwrap();
    let mut client = FrameCodec::client(1 << 20).with_deflate(agreement().incoming());
    let first = client.decode(&mut wire).unwrap();
    assert_eq!(first, Some(Frame::Text(Bytes::from(text))));
    let second = client.decode(&mut wire).unwrap();
    assert_eq!(second, Some(Frame::Text(Bytes::from_static(b"plain"))));
}
