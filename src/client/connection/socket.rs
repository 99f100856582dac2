//! The socket as the Connection reads and writes it: awc's connection moved into tokio-util's
//! `Framed` with small buffers, behind the frame-header guard, with protocol violations
//! delivered as items so the socket is read on until the peer's Close.

use actix_http::ws::{self, Frame, ProtocolError};
use awc::BoxedSocket;
use bytes::Bytes;

use crate::ws::deflate::Deflater;
use crate::ws::{encode_compressed, Fault, FrameCodec};

/// Bytes each of the socket's buffers starts with; the read buffer grows for a larger message,
/// the write buffer for a larger batch. awc hands the connection over in actix-codec's
/// `Framed`, which keeps two 8 KiB buffers per connection and grows either back to 8 KiB
/// whenever less than 1 KiB is free; so the connection is moved into tokio-util's `Framed`
/// (the same `Decoder`/`Encoder` traits) with buffers of this size. Measured at 1000 idle
/// connections (`BENCHMARKS.md`): client RSS per connection 21.8 KB with actix-codec's
/// buffers, 19.5 KB with 4 KiB, 15.6 KB with 2 KiB, 13.6 KB with 1 KiB.
const SOCKET_BUFFER: usize = 1024;

/// Encoded bytes the writer lets pile up before it writes them out mid-batch (tokio-util's
/// default; the write buffer starts at [`SOCKET_BUFFER`] and grows to this under load).
const WRITE_BATCH_BYTES: usize = 8 * 1024;

/// One open socket: the connection behind the frame codec.
pub(super) type WsFramed = tokio_util::codec::Framed<Prefixed, ReadPastViolations>;

/// The frame codec as tokio-util's `Framed` needs it. tokio-util ends the stream after the
/// first decode error, but a protocol violation (an oversize frame, bad UTF-8) is answered with
/// a close frame and the socket is still read, its data discarded, until the peer's close
/// arrives (so the peer is not reset with our close unread). So violations travel as items
/// and only a lost connection is an error; the codec skips what the violation left behind.
pub(crate) struct ReadPastViolations(FrameCodec, Option<Deflater>);

impl actix_codec::Decoder for ReadPastViolations {
    type Item = Result<Frame, Fault>;
    type Error = Fault;

    fn decode(&mut self, src: &mut bytes::BytesMut) -> Result<Option<Self::Item>, Fault> {
        match self.0.decode(src) {
            Ok(frame) => Ok(frame.map(Ok)),
            Err(fault @ Fault::Violation { .. }) => Ok(Some(Err(fault))),
            Err(lost) => Err(lost),
        }
    }
}

impl actix_codec::Encoder<ws::Message> for ReadPastViolations {
    type Error = ProtocolError;

    fn encode(
        &mut self,
        item: ws::Message,
        dst: &mut bytes::BytesMut,
    ) -> Result<(), ProtocolError> {
        // With permessage-deflate, data messages go compressed (RSV1) unless the deflater
        // says they are better sent as they are.
        if let Some(deflater) = self.1.as_mut() {
            let packed = match &item {
                ws::Message::Text(t) => deflater.compress(t.as_bytes()).map(|p| (true, p)),
                ws::Message::Binary(b) => deflater.compress(b).map(|p| (false, p)),
                _ => None,
            };
            if let Some((text, payload)) = packed {
                return encode_compressed(&mut self.0, text, payload, dst);
            }
        }
        self.0.encode(item, dst)
    }
}

/// Move awc's connection into tokio-util's `Framed` with small buffers (see [`SOCKET_BUFFER`]),
/// keeping whatever awc had already read past the handshake (the peer may speak first).
/// `deflater` compresses what is sent when permessage-deflate was agreed (the codec already
/// inflates what arrives).
pub(super) fn reframe(
    framed: actix_codec::Framed<BoxedSocket, FrameCodec>,
    deflater: Option<Deflater>,
) -> WsFramed {
    // awc flushed its request before it read the response, so only the read side can hold
    // anything.
    let old = framed.into_parts();
    let io = Prefixed {
        // A copy, so that awc's 8 KiB read buffer is freed now (usually nothing to copy).
        prefix: Bytes::copy_from_slice(&old.read_buf),
        io: old.io,
    };
    let mut framed = tokio_util::codec::Framed::with_capacity(
        io,
        ReadPastViolations(old.codec, deflater),
        SOCKET_BUFFER,
    );
    framed.set_backpressure_boundary(WRITE_BATCH_BYTES);
    framed
}

/// The socket, behind the bytes awc read past the handshake: those are read first.
/// (tokio-util's `Framed::from_parts` would keep them, but grows both buffers to 8 KiB.)
pub(crate) struct Prefixed {
    prefix: Bytes,
    io: BoxedSocket,
}

impl actix_codec::AsyncRead for Prefixed {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut actix_codec::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        if !self.prefix.is_empty() {
            let n = self.prefix.len().min(buf.remaining());
            buf.put_slice(&self.prefix[..n]);
            if n == self.prefix.len() {
                self.prefix = Bytes::new();
            } else {
                let _ = self.prefix.split_to(n);
            }
            return std::task::Poll::Ready(Ok(()));
        }
        std::pin::Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl actix_codec::AsyncWrite for Prefixed {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        std::pin::Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_flush(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

/// An item from the socket's read half, with the generation of the socket it came from, so
/// that frames from an old socket are ignored.
pub(crate) struct SocketItem {
    /// The socket's generation (one per dial).
    pub(super) gen: u64,
    /// A frame, a violation the frame layer found, or `None`: the stream has ended.
    pub(super) item: Option<Result<Frame, Fault>>,
}
