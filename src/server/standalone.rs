//! A standalone server: [`serve`], [`serve_with`], [`serve_tls`] and the [`Server`] they
//! answer, with a graceful shutdown that returns once the port can be bound again.

use std::net::{SocketAddr, ToSocketAddrs};
use std::time::Duration;

use actix_web::App;
#[cfg(feature = "rustls")]
use actix_web::HttpServer;

use super::{paced, Rooms};
use crate::config::ServerConfig;
#[cfg(feature = "rustls")]
use crate::error::Error;
use crate::error::Result;

/// A standalone server started by [`serve`]: where it listens, its [`Rooms`], and a graceful
/// [`shutdown`](Self::shutdown).
#[derive(Debug)]
pub struct Server {
    addr: SocketAddr,
    /// `ws` or `wss`.
    scheme: &'static str,
    path: String,
    echo_path: String,
    rooms: Rooms,
    handle: actix_web::dev::ServerHandle,
}

impl Server {
    /// The address the listener is bound to (the real port when asked for port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// `ws://<addr><path>` (`wss://` when serving TLS): the rooms endpoint.
    pub fn url(&self) -> String {
        format!("{}://{}{}", self.scheme, self.addr, self.path)
    }

    /// `ws://<addr><echo_path>` (`wss://` when serving TLS): the echo endpoint.
    pub fn echo_url(&self) -> String {
        format!("{}://{}{}", self.scheme, self.addr, self.echo_path)
    }

    /// The shared handle (hub, counters, HTTP-side publish).
    pub fn rooms(&self) -> &Rooms {
        &self.rooms
    }

    /// Cut every connection and stop at once, without closing sessions: connections are dropped
    /// without a Close frame, as in a crash (the test kit's `TestServer::kill`).
    #[cfg(feature = "testkit")]
    pub(crate) async fn cut_all(self) {
        self.rooms
            .shared
            .closing
            .store(true, std::sync::atomic::Ordering::Release);
        self.handle.stop(false).await;
        listener_released(self.addr).await;
    }

    /// Close every session with 1001 (see [`Rooms::shutdown`]), then stop the HTTP server.
    pub async fn shutdown(self) -> Result<()> {
        let left = self.rooms.shutdown().await?;
        if left > 0 {
            tracing::warn!(sessions = left, "stopping with sessions still open");
        }
        self.handle.stop(true).await;
        listener_released(self.addr).await;
        Ok(())
    }
}

/// How long [`listener_released`] waits at most.
const LISTENER_RELEASE: Duration = Duration::from_secs(2);

/// Wait until the port of `addr` can be bound again, for at most [`LISTENER_RELEASE`].
///
/// actix-server's stop resolves once its workers are done, but its accept thread drops the
/// listening socket on its own, a moment later (longer on a busy machine): a caller that binds
/// the same port right after [`Server::shutdown`] (a restart) could get "address in use". So
/// shutdown returns once a probe bind with `SO_REUSEADDR` (as actix-server binds) succeeds. There
/// is no event for it, hence a short bounded poll.
async fn listener_released(addr: SocketAddr) {
    let deadline = tokio::time::Instant::now() + LISTENER_RELEASE;
    loop {
        let probe = socket2::Socket::new(
            socket2::Domain::for_address(addr),
            socket2::Type::STREAM,
            None,
        )
        .and_then(|s| {
            s.set_reuse_address(true)?;
            s.bind(&addr.into())
        });
        match probe {
            Ok(()) => return,
            Err(e) if e.kind() != std::io::ErrorKind::AddrInUse => return,
            Err(_) if tokio::time::Instant::now() >= deadline => {
                tracing::warn!(%addr, "the listening socket is still open after the server stopped");
                return;
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(5)).await,
        }
    }
}

/// Start a standalone server on `bind` with the rooms endpoint at `path` and the echo endpoint at
/// `echo_path`. Call it inside an actix system (`#[actix_web::main]`, `#[actix_rt::test]`); the
/// server runs on that system until [`Server::shutdown`]. It does not handle signals itself.
pub fn serve(
    bind: impl ToSocketAddrs,
    path: &str,
    echo_path: &str,
    config: ServerConfig,
) -> Result<Server> {
    serve_with(bind, path, echo_path, Rooms::start(config)?)
}

/// [`serve`] with a [`Rooms`] you built (for example with an authentication hook).
pub fn serve_with(
    bind: impl ToSocketAddrs,
    path: &str,
    echo_path: &str,
    rooms: Rooms,
) -> Result<Server> {
    start(bind, path, echo_path, rooms, Tls::None)
}

/// [`serve`] over TLS (`wss://`), with a configuration from
/// [`tls::server_config`](crate::tls::server_config) (a PEM certificate chain and key). To serve
/// TLS from your own `HttpServer`, mount the [`Rooms`] as usual and bind with
/// `HttpServer::bind_rustls_0_23(addr, config)`:
///
/// ```no_run
/// # use actix_web::{App, HttpServer};
/// # use actix_ws_manager::{config::ServerConfig, server::Rooms, tls};
/// # async fn run(cert: &[u8], key: &[u8]) -> Result<(), Box<dyn std::error::Error>> {
/// let rooms = Rooms::start(ServerConfig::default())?;
/// let hook = rooms.on_connect();
/// HttpServer::new(move || App::new().configure(rooms.mount("/ws")))
///     .on_connect(hook)
///     .bind_rustls_0_23(("0.0.0.0", 8443), tls::server_config(cert, key)?)?
///     .run()
///     .await?;
/// # Ok(()) }
/// ```
#[cfg(feature = "rustls")]
pub fn serve_tls(
    bind: impl ToSocketAddrs,
    path: &str,
    echo_path: &str,
    rooms: Rooms,
    tls: rustls::ServerConfig,
) -> Result<Server> {
    start(bind, path, echo_path, rooms, Tls::Rustls(Box::new(tls)))
}

/// How [`start`] binds.
enum Tls {
    None,
    #[cfg(feature = "rustls")]
    Rustls(Box<rustls::ServerConfig>),
}

fn start(
    bind: impl ToSocketAddrs,
    path: &str,
    echo_path: &str,
    rooms: Rooms,
    tls: Tls,
) -> Result<Server> {
    let (p, e) = (path.to_owned(), echo_path.to_owned());
    let app_rooms = rooms.clone();
    let app = move || {
        App::new()
            .configure(app_rooms.mount(&p))
            .configure(app_rooms.mount_echo(&e))
    };
    let grace = rooms
        .config()
        .close_timeout
        .saturating_add(Duration::from_secs(1));
    let (addr, running, scheme) = match tls {
        // Plain sockets are read in paced turns (`paced` says why actix-web's `HttpServer` is
        // not used here).
        Tls::None => {
            let (addr, running) = paced::listen(bind, app, rooms.on_connect(), grace)?;
            (addr, running, "ws")
        }
        #[cfg(feature = "rustls")]
        Tls::Rustls(config) => {
            let server = HttpServer::new(app)
                .on_connect(rooms.on_connect())
                .disable_signals()
                .shutdown_timeout(grace.as_secs())
                .bind_rustls_0_23(bind, *config)?;
            let addr = server
                .addrs()
                .first()
                .copied()
                .ok_or_else(|| Error::Io(std::io::Error::other("bound to no address")))?;
            (addr, server.run(), "wss")
        }
    };
    let handle = running.handle();
    actix_rt::spawn(running);
    tracing::info!(%addr, scheme, path, echo_path, "listening");
    Ok(Server {
        addr,
        scheme,
        path: path.to_owned(),
        echo_path: echo_path.to_owned(),
        rooms,
        handle,
    })
}
