//! The standalone server's socket, read in turns of at most [`READ_TURN`] bytes.
//!
//! # Why
//!
//! actix-http's HTTP/1 dispatcher reads the socket into a `BytesMut` of 8 KiB, in a loop that
//! goes on while the socket has data and fewer than 128 KiB are buffered, and grows the buffer
//! by doubling (bytes' `reserve`) whenever less than 1 KiB is free. A WebSocket's frames reach
//! the session through that buffer, so a peer that sends faster than one dispatcher turn
//! handles (any message of a few hundred KiB, or a burst of small ones) grows it to 256 KiB, and
//! actix-http never shrinks it: the connection keeps 256 KiB of resident memory for the rest of
//! its life. Measured (issue 17): 50 `/echo` sessions each echoing one 8 MiB message kept
//! 269 kB each once idle, 50 read buffers of 256 KiB (seen with gdb on the `realloc`s, all from
//! the dispatcher's `reserve`), where an idle session costs about 15 kB.
//!
//! actix-http has no setting for it, and actix-web's `HttpServer` only serves plain
//! `TcpStream`s, so the standalone server ([`super::serve`]) is built from actix-server and
//! actix-http's `H1Service` directly, over [`Paced`] sockets, which keep the dispatcher from
//! ever growing that buffer in three ways:
//!
//! - a read returns at most [`READ_TURN`] bytes per dispatcher turn, and the next one yields
//!   (`Pending`, waking itself at once, as tokio's cooperative budget does), so the dispatcher
//!   hands what it read to the session before it reads again;
//! - a read leaves [`KEEP_FREE`] bytes of the buffer free: the dispatcher tops its buffer up
//!   *before* the read that yields, while it still holds the bytes just read, and that top-up
//!   doubles the allocation instead of reusing it;
//! - while a WebSocket session's [`FrameReader`](crate::ws::FrameReader) is attached (through a
//!   [`ReadGate`] in the connection's data), the socket reads again only once the reader has
//!   taken what was read: otherwise, when actix-http's payload queue (32 KiB) is full, the
//!   dispatcher stops decoding but reads on, piling bytes up in its buffer. This is also TCP
//!   backpressure at once for a session that stops reading.
//!
//! Measured after all three (release, `tests/memory_large_message.rs`): +4.4 kB per session
//! once idle again after an 8 MiB echo, against +269 kB. The cost, one dispatcher turn per
//! 8 KiB read, did not show beyond the noise in `wsm load` runs (`BENCHMARKS.md`).
//!
//! An application that mounts the rooms into its own `HttpServer` (and [`super::serve_tls`])
//! keeps actix-http's behaviour: up to 256 KiB per connection that once received a burst
//! (bounded, whatever the message size).

use std::any::Any;
use std::io;
use std::net::{SocketAddr, ToSocketAddrs};
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use actix_codec::{AsyncRead, AsyncWrite, ReadBuf};
use actix_http::body::MessageBody;
use actix_http::{HttpService, Request, Response};
use actix_service::{
    fn_service, map_config, IntoServiceFactory, ServiceFactory, ServiceFactoryExt,
};
use actix_web::dev::{AppConfig, Extensions, Server};
use actix_web::rt::net::TcpStream;

use crate::error::{Error, Result};
use crate::ws::ReadGate;

/// Most bytes one dispatcher turn reads: actix-http's read buffer starts at 8 KiB, so reading no
/// more than that between two decodes keeps it there.
pub(crate) const READ_TURN: usize = 8 * 1024;

/// Bytes a read leaves free in the reader's buffer: actix-http's dispatcher tops its read buffer
/// up (bytes' `reserve`) as soon as less than 1 KiB of it is free, before its next read (the one
/// that yields), and while it still holds the bytes just read that `reserve` grows the buffer
/// by doubling instead of reusing it.
const KEEP_FREE: usize = 1024;

/// A socket whose reads stop for one turn after [`READ_TURN`] bytes (see the module docs).
/// Writes go straight through.
pub(crate) struct Paced<T> {
    io: tokio::io::Take<T>,
    /// Bytes read since the reader last saw `Pending`.
    spent: usize,
    /// Put in the connection's data; a WebSocket session's frame reader attaches to it.
    gate: ReadGate,
}

impl<T: AsyncRead> Paced<T> {
    pub(crate) fn new(io: T) -> Self {
        Self {
            io: tokio::io::AsyncReadExt::take(io, READ_TURN as u64),
            spent: 0,
            gate: ReadGate::default(),
        }
    }
}

impl<T: AsyncRead> Paced<T> {
    /// The socket underneath.
    pub(crate) fn get_ref(&self) -> &T {
        self.io.get_ref()
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for Paced<T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if !this.gate.may_read(cx) {
            // The session has not taken what was read yet; it wakes us when it has.
            this.spent = 0;
            return Poll::Pending;
        }
        if this.spent >= READ_TURN {
            // End the dispatcher's read loop here; it is polled again straight away.
            this.spent = 0;
            cx.waker().wake_by_ref();
            return Poll::Pending;
        }
        // Leave `KEEP_FREE` bytes free, so the dispatcher does not grow its buffer while it
        // still holds what was just read. When it offers no more than that (exactly 1 KiB: it
        // tops its buffer up below), take half: then the bytes read are no more than the bytes
        // left free, and bytes' `reserve` makes room by moving them to the front of the same
        // allocation instead of growing it.
        let room = buf.remaining();
        let room = if room > KEEP_FREE {
            room - KEEP_FREE
        } else {
            room / 2
        };
        // Never 0, so the `Take` never reports a false end of stream.
        this.io
            .set_limit((READ_TURN - this.spent).min(room).max(1) as u64);
        let before = buf.filled().len();
        match Pin::new(&mut this.io).poll_read(cx, buf) {
            Poll::Ready(Ok(())) => {
                let n = buf.filled().len() - before;
                this.spent += n;
                this.gate.read(n);
                Poll::Ready(Ok(()))
            }
            Poll::Pending => {
                this.spent = 0;
                Poll::Pending
            }
            other => other,
        }
    }
}

impl<T: AsyncRead + AsyncWrite + Unpin> AsyncWrite for Paced<T> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(self.get_mut().io.get_mut()).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(self.get_mut().io.get_mut()).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.get_ref().is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(self.get_mut().io.get_mut()).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(self.get_mut().io.get_mut()).poll_shutdown(cx)
    }
}

/// Bind `bind` and serve the apps that `factory` makes (one per worker, as `HttpServer` does)
/// over [`Paced`] sockets, HTTP/1 only, calling `on_connect` with the `TcpStream` of every
/// connection. Answers the bound address and the server, not yet spawned.
pub(crate) fn listen<F, I, S, B>(
    bind: impl ToSocketAddrs,
    factory: F,
    on_connect: impl Fn(&dyn Any, &mut Extensions) + Send + Sync + 'static,
    shutdown_timeout: Duration,
) -> Result<(SocketAddr, Server)>
where
    F: Fn() -> I + Send + Clone + 'static,
    I: IntoServiceFactory<S, Request>,
    S: ServiceFactory<Request, Config = AppConfig> + 'static,
    S::Error: Into<actix_web::Error> + 'static,
    S::InitError: std::fmt::Debug,
    S::Response: Into<Response<B>> + 'static,
    B: MessageBody + 'static,
{
    let listener = bind_first(bind)?;
    let addr = listener.local_addr()?;
    let on_connect = std::sync::Arc::new(on_connect);
    let builder = Server::build();
    // As `HttpServer` does: a graceful stop also ends idle keep-alive connections.
    let stopping = builder.graceful_shutdown_signal();
    let server = builder
        .disable_signals()
        .shutdown_timeout(shutdown_timeout.as_secs())
        .listen("actix-ws-manager", listener, move || {
            let on_connect = on_connect.clone();
            let app = factory()
                .into_factory()
                .map_err(|err| err.into().error_response());
            let stopping = stopping.clone();
            // `HttpServer`'s settings where they differ from actix-http's defaults.
            let http = HttpService::<Paced<TcpStream>, _, _, _, _>::build()
                .client_disconnect_timeout(Duration::from_secs(1))
                .graceful_shutdown_signal(move || {
                    let stopping = stopping.clone();
                    async move { stopping.notified().await }
                })
                .local_addr(addr)
                .on_connect_ext(move |io: &Paced<TcpStream>, ext| {
                    ext.insert(io.gate.clone());
                    on_connect(io.get_ref() as &dyn Any, ext)
                })
                .h1(map_config(app, |_| AppConfig::default()));
            fn_service(|io: TcpStream| async move {
                let peer = io.peer_addr().ok();
                Ok::<_, actix_http::error::DispatchError>((Paced::new(io), peer))
            })
            .and_then(http)
        })?
        .run();
    Ok((addr, server))
}

/// Pending connections a listener queues, as `HttpServer` has it (std's `TcpListener::bind`
/// takes 128, which a burst of `wsm load` connections overflows).
const BACKLOG: i32 = 1024;

/// A listener on the first address of `bind` that can be bound (the error of the last one
/// otherwise), made as `HttpServer` makes its own: `SO_REUSEADDR` (not on Windows) and a
/// backlog of [`BACKLOG`]. (`HttpServer` binds every address a name resolves to; this binds
/// one, the one [`Server::local_addr`](super::Server::local_addr) reports.)
fn bind_first(bind: impl ToSocketAddrs) -> Result<std::net::TcpListener> {
    let listen = |addr: SocketAddr| -> io::Result<std::net::TcpListener> {
        use socket2::{Domain, Protocol, Socket, Type};
        let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
        #[cfg(not(windows))]
        socket.set_reuse_address(true)?;
        socket.bind(&addr.into())?;
        socket.listen(BACKLOG)?;
        Ok(socket.into())
    };
    let mut last = None;
    for addr in bind.to_socket_addrs()? {
        match listen(addr) {
            Ok(listener) => return Ok(listener),
            Err(e) => last = Some(e),
        }
    }
    Err(Error::Io(last.unwrap_or_else(|| {
        io::Error::new(io::ErrorKind::InvalidInput, "no address to bind to")
    })))
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures_util::task::noop_waker;

    #[test]
    fn reads_stop_for_a_turn_after_the_budget() {
        let data = vec![7u8; 3 * READ_TURN];
        let mut io = Paced::new(&data[..]);
        let waker = noop_waker();
        let mut cx = Context::from_waker(&waker);
        let mut storage = vec![0u8; 4 * READ_TURN];
        let mut buf = ReadBuf::new(&mut storage);
        let mut turns = vec![0usize];
        while buf.filled().len() < data.len() {
            let before = buf.filled().len();
            match Pin::new(&mut io).poll_read(&mut cx, &mut buf) {
                Poll::Ready(Ok(())) => {
                    let n = buf.filled().len() - before;
                    assert!(n > 0, "a false end of stream");
                    *turns.last_mut().expect("a turn") += n;
                }
                Poll::Pending => turns.push(0),
                Poll::Ready(Err(e)) => panic!("{e}"),
            }
        }
        assert_eq!(turns, vec![READ_TURN; 3]);
        assert!(buf.filled() == &data[..]);
    }

    /// A read leaves 1 KiB of the buffer free, and with a frame reader attached to the gate
    /// the next read waits until the reader has taken what was read.
    #[test]
    fn reads_leave_room_and_wait_for_an_attached_reader() {
        use crate::ws::{FrameCodec, FrameReader};
        use futures_util::StreamExt;
        // A frame header declaring more than is ever sent, then payload.
        let mut data = vec![0x82, 0xFE, 0xFF, 0xFF, 1, 2, 3, 4];
        data.resize(3 * READ_TURN, 7);
        let mut io = Paced::new(&data[..]);
        let waker = noop_waker();
        let mut cx = Context::from_waker(&waker);
        // The session's reader, attached before anything is read; its chunks come from `slot`.
        let slot = std::rc::Rc::new(std::cell::RefCell::new(None));
        let feed = slot.clone();
        let chunks = futures_util::stream::poll_fn(move |_| match feed.borrow_mut().take() {
            Some(chunk) => Poll::Ready(Some(Ok::<_, io::Error>(chunk))),
            None => Poll::Pending,
        });
        let mut reader =
            FrameReader::new(chunks, FrameCodec::server(1 << 20)).gated(Some(io.gate.clone()));
        let mut storage = vec![0u8; 2 * KEEP_FREE];
        let mut buf = ReadBuf::new(&mut storage);
        assert!(Pin::new(&mut io).poll_read(&mut cx, &mut buf).is_ready());
        assert_eq!(buf.filled().len(), KEEP_FREE, "1 KiB left free");
        // The reader has not taken it yet: no more reading.
        let mut more = vec![0u8; READ_TURN];
        let mut more = ReadBuf::new(&mut more);
        assert!(Pin::new(&mut io).poll_read(&mut cx, &mut more).is_pending());
        // It takes it (no whole frame in it: it waits for more, and says it drained).
        *slot.borrow_mut() = Some(bytes::Bytes::copy_from_slice(buf.filled()));
        assert!(reader.poll_next_unpin(&mut cx).is_pending());
        assert!(Pin::new(&mut io).poll_read(&mut cx, &mut more).is_ready());
        assert!(!more.filled().is_empty());
        // Without a reader (dropped), reads go on.
        drop(reader);
        let before = more.filled().len();
        assert!(Pin::new(&mut io).poll_read(&mut cx, &mut more).is_ready());
        assert!(more.filled().len() > before);
    }
}
