//! Property tests (proptest) of the parts that take bytes from the network: the envelope codec
//! and the frame layer. Whatever arrives, nothing panics; what is encoded decodes back; a
//! message cut into random fragments comes back whole; and no header makes the frame guard
//! buffer more than the limit.

use actix_codec::{Decoder, Encoder};
use actix_http::ws::{Codec, Frame, Item, Message};
use actix_ws_manager::envelope::{Head, Outgoing};
use actix_ws_manager::ws::{Assembler, Event, FrameCodec};
use bytes::{Bytes, BytesMut};
use proptest::prelude::*;

/// Feed `chunks` to a server-side guarded decoder with limit `max`, decoding after each chunk
/// as a socket reader would; fail when a waiting buffer exceeds one frame of the limit, or, after
/// a violation, one whole Close frame (the codec then reads only the peer's Close, a control
/// frame of at most 125 bytes whatever the message limit: 14 + 125 bytes at most).
fn feed_and_check(chunks: Vec<Vec<u8>>, max: usize) -> Result<(), TestCaseError> {
    let mut codec = FrameCodec::server(max);
    let mut buf = BytesMut::new();
    for chunk in chunks {
        buf.extend_from_slice(&chunk);
        for _ in 0..1000 {
            match codec.decode(&mut buf) {
                Ok(Some(_)) | Err(_) => continue,
                Ok(None) => break,
            }
        }
        prop_assert!(
            buf.len() <= max.max(125) + 14,
            "buffered {} with a limit of {}",
            buf.len(),
            max
        );
    }
    Ok(())
}

/// Room-like and type-like names.
fn name() -> impl Strategy<Value = String> {
    "[A-Za-z0-9_.:-]{1,24}"
}

/// Arbitrary JSON values, a few levels deep.
fn json() -> impl Strategy<Value = serde_json::Value> {
    let leaf = prop_oneof![
        Just(serde_json::Value::Null),
        any::<bool>().prop_map(serde_json::Value::from),
        any::<i64>().prop_map(serde_json::Value::from),
        ".{0,16}".prop_map(serde_json::Value::from),
    ];
    leaf.prop_recursive(3, 24, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(serde_json::Value::from),
            prop::collection::btree_map("[a-z]{1,6}", inner, 0..4)
                .prop_map(|m| serde_json::Value::Object(m.into_iter().collect())),
        ]
    })
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 256,
        // Nothing written next to the sources: a failure prints its minimal input.
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    /// Any text, valid JSON or not, is a head or an error; never a panic.
    #[test]
    fn head_parse_never_panics(text in ".{0,200}") {
        let _ = Head::parse(&text);
    }

    /// What `Outgoing` encodes, `Head` decodes back, field by field.
    #[test]
    fn envelope_round_trips(
        kind in name(),
        id in proptest::option::of(any::<u64>()),
        room in proptest::option::of(name()),
        data in proptest::option::of(json()),
    ) {
        let mut out = Outgoing::dynamic(kind.clone(), data.as_ref()).unwrap();
        if let Some(id) = id { out = out.id(id); }
        if let Some(room) = &room { out = out.room(room.clone()); }
        let text = out.encode();
        let head = Head::parse(&text).unwrap();
        prop_assert_eq!(head.kind.as_ref(), kind.as_str());
        prop_assert_eq!(head.id, id);
        prop_assert_eq!(head.room.as_deref(), room.as_deref());
        // `"data": null` and no `data` mean the same (both decode as null).
        let back: serde_json::Value = head.data_as().unwrap();
        prop_assert_eq!(back, data.unwrap_or(serde_json::Value::Null));
    }

    /// A text message (any Unicode) cut into fragments at random byte offsets, even inside a
    /// character, comes back whole from the assembler.
    #[test]
    fn fragments_reassemble(text in ".{1,64}", cuts in prop::collection::vec(any::<prop::sample::Index>(), 0..6)) {
        let bytes = text.as_bytes();
        let mut points: Vec<usize> = cuts.iter().map(|i| i.index(bytes.len())).filter(|&p| p > 0).collect();
        points.sort_unstable();
        points.dedup();
        let mut pieces = Vec::new();
        let mut start = 0;
        for p in points { pieces.push(&bytes[start..p]); start = p; }
        pieces.push(&bytes[start..]);
        let mut assembler = Assembler::new(1024);
        let result = if pieces.len() == 1 {
            assembler.push(Frame::Text(Bytes::copy_from_slice(pieces[0]))).unwrap()
        } else {
            let last = pieces.len() - 1;
            let mut out = None;
            for (i, piece) in pieces.iter().enumerate() {
                let piece = Bytes::copy_from_slice(piece);
                let item = match i {
                    0 => Item::FirstText(piece),
                    i if i == last => Item::Last(piece),
                    _ => Item::Continue(piece),
                };
                out = assembler.push(Frame::Continuation(item)).unwrap();
                if i < last { prop_assert!(out.is_none()); }
            }
            out
        };
        prop_assert_eq!(result, Some(Event::Text(text.as_str().into())));
    }

    /// Arbitrary bytes, in arbitrary chunks, into the server's guarded decoder: no panic, and
    /// while it waits for more it never holds more than one frame of the limit (plus its
    /// 14-byte header).
    #[test]
    fn guard_never_buffers_past_the_limit_on_noise(
        chunks in prop::collection::vec(prop::collection::vec(any::<u8>(), 0..300), 0..12),
        max in 1usize..512,
    ) {
        feed_and_check(chunks, max)?;
    }

    /// The same with well-formed headers that declare any length (7-, 16- or 64-bit), followed
    /// by payload in random chunks: a declared length over the limit is refused at the header,
    /// so the buffer never grows toward it (actix-http's codec alone would buffer it all).
    #[test]
    fn guard_never_buffers_past_the_limit_on_forged_headers(
        declared in prop_oneof![0u64..126, 126u64..65_536, 65_536u64..(1 << 40)],
        chunks in prop::collection::vec(prop::collection::vec(any::<u8>(), 1..400), 1..12),
        max in 1usize..512,
    ) {
        let mut wire = vec![0x82u8];
        match declared {
            0..=125 => wire.push(0x80 | declared as u8),
            126..=65_535 => {
                wire.push(0x80 | 126);
                wire.extend_from_slice(&(declared as u16).to_be_bytes());
            }
            _ => {
                wire.push(0x80 | 127);
                wire.extend_from_slice(&declared.to_be_bytes());
            }
        }
        wire.extend_from_slice(&[1, 2, 3, 4]); // the mask
        let mut all = vec![wire];
        all.extend(chunks);
        feed_and_check(all, max)?;
    }

    /// Well-formed frames of any size up to the limit pass the guard whole; one byte more is
    /// refused, with nothing buffered beyond the header.
    #[test]
    fn guard_passes_up_to_the_limit(len in 0usize..2048, max in 1usize..2048) {
        let mut peer = Codec::new().client_mode();
        let mut wire = BytesMut::new();
        peer.encode(Message::Binary(vec![7u8; len].into()), &mut wire).unwrap();
        let mut codec = FrameCodec::server(max);
        let decoded = codec.decode(&mut wire);
        if len <= max {
            let frame = decoded.unwrap();
            prop_assert!(matches!(frame, Some(Frame::Binary(ref b)) if b.len() == len), "{frame:?}");
        } else {
            prop_assert!(decoded.is_err());
        }
    }
}

/// The input proptest found (its first chunk, limit 2): a violation, skipped frames, then the
/// start of a Close of 46 bytes, which is buffered whole (48 bytes > the limit + 14, < 139).
#[test]
fn a_close_after_a_violation_is_buffered_whole_but_no_more() {
    let first: Vec<u8> = vec![
        0, 47, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
        0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 36, 0, 0, 0, 0, 0, 0, 0, 0, 0,
        0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 14, 149, 188, 152, 239, 133, 201, 160,
        39, 31, 8, 233, 1, 223, 183, 254, 175, 101, 243, 59, 117, 198, 66, 77, 5, 236, 247, 68, 76,
        184, 101, 91, 246, 83, 159, 227, 9, 107, 191, 149, 45, 15, 239, 163, 64, 61, 60, 160, 153,
        243, 87, 150, 184, 134, 88, 60, 254, 228, 54, 241, 231, 157, 114, 47, 224, 84, 230, 41,
        119, 7, 67, 245, 28, 56, 109, 106, 169, 203, 128, 255, 118, 2, 84, 121, 118, 172, 227, 229,
        107, 165, 211, 70, 195, 254, 90, 115, 145, 240, 134, 166, 107, 98, 163, 111, 1, 66, 145,
        54, 79, 48, 149, 184, 204, 51, 8, 148, 167, 59, 4, 143, 207, 136, 46, 81, 202, 191, 37,
        238, 233, 254, 229, 62, 21, 32, 215, 171, 121, 212, 169, 155, 45, 195, 17, 179, 228, 174,
        141, 171, 25, 225, 149, 86, 225, 60, 73, 57, 172,
    ];
    feed_and_check(vec![first], 2).expect("bounded by one Close frame");
}
