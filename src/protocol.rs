//! The rooms protocol of `wsm serve` and the embeddable server, as typed messages.
//!
//! | client sends | server answers |
//! | --- | --- |
//! | [`Join`] with `room` | [`Joined`] with the same `room` and `id`, and the room's position ([`JoinedData`]) when the server keeps history |
//! | [`Join`] with `room` and `since` (`{"offset":O,"epoch":"X"}`) | [`Joined`] saying whether every missed publication follows (`recovered`, else `reason`), then those publications in order, then live ones |
//! | [`History`] with `room`, `since`?, `limit`? | [`History`] with [`HistoryData`]: the publications after `since` (or the latest), oldest first |
//! | [`Join`] with `room` and `"presence":true` (and `data` `{"info":I}`) | [`Joined`], then [`PresenceDiff`]s: who came and went |
//! | [`Presence`] with `room` | [`Presence`] with [`PresenceData`]: the exact count and the members (up to a limit) |
//! | [`Leave`] with `room` | [`Left`] with the same `room` and `id` |
//! | [`Publish`] with `room` and `data` | every member gets [`RoomMessage`] (with `from`, `timestamp`, and with history its `offset` and `epoch`); with an `id`, the sender also gets [`Ack`] |
//! | [`Echo`] | [`Echo`] with the same `data` and `id` |
//! | [`Ping`] | [`Pong`] |
//! | [`Refresh`] with a new token (after [`TokenExpiring`]) | [`Refreshed`], or [`ErrorReply`] `bad_token` |
//! | anything malformed or unknown | [`ErrorReply`] (`type` `"error"`); the session stays open |
//!
//! On connect the server sends [`Welcome`]. Room names travel in the envelope's `room` field, not
//! in `data`, so [`join`], [`leave`] and [`publish`] build the whole envelope.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::envelope::{Outgoing, WireMessage};
use crate::error::Result;

/// `{"type":"welcome","data":{"session":S}}`: the first message of every session.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Welcome {
    /// The session id the server gave this connection; it appears as `from` on its publishes.
    pub session: String,
}
impl WireMessage for Welcome {
    const TYPE: &'static str = "welcome";
}

/// `{"type":"join","room":R}`: become a member of room R.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Join;
impl WireMessage for Join {
    const TYPE: &'static str = "join";
}

/// `{"type":"joined","room":R,"data":{"offset":L,"epoch":"X"}?}`: the answer to [`Join`]. A
/// server that keeps room history sends the room's position (and, for a join with `since`,
/// whether what was missed follows: [`JoinedData`]); one that keeps none sends no `data`
/// (`None`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Joined(pub Option<JoinedData>);
impl WireMessage for Joined {
    const TYPE: &'static str = "joined";
}

/// `{"type":"leave","room":R}`: stop being a member of room R.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Leave;
impl WireMessage for Leave {
    const TYPE: &'static str = "leave";
}

/// `{"type":"left","room":R}`: the answer to [`Leave`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Left;
impl WireMessage for Left {
    const TYPE: &'static str = "left";
}

/// `{"type":"publish","room":R,"data":D}`: send D to every member of R.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Publish(pub Value);
impl WireMessage for Publish {
    const TYPE: &'static str = "publish";
}

/// `{"type":"message","room":R,"from":S,"data":D,"timestamp":T}`: a publish, as every member
/// of the room receives it. Subscribe your own type with `TYPE = "message"` to decode `data` as
/// something more specific than a JSON value.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct RoomMessage(pub Value);
impl WireMessage for RoomMessage {
    const TYPE: &'static str = "message";
}

/// `{"type":"history","room":R,"id":N,"since":{"offset":O,"epoch":"X"}?,"limit":K?}`: ask for a
/// room's recent publications; answered with the same type, `data`
/// `{"publications":[...],"offset":L,"epoch":"X","complete":bool}` (see [`HistoryData`]).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct History;
impl WireMessage for History {
    const TYPE: &'static str = "history";
}

/// The `data` of a `history` answer: the room's publications after the position asked from
/// (or the latest ones), oldest first, each a whole room message as members received it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HistoryData {
    /// The publications, oldest first.
    pub publications: Vec<Value>,
    /// The room's last offset.
    pub offset: u64,
    /// The room's epoch.
    pub epoch: String,
    /// Whether `publications` holds every publication after the position asked from (without
    /// one: since the room's history began) up to `offset`.
    pub complete: bool,
}

/// The `data` of `joined` in a room with history: the room's position, and with `since`
/// whether every missed publication follows (`recovered`) or why not (`reason`:
/// `epoch_changed`, `too_old`, `too_many`, `unavailable`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JoinedData {
    /// The room's last offset.
    pub offset: u64,
    /// The room's epoch.
    pub epoch: String,
    /// With `since`: whether every missed publication follows.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recovered: Option<bool>,
    /// With `"recovered":false`: why.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// `{"type":"presence","room":R,"id":N}`: who is in room R; answered with the same type and
/// [`PresenceData`]. A `join` with `"presence":true` (and optionally `data` `{"info":I}`, at
/// most 1 KiB of JSON shown to the others) also subscribes the member to [`PresenceDiff`]s.
/// Who may ask is decided by the same check as joining.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Presence;
impl WireMessage for Presence {
    const TYPE: &'static str = "presence";
}

/// Most bytes a join's presence `info` may take as JSON text: it travels to every member of the
/// room with each diff and answer, so it is kept small (as Pusher's 1 KB of user info). A join
/// with more is refused with [`codes::BAD_DATA`].
pub const MAX_PRESENCE_INFO_BYTES: usize = 1024;

/// The `data` of a `presence` answer.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct PresenceData {
    /// How many members the room has: always exact (every node's, once converged).
    pub count: u64,
    /// The members, at most the server's `presence_list_limit` of them.
    pub members: Vec<PresenceMember>,
    /// Whether `members` was cut at the limit (`count` is still exact).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub truncated: bool,
}

/// One member of a room as presence shows it.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct PresenceMember {
    /// Its session id (unique across nodes: on a backplane it carries the node's id).
    pub session: String,
    /// Who it is (a token's `sub`, or what the server's auth hook said), if known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub identity: Option<String>,
    /// What it shows the others (its join's `info`, or the token's `info` claim), if anything.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub info: Option<Value>,
}

/// `{"type":"presence_diff","room":R,"data":{"joins":[...],"leaves":[...]}}`: who came and who
/// went, sent to members that joined with `"presence":true`, gathered over at most 100 ms, in
/// order with the room's messages, never naming the receiver's own join.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct PresenceDiff {
    /// Members that joined.
    #[serde(default)]
    pub joins: Vec<PresenceMember>,
    /// Members that left (or whose session or node ended).
    #[serde(default)]
    pub leaves: Vec<PresenceMember>,
}
impl WireMessage for PresenceDiff {
    const TYPE: &'static str = "presence_diff";
}

/// `{"type":"ack","id":N}`: the server accepted the publish that carried `id` N.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Ack;
impl WireMessage for Ack {
    const TYPE: &'static str = "ack";
}

/// `{"type":"echo","data":D}`: the server sends D back to the sender.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Echo(pub Value);
impl WireMessage for Echo {
    const TYPE: &'static str = "echo";
}

/// `{"type":"ping"}`: an application-level heartbeat.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Ping;
impl WireMessage for Ping {
    const TYPE: &'static str = "ping";
}

/// `{"type":"pong"}`: the answer to [`Ping`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Pong;
impl WireMessage for Pong {
    const TYPE: &'static str = "pong";
}

/// `{"type":"token_expiring","data":{"in_ms":N}}`: the session's token (JWT authentication)
/// expires in `in_ms` milliseconds; answer with [`Refresh`] before then, or the server closes
/// with 4001 ([`close::TOKEN_EXPIRED`](crate::ws::close::TOKEN_EXPIRED)). Sent 30 s before `exp`,
/// or at half the remaining life of a token that had less than a minute left when it arrived.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TokenExpiring {
    /// Milliseconds until the token's `exp`.
    pub in_ms: u64,
}
impl WireMessage for TokenExpiring {
    const TYPE: &'static str = "token_expiring";
}

/// `{"type":"refresh","id":N,"data":{"token":T}}`: a new token for the same `sub`, so that the
/// session outlives its current token's `exp`; answered with [`Refreshed`] or an
/// [`ErrorReply`] with [`codes::BAD_TOKEN`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Refresh {
    /// The new token (a JWT).
    pub token: String,
}
impl WireMessage for Refresh {
    const TYPE: &'static str = "refresh";
}

/// `{"type":"refreshed","id":N}`: the server took the token of the [`Refresh`] with `id` N; the
/// session now expires at that token's `exp`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Refreshed;
impl WireMessage for Refreshed {
    const TYPE: &'static str = "refreshed";
}

/// `{"type":"error","id":N?,"data":{"code":C,"message":M}}`: the server could not act on a
/// message. The session stays open.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ErrorReply {
    /// A stable, machine-readable code; see [`codes`].
    pub code: String,
    /// A sentence for people.
    pub message: String,
}
impl WireMessage for ErrorReply {
    const TYPE: &'static str = "error";
}

/// The `code`s an [`ErrorReply`] carries.
pub mod codes {
    /// The frame is not a JSON object with a string `type`.
    pub const MALFORMED: &str = "malformed";
    /// The `type` is not part of the protocol.
    pub const UNKNOWN_TYPE: &str = "unknown_type";
    /// The `room` is missing, empty, too long or has characters outside `[A-Za-z0-9_.:-]`.
    pub const BAD_ROOM: &str = "bad_room";
    /// `leave` or `publish` for a room the session is not a member of.
    pub const NOT_JOINED: &str = "not_joined";
    /// `join` would take the session over its room limit.
    pub const TOO_MANY_ROOMS: &str = "too_many_rooms";
    /// A binary frame on the rooms endpoint, which speaks JSON text only.
    pub const BINARY_UNSUPPORTED: &str = "binary_unsupported";
    /// The join check (`Rooms::with_join_check`) does not let this session into the room.
    pub const FORBIDDEN_ROOM: &str = "forbidden_room";
    /// The `data` of a message handled by an application handler (`Rooms::on_message`) does
    /// not decode as the handler's type.
    pub const BAD_DATA: &str = "bad_data";
    /// A publish named an `event` that is not 1 to 64 characters of `A-Z a-z 0-9 _ . : -`, or
    /// is one of the protocol's own types ([`RESERVED_TYPES`](super::RESERVED_TYPES)).
    pub const BAD_EVENT: &str = "bad_event";
    /// The session went past its rate limit (`ServerConfig::rate_limit`); the message was not
    /// handled. Going on until twice the burst closes the session with 1008.
    pub const RATE_LIMITED: &str = "rate_limited";
    /// With several server nodes: the publish reached this node's members but could not be
    /// handed to the backplane (Redis down or too slow), so members on other nodes did not get
    /// it. Sent only for a publish with an `id`, in place of its `ack`.
    pub const BACKPLANE_UNAVAILABLE: &str = "backplane_unavailable";
    /// A `history` request to a server that keeps no room history.
    pub const HISTORY_OFF: &str = "history_off";
    /// A `since` that is not `{"offset":O,"epoch":"X"}` (a u64 and a string).
    pub const BAD_POSITION: &str = "bad_position";
    /// A `refresh` whose token does not verify (signature, algorithm, audience, issuer, expiry),
    /// names another `sub` than the session's, or came to a server that uses no tokens. The
    /// session keeps its current token (and its expiry).
    pub const BAD_TOKEN: &str = "bad_token";
}

/// The protocol's own message types, which a publish may not use as its `event` (members could
/// not tell a broadcast from a protocol message).
pub const RESERVED_TYPES: [&str; 18] = [
    "welcome",
    "join",
    "joined",
    "leave",
    "left",
    "publish",
    "message",
    "ack",
    "echo",
    "ping",
    "pong",
    "error",
    "history",
    "token_expiring",
    "refresh",
    "refreshed",
    "presence",
    "presence_diff",
];

/// Whether `byte` may appear in a room or event name: `A-Z a-z 0-9 _ . : -`, so that names
/// need no escaping in JSON, in URLs, in traces or in a Redis channel name.
fn is_name_byte(byte: u8) -> bool {
    byte.is_ascii_alphanumeric() || matches!(byte, b'_' | b'.' | b':' | b'-')
}

/// Longest event name a publish may carry, in bytes.
pub const MAX_EVENT_LEN: usize = 64;

/// Whether `room` follows the room name rules: 1 to `max_len` bytes of `A-Z a-z 0-9 _ . : -`.
/// The server applies it with
/// [`ServerConfig::max_room_name_len`](crate::config::ServerConfig::max_room_name_len) (through
/// [`ServerConfig::is_valid_room`](crate::config::ServerConfig::is_valid_room)); a room that
/// breaks it is answered with [`codes::BAD_ROOM`].
pub fn is_valid_room(room: &str, max_len: usize) -> bool {
    !room.is_empty() && room.len() <= max_len && room.bytes().all(is_name_byte)
}

/// Whether `event` may name a publish's event type: 1 to [`MAX_EVENT_LEN`] characters of
/// `A-Z a-z 0-9 _ . : -`, and not one of [`RESERVED_TYPES`]; one that breaks it is answered
/// with [`codes::BAD_EVENT`].
pub fn is_valid_event(event: &str) -> bool {
    !event.is_empty()
        && event.len() <= MAX_EVENT_LEN
        && event.bytes().all(is_name_byte)
        && !RESERVED_TYPES.contains(&event)
}

/// `{"type":"publish","room":room,"event":T::TYPE,"data":msg}`: publish a typed message into a
/// room; every member receives it as type `T::TYPE` (subscribe `T` to get it), with `room` and
/// `from`.
pub fn publish_event<T: WireMessage>(room: &str, msg: &T) -> Result<Outgoing> {
    let out = Outgoing::raw(Publish::TYPE, raw_data(msg)?).room(room);
    // "message" is what a publish without an event is delivered as.
    Ok(if T::TYPE == RoomMessage::TYPE {
        out
    } else {
        out.event(T::TYPE)
    })
}

/// `{"type":"join","room":room}`.
pub fn join(room: &str) -> Outgoing {
    Outgoing::bare(Join::TYPE).room(room)
}

/// `{"type":"join","room":room,"presence":true,"data":{"info":info}}`: join and receive the
/// room's presence changes, showing `info` (at most 1 KiB of JSON) to the others.
pub fn join_with_presence(room: &str, info: Option<&Value>) -> Result<Outgoing> {
    let out = match info {
        Some(info) => Outgoing::raw(Join::TYPE, raw_data(&serde_json::json!({ "info": info }))?),
        None => Outgoing::bare(Join::TYPE),
    };
    Ok(out.room(room).presence())
}

/// `{"type":"presence","room":room}`.
pub fn presence(room: &str) -> Outgoing {
    Outgoing::bare(Presence::TYPE).room(room)
}

/// `{"type":"leave","room":room}`.
pub fn leave(room: &str) -> Outgoing {
    Outgoing::bare(Leave::TYPE).room(room)
}

/// `{"type":"publish","room":room,"data":data}`.
pub fn publish<T: Serialize>(room: &str, data: &T) -> Result<Outgoing> {
    Ok(Outgoing::raw(Publish::TYPE, raw_data(data)?).room(room))
}

/// `{"type":"echo","data":data}`.
pub fn echo<T: Serialize>(data: &T) -> Result<Outgoing> {
    Ok(Outgoing::raw(Echo::TYPE, raw_data(data)?))
}

/// `data` serialised once, straight to the JSON text the envelope carries (not through a
/// `serde_json::Value` first).
fn raw_data<T: Serialize + ?Sized>(data: &T) -> Result<Box<serde_json::value::RawValue>> {
    serde_json::value::to_raw_value(data).map_err(|e| crate::error::Error::Encode(e.to_string()))
}
