//! Application handlers: message types of your own, sent by clients to the rooms endpoint,
//! handled by server code ([`Rooms::on_message`]) instead of being answered `unknown_type`.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use serde_json::value::RawValue;

use super::command::SessionId;
use super::Rooms;
use crate::envelope::{Outgoing, WireMessage};
use crate::error::Result;

/// Who sent a message to a handler, and the means to answer.
#[derive(Debug, Clone)]
pub struct MessageContext {
    /// The sending session's id (its wire name is `s-<id>`, the `from` of its publishes).
    pub session: SessionId,
    /// What the authentication hook attached to the session, if anything.
    pub identity: Option<String>,
    /// The message's request id, if it had one: [`reply`](Self::reply) answers with it.
    pub id: Option<u64>,
    /// The message's `room` field, if it had one.
    pub room: Option<String>,
    /// The server, to publish into rooms or reach other sessions.
    pub rooms: Rooms,
}

impl MessageContext {
    /// Send `msg` to the sender, carrying the request id (so a client's `request` resolves
    /// with it). Answers whether the session's queue took it.
    pub async fn reply<R: WireMessage>(&self, msg: &R) -> Result<bool> {
        let mut out = Outgoing::new(msg)?;
        if let Some(id) = self.id {
            out = out.id(id);
        }
        self.rooms.send_envelope_to(self.session, out).await
    }
}

/// A handler with its message type erased: decodes `data` and makes the handler's future, or
/// says why `data` does not decode.
pub(crate) type ErasedHandler = Arc<
    dyn Fn(MessageContext, Option<&RawValue>) -> std::result::Result<HandlerFuture, String>
        + Send
        + Sync,
>;

/// What a handler returns, boxed.
pub(crate) type HandlerFuture = Pin<Box<dyn Future<Output = ()>>>;

/// Erase `handler`'s message type.
pub(crate) fn erase<T, F, Fut>(handler: F) -> ErasedHandler
where
    T: WireMessage,
    F: Fn(MessageContext, T) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = ()> + 'static,
{
    Arc::new(move |ctx, data| {
        let raw = data.map(RawValue::get).unwrap_or("null");
        let msg: T = serde_json::from_str(raw).map_err(|e| e.to_string())?;
        Ok(Box::pin(handler(ctx, msg)))
    })
}
