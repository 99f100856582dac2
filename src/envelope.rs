//! The wire envelope, the [`WireMessage`] trait that binds Rust types to wire `type`s, and the
//! codec: encode once, decode the head once, decode `data` only when someone wants it.
//!
//! A text frame carries one JSON object:
//!
//! ```json
//! {"type": "message", "id": 7, "room": "lobby", "from": "s-1", "data": {"text": "hi"}, "timestamp": "2026-11-24T18:00:00.000Z"}
//! ```
//!
//! Only `type` is required. `data` is kept as raw JSON ([`RawValue`]) until a subscriber of the
//! matching Rust type asks for it, so routing a message costs one parse of the head, whatever the
//! size of its payload.

use std::borrow::Cow;
use std::time::SystemTime;

use bytestring::ByteString;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use crate::error::{Error, Result};

/// A Rust type that travels as the `data` of an envelope whose `type` is [`TYPE`](Self::TYPE).
///
/// User code sends and subscribes Rust types; the wire string lives here, in one place.
///
/// ```
/// use actix_ws_manager::WireMessage;
/// use serde::{Deserialize, Serialize};
///
/// #[derive(Debug, Clone, Serialize, Deserialize)]
/// struct Trade { symbol: String, price: f64 }
///
/// impl WireMessage for Trade {
///     const TYPE: &'static str = "trade";
/// }
/// ```
///
/// A unit struct (`struct Join;`) is sent without a `data` field and decodes from an envelope
/// that has none.
pub trait WireMessage: Serialize + DeserializeOwned + Send + 'static {
    /// The envelope `type` string this Rust type is sent and routed as.
    const TYPE: &'static str;
}

/// The head of an incoming envelope, borrowed from the frame: everything but `data` decoded,
/// `data` left as raw JSON.
#[derive(Debug, Deserialize)]
pub struct Head<'a> {
    /// The routing key.
    #[serde(rename = "type", borrow)]
    pub kind: Cow<'a, str>,
    /// Request/reply correlation id.
    #[serde(default)]
    pub id: Option<u64>,
    /// The room the message concerns.
    #[serde(default, borrow)]
    pub room: Option<Cow<'a, str>>,
    /// The sender (rooms protocol broadcasts).
    #[serde(default, borrow)]
    pub from: Option<Cow<'a, str>>,
    /// The event type a rooms `publish` asks members to receive its `data` as.
    #[serde(default, borrow)]
    pub event: Option<Cow<'a, str>>,
    /// RFC 3339 timestamp set by the sender.
    #[serde(default, borrow)]
    pub timestamp: Option<Cow<'a, str>>,
    /// The payload, undecoded.
    #[serde(default, borrow)]
    pub data: Option<&'a RawValue>,
    /// A room message's stream position in its room's history: 1 for the room's first
    /// publication, +1 for each after (rooms protocol, rooms with history).
    #[serde(default)]
    pub offset: Option<u64>,
    /// The history the `offset` counts in: it changes whenever the room's history is lost.
    #[serde(default, borrow)]
    pub epoch: Option<Cow<'a, str>>,
    /// `join` and `history`: the last position the client has (`{"offset":O,"epoch":"X"}`),
    /// undecoded.
    #[serde(default, borrow)]
    pub since: Option<&'a RawValue>,
    /// `history`: at most this many publications.
    #[serde(default)]
    pub limit: Option<u64>,
    /// `join`: also receive the room's presence changes (`presence_diff`).
    #[serde(default)]
    pub presence: Option<bool>,
}

impl<'a> Head<'a> {
    /// Decode the head of a text frame. Fails on malformed JSON, a non-object, or a missing or
    /// non-string `type`.
    pub fn parse(text: &'a str) -> Result<Head<'a>> {
        serde_json::from_str(text).map_err(|e| Error::Decode(e.to_string()))
    }

    /// Decode `data` as `T`; a missing `data` decodes as JSON `null` (so unit structs and
    /// `Option`s work).
    pub fn data_as<T: DeserializeOwned>(&self) -> Result<T> {
        decode_data(self.data)
    }

    /// An owned copy of this head and its raw data.
    pub fn to_owned_envelope(&self) -> Envelope {
        Envelope {
            kind: self.kind.to_string(),
            id: self.id,
            room: self.room.as_deref().map(str::to_owned),
            from: self.from.as_deref().map(str::to_owned),
            timestamp: self.timestamp.as_deref().map(str::to_owned),
            data: self.data.map(|d| d.to_owned()),
        }
    }
}

fn decode_data<T: DeserializeOwned>(data: Option<&RawValue>) -> Result<T> {
    let raw = data.map(RawValue::get).unwrap_or("null");
    serde_json::from_str(raw).map_err(|e| Error::Decode(e.to_string()))
}

/// An owned envelope whose `data` is still raw JSON: what a request's reply and an untyped
/// ("raw") subscription deliver.
#[derive(Debug, Clone)]
pub struct Envelope {
    /// The `type` field.
    pub kind: String,
    /// The `id` field.
    pub id: Option<u64>,
    /// The `room` field.
    pub room: Option<String>,
    /// The `from` field.
    pub from: Option<String>,
    /// The `timestamp` field.
    pub timestamp: Option<String>,
    /// The `data` field, undecoded.
    pub data: Option<Box<RawValue>>,
}

impl PartialEq for Envelope {
    fn eq(&self, other: &Self) -> bool {
        self.kind == other.kind
            && self.id == other.id
            && self.room == other.room
            && self.from == other.from
            && self.timestamp == other.timestamp
            && self.data.as_deref().map(RawValue::get) == other.data.as_deref().map(RawValue::get)
    }
}

impl Envelope {
    /// Decode `data` as `T` (a missing `data` decodes as `null`).
    pub fn data_as<T: DeserializeOwned>(&self) -> Result<T> {
        decode_data(self.data.as_deref())
    }

    /// Whether this envelope's `type` is `T`'s wire type.
    pub fn is<T: WireMessage>(&self) -> bool {
        self.kind == T::TYPE
    }
}

/// An envelope on its way out: the payload is serialised once, when the `Outgoing` is built;
/// the frame text is assembled by [`encode`](Self::encode) once the `id` is known.
#[derive(Debug, Clone)]
pub struct Outgoing {
    kind: Cow<'static, str>,
    id: Option<u64>,
    room: Option<String>,
    from: Option<String>,
    event: Option<Cow<'static, str>>,
    timestamp: Option<String>,
    data: Option<Box<RawValue>>,
    presence: bool,
}

impl Outgoing {
    /// An envelope whose `type` is `T::TYPE` and whose `data` is `msg`. Fails only when
    /// `msg`'s `Serialize` impl fails.
    pub fn new<T: WireMessage>(msg: &T) -> Result<Self> {
        let raw = serde_json::value::to_raw_value(msg).map_err(|e| Error::Encode(e.to_string()))?;
        Ok(Self::raw(T::TYPE, raw))
    }

    /// An envelope with an arbitrary wire type and JSON payload: for tools that relay what a
    /// person typed (`wsm connect --json`). Library users should prefer [`Outgoing::new`].
    pub fn dynamic(kind: impl Into<String>, data: Option<&serde_json::Value>) -> Result<Self> {
        let data = match data {
            Some(v) => {
                Some(serde_json::value::to_raw_value(v).map_err(|e| Error::Encode(e.to_string()))?)
            }
            None => None,
        };
        let mut out = Self::bare("");
        out.kind = Cow::Owned(kind.into());
        out.data = data;
        Ok(out)
    }

    /// An envelope with only a `type` (no `data`): cannot fail.
    pub(crate) fn bare(kind: &'static str) -> Self {
        Self {
            kind: Cow::Borrowed(kind),
            id: None,
            room: None,
            from: None,
            event: None,
            timestamp: None,
            data: None,
            presence: false,
        }
    }

    pub(crate) fn raw(kind: &'static str, data: Box<RawValue>) -> Self {
        let mut out = Self::bare(kind);
        out.data = (data.get() != "null").then_some(data);
        out
    }

    /// Set the `room` field.
    pub fn room(mut self, room: impl Into<String>) -> Self {
        self.room = Some(room.into());
        self
    }

    /// Set the `from` field.
    pub fn from(mut self, from: impl Into<String>) -> Self {
        self.from = Some(from.into());
        self
    }

    /// Set the `event` field (the type a rooms `publish` is delivered as).
    pub fn event(mut self, event: impl Into<Cow<'static, str>>) -> Self {
        self.event = Some(event.into());
        self
    }

    /// Set `"presence":true` (a rooms `join` that also asks for the room's presence changes).
    pub fn presence(mut self) -> Self {
        self.presence = true;
        self
    }

    /// Set the `id` field (requests get theirs from the client; set it by hand only to answer
    /// a request).
    pub fn id(mut self, id: u64) -> Self {
        self.id = Some(id);
        self
    }

    /// Stamp the envelope with the current time as an RFC 3339 UTC timestamp (milliseconds).
    pub fn timestamp_now(mut self) -> Self {
        self.timestamp = Some(now_rfc3339());
        self
    }

    /// The `type` this envelope will be sent as.
    pub fn kind(&self) -> &str {
        &self.kind
    }

    /// The `id` this envelope will carry, if any.
    pub fn get_id(&self) -> Option<u64> {
        self.id
    }

    /// Assemble the frame text. The payload is not serialised again.
    pub fn encode(&self) -> ByteString {
        EnvelopeParts {
            kind: &self.kind,
            id: self.id,
            room: self.room.as_deref(),
            from: self.from.as_deref(),
            event: self.event.as_deref(),
            data: self.data.as_deref(),
            timestamp: self.timestamp.as_deref(),
            presence: self.presence,
            ..EnvelopeParts::default()
        }
        .encode()
    }
}

/// The parts of one envelope, to encode once: the one way this crate writes an envelope's JSON
/// text ([`Outgoing::encode`] for the client and server code, the server's replies, and its
/// broadcast, which encodes once and shares the bytes with every member). Fields left out are
/// not written: `EnvelopeParts { kind: "ack", id: Some(7), ..EnvelopeParts::default() }`.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct EnvelopeParts<'a> {
    /// `type`.
    pub(crate) kind: &'a str,
    /// `id`: the request this answers.
    pub(crate) id: Option<u64>,
    /// `room`.
    pub(crate) room: Option<&'a str>,
    /// `from`: who published (an identity, or the session's name).
    pub(crate) from: Option<&'a str>,
    /// `session`: the publishing session's name, when `from` is an identity.
    pub(crate) session: Option<&'a str>,
    /// `event`.
    pub(crate) event: Option<&'a str>,
    /// `data`, as raw JSON written as it is.
    pub(crate) data: Option<&'a RawValue>,
    /// `timestamp` (RFC 3339).
    pub(crate) timestamp: Option<&'a str>,
    /// `offset`: a room message's position in its room's history.
    pub(crate) offset: Option<u64>,
    /// `epoch`: the history `offset` counts in.
    pub(crate) epoch: Option<&'a str>,
    /// `"presence":true` when set (a `join` asking for presence changes).
    pub(crate) presence: bool,
}

impl EnvelopeParts<'_> {
    /// The envelope's JSON text, each part written once.
    pub(crate) fn encode(&self) -> ByteString {
        let EnvelopeParts {
            kind,
            id,
            room,
            from,
            session,
            event,
            data,
            timestamp,
            offset,
            epoch,
            presence,
        } = *self;
        let mut out = String::with_capacity(
            32 + kind.len()
                + room.map_or(0, str::len)
                + from.map_or(0, str::len)
                + session.map_or(0, |s| s.len() + 12)
                + event.map_or(0, str::len)
                + data.map_or(0, |d| d.get().len())
                + timestamp.map_or(0, str::len)
                + epoch.map_or(0, |e| e.len() + 32),
        );
        out.push_str("{\"type\":");
        push_json_str(&mut out, kind);
        if let Some(id) = id {
            out.push_str(",\"id\":");
            out.push_str(&id.to_string());
        }
        let fields = [
            ("room", room),
            ("from", from),
            ("session", session),
            ("event", event),
        ];
        for (name, value) in fields {
            if let Some(value) = value {
                out.push_str(",\"");
                out.push_str(name);
                out.push_str("\":");
                push_json_str(&mut out, value);
            }
        }
        if let Some(data) = data {
            out.push_str(",\"data\":");
            out.push_str(data.get());
        }
        if let Some(ts) = timestamp {
            out.push_str(",\"timestamp\":");
            push_json_str(&mut out, ts);
        }
        if let Some(offset) = offset {
            out.push_str(",\"offset\":");
            out.push_str(&offset.to_string());
        }
        if let Some(epoch) = epoch {
            out.push_str(",\"epoch\":");
            push_json_str(&mut out, epoch);
        }
        if presence {
            out.push_str(",\"presence\":true");
        }
        out.push('}');
        ByteString::from(out)
    }
}

fn push_json_str(out: &mut String, s: &str) {
    // Serialising a &str into JSON cannot fail.
    match serde_json::to_string(s) {
        Ok(q) => out.push_str(&q),
        Err(_) => out.push_str("\"\""),
    }
}

/// The current time as an RFC 3339 UTC timestamp with millisecond precision.
pub fn now_rfc3339() -> String {
    humantime::format_rfc3339_millis(SystemTime::now()).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
    struct Chat {
        text: String,
    }
    impl WireMessage for Chat {
        const TYPE: &'static str = "chat";
    }

    #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
    struct Unit;
    impl WireMessage for Unit {
        const TYPE: &'static str = "unit";
    }

    #[test]
    fn encode_then_decode_round_trips_every_field() {
        let out = Outgoing::new(&Chat {
            text: "hi \"there\"".into(),
        })
        .unwrap()
        .room("lobby")
        .from("s1")
        .id(7)
        .timestamp_now();
        let text = out.encode();
        let head = Head::parse(&text).unwrap();
        assert_eq!(head.kind, "chat");
        assert_eq!(head.id, Some(7));
        assert_eq!(head.room.as_deref(), Some("lobby"));
        assert_eq!(head.from.as_deref(), Some("s1"));
        assert!(head.timestamp.is_some());
        let chat: Chat = head.data_as().unwrap();
        assert_eq!(chat.text, "hi \"there\"");
    }

    #[test]
    fn unit_messages_have_no_data_and_decode_without_it() {
        let text = Outgoing::new(&Unit).unwrap().room("r").encode();
        assert_eq!(&*text, r#"{"type":"unit","room":"r"}"#);
        let head = Head::parse(&text).unwrap();
        let _: Unit = head.data_as().unwrap();
    }

    #[test]
    fn malformed_and_typeless_input_is_an_error_not_a_panic() {
        for bad in [
            "",
            "{",
            "[]",
            "42",
            "{\"data\":1}",
            "{\"type\":5}",
            "{\"type\":\"x\",\"id\":-1}",
        ] {
            assert!(matches!(Head::parse(bad), Err(Error::Decode(_))), "{bad}");
        }
    }

    #[test]
    fn wrong_data_shape_is_a_decode_error() {
        let head = Head::parse(r#"{"type":"chat","data":{"txt":1}}"#).unwrap();
        assert!(matches!(head.data_as::<Chat>(), Err(Error::Decode(_))));
    }
}
