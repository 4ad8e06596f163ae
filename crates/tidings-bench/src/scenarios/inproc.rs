//! `inproc`: `Bus::emit` to one sync handler (history on) against
//! `tokio::sync::broadcast` send + recv with one receiver, same thread.
//!
//! # What is compared
//!
//! * Tidings: `Bus::emit("player:move", payload)` on a memory log, one sync
//!   handler counting calls, history ring on. The bus builds an
//!   `Arc<Event>` with a UUID v7 and a time from **one** clock read, and
//!   keeps the newest `window` events (history ring and memory log), so
//!   each emit frees the event that leaves the window.
//! * Headline peer: broadcast of `Arc<Envelope>` whose UUID v7 and time
//!   come from **one** clock read and a thread-local v7 context (as the
//!   bus does), `send` + `try_recv`.
//!   Note what it does *not* do: tokio's broadcast drops a value as soon as
//!   every receiver has read it (`RecvGuard`'s drop), so with one receiver
//!   that keeps up it holds no window of past events, and each envelope is
//!   freed while still in cache, one event after it was made.
//! * Side figure (`arc_history_*`): the same `Arc` broadcast plus a ring
//!   keeping the newest `window` envelopes, as a hand-rolled bus with
//!   history keeps them: the like-for-like peer for a bus that can answer
//!   "what happened recently".
//! * Side figure (`by_value_*`): broadcast of the envelope by value with two
//!   clock reads (`Uuid::now_v7` and `Utc::now`), as seed 003 sends it
//!   (`recv` clones it).
//! * Side figure (`history_floor_*`), not a peer: the `Arc` envelope made
//!   as above, kept in a ring of the newest `window` (the oldest leaves
//!   it), and handed to one handler by a direct call (counted). No
//!   channel, no log, no lookup, no ordering, no name check. Its ratio to
//!   the headline peer bounds every bus that allocates each event as the
//!   peer allocates its envelope and frees it when it leaves a window of
//!   that size: if the floor is clearly below 1.0, so is every such bus
//!   on that machine.
//!
//! All sides run on the calling thread, no runtime, one subscriber (the
//! handler; the receiver), at windows of 1,024 and of 10,000 (the bus's
//! default, the headline). Every event must reach the subscriber: a
//! handler call missing (or a failed `try_recv`) is loss and blocks the
//! goal.
//!
//! Each run measures `--events` events per side after a warm-up that
//! filled the window; the sides take turns going first (see
//! [`crate::repeat`]). Goal: ratio of medians against the headline peer
//! >= 1.0 at both windows.

use std::collections::VecDeque;
use std::hint::black_box;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use chrono::{DateTime, Utc};
use serde_json::json;
use tidings_core::{Bus, LogOptions, MemoryLog, Retention};
use uuid::{ContextV7, Timestamp, Uuid};

use crate::progress;
use crate::repeat::{alternate, ratio, unsound, verdict, Alternated, Run};
use crate::workload::payload;
use crate::Report;

/// Options of `inproc`.
#[derive(Debug, Clone, clap::Args)]
pub struct Args {
    /// Events per timed round per side.
    #[arg(long, default_value_t = 300_000)]
    pub events: u64,
}

/// The broadcast peer's envelope (what seed 003 sends).
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

/// An envelope whose id and time come from one clock read, the bus's own
/// way: `SystemTime::now`, the UUID v7 built from it with a thread-local
/// v7 context (no lock, as the bus's).
fn envelope_one_read(seq: u64, data: &serde_json::Value) -> Envelope {
    thread_local! {
        static CONTEXT: ContextV7 = const { ContextV7::new() };
    }
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    let (secs, nanos) = (now.as_secs(), now.subsec_nanos());
    let time = DateTime::from_timestamp(secs as i64, nanos).unwrap_or_default();
    let id = Uuid::new_v7(CONTEXT.with(|ctx| Timestamp::from_unix(ctx, secs, nanos)));
    Envelope {
        id,
        time,
        seq,
        name: "player:move".to_owned(),
        data: data.clone(),
    }
}

fn rate(n: u64, f: impl FnOnce()) -> f64 {
    let t = Instant::now();
    f();
    n as f64 / t.elapsed().as_secs_f64()
}

/// A broadcast channel with one receiver, measured as send + recv.
struct Channel<T> {
    tx: tokio::sync::broadcast::Sender<T>,
    rx: tokio::sync::broadcast::Receiver<T>,
    /// The seq of the last value sent.
    seq: u64,
    /// With history: the newest values sent, at most `capacity` of them.
    history: Option<VecDeque<T>>,
    capacity: usize,
}

impl<T: Clone> Channel<T> {
    fn new(capacity: usize) -> Self {
        let (tx, rx) = tokio::sync::broadcast::channel(capacity);
        Channel {
            tx,
            rx,
            seq: 0,
            history: None,
            capacity,
        }
    }

    /// A channel that also keeps its newest `capacity` values.
    fn with_history(capacity: usize) -> Self {
        Channel {
            history: Some(VecDeque::with_capacity(capacity)),
            ..Channel::new(capacity)
        }
    }

    /// Round trips per second for `n` values made by `make(seq)`.
    fn rate(&mut self, n: u64, make: impl Fn(u64) -> T) -> anyhow::Result<f64> {
        let mut err = None;
        let r = rate(n, || {
            for _ in 0..n {
                self.seq += 1;
                let value = make(self.seq);
                if let Some(ring) = &mut self.history {
                    if ring.len() == self.capacity {
                        ring.pop_front();
                    }
                    ring.push_back(value.clone());
                }
                if self.tx.send(value).is_err() {
                    err = Some("broadcast send failed");
                    break;
                }
                match self.rx.try_recv() {
                    Ok(e) => {
                        black_box(e);
                    }
                    Err(_) => {
                        err = Some("broadcast recv failed");
                        break;
                    }
                }
            }
        });
        match err {
            Some(e) => anyhow::bail!(e),
            None => Ok(r),
        }
    }
}

/// The history floor: a ring of the newest `capacity` values, each handed
/// to a handler by a direct call.
struct Floor<T> {
    /// The newest values; at most `capacity`.
    ring: VecDeque<T>,
    capacity: usize,
    /// The seq of the last value made.
    seq: u64,
}

impl<T> Floor<T> {
    fn new(capacity: usize) -> Self {
        Floor {
            ring: VecDeque::with_capacity(capacity),
            capacity,
            seq: 0,
        }
    }

    /// Events per second for `n` values made by `make(seq)`, each handed
    /// to `handler`.
    fn rate(&mut self, n: u64, make: impl Fn(u64) -> T, handler: &dyn Fn(&T)) -> f64 {
        rate(n, || {
            for _ in 0..n {
                self.seq += 1;
                let value = make(self.seq);
                handler(&value);
                if self.ring.len() == self.capacity {
                    self.ring.pop_front();
                }
                self.ring.push_back(value);
            }
        })
    }
}

struct Window {
    window: usize,
    sides: Alternated,
}

fn measure(window: usize, events: u64, runs: usize) -> anyhow::Result<Window> {
    let data = payload();
    let log = MemoryLog::with_options(LogOptions {
        idempotency_window: Duration::from_secs(120),
        ..LogOptions::retention(Retention {
            max_count: Some(window as u64),
            max_age: None,
        })
    })
    .expect("valid options");
    let bus = Bus::builder().log(log).history_capacity(window).build()?;
    let count = Arc::new(AtomicU64::new(0));
    let c2 = count.clone();
    let _h = bus.on("player:move", move |e| {
        black_box(&e.seq);
        c2.fetch_add(1, Ordering::Relaxed);
    })?;
    let tidings = |n: u64| -> anyhow::Result<Run> {
        let before = count.load(Ordering::Relaxed);
        let mut err = None;
        let r = rate(n, || {
            for _ in 0..n {
                match bus.emit("player:move", data.clone()) {
                    Ok(e) => {
                        black_box(e);
                    }
                    Err(e) => {
                        err = Some(e);
                        break;
                    }
                }
            }
        });
        if let Some(e) = err {
            return Err(e.into());
        }
        let handled = count.load(Ordering::Relaxed) - before;
        Ok(Run::of(r).lost(n.abs_diff(handled)))
    };
    let mut plain = Channel::<Envelope>::new(window);
    let mut shared = Channel::<Arc<Envelope>>::new(window);
    let mut kept = Channel::<Arc<Envelope>>::with_history(window);
    let mut by_value = |n: u64| plain.rate(n, |seq| envelope(seq, &data)).map(Run::of);
    let mut arc = |n: u64| {
        shared
            .rate(n, |seq| Arc::new(envelope_one_read(seq, &data)))
            .map(Run::of)
    };
    let mut arc_history = |n: u64| {
        kept.rate(n, |seq| Arc::new(envelope_one_read(seq, &data)))
            .map(Run::of)
    };
    let mut floor = Floor::<Arc<Envelope>>::new(window);
    let floor_count = AtomicU64::new(0);
    let count_floor = |e: &Arc<Envelope>| {
        black_box(&e.seq);
        floor_count.fetch_add(1, Ordering::Relaxed);
    };
    let mut history_floor = |n: u64| -> anyhow::Result<Run> {
        let before = floor_count.load(Ordering::Relaxed);
        let r = floor.rate(
            n,
            |seq| Arc::new(envelope_one_read(seq, &data)),
            &count_floor,
        );
        let handled = floor_count.load(Ordering::Relaxed) - before;
        Ok(Run::of(r).lost(n.abs_diff(handled)))
    };

    // Warm-up: fill each window twice so eviction runs in steady state.
    let warm = (window as u64 * 2).max(20_000);
    tidings(warm)?;
    by_value(warm)?;
    arc(warm)?;
    arc_history(warm)?;
    history_floor(warm)?;

    let pb = progress::bar(runs.max(1) as u64 * 5, &format!("inproc window {window}"));
    let sides = alternate(
        runs,
        &mut [
            ("tidings", &mut |_| tidings(events)),
            ("arc", &mut |_| arc(events)),
            ("by_value", &mut |_| by_value(events)),
            ("arc_history", &mut |_| arc_history(events)),
            ("history_floor", &mut |_| history_floor(events)),
        ],
        || pb.inc(1),
    );
    pb.finish_and_clear();
    Ok(Window { window, sides })
}

const PEER: &str = "tokio::sync::broadcast send+recv of Arc<Envelope>, one clock read";
const ARC_HISTORY: &str =
    "tokio::sync::broadcast send+recv of Arc<Envelope>, one clock read, plus a ring of the newest `window` envelopes";
const BY_VALUE: &str = "tokio::sync::broadcast send+recv of the envelope by value, two clock reads";
const HISTORY_FLOOR: &str =
    "not a peer: Arc<Envelope> (one clock read) kept in a ring of the newest `window` and handed to one handler by a direct call: a bound for any bus that allocates its events so and keeps that window";

/// Runs the scenario, `runs` times per side and window.
pub fn run(args: &Args, runs: usize) -> anyhow::Result<Report> {
    progress::phase(&format!(
        "inproc: {runs} runs x {} events per side, windows 1024 and 10000",
        args.events
    ));
    let small = measure(1024, args.events, runs)?;
    let big = measure(10_000, args.events, runs)?;
    let med = |w: &Window, i: usize| w.sides.series[i].median();
    for w in [&small, &big] {
        eprintln!(
            "window {:>6}: tidings {:>12.0}/s  broadcast(Arc, 1 clock) {:>12.0}/s  + history ring {:>12.0}/s  broadcast(by value, 2 clocks) {:>12.0}/s  ratio {:.3} (vs + history ring {:.3}); history floor {:>12.0}/s, floor/peer {:.3}",
            w.window,
            med(w, 0).unwrap_or(f64::NAN),
            med(w, 1).unwrap_or(f64::NAN),
            med(w, 3).unwrap_or(f64::NAN),
            med(w, 2).unwrap_or(f64::NAN),
            ratio(med(w, 0), med(w, 1)).unwrap_or(f64::NAN),
            ratio(med(w, 0), med(w, 3)).unwrap_or(f64::NAN),
            med(w, 4).unwrap_or(f64::NAN),
            ratio(med(w, 4), med(w, 1)).unwrap_or(f64::NAN),
        );
    }
    let at_least_1 = |w: &Window| ratio(med(w, 0), med(w, 1)).is_some_and(|r| r >= 1.0);
    // The side figures (by value, + history ring, the floor) are published
    // too: a failed or lossy run of any of them blocks the goal.
    let sides_why =
        |w: &Window| -> Vec<String> { w.sides.series[2..].iter().flat_map(unsound).collect() };
    let (small_ok, small_why) = verdict(
        at_least_1(&small),
        &small.sides.series[0],
        Some(&small.sides.series[1]),
    );
    let report = Report::compared(
        "inproc",
        PEER,
        "ratio (vs Arc broadcast, one clock read) >= 1.0 at windows 1024 and 10000",
        at_least_1(&big) && small_ok,
        &big.sides.series[0],
        Some(&big.sides.series[1]),
    )
    .orders(&big.sides)
    .with("window", big.window)
    .with("events_per_run", args.events)
    .with("by_value_peer", BY_VALUE)
    .with("by_value_runs", big.sides.series[2].to_json())
    .with("ratio_vs_by_value", ratio(med(&big, 0), med(&big, 2)))
    .with("arc_history_peer", ARC_HISTORY)
    .with("arc_history_runs", big.sides.series[3].to_json())
    .with("ratio_vs_arc_history", ratio(med(&big, 0), med(&big, 3)))
    .with("history_floor", HISTORY_FLOOR)
    .with("history_floor_runs", big.sides.series[4].to_json())
    .with("history_floor_vs_peer", ratio(med(&big, 4), med(&big, 1)))
    .with("ratio_vs_history_floor", ratio(med(&big, 0), med(&big, 4)))
    .with(
        "window_1024",
        json!({
            "tidings_runs": small.sides.series[0].to_json(),
            "peer_runs": small.sides.series[1].to_json(),
            "ratio": ratio(med(&small, 0), med(&small, 1)),
            "by_value_runs": small.sides.series[2].to_json(),
            "ratio_vs_by_value": ratio(med(&small, 0), med(&small, 2)),
            "arc_history_runs": small.sides.series[3].to_json(),
            "ratio_vs_arc_history": ratio(med(&small, 0), med(&small, 3)),
            "history_floor_runs": small.sides.series[4].to_json(),
            "history_floor_vs_peer": ratio(med(&small, 4), med(&small, 1)),
            "ratio_vs_history_floor": ratio(med(&small, 0), med(&small, 4)),
            "goal_blocked_by": small_why.clone(),
        }),
    )
    .blocked_also("window 1024", small_why)
    .blocked_also("window 10000", sides_why(&big))
    .blocked_also("window 1024", sides_why(&small));
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_history_floor_hands_every_value_over_and_keeps_only_the_window() {
        let mut floor = Floor::<u64>::new(4);
        let seen = std::cell::RefCell::new(Vec::new());
        floor.rate(10, |seq| seq * 10, &|v| seen.borrow_mut().push(*v));
        assert_eq!(*seen.borrow(), (1..=10).map(|s| s * 10).collect::<Vec<_>>());
        assert_eq!(floor.ring, [70, 80, 90, 100]);
    }
}
