//! The clients: a [`Manager`] per variant, deflate offered or not.

use std::time::Instant;

use actix_ws_manager::client::{Client, Manager, ManagerConfig};
use actix_ws_manager::config::{ClientConfig, DeflateConfig};

use crate::CONNECT_TIMEOUT;

/// The client config of a variant.
fn client_config(deflate: bool) -> ClientConfig {
    ClientConfig::default().deflate(if deflate {
        DeflateConfig::default()
    } else {
        DeflateConfig::off()
    })
}

/// A Manager whose clients use the variant's config.
pub(crate) fn manager(deflate: bool) -> Manager {
    let config = ManagerConfig::default()
        .connect_rate(Some(5000.0))
        .client(client_config(deflate));
    match Manager::new(config) {
        Ok(m) => m,
        Err(e) => panic!("manager: {e}"),
    }
}

/// Connect `n` clients named `<prefix><i>` to `url`: the handles, and how many connected
/// within [`CONNECT_TIMEOUT`].
pub(crate) async fn connect_all(
    manager: &Manager,
    prefix: &str,
    url: &str,
    n: usize,
) -> (Vec<Client>, usize) {
    let mut clients = Vec::with_capacity(n);
    for i in 0..n {
        match manager.connect(format!("{prefix}{i}"), url).await {
            Ok(c) => clients.push(c),
            Err(e) => eprintln!("  connect {prefix}{i}: {e}"),
        }
    }
    let deadline = Instant::now() + CONNECT_TIMEOUT;
    let mut up = 0;
    for c in &clients {
        if c.wait_connected(deadline.saturating_duration_since(Instant::now()))
            .await
            .is_ok()
        {
            up += 1;
        }
    }
    (clients, up)
}
