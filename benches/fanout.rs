//! Hub fan-out by number of room members, in process (no sockets).
//!
//! The [`Hub`] only ever sees each session's bounded outbound queue, so members here are
//! [`outbox`]es registered with [`Command::Connect`] through the hub's command queue, exactly
//! as sessions register. Each iteration sends one [`Publish`] to a room of `n` members (the hub
//! encodes the envelope once and `try_send`s the shared bytes to every queue), waits for the
//! count of members reached, and then polls every outbox's body, which encodes the frames as
//! actix-http would have it write them.
//!
//! The `hub_history` group publishes to 1000 members with room history off and on, in the
//! same run.
//!
//! Run: `cargo bench --bench fanout` (`-- hub_history` for the history comparison alone).

use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::prelude::*;
use actix_http::body::MessageBody;
use actix_ws_manager::config::{HistoryConfig, SlowConsumerPolicy};
use actix_ws_manager::server::backplane::InProcess;
use actix_ws_manager::server::bench_internals::{
    outbox, Command, Counters, Evict, Hub, HubSender, OutboxBody, Publish, Publisher,
};
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use futures_util::FutureExt;
use serde_json::value::RawValue;

/// Stands in for a session's actor: only receives [`Evict`], which never happens here (queues
/// are drained after every publish).
struct Evictee;
impl Actor for Evictee {
    type Context = Context<Self>;
}
impl Handler<Evict> for Evictee {
    type Result = ();
    fn handle(&mut self, _: Evict, _: &mut Context<Self>) {}
}

fn fan_out(c: &mut Criterion) {
    let sys = actix_rt::System::new();
    let mut g = c.benchmark_group("hub_fan_out");
    for members in [10usize, 100, 1000, 10_000] {
        let (hub, mut queues) = sys.block_on(members_of_one_room(members, None));
        g.throughput(Throughput::Elements(members as u64));
        g.bench_function(BenchmarkId::new("publish_and_drain", members), |b| {
            b.iter_custom(|iters| sys.block_on(publish(&hub, &mut queues, members, iters)))
        });
    }
    g.finish();
}

/// The cost of room history: the same publish to 1000 members with history off and on (each
/// publication then gets its offset and epoch, and the hub keeps the frame, within the default
/// bounds), in the same run.
fn history(c: &mut Criterion) {
    let sys = actix_rt::System::new();
    let mut g = c.benchmark_group("hub_history");
    let members = 1000;
    g.throughput(Throughput::Elements(members as u64));
    for (name, history) in [("off", None), ("on", Some(HistoryConfig::default()))] {
        let (hub, mut queues) = sys.block_on(members_of_one_room(members, history));
        g.bench_function(BenchmarkId::new(name, members), |b| {
            b.iter_custom(|iters| sys.block_on(publish(&hub, &mut queues, members, iters)))
        });
    }
    g.finish();
}

/// A hub (with `history`, or none) and `members` outboxes in one room.
async fn members_of_one_room(
    members: usize,
    history: Option<HistoryConfig>,
) -> (HubSender, Vec<OutboxBody>) {
    let (_addr, hub) = Hub::launch_with_backplane(
        SlowConsumerPolicy::Disconnect,
        Arc::new(Counters::default()),
        1024,
        Box::new(InProcess),
        history,
        actix_ws_manager::config::DEFAULT_PRESENCE_LIST_LIMIT,
    );
    let evict = Evictee.start().recipient();
    let room: Arc<str> = Arc::from("lobby");
    let mut queues = Vec::with_capacity(members);
    for id in 0..members as u64 {
        let (tx, rx) = outbox(64);
        let connect = Command::Connect {
            id,
            queue: tx,
            evict: evict.clone(),
            who: Arc::new(Publisher {
                from: format!("s-{id}").into(),
                session: None,
            }),
        };
        let join = Command::Join {
            id,
            room: room.clone(),
            reply: None,
            listen: false,
            info: None,
        };
        for cmd in [connect, join] {
            assert!(hub.send(cmd).await.is_ok(), "hub running");
        }
        queues.push(rx);
    }
    (hub, queues)
}

async fn publish(
    hub: &HubSender,
    queues: &mut [OutboxBody],
    members: usize,
    iters: u64,
) -> Duration {
    let data = RawValue::from_string(r#"{"text":"hello, room","seq":1}"#.to_owned()).ok();
    let room: Arc<str> = Arc::from("lobby");
    let from = Arc::new(Publisher {
        from: "s-0".into(),
        session: None,
    });
    let start = Instant::now();
    for _ in 0..iters {
        let (tell, reached) = tokio::sync::oneshot::channel();
        let publish = Command::Publish(Publish {
            room: room.clone(),
            from: Some(from.clone()),
            event: None,
            data: data.clone(),
            reached: Some(tell),
            reply_to: None,
        });
        assert!(hub.send(publish).await.is_ok(), "hub running");
        assert_eq!(reached.await.ok(), Some(members), "every member reached");
        for q in queues.iter_mut() {
            while let Some(Some(_)) =
                std::future::poll_fn(|cx| std::pin::Pin::new(&mut *q).poll_next(cx)).now_or_never()
            {
            }
        }
    }
    start.elapsed()
}

criterion_group!(benches, fan_out, history);
criterion_main!(benches);
