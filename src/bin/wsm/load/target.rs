//! The server under load: checking and resolving the target URL, starting the embedded server
//! (a `wsm serve` child, or in this process), the open-file limit the run needs, and the one
//! preflight connection that turns bad targets into one clear error before any load starts.

use std::net::{SocketAddr, TcpStream, ToSocketAddrs};

use actix_ws_manager::client::{self, ConnectionState, Event};
use actix_ws_manager::config::{self, ClientConfig, ReconnectPolicy, ServerConfig};
use actix_ws_manager::{protocol, server, tls, Error, Result};

use super::args::{bad, LoadArgs, Protocol, MESSAGE_OVERHEAD};
use super::drivers::EchoData;
use crate::child::ChildServer;

/// A certificate chain and key, in PEM, for the embedded server's TLS (`--tls`).
pub(super) type Pem = (String, String);

/// The addresses `url`'s host resolves to (any host: a staging server is as good a target as
/// this machine). A name that does not resolve is one error naming the host, before anything
/// starts, rather than a connect phase full of failures.
pub(super) fn resolve(url: &str) -> Result<Vec<SocketAddr>> {
    client::validate_url(url)?;
    let uri: awc::http::Uri = url.parse().map_err(|_| Error::InvalidUrl {
        url: url.to_owned(),
        reason: "does not parse".to_owned(),
    })?;
    let host = uri.host().unwrap_or_default().trim_matches(['[', ']']);
    let port = uri
        .port_u16()
        .unwrap_or(if uri.scheme_str() == Some("wss") {
            443
        } else {
            80
        });
    let unresolved = |reason: String| Error::ConnectFailed {
        url: url.to_owned(),
        reason: format!("cannot resolve host {host:?}: {reason}"),
    };
    let addrs: Vec<SocketAddr> = (host, port)
        .to_socket_addrs()
        .map_err(|e| unresolved(e.to_string()))?
        .collect();
    if addrs.is_empty() {
        return Err(unresolved("it has no address".to_owned()));
    }
    Ok(addrs)
}

/// Whether `addrs` are all on this machine. Loopback is the test: a target on another address
/// of this host is rare, and then the note it gets ("the figures include the network") is only
/// too cautious.
pub(super) fn on_this_machine(addrs: &[SocketAddr]) -> bool {
    addrs.iter().all(|a| a.ip().to_canonical().is_loopback())
}

/// Resolve `urls` (failing on the first that does not resolve), and say in one stderr line
/// which of them are not on this machine: their figures include the network.
pub(super) fn check_targets(urls: &[&str]) -> Result<()> {
    let mut remote = Vec::new();
    for url in urls {
        if !on_this_machine(&resolve(url)?) {
            remote.push(*url);
        }
    }
    match remote.as_slice() {
        [] => {}
        [one] => {
            eprintln!("wsm: note: {one} is not on this machine; the figures include the network")
        }
        many => eprintln!(
            "wsm: note: {} are not on this machine; the figures include the network",
            many.join(" and ")
        ),
    }
    Ok(())
}

/// Where the server under load runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum ServerMode {
    /// `--url`: somebody else's server.
    External,
    /// The default: `wsm serve` of this program, as a child process.
    Child,
    /// `--in-process`: in this process, sharing its limits.
    InProcess,
}

impl ServerMode {
    /// Where `args` put the server.
    pub(super) fn of(args: &LoadArgs) -> Self {
        match (&args.url, args.in_process) {
            (Some(_), _) => ServerMode::External,
            (None, false) => ServerMode::Child,
            (None, true) => ServerMode::InProcess,
        }
    }

    /// The mode's name in the report.
    pub(super) fn name(self) -> &'static str {
        match self {
            ServerMode::External => "external",
            ServerMode::Child => "child process",
            ServerMode::InProcess => "in process",
        }
    }
}

/// Descriptors one connection takes in this process: the client's socket, and with the server
/// in this process (`--in-process`) its end of the connection and the duplicate the server
/// keeps to cut stuck sockets (`keep_socket_handle`). A child server has its own limit.
pub(super) fn fds_per_connection(mode: ServerMode) -> u64 {
    match mode {
        ServerMode::InProcess => 3,
        ServerMode::External | ServerMode::Child => 1,
    }
}

/// Raise the open-file limit to its hard limit and say on stderr if it still caps the run.
/// Answers the limit in force.
pub(super) fn raise_fd_limit(connections: usize, mode: ServerMode) -> Option<u64> {
    let per = fds_per_connection(mode);
    let needed = connections as u64 * per + 128;
    match rlimit::increase_nofile_limit(u64::MAX) {
        Ok(limit) => {
            if limit < needed {
                eprintln!(
                    "wsm load: the open-file limit is {limit}; {connections} connections need \
                     about {needed} ({per} each{}), so about {} can come up (raise the hard limit \
                     with `ulimit -Hn`)",
                    match mode {
                        ServerMode::InProcess => " with the server in this process",
                        ServerMode::Child => " here; the server child has its own limit",
                        ServerMode::External => "",
                    },
                    limit.saturating_sub(128) / per
                );
            }
            Some(limit)
        }
        Err(e) => {
            eprintln!("wsm load: could not raise the open-file limit: {e}");
            None
        }
    }
}

/// Whether `error` is the open-file limit (EMFILE) stopping this process.
pub(super) fn is_emfile(error: &str) -> bool {
    error.contains("Too many open files") || error.contains("os error 24")
}

/// `error`, with "EMFILE" named when the open-file limit is what stopped a connection: either
/// the error says so, or (with the embedded server, whose `accept` fails with EMFILE where the
/// client only sees a connect that never completes) the limit was known to be too small.
pub(super) fn name_emfile(error: &str, args: &LoadArgs) -> String {
    let limit = args
        .fd_limit
        .map_or_else(String::new, |l| format!(" of {l}"));
    if is_emfile(error) {
        return format!("{error} (EMFILE: the open-file limit{limit} stopped connections)");
    }
    let mode = ServerMode::of(args);
    let needed = args.connections as u64 * fds_per_connection(mode) + 128;
    match args.fd_limit {
        Some(l) if l < needed && mode == ServerMode::InProcess => format!(
            "{error} (likely EMFILE: the open-file limit{limit} also stops the embedded server \
             from accepting connections)"
        ),
        Some(l) if l < needed => {
            format!("{error} (the open-file limit{limit} is below what the run needs)")
        }
        _ => error.to_owned(),
    }
}

/// The client configuration every connection starts from: the defaults, trusting `args.roots`,
/// with permessage-deflate offered only under `--deflate` (so that figures stay comparable
/// with runs of other tools and earlier runs).
pub(super) fn client_config(args: &LoadArgs) -> ClientConfig {
    let deflate = if args.deflate {
        config::DeflateConfig::default()
    } else {
        config::DeflateConfig::off()
    };
    args.roots
        .iter()
        .fold(ClientConfig::default().deflate(deflate), |c, pem| {
            c.tls_root_pem(pem.clone())
        })
}

/// The embedded server's message size limit: the server's default, or more when `--size`
/// needs it.
pub(super) fn max_message_size(args: &LoadArgs) -> usize {
    config::DEFAULT_SERVER_MAX_MESSAGE_SIZE.max(args.size + MESSAGE_OVERHEAD)
}

/// Start the embedded server as a child process (`wsm serve` of this program), serving TLS
/// with `pem` when given.
pub(super) fn spawn_child(args: &LoadArgs, pem: Option<&Pem>) -> Result<ChildServer> {
    ChildServer::spawn(
        &child_flags(args),
        pem.map(|(c, k)| (c.as_str(), k.as_str())),
    )
}

/// The flags of the embedded `wsm serve` child (besides `--bind` and TLS).
pub(super) fn child_flags(args: &LoadArgs) -> Vec<String> {
    vec![
        "--max-sessions".into(),
        (args.connections.max(1) + 64).to_string(),
        "--max-message-size".into(),
        max_message_size(args).to_string(),
        "--session-queue".into(),
        "4096".into(),
        // One descriptor per connection, so 10,000 fit under a limit of 20,000.
        "--no-socket-handle".into(),
    ]
}

/// Start the embedded server in this process (`--in-process`), serving TLS with `pem` when
/// given. Runs inside the actix system that drives the load.
pub(super) fn start_in_process(args: &LoadArgs, pem: Option<&Pem>) -> Result<server::Server> {
    let config = ServerConfig::default()
        .max_sessions(args.connections.max(1) + 64)
        .max_message_size(max_message_size(args))
        .session_queue(4096);
    let rooms = server::Rooms::start(config)?;
    match pem {
        Some((cert, key)) => server::serve_tls(
            "127.0.0.1:0",
            "/ws",
            "/echo",
            rooms,
            tls::server_config(cert.as_bytes(), key.as_bytes())?,
        ),
        None => server::serve_with("127.0.0.1:0", "/ws", "/echo", rooms),
    }
}

/// The URL the connections target: `--url`, or the embedded server's rooms or echo endpoint.
pub(super) fn target_url(
    args: &LoadArgs,
    embedded: Option<&server::Server>,
    child: Option<&ChildServer>,
) -> Result<String> {
    Ok(match (&args.url, embedded, child) {
        (Some(u), _, _) => u.clone(),
        (None, Some(s), _) if args.protocol == Protocol::Echo => s.echo_url(),
        (None, Some(s), _) => s.url(),
        (None, None, Some(c)) if args.protocol == Protocol::Echo => c.echo_url.clone(),
        (None, None, Some(c)) => c.url.clone(),
        (None, None, None) => return Err(bad("no target")),
    })
}

/// One connection, no retries: TCP, the upgrade, then one echo round trip. Turns the usual
/// bad inputs (nothing listening, not a WebSocket endpoint, a server that closes at once) into
/// one clear error before any load is started.
pub(super) async fn preflight(url: &str, config: ClientConfig, pad: &str) -> Result<()> {
    let connect_timeout = config.connect_timeout;
    // Name resolution blocks: off the actix thread, with the connect.
    let owned = url.to_owned();
    let (addr, tcp) = actix_rt::task::spawn_blocking(move || {
        let addr = *resolve(&owned)?.first().ok_or_else(|| bad("no address"))?;
        Ok::<_, Error>((addr, TcpStream::connect_timeout(&addr, connect_timeout)))
    })
    .await
    .map_err(|e| bad(e.to_string()))??;
    if let Err(e) = tcp {
        return Err(Error::ConnectFailed {
            url: url.to_owned(),
            reason: format!("nothing accepts TCP connections on {addr}: {e}"),
        });
    }
    let config = config.name("preflight").reconnect(ReconnectPolicy::never());
    let c = client::connect(url, config)?;
    let mut events = c.subscribe_events(64);
    let result = async {
        if let Err(e) = c.wait_connected(connect_timeout).await {
            // The state may have gone Connected -> Failed before the wait looked: the events
            // say whether the upgrade itself succeeded.
            let mut upgraded = false;
            while let Ok(ev) = events.try_recv() {
                upgraded |= matches!(ev, Event::State(ConnectionState::Connected));
            }
            return Err(match c.state() {
                ConnectionState::Failed { reason } if upgraded => Error::ConnectFailed {
                    url: url.to_owned(),
                    reason: format!("connected, but the server ended it at once: {reason}"),
                },
                ConnectionState::Failed { reason } => Error::ConnectFailed {
                    url: url.to_owned(),
                    reason,
                },
                _ => e,
            });
        }
        // A message of the size the run will send, so that a server's size limit shows here.
        let probe = protocol::echo(&EchoData { seq: 0, pad })?;
        if let Err(e) = c.request_envelope(probe, connect_timeout).await {
            // The close code and reason, when the server sent them, say the most.
            let mut closed = None;
            while let Ok(ev) = events.try_recv() {
                if let Event::State(ConnectionState::Disconnected { code, reason }) = ev {
                    closed = Some(format!("the server closed it with {code} {reason:?}"));
                }
            }
            let why = match (closed, c.state()) {
                (Some(closed), _) => closed,
                (None, ConnectionState::Failed { reason }) => reason,
                (None, _) => e.to_string(),
            };
            return Err(Error::ConnectFailed {
                url: url.to_owned(),
                reason: format!(
                    "connected, but a {}-byte echo round trip failed: {why}",
                    pad.len()
                ),
            });
        }
        Ok(())
    }
    .await;
    c.close().await;
    result
}
