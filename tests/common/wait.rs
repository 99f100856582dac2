//! Waiting on channels with a timeout, never sleeping to synchronise: thin panicking wrappers
//! over the test kit's [`next_message`] and [`next_matching`], so a test reads as a list of
//! expectations and a failed one names what it waited for.

use std::time::Duration;

use actix_ws_manager::client::{ConnectionState, Event};
use actix_ws_manager::testkit::{next_matching, next_message};
use actix_ws_manager::Error;

use super::WAIT;

/// Receive from `rx` within `within`, panicking with `what` on timeout or a closed channel.
pub async fn recv_within<T>(
    rx: &mut tokio::sync::mpsc::Receiver<T>,
    within: Duration,
    what: &str,
) -> T {
    match next_message(rx, within).await {
        Ok(v) => v,
        Err(Error::ClientClosed) => panic!("channel closed while waiting for {what}"),
        Err(_) => panic!("timed out after {within:?} waiting for {what}"),
    }
}

/// Receive from `rx` until `pred` accepts a value, within `within` in total.
pub async fn recv_until<T: std::fmt::Debug>(
    rx: &mut tokio::sync::mpsc::Receiver<T>,
    within: Duration,
    what: &str,
    pred: impl Fn(&T) -> bool,
) -> T {
    match next_matching(rx, what, within, pred).await {
        Ok(v) => v,
        Err(Error::ClientClosed) => panic!("channel closed while waiting for {what}"),
        Err(e) => panic!("{e}"),
    }
}

/// Wait, within [`WAIT`], for a state event that `pred` accepts.
pub async fn wait_state(
    events: &mut tokio::sync::mpsc::Receiver<Event>,
    what: &str,
    pred: impl Fn(&ConnectionState) -> bool,
) -> ConnectionState {
    match recv_until(
        events,
        WAIT,
        what,
        |e| matches!(e, Event::State(s) if pred(s)),
    )
    .await
    {
        Event::State(s) => s,
        other => panic!("{other:?}"),
    }
}

/// Look at `cond` every 10 ms until it holds, panicking with `what` after `within`: for a
/// figure that nothing signals (a counter, a proxy's byte count), bounded like the waits above.
pub async fn until(what: &str, within: Duration, mut cond: impl FnMut() -> bool) {
    let deadline = std::time::Instant::now() + within;
    while !cond() {
        assert!(
            std::time::Instant::now() < deadline,
            "{what} within {within:?}"
        );
        actix_rt::time::sleep(Duration::from_millis(10)).await;
    }
}
