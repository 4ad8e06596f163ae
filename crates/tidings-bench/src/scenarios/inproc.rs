//! `inproc`: `Bus::emit` to one sync handler (history on) against
//! `tokio::sync::broadcast` send + recv with one receiver, same thread.
//!
//! Fairness as in `tidings-core/benches/inproc.rs`: both sides build an
//! envelope with a fresh UUID v7 and timestamp around a clone of the same
//! JSON payload, and both keep a window of recent events — Tidings its
//! history ring and memory log, broadcast its ring — measured with a
//! window of 1,024 and of 10,000 (the bus's default). The broadcast peer
//! sends the envelope by value, as seed 003 does (`recv` clones it); the
//! `Arc<Envelope>` form is reported as `peer_arc_*`.
//!
//! Each side runs `--rounds` rounds of `--events` events, alternating which
//! goes first, after a warm-up that fills the window; the median round
//! counts. Headline: window 10,000. Goal: ratio >= 1.0 at both windows.

use std::hint::black_box;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use serde_json::json;
use tidings_core::{Bus, LogOptions, MemoryLog, Retention};
use uuid::Uuid;

use crate::progress;
use crate::stats::median;
use crate::workload::payload;
use crate::Report;

/// Options of `inproc`.
#[derive(Debug, Clone, clap::Args)]
pub struct Args {
    /// Events per timed round per side.
    #[arg(long, default_value_t = 300_000)]
    pub events: u64,
    /// Timed rounds per side (alternating); the median counts.
    #[arg(long, default_value_t = 5)]
    pub rounds: usize,
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
}

impl<T: Clone> Channel<T> {
    fn new(capacity: usize) -> Self {
        let (tx, rx) = tokio::sync::broadcast::channel(capacity);
        Channel { tx, rx, seq: 0 }
    }

    /// Round trips per second for `n` values made by `make(seq)`.
    fn rate(&mut self, n: u64, make: impl Fn(u64) -> T) -> anyhow::Result<f64> {
        let mut err = None;
        let r = rate(n, || {
            for _ in 0..n {
                self.seq += 1;
                if self.tx.send(make(self.seq)).is_err() {
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

struct Window {
    window: usize,
    tidings: f64,
    peer: f64,
    peer_arc: f64,
}

fn measure(window: usize, args: &Args) -> anyhow::Result<Window> {
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
        c2.fetch_add(e.seq & 1, Ordering::Relaxed);
    })?;
    let tidings = |n: u64| -> anyhow::Result<f64> {
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
        match err {
            Some(e) => Err(e.into()),
            None => Ok(r),
        }
    };
    let mut plain = Channel::<Envelope>::new(window);
    let mut shared = Channel::<Arc<Envelope>>::new(window);
    let mut peer = |n: u64| plain.rate(n, |seq| envelope(seq, &data));
    let mut peer_arc = |n: u64| shared.rate(n, |seq| Arc::new(envelope(seq, &data)));

    // Warm-up: fill each window twice so eviction runs in steady state.
    let warm = (window as u64 * 2).max(20_000);
    tidings(warm)?;
    peer(warm)?;
    peer_arc(warm)?;

    let pb = progress::bar(args.rounds as u64 * 3, &format!("inproc window {window}"));
    let (mut t, mut p, mut a) = (Vec::new(), Vec::new(), Vec::new());
    for round in 0..args.rounds {
        if round % 2 == 0 {
            t.push(tidings(args.events)?);
            p.push(peer(args.events)?);
            a.push(peer_arc(args.events)?);
        } else {
            a.push(peer_arc(args.events)?);
            p.push(peer(args.events)?);
            t.push(tidings(args.events)?);
        }
        pb.inc(3);
    }
    pb.finish_and_clear();
    black_box(count.load(Ordering::Relaxed));
    Ok(Window {
        window,
        tidings: median(&t),
        peer: median(&p),
        peer_arc: median(&a),
    })
}

/// Runs the scenario.
pub fn run(args: &Args) -> anyhow::Result<Report> {
    progress::phase(&format!(
        "inproc: {} rounds x {} events per side, windows 1024 and 10000",
        args.rounds, args.events
    ));
    let small = measure(1024, args)?;
    let big = measure(10_000, args)?;
    let ratio = |w: &Window| w.tidings / w.peer;
    for w in [&small, &big] {
        eprintln!(
            "window {:>6}: tidings {:>12.0}/s  broadcast {:>12.0}/s  broadcast(Arc) {:>12.0}/s  ratio {:.3}",
            w.window,
            w.tidings,
            w.peer,
            w.peer_arc,
            ratio(w)
        );
    }
    let met = ratio(&small) >= 1.0 && ratio(&big) >= 1.0;
    let mut report = Report::new(
        "inproc",
        big.tidings,
        "tokio::sync::broadcast send+recv (envelope by value)",
        Some(big.peer),
    )
    .goal("ratio >= 1.0 at windows 1024 and 10000", met)
    .with("window", big.window)
    .with("events_per_round", args.events)
    .with("rounds", args.rounds);
    for w in [&small, &big] {
        report = report.with(
            &format!("window_{}", w.window),
            json!({
                "tidings_per_s": w.tidings,
                "peer_per_s": w.peer,
                "ratio": ratio(w),
                "peer_arc_per_s": w.peer_arc,
                "ratio_vs_arc": w.tidings / w.peer_arc,
            }),
        );
    }
    Ok(report)
}
