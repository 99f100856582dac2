//! Helpers shared by the integration tests: waiting on channels with a timeout (never sleeping to
//! synchronise).
#![allow(dead_code)]

pub mod peer;

use std::time::Duration;

/// Default time a test waits for an event before it fails.
pub const WAIT: Duration = Duration::from_secs(10);

/// Receive from `rx` within `within`, panicking with `what` on timeout or a closed channel.
pub async fn recv_within<T>(
    rx: &mut tokio::sync::mpsc::Receiver<T>,
    within: Duration,
    what: &str,
) -> T {
    match tokio::time::timeout(within, rx.recv()).await {
        Ok(Some(v)) => v,
        Ok(None) => panic!("channel closed while waiting for {what}"),
        Err(_) => panic!("timed out after {within:?} waiting for {what}"),
    }
}

/// Receive from `rx` until `pred` accepts a value, within `within` in total.
pub async fn recv_until<T: std::fmt::Debug>(
    rx: &mut tokio::sync::mpsc::Receiver<T>,
    within: Duration,
    what: &str,
    mut pred: impl FnMut(&T) -> bool,
) -> T {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        let v = recv_within(rx, left, what).await;
        if pred(&v) {
            return v;
        }
    }
}
