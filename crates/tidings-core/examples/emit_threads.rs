//! Several threads emitting into one bus: emits per second over all
//! threads, with a memory log, history on and one sync handler (the
//! `emit_threads` criterion group, as a plain program so that two commits
//! can be compared run by run).
//!
//! ```text
//! cargo run --release -p tidings-core --example emit_threads -- [THREADS] [EMITS_PER_THREAD]
//! ```
//!
//! Prints one number: emits per second (default 4 threads, 200,000 each).

use std::hint::black_box;
use std::time::Instant;

use serde_json::json;
use tidings_core::Bus;

fn main() {
    let mut args = std::env::args().skip(1);
    let mut arg = |default: u64| {
        args.next()
            .map(|a| a.parse().expect("arguments are counts"))
            .unwrap_or(default)
    };
    let threads = arg(4);
    let per_thread = arg(200_000);
    let data = json!({"username": "Gribnak", "from_room": "tavern", "to_room": "street"});
    let bus = Bus::new();
    let _handler = bus.on("player:move", |e| {
        black_box(e.seq);
    });
    // Warm-up: fill the history ring and the log's window.
    for _ in 0..20_000 {
        bus.emit("player:move", data.clone()).expect("emit");
    }
    let started = Instant::now();
    std::thread::scope(|s| {
        for _ in 0..threads {
            s.spawn(|| {
                for _ in 0..per_thread {
                    black_box(bus.emit("player:move", data.clone()).expect("emit"));
                }
            });
        }
    });
    let rate = (threads * per_thread) as f64 / started.elapsed().as_secs_f64();
    println!("{rate:.0}");
}
