//! Waiting without sleeping: a [`StateRecorder`] that awaits a client's states with a timeout
//! and keeps every state it saw, and [`next_message`] / [`next_matching`] for subscriptions.

use std::fmt::Debug;
use std::time::Duration;

use tokio::sync::mpsc;

use crate::client::{Client, ConnectionState, Event, MessageError};
use crate::error::{Error, Result};

/// Events buffered for a recorder between two waits.
const EVENTS: usize = 4096;

/// Records the states a [`Client`] goes through, from the moment it is attached, and awaits the
/// next state that matches, with a timeout that fails with [`Error::Timeout`] naming the last
/// state seen ([`Error::ClientClosed`] when the client has stopped and nothing more can come).
///
/// It subscribes to the client's events with a channel of 4096 events: attach it before the
/// fault you test and wait on it (or call [`states`](Self::states)) now and then, so that a long
/// test does not fill it (a full channel drops events, as any subscription does).
#[derive(Debug)]
pub struct StateRecorder {
    events: mpsc::Receiver<Event>,
    states: Vec<ConnectionState>,
    /// States before this index have been returned by a wait (or skipped by one).
    read: usize,
    errors: Vec<MessageError>,
    /// Message errors before this index have been returned by `wait_message_error`.
    errors_read: usize,
    /// `Event::Recovery`s, in order.
    recoveries: Vec<Event>,
    /// `Event::TokenRefresh`es, in order.
    token_refreshes: Vec<Event>,
}

impl StateRecorder {
    /// Start recording `client`'s states. The first recorded state is the one it is in now.
    pub fn attach(client: &Client) -> StateRecorder {
        let events = client.subscribe_events(EVENTS);
        StateRecorder {
            events,
            states: vec![client.state()],
            read: 0,
            errors: Vec::new(),
            errors_read: 0,
            recoveries: Vec::new(),
            token_refreshes: Vec::new(),
        }
    }

    /// Wait, for at most `within`, for the next state (after the ones already returned by a
    /// wait) that `pred` accepts; `what` names it in the timeout error. A state already recorded
    /// and not yet waited past counts, so a state reached before the call is not missed.
    pub async fn wait_for(
        &mut self,
        what: &str,
        within: Duration,
        pred: impl Fn(&ConnectionState) -> bool,
    ) -> Result<ConnectionState> {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            if let Some(i) = self.unread_match(&pred) {
                self.cursor_past(i);
                return Ok(self.states[i].clone());
            }
            match tokio::time::timeout_at(deadline, self.events.recv()).await {
                Ok(Some(event)) => self.record(event),
                // The client stopped (`Closed` or `Failed`): nothing more will come.
                Ok(None) => return Err(Error::ClientClosed),
                Err(_) => {
                    return Err(Error::Timeout {
                        what: what.to_owned(),
                        within,
                        last: self
                            .states
                            .last()
                            .map_or_else(|| "nothing".to_owned(), ToString::to_string),
                    })
                }
            }
        }
    }

    /// Wait for `Connected`.
    pub async fn wait_connected(&mut self, within: Duration) -> Result<()> {
        self.wait_for("connected", within, |s| *s == ConnectionState::Connected)
            .await
            .map(drop)
    }

    /// Wait for a `Disconnected` state; answers its close code (see
    /// [`wait_disconnected_reason`](Self::wait_disconnected_reason) for the reason too).
    pub async fn wait_disconnected(&mut self, within: Duration) -> Result<u16> {
        self.wait_disconnected_reason(within)
            .await
            .map(|(code, _)| code)
    }

    /// Wait for a `Disconnected` state; answers its close code and reason.
    pub async fn wait_disconnected_reason(&mut self, within: Duration) -> Result<(u16, String)> {
        let state = self
            .wait_for("disconnected", within, |s| {
                matches!(s, ConnectionState::Disconnected { .. })
            })
            .await?;
        match state {
            ConnectionState::Disconnected { code, reason } => Ok((code, reason)),
            // `wait_for` only answers a state its predicate accepted.
            other => Err(Error::Timeout {
                what: "disconnected".to_owned(),
                within,
                last: other.to_string(),
            }),
        }
    }

    /// Wait, for at most `within`, for the next message that could not be delivered
    /// (`Event::MessageError`) after the ones already returned by this call.
    pub async fn wait_message_error(&mut self, within: Duration) -> Result<MessageError> {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            if let Some(e) = self.errors.get(self.errors_read) {
                self.errors_read += 1;
                return Ok(e.clone());
            }
            match tokio::time::timeout_at(deadline, self.events.recv()).await {
                Ok(Some(event)) => self.record(event),
                Ok(None) => return Err(Error::ClientClosed),
                Err(_) => {
                    return Err(Error::Timeout {
                        what: "a message error".to_owned(),
                        within,
                        last: format!("{} message errors", self.errors.len()),
                    })
                }
            }
        }
    }

    /// Every state recorded so far, in order (events already delivered are taken in first).
    pub fn states(&mut self) -> &[ConnectionState] {
        while let Ok(event) = self.events.try_recv() {
            self.record(event);
        }
        &self.states
    }

    /// Messages that could not be delivered (`Event::MessageError`) recorded so far.
    pub fn message_errors(&mut self) -> &[MessageError] {
        let _ = self.states();
        &self.errors
    }

    /// The recoveries (`Event::Recovery`) recorded so far, in order.
    pub fn recoveries(&mut self) -> &[Event] {
        let _ = self.states();
        &self.recoveries
    }

    /// The token refreshes (`Event::TokenRefresh`) recorded so far, in order.
    pub fn token_refreshes(&mut self) -> &[Event] {
        let _ = self.states();
        &self.token_refreshes
    }

    /// How many times the recorded states entered `Connected`.
    pub fn connects(&mut self) -> usize {
        self.states()
            .iter()
            .filter(|s| **s == ConnectionState::Connected)
            .count()
    }

    fn record(&mut self, event: Event) {
        match event {
            // The state read at `attach` may come again as the first event (the subscription
            // is registered after it was read); a state never follows itself otherwise.
            Event::State(state) if self.states.last() == Some(&state) => {}
            Event::State(state) => self.states.push(state),
            Event::MessageError(e) => self.errors.push(e),
            Event::Recovery { .. } => self.recoveries.push(event),
            Event::TokenRefresh { .. } => self.token_refreshes.push(event),
        }
    }

    fn unread_match(&self, pred: &impl Fn(&ConnectionState) -> bool) -> Option<usize> {
        (self.read..self.states.len()).find(|&i| pred(&self.states[i]))
    }

    fn cursor_past(&mut self, i: usize) {
        self.read = i + 1;
    }
}

/// The next value from a subscription (`Client::subscribe`, `subscribe_text`, ...), within
/// `within`: [`Error::Timeout`] when none comes, [`Error::ClientClosed`] when the channel ended.
pub async fn next_message<T>(rx: &mut mpsc::Receiver<T>, within: Duration) -> Result<T> {
    match tokio::time::timeout(within, rx.recv()).await {
        Ok(Some(v)) => Ok(v),
        Ok(None) => Err(Error::ClientClosed),
        Err(_) => Err(Error::Timeout {
            what: "the next message".to_owned(),
            within,
            last: "nothing".to_owned(),
        }),
    }
}

/// The next value from a subscription that `pred` accepts, within `within` in total; values
/// it refuses are skipped. `what` names it in the timeout error, which shows the last value
/// skipped.
pub async fn next_matching<T: Debug>(
    rx: &mut mpsc::Receiver<T>,
    what: &str,
    within: Duration,
    pred: impl Fn(&T) -> bool,
) -> Result<T> {
    let deadline = tokio::time::Instant::now() + within;
    let mut last = "nothing".to_owned();
    loop {
        match tokio::time::timeout_at(deadline, rx.recv()).await {
            Ok(Some(v)) if pred(&v) => return Ok(v),
            Ok(Some(v)) => last = format!("{v:?}"),
            Ok(None) => return Err(Error::ClientClosed),
            Err(_) => {
                return Err(Error::Timeout {
                    what: what.to_owned(),
                    within,
                    last,
                })
            }
        }
    }
}
