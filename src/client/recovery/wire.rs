//! The client's side of the history wire format: the `since` a rejoin carries, the `history`
//! request, and the `data` of `joined` and `history` answers.
//!
//! - `{"type":"join","room":R,"since":{"offset":O,"epoch":"X"}}` is answered `joined` with
//!   `data: {"offset":L,"epoch":"X","recovered":bool,"reason":R'?}`; a first join (no `since`)
//!   with `data: {"offset":L,"epoch":"X"}`; a server without history sends no `data`.
//! - `{"type":"history","room":R,"id":N,"since":{...}?,"limit":K?}` is answered
//!   `{"type":"history","room":R,"id":N,"data":{"publications":[...],"offset":L,"epoch":"X","complete":bool}}`.

use bytestring::ByteString;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use super::streams::{JoinedAt, Position};

/// The wire type of a history request and of its answer.
pub(crate) const HISTORY: &str = "history";

/// `{"offset":O,"epoch":"X"}` as `since` carries it.
#[derive(Serialize)]
struct Since<'a> {
    offset: u64,
    epoch: &'a str,
}

impl<'a> From<&'a Position> for Since<'a> {
    fn from(p: &'a Position) -> Self {
        Since {
            offset: p.offset,
            epoch: &p.epoch,
        }
    }
}

/// A `join` frame (as the on-connect set holds it) with `since` added before its closing brace,
/// every other field kept. `None` for a frame that is not a JSON object's text.
pub(crate) fn with_since(join: &str, since: &Position) -> Option<ByteString> {
    let body = join.trim_end().strip_suffix('}')?;
    let since = serde_json::to_string(&Since::from(since)).ok()?;
    let sep = if body.trim_end().ends_with('{') {
        ""
    } else {
        ","
    };
    Some(ByteString::from(format!("{body}{sep}\"since\":{since}}}")))
}

/// A `history` request for `room`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct HistoryQuery {
    pub(crate) room: String,
    pub(crate) since: Option<Position>,
    pub(crate) limit: Option<u64>,
}

impl HistoryQuery {
    /// The frame, with request id `id`.
    pub(crate) fn encode(&self, id: u64) -> ByteString {
        #[derive(Serialize)]
        struct Frame<'a> {
            #[serde(rename = "type")]
            kind: &'static str,
            room: &'a str,
            id: u64,
            #[serde(skip_serializing_if = "Option::is_none")]
            since: Option<Since<'a>>,
            #[serde(skip_serializing_if = "Option::is_none")]
            limit: Option<u64>,
        }
        let frame = Frame {
            kind: HISTORY,
            room: &self.room,
            id,
            since: self.since.as_ref().map(Since::from),
            limit: self.limit,
        };
        // Strings and integers always serialise.
        ByteString::from(serde_json::to_string(&frame).unwrap_or_default())
    }
}

/// The `data` of a `joined`.
#[derive(Deserialize)]
struct JoinedData {
    #[serde(default)]
    offset: Option<u64>,
    #[serde(default)]
    epoch: Option<String>,
    #[serde(default)]
    recovered: Option<bool>,
    #[serde(default)]
    reason: Option<String>,
}

/// The position a `joined`'s `data` reports; `None` when it has none (a server without history,
/// or data of another shape).
pub(crate) fn joined_at(data: Option<&RawValue>) -> Option<JoinedAt> {
    let d: JoinedData = serde_json::from_str(data?.get()).ok()?;
    Some(JoinedAt {
        position: Position {
            epoch: d.epoch?,
            offset: d.offset?,
        },
        recovered: d.recovered,
        reason: d.reason,
    })
}

/// The `data` of a `history` answer, its publications still raw.
#[derive(Deserialize)]
pub(crate) struct HistoryData<'a> {
    #[serde(borrow)]
    pub(crate) publications: Vec<&'a RawValue>,
    pub(crate) offset: u64,
    pub(crate) epoch: String,
    #[serde(default)]
    pub(crate) complete: bool,
}

impl<'a> HistoryData<'a> {
    /// Decode a `history` answer's `data`.
    pub(crate) fn parse(data: Option<&'a RawValue>) -> crate::Result<Self> {
        let raw = data.map_or("null", RawValue::get);
        serde_json::from_str(raw).map_err(|e| crate::Error::Decode(format!("history: {e}")))
    }
}

/// The `offset` of a room message in a history answer, if it has one.
pub(crate) fn offset_of(publication: &RawValue) -> Option<u64> {
    #[derive(Deserialize)]
    struct Stamp {
        #[serde(default)]
        offset: Option<u64>,
    }
    serde_json::from_str::<Stamp>(publication.get())
        .ok()?
        .offset
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pos(offset: u64) -> Position {
        Position {
            epoch: "ep\"1".into(),
            offset,
        }
    }

    #[test]
    fn since_is_added_to_a_join_keeping_its_fields() {
        let join = crate::protocol::join("lobby").encode();
        let out = with_since(&join, &pos(41)).expect("a JSON object");
        let v: serde_json::Value = serde_json::from_str(&out).unwrap();
        assert_eq!(v["type"], "join");
        assert_eq!(v["room"], "lobby");
        assert_eq!(v["since"]["offset"], 41);
        assert_eq!(v["since"]["epoch"], "ep\"1");
        assert!(with_since("not json", &pos(1)).is_none());
    }

    #[test]
    fn a_presence_join_keeps_its_flag_and_info_with_since() {
        let info = serde_json::json!({ "name": "ann" });
        let join = crate::protocol::join_with_presence("lobby", Some(&info))
            .unwrap()
            .encode();
        let out = with_since(&join, &pos(5)).expect("a JSON object");
        let v: serde_json::Value = serde_json::from_str(&out).unwrap();
        assert_eq!(v["presence"], true);
        assert_eq!(v["data"]["info"], info);
        assert_eq!(v["since"]["offset"], 5);
    }

    #[test]
    fn a_history_request_carries_since_and_limit_only_when_given() {
        let q = HistoryQuery {
            room: "r".into(),
            since: None,
            limit: None,
        };
        assert_eq!(&*q.encode(3), r#"{"type":"history","room":"r","id":3}"#);
        let q = HistoryQuery {
            since: Some(pos(7)),
            limit: Some(5),
            ..q
        };
        let v: serde_json::Value = serde_json::from_str(&q.encode(4)).unwrap();
        assert_eq!(v["since"]["offset"], 7);
        assert_eq!(v["limit"], 5);
    }

    #[test]
    fn joined_data_without_a_position_is_none() {
        let raw = |s: &str| serde_json::from_str::<&RawValue>(s).unwrap().to_owned();
        assert!(joined_at(None).is_none());
        assert!(joined_at(Some(&raw(r#"{"offset":3}"#))).is_none());
        assert!(joined_at(Some(&raw(r#"[1]"#))).is_none());
        let at = joined_at(Some(&raw(
            r#"{"offset":3,"epoch":"x","recovered":false,"reason":"too_old"}"#,
        )))
        .unwrap();
        assert_eq!(at.position.offset, 3);
        assert_eq!(at.recovered, Some(false));
        assert_eq!(at.reason.as_deref(), Some("too_old"));
    }
}
