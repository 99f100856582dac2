//! The ranges of the numeric flags of every `wsm` command, and the parsers that hold them.
//!
//! Every number and duration a user types is checked while clap parses the command line, so an
//! out-of-range value ends `wsm` with clap's one-line error naming the flag and the range
//! (status 2), before anything starts. Without these bounds a typo such as
//! `--size 18446744073709551615` overflowed arithmetic or allocations (a panic), and
//! `--duration 1000000000years` overflowed timer arithmetic. The bounds are far beyond any real
//! run and well inside what the code can compute with.

use std::ops::RangeInclusive;
use std::time::Duration;

use actix_ws_manager::config::MAX_CONFIG_DURATION;
use clap::builder::RangedU64ValueParser;

/// Most connections `wsm load` opens, and most rooms or senders per room it spreads them over:
/// a million is past one machine's open-file limits and loopback ports already.
pub const MAX_CONNECTIONS: u64 = 1_000_000;

/// Most sessions `wsm serve` admits (`--max-sessions`, `--max-per-ip`): ten times
/// [`MAX_CONNECTIONS`], still far from what the server's counters can count.
pub const MAX_SESSIONS: u64 = 10_000_000;

/// Largest message size a flag may set (`--max-message-size`): 1 GiB. A WebSocket message that
/// large is already a mistake; the bound keeps size arithmetic far from overflowing.
pub const MAX_MESSAGE_SIZE: u64 = 1 << 30;

/// Most messages per second a rate flag may give (`--rate`, `--connect-rate`, `--publish-rate`,
/// `--rate-limit`, `--rate-burst`): a million, beyond what one process sends or accepts.
pub const MAX_PER_SECOND: u64 = 1_000_000;

/// Fewest events per second a fractional rate may give (`--rate`, `--connect-rate`,
/// `--publish-rate`): one every 100 seconds, so that one interval stays a representable
/// duration.
pub const MIN_PER_SECOND: f64 = 0.01;

/// Most echo messages in flight per connection (`wsm load --window`).
pub const MAX_WINDOW: u64 = 10_000;

/// Most client arbiters (threads) `wsm load --arbiters` starts.
pub const MAX_ARBITERS: u64 = 1024;

/// A count flag held to `range` (as a `usize`; every bound here fits one on 64-bit and 32-bit
/// targets alike). clap's error says "N is not in A..=B" after naming the flag.
pub fn count(range: RangeInclusive<u64>) -> RangedU64ValueParser<usize> {
    RangedU64ValueParser::<usize>::new().range(range)
}

/// A duration flag such as `10s`, `500ms` or `2h 30m` (humantime): above zero and at most 365
/// days ([`MAX_CONFIG_DURATION`], the longest the library's timers take). Zero means "off" for
/// no flag here (each has its own way to turn its feature off), so it is refused too.
pub fn duration(text: &str) -> Result<Duration, String> {
    let value = humantime::parse_duration(text).map_err(|e| format!("not a duration ({e})"))?;
    if value.is_zero() {
        return Err("must be above zero, such as 500ms or 10s".into());
    }
    if value > MAX_CONFIG_DURATION {
        return Err("must be at most 365 days".into());
    }
    Ok(value)
}

/// A rate flag in events per second, fractions allowed: a finite number from
/// [`MIN_PER_SECOND`] to [`MAX_PER_SECOND`].
pub fn per_second(text: &str) -> Result<f64, String> {
    let value: f64 = text
        .trim()
        .parse()
        .map_err(|_| "not a number of events per second".to_owned())?;
    let max = MAX_PER_SECOND as f64;
    if !(MIN_PER_SECOND..=max).contains(&value) {
        return Err(format!(
            "must be from {MIN_PER_SECOND} to {MAX_PER_SECOND} per second"
        ));
    }
    Ok(value)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The edges of each parser: in range passes, out of range is refused in words, huge
    /// values do not overflow.
    #[test]
    fn parsers_hold_their_ranges() {
        assert_eq!(duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(duration("365days"), Ok(MAX_CONFIG_DURATION));
        for refused in [
            "0s",
            "366days",
            "1000000000years",
            "99999999999999999999years",
            "x",
        ] {
            assert!(duration(refused).is_err(), "{refused}");
        }
        assert_eq!(per_second("0.01"), Ok(0.01));
        assert_eq!(per_second("1000000"), Ok(1e6));
        for refused in ["0", "-1", "1e308", "inf", "NaN", "0.001", "x"] {
            assert!(per_second(refused).is_err(), "{refused}");
        }
    }
}
