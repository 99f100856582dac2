use proptest::prelude::*;

use super::*;

const LIMITS: Limits = Limits {
    max_held: 8,
    max_held_bytes: 1 << 20,
    fill_limit: 4,
};

fn at(epoch: &str, offset: u64) -> Position {
    Position {
        epoch: epoch.to_owned(),
        offset,
    }
}

fn joined(streams: &mut Streams<u64>, epoch: &str, offset: u64) {
    let out = streams.joined(
        "r",
        JoinedAt {
            position: at(epoch, offset),
            recovered: None,
            reason: None,
        },
    );
    assert!(out.recovery.is_none());
}

/// The history of a server that keeps everything: publications after `since`, at most `limit`.
fn answer(streams: &mut Streams<u64>, req: &FillRequest, head: u64) -> Outcome<u64> {
    let end = (req.since.offset + req.limit).min(head);
    let pubs = (req.since.offset + 1..=end).map(|o| (o, o)).collect();
    streams.filled("r", req.fill, at(&req.since.epoch, head), pubs, end == head)
}

#[test]
fn in_order_messages_are_delivered_and_duplicates_dropped() {
    let mut s = Streams::new(LIMITS);
    joined(&mut s, "e", 10);
    assert_eq!(s.live("r", "e", 11, 11, 1).deliver, vec![11]);
    let dup = s.live("r", "e", 11, 11, 1);
    assert!(dup.deliver.is_empty());
    assert_eq!(dup.duplicates, 1);
    assert_eq!(s.live("r", "e", 9, 9, 1).duplicates, 1);
    assert_eq!(s.since("r"), Some(at("e", 11)));
}

#[test]
fn a_gap_is_filled_from_history_and_later_messages_wait_for_it() {
    let mut s = Streams::new(LIMITS);
    joined(&mut s, "e", 0);
    let out = s.live("r", "e", 4, 4, 1);
    assert!(out.deliver.is_empty());
    let req = out.request.expect("a fill");
    assert_eq!((req.since.clone(), req.limit), (at("e", 0), 3));
    assert!(s.live("r", "e", 5, 5, 1).deliver.is_empty());
    let filled = answer(&mut s, &req, 5);
    assert_eq!(filled.deliver, vec![1, 2, 3, 4, 5]);
    let rec = filled.recovery.expect("reported");
    assert!(rec.recovered);
    assert_eq!(rec.missed, 3);
    assert_eq!(s.live("r", "e", 6, 6, 1).deliver, vec![6]);
}

#[test]
fn a_gap_longer_than_one_answer_is_asked_for_again() {
    let mut s = Streams::new(LIMITS);
    joined(&mut s, "e", 0);
    let req = s.live("r", "e", 10, 10, 1).request.expect("a fill");
    assert_eq!(req.limit, 4);
    let first = answer(&mut s, &req, 10);
    assert_eq!(first.deliver, vec![1, 2, 3, 4]);
    let again = first.request.expect("the rest");
    assert_eq!(again.since, at("e", 4));
    let second = answer(&mut s, &again, 10);
    assert_eq!(second.deliver, vec![5, 6, 7, 8]);
    let third = answer(&mut s, &second.request.expect("the rest"), 10);
    assert_eq!(third.deliver, vec![9, 10]);
    assert_eq!(
        third.recovery.map(|r| (r.recovered, r.missed)),
        Some((true, 9))
    );
}

#[test]
fn history_that_no_longer_holds_the_gap_gives_up_with_too_old() {
    let mut s = Streams::new(LIMITS);
    joined(&mut s, "e", 0);
    let req = s.live("r", "e", 5, 5, 1).request.expect("a fill");
    // The server kept only 3 and 4.
    let out = s.filled("r", req.fill, at("e", 5), vec![(3, 3), (4, 4)], false);
    assert_eq!(out.deliver, vec![3, 4, 5]);
    let rec = out.recovery.expect("reported");
    assert_eq!((rec.recovered, rec.missed), (false, 2));
    assert_eq!(rec.reason.as_deref(), Some("too_old"));
}

#[test]
fn too_many_held_messages_give_the_fill_up() {
    let mut s = Streams::new(LIMITS);
    joined(&mut s, "e", 0);
    let req = s.live("r", "e", 2, 2, 1).request.expect("a fill");
    for o in 3..=9 {
        assert!(s.live("r", "e", o, o, 1).deliver.is_empty());
    }
    let out = s.live("r", "e", 10, 10, 1);
    assert_eq!(out.deliver, (2..=10).collect::<Vec<_>>());
    let rec = out.recovery.expect("reported");
    assert_eq!((rec.missed, rec.reason.as_deref()), (1, Some("too_many")));
    // The late answer changes nothing.
    assert!(answer(&mut s, &req, 10).deliver.is_empty());
}

#[test]
fn another_epoch_starts_the_position_again_and_is_reported() {
    let mut s = Streams::new(LIMITS);
    joined(&mut s, "e", 7);
    let out = s.live("r", "f", 1, 1, 1);
    assert_eq!(out.deliver, vec![1]);
    assert_eq!(
        out.recovery.and_then(|r| r.reason),
        Some("epoch_changed".to_owned())
    );
    assert_eq!(s.since("r"), Some(at("f", 1)));
}

#[test]
fn a_rejoin_answer_reports_recovered_or_why_not() {
    let mut s = Streams::new(LIMITS);
    joined(&mut s, "e", 5);
    let ok = s.joined(
        "r",
        JoinedAt {
            position: at("e", 9),
            recovered: Some(true),
            reason: None,
        },
    );
    assert_eq!(
        ok.recovery.map(|r| (r.recovered, r.missed)),
        Some((true, 4))
    );
    assert_eq!(s.since("r"), Some(at("e", 5)), "the replay moves it on");
    let lost = s.joined(
        "r",
        JoinedAt {
            position: at("e", 20),
            recovered: Some(false),
            reason: Some("too_old".into()),
        },
    );
    let rec = lost.recovery.expect("reported");
    assert_eq!((rec.recovered, rec.missed), (false, 15));
    assert_eq!(s.since("r"), Some(at("e", 20)));
}

#[test]
fn a_lost_socket_ends_the_fill_and_keeps_the_last_delivered_position() {
    let mut s = Streams::new(LIMITS);
    joined(&mut s, "e", 3);
    let req = s.live("r", "e", 6, 6, 1).request.expect("a fill");
    s.disconnected();
    assert_eq!(s.since("r"), Some(at("e", 3)));
    assert!(s
        .fill_failed("r", req.fill, "unavailable")
        .recovery
        .is_none());
    assert_eq!(s.live("r", "e", 4, 4, 1).deliver, vec![4]);
}

/// One live delivery, or the answer to the oldest open fill request.
#[derive(Debug, Clone)]
enum Step {
    Live(u64),
    Answer,
}

fn steps() -> impl Strategy<Value = Vec<Step>> {
    // Offsets that drift upwards with repeats and skips, as a lossy, replaying link delivers.
    prop::collection::vec(
        prop_oneof![
            6 => (0u64..4).prop_map(Step::Live),
            1 => (0u64..4).prop_map(|back| Step::Live(100 + back)),
            3 => Just(Step::Answer),
        ],
        1..120,
    )
}

proptest! {
    /// Whatever the link drops or repeats, with a server that keeps everything, every
    /// publication up to the highest one seen comes out once, in order.
    #[test]
    fn deliveries_are_exactly_once_and_in_order(steps in steps()) {
        let limits = Limits { max_held: 1000, max_held_bytes: usize::MAX, fill_limit: 3 };
        let mut s = Streams::new(limits);
        joined(&mut s, "e", 0);
        let (mut head, mut highest) = (0u64, 0u64);
        let mut open: Vec<FillRequest> = Vec::new();
        let mut out = Vec::new();
        let mut take = |o: Outcome<u64>, open: &mut Vec<FillRequest>| {
            out.extend(o.deliver);
            if let Some(r) = o.request { open.push(r); }
            if let Some(r) = o.recovery { assert!(r.recovered, "{r:?}"); }
        };
        for step in steps {
            match step {
                Step::Live(d) => {
                    // d = 0..3: a step forward of d (0: a repeat); 100+b: b back (a replay).
                    let offset = if d >= 100 { head.saturating_sub(d - 100).max(1) } else { head + d };
                    if offset == 0 { continue; }
                    head = head.max(offset);
                    highest = highest.max(offset);
                    // As the Router does: the in-order step first.
                    if s.advance("r", "e", offset) {
                        take(Outcome { deliver: vec![offset], ..Outcome::default() }, &mut open);
                    } else {
                        take(s.live("r", "e", offset, offset, 1), &mut open);
                    }
                }
                Step::Answer => {
                    if !open.is_empty() {
                        let req = open.remove(0);
                        let o = answer(&mut s, &req, head);
                        take(o, &mut open);
                    }
                }
            }
        }
        while !open.is_empty() {
            let req = open.remove(0);
            let o = answer(&mut s, &req, head);
            take(o, &mut open);
        }
        prop_assert_eq!(out, (1..=highest).collect::<Vec<_>>());
    }
}

#[test]
fn a_room_without_a_position_is_not_tracked() {
    let mut s = Streams::new(LIMITS);
    assert_eq!(s.live("x", "e", 5, 5, 1).deliver, vec![5]);
    assert!(s.is_empty());
    assert!(!s.advance("x", "e", 6));
}

#[test]
fn held_bytes_are_bounded_across_rooms() {
    let limits = Limits {
        max_held: 100,
        max_held_bytes: 10,
        fill_limit: 4,
    };
    let mut s = Streams::new(limits);
    for room in ["a", "b"] {
        s.joined(
            room,
            JoinedAt {
                position: at("e", 0),
                recovered: None,
                reason: None,
            },
        );
    }
    assert!(s.live("a", "e", 2, 2, 6).request.is_some());
    assert!(s.live("b", "e", 2, 2, 4).request.is_some());
    let out = s.live("b", "e", 3, 3, 1);
    assert_eq!(out.deliver, vec![2, 3], "b went past the shared bound");
    assert_eq!(
        out.recovery.and_then(|r| r.reason).as_deref(),
        Some("too_many")
    );
}

#[test]
fn a_rejoin_answered_too_many_is_caught_up_from_history_page_by_page() {
    let mut s = Streams::new(LIMITS);
    joined(&mut s, "e", 5);
    let out = s.joined(
        "r",
        JoinedAt {
            position: at("e", 20),
            recovered: Some(false),
            reason: Some("too_many".into()),
        },
    );
    assert!(
        out.recovery.is_none(),
        "not reported until the catch-up ends"
    );
    let mut req = out.request.expect("a page");
    assert_eq!((req.since.clone(), req.limit), (at("e", 5), 4));
    // A live message arrives meanwhile: it waits.
    assert!(s.live("r", "e", 21, 21, 1).deliver.is_empty());
    let mut got = Vec::new();
    loop {
        let out = answer(&mut s, &req, 21);
        got.extend(out.deliver);
        match (out.request, out.recovery) {
            (Some(next), None) => req = next,
            (None, Some(r)) => {
                assert_eq!((r.recovered, r.missed), (true, 15));
                break;
            }
            other => panic!("{other:?}"),
        }
    }
    assert_eq!(got, (6..=21).collect::<Vec<_>>());
}

#[test]
fn a_catch_up_the_history_cannot_serve_ends_at_the_rejoin_position() {
    let mut s = Streams::new(LIMITS);
    joined(&mut s, "e", 5);
    let req = s
        .joined(
            "r",
            JoinedAt {
                position: at("e", 20),
                recovered: Some(false),
                reason: Some("too_many".into()),
            },
        )
        .request
        .expect("a page");
    let out = s.filled("r", req.fill, at("e", 20), Vec::new(), false);
    let rec = out.recovery.expect("reported");
    assert_eq!((rec.recovered, rec.missed), (false, 15));
    assert_eq!(s.since("r"), Some(at("e", 20)));
    assert_eq!(s.live("r", "e", 21, 21, 1).deliver, vec![21]);
}
