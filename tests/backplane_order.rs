//! Order and liveness of the Redis backplane (issue 18) over a faulty link to a real
//! `redis-server`: a slow but live link is not declared dead, and one publisher's order
//! survives a stall, or a link that delivers late, and a reconnect.

mod common;

use std::cell::{Cell, RefCell};
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use actix_ws_manager::client::Inbound;
use actix_ws_manager::testkit::FaultProxy;
use actix_ws_manager::testkit::{next_matching, Fault};
use actix_ws_manager::{Error, WireMessage};
use awc::error::WsProtocolError as WsError;
use awc::ws::Frame;
use common::cluster::{member, proxied_pair, proxied_pair_with, raw_member, text, Seq};
use common::{RedisServer, WAIT};
use futures_util::{SinkExt, StreamExt};
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// A numbered message with padding.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Big {
    n: u64,
    pad: String,
}
impl WireMessage for Big {
    const TYPE: &'static str = "big";
}

/// If `frame` (text from the publisher's socket) is an `ack` or `error` envelope, its id and its code (`"ack"` for an ack).
fn answer_code(frame: &[u8]) -> Option<(u64, String)> {
    let v: Value = serde_json::from_slice(frame).expect("JSON");
    (v["type"] == "ack" || v["type"] == "error").then(|| {
        let code = v["data"]["code"].as_str().unwrap_or("ack").to_owned();
        (v["id"].as_u64().expect("an id"), code)
    })
}

/// Node A reaches Redis through a link throttled to about 200 KB/s each way (slow, but
/// live), with the default 2 s Redis timeout; a client on A publishes 150 messages of 10 KB at
/// once (1.5 MB: about 7.5 s on that link, so no batch of them could be answered within the
/// timeout). Every publish is acknowledged (none `backplane_unavailable`), A never counts its
/// link lost, and B's member gets all 150 in order. (With a 500 ms timeout this failed once on
/// a machine loaded to 3.4 on 2 cores: the proxy itself, in this process, was starved for
/// longer than the timeout, which is a stalled link.)
#[actix_rt::test]
async fn throttled_link_is_slow_not_dead() {
    const N: u64 = 150;
    let redis = RedisServer::start();
    let (proxy, a, b) = proxied_pair_with(&redis, Duration::from_secs(2)).await;
    let (_b1, mut b_in) = member::<Big>(&b, "r", 65_536).await;
    let publisher = raw_member(&a.url(), "r").await;
    proxy.throttle(200_000);

    let start = Instant::now();
    let (mut sink, mut stream) = publisher.framed.split();
    let pad = "x".repeat(10_000);
    for n in 0..N {
        let publish = format!(
            r#"{{"type":"publish","room":"r","event":"big","id":{n},"data":{{"n":{n},"pad":"{pad}"}}}}"#
        );
        sink.feed(text(publish)).await.expect("publish");
    }
    sink.flush().await.expect("flush");
    // The answers, in any order with the publisher's own copies (bounded: 1.5 MB at 200 KB/s
    // is 7.5 s; allow for a busy machine).
    let deadline = start + Duration::from_secs(30);
    let mut answers: BTreeMap<u64, Value> = BTreeMap::new();
    while (answers.len() as u64) < N {
        let next = tokio::time::timeout_at(deadline.into(), stream.next())
            .await
            .unwrap_or_else(|_| {
                panic!(
                    "{} of {N} publishes answered after {:?}",
                    answers.len(),
                    start.elapsed()
                )
            });
        match next {
            Some(Ok(Frame::Text(t))) => {
                let v: Value = serde_json::from_slice(&t).expect("JSON");
                if v["type"] == "ack" || v["type"] == "error" {
                    answers.insert(v["id"].as_u64().expect("an id"), v);
                }
            }
            Some(Ok(_)) => {}
            other => panic!("the publisher's stream ended: {other:?}"),
        }
    }
    let took = start.elapsed();
    let refused: Vec<&Value> = answers.values().filter(|v| v["type"] != "ack").collect();
    let stats = a.stats().await.expect("stats of a");
    eprintln!(
        "throttled link: {N} publishes of 10 KB answered in {took:?}, {} refused (first: {:?}); \
         {} bytes up through the proxy; node a: {stats:?}",
        refused.len(),
        refused.first(),
        proxy.bytes_up(),
    );
    assert!(
        refused.is_empty(),
        "{} of {N} refused, first {:?}",
        refused.len(),
        refused[0]
    );
    assert_eq!(
        stats.backplane_disconnects, 0,
        "a slow link is not a lost one"
    );
    assert_eq!(stats.backplane_publish_errors, 0);
    for n in 0..N {
        let m = next_matching(&mut b_in, "the next message on b", WAIT, |_| true)
            .await
            .unwrap_or_else(|e| panic!("b's member got {n} of {N}: {e}"));
        assert_eq!(m.data.n, n, "b's member gets every message once, in order");
    }
}

/// Receive from `rx` into `got` until `pred` accepts a message's `n` (answers true) or
/// `deadline` passes (answers false).
async fn receive_until(
    rx: &mut tokio::sync::mpsc::Receiver<Inbound<Seq>>,
    got: &RefCell<Vec<u64>>,
    deadline: Instant,
    pred: &dyn Fn(u64) -> bool,
) -> bool {
    for _ in 0..1_000_000 {
        let left = deadline.saturating_duration_since(Instant::now());
        match next_matching(rx, "a message on b", left, |_| true).await {
            Ok(m) => {
                got.borrow_mut().push(m.data.n);
                if pred(m.data.n) {
                    return true;
                }
            }
            Err(Error::Timeout { .. }) => return false,
            Err(e) => panic!("b's member: {e}"),
        }
    }
    false
}

/// Node A reaches Redis through a proxy, B directly, both with a 500 ms Redis timeout. A
/// client on A publishes numbered messages without waiting for answers; A's link stalls
/// (nothing passes, every socket stays open) for 1.3 s, longer than the timeout, then comes
/// back; publishing goes on until B's member gets messages published after that. B's member
/// gets one publisher's messages in strictly increasing order (what was published during the
/// stall may be lost, never duplicated or reordered), and every acknowledged one.
#[actix_rt::test]
async fn order_survives_a_stall_and_reconnect() {
    order_across(Fault::Blackhole, "stall").await;
}

/// As [`order_survives_a_stall_and_reconnect`], but for 1.3 s A's link carries everything
/// 3 s late instead of nothing (as when the old connection's retransmissions back off while a
/// new connection gets through at once): what the old connection sent before the node gave up
/// on it reaches Redis up to 3 s after the link is healthy again, after the new connection's
/// publishes. B's member still gets one publisher's messages in strictly increasing order, and
/// every acknowledged one.
#[actix_rt::test]
async fn order_survives_a_late_link_and_reconnect() {
    order_across(Fault::Delay(Duration::from_secs(3)), "late link").await;
}

/// Most publishes of one order test.
const MAX: u64 = 20_000;

/// Publish to "seq" through `sink` in bursts of 20 every 5 ms (about 4,000 a second), each with
/// its number as `id`, until `stop` or [`MAX`]; `sent` counts them.
async fn publish_bursts(
    sink: &mut (impl futures_util::Sink<awc::ws::Message, Error = WsError> + Unpin),
    sent: &Cell<u64>,
    stop: &Cell<bool>,
) {
    let mut tick = tokio::time::interval(Duration::from_millis(5));
    while !stop.get() && sent.get() < MAX {
        tick.tick().await;
        for _ in 0..20 {
            let n = sent.get();
            let publish = format!(
                r#"{{"type":"publish","room":"seq","event":"seq","id":{n},"data":{{"n":{n}}}}}"#
            );
            sink.feed(text(publish)).await.expect("publish");
            sent.set(n + 1);
        }
        sink.flush().await.expect("flush");
    }
}

/// Record every answer (ack or error, by id) the publisher gets, for ever (a select ends it).
async fn record_answers(
    stream: &mut (impl futures_util::Stream<Item = Result<Frame, WsError>> + Unpin),
    answers: &RefCell<BTreeMap<u64, String>>,
) {
    loop {
        match stream.next().await {
            Some(Ok(Frame::Text(t))) => {
                if let Some((id, code)) = answer_code(&t) {
                    answers.borrow_mut().insert(id, code);
                }
            }
            Some(Ok(_)) => {}
            other => panic!("the publisher's stream ended: {other:?}"),
        }
    }
}

/// Read the publisher's answers until all `sent` publishes are answered, within [`WAIT`].
async fn await_answers(
    stream: &mut (impl futures_util::Stream<Item = Result<Frame, WsError>> + Unpin),
    answers: &RefCell<BTreeMap<u64, String>>,
    sent: u64,
) {
    let deadline = Instant::now() + WAIT;
    while (answers.borrow().len() as u64) < sent {
        let next = tokio::time::timeout_at(deadline.into(), stream.next())
            .await
            .unwrap_or_else(|_| panic!("{} of {} answered", answers.borrow().len(), sent));
        if let Some(Ok(Frame::Text(t))) = next {
            if let Some((id, code)) = answer_code(&t) {
                answers.borrow_mut().insert(id, code);
            }
        }
    }
}

/// Apply `fault` to the proxy's link for `stall` once B's member has 200 messages, then heal
/// it and read B's member until the late ones have landed; then `stop` the publisher. Answers
/// whether B got what A published after the link was back, and how many were sent before.
async fn fault_mid_stream(
    proxy: &FaultProxy,
    fault: Fault,
    stall: Duration,
    b_in: &mut tokio::sync::mpsc::Receiver<Inbound<Seq>>,
    got: &RefCell<Vec<u64>>,
    sent: &Cell<u64>,
    stop: &Cell<bool>,
) -> (bool, u64) {
    assert!(
        receive_until(b_in, got, Instant::now() + WAIT, &|n| n >= 200).await,
        "b gets a's messages before the stall"
    );
    match fault {
        Fault::Blackhole => proxy.blackhole(),
        Fault::Delay(by) => proxy.delay(by),
        Fault::Throttle(rate) => proxy.throttle(rate),
        Fault::Pass => proxy.pass(),
    }
    // The fault lasts STALL; B's member is read meanwhile.
    assert!(!receive_until(b_in, got, Instant::now() + stall, &|_| false).await);
    let sent_before_pass = sent.get();
    proxy.pass();
    let passed = Instant::now();
    let resumed = receive_until(b_in, got, passed + WAIT, &|n| n >= sent_before_pass).await;
    // What the proxy had read before the fault ended reaches Redis up to `late` after it;
    // publishing goes on until then (and a little), so B's member gets it among newer ones.
    let late = match fault {
        Fault::Delay(by) => by,
        _ => Duration::ZERO,
    };
    let landed = passed + late + Duration::from_millis(300);
    receive_until(b_in, got, landed, &|_| false).await;
    stop.set(true);
    (resumed, sent_before_pass)
}

/// The body of the order tests: `fault` on A's link for 1.3 s mid-stream.
async fn order_across(fault: Fault, label: &str) {
    const STALL: Duration = Duration::from_millis(1_300);
    let redis = RedisServer::start();
    let (proxy, a, b) = proxied_pair(&redis).await;
    let (_b1, mut b_in) = member::<Seq>(&b, "seq", 65_536).await;
    let publisher = raw_member(&a.url(), "seq").await;
    let (mut sink, mut stream) = publisher.framed.split();

    let sent = Cell::new(0u64);
    let stop = Cell::new(false);
    let answers: RefCell<BTreeMap<u64, String>> = RefCell::new(BTreeMap::new());
    let got: RefCell<Vec<u64>> = RefCell::new(Vec::new());
    let write = publish_bursts(&mut sink, &sent, &stop);
    let read = record_answers(&mut stream, &answers);
    let control = fault_mid_stream(&proxy, fault, STALL, &mut b_in, &got, &sent, &stop);
    let (resumed, sent_before_pass) = tokio::select! {
        ((), outcome) = async { tokio::join!(write, control) } => outcome,
        () = read => unreachable!(),
    };
    // Every publish answered (bounded), then B has everything up to the last acknowledged.
    await_answers(&mut stream, &answers, sent.get()).await;
    let answers = answers.into_inner();
    let last_acked = answers
        .iter()
        .rev()
        .find(|(_, c)| *c == "ack")
        .map(|(n, _)| *n);
    if let Some(last) = last_acked {
        if got.borrow().last().is_none_or(|n| *n < last) {
            receive_until(&mut b_in, &got, Instant::now() + WAIT, &|n| n >= last).await;
        }
    }
    let got = got.into_inner();
    let mut codes: BTreeMap<&str, u64> = BTreeMap::new();
    for code in answers.values() {
        *codes.entry(code).or_default() += 1;
    }
    let refused_but_delivered = got
        .iter()
        .filter(|n| answers.get(n).is_some_and(|c| c != "ack"))
        .count();
    let stats = a.stats().await.expect("stats of a");
    let b_stats = b.stats().await.expect("stats of b");
    let backwards: Vec<(u64, u64)> = got
        .windows(2)
        .filter(|w| w[1] <= w[0])
        .map(|w| (w[0], w[1]))
        .take(10)
        .collect();
    eprintln!(
        "{label}: {} published ({sent_before_pass} before the link came back), answers {codes:?}; \
         b got {} (first after the stall {:?}), {refused_but_delivered} of them answered as \
         refused; out of order (first 10): {backwards:?}; node a: disconnects {}, publish \
         errors {}; node b: slow consumers cut {}",
        sent.get(),
        got.len(),
        got.iter().find(|n| **n >= sent_before_pass),
        stats.backplane_disconnects,
        stats.backplane_publish_errors,
        b_stats.slow_consumer_disconnects,
    );
    assert!(resumed, "b gets what a publishes after the link is back");
    assert!(
        backwards.is_empty(),
        "b's member gets a's messages in strictly increasing order: {backwards:?}"
    );
    let missing: Vec<u64> = answers
        .iter()
        .filter(|(n, c)| *c == "ack" && got.binary_search(n).is_err())
        .map(|(n, _)| *n)
        .take(10)
        .collect();
    assert!(
        missing.is_empty(),
        "acknowledged but never delivered: {missing:?}"
    );
}
