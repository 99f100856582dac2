//! permessage-deflate on a session's outgoing data frames, with a room broadcast compressed
//! once for every member.
//!
//! # A broadcast compressed once
//!
//! Without context takeover (the server asks for `server_no_context_takeover` by default) a
//! message's compressed bytes depend only on the message and the settings (window bits,
//! level), so one compression serves every member. The hub registers each broadcast it
//! fans out ([`share`], [`SharedFrame::add_copy`]): the frame and the per-worker-thread copies it
//! makes of it. The first session that writes any copy compresses it (under a
//! [`OnceLock`], so a second worker thread that needs it meanwhile waits for that result
//! instead of compressing too), and every other member's session writes the same bytes. So
//! `deflate_compressions` grows by one per broadcast and setting, whatever the room's size
//! and the number of worker threads.
//!
//! # Bounds
//!
//! The registry holds clones of frames that member queues hold anyway, plus one compressed
//! copy per setting. An entry goes as soon as no queue holds its frame any more (checked
//! whenever the hub registers a broadcast, and from the oldest end on every lookup), and at
//! most [`MAX_SHARED`] broadcasts of at most [`MAX_SHARED_BYTES`] each are registered (older
//! ones leave early; a frame not registered is compressed per session, which is correct,
//! only slower).

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};

use bytes::Bytes;

use crate::server::counters::Counters;
use crate::ws::deflate::Deflater;

/// At most this many broadcasts are registered at once.
pub(crate) const MAX_SHARED: usize = 1024;

/// Broadcasts larger than this are not registered: a registered frame stays alive until
/// every queue that took it has written it, and a compressed copy with it.
pub(crate) const MAX_SHARED_BYTES: usize = 256 * 1024;

/// Sessions with a compressor, in this process: the hub registers broadcasts only while
/// there is one.
static DEFLATE_SESSIONS: AtomicUsize = AtomicUsize::new(0);

/// The compressed bytes of one frame under one setting, made once.
type Slot = Arc<OnceLock<Option<Bytes>>>;

/// One registered broadcast: the frame and its per-thread copies, and its compressed bytes
/// per setting.
struct Entry {
    copies: Vec<Bytes>,
    compressed: Vec<((u8, u32), Slot)>,
}

impl Entry {
    /// Whether no queue holds any copy any more (only this entry does).
    fn is_done(&self) -> bool {
        self.copies.iter().all(Bytes::is_unique)
    }
}

/// Where a frame's bytes are: address and length.
type Key = (usize, usize);

fn key(b: &Bytes) -> Key {
    (b.as_ptr() as usize, b.len())
}

/// Registered broadcasts by number, in order, and each copy's key to its broadcast. A copy's
/// key cannot be reused by other bytes while registered (the entry keeps the copy alive).
#[derive(Default)]
struct Registry {
    next: u64,
    entries: VecDeque<(u64, Entry)>,
    by_key: HashMap<Key, u64>,
}

impl Registry {
    fn remove_front(&mut self) {
        if let Some((_, entry)) = self.entries.pop_front() {
            for copy in &entry.copies {
                self.by_key.remove(&key(copy));
            }
        }
    }

    /// Drop the oldest entries while no queue holds them.
    fn prune_front(&mut self) {
        while self.entries.front().is_some_and(|(_, e)| e.is_done()) {
            self.remove_front();
        }
    }

    /// Drop every entry no queue holds, then the oldest beyond the bound.
    fn prune(&mut self) {
        let by_key = &mut self.by_key;
        self.entries.retain(|(_, e)| {
            let done = e.is_done();
            if done {
                for copy in &e.copies {
                    by_key.remove(&key(copy));
                }
            }
            !done
        });
        while self.entries.len() >= MAX_SHARED {
            self.remove_front();
        }
    }

    fn entry_mut(&mut self, id: u64) -> Option<&mut Entry> {
        let first = self.entries.front()?.0;
        let guess = usize::try_from(id.checked_sub(first)?).ok()?;
        // Entries are in order of their numbers; pruned ones leave gaps, so the entry is at
        // its offset from the first or before it.
        let i = if self.entries.get(guess).is_some_and(|(n, _)| *n == id) {
            guess
        } else {
            self.entries.iter().position(|(n, _)| *n == id)?
        };
        self.entries.get_mut(i).map(|(_, e)| e)
    }
}

static REGISTRY: OnceLock<Mutex<Registry>> = OnceLock::new();

fn registry() -> MutexGuard<'static, Registry> {
    REGISTRY
        .get_or_init(Mutex::default)
        .lock()
        // A panic while the lock was held leaves nothing half-done that matters here.
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// A broadcast registered by the hub, to which it adds its per-thread copies.
pub(crate) struct SharedFrame(Option<u64>);

/// Register `frame`, about to be offered to the members of a room, when some session could
/// compress it. The returned handle takes the copies the hub makes of it.
pub(crate) fn share(frame: &Bytes) -> SharedFrame {
    if DEFLATE_SESSIONS.load(Ordering::Relaxed) == 0 || frame.len() > MAX_SHARED_BYTES {
        return SharedFrame(None);
    }
    let mut r = registry();
    r.prune();
    let id = r.next;
    r.next += 1;
    r.by_key.insert(key(frame), id);
    r.entries.push_back((
        id,
        Entry {
            copies: vec![frame.clone()],
            compressed: Vec::new(),
        },
    ));
    SharedFrame(Some(id))
}

impl SharedFrame {
    /// A broadcast not registered (too few members to share anything).
    pub(crate) fn none() -> Self {
        SharedFrame(None)
    }

    /// `copy` holds the same bytes as the registered frame (a copy for one worker thread).
    pub(crate) fn add_copy(&self, copy: &Bytes) {
        let Some(id) = self.0 else { return };
        let mut r = registry();
        if let Some(entry) = r.entry_mut(id) {
            entry.copies.push(copy.clone());
            r.by_key.insert(key(copy), id);
        }
    }
}

/// The slot for `payload`'s compressed bytes under `settings`, when it is a registered
/// broadcast.
fn slot_of(payload: &Bytes, settings: (u8, u32)) -> Option<Slot> {
    let mut r = registry();
    r.prune_front();
    let id = *r.by_key.get(&key(payload))?;
    let entry = r.entry_mut(id)?;
    if let Some((_, slot)) = entry.compressed.iter().find(|(s, _)| *s == settings) {
        return Some(slot.clone());
    }
    let slot = Slot::default();
    entry.compressed.push((settings, slot.clone()));
    Some(slot)
}

/// A session's compressor, with the server's count of compressions.
pub(crate) struct BodyDeflate {
    deflater: Deflater,
    counters: Arc<Counters>,
}

impl BodyDeflate {
    /// Compress with `deflater` (from the session's agreement), counting into `counters`.
    pub(crate) fn new(deflater: Deflater, counters: Arc<Counters>) -> Self {
        DEFLATE_SESSIONS.fetch_add(1, Ordering::Relaxed);
        Self { deflater, counters }
    }

    /// The compressed payload for a data frame's `payload`, or `None` to send it as it is.
    /// A registered broadcast is compressed once for every session with the same settings.
    pub(super) fn compress(&mut self, payload: &Bytes) -> Option<Bytes> {
        if payload.len() < self.deflater.threshold() {
            return None;
        }
        let slot = if self.deflater.is_stateless() {
            slot_of(payload, self.deflater.settings())
        } else {
            None
        };
        let Some(slot) = slot else {
            self.counters.deflate_compressions.bump();
            return self.deflater.compress(payload);
        };
        slot.get_or_init(|| {
            self.counters.deflate_compressions.bump();
            self.deflater.compress(payload)
        })
        .clone()
    }
}

impl Drop for BodyDeflate {
    fn drop(&mut self) {
        DEFLATE_SESSIONS.fetch_sub(1, Ordering::Relaxed);
    }
}
