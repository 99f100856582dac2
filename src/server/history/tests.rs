//! The history store's bounds and answers, without a hub.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytestring::ByteString;

use super::{History, Position, Unrecovered};
use crate::config::HistoryConfig;

fn room(name: &str) -> Arc<str> {
    Arc::from(name)
}

/// Publish `n` frames of `len` bytes to `room`; answers the epoch.
fn publish(h: &mut History, room: &Arc<str>, n: usize, len: usize, now: Instant) -> String {
    let mut epoch = String::new();
    for _ in 0..n {
        let (offset, e) = h.next_position(room, now);
        epoch = e.to_string();
        let body = format!("{offset:0len$}");
        h.append(room, ByteString::from(body), now);
    }
    epoch
}

fn since(offset: u64, epoch: &str) -> Position {
    Position {
        offset,
        epoch: epoch.to_owned(),
    }
}

fn offsets(frames: &[ByteString]) -> Vec<u64> {
    frames
        .iter()
        .map(|f| f.trim().parse().unwrap_or(0))
        .collect()
}

#[test]
fn recovery_gives_exactly_what_was_missed_or_says_why_not() {
    let config = HistoryConfig::default().size(10).recover_limit(5);
    let mut h = History::new(config);
    let (r, now) = (room("r"), Instant::now());
    let epoch = publish(&mut h, &r, 8, 4, now);

    let (read, failed) = h.recover(&r, &since(5, &epoch), now);
    assert_eq!(failed, None);
    assert_eq!(
        (read.offset, offsets(&read.publications)),
        (8, vec![6, 7, 8])
    );

    let (read, failed) = h.recover(&r, &since(8, &epoch), now);
    assert_eq!(
        (failed, read.publications.len()),
        (None, 0),
        "nothing missed"
    );

    let (_, failed) = h.recover(&r, &since(2, &epoch), now);
    assert_eq!(failed, Some(Unrecovered::TooMany), "6 missed, limit 5");

    let (_, failed) = h.recover(&r, &since(3, "another"), now);
    assert_eq!(failed, Some(Unrecovered::EpochChanged));
    let (_, failed) = h.recover(&r, &since(9, &epoch), now);
    assert_eq!(
        failed,
        Some(Unrecovered::EpochChanged),
        "a position it never had"
    );

    // 20 publications in a room that keeps 10: 1..=10 are gone, and 11 more than the limit.
    publish(&mut h, &r, 12, 4, now);
    let (_, failed) = h.recover(&r, &since(9, &epoch), now);
    assert_eq!(failed, Some(Unrecovered::TooMany));
    let (read, failed) = h.recover(&r, &since(16, &epoch), now);
    assert_eq!(failed, None);
    assert_eq!(offsets(&read.publications), vec![17, 18, 19, 20]);

    // A room that keeps 3: 5 missed is within the limit, but 4 and 5 are gone.
    let mut h = History::new(HistoryConfig::default().size(3).recover_limit(5));
    let epoch = publish(&mut h, &r, 8, 4, now);
    let (_, failed) = h.recover(&r, &since(3, &epoch), now);
    assert_eq!(failed, Some(Unrecovered::TooOld));
}

#[test]
fn per_room_bytes_and_the_total_budget_hold() {
    // 1 KiB per room; 64 KiB for everything: 200 rooms of 1 KiB each cannot all stay.
    let config = HistoryConfig::default()
        .max_bytes(1024)
        .total_bytes(64 * 1024);
    let mut h = History::new(config);
    let now = Instant::now();
    for i in 0..200 {
        let r = room(&format!("room-{i}"));
        publish(&mut h, &r, 30, 100, now);
        assert!(h.bytes() <= 64 * 1024, "room {i}: {} bytes", h.bytes());
    }
    // The most recently published room keeps its newest publications within 1 KiB.
    let last = room("room-199");
    let read = h.read(&last, None, 300, now);
    assert!(!read.publications.is_empty());
    let kept: usize = read.publications.iter().map(|p| p.len()).sum();
    assert!(kept <= 1024, "{kept}");
    assert_eq!(offsets(&read.publications).last(), Some(&30));
    // The least recently published room lost its publications first.
    let first = h.read(&room("room-0"), None, 300, now);
    assert!(first.publications.is_empty());
    assert_eq!(first.offset, 30, "its position is kept");
    assert!(!first.complete);
}

#[test]
fn expiry_forgets_rooms_without_members_and_keeps_positions_of_rooms_with() {
    let ttl = Duration::from_secs(120);
    let mut h = History::new(HistoryConfig::default().ttl(ttl));
    let now = Instant::now();
    let (kept, gone) = (room("kept"), room("gone"));
    let epoch = publish(&mut h, &kept, 3, 10, now);
    publish(&mut h, &gone, 3, 10, now);
    let before = h.bytes();

    h.expire(now + ttl / 2, |_| false);
    assert_eq!(h.bytes(), before, "nothing expires before the TTL");

    h.expire(now + ttl, |r| r == "kept");
    assert_eq!(h.rooms(), 1);
    assert!(h.bytes() < before / 2);
    // Nothing was published since 3: a member that has 3 recovers; one that has 1 cannot.
    let later = now + ttl;
    let (_, failed) = h.recover(&kept, &since(3, &epoch), later);
    assert_eq!(failed, None);
    let (_, failed) = h.recover(&kept, &since(1, &epoch), later);
    assert_eq!(failed, Some(Unrecovered::TooOld));
    // The forgotten room starts a new epoch.
    let (offset, new_epoch) = h.position(&gone, later);
    assert_eq!(offset, 0);
    assert_ne!(&*new_epoch, epoch);
    // Everything goes once no room has members.
    h.expire(later + ttl * 2, |_| false);
    assert_eq!((h.rooms(), h.bytes()), (0, 0));
}

#[test]
fn history_reads_say_whether_they_are_complete() {
    let mut h = History::new(HistoryConfig::default().size(10));
    let (r, now) = (room("r"), Instant::now());
    let epoch = publish(&mut h, &r, 6, 4, now);
    let read = h.read(&r, None, 300, now);
    assert_eq!(
        (offsets(&read.publications), read.complete),
        ((1..=6).collect(), true)
    );
    let read = h.read(&r, None, 2, now);
    assert_eq!(
        (offsets(&read.publications), read.complete),
        (vec![5, 6], false)
    );
    let read = h.read(&r, Some(&since(2, &epoch)), 2, now);
    assert_eq!(
        (offsets(&read.publications), read.complete),
        (vec![3, 4], false)
    );
    let read = h.read(&r, Some(&since(2, &epoch)), 300, now);
    assert_eq!(
        (offsets(&read.publications), read.complete),
        (vec![3, 4, 5, 6], true)
    );
    let read = h.read(&r, Some(&since(2, "other")), 300, now);
    assert!(!read.complete);
    publish(&mut h, &r, 10, 4, now);
    let read = h.read(&r, Some(&since(2, &epoch)), 300, now);
    assert_eq!(
        (offsets(&read.publications), read.complete),
        ((7..=16).collect(), false)
    );
}
