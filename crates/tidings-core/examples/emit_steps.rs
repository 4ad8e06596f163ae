//! Where an emit's time goes, one layer at a time: the same event made and
//! handed to one counting handler, first with nothing around it, then
//! through the memory log, then through the bus (without and with its
//! history ring), and through the bus with no handler at all.
//!
//! ```text
//! cargo run --release -p tidings-core --example emit_steps -- [ROUNDS] [EVENTS]
//! ```
//!
//! Prints, per round, nanoseconds per event for each step (default 3
//! rounds of 2,000,000 events; every step keeps a window of 10,000 events,
//! as `tidings-bench inproc` does). Each step's difference to the one
//! before is what that layer costs. Every step checks that its handler saw
//! every event.

use std::collections::VecDeque;
use std::hint::black_box;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::json;
use tidings_core::{Bus, EventLog, LogOptions, MemoryLog, NewEvent, Retention, SharedEvent};

const WINDOW: usize = 10_000;
const NAME: &str = "player:move";

fn log() -> MemoryLog {
    MemoryLog::with_options(LogOptions {
        idempotency_window: Duration::from_secs(120),
        ..LogOptions::retention(Retention {
            max_count: Some(WINDOW as u64),
            max_age: None,
        })
    })
    .expect("valid options")
}

/// Nanoseconds per call of `f`, over `n` calls.
fn per_event(n: u64, mut f: impl FnMut()) -> f64 {
    let started = Instant::now();
    for _ in 0..n {
        f();
    }
    started.elapsed().as_nanos() as f64 / n as f64
}

/// A bus over a fresh memory log, and the counter of its handler's calls
/// (none registered if `handler` is false).
fn bus(history: bool, handler: bool) -> (Bus, Option<tidings_core::Subscription>, Arc<AtomicU64>) {
    let builder = Bus::builder().log(log());
    let builder = if history {
        builder.history_capacity(WINDOW)
    } else {
        builder.without_history()
    };
    let bus = builder.build().expect("a valid bus");
    let count = Arc::new(AtomicU64::new(0));
    let c = count.clone();
    let sub = handler.then(|| {
        bus.on(NAME, move |e| {
            black_box(&e.seq);
            c.fetch_add(1, Ordering::Relaxed);
        })
        .expect("a valid pattern")
    });
    (bus, sub, count)
}

fn main() {
    let counts: Vec<u64> = std::env::args()
        .skip(1)
        .map(|a| a.parse().expect("arguments are counts"))
        .collect();
    let rounds = counts.first().copied().unwrap_or(3);
    let n = counts.get(1).copied().unwrap_or(2_000_000);
    let data = json!({"username": "Gribnak", "from_room": "tavern", "to_room": "street"});
    let seen = AtomicU64::new(0);
    let handler = |e: &SharedEvent| {
        black_box(&e.seq);
        seen.fetch_add(1, Ordering::Relaxed);
    };
    let check = |count: u64, what: &str| assert_eq!(count, n, "{what}: the handler missed events");
    println!("ns per event; window {WINDOW}; {n} events per step");
    for round in 1..=rounds {
        // 1. The event made (name checked, id and time stamped, seq given),
        //    kept in a ring and handed to the handler by a direct call.
        let mut ring: VecDeque<SharedEvent> = VecDeque::with_capacity(WINDOW);
        let mut seq = 0;
        let before = seen.load(Ordering::Relaxed);
        let made = per_event(n, || {
            seq += 1;
            let e = NewEvent::new(NAME, data.clone()).expect("a valid name");
            let e = Arc::new(e.commit(seq));
            handler(&e);
            if ring.len() == WINDOW {
                ring.pop_front();
            }
            ring.push_back(e);
        });
        check(seen.load(Ordering::Relaxed) - before, "made");
        // 2. Appended to the memory log instead, then handed over.
        let memory = log();
        let before = seen.load(Ordering::Relaxed);
        let logged = per_event(n, || {
            let e = NewEvent::new(NAME, data.clone()).expect("a valid name");
            let mut append = memory.append_one(e, None);
            let committed = append.try_take().expect("a memory log answers at once");
            handler(&committed.expect("appended").event);
        });
        check(seen.load(Ordering::Relaxed) - before, "logged");
        // 3.-5. Through the bus.
        let through_bus = |history: bool, with_handler: bool| {
            let (bus, _sub, count) = bus(history, with_handler);
            let ns = per_event(n, || {
                black_box(bus.emit(NAME, data.clone()).expect("emitted"));
            });
            if with_handler {
                check(count.load(Ordering::Relaxed), "bus");
            }
            ns
        };
        let bus_bare = through_bus(false, true);
        let bus_history = through_bus(true, true);
        let bus_no_handler = through_bus(false, false);
        println!(
            "round {round}: made {made:.0}  +log {logged:.0}  bus {bus_bare:.0}  bus+history {bus_history:.0}  bus, no handler {bus_no_handler:.0}"
        );
    }
}
