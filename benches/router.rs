//! Router dispatch by number of subscribers, in process (no socket traffic in the measured loop).
//!
//! A client connects to an in-process rooms server once (so that it is `Connected` and idle),
//! then [`Client::inject_text`] feeds envelopes to its Router as if they had been received. Each
//! iteration routes one `tick` envelope to `n` channel subscribers of the same Rust type (the
//! payload is decoded once, then one `Inbound` is cloned per subscriber) and drains every
//! subscriber, all on one thread (the client's actors live on the bench's arbiter).
//!
//! Run: `cargo bench --bench router`.

use std::time::{Duration, Instant};

use actix_ws_manager::client::{connect, Client};
use actix_ws_manager::config::{ClientConfig, ServerConfig};
use actix_ws_manager::{server, Outgoing, WireMessage};
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Tick {
    symbol: String,
    price: f64,
    seq: u64,
}
impl WireMessage for Tick {
    const TYPE: &'static str = "tick";
}

/// Messages injected before the subscribers are drained (the channels hold this many).
const BATCH: u64 = 256;

fn dispatch(c: &mut Criterion) {
    let sys = actix_rt::System::new();
    let (srv, client) = sys.block_on(async {
        let srv = match server::serve("127.0.0.1:0", "/ws", "/echo", ServerConfig::default()) {
            Ok(s) => s,
            Err(e) => panic!("bench server: {e}"),
        };
        let mut cfg = ClientConfig::default();
        cfg.heartbeat.enabled = false;
        let client = match connect(&srv.url(), cfg) {
            Ok(c) => c,
            Err(e) => panic!("bench client: {e}"),
        };
        if let Err(e) = client.wait_connected(Duration::from_secs(10)).await {
            panic!("bench client did not connect: {e}");
        }
        (srv, client)
    });
    let text = Outgoing::new(&Tick {
        symbol: "EURUSD".into(),
        price: 1.0842,
        seq: 42,
    })
    .map(|o| o.room("fx").encode())
    .unwrap_or_default();

    let mut g = c.benchmark_group("router_dispatch");
    for subscribers in [1usize, 10, 100] {
        let mut rxs: Vec<mpsc::Receiver<_>> = (0..subscribers)
            .map(|_| client.subscribe::<Tick>(BATCH as usize))
            .collect();
        g.throughput(Throughput::Elements(1));
        g.bench_function(
            BenchmarkId::new("typed_channel_subscribers", subscribers),
            |b| b.iter_custom(|iters| sys.block_on(route_batches(&client, &text, &mut rxs, iters))),
        );
        // Dropping the receivers unsubscribes them (at the next message of that type).
        drop(rxs);
        sys.block_on(route_batches(&client, &text, &mut Vec::new(), 1));
    }
    g.finish();
    sys.block_on(async {
        client.close().await;
        let _ = srv.shutdown().await;
    });
}

/// Inject `iters` envelopes in batches and wait until every subscriber has received each one.
async fn route_batches(
    client: &Client,
    text: &str,
    rxs: &mut [mpsc::Receiver<actix_ws_manager::client::Inbound<Tick>>],
    iters: u64,
) -> Duration {
    let start = Instant::now();
    let mut left = iters;
    while left > 0 {
        let n = left.min(BATCH);
        for _ in 0..n {
            client.inject_text(text.to_owned());
        }
        for rx in rxs.iter_mut() {
            for _ in 0..n {
                if rx.recv().await.is_none() {
                    panic!("subscriber closed");
                }
            }
        }
        left -= n;
    }
    start.elapsed()
}

criterion_group!(benches, dispatch);
criterion_main!(benches);
