//! Emit + one sync handler (history on) against tokio's broadcast channel
//! send + recv, same thread, same payload.
//!
//! Run: `cargo bench -p tidings-core --bench inproc`
//! (`-- emit_threads` for several emitting threads on one bus)
//!
//! Both sides build an envelope with a fresh UUID v7 and timestamp around
//! a clone of the same JSON payload. Tidings keeps a window of recent
//! events (its history ring and memory log); the broadcast keeps none,
//! since tokio drops a value as soon as its one receiver has read it. The
//! window matters (evicting an event frees memory that has gone cold), so
//! each side is measured with a window (Tidings) or channel capacity
//! (broadcast) of 1,024 and of 10,000 (the bus's default). The broadcast
//! peer sends the envelope by value (as seed 003 does; `recv` clones it),
//! and once behind an `Arc` (its cheapest form). The harness's `inproc`
//! (BENCHMARKS.md) is the measured comparison; this is for quick looks.

use std::hint::black_box;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use serde_json::json;
use tidings_core::{Bus, LogOptions, MemoryLog, Pattern, Retention};
use uuid::Uuid;

#[derive(Clone, Debug)]
#[allow(dead_code)]
struct Envelope {
    id: Uuid,
    time: DateTime<Utc>,
    seq: u64,
    name: String,
    data: serde_json::Value,
}

fn envelope(seq: u64, data: &serde_json::Value) -> Envelope {
    Envelope {
        id: Uuid::now_v7(),
        time: Utc::now(),
        seq,
        name: "player:move".to_owned(),
        data: data.clone(),
    }
}

fn payload() -> serde_json::Value {
    json!({"username": "Gribnak", "from_room": "tavern", "to_room": "street"})
}

fn inproc(c: &mut Criterion) {
    let data = payload();
    let mut g = c.benchmark_group("inproc");
    g.throughput(Throughput::Elements(1));

    for window in [1024usize, 10_000] {
        let log = MemoryLog::with_options(LogOptions {
            idempotency_window: Duration::from_secs(120),
            ..LogOptions::retention(Retention {
                max_count: Some(window as u64),
                max_age: None,
            })
        })
        .expect("valid options");
        let bus = Bus::builder()
            .log(log)
            .history_capacity(window)
            .build()
            .unwrap();
        let count = Arc::new(AtomicU64::new(0));
        let c2 = count.clone();
        let _h = bus
            .on("player:move", move |e| {
                c2.fetch_add(e.seq & 1, Ordering::Relaxed);
            })
            .unwrap();
        g.bench_function(format!("tidings_emit_sync_handler/{window}"), |b| {
            b.iter(|| black_box(bus.emit("player:move", data.clone()).unwrap()))
        });

        let (tx, mut rx) = tokio::sync::broadcast::channel::<Envelope>(window);
        let mut seq = 0;
        g.bench_function(format!("broadcast_send_recv/{window}"), |b| {
            b.iter(|| {
                seq += 1;
                tx.send(envelope(seq, &data)).unwrap();
                black_box(rx.try_recv().unwrap())
            })
        });
    }

    let (tx, mut rx) = tokio::sync::broadcast::channel::<Arc<Envelope>>(1024);
    let mut seq = 0;
    g.bench_function("broadcast_send_recv_arc/1024", |b| {
        b.iter(|| {
            seq += 1;
            tx.send(Arc::new(envelope(seq, &data))).unwrap();
            black_box(rx.try_recv().unwrap())
        })
    });
    g.finish();
}

fn matching(c: &mut Criterion) {
    let mut g = c.benchmark_group("pattern");
    let p = Pattern::parse("room.*.player.>").unwrap();
    g.bench_function("pattern_matches", |b| {
        b.iter(|| black_box(p.matches(black_box("room.42.player.joined"))))
    });
    g.bench_function("pattern_parse", |b| {
        b.iter(|| black_box(Pattern::parse(black_box("room.*.player.>")).unwrap()))
    });
    g.finish();
}

/// Several threads emitting into one bus (memory log, history on, one sync
/// handler): what the per-event stamp and dispatch bookkeeping cost when
/// emitters contend. Throughput is events per second over all threads.
fn emit_threads(c: &mut Criterion) {
    const PER_THREAD: u64 = 2_000;
    let data = payload();
    let mut g = c.benchmark_group("emit_threads");
    for threads in [1u64, 4] {
        g.throughput(Throughput::Elements(threads * PER_THREAD));
        let bus = Bus::new();
        let _h = bus.on("player:move", |e| {
            black_box(e.seq);
        });
        g.bench_function(format!("tidings_emit/{threads}"), |b| {
            b.iter_custom(|iters| {
                let start = std::time::Instant::now();
                for _ in 0..iters {
                    std::thread::scope(|s| {
                        for _ in 0..threads {
                            s.spawn(|| {
                                for _ in 0..PER_THREAD {
                                    black_box(bus.emit("player:move", data.clone()).unwrap());
                                }
                            });
                        }
                    });
                }
                start.elapsed()
            })
        });
    }
    g.finish();
}

criterion_group!(benches, inproc, matching, emit_threads);
criterion_main!(benches);
