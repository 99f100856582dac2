//! [`Deflater`] and [`Inflater`]: one message at a time, with bounded memory.

use std::cell::RefCell;
use std::sync::atomic::{AtomicUsize, Ordering};

use bytes::Bytes;
use flate2::{Compress, Compression, Decompress, FlushCompress, FlushDecompress, Status};

use super::Direction;
use crate::ws::{close, Fault};

/// The inflater's step: it produces at most this many bytes of output before it checks the
/// size limit again, so a decompression bomb costs at most the limit plus one step.
pub const STEP: usize = 32 * 1024;

/// What a sync flush ends with; RFC 7692 strips it from every message and the receiver puts it
/// back (section 7.2.1).
const TAIL: [u8; 4] = [0x00, 0x00, 0xff, 0xff];

/// How many compressors a thread keeps for connections without context takeover (one per
/// window size and level in use; a server normally uses one).
const SHARED_PER_THREAD: usize = 4;

thread_local! {
    /// Compressors shared by every connection of this thread that resets its context after
    /// each message: about 256 KiB each at 15 window bits, which would otherwise be allocated
    /// and zeroed for every message, or kept by every connection.
    static SHARED: RefCell<Vec<(u8, u32, Compress)>> = const { RefCell::new(Vec::new()) };
}

/// Compressors kept between messages (context takeover), in this process.
static KEPT_COMPRESSORS: AtomicUsize = AtomicUsize::new(0);
/// Inflater states held (a message arriving, or the peer's context taken over), in this process.
static INFLATERS: AtomicUsize = AtomicUsize::new(0);
/// What those hold, by zlib's own formula per window (see [`Held::bytes`]).
static HELD_BYTES: AtomicUsize = AtomicUsize::new(0);

/// The deflate state this process holds right now: compressors kept per connection between
/// messages (only with context takeover), and inflaters (while a message arrives, or kept
/// with the peer's context takeover). Without context takeover (the default both ways) it is
/// zero on an idle server or client. Why: with context takeover every connection holds its
/// state for its whole life, so this is the figure that grows with connections.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Held {
    /// Compressors kept between messages.
    pub compressors: usize,
    /// Inflaters holding state.
    pub inflaters: usize,
    /// Bytes they hold, by zlib's formula: a compressor `2^(bits+2)` plus 128 KiB of hash
    /// tables at the default memory level (256 KiB at 15 window bits), an inflater `2^bits`
    /// plus about 7 KiB (39 KiB at 15).
    pub bytes: usize,
}

/// The deflate state held now, across every connection of this process (see [`Held`]).
pub fn held() -> Held {
    Held {
        compressors: KEPT_COMPRESSORS.load(Ordering::Relaxed),
        inflaters: INFLATERS.load(Ordering::Relaxed),
        bytes: HELD_BYTES.load(Ordering::Relaxed),
    }
}

/// A zlib stream counted in [`held`] while it lives.
#[derive(Debug)]
struct Counted<T> {
    inner: T,
    bytes: usize,
    count: &'static AtomicUsize,
}

impl<T> Counted<T> {
    fn new(inner: T, bytes: usize, count: &'static AtomicUsize) -> Self {
        count.fetch_add(1, Ordering::Relaxed);
        HELD_BYTES.fetch_add(bytes, Ordering::Relaxed);
        Self {
            inner,
            bytes,
            count,
        }
    }
}

impl<T> Drop for Counted<T> {
    fn drop(&mut self) {
        self.count.fetch_sub(1, Ordering::Relaxed);
        HELD_BYTES.fetch_sub(self.bytes, Ordering::Relaxed);
    }
}

/// Compresses the messages one endpoint sends. Kept per connection; it holds a compressor only
/// with context takeover (otherwise it borrows its thread's shared one for each message).
#[derive(Debug)]
pub struct Deflater {
    direction: Direction,
    level: u32,
    threshold: usize,
    /// The compressor kept between messages (context takeover only).
    kept: Option<Counted<Compress>>,
}

impl Deflater {
    /// A compressor for `direction`, at zlib `level` (0-9), sending messages under `threshold`
    /// bytes uncompressed. A window of 8 bits is compressed with 9: callers that must honour 8
    /// do not compress at all (see the module docs).
    pub fn new(direction: Direction, level: u32, threshold: usize) -> Self {
        Self {
            direction,
            level: level.min(9),
            threshold,
            kept: None,
        }
    }

    /// What its output depends on besides the message: window bits and level. Two stateless
    /// deflaters with the same settings compress a message to the same bytes.
    pub fn settings(&self) -> (u8, u32) {
        (self.direction.window_bits, self.level)
    }

    /// Messages under this many bytes are not compressed.
    pub fn threshold(&self) -> usize {
        self.threshold
    }

    /// Messages compressed by this deflater depend on nothing sent before (no context
    /// takeover): one compressed copy is valid for every connection with the same agreement.
    pub fn is_stateless(&self) -> bool {
        self.direction.no_context_takeover
    }

    /// The compressed payload for `message` (send it with RSV1 set), or `None` to send the
    /// message as it is: under the threshold, no smaller compressed (only without context
    /// takeover, where the peer's inflater keeps nothing that could get out of step), or a
    /// compressor failure (traced; the kept context is dropped so the next message starts a
    /// fresh one, which the peer's inflater follows whatever window it holds).
    pub fn compress(&mut self, message: &[u8]) -> Option<Bytes> {
        if message.len() < self.threshold {
            return None;
        }
        let bits = self.direction.window_bits.clamp(9, 15);
        let out = if self.direction.no_context_takeover {
            with_shared(bits, self.level, |c| deflate(c, message))
        } else {
            let level = self.level;
            let c = self.kept.get_or_insert_with(|| {
                Counted::new(
                    Compress::new_with_window_bits(Compression::new(level), false, bits),
                    (1 << (bits + 2)) + (128 << 10),
                    &KEPT_COMPRESSORS,
                )
            });
            deflate(&mut c.inner, message)
        };
        match out {
            Ok(out) if self.direction.no_context_takeover && out.len() >= message.len() => None,
            Ok(out) => Some(Bytes::from(out)),
            Err(e) => {
                tracing::warn!(error = %e, "permessage-deflate: compression failed; sent plain");
                self.kept = None;
                None
            }
        }
    }
}

/// Run `f` with this thread's shared compressor for `bits` and `level`, reset afterwards.
fn with_shared<R>(bits: u8, level: u32, f: impl FnOnce(&mut Compress) -> R) -> R {
    let found = SHARED.with(|s| {
        let mut s = s.borrow_mut();
        let i = s.iter().position(|(b, l, _)| *b == bits && *l == level)?;
        Some(s.swap_remove(i).2)
    });
    let mut c = found
        .unwrap_or_else(|| Compress::new_with_window_bits(Compression::new(level), false, bits));
    let out = f(&mut c);
    c.reset();
    SHARED.with(|s| {
        let mut s = s.borrow_mut();
        if s.len() >= SHARED_PER_THREAD {
            s.remove(0);
        }
        s.push((bits, level, c));
    });
    out
}

/// Compress `input` with a sync flush and strip the flush's tail.
fn deflate(c: &mut Compress, input: &[u8]) -> Result<Vec<u8>, String> {
    let start = c.total_in();
    let mut out = Vec::with_capacity(input.len() / 2 + 64);
    loop {
        if out.len() == out.capacity() {
            out.reserve(out.capacity().max(1024));
        }
        let done = usize::try_from(c.total_in() - start).map_err(|e| e.to_string())?;
        let rest = input.get(done..).unwrap_or_default();
        c.compress_vec(rest, &mut out, FlushCompress::Sync)
            .map_err(|e| e.to_string())?;
        let done = usize::try_from(c.total_in() - start).map_err(|e| e.to_string())?;
        if done >= input.len() && out.len() < out.capacity() {
            break;
        }
    }
    if !out.ends_with(&TAIL) {
        return Err("the sync flush did not end with 00 00 ff ff".into());
    }
    out.truncate(out.len() - TAIL.len());
    Ok(out)
}

/// Inflates the compressed messages one endpoint receives, frame by frame, with the size limit
/// on the inflated bytes. Kept per connection; it holds an inflater only while a message is
/// arriving, unless the peer takes its context over.
#[derive(Debug)]
pub struct Inflater {
    direction: Direction,
    state: Option<Counted<Decompress>>,
}

impl Inflater {
    /// An inflater for the peer's `direction`.
    pub fn new(direction: Direction) -> Self {
        Self {
            direction,
            state: None,
        }
    }

    /// Whether an inflater's state is held right now (for tests of idle memory).
    pub fn holds_state(&self) -> bool {
        self.state.is_some()
    }

    /// Inflate `input`, one frame's payload of a compressed message, onto `out`; `last` marks
    /// the message's final frame. Fails with 1009 as soon as `out` would pass `max` bytes
    /// (having grown to at most `max` plus [`STEP`]), and with 1007 on data that is not valid
    /// deflate. After a failure the connection closes; the state is dropped.
    pub fn inflate(
        &mut self,
        input: &[u8],
        last: bool,
        out: &mut Vec<u8>,
        max: usize,
    ) -> Result<(), Fault> {
        let bits = self.direction.window_bits.clamp(9, 15);
        let d = &mut self
            .state
            .get_or_insert_with(|| {
                Counted::new(
                    Decompress::new_with_window_bits(false, bits),
                    (1 << bits) + (7 << 10),
                    &INFLATERS,
                )
            })
            .inner;
        let mut result = feed(d, input, out, max);
        if result.is_ok() && last {
            result = feed(d, &TAIL, out, max);
        }
        if result.is_err() || (last && self.direction.no_context_takeover) {
            self.state = None;
        }
        result
    }

    /// Forget a message in progress (the connection it came from is gone). With context
    /// takeover the context is gone too: the next connection starts afresh.
    pub fn reset(&mut self) {
        self.state = None;
    }
}

/// Inflate all of `input` onto `out`, at most [`STEP`] bytes at a time, checking `max`
/// after each step.
fn feed(d: &mut Decompress, input: &[u8], out: &mut Vec<u8>, max: usize) -> Result<(), Fault> {
    let mut pos = 0;
    loop {
        // One byte past the limit is room enough to see that the message passes it.
        let room = STEP.min(max.saturating_sub(out.len()).saturating_add(1));
        grow(out, room, max);
        let len = out.len();
        out.resize(len + room, 0);
        let (before_in, before_out) = (d.total_in(), d.total_out());
        let status = d
            .decompress(
                input.get(pos..).unwrap_or_default(),
                &mut out[len..],
                FlushDecompress::Sync,
            )
            .map_err(|e| {
                Fault::violation(
                    close::INVALID_DATA,
                    format!(
                        "invalid compressed data: {}",
                        e.message().unwrap_or("no detail")
                    ),
                )
            });
        let consumed = (d.total_in() - before_in) as usize;
        let produced = (d.total_out() - before_out) as usize;
        out.truncate(len + produced);
        let status = status?;
        pos += consumed;
        if out.len() > max {
            return Err(Fault::violation(
                close::TOO_BIG,
                format!("compressed message inflates past the size limit ({max} bytes left)"),
            ));
        }
        if status == Status::StreamEnd {
            // A final deflate block: whatever follows starts a new stream (RFC 7692 7.2.3.3).
            d.reset(false);
        }
        let input_done = pos >= input.len();
        if input_done && produced < room {
            return Ok(());
        }
        if consumed == 0 && produced == 0 && status != Status::StreamEnd {
            if input_done {
                return Ok(());
            }
            return Err(Fault::violation(
                close::INVALID_DATA,
                "invalid compressed data: the inflater made no progress",
            ));
        }
    }
}

/// Make room for `room` more bytes in `out`, doubling as a `Vec` does but never past `max`
/// plus one [`STEP`], so a message near the limit does not double the memory it costs.
fn grow(out: &mut Vec<u8>, room: usize, max: usize) {
    let need = out.len().saturating_add(room);
    if need <= out.capacity() {
        return;
    }
    let target = out
        .capacity()
        .saturating_mul(2)
        .min(max.saturating_add(STEP))
        .max(need);
    out.reserve_exact(target - out.len());
}
