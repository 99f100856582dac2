//! [`Assembler`]: whole messages out of frames, with the size cap and UTF-8 checks.

use actix_http::ws::{CloseReason, Frame, Item};
use bytes::{Bytes, BytesMut};
use bytestring::ByteString;

use super::{close, Fault};

/// What the frame layer hands up: a whole message, or a control frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// A whole text message, valid UTF-8 (fragments already put together).
    Text(ByteString),
    /// A whole binary message.
    Binary(Bytes),
    /// A Ping: answer it with a Pong carrying the same payload.
    Ping(Bytes),
    /// A Pong (the answer to one of our pings).
    Pong(Bytes),
    /// The peer's Close, with its code when it sent one (actix-http has already refused codes
    /// that may not travel on the wire, with 1002). Answer with [`close::reply_to`].
    Close(Option<CloseReason>),
}

/// A fragmented message being put together.
struct Partial {
    text: bool,
    buf: BytesMut,
    /// Bytes of `buf` already known to be valid UTF-8, so each byte is checked once.
    checked: usize,
}

/// Puts continuation frames back together, at most `max` bytes per message, checking text for
/// UTF-8 as the fragments arrive (an invalid byte fails at its fragment, not at the end). One per
/// connection; [`reset`](Self::reset) it when the socket changes.
pub struct Assembler {
    max: usize,
    partial: Option<Partial>,
}

impl Assembler {
    /// An assembler for messages of at most `max` bytes.
    pub fn new(max: usize) -> Self {
        Self { max, partial: None }
    }

    /// Forget a message in progress (the connection it came from is gone).
    pub fn reset(&mut self) {
        self.partial = None;
    }

    /// Take one decoded frame. Answers a whole message or a control frame, nothing while a
    /// fragmented message is still incomplete, or the [`Fault`] the connection must close with.
    pub fn push(&mut self, frame: Frame) -> Result<Option<Event>, Fault> {
        match frame {
            Frame::Text(bytes) => {
                self.no_partial("a text frame inside a fragmented message")?;
                text(bytes).map(Some)
            }
            Frame::Binary(bytes) => {
                self.no_partial("a binary frame inside a fragmented message")?;
                Ok(Some(Event::Binary(bytes)))
            }
            Frame::Continuation(item) => {
                let out = self.fragment(item);
                if out.is_err() {
                    // The connection closes; nothing of this message is kept meanwhile.
                    self.partial = None;
                }
                out
            }
            Frame::Ping(p) => Ok(Some(Event::Ping(p))),
            Frame::Pong(p) => Ok(Some(Event::Pong(p))),
            Frame::Close(reason) => Ok(Some(Event::Close(reason))),
        }
    }

    fn no_partial(&self, why: &str) -> Result<(), Fault> {
        match self.partial {
            Some(_) => Err(Fault::violation(close::PROTOCOL, why)),
            None => Ok(()),
        }
    }

    fn fragment(&mut self, item: Item) -> Result<Option<Event>, Fault> {
        let (start, chunk, last) = match item {
            Item::FirstText(b) => (Some(true), b, false),
            Item::FirstBinary(b) => (Some(false), b, false),
            Item::Continue(b) => (None, b, false),
            Item::Last(b) => (None, b, true),
        };
        let partial = match (start, self.partial.as_mut()) {
            (Some(_), Some(_)) => {
                return Err(Fault::violation(
                    close::PROTOCOL,
                    "a new fragmented message before the last one ended",
                ))
            }
            (None, None) => {
                return Err(Fault::violation(
                    close::PROTOCOL,
                    "a continuation frame without a first fragment",
                ))
            }
            (Some(text), None) => self.partial.insert(Partial {
                text,
                buf: BytesMut::new(),
                checked: 0,
            }),
            (None, Some(p)) => p,
        };
        let size = partial.buf.len().saturating_add(chunk.len());
        if size > self.max {
            let max = self.max;
            return Err(Fault::violation(
                close::TOO_BIG,
                format!("fragmented message of at least {size} bytes exceeds the limit of {max}"),
            ));
        }
        partial.buf.extend_from_slice(&chunk);
        if partial.text {
            // An incomplete character at the end may be completed by the next fragment; any
            // other error is final now.
            match std::str::from_utf8(&partial.buf[partial.checked..]) {
                Ok(_) => partial.checked = partial.buf.len(),
                Err(e) if e.error_len().is_none() && !last => partial.checked += e.valid_up_to(),
                Err(_) => return Err(invalid_utf8()),
            }
        }
        if !last {
            return Ok(None);
        }
        let Some(done) = self.partial.take() else {
            return Ok(None);
        };
        let bytes = done.buf.freeze();
        if done.text {
            // Every byte was checked above; this conversion re-checks, which is cheap next to
            // the copy that put the fragments together, and keeps `unsafe` out.
            text(bytes).map(Some)
        } else {
            Ok(Some(Event::Binary(bytes)))
        }
    }
}

fn text(bytes: Bytes) -> Result<Event, Fault> {
    ByteString::try_from(bytes)
        .map(Event::Text)
        .map_err(|_| invalid_utf8())
}

fn invalid_utf8() -> Fault {
    Fault::violation(close::INVALID_DATA, "invalid UTF-8 in a text message")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn code(r: Result<Option<Event>, Fault>) -> u16 {
        match r {
            Err(Fault::Violation { code, .. }) => code,
            other => panic!("expected a violation, got {other:?}"),
        }
    }

    #[test]
    fn fragments_come_together_with_a_split_character() {
        let mut a = Assembler::new(100);
        let euro = "€".as_bytes();
        let first = Frame::Continuation(Item::FirstText(Bytes::copy_from_slice(&euro[..1])));
        assert_eq!(a.push(first).unwrap(), None);
        // A ping between fragments comes straight through.
        let ping = a.push(Frame::Ping(Bytes::from_static(b"p"))).unwrap();
        assert_eq!(ping, Some(Event::Ping(Bytes::from_static(b"p"))));
        let last = Frame::Continuation(Item::Last(Bytes::copy_from_slice(&euro[1..])));
        assert_eq!(a.push(last).unwrap(), Some(Event::Text("€".into())));
    }

    #[test]
    fn size_utf8_and_order_rules() {
        let mut a = Assembler::new(4);
        a.push(Frame::Continuation(Item::FirstBinary(Bytes::from_static(
            b"abc",
        ))))
        .unwrap();
        let r = a.push(Frame::Continuation(Item::Last(Bytes::from_static(b"de"))));
        assert_eq!(code(r), 1009);

        let mut a = Assembler::new(100);
        let r = a.push(Frame::Continuation(Item::FirstText(Bytes::from_static(
            b"ok\xff",
        ))));
        assert_eq!(code(r), 1007);
        // An incomplete character at the very end is invalid.
        let mut a = Assembler::new(100);
        a.push(Frame::Continuation(Item::FirstText(Bytes::from_static(
            b"\xe2",
        ))))
        .unwrap();
        let r = a.push(Frame::Continuation(Item::Last(Bytes::from_static(b"\x82"))));
        assert_eq!(code(r), 1007);
        assert_eq!(code(a.push(Frame::Text(Bytes::from_static(b"\xff")))), 1007);

        let mut a = Assembler::new(100);
        let r = a.push(Frame::Continuation(Item::Continue(Bytes::new())));
        assert_eq!(code(r), 1002);
        a.push(Frame::Continuation(Item::FirstBinary(Bytes::new())))
            .unwrap();
        assert_eq!(code(a.push(Frame::Binary(Bytes::new()))), 1002);
    }
}
