//! # tidings-bench: Tidings against its peers, in the same run
//!
//! Each scenario measures Tidings and a peer one after the other in one
//! process (the machine is shared, so only ratios measured side by side
//! hold) and prints, as the **last line on stdout**, one JSON object:
//!
//! ```json
//! {"scenario":"inproc","tidings_per_s":1.0e6,"peer":"tokio::sync::broadcast","peer_per_s":9.0e5,"ratio":1.1,"goal":"ratio >= 1.0","goal_met":true, ...}
//! ```
//!
//! `ratio` is always `tidings_per_s / peer_per_s`, higher is better. What
//! "per second" means for latency and memory scenarios is in
//! `BENCHMARKS.md` and in each scenario's module docs.
//!
//! Scenarios: [`scenarios::inproc`], [`scenarios::patterns`],
//! [`scenarios::durable`], [`scenarios::fanout`], [`scenarios::replay`],
//! [`scenarios::latency`], [`scenarios::memory`], and two runs of a
//! separate server process without a peer: [`scenarios::soak`] (RSS over
//! time, loss, stalled clients) and [`scenarios::churn`] (delivery with and
//! without subscription churn).

pub mod clients;
pub mod matcher;
pub mod nats;
pub mod process;
pub mod progress;
pub mod repeat;
pub mod report;
pub mod scenarios;
pub mod stats;
pub mod workload;

pub use report::Report;
