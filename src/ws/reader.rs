//! [`FrameReader`]: frames out of a raw byte stream, through the guarded codec.

use std::cell::RefCell;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll, Waker};

use actix_codec::Decoder;
use actix_http::ws::Frame;
use bytes::{Bytes, BytesMut};
use futures_util::Stream;

use super::{Fault, FrameCodec};

/// Decodes frames from a stream of byte chunks (actix-web's request payload after a WebSocket
/// upgrade) with a [`FrameCodec`]. It decodes after *every* chunk, so an oversize header is
/// refused before the payload behind it is buffered. After a [`Fault::Violation`] it goes on
/// reading without buffering (the codec skips or discards), so the closing handshake can still
/// see the peer's close frame; after [`Fault::Lost`] it ends. While its
/// consumer does not poll it, it reads nothing, and actix-http stops reading the socket: that is
/// the TCP backpressure a slow session relies on.
///
/// (actix-ws's `MessageStream` reads every chunk that is ready into its buffer before decoding,
/// which is why the server does not use it.)
pub struct FrameReader<S> {
    chunks: S,
    buf: BytesMut,
    codec: FrameCodec,
    done: bool,
    /// Told each time every chunk read from the socket so far has been taken.
    gate: Option<ReadGate>,
}

impl<S> FrameReader<S> {
    /// Read frames from `chunks` with `codec`.
    pub fn new(chunks: S, codec: FrameCodec) -> Self {
        Self {
            chunks,
            buf: BytesMut::new(),
            codec,
            done: false,
            gate: None,
        }
    }

    /// Hold the socket's reads to this reader's pace through `gate` (the standalone server's
    /// paced sockets put one in the connection's data; see `server::paced`).
    pub(crate) fn gated(mut self, gate: Option<ReadGate>) -> Self {
        if let Some(gate) = &gate {
            gate.0.borrow_mut().active = true;
        }
        self.gate = gate;
        self
    }
}

impl<S> Drop for FrameReader<S> {
    fn drop(&mut self) {
        // Nobody reads frames any more: the socket may be read freely (to its end).
        if let Some(gate) = &self.gate {
            let waker = {
                let mut st = gate.0.borrow_mut();
                st.active = false;
                st.waker.take()
            };
            if let Some(w) = waker {
                w.wake();
            }
        }
    }
}

/// Shared by a socket and the [`FrameReader`] of the WebSocket session on it, on one thread:
/// while a reader is attached, the socket reads again only once the reader has taken every
/// chunk read before. So actix-http's dispatcher never piles bytes up in its read buffer (it
/// grows that buffer, and never shrinks it, when its payload queue is full and it keeps
/// reading), and a session that stops reading stops the socket's reads at once (TCP
/// backpressure).
#[derive(Clone, Default)]
pub(crate) struct ReadGate(Rc<RefCell<GateState>>);

#[derive(Default)]
struct GateState {
    /// A reader is attached.
    active: bool,
    /// Bytes were read since the reader last took everything.
    fed: bool,
    /// The socket, waiting for the reader.
    waker: Option<Waker>,
}

impl ReadGate {
    /// For the socket, before a read: whether it may read now. When it may not, `cx` is woken
    /// once the reader has taken what was read.
    pub(crate) fn may_read(&self, cx: &Context<'_>) -> bool {
        let mut st = self.0.borrow_mut();
        if st.active && st.fed {
            st.waker = Some(cx.waker().clone());
            false
        } else {
            true
        }
    }

    /// For the socket, after a read of `n` bytes.
    pub(crate) fn read(&self, n: usize) {
        if n > 0 {
            let mut st = self.0.borrow_mut();
            st.fed = st.active;
        }
    }

    /// For the reader: everything read so far has been taken.
    fn drained(&self) {
        let waker = {
            let mut st = self.0.borrow_mut();
            st.fed = false;
            st.waker.take()
        };
        if let Some(w) = waker {
            w.wake();
        }
    }
}

impl<S, E> Stream for FrameReader<S>
where
    S: Stream<Item = Result<Bytes, E>> + Unpin,
    E: std::fmt::Display,
{
    type Item = Result<Frame, Fault>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        loop {
            if this.done {
                return Poll::Ready(None);
            }
            match this.codec.decode(&mut this.buf) {
                Ok(Some(frame)) => return Poll::Ready(Some(Ok(frame))),
                Ok(None) => {}
                Err(fault) => {
                    this.done = matches!(fault, Fault::Lost(_));
                    return Poll::Ready(Some(Err(fault)));
                }
            }
            match Pin::new(&mut this.chunks).poll_next(cx) {
                Poll::Ready(Some(Ok(bytes))) => {
                    if this.buf.is_empty() {
                        // No copy when nothing is buffered.
                        this.buf = BytesMut::from(bytes);
                    } else {
                        this.buf.extend_from_slice(&bytes);
                    }
                }
                Poll::Ready(Some(Err(e))) => {
                    this.done = true;
                    return Poll::Ready(Some(Err(Fault::Lost(e.to_string()))));
                }
                Poll::Ready(None) => {
                    this.done = true;
                    return Poll::Ready(None);
                }
                Poll::Pending => {
                    if let Some(gate) = &this.gate {
                        gate.drained();
                    }
                    return Poll::Pending;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures_util::StreamExt;

    /// A masked client frame header declaring `len` bytes.
    fn big_header(len: u64) -> Bytes {
        let mut v = vec![0x82, 0x80 | 127];
        v.extend_from_slice(&len.to_be_bytes());
        v.extend_from_slice(&[1, 2, 3, 4]);
        Bytes::from(v)
    }

    #[actix_rt::test]
    async fn stops_at_the_oversize_header_without_reading_on() {
        let pulled = std::rc::Rc::new(std::cell::Cell::new(0usize));
        let counter = pulled.clone();
        // The header, then an endless supply of 64 KiB chunks: the reader must stop at once.
        let chunks = futures_util::stream::iter(
            std::iter::once(big_header(1 << 30))
                .chain(std::iter::repeat(Bytes::from(vec![0u8; 65536]))),
        )
        .map(move |b| {
            counter.set(counter.get() + 1);
            Ok::<_, std::io::Error>(b)
        });
        let mut reader = FrameReader::new(chunks, FrameCodec::server(65536));
        match reader.next().await {
            Some(Err(Fault::Violation { code: 1009, .. })) => {}
            other => panic!("expected 1009, got {other:?}"),
        }
        assert_eq!(pulled.get(), 1, "read past the header before refusing it");
    }
}
