//! `churn`: does one client's subscribe/unsubscribe churn slow delivery
//! for everyone else?
//!
//! The release `tidings` binary runs as a separate process (`memory:`
//! store, retention `--retain`). `--subscribers` (20) steady WebSocket
//! clients subscribe to `churn.steady.>`; one publisher POSTs a JSON array
//! of `--batch` (50) events named `churn.steady.tick` every
//! `batch / rate` s (`--rate` 10,000/s), on absolute deadlines, each
//! stamped with its send time (`data.t`, a monotonic clock shared with the
//! subscribers, which are in this process). A phase publishes for
//! `--warmup-secs` (not counted) plus `--phase-secs`, then waits until the
//! subscribers have everything (or 5 s without progress).
//!
//! A phase **with churn** also runs `--churners` WebSocket connections
//! (a list: each value is measured separately, default `1,50`) that send
//! `{"op":"subscribe","pattern":P}` and `{"op":"unsubscribe","pattern":P}`
//! alternately, each paced at `--commands-per-sec` (18, under the server's
//! default limit of 20 per connection; 0 = as fast as the server answers)
//! with at most `--in-flight` (32) commands outstanding. `P` is `--churn-pattern` (default
//! `churn.*.tick`, which matches the published name, so every subscribe
//! and unsubscribe changes the match list of the hot name). Replies that
//! are errors (for example a rate limit) are counted by code.
//!
//! Per phase: delivered/s = deliveries of counted events to the steady
//! subscribers ÷ (last such delivery − first counted send); latency p50 /
//! p99 over those deliveries. Each run is a pair of phases without and
//! with churn, the order alternating from run to run (`--runs`, 3); the
//! ratios (with ÷ without) are reported as median, min and max.
//! `tidings_per_s` = median delivered/s with the most churners,
//! `peer_per_s` = median without churn, so `ratio` ≈ the throughput kept.
//! Goal: throughput with churn ≥ 0.9× and p99 ≤ 2× without, and no loss:
//! a counted event some steady subscriber did not get (sent × subscribers
//! − deliveries) is lost, and loss at any churner count, or the phase
//! without churn measuring 0, blocks the goal ([`crate::repeat::verdict`];
//! a phase with no delivery at all fails the scenario).

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{ensure, Context, Result};
use futures_util::{SinkExt, StreamExt};
use serde_json::json;
use tokio::sync::Semaphore;
use tokio_tungstenite::tungstenite::Message;

use super::mono_ns;
use crate::clients::{lag_notice, q, ws_subscribe, SeqTracker};
use crate::process::{self, ServerProcess};
use crate::progress;
use crate::repeat::{verdict, Series};
use crate::stats::{json_u64, median, percentiles};
use crate::Report;

/// Options of `churn`.
#[derive(Debug, Clone, clap::Args)]
pub struct Args {
    /// Steady WebSocket subscribers.
    #[arg(long, default_value_t = 20)]
    pub subscribers: usize,
    /// Events per second published.
    #[arg(long, default_value_t = 10_000)]
    pub rate: u64,
    /// Events per POST.
    #[arg(long, default_value_t = 50)]
    pub batch: usize,
    /// Seconds measured per phase.
    #[arg(long, default_value_t = 5.0)]
    pub phase_secs: f64,
    /// Seconds published first in each phase and not counted.
    #[arg(long, default_value_t = 1.0)]
    pub warmup_secs: f64,
    /// Pairs of phases (without / with churn), alternating order.
    #[arg(long, default_value_t = 3)]
    pub runs: usize,
    /// Churning connections, comma-separated; each value is measured.
    #[arg(long, value_delimiter = ',', default_value = "1,50")]
    pub churners: Vec<usize>,
    /// Commands each churner keeps outstanding.
    #[arg(long, default_value_t = 32)]
    pub in_flight: usize,
    /// Commands each churner sends per second, paced (0 = as fast as
    /// replies allow). The default stays under the server's default limit
    /// of 20 commands/s per connection, so the phase measures churn, not
    /// the limit's refusals.
    #[arg(long, default_value_t = 18.0)]
    pub commands_per_sec: f64,
    /// The pattern churned.
    #[arg(long, default_value = "churn.*.tick")]
    pub churn_pattern: String,
    /// Events the server keeps.
    #[arg(long, default_value_t = 300_000)]
    pub retain: u64,
    /// The `tidings` binary (default: `tidings` next to this executable).
    #[arg(long)]
    pub tidings_bin: Option<PathBuf>,
}

#[derive(Default)]
struct Rec {
    lat: Vec<u64>,
    last_rx: u64,
    /// Every seq received (all published events match the steady
    /// pattern, so a subscriber's seqs are dense from 1): gaps, lag
    /// notices and repeats.
    tracker: SeqTracker,
}

/// The window of send stamps counted, shared by all subscribers.
struct Window {
    from: AtomicU64,
    to: AtomicU64,
}

#[derive(Debug, Clone, Copy)]
struct Phase {
    delivered_per_s: f64,
    p50_us: f64,
    p99_us: f64,
    published_per_s: f64,
    deliveries: u64,
    /// Counted events some steady subscriber did not get: sent ×
    /// subscribers − deliveries, or the seqs they skipped or were told
    /// they missed, if more.
    lost: u64,
    /// Events some steady subscriber got twice.
    duplicates: u64,
    churn_ops_per_s: f64,
    churn_errors: u64,
    churn_closed: u64,
}

struct Churner {
    ops: Arc<AtomicU64>,
    errors: Arc<AtomicU64>,
    codes: Arc<Mutex<std::collections::BTreeMap<String, u64>>>,
    /// Set when the connection ended; read before the churner is told to
    /// stop, so it counts closes by the server (or failures) only.
    closed: Arc<AtomicBool>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

async fn start_churner(
    ws_base: &str,
    i: usize,
    args: &Args,
    stop: Arc<AtomicBool>,
) -> Result<Churner> {
    let url = format!("{ws_base}/ws?pattern={}", q(&format!("churn.none.{i}")));
    let ws = ws_subscribe(&url).await?;
    let (mut tx, mut rx) = ws.split();
    let permits = Arc::new(Semaphore::new(args.in_flight.max(1)));
    let ops = Arc::new(AtomicU64::new(0));
    let errors = Arc::new(AtomicU64::new(0));
    let closed = Arc::new(AtomicBool::new(false));
    let codes = Arc::new(Mutex::new(std::collections::BTreeMap::new()));
    let pattern = args.churn_pattern.clone();
    let (p2, s2) = (permits.clone(), stop.clone());
    let pace = (args.commands_per_sec > 0.0).then(|| {
        let mut t = tokio::time::interval(Duration::from_secs_f64(1.0 / args.commands_per_sec));
        t.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        t
    });
    let writer = tokio::spawn(async move {
        let sub = json!({"op": "subscribe", "pattern": pattern}).to_string();
        let unsub = json!({"op": "unsubscribe", "pattern": pattern}).to_string();
        let mut k = 0u64;
        let mut pace = pace;
        while !s2.load(Relaxed) {
            if let Some(t) = pace.as_mut() {
                t.tick().await;
            }
            let Ok(permit) = tokio::time::timeout(Duration::from_millis(200), p2.acquire()).await
            else {
                continue;
            };
            let Ok(permit) = permit else { break };
            permit.forget();
            let text = if k.is_multiple_of(2) { &sub } else { &unsub };
            k += 1;
            if tx.send(Message::Text(text.clone().into())).await.is_err() {
                break;
            }
        }
        let _ = tx.close().await;
    });
    let (o2, e2, c2, cl2) = (ops.clone(), errors.clone(), codes.clone(), closed.clone());
    let reader = tokio::spawn(async move {
        while let Some(msg) = rx.next().await {
            match msg {
                Ok(Message::Text(t)) => {
                    let t = t.as_str();
                    // Replies carry a "type" (keys are sorted, so not first).
                    if t.contains("\"type\":\"") {
                        if t.contains("\"type\":\"error\"") {
                            e2.fetch_add(1, Relaxed);
                            let code = serde_json::from_str::<serde_json::Value>(t)
                                .ok()
                                .and_then(|v| v["code"].as_str().map(str::to_owned))
                                .unwrap_or_default();
                            *c2.lock()
                                .unwrap_or_else(|e| e.into_inner())
                                .entry(code)
                                .or_default() += 1;
                            permits.add_permits(1);
                        } else if t.contains("\"type\":\"subscribed\"")
                            || t.contains("\"type\":\"unsubscribed\"")
                        {
                            o2.fetch_add(1, Relaxed);
                            permits.add_permits(1);
                        }
                    }
                }
                Ok(Message::Close(_)) | Err(_) => break,
                Ok(_) => {}
            }
        }
        cl2.store(true, Relaxed);
    });
    Ok(Churner {
        ops,
        errors,
        codes,
        closed,
        tasks: vec![writer, reader],
    })
}

async fn phase(
    args: &Args,
    http: &reqwest::Client,
    server: &ServerProcess,
    subs: &[Arc<Mutex<Rec>>],
    window: &Window,
    churners: usize,
) -> Result<(Phase, std::collections::BTreeMap<String, u64>)> {
    let (mut gaps_before, mut dups_before) = (0, 0);
    for s in subs {
        let mut r = s.lock().unwrap_or_else(|e| e.into_inner());
        r.lat.clear();
        r.last_rx = 0;
        gaps_before += r.tracker.gaps + r.tracker.lagged;
        dups_before += r.tracker.duplicates;
    }
    let stop = Arc::new(AtomicBool::new(false));
    let mut ch = Vec::new();
    for i in 0..churners {
        ch.push(start_churner(&server.ws(), i, args, stop.clone()).await?);
    }
    if churners > 0 {
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    let ops_before: u64 = ch.iter().map(|c| c.ops.load(Relaxed)).sum();
    let period = Duration::from_secs_f64(args.batch as f64 / args.rate as f64);
    let total = args.warmup_secs + args.phase_secs;
    let batches = (total / period.as_secs_f64()).ceil() as u64;
    let counted_from = (args.warmup_secs / period.as_secs_f64()).ceil() as u64;
    window.from.store(u64::MAX, Relaxed);
    window.to.store(u64::MAX, Relaxed);
    let url = format!("{}/events", server.http());
    let start = tokio::time::Instant::now();
    let mut last_seq = 0u64;
    let mut from_t = 0u64;
    let mut sent = 0u64;
    let mut counted_start = start;
    for k in 0..batches {
        let due = start + period * k as u32;
        if tokio::time::Instant::now() < due {
            tokio::time::sleep_until(due).await;
        }
        let t = mono_ns();
        if k == counted_from {
            from_t = t;
            counted_start = tokio::time::Instant::now();
            window.from.store(t, Relaxed);
        }
        let body: String = {
            let one = format!("{{\"name\":\"churn.steady.tick\",\"data\":{{\"t\":{t}}}}}");
            let mut b = String::from("[");
            for i in 0..args.batch {
                if i > 0 {
                    b.push(',');
                }
                b.push_str(&one);
            }
            b.push(']');
            b
        };
        let r = http
            .post(&url)
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .context("POST /events")?;
        ensure!(
            r.status().is_success(),
            "POST /events answered {}",
            r.status()
        );
        // The committed events, each with its seq (the wait for the
        // subscribers below needs the last one).
        let committed: Vec<serde_json::Value> = r
            .json()
            .await
            .context("POST /events answered no event list")?;
        let seqs = committed.iter().filter_map(|e| e["seq"].as_u64());
        last_seq = seqs.max().context("POST /events answered no seq")?;
        if k >= counted_from {
            sent += args.batch as u64;
        }
    }
    let publish_secs = counted_start.elapsed().as_secs_f64();
    window.to.store(mono_ns(), Relaxed);
    let ops_after: u64 = ch.iter().map(|c| c.ops.load(Relaxed)).sum();
    // Wait until every subscriber has the last seq (or 5 s of no progress).
    let mut last = (0u64, std::time::Instant::now());
    loop {
        let (mut done, mut got) = (true, 0u64);
        for s in subs {
            let r = s.lock().unwrap_or_else(|e| e.into_inner());
            got += r.lat.len() as u64;
            done &= r.tracker.done(last_seq);
        }
        if done {
            break;
        }
        if got != last.0 {
            last = (got, std::time::Instant::now());
        } else if last.1.elapsed() > Duration::from_secs(5) {
            eprintln!("churn: subscribers stopped short of seq {last_seq}");
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Counted before the churners are told to stop: a churner closes its
    // own connection then, which is not the server closing it.
    let mut codes = std::collections::BTreeMap::new();
    let (mut errors, mut closed) = (0u64, 0u64);
    for c in &ch {
        errors += c.errors.load(Relaxed);
        closed += c.closed.load(Relaxed) as u64;
        for (k, v) in c.codes.lock().unwrap_or_else(|e| e.into_inner()).iter() {
            *codes.entry(k.clone()).or_default() += v;
        }
    }
    stop.store(true, Relaxed);
    for c in ch {
        for t in c.tasks {
            let _ = tokio::time::timeout(Duration::from_secs(2), t).await;
        }
    }
    let mut lat = Vec::new();
    let mut last_rx = 0u64;
    let (mut gaps, mut duplicates) = (0, 0);
    for s in subs {
        let mut r = s.lock().unwrap_or_else(|e| e.into_inner());
        lat.append(&mut r.lat);
        last_rx = last_rx.max(r.last_rx);
        gaps += r.tracker.gaps + r.tracker.lagged;
        duplicates += r.tracker.duplicates;
    }
    let (gaps, duplicates) = (gaps - gaps_before, duplicates - dups_before);
    let deliveries = lat.len() as u64;
    // Counted events not delivered, or seqs skipped or missed in this
    // phase (one in a warm-up counts too), whichever says more.
    let lost = (sent * subs.len() as u64)
        .saturating_sub(deliveries)
        .max(gaps);
    let p = percentiles(&mut lat).context("no deliveries counted")?;
    let secs = (last_rx.saturating_sub(from_t)) as f64 / 1e9;
    Ok((
        Phase {
            delivered_per_s: deliveries as f64 / secs.max(1e-9),
            p50_us: p.p50 as f64 / 1e3,
            p99_us: p.p99 as f64 / 1e3,
            published_per_s: sent as f64 / publish_secs,
            deliveries,
            lost,
            duplicates,
            churn_ops_per_s: (ops_after - ops_before) as f64 / publish_secs,
            churn_errors: errors,
            churn_closed: closed,
        },
        codes,
    ))
}

fn summary(v: &[f64]) -> serde_json::Value {
    let min = v.iter().copied().fold(f64::INFINITY, f64::min);
    let max = v.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    json!({"median": median(v), "min": min, "max": max, "runs": v})
}

async fn churn(args: &Args) -> Result<Report> {
    let bin = match &args.tidings_bin {
        Some(b) => b.clone(),
        None => process::default_tidings_bin()?,
    };
    let config = format!(
        "store = \"memory:\"\nretention_max_count = {}\n",
        args.retain
    );
    let server = ServerProcess::start(&bin, &config, &[])
        .await
        .map_err(|e| e.error.context(e.stderr))?;
    progress::phase(&format!(
        "churn: server pid {} at {}; {} steady subscribers, {} events/s",
        server.pid, server.addr, args.subscribers, args.rate
    ));
    let http = reqwest::Client::new();
    let window = Arc::new(Window {
        from: AtomicU64::new(u64::MAX),
        to: AtomicU64::new(u64::MAX),
    });
    let mut subs = Vec::new();
    let mut sub_tasks = Vec::new();
    for _ in 0..args.subscribers {
        let url = format!("{}/ws?pattern={}", server.ws(), q("churn.steady.>"));
        let mut ws = ws_subscribe(&url).await?;
        let rec = Arc::new(Mutex::new(Rec::default()));
        let (r, w) = (rec.clone(), window.clone());
        sub_tasks.push(tokio::spawn(async move {
            while let Some(Ok(msg)) = ws.next().await {
                if let Message::Text(t) = msg {
                    let t = t.as_str();
                    let now = mono_ns();
                    if let Some((missed, resume_from)) = lag_notice(t) {
                        let mut r = r.lock().unwrap_or_else(|e| e.into_inner());
                        r.tracker.lagged(missed, resume_from);
                    } else if let (Some(seq), Some(sent)) = (json_u64(t, "seq"), json_u64(t, "t")) {
                        let mut r = r.lock().unwrap_or_else(|e| e.into_inner());
                        r.tracker.event(seq);
                        if sent >= w.from.load(Relaxed) && sent <= w.to.load(Relaxed) {
                            r.lat.push(now.saturating_sub(sent));
                            r.last_rx = now;
                        }
                    }
                }
            }
        }));
        subs.push(rec);
    }

    let mut per_count = Vec::new();
    // The two sides with the most churners, for the headline; and why a
    // goal is blocked at any churner count (loss, a failed side).
    let mut headline = None;
    let mut blocked = Vec::new();
    let most = args.churners.iter().copied().max().unwrap_or(0);
    for &c in &args.churners {
        let (mut thr, mut p50, mut p99) = (Vec::new(), Vec::new(), Vec::new());
        let (mut without, mut with) = (Series::new("without churn"), Series::new("with churn"));
        let mut ops = Vec::new();
        let mut raw = Vec::new();
        let mut all_codes = std::collections::BTreeMap::<String, u64>::new();
        for run in 0..args.runs {
            let order = if run.is_multiple_of(2) {
                [0, c]
            } else {
                [c, 0]
            };
            let mut got = [None, None];
            for n in order {
                let (ph, codes) = phase(args, &http, &server, &subs, &window, n).await?;
                eprintln!(
                    "churn: churners={n} run={run} delivered={:.0}/s p50={:.0} us p99={:.0} us published={:.0}/s churn ops={:.0}/s errors={}",
                    ph.delivered_per_s, ph.p50_us, ph.p99_us, ph.published_per_s, ph.churn_ops_per_s, ph.churn_errors
                );
                for (k, v) in codes {
                    *all_codes.entry(k).or_default() += v;
                }
                got[usize::from(n > 0)] = Some(ph);
            }
            let (Some(b), Some(w)) = (got[0], got[1]) else {
                continue;
            };
            thr.push(w.delivered_per_s / b.delivered_per_s);
            p50.push(w.p50_us / b.p50_us);
            p99.push(w.p99_us / b.p99_us);
            for (side, ph) in [(&mut without, &b), (&mut with, &w)] {
                side.values.push(ph.delivered_per_s);
                side.lost += ph.lost;
                if ph.duplicates > 0 {
                    side.failures.push(format!(
                        "run {run}: {} events delivered twice",
                        ph.duplicates
                    ));
                }
            }
            ops.push(w.churn_ops_per_s);
            raw.push(json!({
                "order": if run.is_multiple_of(2) {"without first"} else {"with first"},
                "without": {"delivered_per_s": b.delivered_per_s, "p50_us": b.p50_us, "p99_us": b.p99_us, "published_per_s": b.published_per_s, "deliveries": b.deliveries, "lost": b.lost, "duplicates": b.duplicates},
                "with": {"delivered_per_s": w.delivered_per_s, "p50_us": w.p50_us, "p99_us": w.p99_us, "published_per_s": w.published_per_s, "deliveries": w.deliveries, "lost": w.lost, "duplicates": w.duplicates, "churn_ops_per_s": w.churn_ops_per_s, "churn_errors": w.churn_errors, "churners_closed": w.churn_closed},
            }));
        }
        let (_, why) = verdict(true, &with, Some(&without));
        blocked.extend(why.iter().map(|w| format!("{c} churners: {w}")));
        per_count.push(json!({
            "churners": c,
            "goal_blocked_by": why,
            "throughput_ratio": summary(&thr),
            "p50_ratio": summary(&p50),
            "p99_ratio": summary(&p99),
            "churn_ops_per_s": summary(&ops),
            "churn_error_codes": all_codes,
            "phases": raw,
        }));
        if c == most {
            headline = Some((with, without));
        }
    }
    for t in sub_tasks {
        t.abort();
    }
    server.stop().await;

    let met = per_count.iter().all(|v| {
        v["throughput_ratio"]["median"].as_f64().unwrap_or(0.0) >= 0.9
            && v["p99_ratio"]["median"].as_f64().unwrap_or(f64::INFINITY) <= 2.0
    });
    let (with, without) = headline.context("no churner count measured")?;
    // The headline's own loss and failures are checked by `compared`; the
    // other churner counts' by `blocked`.
    let report = Report::compared(
        "churn",
        "same server and subscribers without churn",
        "with churn: delivered/s >= 0.9x and p99 <= 2x of without (medians), nothing lost",
        met && blocked.is_empty(),
        &with,
        Some(&without),
    );
    // Every count's reasons (the headline's included), not only the
    // headline's.
    let report = if blocked.is_empty() {
        report
    } else {
        report.with("goal_blocked_by", blocked)
    };
    Ok(report
        .with(
            "per_s_means",
            "deliveries/s to the steady subscribers (most churners)",
        )
        .with("subscribers", args.subscribers)
        .with("rate", args.rate)
        .with("batch", args.batch)
        .with("phase_secs", args.phase_secs)
        .with("runs", args.runs)
        .with("in_flight", args.in_flight)
        .with("churn_pattern", args.churn_pattern.clone())
        .with("by_churners", json!(per_count)))
}

/// Runs the scenario.
pub fn run(args: &Args) -> Result<Report> {
    ensure!(
        args.rate > 0 && args.batch > 0 && args.subscribers > 0 && args.runs > 0,
        "--rate, --batch, --subscribers and --runs must be positive"
    );
    ensure!(
        !args.churners.is_empty() && args.churners.iter().all(|&c| c > 0),
        "--churners must list positive counts"
    );
    let rt = super::runtime()?;
    rt.block_on(churn(args))
}
