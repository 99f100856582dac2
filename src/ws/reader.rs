//! [`FrameReader`]: frames out of a raw byte stream, through the guarded codec.

use std::pin::Pin;
use std::task::{Context, Poll};

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
}

impl<S> FrameReader<S> {
    /// Read frames from `chunks` with `codec`.
    pub fn new(chunks: S, codec: FrameCodec) -> Self {
        Self {
            chunks,
            buf: BytesMut::new(),
            codec,
            done: false,
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
                Poll::Pending => return Poll::Pending,
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
