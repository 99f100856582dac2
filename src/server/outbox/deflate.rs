//! permessage-deflate on a session's outgoing data frames, with a frame that several sessions'
//! queues share (a broadcast's copy for one worker thread) compressed once for all of them.

use std::cell::RefCell;
use std::collections::VecDeque;
use std::sync::Arc;

use bytes::Bytes;

use crate::server::counters::Counters;
use crate::ws::deflate::Deflater;

/// Frames remembered per thread with their compressed bytes.
const RECENT: usize = 16;

/// A frame compressed lately on this thread.
struct Recent {
    /// The frame's payload: a clone, so its memory cannot be freed and reused while it is
    /// remembered, and the same address and length mean the same bytes.
    original: Bytes,
    settings: (u8, u32),
    compressed: Option<Bytes>,
}

thread_local! {
    /// Recently compressed frames of this worker thread. An entry goes as soon as nothing but
    /// this list holds its frame (every queue that had it has written it), or when newer
    /// frames push it out, so it keeps alive nothing that the session queues do not.
    static COMPRESSED: RefCell<VecDeque<Recent>> = const { RefCell::new(VecDeque::new()) };
}

/// A session's compressor, with the server's count of compressions.
pub(crate) struct BodyDeflate {
    deflater: Deflater,
    counters: Arc<Counters>,
}

impl BodyDeflate {
    /// Compress with `deflater` (from the session's agreement), counting into `counters`.
    pub(crate) fn new(deflater: Deflater, counters: Arc<Counters>) -> Self {
        Self { deflater, counters }
    }

    /// The compressed payload for a data frame's `payload`, or `None` to send it as it is.
    /// Without context takeover the result depends only on the payload and the settings, so
    /// a payload compressed lately on this thread for another session is not compressed again.
    pub(super) fn compress(&mut self, payload: &Bytes) -> Option<Bytes> {
        if payload.len() < self.deflater.threshold() {
            return None;
        }
        if !self.deflater.is_stateless() {
            self.counters.deflate_compressions.bump();
            return self.deflater.compress(payload);
        }
        let settings = self.deflater.settings();
        let same = |r: &Recent| {
            r.settings == settings
                && r.original.as_ptr() == payload.as_ptr()
                && r.original.len() == payload.len()
        };
        let found = COMPRESSED.with(|c| {
            let mut c = c.borrow_mut();
            c.retain(|r| !r.original.is_unique());
            c.iter().find(|r| same(r)).map(|r| r.compressed.clone())
        });
        if let Some(compressed) = found {
            return compressed;
        }
        self.counters.deflate_compressions.bump();
        let compressed = self.deflater.compress(payload);
        COMPRESSED.with(|c| {
            let mut c = c.borrow_mut();
            if c.len() >= RECENT {
                c.pop_front();
            }
            c.push_back(Recent {
                original: payload.clone(),
                settings,
                compressed: compressed.clone(),
            });
        });
        compressed
    }
}
