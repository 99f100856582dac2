//! Helpers shared by the integration tests, one kind per file; everything a test names as
//! `common::X` is re-exported here. Tests wait on channels and deadlines, never on sleeps.
//!
//! - `wait.rs`: receiving from channels within a deadline ([`recv_within`], [`recv_until`],
//!   [`wait_state`]), on the test kit's waits.
//! - `setup.rs`: test configurations ([`test_config`], [`client_test_config`]), a standalone
//!   server on a free port ([`start_server`]), JSON literals ([`j`]).
//! - `awc_peer.rs`: [`Peer`], an awc client for server tests that answers pings on its own.
//! - `raw.rs`: a raw TCP WebSocket client that answers nothing and writes any bytes.
//! - `peer.rs`: a scriptable WebSocket *server* for client tests; `client.rs`: what those tests
//!   share (their message type, state summaries).
//! - `flood.rs`: a raw server flooding a client, a slow actor subscriber, peak RSS.
//! - `oversize.rs`: the forged 1 GiB frame of the frame-guard tests and its memory bounds.
//! - `pki.rs`: certificates made at test time.
//! - `process.rs`: child processes killed when dropped, their files, `wsm serve`.
//! - `load.rs`: running the built `wsm load` within a bound, its JSON report and error lines.
//! - `flags.rs`: out-of-range flag values and the check that `wsm` refuses them.
//! - `redis.rs`: a real `redis-server` on a free port.
//! - `cluster.rs`: Redis backplane nodes, members and look-ups.
//! - `prom.rs`: reading Prometheus text.
//! - `jwt.rs`: tokens, JWT servers and refused upgrades for the JWT tests.
// Each test binary uses some of these helpers, so the rest are unused there.
#![allow(dead_code, unused_imports)]

pub mod awc_peer;
pub mod client;
pub mod cluster;
pub mod flags;
pub mod flood;
pub mod jwt;
pub mod load;
pub mod oversize;
pub mod peer;
pub mod pki;
pub mod process;
pub mod prom;
pub mod python;
pub mod raw;
pub mod redis;
pub mod setup;
pub mod wait;

use std::time::Duration;

pub use awc_peer::Peer;
#[cfg(unix)]
pub use flags::assert_flag_refused;
pub use flags::{EXTREME_COUNTS, EXTREME_DURATIONS, EXTREME_RATES};
pub use pki::{self_signed_ca_cert, test_pki};
#[cfg(unix)]
pub use process::{spawn_wsm_serve, spawn_wsm_serve_lines};
pub use process::{KillOnDrop, TempFiles};
pub use redis::RedisServer;
pub use setup::{client_test_config, j, start_server, test_config};
pub use wait::{recv_until, recv_within, wait_state};

/// Default time a test waits for an event before it fails.
pub const WAIT: Duration = Duration::from_secs(10);

/// `len` characters that permessage-deflate (on by default on both sides) cannot shrink much
/// (about 6 bits of entropy per character): for tests whose point is the bytes a slow link or a
/// full queue must carry, where a repeated pad would compress to almost nothing.
pub fn incompressible(len: usize, seed: u64) -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            ALPHABET[(x % 64) as usize] as char
        })
        .collect()
}
