//! # tidings-bench: Tidings against its peers, in the same run
//!
//! Each scenario measures Tidings and a peer one after the other in one
//! process (the machine is shared, so only ratios measured side by side
//! hold), `--runs` times (default 3) with the sides taking turns at going
//! first ([`repeat`]), and prints, as the **last line on stdout**, one JSON
//! object:
//!
//! ```json
//! {"scenario":"inproc","tidings_per_s":1.0e6,"peer":"tokio::sync::broadcast ...","peer_per_s":9.0e5,"ratio":1.1,"goal":"...","goal_met":true,"tidings_runs":{"median":..,"min":..,"max":..,"runs":[..]},"peer_runs":{..}, ...}
//! ```
//!
//! `tidings_per_s` and `peer_per_s` are the medians of the runs, `ratio`
//! is always the ratio of those medians, higher is better. `goal_met` is
//! false, with `goal_blocked_by` saying why, whenever a side failed a run
//! or lost an event or the peer measured 0 ([`repeat::verdict`]). What "per
//! second" means for latency and memory scenarios is in `BENCHMARKS.md`
//! and in each scenario's module docs.
//!
//! Scenarios: [`scenarios::inproc`], [`scenarios::patterns`],
//! [`scenarios::durable`], [`scenarios::fanout`], [`scenarios::replay`],
//! [`scenarios::latency`], [`scenarios::memory`], [`scenarios::publish`]
//! (single-event POSTs against a server on each store, no peer goal), and
//! two runs of a separate server process without a peer:
//! [`scenarios::soak`] (RSS over time, loss, stalled clients) and
//! [`scenarios::churn`] (delivery with and without subscription churn).
//!
//! The key types: [`Report`], the result line every scenario prints;
//! [`repeat::Alternated`], a scenario's runs per side, taken in turns;
//! [`clients::LocalServer`], a Tidings server on its own runtime and
//! threads inside the harness; [`process`], the release server started as a
//! separate process.

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
