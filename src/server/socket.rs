//! Options of the accepted TCP socket and the [`SocketCutter`]: what
//! [`Rooms::on_connect`](super::Rooms::on_connect) installs on every connection, so that a
//! session can *cut* (drop without a handshake) a socket whose peer stopped reading.

use std::any::Any;
use std::net::Shutdown;
use std::sync::Arc;
use std::time::Duration;

use actix_web::dev::Extensions;

use crate::config::ServerConfig;

/// A handle that can shut the TCP socket under a connection down, from outside actix-http's
/// dispatcher (which cannot be woken while its writes are stalled). Holds a duplicate of the
/// socket's descriptor, so it never acts on a reused descriptor number; dropped with the session.
#[derive(Debug, Clone)]
pub struct SocketCutter(Arc<socket2::Socket>);

impl SocketCutter {
    /// Reset the connection: linger 0 (so closing discards unsent data) and shut down both
    /// directions, which wakes the dispatcher with an error. Errors (a socket already closed)
    /// are ignored: the goal is reached either way.
    pub(crate) fn cut(&self) {
        let _ = self.0.set_linger(Some(Duration::ZERO));
        let _ = self.0.shutdown(Shutdown::Both);
    }

    /// End a connection whose closing handshake is complete: shut down our sending direction,
    /// so the client reads the end of the stream after our close frame (RFC 6455 7.1.1: the
    /// server closes the TCP connection first). actix-http would otherwise keep the connection
    /// until its own timers end it (about a second), and clients that wait for the server to
    /// close, such as Autobahn|Testsuite, give up and drop it themselves. Bytes already handed
    /// to the kernel go out before the FIN; errors (a socket already gone) are ignored.
    pub(crate) fn finish(&self) {
        let _ = self.0.shutdown(Shutdown::Write);
    }
}

/// The `on_connect` hook for a [`ServerConfig`]; [`Rooms::on_connect`](super::Rooms::on_connect)
/// is the public way to get it.
pub(crate) fn on_connect_for(
    config: &ServerConfig,
) -> impl Fn(&dyn Any, &mut Extensions) + Send + Sync + 'static {
    let (send_buffer, user_timeout, keep) = (
        config.tcp_send_buffer,
        config.tcp_user_timeout,
        config.keep_socket_handle,
    );
    move |conn, ext| configure_socket(conn, ext, send_buffer, user_timeout, keep)
}

fn configure_socket(
    conn: &dyn Any,
    ext: &mut Extensions,
    send_buffer: Option<usize>,
    user_timeout: Option<Duration>,
    keep_handle: bool,
) {
    if let Some(tcp) = conn.downcast_ref::<actix_web::rt::net::TcpStream>() {
        let sock = socket2::SockRef::from(tcp);
        if let Some(bytes) = send_buffer {
            if let Err(e) = sock.set_send_buffer_size(bytes) {
                tracing::debug!("cannot set SO_SNDBUF: {e}");
            }
        }
        #[cfg(any(target_os = "linux", target_os = "android"))]
        if let Some(timeout) = user_timeout {
            if let Err(e) = sock.set_tcp_user_timeout(Some(timeout)) {
                tracing::debug!("cannot set TCP_USER_TIMEOUT: {e}");
            }
        }
        #[cfg(not(any(target_os = "linux", target_os = "android")))]
        let _ = user_timeout;
        if !keep_handle {
            return;
        }
        match sock.try_clone() {
            Ok(sock) => {
                ext.insert(SocketCutter(Arc::new(sock)));
            }
            Err(e) => tracing::debug!("cannot keep a handle on the socket: {e}"),
        }
    }
}
