//! Negotiation on both sides, round trips, window bits, bombs and invalid data.

use proptest::prelude::*;

use super::negotiate::{client_accept, client_offer, server_accept};
use super::*;
use crate::ws::Fault;
use bytes::Bytes;

fn on() -> DeflateConfig {
    DeflateConfig {
        enabled: true,
        ..DeflateConfig::default()
    }
}

fn dir(window_bits: u8, no_context_takeover: bool) -> Direction {
    Direction {
        window_bits,
        no_context_takeover,
    }
}

fn code(r: Result<(), Fault>) -> u16 {
    match r {
        Err(Fault::Violation { code, .. }) => code,
        other => panic!("expected a violation, got {other:?}"),
    }
}

#[test]
fn server_answers_a_browser_offer_asking_no_context_takeover_both_ways() {
    let (answer, agreed) =
        server_accept("permessage-deflate; client_max_window_bits", &on()).unwrap();
    assert_eq!(
        answer,
        "permessage-deflate; server_no_context_takeover; client_no_context_takeover"
    );
    assert_eq!(agreed.send, Some(dir(15, true)));
    assert_eq!(agreed.receive, dir(15, true));
    assert_eq!(agreed.threshold, 256);
    assert!(server_accept("permessage-deflate", &DeflateConfig::off()).is_none());
    assert!(server_accept("", &on()).is_none());
    assert!(server_accept("x-webkit-deflate-frame", &on()).is_none());
}

#[test]
fn server_declines_malformed_or_repeated_offers_and_takes_the_next() {
    let declined = [
        "permessage-deflate; server_no_context_takeover; server_no_context_takeover",
        "permessage-deflate; client_max_window_bits; client_max_window_bits=10",
        "permessage-deflate; server_max_window_bits=10; server_max_window_bits=10",
        "permessage-deflate; server_max_window_bits",
        "permessage-deflate; server_max_window_bits=16",
        "permessage-deflate; server_max_window_bits=7",
        "permessage-deflate; server_max_window_bits=08",
        "permessage-deflate; client_max_window_bits=0x0f",
        "permessage-deflate; server_no_context_takeover=1",
        "permessage-deflate; mystery",
        "permessage-deflate; client_max_window_bits=\"1 0\"",
        "permessage-deflate; =10",
        "permessage deflate",
    ];
    for bad in declined {
        assert!(server_accept(bad, &on()).is_none(), "{bad}");
        let header =
            format!("{bad}, x-other; a=\"b,c\", permessage-deflate; server_max_window_bits=12");
        let (answer, agreed) = server_accept(&header, &on()).unwrap_or_else(|| panic!("{header}"));
        assert!(answer.ends_with("server_max_window_bits=12"), "{answer}");
        assert_eq!(agreed.send, Some(dir(12, true)));
    }
    assert!(server_accept("permessage-deflate; a=\"open", &on()).is_none());
    // A quoted value is the token inside it.
    let (answer, agreed) =
        server_accept("Permessage-Deflate; client_max_window_bits=\"10\"", &on()).unwrap();
    assert!(answer.ends_with("client_max_window_bits=10"), "{answer}");
    assert_eq!(agreed.receive, dir(10, true));
}

#[test]
fn server_honours_what_the_offer_asks_and_its_own_limits() {
    // A server keeping context (no_context_takeover false) still resets when the client asks.
    let keep = DeflateConfig {
        no_context_takeover: false,
        peer_no_context_takeover: false,
        ..on()
    };
    let (answer, agreed) = server_accept("permessage-deflate", &keep).unwrap();
    assert_eq!(answer, "permessage-deflate");
    assert_eq!(
        (agreed.send, agreed.receive),
        (Some(dir(15, false)), dir(15, false))
    );
    let (answer, agreed) = server_accept(
        "permessage-deflate; server_no_context_takeover; client_no_context_takeover",
        &keep,
    )
    .unwrap();
    assert_eq!(
        answer,
        "permessage-deflate; server_no_context_takeover; client_no_context_takeover"
    );
    assert_eq!(
        (agreed.send, agreed.receive),
        (Some(dir(15, true)), dir(15, true))
    );
    // 8 bits asked of the server: accepted, and nothing is compressed (module docs).
    let (answer, agreed) =
        server_accept("permessage-deflate; server_max_window_bits=8", &on()).unwrap();
    assert!(answer.ends_with("server_max_window_bits=8"), "{answer}");
    assert_eq!(agreed.send, None);
    assert!(agreed.deflater().is_none());
    // The server's own limits: its window, and the client's when the client allows asking.
    let small = DeflateConfig {
        max_window_bits: 10,
        peer_max_window_bits: 11,
        ..on()
    };
    let (answer, agreed) =
        server_accept("permessage-deflate; client_max_window_bits", &small).unwrap();
    assert!(
        answer.ends_with("server_max_window_bits=10; client_max_window_bits=11"),
        "{answer}"
    );
    assert_eq!(
        (agreed.send, agreed.receive),
        (Some(dir(10, true)), dir(11, true))
    );
    let (answer, agreed) = server_accept("permessage-deflate", &small).unwrap();
    assert!(!answer.contains("client_max_window_bits"), "{answer}");
    assert_eq!(agreed.receive, dir(15, true));
}

#[test]
fn client_offers_and_checks_the_answer() {
    assert_eq!(
        client_offer(&on()).unwrap(),
        "permessage-deflate; client_no_context_takeover; server_no_context_takeover; client_max_window_bits"
    );
    assert_eq!(client_offer(&DeflateConfig::off()), None);
    let plain = DeflateConfig {
        no_context_takeover: false,
        peer_no_context_takeover: false,
        ..on()
    };
    assert_eq!(
        client_offer(&plain).unwrap(),
        "permessage-deflate; client_max_window_bits"
    );
    assert_eq!(client_accept("", &on()), Ok(None));
    let agreed = client_accept("permessage-deflate; server_no_context_takeover", &on())
        .unwrap()
        .unwrap();
    assert_eq!(
        (agreed.send, agreed.receive),
        (Some(dir(15, true)), dir(15, true))
    );
    let agreed = client_accept(
        "permessage-deflate; client_max_window_bits=9; server_max_window_bits=10",
        &plain,
    )
    .unwrap()
    .unwrap();
    assert_eq!(
        (agreed.send, agreed.receive),
        (Some(dir(9, false)), dir(10, false))
    );
    let agreed = client_accept("permessage-deflate; client_max_window_bits=8", &plain)
        .unwrap()
        .unwrap();
    assert_eq!(agreed.send, None);
    let refused = [
        "permessage-deflate",
        "permessage-deflate; server_no_context_takeover; server_no_context_takeover",
        "permessage-deflate; server_no_context_takeover; client_max_window_bits",
        "permessage-deflate; server_no_context_takeover; client_max_window_bits=16",
        "permessage-deflate; server_no_context_takeover; server_max_window_bits",
        "permessage-deflate; server_no_context_takeover; mystery=1",
        "permessage-deflate; server_no_context_takeover, permessage-deflate",
        "x-webkit-deflate-frame",
        "permessage-deflate; server_no_context_takeover; a=\"",
    ];
    for bad in refused {
        assert!(client_accept(bad, &on()).is_err(), "{bad}");
    }
    assert!(client_accept("permessage-deflate", &DeflateConfig::off()).is_err());
    let small = DeflateConfig {
        max_window_bits: 10,
        peer_max_window_bits: 11,
        ..plain
    };
    assert_eq!(
        client_offer(&small).unwrap(),
        "permessage-deflate; server_max_window_bits=11; client_max_window_bits=10"
    );
    for bad in [
        "permessage-deflate",
        "permessage-deflate; server_max_window_bits=12",
        "permessage-deflate; server_max_window_bits=11; client_max_window_bits=11",
    ] {
        assert!(client_accept(bad, &small).is_err(), "{bad}");
    }
}

#[test]
fn both_sides_agree_through_their_own_headers() {
    for server in [
        on(),
        DeflateConfig {
            no_context_takeover: false,
            peer_no_context_takeover: false,
            max_window_bits: 12,
            peer_max_window_bits: 9,
            ..on()
        },
    ] {
        for client in [
            on(),
            DeflateConfig {
                no_context_takeover: false,
                peer_no_context_takeover: false,
                max_window_bits: 11,
                peer_max_window_bits: 13,
                ..on()
            },
        ] {
            let offer = client_offer(&client).unwrap();
            let (answer, s) = server_accept(&offer, &server).unwrap();
            let c = client_accept(&answer, &client).unwrap().unwrap();
            assert_eq!(s.send, Some(c.receive), "{offer} / {answer}");
            assert_eq!(c.send, Some(s.receive), "{offer} / {answer}");
        }
    }
}

/// Inflate `payload` split into frames of `frame` bytes.
fn inflate_frames(
    inf: &mut Inflater,
    payload: &[u8],
    frame: usize,
    max: usize,
) -> Result<Vec<u8>, Fault> {
    let mut out = Vec::new();
    let chunks: Vec<&[u8]> = if payload.is_empty() {
        vec![&[][..]]
    } else {
        payload.chunks(frame.max(1)).collect()
    };
    for (i, chunk) in chunks.iter().enumerate() {
        inf.inflate(chunk, i + 1 == chunks.len(), &mut out, max)?;
    }
    Ok(out)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]
    #[test]
    fn messages_round_trip(
        bits in prop_oneof![Just(9u8), Just(15u8), 9u8..=15],
        reset in any::<bool>(),
        frame in 1usize..5000,
        messages in proptest::collection::vec(
            prop_oneof![
                proptest::collection::vec(any::<u8>(), 0..3000),
                (0usize..20_000, any::<u8>()).prop_map(|(n, b)| {
                    (0..n).map(|i| b.wrapping_add((i % 97) as u8)).collect()
                }),
            ],
            1..8,
        ),
    ) {
        let d = dir(bits, reset);
        let mut def = Deflater::new(d, 6, 0);
        let mut inf = Inflater::new(d);
        for m in &messages {
            let Some(payload) = def.compress(m) else {
                // Sent plain: allowed only when nothing is kept between messages.
                prop_assert!(reset);
                continue;
            };
            let got = inflate_frames(&mut inf, &payload, frame, 1 << 20).unwrap();
            prop_assert_eq!(&got, m);
            prop_assert_eq!(inf.holds_state(), !reset);
        }
    }
}

#[test]
fn an_empty_message_is_one_zero_byte() {
    let mut def = Deflater::new(dir(15, true), 6, 0);
    // Compressed it is not smaller, so it goes plain without context takeover...
    assert_eq!(def.compress(b""), None);
    // ... and as the single byte RFC 7692 7.2.3.6 shows with it.
    let mut def = Deflater::new(dir(15, false), 6, 0);
    let payload = def.compress(b"").unwrap();
    assert_eq!(&payload[..], &[0x00]);
    let mut inf = Inflater::new(dir(15, false));
    assert_eq!(inflate_frames(&mut inf, &payload, 10, 100).unwrap(), b"");
    // The RFC's "Hello" (7.2.3.1) inflates.
    let hello = [0xf2, 0x48, 0xcd, 0xc9, 0xc9, 0x07, 0x00];
    assert_eq!(inflate_frames(&mut inf, &hello, 3, 100).unwrap(), b"Hello");
}

#[test]
fn the_threshold_keeps_small_messages_plain() {
    let mut def = Deflater::new(dir(15, true), 6, 256);
    assert_eq!(def.compress(&[b'a'; 255]), None);
    let big = def.compress(&[b'a'; 256]).unwrap();
    assert!(big.len() < 20, "{}", big.len());
}

#[test]
fn the_window_bits_are_honoured() {
    // Repeats 600 bytes apart: a compressor that honours 9 bits (a 512-byte window) cannot
    // reach them and compresses little; with 15 bits it compresses them away. (miniz_oxide
    // ignores window bits: both would be small, and a peer inflating with a 512-byte window
    // would fail on the 600-byte distances; inflating does not check distances against its
    // window while the output still holds them, so the sizes are what tells.)
    let block: Vec<u8> = (0..600u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    let message = block.repeat(20);
    let small = Deflater::new(dir(9, true), 9, 0).compress(&message);
    let big = Deflater::new(dir(15, true), 9, 0)
        .compress(&message)
        .unwrap();
    assert!(big.len() < 1000, "{}", big.len());
    // Not smaller than the message at 9 bits: sent plain, or barely compressed.
    if let Some(small) = &small {
        assert!(small.len() > 4000, "{}", small.len());
        let mut inf = Inflater::new(dir(9, true));
        let got = inflate_frames(&mut inf, small, 1000, 1 << 20).unwrap();
        assert!(got == message, "9-bit round trip differs");
    }
    let mut inf = Inflater::new(dir(15, true));
    let got = inflate_frames(&mut inf, &big, 1000, 1 << 20).unwrap();
    assert!(got == message, "15-bit round trip differs");
}

/// 16 MiB of zeros compressed (about 16 KiB).
fn bomb() -> Bytes {
    Deflater::new(dir(15, false), 9, 0)
        .compress(&vec![0u8; 16 << 20])
        .unwrap()
}

#[test]
fn a_bomb_in_one_frame_is_refused_at_the_limit_with_bounded_memory() {
    let payload = bomb();
    assert!(payload.len() < 64 * 1024, "{}", payload.len());
    let max = 1 << 20;
    let mut inf = Inflater::new(dir(15, true));
    let mut out = Vec::new();
    let r = inf.inflate(&payload, true, &mut out, max);
    assert_eq!(code(r), 1009);
    assert!(out.capacity() <= max + STEP, "grew to {}", out.capacity());
    assert!(!inf.holds_state());
}

#[test]
fn a_bomb_in_small_frames_is_refused_at_the_limit_with_bounded_memory() {
    let payload = bomb();
    let max = 1 << 20;
    let mut inf = Inflater::new(dir(15, true));
    let mut out = Vec::new();
    let mut fault = None;
    for chunk in payload.chunks(100) {
        if let Err(f) = inf.inflate(chunk, false, &mut out, max) {
            fault = Some(f);
            break;
        }
        assert!(out.len() <= max);
    }
    assert!(
        matches!(fault, Some(Fault::Violation { code: 1009, .. })),
        "{fault:?}"
    );
    assert!(out.capacity() <= max + STEP, "grew to {}", out.capacity());
    // A message exactly at the limit is fine.
    let exact = Deflater::new(dir(15, true), 6, 0)
        .compress(&vec![7u8; max])
        .unwrap();
    let got = inflate_frames(&mut Inflater::new(dir(15, true)), &exact, 333, max).unwrap();
    assert_eq!(got.len(), max);
    let over = Deflater::new(dir(15, true), 6, 0)
        .compress(&vec![7u8; max + 1])
        .unwrap();
    let r = inflate_frames(&mut Inflater::new(dir(15, true)), &over, 333, max);
    assert!(
        matches!(r, Err(Fault::Violation { code: 1009, .. })),
        "{r:?}"
    );
}

#[test]
fn invalid_compressed_data_is_1007() {
    let mut inf = Inflater::new(dir(15, true));
    // Block type 3 is reserved.
    let r = inflate_frames(&mut inf, &[0xff, 0xff, 0xff], 10, 1000);
    assert!(
        matches!(r, Err(Fault::Violation { code: 1007, .. })),
        "{r:?}"
    );
    assert!(!inf.holds_state());
}

#[test]
fn a_final_block_inside_a_message_starts_a_new_stream() {
    // BFINAL set (a whole raw deflate stream), then more: both parts inflate.
    let mut c = flate2::Compress::new(flate2::Compression::default(), false);
    let mut stream = Vec::with_capacity(1000);
    c.compress_vec(b"first part ", &mut stream, flate2::FlushCompress::Finish)
        .unwrap();
    let second = Deflater::new(dir(15, false), 6, 0)
        .compress(b"second part")
        .unwrap();
    stream.extend_from_slice(&second);
    let got = inflate_frames(&mut Inflater::new(dir(15, true)), &stream, 4, 1000).unwrap();
    assert_eq!(got, b"first part second part");
}
