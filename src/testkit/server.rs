//! [`TestServer`]: the rooms and echo endpoints on 127.0.0.1, stopped, killed and restarted on
//! the same port on command.

use std::net::SocketAddr;
use std::time::Duration;

use crate::config::ServerConfig;
use crate::error::{Error, Result};
use crate::server::HubStats;
use crate::server::{self, Rooms, Server};

/// How long [`TestServer::resume`] keeps trying to bind the port again (the old listener may
/// take a moment to be released).
const REBIND_FOR: Duration = Duration::from_secs(5);

/// Builds the [`Rooms`] of each start, so hooks (authentication, handlers) survive restarts.
type RoomsFactory = Box<dyn Fn() -> Result<Rooms>>;

/// A rooms server (`/ws`) and an echo server (`/echo`) on 127.0.0.1, for tests: its URLs and
/// session counts, a graceful [`stop`](Self::stop), an abrupt [`kill`](Self::kill), and
/// [`restart`](Self::restart) on the same port, so clients that reconnect to the URL they were
/// given find it again, as they would after a deploy.
///
/// Each start builds a fresh [`Rooms`] (no member survives a restart, as none survives a real
/// one), from the configuration or the factory it was created with. Must be used inside an actix
/// system (`#[actix_rt::test]`).
pub struct TestServer {
    factory: RoomsFactory,
    addr: SocketAddr,
    server: Option<Server>,
    starts: u32,
}

impl std::fmt::Debug for TestServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TestServer")
            .field("addr", &self.addr)
            .field("running", &self.server.is_some())
            .field("starts", &self.starts)
            .finish()
    }
}

impl TestServer {
    /// Start on a free port of 127.0.0.1 with `config`.
    pub fn start(config: ServerConfig) -> Result<TestServer> {
        Self::start_with(move || Rooms::start(config.clone()))
    }

    /// Start on a free port of 127.0.0.1 with the [`Rooms`] that `factory` builds (called again
    /// at every restart): for servers with hooks such as
    /// [`Rooms::with_auth`] or [`Rooms::on_message`].
    pub fn start_with(factory: impl Fn() -> Result<Rooms> + 'static) -> Result<TestServer> {
        let server = server::serve_with("127.0.0.1:0", "/ws", "/echo", factory()?)?;
        Ok(TestServer {
            factory: Box::new(factory),
            addr: server.local_addr(),
            server: Some(server),
            starts: 1,
        })
    }

    /// The address, the same across restarts.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `ws://127.0.0.1:<port>/ws`, the rooms endpoint.
    pub fn url(&self) -> String {
        format!("ws://{}/ws", self.addr)
    }

    /// `ws://127.0.0.1:<port>/echo`, the echo endpoint.
    pub fn echo_url(&self) -> String {
        format!("ws://{}/echo", self.addr)
    }

    /// The [`Rooms`] of the running instance; `None` while stopped.
    pub fn rooms(&self) -> Option<&Rooms> {
        self.server.as_ref().map(Server::rooms)
    }

    /// Whether the server is running (not stopped or killed).
    pub fn is_running(&self) -> bool {
        self.server.is_some()
    }

    /// How many times the server has started (1 before any restart).
    pub fn starts(&self) -> u32 {
        self.starts
    }

    /// Sessions (rooms and echo) open now; 0 while stopped.
    pub fn sessions(&self) -> usize {
        self.rooms().map_or(0, Rooms::sessions)
    }

    /// The hub's counters; [`Error::ClientClosed`] while stopped.
    pub async fn stats(&self) -> Result<HubStats> {
        match self.rooms() {
            Some(rooms) => rooms.stats().await,
            None => Err(Error::ClientClosed),
        }
    }

    /// Wait until exactly `count` sessions are open, for at most `within`.
    pub async fn wait_sessions(&self, count: usize, within: Duration) -> Result<()> {
        let timeout = |last: usize| Error::Timeout {
            what: format!("{count} sessions"),
            within,
            last: format!("{last} sessions"),
        };
        let Some(rooms) = self.rooms() else {
            return if count == 0 { Ok(()) } else { Err(timeout(0)) };
        };
        let reached = if rooms.sessions() >= count {
            rooms.wait_sessions(count, within).await
        } else {
            rooms.wait_sessions_at_least(count, within).await
        };
        if reached && rooms.sessions() == count {
            Ok(())
        } else {
            Err(timeout(rooms.sessions()))
        }
    }

    /// Stop gracefully, as a deploy does: every session gets a Close 1001 and the listener
    /// closes. Does nothing when already stopped.
    pub async fn stop(&mut self) -> Result<()> {
        match self.server.take() {
            Some(server) => server.shutdown().await,
            None => Ok(()),
        }
    }

    /// Stop abruptly, as a crash does: connections are dropped without a Close frame (clients
    /// see 1006) and the listener closes. Does nothing when already stopped.
    pub async fn kill(&mut self) {
        if let Some(server) = self.server.take() {
            server.cut_all().await;
        }
    }

    /// Start again on the same port (after [`stop`](Self::stop) or [`kill`](Self::kill)); does
    /// nothing when running. Retries the bind for up to 5 s while the old listener is released.
    pub async fn resume(&mut self) -> Result<()> {
        if self.server.is_some() {
            return Ok(());
        }
        let deadline = tokio::time::Instant::now() + REBIND_FOR;
        let mut pause = Duration::from_millis(5);
        loop {
            match server::serve_with(self.addr, "/ws", "/echo", (self.factory)()?) {
                Ok(server) => {
                    self.server = Some(server);
                    self.starts += 1;
                    return Ok(());
                }
                Err(Error::Io(e))
                    if e.kind() == std::io::ErrorKind::AddrInUse
                        && tokio::time::Instant::now() < deadline =>
                {
                    // Nothing announces that the kernel released the port: retry, bounded.
                    tokio::time::sleep(pause).await;
                    pause = (pause * 2).min(Duration::from_millis(100));
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// [`stop`](Self::stop) then [`resume`](Self::resume): the same port, a fresh [`Rooms`].
    pub async fn restart(&mut self) -> Result<()> {
        self.stop().await?;
        self.resume().await
    }
}
