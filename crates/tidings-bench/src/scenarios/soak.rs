//! `soak`: a long run of a real server process under a steady load, to
//! see whether its memory stays flat and whether anyone loses an event.
//!
//! The run and its report are here; the per-subscriber check is in
//! `soak/check.rs`, the subscribers in `soak/subscribers.rs`, the
//! publisher in `soak/publish.rs`, the RSS flatness check in `soak/rss.rs`.
//!
//! * The server: the release `tidings` binary as a **separate process**
//!   (`--tidings-bin`, default `tidings` next to this executable), SQLite
//!   in a temporary directory (`--durability`, default `batch`; retention
//!   `--retain` events), `127.0.0.1:0`. Its send timeout is asked for
//!   with `send_timeout_secs` in its config file and
//!   `TIDINGS_SEND_TIMEOUT_SECS`; a binary that refuses the setting as
//!   unknown is restarted without it (default 30 s), and the report says so.
//! * Publishing: one HTTP client POSTs JSON arrays to `/events`, one
//!   request at a time: every `--tick-ms` (10 ms) it sends every event due
//!   by then at `--rate` (20,000/s: ~200 events per POST, at most
//!   `--max-batch`). Events go round-robin to `--partitions` (50) names
//!   `soak.<p>.tick`; each carries `soak_n`, its index within its
//!   partition. The seqs in each answer are kept per partition. If the
//!   publisher falls more than 2 s behind its schedule, the rate is cut to
//!   90% of what it achieved over the last 5 s (repeatedly if need be);
//!   when it keeps up again (less than 0.2 s behind) it is raised 10%,
//!   up to the target. The report gives the achieved rate and every change
//!   (`rate_changes`: [seconds, new rate]).
//! * `--subscribers` (200): alternately WebSocket (`/ws?pattern=`) and SSE
//!   (`/sse?pattern=&after=`), subscriber i on partition `i % partitions`
//!   with `soak.<p>.*` or `soak.<p>.>`. The last `--stalled` (4) of them,
//!   half WebSocket and half SSE, are raw TCP sockets with a 4 KiB
//!   receive buffer, subscribed to `soak.>`, that send their request and
//!   never read. At the end each stalled socket is read: an end of stream
//!   or a reset within 15 s means the server dropped it.
//! * Churn: `--churn-per-s` (10) extra subscribers a second connect
//!   (alternately WebSocket and SSE, random partition), stay 0.2–2 s, and
//!   disconnect; they check what they received too (order, no gap, the
//!   right first event).
//! * Every `--sample-secs` (5) the server's `VmRSS` (and `RssAnon`,
//!   `RssFile`) is read from `/proc/PID/status` and its connection gauges
//!   from `/metrics`, printed as a series on stderr.
//!
//! Checks: each live subscriber saw every seq of its partition after its
//! start seq exactly once and in order (`soak_n` consecutive, seqs rising,
//! the first being the first after the start, the last being the last
//! published; WebSocket's start is the welcome's `last_seq`, SSE's the
//! `after` it asked for); loss must be 0, and every churn subscriber must
//! have connected and read from its right first event without a gap or a
//! repeat. RSS: every sample after `--warmup-secs` (default 120, at most
//! half the run) is within ±10% of the first sample after it. Every
//! stalled subscriber must have been dropped. The process exits non-zero
//! if any check fails.
//! `tidings_per_s` is the achieved publish rate; there is no peer.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{ensure, Result};
use serde_json::json;

use crate::process::{self, metrics_connections, rss_kib, ServerProcess};
use crate::progress;
use crate::workload::Rng;
use crate::Report;

/// Options of `soak`.
#[derive(Debug, Clone, clap::Args)]
pub struct Args {
    /// Seconds of publishing.
    #[arg(long, default_value_t = 600.0)]
    pub duration_secs: f64,
    /// Target events per second (lowered automatically if not sustained).
    #[arg(long, default_value_t = 20_000)]
    pub rate: u64,
    /// Milliseconds between POSTs (each carries every event due).
    #[arg(long, default_value_t = 10)]
    pub tick_ms: u64,
    /// Most events per POST.
    #[arg(long, default_value_t = 2_000)]
    pub max_batch: u64,
    /// Event partitions (`soak.<p>.tick`).
    #[arg(long, default_value_t = 50)]
    pub partitions: usize,
    /// Subscribers, including the stalled ones.
    #[arg(long, default_value_t = 200)]
    pub subscribers: usize,
    /// Subscribers that never read (half WebSocket, half SSE).
    #[arg(long, default_value_t = 4)]
    pub stalled: usize,
    /// Short-lived extra subscribers started per second.
    #[arg(long, default_value_t = 10.0)]
    pub churn_per_s: f64,
    /// Seconds between RSS samples.
    #[arg(long, default_value_t = 5.0)]
    pub sample_secs: f64,
    /// Seconds before the RSS baseline (at most half the run).
    #[arg(long, default_value_t = 120.0)]
    pub warmup_secs: f64,
    /// Allowed RSS deviation from the baseline after the warm-up.
    #[arg(long, default_value_t = 0.10)]
    pub rss_tolerance: f64,
    /// The server's send timeout asked for (`send_timeout_secs`).
    #[arg(long, default_value_t = 10)]
    pub send_timeout_secs: u64,
    /// SQLite durability: sync, batch or none.
    #[arg(long, default_value = "batch")]
    pub durability: String,
    /// Events the server keeps (`retention_max_count`).
    #[arg(long, default_value_t = 2_000_000)]
    pub retain: u64,
    /// Bytes of padding in each event's data.
    #[arg(long, default_value_t = 64)]
    pub pad_bytes: usize,
    /// The `tidings` binary (default: `tidings` next to this executable).
    #[arg(long)]
    pub tidings_bin: Option<PathBuf>,
}

mod check;
mod publish;
mod rss;
mod subscribers;

use check::{lock, Check, Shared, Table};
use publish::publish;
use rss::{rss_flat, slope_kib_per_min, Sample};
use subscribers::{pattern_of, sse_sub, stalled_sub, was_dropped, ws_sub};

struct Churned {
    check: Shared,
    ok: bool,
}

async fn start_server(args: &Args, bin: &std::path::Path) -> Result<(ServerProcess, String)> {
    let base = format!(
        "durability = {:?}\nretention_max_count = {}\nmax_connections = 5000\n",
        args.durability, args.retain
    );
    let with = format!("{base}send_timeout_secs = {}\n", args.send_timeout_secs);
    let env = [(
        "TIDINGS_SEND_TIMEOUT_SECS",
        args.send_timeout_secs.to_string(),
    )];
    match ServerProcess::start(bin, &with, &env).await {
        Ok(s) => Ok((
            s,
            format!(
                "send_timeout_secs = {} accepted (config file and TIDINGS_SEND_TIMEOUT_SECS)",
                args.send_timeout_secs
            ),
        )),
        Err(e) if e.stderr.contains("send_timeout_secs") || e.stderr.contains("unknown field") => {
            eprintln!(
                "soak: this tidings binary refuses send_timeout_secs ({}); using its default send timeout (30 s)",
                e.stderr.lines().last().unwrap_or("").trim()
            );
            let s = ServerProcess::start(bin, &base, &[])
                .await
                .map_err(|e| e.error.context(e.stderr))?;
            Ok((
                s,
                "send_timeout_secs refused as unknown by this binary: server default (30 s) in force"
                    .to_owned(),
            ))
        }
        Err(e) => Err(e.error.context(e.stderr)),
    }
}

async fn soak(args: &Args) -> Result<(Report, bool)> {
    let bin = match &args.tidings_bin {
        Some(b) => b.clone(),
        None => process::default_tidings_bin()?,
    };
    let (mut server, timeout_note) = start_server(args, &bin).await?;
    progress::phase(&format!(
        "soak: server pid {} at {} ({}); {}",
        server.pid,
        server.addr,
        bin.display(),
        timeout_note
    ));
    let http = reqwest::Client::new();
    let (hb, wb) = (server.http(), server.ws());
    let parts = args.partitions.max(1);
    let table: Table = Arc::new((0..parts).map(|_| Mutex::new(Vec::new())).collect());
    let stop = Arc::new(AtomicBool::new(false));
    let sampling = Arc::new(AtomicBool::new(false));

    // Live subscribers.
    let live_n = args.subscribers.saturating_sub(args.stalled);
    let mut live: Vec<(Shared, &'static str, tokio::task::JoinHandle<()>)> = Vec::new();
    for i in 0..live_n {
        let p = i % parts;
        let pattern = pattern_of(p, i / parts);
        let check = Shared::new(Mutex::new(Check {
            partition: p,
            ..Check::default()
        }));
        let (kind, task) = if i.is_multiple_of(2) {
            (
                "ws",
                ws_sub(&wb, &pattern, check.clone(), stop.clone()).await?,
            )
        } else {
            (
                "sse",
                sse_sub(&http, &hb, &pattern, check.clone(), stop.clone()).await?,
            )
        };
        live.push((check, kind, task));
    }
    let mut stalled = Vec::new();
    for i in 0..args.stalled {
        let ws = i.is_multiple_of(2);
        stalled.push((ws, stalled_sub(&server.addr, ws).await?));
    }
    progress::phase(&format!(
        "soak: {live_n} live subscribers, {} stalled; publishing {}/s for {} s",
        args.stalled, args.rate, args.duration_secs
    ));

    let published = Arc::new(AtomicU64::new(0));
    let run_start = tokio::time::Instant::now();
    let end = run_start + Duration::from_secs_f64(args.duration_secs);

    // RSS sampler.
    let sampler = {
        let (pid, hb, http, published, every) = (
            server.pid,
            hb.clone(),
            http.clone(),
            published.clone(),
            Duration::from_secs_f64(args.sample_secs.max(0.5)),
        );
        let stop = sampling.clone();
        tokio::spawn(async move {
            let mut out: Vec<Sample> = Vec::new();
            let mut tick = tokio::time::interval(every);
            loop {
                tick.tick().await;
                if stop.load(Relaxed) {
                    break;
                }
                let Ok((rss, anon, file)) = rss_kib(pid) else {
                    break;
                };
                let metrics = match http.get(format!("{hb}/metrics")).send().await {
                    Ok(r) => r.text().await.unwrap_or_default(),
                    Err(_) => String::new(),
                };
                let (ws, sse) = metrics_connections(&metrics);
                let s = Sample {
                    t: run_start.elapsed().as_secs_f64(),
                    rss,
                    anon,
                    file,
                    ws,
                    sse,
                    published: published.load(Relaxed),
                };
                eprintln!(
                    "soak: t={:>5.0}s rss={:>7} KiB anon={:>7} file={:>7} ws={} sse={} published={}",
                    s.t,
                    s.rss,
                    s.anon,
                    s.file,
                    s.ws.unwrap_or(-1),
                    s.sse.unwrap_or(-1),
                    s.published
                );
                out.push(s);
            }
            out
        })
    };

    // Churn: short-lived subscribers.
    let churn = {
        let (wb, hb, http, stop) = (wb.clone(), hb.clone(), http.clone(), stop.clone());
        let per_s = args.churn_per_s;
        tokio::spawn(async move {
            let mut records: Vec<tokio::task::JoinHandle<Churned>> = Vec::new();
            if per_s <= 0.0 {
                return records;
            }
            let mut rng = Rng::new(42);
            let mut tick = tokio::time::interval(Duration::from_secs_f64(1.0 / per_s));
            let mut i = 0usize;
            while tokio::time::Instant::now() < end {
                tick.tick().await;
                let p = rng.below(parts as u64) as usize;
                let life = Duration::from_millis(200 + rng.below(1800));
                let (wb, hb, http) = (wb.clone(), hb.clone(), http.clone());
                let pattern = pattern_of(p, i);
                let ws = i.is_multiple_of(2);
                i += 1;
                let _ = &stop;
                records.push(tokio::spawn(async move {
                    let check = Shared::new(Mutex::new(Check {
                        partition: p,
                        ..Check::default()
                    }));
                    let leave = Arc::new(AtomicBool::new(false));
                    let task = if ws {
                        ws_sub(&wb, &pattern, check.clone(), leave.clone()).await
                    } else {
                        sse_sub(&http, &hb, &pattern, check.clone(), leave.clone()).await
                    };
                    let Ok(task) = task else {
                        return Churned { check, ok: false };
                    };
                    tokio::time::sleep(life).await;
                    leave.store(true, Relaxed);
                    let _ = task.await;
                    Churned { check, ok: true }
                }));
            }
            records
        })
    };

    let pb = progress::timed(args.duration_secs, "soak publishing");
    let pb_task = {
        let pb = pb.clone();
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_millis(500)).await;
                pb.set_position(run_start.elapsed().as_millis() as u64);
            }
        })
    };
    let pubres = publish(args, &http, &hb, &table, &published, end).await;
    pb_task.abort();
    pb.finish_and_clear();
    let pubres = pubres?;
    // RSS is judged over the publishing window only: the end checks below
    // (reading the stalled sockets) make the server read its log.
    progress::phase(&format!(
        "soak: published {} events in {:.1} s ({:.0}/s); waiting for the live subscribers",
        pubres.events,
        pubres.elapsed,
        pubres.events as f64 / pubres.elapsed
    ));

    // Let the live subscribers catch up (20 s without progress ends it).
    sampling.store(true, Relaxed);
    let snapshot: Vec<Vec<u64>> = table
        .iter()
        .map(|m| m.lock().unwrap_or_else(|e| e.into_inner()).clone())
        .collect();
    let mut last = (0u64, Instant::now());
    loop {
        let (mut done, mut got) = (true, 0u64);
        for (c, _, _) in &live {
            let c = lock(c);
            got += c.received;
            if !c.done(&snapshot[c.partition]) && !c.closed {
                done = false;
            }
        }
        if done {
            break;
        }
        if got != last.0 {
            last = (got, Instant::now());
        } else if last.1.elapsed() > Duration::from_secs(20) {
            eprintln!("soak: live subscribers made no progress for 20 s; counting what is missing");
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let catch_up_secs = run_start.elapsed().as_secs_f64() - pubres.elapsed;

    // Stalled subscribers: did the server drop them?
    let mut stalled_res = Vec::new();
    for (ws, s) in stalled {
        let (dropped, bytes) = was_dropped(s).await;
        stalled_res.push(json!({"transport": if ws {"ws"} else {"sse"}, "dropped": dropped, "bytes_read_at_end": bytes}));
    }
    let rss_after_checks = rss_kib(server.pid).ok();
    let churn_tasks = churn.await.unwrap_or_default();
    let alive = server.alive();
    stop.store(true, Relaxed);
    let samples = sampler.await.unwrap_or_default();
    for (_, _, t) in live.iter() {
        t.abort();
    }

    // Live subscriber checks.
    let (mut loss, mut dups, mut gaps, mut lagged, mut closed, mut mismatch, mut received) =
        (0u64, 0u64, 0u64, 0u64, 0u64, 0u64, 0u64);
    let mut pre_start = 0u64;
    let mut by_kind = std::collections::BTreeMap::<&str, u64>::new();
    for (c, kind, _) in &live {
        let c = lock(c);
        let t = &snapshot[c.partition];
        let l = c.loss(t);
        loss += l;
        *by_kind.entry(kind).or_default() += l;
        dups += c.dups;
        gaps += c.gaps;
        lagged += c.lagged;
        closed += c.closed as u64;
        mismatch += c.mismatches(t);
        received += c.received;
        pre_start += c.pre_start;
    }
    // Churn checks.
    let (mut ch_ok, mut ch_failed, mut ch_gaps, mut ch_dups, mut ch_start_miss, mut ch_recv) =
        (0u64, 0u64, 0u64, 0u64, 0u64, 0u64);
    for t in churn_tasks {
        let Ok(r) = t.await else { continue };
        if !r.ok {
            ch_failed += 1;
            continue;
        }
        ch_ok += 1;
        let c = lock(&r.check);
        let t = &snapshot[c.partition];
        ch_gaps += c.gaps;
        ch_dups += c.dups;
        ch_start_miss += c.start_miss(t);
        ch_recv += c.received;
    }

    server.stop().await;

    let rss: Vec<(f64, u64)> = samples.iter().map(|s| (s.t, s.rss)).collect();
    let anon: Vec<(f64, u64)> = samples.iter().map(|s| (s.t, s.anon)).collect();
    let warmup = args.warmup_secs.min(args.duration_secs / 2.0);
    let flat = rss_flat(&rss, warmup, args.rss_tolerance);
    let anon_flat = rss_flat(&anon, warmup, args.rss_tolerance);
    let after: Vec<(f64, u64)> = rss.iter().copied().filter(|(t, _)| *t >= warmup).collect();
    let rss_ok = flat.is_some_and(|f| f.0);
    let stalled_dropped = stalled_res.iter().filter(|v| v["dropped"] == true).count();
    let loss_ok = loss == 0 && dups == 0 && mismatch == 0 && closed == 0;
    // The short-lived subscribers promise the same: each connects, starts
    // at the right event and reads on without a gap or a repeat.
    let churn_ok = ch_failed == 0 && ch_gaps == 0 && ch_dups == 0 && ch_start_miss == 0;
    let achieved = pubres.events as f64 / pubres.elapsed;

    eprintln!("soak: RSS series (t s, VmRSS KiB, RssAnon KiB, RssFile KiB):");
    for s in &samples {
        eprintln!("  {:>6.0} {:>8} {:>8} {:>8}", s.t, s.rss, s.anon, s.file);
    }
    if let Some((ok, base, min, max)) = flat {
        eprintln!(
            "soak: after the {warmup:.0} s warm-up VmRSS {min}..{max} KiB around {base} KiB ({:+.1}%..{:+.1}%): {}",
            (min as f64 / base as f64 - 1.0) * 100.0,
            (max as f64 / base as f64 - 1.0) * 100.0,
            if ok { "flat" } else { "NOT flat" }
        );
    }
    eprintln!(
        "soak: live loss {loss} (gaps {gaps}, duplicates {dups}, closed early {closed}, seq mismatches {mismatch}), stalled dropped {stalled_dropped}/{}",
        stalled_res.len()
    );

    let ok = loss_ok && churn_ok && rss_ok && stalled_dropped == stalled_res.len();
    let r = Report::new("soak", achieved, "none", None)
        .goal(
            "loss 0 to live and short-lived subscribers; server VmRSS within ±10% of its post-warm-up baseline; stalled subscribers dropped",
            ok,
        )
        .with("per_s_means", "achieved publish rate (events/s)")
        .with("duration_secs", pubres.elapsed)
        .with("target_rate", args.rate)
        .with("achieved_rate", achieved)
        .with("rate_changes", json!(pubres.cuts))
        .with("events", pubres.events)
        .with("posts", pubres.posts)
        .with("mean_batch", pubres.events as f64 / pubres.posts.max(1) as f64)
        .with("max_batch_sent", pubres.max_batch_sent)
        .with("durability", args.durability.clone())
        .with("partitions", parts)
        .with("live_subscribers", live_n)
        .with("live_by_transport", json!({"ws": live.iter().filter(|l| l.1 == "ws").count(), "sse": live.iter().filter(|l| l.1 == "sse").count()}))
        .with("live_received", received)
        .with("loss", loss)
        .with("loss_by_transport", json!(by_kind))
        .with("gaps", gaps)
        .with("duplicates", dups)
        .with("lagged", lagged)
        .with("closed_early", closed)
        .with("seq_mismatches", mismatch)
        .with("pre_start_events", pre_start)
        .with("catch_up_secs", catch_up_secs)
        .with("stalled", json!(stalled_res))
        .with("stalled_dropped", stalled_dropped)
        .with("send_timeout", timeout_note)
        .with("churn_subscribers", ch_ok)
        .with("churn_connect_failures", ch_failed)
        .with("churn_received", ch_recv)
        .with("churn_gaps", ch_gaps)
        .with("churn_duplicates", ch_dups)
        .with("churn_start_miss", ch_start_miss)
        .with("server_alive_at_end", alive)
        .with(
            "rss_after_stalled_reads_kib",
            json!(rss_after_checks.map(|r| json!({"rss": r.0, "anon": r.1, "file": r.2}))),
        )
        .with("rss_warmup_secs", warmup)
        .with("rss_flat", rss_ok)
        .with(
            "rss_baseline_min_max_kib",
            json!(flat.map(|f| [f.1, f.2, f.3])),
        )
        .with(
            "rss_anon_baseline_min_max_kib",
            json!(anon_flat.map(|f| [f.1, f.2, f.3])),
        )
        .with("rss_anon_flat", anon_flat.is_some_and(|f| f.0))
        .with("rss_slope_after_warmup_kib_per_min", slope_kib_per_min(&after))
        .with(
            "rss_series_kib",
            json!(samples
                .iter()
                .map(|s| [s.t.round() as u64, s.rss])
                .collect::<Vec<_>>()),
        )
        .with(
            "connections_series",
            json!(samples
                .iter()
                .map(|s| [s.t.round() as i64, s.ws.unwrap_or(-1), s.sse.unwrap_or(-1)])
                .collect::<Vec<_>>()),
        );
    Ok((r, ok))
}

/// Runs the scenario; the bool is false when the goal is not met (loss,
/// a short-lived subscriber's gap or wrong start, RSS not flat, a stalled
/// subscriber not dropped): the process then exits non-zero.
pub fn run(args: &Args) -> Result<(Report, bool)> {
    ensure!(args.duration_secs > 0.0, "--duration-secs must be positive");
    ensure!(args.rate > 0, "--rate must be positive");
    ensure!(
        args.subscribers > args.stalled,
        "--subscribers must exceed --stalled"
    );
    crate::scenarios::memory::raise_nofile(4096)?;
    let rt = super::runtime()?;
    rt.block_on(soak(args))
}
