//! Wake-ups of one fan-out, batched per worker thread.

use std::task::Waker;
use std::thread::ThreadId;

/// A body's thread and that thread's arbiter: a fan-out hands each worker its wake-ups in one
/// message ([`Wakes`]).
pub(super) struct Home {
    pub(super) thread: ThreadId,
    pub(super) arbiter: actix_rt::ArbiterHandle,
}

/// The wake-ups of one fan-out, batched per worker thread. The hub offers a broadcast to every
/// member's outbox from its own thread; waking each body from there is a cross-thread wake
/// per member (the worker's remote run queue and, when it sleeps, an unpark). Batched, each
/// worker gets one message and wakes its own bodies locally.
pub(crate) struct Wakes {
    here: ThreadId,
    pub(super) batches: Vec<(ThreadId, actix_rt::ArbiterHandle, Vec<Waker>)>,
    now: Vec<Waker>,
}

impl Wakes {
    pub(crate) fn new() -> Self {
        Self {
            here: std::thread::current().id(),
            batches: Vec::new(),
            now: Vec::new(),
        }
    }

    pub(super) fn add(&mut self, home: Option<&Home>, waker: Waker) {
        match home {
            Some(home) if home.thread != self.here => {
                match self.batches.iter_mut().find(|(t, _, _)| *t == home.thread) {
                    Some((_, _, wakers)) => wakers.push(waker),
                    None => self
                        .batches
                        .push((home.thread, home.arbiter.clone(), vec![waker])),
                }
            }
            _ => self.now.push(waker),
        }
    }

    /// Wake every body: those on this thread (or of unknown home) now, the others through one
    /// message to their arbiter each. A stopped arbiter's bodies are gone with it.
    pub(crate) fn wake_all(self) {
        for waker in self.now {
            waker.wake();
        }
        for (_, arbiter, wakers) in self.batches {
            arbiter.spawn(async move {
                for waker in wakers {
                    waker.wake();
                }
            });
        }
    }
}
