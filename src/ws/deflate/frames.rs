//! [`Incoming`]: the compressed messages among a connection's decoded frames, inflated.

use actix_http::ws::{Frame, Item};
use bytes::Bytes;

use super::Inflater;
use crate::ws::{close, Fault};

/// Inflates the data frames of compressed messages as the [`FrameCodec`](crate::ws::FrameCodec)
/// decodes them: a whole frame at once, a fragmented message fragment by fragment, each
/// fragment limited to what is left of the message's size limit, so the fragments handed up
/// (and put together by the [`Assembler`](crate::ws::Assembler), which checks their UTF-8)
/// never pass the limit together, and inflating costs at most one [`STEP`](super::STEP) more.
#[derive(Debug)]
pub struct Incoming {
    inflater: Inflater,
    /// Inflated bytes so far of the compressed fragmented message in progress, if any.
    fragmented: Option<usize>,
}

impl Incoming {
    /// Inflate with `inflater` (from the connection's [`Agreement`](super::Agreement)).
    pub fn new(inflater: Inflater) -> Self {
        Self {
            inflater,
            fragmented: None,
        }
    }

    /// The frame as the layers above should see it: `rsv1` says whether its header had RSV1
    /// set (the codec has already refused RSV1 on anything but the first frame of a data
    /// message); a compressed message's frames come back inflated, everything else as it was.
    pub fn frame(&mut self, frame: Frame, rsv1: bool, max: usize) -> Result<Frame, Fault> {
        let out = match frame {
            Frame::Text(b) if rsv1 => Frame::Text(self.whole(&b, max)?),
            Frame::Binary(b) if rsv1 => Frame::Binary(self.whole(&b, max)?),
            Frame::Continuation(Item::FirstText(b)) if rsv1 => {
                Frame::Continuation(Item::FirstText(self.first(&b, max)?))
            }
            Frame::Continuation(Item::FirstBinary(b)) if rsv1 => {
                Frame::Continuation(Item::FirstBinary(self.first(&b, max)?))
            }
            Frame::Continuation(Item::Continue(b)) if self.fragmented.is_some() => {
                Frame::Continuation(Item::Continue(self.next(&b, false, max)?))
            }
            Frame::Continuation(Item::Last(b)) if self.fragmented.is_some() => {
                Frame::Continuation(Item::Last(self.next(&b, true, max)?))
            }
            other => other,
        };
        Ok(out)
    }

    fn whole(&mut self, payload: &[u8], max: usize) -> Result<Bytes, Fault> {
        if self.fragmented.is_some() {
            // The inflater is in the middle of another message; the Assembler would refuse
            // the frame too.
            return Err(Fault::violation(
                close::PROTOCOL,
                "a data frame inside a fragmented message",
            ));
        }
        self.inflate(payload, true, max)
    }

    fn first(&mut self, payload: &[u8], max: usize) -> Result<Bytes, Fault> {
        if self.fragmented.is_some() {
            return Err(Fault::violation(
                close::PROTOCOL,
                "a new fragmented message before the last one ended",
            ));
        }
        self.fragmented = Some(0);
        self.next(payload, false, max)
    }

    fn next(&mut self, payload: &[u8], last: bool, max: usize) -> Result<Bytes, Fault> {
        let so_far = self.fragmented.unwrap_or(0);
        let out = self.inflate(payload, last, max.saturating_sub(so_far))?;
        self.fragmented = (!last).then_some(so_far + out.len());
        Ok(out)
    }

    fn inflate(&mut self, payload: &[u8], last: bool, max: usize) -> Result<Bytes, Fault> {
        let mut out = Vec::new();
        match self.inflater.inflate(payload, last, &mut out, max) {
            Ok(()) => Ok(Bytes::from(out)),
            Err(fault) => {
                self.fragmented = None;
                Err(fault)
            }
        }
    }

    /// Whether inflater state is held right now (between messages it is not, unless the peer
    /// takes its context over).
    pub fn holds_state(&self) -> bool {
        self.inflater.holds_state()
    }
}
