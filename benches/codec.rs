//! Envelope codec hot paths: encoding a typed message once vs building a `serde_json::Value`,
//! and decoding the head once (payload left raw) and then the typed payload vs parsing the whole
//! frame into a `Value`.
//!
//! Run: `cargo bench --bench codec`.

use std::hint::black_box;

use actix_ws_manager::envelope::Head;
use actix_ws_manager::protocol;
use actix_ws_manager::{Outgoing, WireMessage};
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Trade {
    symbol: String,
    price: f64,
    size: u64,
    tags: Vec<String>,
    note: String,
}
impl WireMessage for Trade {
    const TYPE: &'static str = "trade";
}

fn trade(note_len: usize) -> Trade {
    Trade {
        symbol: "EURUSD".into(),
        price: 1.0842,
        size: 1_000_000,
        tags: vec!["fx".into(), "spot".into()],
        note: "n".repeat(note_len),
    }
}

fn encode(c: &mut Criterion) {
    let mut g = c.benchmark_group("encode");
    for note in [16usize, 4096] {
        let t = trade(note);
        g.throughput(Throughput::Elements(1));
        g.bench_with_input(BenchmarkId::new("typed_outgoing", note), &t, |b, t| {
            b.iter(|| Outgoing::new(black_box(t)).map(|o| o.room("fx").id(7).encode()))
        });
        // A publish envelope: straight to its raw JSON (what `protocol::publish_event` does)
        // against the old path through a `serde_json::Value`, measured side by side.
        g.bench_with_input(BenchmarkId::new("publish_direct", note), &t, |b, t| {
            b.iter(|| protocol::publish_event("fx", black_box(t)).map(|o| o.encode()))
        });
        g.bench_with_input(BenchmarkId::new("publish_via_value", note), &t, |b, t| {
            b.iter(|| {
                serde_json::to_value(black_box(t))
                    .ok()
                    .and_then(|v| Outgoing::new(&protocol::Publish(v)).ok())
                    .map(|o| o.room("fx").event(Trade::TYPE).encode())
            })
        });
        g.bench_with_input(BenchmarkId::new("serde_json_value", note), &t, |b, t| {
            b.iter(|| {
                let v = serde_json::json!({"type": "trade", "id": 7, "room": "fx", "data": black_box(t)});
                serde_json::to_string(&v)
            })
        });
    }
    g.finish();
}

fn decode(c: &mut Criterion) {
    let mut g = c.benchmark_group("decode");
    for note in [16usize, 4096] {
        let text = Outgoing::new(&trade(note))
            .map(|o| o.room("fx").id(7).encode())
            .unwrap_or_default();
        g.throughput(Throughput::Bytes(text.len() as u64));
        g.bench_with_input(BenchmarkId::new("head_only", note), &text, |b, text| {
            b.iter(|| Head::parse(black_box(text)).map(|h| h.kind.len()))
        });
        g.bench_with_input(
            BenchmarkId::new("head_then_typed", note),
            &text,
            |b, text| b.iter(|| Head::parse(black_box(text)).and_then(|h| h.data_as::<Trade>())),
        );
        g.bench_with_input(
            BenchmarkId::new("serde_json_value", note),
            &text,
            |b, text| b.iter(|| serde_json::from_str::<serde_json::Value>(black_box(text))),
        );
    }
    g.finish();
}

criterion_group!(benches, encode, decode);
criterion_main!(benches);
