//! Process-wide counts of what the client side keeps alive, so that a test (or an operator) can
//! check that connections which ended left nothing behind: [`census`].

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use tokio::sync::Notify;

static CLIENTS: AtomicUsize = AtomicUsize::new(0);
static ACTORS: AtomicUsize = AtomicUsize::new(0);
static SUBSCRIPTIONS: AtomicUsize = AtomicUsize::new(0);
/// Woken whenever a count goes down (a client, actor or subscription ended).
static RELEASED: Notify = Notify::const_new();

/// What the client side of this process holds alive now. All counts are process-wide (every
/// [`Manager`](super::Manager) and every client made with [`connect`](super::connect)); each
/// goes back to its earlier value once the connections made since have ended and their handles
/// and receivers are dropped.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Census {
    /// Clients whose actors or handles are alive (one per `connect`).
    pub clients: usize,
    /// Client actors alive: four per running client (connection, heartbeat, reconnect
    /// supervisor, router).
    pub actors: usize,
    /// Subscriptions (typed, raw, text, binary, events) held by routers.
    pub subscriptions: usize,
}

/// The counts now (see [`Census`]).
pub fn census() -> Census {
    Census {
        clients: CLIENTS.load(Ordering::Acquire),
        actors: ACTORS.load(Ordering::Acquire),
        subscriptions: SUBSCRIPTIONS.load(Ordering::Acquire),
    }
}

/// Wait, for at most `within`, until the census satisfies `done` (for example, until it is back
/// where it was before a batch of connections that have now ended): woken by every release,
/// since actors stop on their own arbiters after their client is `Closed`. Answers whether it
/// happened.
pub async fn wait_census(done: impl Fn(&Census) -> bool, within: Duration) -> bool {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        let released = RELEASED.notified();
        tokio::pin!(released);
        released.as_mut().enable();
        if done(&census()) {
            return true;
        }
        if tokio::time::timeout_at(deadline, released).await.is_err() {
            return done(&census());
        }
    }
}

/// What a [`Counted`] counts.
#[derive(Debug, Clone, Copy)]
pub(crate) enum CensusEntry {
    Client,
    Actor,
    Subscription,
}

/// Counted while alive: one more of its kind from creation to drop.
#[derive(Debug)]
pub(crate) struct Counted(&'static AtomicUsize);

impl Counted {
    pub(crate) fn new(kind: CensusEntry) -> Counted {
        let counter = match kind {
            CensusEntry::Client => &CLIENTS,
            CensusEntry::Actor => &ACTORS,
            CensusEntry::Subscription => &SUBSCRIPTIONS,
        };
        counter.fetch_add(1, Ordering::AcqRel);
        Counted(counter)
    }
}

impl Drop for Counted {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
        RELEASED.notify_waiters();
    }
}
