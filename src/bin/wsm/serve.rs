//! `wsm serve`: run the rooms server and the echo endpoint until SIGINT or SIGTERM, then close
//! every session with 1001 and exit 0.

use std::io::Write;
use std::time::Duration;

use std::net::ToSocketAddrs;

use actix_ws_manager::config::{self, JwtConfig, RateLimit, ServerConfig};
use actix_ws_manager::{server, tls, Error};

use crate::{flags, tlsfiles};
use clap::Args;

/// Flags of `wsm serve`.
#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Address to listen on (port 0 picks a free port; the URL printed first says which).
    #[arg(long, default_value = "127.0.0.1:8080")]
    bind: String,
    /// Path of the rooms endpoint.
    #[arg(long, default_value = "/ws")]
    path: String,
    /// Path of the plain echo endpoint.
    #[arg(long, default_value = "/echo")]
    echo_path: String,
    /// Largest message accepted, in bytes, 1 to 1 GiB (bigger: close 1009).
    #[arg(long, default_value_t = config::DEFAULT_SERVER_MAX_MESSAGE_SIZE,
          value_parser = flags::count(1..=flags::MAX_MESSAGE_SIZE))]
    max_message_size: usize,
    /// Time between protocol pings, such as `10s` or `500ms` (above zero, at most 365 days).
    #[arg(long, default_value = "10s", value_parser = flags::duration)]
    heartbeat_interval: Duration,
    /// A client silent for this long is disconnected, such as `30s` (above zero, at most 365
    /// days).
    #[arg(long, default_value = "30s", value_parser = flags::duration)]
    heartbeat_timeout: Duration,
    /// Most concurrent sessions, 1 to 10000000; more upgrades get HTTP 503.
    #[arg(long, default_value_t = config::DEFAULT_MAX_SESSIONS,
          value_parser = flags::count(1..=flags::MAX_SESSIONS))]
    max_sessions: usize,
    /// Bound of each session's outbound queue, in messages, 1 to 1048576 (full: the client is
    /// disconnected with 1013).
    #[arg(long, default_value_t = config::DEFAULT_SESSION_QUEUE,
          value_parser = flags::count(1..=config::MAX_QUEUE as u64))]
    session_queue: usize,
    /// Bound of each session's outbound queue, in payload bytes; whichever of this and
    /// --session-queue comes first (full: the client is disconnected with 1013).
    #[arg(long, default_value_t = config::DEFAULT_SESSION_QUEUE_BYTES)]
    session_queue_bytes: usize,
    /// Allowed `Origin` (repeatable); when given, other origins get HTTP 403.
    #[arg(long = "allowed-origin")]
    allowed_origins: Vec<String>,
    /// Do not keep a duplicate descriptor per connection (saves one file descriptor per
    /// connection; a stuck client's socket is then ended by the kernel, see
    /// --tcp-user-timeout).
    #[arg(long)]
    no_socket_handle: bool,
    /// TCP_USER_TIMEOUT for accepted connections, such as `30s` (Linux; above zero, at most
    /// 365 days): the kernel aborts a connection whose data stays unacknowledged this long.
    #[arg(long, value_parser = flags::duration)]
    tcp_user_timeout: Option<Duration>,
    /// Per-session rate limit, in messages per second, 1 to 1000000 (token bucket; off by
    /// default). Past it the client gets the error `rate_limited`; past twice the burst, close
    /// 1008.
    #[arg(long, value_name = "PER_SECOND",
          value_parser = clap::value_parser!(u32).range(1..=flags::MAX_PER_SECOND as i64))]
    rate_limit: Option<u32>,
    /// Messages a session may send at once under --rate-limit, 1 to 1000000 [default: the
    /// --rate-limit value].
    #[arg(long, value_name = "MESSAGES", requires = "rate_limit",
          value_parser = clap::value_parser!(u32).range(1..=flags::MAX_PER_SECOND as i64))]
    rate_burst: Option<u32>,
    /// Most concurrent sessions from one IP address, 1 to 10000000; more upgrades get HTTP 429
    /// (off by default).
    #[arg(long, value_name = "SESSIONS",
          value_parser = flags::count(1..=flags::MAX_SESSIONS))]
    max_per_ip: Option<usize>,
    /// Bound of the hub's command queue (joins, leaves, publishes of every session), 1 to
    /// 1048576.
    #[arg(long, default_value_t = config::DEFAULT_HUB_QUEUE,
          value_parser = flags::count(1..=config::MAX_QUEUE as u64))]
    hub_queue: usize,
    /// Publications kept per room for recovery after a reconnect and `history` requests, 1 to
    /// 1000000.
    #[arg(long, value_name = "N", default_value_t = config::DEFAULT_HISTORY_SIZE,
          value_parser = flags::count(1..=1_000_000), conflicts_with = "no_history")]
    history_size: usize,
    /// How long a room's history is kept after its last publication, such as `120s` (above
    /// zero, at most 365 days).
    #[arg(long, value_name = "DURATION", default_value = "120s", value_parser = flags::duration,
          conflicts_with = "no_history")]
    history_ttl: Duration,
    /// Keep no room history: room messages carry no offset, and a join with `since` cannot
    /// recover.
    #[arg(long)]
    no_history: bool,
    /// Accept no permessage-deflate offer (by default a client's offer is accepted, with no
    /// context takeover either way, and messages of 256 bytes and more go compressed).
    #[arg(long)]
    no_deflate: bool,
    /// Most members a `presence` answer lists (its `count` stays exact; beyond, the list says
    /// `"truncated":true`), 1 to 100000.
    #[arg(long, value_name = "N", default_value_t = config::DEFAULT_PRESENCE_LIST_LIMIT,
          value_parser = flags::count(1..=config::MAX_PRESENCE_LIST_LIMIT as u64))]
    presence_list_limit: usize,
    /// Serve TLS (`wss://`) with this PEM certificate chain (needs --tls-key).
    #[arg(long, value_name = "FILE", requires = "tls_key")]
    tls_cert: Option<std::path::PathBuf>,
    /// The PEM private key of --tls-cert.
    #[arg(long, value_name = "FILE", requires = "tls_cert")]
    tls_key: Option<std::path::PathBuf>,

    /// Require a JWT signed with HS256 and the secret in this file (trailing whitespace and
    /// newlines trimmed) on every connection: in `Authorization: Bearer T` or the `token` query
    /// parameter; HTTP 401 otherwise.
    #[arg(long, value_name = "FILE", group = "jwt")]
    jwt_secret_file: Option<std::path::PathBuf>,
    /// Require a JWT signed with the private half of this PEM public key: RS256 for an RSA key,
    /// ES256 for an EC (P-256) key.
    #[arg(long, value_name = "FILE", group = "jwt")]
    jwt_public_key_file: Option<std::path::PathBuf>,
    /// Require a JWT signed with a key of this JWKS document (`{"keys":[...]}`), chosen by the
    /// token's `kid`.
    #[arg(long, value_name = "FILE", group = "jwt")]
    jwt_jwks_file: Option<std::path::PathBuf>,
    /// Refuse tokens whose `aud` does not name this audience.
    #[arg(long, value_name = "AUD", requires = "jwt")]
    jwt_audience: Option<String>,
    /// Refuse tokens whose `iss` is not this issuer.
    #[arg(long, value_name = "ISS", requires = "jwt")]
    jwt_issuer: Option<String>,
    /// How far past `exp` (and before `nbf`) a token is still taken, for clocks that differ,
    /// such as `5s` [default: 0s].
    #[arg(long, value_name = "DURATION", value_parser = flags::duration, requires = "jwt")]
    jwt_leeway: Option<Duration>,

    /// Share rooms with other `wsm serve` nodes through this Redis, such as
    /// `redis://127.0.0.1:6379` (several nodes behind one load balancer). Room history then
    /// lives in this Redis, so a client recovers on any node.
    #[arg(long, value_name = "URL")]
    redis: Option<String>,

    /// This node's id among the nodes sharing --redis [default: `n-` and 8 random hex digits].
    #[arg(long, value_name = "ID", requires = "redis")]
    node_id: Option<String>,

    /// Prefix of the Redis channels of rooms; nodes with another prefix do not see these rooms.
    #[arg(long, value_name = "PREFIX", default_value = server::backplane::DEFAULT_PREFIX,
          requires = "redis")]
    redis_prefix: String,

    /// How long Redis may owe an answer with nothing moving on the connection before it
    /// counts as unreachable (publishes then get `backplane_unavailable`), such as `2s` (at
    /// least 10ms, at most 365 days).
    #[arg(long, default_value = "2s", value_parser = redis_timeout, requires = "redis")]
    redis_timeout: std::time::Duration,

    /// Messages from other nodes buffered ahead of this node's hub, 1 to 1048576; beyond,
    /// they are dropped and counted (wsm_server_backplane_dropped_total).
    #[arg(long, value_name = "N", default_value_t = server::backplane::DEFAULT_BUFFER,
          value_parser = flags::count(1..=server::backplane::MAX_QUEUE as u64),
          requires = "redis")]
    redis_buffer: usize,

    /// Bytes of messages from other nodes buffered ahead of this node's hub, 65536 to
    /// 1073741824 (also the largest message taken from Redis).
    #[arg(long, value_name = "BYTES", default_value_t = server::backplane::DEFAULT_BUFFER_BYTES,
          value_parser = queue_bytes(), requires = "redis")]
    redis_buffer_bytes: usize,

    /// Publishes waiting for Redis, 1 to 1048576; beyond, a publish gets
    /// `backplane_unavailable` at once.
    #[arg(long, value_name = "N", default_value_t = server::backplane::DEFAULT_PUBLISH_QUEUE,
          value_parser = flags::count(1..=server::backplane::MAX_QUEUE as u64),
          requires = "redis")]
    redis_publish_queue: usize,

    /// Bytes of publishes waiting for Redis, 65536 to 1073741824.
    #[arg(long, value_name = "BYTES",
          default_value_t = server::backplane::DEFAULT_PUBLISH_QUEUE_BYTES,
          value_parser = queue_bytes(), requires = "redis")]
    redis_publish_queue_bytes: usize,

    /// Serve Prometheus metrics at http://ADDR/metrics on a second listener (off by default;
    /// port 0 picks a free port: the URL is the third line of stdout).
    #[arg(long, value_name = "ADDR")]
    metrics_bind: Option<String>,
}

impl ServeArgs {
    fn config(&self) -> ServerConfig {
        let mut config = ServerConfig::default()
            .max_message_size(self.max_message_size)
            .heartbeat(self.heartbeat_interval, self.heartbeat_timeout)
            .max_sessions(self.max_sessions)
            .session_queue(self.session_queue)
            .session_queue_bytes(self.session_queue_bytes)
            .keep_socket_handle(!self.no_socket_handle)
            .tcp_user_timeout(self.tcp_user_timeout)
            .hub_queue(self.hub_queue)
            .presence_list_limit(self.presence_list_limit)
            .max_connections_per_ip(self.max_per_ip)
            .rate_limit(
                self.rate_limit
                    .map(|rate| RateLimit::new(rate, self.rate_burst.unwrap_or(rate))),
            );
        for origin in &self.allowed_origins {
            config = config.allow_origin(origin.clone());
        }
        if self.no_deflate {
            config = config.deflate(config::DeflateConfig::off());
        }
        if self.no_history {
            config.no_history()
        } else {
            let history = config::HistoryConfig::default()
                .size(self.history_size)
                .ttl(self.history_ttl);
            config.history(history)
        }
    }
}

/// Run until a signal, then shut down gracefully.
pub fn run(args: ServeArgs) -> actix_ws_manager::Result<()> {
    let config = args.config();
    config.validate()?;
    check_addresses(&args)?;
    let tls = match (&args.tls_cert, &args.tls_key) {
        (Some(cert), Some(key)) => Some(tls::server_config(
            &tlsfiles::read_pem("--tls-cert", cert)?,
            &tlsfiles::read_pem("--tls-key", key)?,
        )?),
        _ => None,
    };
    // Each session needs one descriptor (two with the socket handle): use the hard limit.
    match rlimit::increase_nofile_limit(u64::MAX) {
        Ok(limit) => tracing::info!(open_files = limit, "open-file limit raised"),
        Err(e) => tracing::warn!("cannot raise the open-file limit: {e}"),
    }
    let backplane = redis_backplane(&args)?;
    let jwt = jwt_config(&args)?;
    actix_rt::System::new().block_on(async move {
        let rooms = match backplane {
            Some(backplane) => {
                tracing::info!(
                    node = %backplane.config().node_id,
                    redis = %backplane.config().url,
                    "sharing rooms through Redis"
                );
                server::Rooms::start_with_backplane(config, backplane)?
            }
            None => server::Rooms::start(config)?,
        };
        let rooms = match jwt {
            Some(jwt) => {
                tracing::info!(?jwt, "connections need a JWT");
                rooms.with_jwt(jwt)
            }
            None => rooms,
        };
        // Bound before the rooms listener, so that a busy metrics address stops nothing that
        // has started.
        let metrics = match &args.metrics_bind {
            Some(addr) => Some(bind_metrics(addr, &rooms)?),
            None => None,
        };
        let bind = args.bind.as_str();
        let started = match tls {
            Some(tls) => server::serve_tls(bind, &args.path, &args.echo_path, rooms, tls),
            None => server::serve_with(bind, &args.path, &args.echo_path, rooms),
        };
        let server = started.map_err(|e| match e {
            Error::Io(e) => Error::Io(std::io::Error::new(
                e.kind(),
                format!("cannot listen on {bind}: {e}"),
            )),
            other => other,
        })?;
        print_urls(&server, metrics.as_ref().map(|(_, url)| url.as_str()))?;
        wait_for_signal().await?;
        tracing::info!("signal received; closing sessions with 1001");
        let closed = server.shutdown().await;
        if let Some((metrics, _)) = metrics {
            metrics.stop(true).await;
        }
        closed
    })
}

/// The JWT checks of `--jwt-*`, if a key file was given; a one-line error naming the flag and
/// the file when one cannot be read or holds no usable key.
fn jwt_config(args: &ServeArgs) -> actix_ws_manager::Result<Option<JwtConfig>> {
    let read = |flag: &str, path: &std::path::Path| {
        std::fs::read(path)
            .map_err(|e| Error::Config(format!("cannot read {flag} {}: {e}", path.display())))
    };
    let named = |flag: &str, path: &std::path::Path, e: Error| {
        let why = match e {
            Error::Config(why) => why,
            other => other.to_string(),
        };
        Error::Config(format!("{flag} {}: {why}", path.display()))
    };
    let config = if let Some(path) = &args.jwt_secret_file {
        let secret = read("--jwt-secret-file", path)?;
        let secret = secret.trim_ascii_end();
        JwtConfig::hs256(secret).map_err(|e| named("--jwt-secret-file", path, e))?
    } else if let Some(path) = &args.jwt_public_key_file {
        let pem = read("--jwt-public-key-file", path)?;
        JwtConfig::public_key_pem(pem).map_err(|e| named("--jwt-public-key-file", path, e))?
    } else if let Some(path) = &args.jwt_jwks_file {
        let json = read("--jwt-jwks-file", path)?;
        let json = String::from_utf8_lossy(&json);
        JwtConfig::jwks(&json).map_err(|e| named("--jwt-jwks-file", path, e))?
    } else {
        return Ok(None);
    };
    let config = match &args.jwt_audience {
        Some(aud) => config.audience(aud),
        None => config,
    };
    let config = match &args.jwt_issuer {
        Some(iss) => config.issuer(iss),
        None => config,
    };
    Ok(Some(match args.jwt_leeway {
        Some(leeway) => config.leeway(leeway),
        None => config,
    }))
}

/// Name a bind address that does not parse (`--bind`, `--metrics-bind`) before anything
/// starts.
fn check_addresses(args: &ServeArgs) -> actix_ws_manager::Result<()> {
    if let Err(e) = args.bind.to_socket_addrs() {
        return Err(Error::Config(format!(
            "cannot listen on {:?}: {e} (expected HOST:PORT, such as 127.0.0.1:8080)",
            args.bind
        )));
    }
    if let Some(Err(e)) = args.metrics_bind.as_deref().map(str::to_socket_addrs) {
        return Err(Error::Config(format!(
            "--metrics-bind: cannot listen on {:?}: {e} (expected HOST:PORT, such as \
             127.0.0.1:9090)",
            args.metrics_bind.as_deref().unwrap_or_default()
        )));
    }
    Ok(())
}

/// The Redis backplane of `--redis`, with its `--redis-*` and `--node-id` settings; `None`
/// without `--redis` (rooms stay on this node).
fn redis_backplane(
    args: &ServeArgs,
) -> actix_ws_manager::Result<Option<server::backplane::RedisBackplane>> {
    let Some(url) = &args.redis else {
        return Ok(None);
    };
    let mut redis = server::backplane::RedisConfig::new(url.clone())
        .channel_prefix(args.redis_prefix.clone())
        .timeout(args.redis_timeout)
        .buffer(args.redis_buffer)
        .buffer_bytes(args.redis_buffer_bytes)
        .publish_queue(args.redis_publish_queue)
        .publish_queue_bytes(args.redis_publish_queue_bytes);
    if let Some(id) = &args.node_id {
        redis = redis.node_id(id.clone());
    }
    Ok(Some(server::backplane::RedisBackplane::new(redis)?))
}

/// What scripts read on stdout, one line each: the rooms URL, the echo URL, and the metrics URL
/// with `--metrics-bind`.
fn print_urls(server: &server::Server, metrics: Option<&str>) -> std::io::Result<()> {
    let mut out = std::io::stdout().lock();
    writeln!(out, "{}", server.url())?;
    writeln!(out, "{}", server.echo_url())?;
    if let Some(url) = metrics {
        writeln!(out, "{url}")?;
    }
    out.flush()
}

/// Start the metrics listener on `addr`: `GET /metrics` answers the server's figures as
/// Prometheus text. Answers its handle and its URL (the real port when asked for port 0).
fn bind_metrics(
    addr: &str,
    rooms: &server::Rooms,
) -> actix_ws_manager::Result<(actix_web::dev::ServerHandle, String)> {
    let cannot = |e: std::io::Error| {
        Error::Io(std::io::Error::new(
            e.kind(),
            format!("--metrics-bind: cannot listen on {addr}: {e}"),
        ))
    };
    let rooms = rooms.clone();
    let http = actix_web::HttpServer::new(move || {
        actix_web::App::new().configure(rooms.mount_metrics("/metrics"))
    })
    .workers(1)
    .disable_signals()
    .shutdown_timeout(1)
    .bind(addr)
    .map_err(cannot)?;
    let bound = http
        .addrs()
        .first()
        .copied()
        .ok_or_else(|| cannot(std::io::Error::other("bound to no address")))?;
    let running = http.run();
    let handle = running.handle();
    actix_rt::spawn(running);
    tracing::info!(%bound, "metrics at /metrics");
    Ok((handle, format!("http://{bound}/metrics")))
}

#[cfg(unix)]
async fn wait_for_signal() -> std::io::Result<()> {
    use actix_rt::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
    Ok(())
}

#[cfg(not(unix))]
async fn wait_for_signal() -> std::io::Result<()> {
    actix_rt::signal::ctrl_c().await
}

/// `--redis-timeout`: a duration of at least [`MIN_TIMEOUT`](server::backplane::MIN_TIMEOUT).
fn redis_timeout(text: &str) -> Result<std::time::Duration, String> {
    let value = flags::duration(text)?;
    if value < server::backplane::MIN_TIMEOUT {
        return Err(format!(
            "{text:?} is too short: Redis needs at least {:?} to answer",
            server::backplane::MIN_TIMEOUT
        ));
    }
    Ok(value)
}

/// The byte bounds of the Redis queues.
fn queue_bytes() -> clap::builder::RangedU64ValueParser<usize> {
    let range = server::backplane::QUEUE_BYTES;
    flags::count(*range.start() as u64..=*range.end() as u64)
}
