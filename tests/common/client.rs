//! Helpers of the client tests against the scriptable peer (`peer.rs`): the `chat` message
//! they send, the peer's address for a `FaultProxy`, and the client's states in short words.

use std::net::SocketAddr;

use actix_ws_manager::client::{Client, ConnectionState};
use actix_ws_manager::testkit::StateRecorder;
use actix_ws_manager::{Error, WireMessage};
use serde::{Deserialize, Serialize};

use super::peer::Peer;
use super::WAIT;

/// A chat line: the typed message most client tests send and receive.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Chat {
    pub text: String,
}
impl WireMessage for Chat {
    const TYPE: &'static str = "chat";
}

/// A [`Chat`] saying `text`.
pub fn chat(text: &str) -> Chat {
    Chat { text: text.into() }
}

/// The scripted peer's address, for a `FaultProxy` in front of it.
pub fn peer_addr(peer: &Peer) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], peer.port))
}

/// Whether `s` is a `Reconnecting` state.
pub fn is_reconnecting(s: &ConnectionState) -> bool {
    matches!(s, ConnectionState::Reconnecting { .. })
}

/// The states a recorder saw, in short words: `connected`, `disconnected 1009`,
/// `reconnecting 1`, `failed`, `closed`. `Connecting` is left out: the recorder's first state is
/// the snapshot taken when it was attached, which the first `Connecting` event may repeat.
pub fn seen(states: &mut StateRecorder) -> Vec<String> {
    states
        .states()
        .iter()
        .filter_map(|s| match s {
            ConnectionState::Connecting { .. } => None,
            ConnectionState::Connected => Some("connected".to_owned()),
            ConnectionState::Disconnected { code, .. } => Some(format!("disconnected {code}")),
            ConnectionState::Reconnecting { attempt, .. } => {
                Some(format!("reconnecting {attempt}"))
            }
            ConnectionState::Failed { .. } => Some("failed".to_owned()),
            ConnectionState::Closed => Some("closed".to_owned()),
        })
        .collect()
}

/// The client's event stream ends once it has stopped (its Router is gone): waiting for any
/// further state answers `ClientClosed` rather than timing out.
pub async fn assert_events_end(states: &mut StateRecorder) {
    match states
        .wait_for("the end of the events", WAIT, |_| false)
        .await
    {
        Err(Error::ClientClosed) => {}
        other => panic!("the event stream did not end: {other:?}"),
    }
}

/// Close the client, wait for `Closed`, and answer every state it went through ([`seen`]); a
/// close while connected ends in `disconnected 1000`, `closed`.
pub async fn close_and_replay(client: &Client, states: &mut StateRecorder) -> Vec<String> {
    client.close().await;
    states
        .wait_for("closed", WAIT, |s| *s == ConnectionState::Closed)
        .await
        .expect("closed");
    seen(states)
}

/// The `Event::Recovery`s received so far: (recovered, missed, reason).
pub fn recoveries(
    events: &mut tokio::sync::mpsc::Receiver<actix_ws_manager::client::Event>,
) -> Vec<(bool, u64, Option<String>)> {
    let mut out = Vec::new();
    while let Ok(e) = events.try_recv() {
        if let actix_ws_manager::client::Event::Recovery {
            recovered,
            missed,
            reason,
            ..
        } = e
        {
            out.push((recovered, missed, reason));
        }
    }
    out
}

/// The `Reconnecting` states a recorder saw: (delay, cause).
pub fn reconnects(states: &mut StateRecorder) -> Vec<(std::time::Duration, String)> {
    states
        .states()
        .iter()
        .filter_map(|s| match s {
            ConnectionState::Reconnecting { delay, cause, .. } => Some((*delay, cause.clone())),
            _ => None,
        })
        .collect()
}
