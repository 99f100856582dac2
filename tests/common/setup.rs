//! Configurations and servers for tests: a server configuration and a client configuration
//! whose timers stay out of the way (tests of a timer set their own), a standalone server on a
//! free port, and a JSON literal shorthand.

use std::time::Duration;

use actix_ws_manager::config::ServerConfig;
use actix_ws_manager::server::{self, Server};

/// A server configuration for tests: heartbeat long enough not to interfere (tests of the
/// heartbeat set their own), short close timeout so cut sockets go quickly.
pub fn test_config() -> ServerConfig {
    ServerConfig::default()
        .heartbeat(Duration::from_secs(10), Duration::from_secs(30))
        .close_timeout(Duration::from_millis(300))
}

/// Start a standalone server on 127.0.0.1:0 with the rooms route at `/ws` and echo at `/echo`.
pub fn start_server(config: ServerConfig) -> Server {
    server::serve("127.0.0.1:0", "/ws", "/echo", config).expect("server starts")
}

/// A client config for tests: quiet heartbeat, fast deterministic reconnects (50 ms doubling to
/// 1 s, no jitter).
pub fn client_test_config() -> actix_ws_manager::config::ClientConfig {
    use actix_ws_manager::config::{ClientConfig, HeartbeatConfig, ReconnectPolicy};
    ClientConfig::default()
        .heartbeat(HeartbeatConfig::disabled())
        .reconnect(
            ReconnectPolicy::default()
                .backoff(Duration::from_millis(50), 2.0, Duration::from_secs(1))
                .jitter(0.0, None),
        )
}

/// Parse a JSON literal (test shorthand).
pub fn j(text: &str) -> serde_json::Value {
    serde_json::from_str(text).expect("valid JSON in test")
}
