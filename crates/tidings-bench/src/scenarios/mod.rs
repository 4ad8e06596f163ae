//! The scenarios. Each has an `Args` (its command-line options, with
//! defaults that finish within a few minutes on a 2-core machine) and a
//! `run` returning the [`Report`](crate::Report) printed as the last line;
//! those with a peer take the number of runs per side (`--runs`).

pub mod churn;
pub mod durable;
pub mod fanout;
pub mod inproc;
pub mod latency;
pub mod memory;
pub mod patterns;
pub mod publish;
pub mod replay;
pub mod soak;

use std::time::{Duration, Instant};

/// A multi-threaded tokio runtime with two workers (the machine's cores):
/// the clients' runtime. An in-process server gets its own
/// ([`crate::clients::LocalServer`]).
pub fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?)
}

/// Calls `step(i)` for i = 0, 1, 2... until `budget` has passed (the clock
/// is read every 256 calls); returns (calls, elapsed seconds).
pub fn run_for(budget: Duration, mut step: impl FnMut(u64)) -> (u64, f64) {
    let start = Instant::now();
    let mut i = 0u64;
    loop {
        for _ in 0..256 {
            step(i);
            i += 1;
        }
        let el = start.elapsed();
        if el >= budget {
            return (i, el.as_secs_f64());
        }
    }
}

/// Nanoseconds since a process-wide origin (a monotonic clock shared by
/// the publishers and the subscribers of the latency scenarios).
pub fn mono_ns() -> u64 {
    static ORIGIN: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();
    ORIGIN.get_or_init(Instant::now).elapsed().as_nanos() as u64
}
