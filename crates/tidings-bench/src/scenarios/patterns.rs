//! `patterns`: publish rate with 10,000 wildcard subscriptions of
//! realistic shape against seed 001's linear scan over the same patterns.
//!
//! * Subscriptions: [`workload::patterns`](crate::workload::patterns) (`room.<id>.*`, `player.<id>.>`,
//!   `chat.<id>.message`, `game.<id>.round.*`, `user.<id>.notify.>`,
//!   `match.<id>.score`, `lobby.*.player.<id>`, `trivia.<id>.>`), each a
//!   sync handler bumping a counter.
//! * Events: [`workload::event_names`](crate::workload::event_names),
//!   65,536 names drawn, about 32,000 of them distinct (eight times the
//!   bus's 4,096-name match cache), about half matching one or more
//!   subscriptions. Every timed run's handler calls are checked against
//!   the linear scan's count for the names it emitted (a difference is
//!   loss); the glob scan's semantics differ, so its runs are not.
//! * Tidings: `Bus::emit` (memory log, history on) to those handlers.
//! * Peer (`ratio`): per event, build the same envelope (UUID v7, time,
//!   clone of the payload), split the name once, then test every
//!   pre-split pattern token by token and call each matching handler
//!   ([`matcher::LinearScan`](crate::matcher::LinearScan), same semantics as Tidings; match counts are
//!   checked equal on a sample). Seed 001's literal `fnmatch` glob scan
//!   ([`matcher::GlobScan`](crate::matcher::GlobScan)) is reported as `peer_glob_runs`.
//! * Cost of many subscriptions: Tidings' emit rate with 1 subscription
//!   (`room.1.*`) over the same names, divided by its rate with 10,000
//!   (`cost_10k_vs_1`).
//!
//! * Matching alone (`match_only_*`): `tidings_core::fuzzing::Trie::matches`
//!   (no cache) against the linear token scan, per name, no envelope, no
//!   handler: what the trie itself buys.
//!
//! Every run measures the four (Tidings with 10,000 and with 1
//! subscription, the token scan, the glob scan) for `--duration-secs`
//! each, the order alternating (see [`crate::repeat`]); the single thread
//! is the calling one on every side. Goal: ratio of medians >= 100 and
//! `cost_10k_vs_1` (of medians) <= 2.

use std::hint::black_box;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde_json::json;
use tidings_core::fuzzing::Trie;
use tidings_core::{Bus, Pattern, Subscription};
use uuid::Uuid;

use super::run_for;
use crate::matcher::{GlobScan, LinearScan};
use crate::progress;
use crate::repeat::{alternate, ratio, unsound, Run};
use crate::workload::{event_names, patterns, payload};
use crate::Report;

/// Options of `patterns`.
#[derive(Debug, Clone, clap::Args)]
pub struct Args {
    /// Wildcard subscriptions.
    #[arg(long, default_value_t = 10_000)]
    pub subscriptions: usize,
    /// Seconds per timed measurement.
    #[arg(long, default_value_t = 2.0)]
    pub duration_secs: f64,
    /// Event names generated (cycled through).
    #[arg(long, default_value_t = 65_536)]
    pub names: usize,
}

#[allow(dead_code)]
struct Envelope {
    id: Uuid,
    time: DateTime<Utc>,
    name: String,
    data: serde_json::Value,
}

type PeerHandler = Box<dyn Fn(&Arc<Envelope>) + Send + Sync>;

fn bus_with(
    patterns: &[String],
    counter: &Arc<AtomicU64>,
) -> anyhow::Result<(Bus, Vec<Subscription>)> {
    let bus = Bus::new();
    let subs = patterns
        .iter()
        .map(|p| {
            let c = counter.clone();
            bus.on(p.as_str(), move |_e| {
                c.fetch_add(1, Ordering::Relaxed);
            })
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok((bus, subs))
}

/// How many handler calls emitting the names `0..n` (cycling through
/// them, as the timed loops do) must make: every timed run is checked
/// against it, not only the sample the sides are compared on.
struct Expected {
    /// `prefix[k]`: the matches of the first `k` names.
    prefix: Vec<u64>,
}

impl Expected {
    /// The matches of every name by `scan`, the reference semantics.
    fn new(scan: &LinearScan, names: &[String]) -> Expected {
        let mut prefix = Vec::with_capacity(names.len() + 1);
        prefix.push(0);
        let mut sum = 0u64;
        for name in names {
            sum += scan.for_each_match(name, |_| {}) as u64;
            prefix.push(sum);
        }
        Expected { prefix }
    }

    /// Handler calls for the first `n` emits.
    fn over(&self, n: u64) -> u64 {
        let len = (self.prefix.len() - 1) as u64;
        (n / len) * self.prefix[len as usize] + self.prefix[(n % len) as usize]
    }
}

/// A timed run: the rate, and as loss how far the handler calls were from
/// `expected` (a call missing or one too many).
fn checked(rate: f64, n: u64, matches: u64, expected: Option<&Expected>) -> Run {
    let off = expected.map_or(0, |x| x.over(n).abs_diff(matches));
    Run::of(rate)
        .lost(off)
        .detail(json!({ "matches_per_event": matches as f64 / n.max(1) as f64 }))
}

/// Emits names for `secs`; returns (events/s, emits, handler calls).
fn tidings_rate(
    bus: &Bus,
    names: &[String],
    counter: &AtomicU64,
    secs: f64,
) -> anyhow::Result<(f64, u64, u64)> {
    let data = payload();
    let before = counter.load(Ordering::Relaxed);
    let mut failed = None;
    let (n, el) = run_for(Duration::from_secs_f64(secs), |i| {
        let name = &names[i as usize % names.len()];
        match bus.emit(name.as_str(), data.clone()) {
            Ok(e) => {
                black_box(e);
            }
            Err(e) => failed = Some(e),
        }
    });
    if let Some(e) = failed {
        return Err(e.into());
    }
    let matches = counter.load(Ordering::Relaxed) - before;
    Ok((n as f64 / el, n, matches))
}

/// Builds an envelope, then scans; returns (events/s, events, handler
/// calls).
fn peer_rate(
    scan: impl Fn(&str, &mut dyn FnMut(usize)) -> usize,
    handlers: &[PeerHandler],
    names: &[String],
    counter: &AtomicU64,
    secs: f64,
) -> (f64, u64, u64) {
    let data = payload();
    let before = counter.load(Ordering::Relaxed);
    let (n, el) = run_for(Duration::from_secs_f64(secs), |i| {
        let name = &names[i as usize % names.len()];
        let env = Arc::new(Envelope {
            id: Uuid::now_v7(),
            time: Utc::now(),
            name: name.clone(),
            data: data.clone(),
        });
        scan(&env.name, &mut |k| handlers[k](&env));
    });
    let matches = counter.load(Ordering::Relaxed) - before;
    (n as f64 / el, n, matches)
}

/// Names matched per second by the trie alone and by the linear scan alone.
fn match_only(pats: &[String], names: &[String], secs: f64) -> anyhow::Result<(f64, f64)> {
    let mut trie = Trie::new();
    for (i, p) in pats.iter().enumerate() {
        trie.insert(&Pattern::parse(p)?, i as u64);
    }
    let scan = LinearScan::new(pats);
    let mut out = Vec::with_capacity(16);
    let (n, el) = run_for(Duration::from_secs_f64(secs), |i| {
        out.clear();
        trie.matches(&names[i as usize % names.len()], &mut out);
        black_box(&out);
    });
    let trie_rate = n as f64 / el;
    let (n, el) = run_for(Duration::from_secs_f64(secs), |i| {
        black_box(scan.for_each_match(&names[i as usize % names.len()], |k| {
            black_box(k);
        }));
    });
    Ok((trie_rate, n as f64 / el))
}

/// Runs the scenario, `runs` runs per side.
pub fn run(args: &Args, runs: usize) -> anyhow::Result<Report> {
    let pats = patterns(args.subscriptions);
    let names = event_names(args.subscriptions, args.names, 0x5EED);
    progress::phase(&format!(
        "patterns: {} subscriptions, {} names, {} s per measurement",
        pats.len(),
        names.len(),
        args.duration_secs
    ));

    let counter = Arc::new(AtomicU64::new(0));
    let (bus_many, _subs_many) = bus_with(&pats, &counter)?;
    let one = vec!["room.1.*".to_owned()];
    let (bus_one, _subs_one) = bus_with(&one, &counter)?;

    // The peer's handlers bump the same counter.
    let handlers: Vec<PeerHandler> = (0..pats.len())
        .map(|_| {
            let c = counter.clone();
            Box::new(move |e: &Arc<Envelope>| {
                black_box(e);
                c.fetch_add(1, Ordering::Relaxed);
            }) as PeerHandler
        })
        .collect();
    let token = LinearScan::new(&pats);
    let glob = GlobScan::new(&pats);

    // The two sides must agree on what matches.
    let mut total_matches = 0usize;
    for name in names.iter().take(5_000) {
        let t = bus_many.handlers_for(name)?;
        let p = token.for_each_match(name, |_| {});
        anyhow::ensure!(
            t == p,
            "tidings matches {t} subscriptions for {name}, the linear scan {p}"
        );
        total_matches += t;
    }
    eprintln!(
        "match check: 5000 names agree ({:.2} matches per event)",
        total_matches as f64 / 5000.0
    );

    // What every timed run must call, by the linear scan's semantics (the
    // glob scan's differ, so its runs are not checked).
    let expected_many = Expected::new(&token, &names);
    let expected_one = Expected::new(&LinearScan::new(&one), &names);

    let secs = args.duration_secs;
    let pb = progress::bar(runs.max(1) as u64 * 4, "patterns");
    let tidings_run = |bus: &Bus, expected: &Expected| -> anyhow::Result<Run> {
        let (rate, n, matches) = tidings_rate(bus, &names, &counter, secs)?;
        Ok(checked(rate, n, matches, Some(expected)))
    };
    let sides = alternate(
        runs,
        &mut [
            ("tidings_10k", &mut |_| {
                tidings_run(&bus_many, &expected_many)
            }),
            ("linear_scan", &mut |_| {
                let (rate, n, matches) = peer_rate(
                    |n, f| token.for_each_match(n, f),
                    &handlers,
                    &names,
                    &counter,
                    secs,
                );
                Ok(checked(rate, n, matches, Some(&expected_many)))
            }),
            ("tidings_1", &mut |_| tidings_run(&bus_one, &expected_one)),
            ("glob_scan", &mut |_| {
                let (rate, n, matches) = peer_rate(
                    |n, f| glob.for_each_match(n, f),
                    &handlers,
                    &names,
                    &counter,
                    secs,
                );
                Ok(checked(rate, n, matches, None))
            }),
        ],
        || pb.inc(1),
    );
    pb.finish_and_clear();
    let (trie_only, linear_only) = match_only(&pats, &names, secs / 2.0)?;

    let [many, peer, single, globs] = &sides.series[..] else {
        anyhow::bail!("four series expected");
    };
    let tidings = many.median();
    let cost = ratio(single.median(), tidings);
    let r = ratio(tidings, peer.median());
    eprintln!(
        "tidings 10k subs {:.0}/s, 1 sub {:.0}/s (cost x{:.2}); linear token scan {:.0}/s; \
         fnmatch glob scan {:.0}/s; matching alone: trie {trie_only:.0}/s, linear {linear_only:.0}/s",
        tidings.unwrap_or(f64::NAN),
        single.median().unwrap_or(f64::NAN),
        cost.unwrap_or(f64::NAN),
        peer.median().unwrap_or(f64::NAN),
        globs.median().unwrap_or(f64::NAN),
    );
    Ok(Report::compared(
        "patterns",
        "linear token-wise scan of every pattern per event (seed 001's loop)",
        "ratio >= 100 and cost_10k_vs_1 <= 2",
        r.is_some_and(|r| r >= 100.0) && cost.is_some_and(|c| c <= 2.0),
        many,
        Some(peer),
    )
    .blocked_also("", unsound(single))
    .blocked_also("", unsound(globs))
    .orders(&sides)
    .with("subscriptions", pats.len())
    .with("distinct_names_max", names.len())
    .with("tidings_1_sub_runs", single.to_json())
    .with("cost_10k_vs_1", cost)
    .with("peer_glob_runs", globs.to_json())
    .with("ratio_vs_glob", ratio(tidings, globs.median()))
    .with("match_only_trie_per_s", trie_only)
    .with("match_only_linear_per_s", linear_only)
    .with("match_only_ratio", trie_only / linear_only))
}

#[cfg(test)]
mod tests {
    use super::{Expected, LinearScan};

    #[test]
    fn expected_calls_cycle_through_the_names() {
        let scan = LinearScan::new(&["room.*", "room.1", ">"]);
        let names: Vec<String> = ["room.1", "hall.2", "room.3"].map(String::from).to_vec();
        // room.1: 3 matches, hall.2: 1, room.3: 2.
        let x = Expected::new(&scan, &names);
        assert_eq!(x.over(0), 0);
        assert_eq!(x.over(2), 4);
        assert_eq!(x.over(3), 6);
        assert_eq!(x.over(7), 6 + 6 + 3);
    }
}
