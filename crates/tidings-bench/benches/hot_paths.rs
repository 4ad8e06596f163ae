//! Micro-benchmarks of hot paths (criterion, short runs).
//!
//! ```sh
//! CARGO_TARGET_DIR=/work/target-bench cargo bench -p tidings-bench --bench hot_paths
//! ```
//!
//! * `trie/match_10k`: `tidings_core::fuzzing::Trie::matches` over the
//!   `patterns` scenario's 10,000 subscriptions, per event name (no cache);
//!   `trie/linear_10k` is the linear token scan over the same patterns.
//! * `envelope/json`: `serde_json::to_string` of a committed `Event` (what
//!   the server does per event per WebSocket/SSE subscriber).
//! * `filter/none`, `filter/cel_world_42`: one `Bus::emit` of a
//!   `player.move` event and its delivery to a stream subscriber, without
//!   a filter and with the CEL filter `data.world_id == 42` (which accepts
//!   it); the difference is a filter's cost per event and subscriber.
//!   `filter/cel_eval` is the expression's evaluation alone.
//! * `schema/none`, `schema/order`: one `Bus::emit` of a typical order
//!   (customer, currency, two line items, total) on an in-memory log,
//!   without a data contract and with a typical JSON Schema for it
//!   (`tidings-schema`: required fields, types, minimums, a pattern, no
//!   additional properties); the difference is a schema's cost per
//!   publish. `schema/validate` is the validation alone.
//! * `sqlite/append_1_none`: one-event `EventLog::append` on a SQLite log
//!   with `Durability::None` (the writer thread round trip, no fsync).

use std::hint::black_box;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use tidings_bench::matcher::LinearScan;
use tidings_bench::workload::{event_names, patterns, payload};
use tidings_core::fuzzing::Trie;
use tidings_core::{EventLog, NewEvent, Pattern};
use tidings_sqlite::{Durability, OpenCheck, SqliteLog, SqliteOptions};

fn trie(c: &mut Criterion) {
    let pats = patterns(10_000);
    let mut trie = Trie::new();
    for (i, p) in pats.iter().enumerate() {
        trie.insert(&Pattern::parse(p).expect("valid"), i as u64);
    }
    let names = event_names(10_000, 1024, 11);
    let scan = LinearScan::new(&pats);
    let mut g = c.benchmark_group("trie");
    g.throughput(Throughput::Elements(names.len() as u64));
    g.bench_function("match_10k", |b| {
        let mut out = Vec::with_capacity(16);
        b.iter(|| {
            for n in &names {
                out.clear();
                trie.matches(n, &mut out);
                black_box(&out);
            }
        })
    });
    g.sample_size(10);
    g.bench_function("linear_10k", |b| {
        b.iter(|| {
            for n in &names {
                black_box(scan.for_each_match(n, |i| {
                    black_box(i);
                }));
            }
        })
    });
    g.finish();
}

fn envelope(c: &mut Criterion) {
    let e = NewEvent::new("player.move", payload())
        .expect("valid")
        .source("http")
        .commit(42);
    let mut g = c.benchmark_group("envelope");
    g.throughput(Throughput::Elements(1));
    g.bench_function("json", |b| {
        b.iter(|| black_box(serde_json::to_string(black_box(&e)).expect("json")))
    });
    g.finish();
}

fn filter(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let mut data = payload();
    data["world_id"] = serde_json::json!(42);
    let cel = std::sync::Arc::new(
        tidings_filter::CelFilter::compile("data.world_id == 42").expect("valid filter"),
    );
    let mut g = c.benchmark_group("filter");
    g.throughput(Throughput::Elements(1));
    for (name, f) in [
        ("none", None),
        (
            "cel_world_42",
            Some(cel.clone() as tidings_core::SharedFilter),
        ),
    ] {
        let bus = rt
            .block_on(async { tidings_core::Bus::builder().without_history().build() })
            .expect("bus");
        let mut stream = rt
            .block_on(bus.subscribe_filtered(["player.move"], tidings_core::Position::End, f))
            .expect("subscribe");
        g.bench_function(name, |b| {
            b.iter(|| {
                bus.emit("player.move", data.clone()).expect("emit");
                black_box(rt.block_on(futures_util::StreamExt::next(&mut stream)))
            })
        });
    }
    let e = NewEvent::new("player.move", data.clone())
        .expect("valid")
        .commit(7);
    g.bench_function("cel_eval", |b| {
        b.iter(|| black_box(tidings_core::EventFilter::accepts(&*cel, black_box(&e))))
    });
    g.finish();
}

/// A typical order event and its schema.
fn order() -> (serde_json::Value, serde_json::Value) {
    use serde_json::json;
    let line = json!({
        "type": "object",
        "required": ["sku", "qty", "price_cents"],
        "additionalProperties": false,
        "properties": {
            "sku": {"type": "string", "minLength": 1},
            "qty": {"type": "integer", "minimum": 1},
            "price_cents": {"type": "integer", "minimum": 0}
        }
    });
    let schema = json!({
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "type": "object",
        "required": ["id", "customer", "currency", "items", "total_cents"],
        "additionalProperties": false,
        "properties": {
            "id": {"type": "integer", "minimum": 1},
            "customer": {"type": "string"},
            "currency": {"type": "string", "pattern": "^[A-Z]{3}$"},
            "items": {"type": "array", "minItems": 1, "items": line},
            "total_cents": {"type": "integer", "minimum": 0},
            "note": {"type": "string", "maxLength": 500}
        }
    });
    let data = json!({
        "id": 42,
        "customer": "c-1017",
        "currency": "EUR",
        "items": [
            {"sku": "TEA-01", "qty": 2, "price_cents": 995},
            {"sku": "CUP-07", "qty": 1, "price_cents": 1450}
        ],
        "total_cents": 3440
    });
    (schema, data)
}

fn schema(c: &mut Criterion) {
    let (doc, data) = order();
    let schema = tidings_schema::Schema::from_value(doc).expect("valid schema");
    let mut g = c.benchmark_group("schema");
    g.throughput(Throughput::Elements(1));
    for (name, with) in [("none", false), ("order", true)] {
        let mut builder = tidings_core::Bus::builder().without_history();
        if with {
            builder = builder.schema("orders.>", schema.clone());
        }
        let bus = builder.build().expect("bus");
        g.bench_function(name, |b| {
            b.iter(|| black_box(bus.emit("orders.placed", data.clone()).expect("emit")))
        });
    }
    g.bench_function("validate", |b| {
        b.iter(|| black_box(schema.validate(black_box(&data))).expect("valid"))
    });
    g.finish();
}

fn sqlite(c: &mut Criterion) {
    let dir = tempfile::tempdir().expect("temp dir");
    let log = SqliteLog::open(
        dir.path().join("bench.db"),
        SqliteOptions {
            durability: Durability::None,
            check_on_open: OpenCheck::Off,
            ..SqliteOptions::default()
        },
    )
    .expect("open");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let data = payload();
    let mut g = c.benchmark_group("sqlite");
    g.throughput(Throughput::Elements(1));
    g.bench_function("append_1_none", |b| {
        b.iter(|| {
            let ev = NewEvent::new("orders.placed", data.clone()).expect("valid");
            black_box(rt.block_on(log.append(vec![ev], None)).expect("append"))
        })
    });
    g.finish();
    log.close_blocking().expect("close");
}

fn config() -> Criterion {
    Criterion::default()
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2))
        .sample_size(20)
}

criterion_group! {
    name = benches;
    config = config();
    targets = trie, envelope, filter, schema, sqlite
}
criterion_main!(benches);
