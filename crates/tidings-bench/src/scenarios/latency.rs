//! `latency`: publish → WebSocket and publish → SSE delivery latency at a
//! steady rate (default 10,000 events/s), against NATS core pub → sub.
//!
//! * Tidings: a server in this process on its own runtime (see
//!   [`crate::clients::LocalServer`]; `--store memory` by default, or
//!   `--store sqlite` with `--durability`, default `sync` as the server's
//!   own default), **two subscribers**: one WebSocket client
//!   (`/ws?pattern=lat.>`) and one SSE client (`/sse?pattern=lat.>`). The
//!   publisher POSTs a JSON array of `--batch` (10) events every
//!   `batch / rate` seconds; each POST is sent on its schedule in its own
//!   task (at most `--max-in-flight` at once; the publisher waits for a
//!   slot beyond that), so a slow POST does not delay the next.
//! * Peer: NATS core on the machine's nats-server, one publisher
//!   connection and **two subscriber connections** (the same number of
//!   subscribers), the same schedule and batch size, the payload being the
//!   same envelope JSON.
//!
//! **Open loop:** each event's `data.t` is its *scheduled* send time
//! (`start + k × period`, in nanoseconds of a monotonic clock shared by
//! publisher and subscribers, same process), not the moment the publisher
//! got round to sending it: a publisher stall shows as latency instead of
//! being hidden. The subscriber computes receive − scheduled. Events
//! scheduled during the first `--warmup-secs` are not counted. Each event
//! also carries `data.s`, the moment the publisher built it; the
//! `from_send_*` figures measure from there: the lag of the schedule
//! (tokio's timer wakes at millisecond granularity, on both sides) is left
//! out, but a Tidings POST's wait for one of the `--max-in-flight` slots
//! (built, then queued) is still in.
//!
//! Each run starts a fresh server (and fresh NATS connections) and the
//! sides take turns going first. Per side the figure of a run is its
//! *worse* subscriber's p99 (WebSocket or SSE; NATS subscriber 1 or 2), and
//! `per_s` is 1 / that p99 in seconds (higher is better); every
//! subscriber's p50 / p99 / p99.9 is in the run's details. Loss (a seq
//! never received, or a lag notice) on either side blocks the goal.
//! Goal: p99 < 1 ms over WebSocket and SSE.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{ensure, Context, Result};
use bytes::Bytes;
use futures_util::StreamExt;
use serde_json::json;
use tidings_core::NewEvent;
use tokio::task::JoinHandle;
use tokio_tungstenite::tungstenite::Message;

use super::mono_ns;
use crate::clients::{lag_notice, q, sse_events, ws_subscribe, LocalServer, SeqTracker, StoreKind};
use crate::nats;
use crate::progress;
use crate::repeat::{alternate, Run, Series};
use crate::stats::{json_u64, percentiles, Percentiles};
use crate::Report;

/// Options of `latency`.
#[derive(Debug, Clone, clap::Args)]
pub struct Args {
    /// Events per second.
    #[arg(long, default_value_t = 10_000)]
    pub rate: u64,
    /// Events per POST (and per paced NATS burst).
    #[arg(long, default_value_t = 10)]
    pub batch: usize,
    /// Seconds measured per side per run (after the warm-up).
    #[arg(long, default_value_t = 5.0)]
    pub duration_secs: f64,
    /// Seconds sent first and not counted.
    #[arg(long, default_value_t = 1.0)]
    pub warmup_secs: f64,
    /// Where the Tidings server keeps its log.
    #[arg(long, value_enum, default_value_t = StoreKind::Memory)]
    pub store: StoreKind,
    /// Durability of `--store sqlite`: sync (the server's default), batch
    /// or none.
    #[arg(long, default_value = "sync")]
    pub durability: String,
    /// POSTs in flight at most (the publisher waits beyond that, and the
    /// wait shows as latency).
    #[arg(long, default_value_t = 64)]
    pub max_in_flight: usize,
    /// The peer nats-server.
    #[arg(long, default_value = nats::NATS_URL)]
    pub nats_url: String,
}

/// Latencies one subscriber measured.
#[derive(Default)]
struct Samples {
    tracker: SeqTracker,
    /// ns from the scheduled send time, only of events scheduled after
    /// the warm-up.
    lat: Vec<u64>,
    /// ns from the moment the publisher built the event (`data.s`): the
    /// scheduled figure without the schedule's lag (a wait for an
    /// in-flight slot is still in).
    from_send: Vec<u64>,
}

type Shared = Arc<Mutex<Samples>>;

/// Records an envelope text; true once `total` events are accounted for.
fn record(s: &Shared, text: &str, counted_from: u64, total: u64) -> bool {
    let now = mono_ns();
    let mut s = s.lock().unwrap_or_else(|e| e.into_inner());
    if let Some((missed, resume_from)) = lag_notice(text) {
        s.tracker.lagged(missed, resume_from);
    } else if let (Some(seq), Some(t)) = (json_u64(text, "seq"), json_u64(text, "t")) {
        // A duplicate is counted (it blocks the goal), not sampled again.
        if s.tracker.event(seq) && t >= counted_from {
            s.lat.push(now.saturating_sub(t));
            if let Some(sent) = json_u64(text, "s") {
                s.from_send.push(now.saturating_sub(sent));
            }
        }
    }
    s.tracker.done(total)
}

struct Plan {
    batches: u64,
    period: Duration,
    counted_from_batch: u64,
}

impl Plan {
    fn new(args: &Args) -> Result<Plan> {
        ensure!(
            args.rate > 0 && args.batch > 0,
            "--rate and --batch must be positive"
        );
        let period = Duration::from_secs_f64(args.batch as f64 / args.rate as f64);
        let batches =
            ((args.duration_secs + args.warmup_secs) / period.as_secs_f64()).ceil() as u64;
        let counted_from_batch = (args.warmup_secs / period.as_secs_f64()).ceil() as u64;
        Ok(Plan {
            batches,
            period,
            counted_from_batch,
        })
    }
}

/// Publishes `plan.batches` batches on absolute deadlines; `send(k, t_ns)`
/// sends batch `k` stamped with its **scheduled** time `t_ns`. Returns
/// (achieved events/s, the most the publisher fell behind its schedule).
async fn paced<F, Fut>(
    plan: &Plan,
    batch: usize,
    label: &str,
    mut send: F,
) -> Result<(f64, Duration)>
where
    F: FnMut(u64, u64) -> Fut,
    Fut: std::future::Future<Output = Result<()>>,
{
    let pb = progress::bar(plan.batches, label);
    let start = tokio::time::Instant::now();
    let start_ns = mono_ns();
    let period_ns = plan.period.as_nanos() as u64;
    let mut behind = Duration::ZERO;
    for k in 0..plan.batches {
        let due = start + plan.period * k as u32;
        let now = tokio::time::Instant::now();
        if now < due {
            tokio::time::sleep_until(due).await;
        } else {
            behind = behind.max(now - due);
        }
        send(k, start_ns + k * period_ns).await?;
        if k % 256 == 0 {
            pb.set_position(k);
        }
    }
    pb.finish_and_clear();
    let rate = (plan.batches * batch as u64) as f64 / start.elapsed().as_secs_f64();
    Ok((rate, behind))
}

/// Waits until every task finished or nothing arrived for 5 s.
async fn settle(tasks: &[(JoinHandle<()>, Shared)]) {
    let mut last = (0usize, Instant::now());
    while !tasks.iter().all(|(t, _)| t.is_finished()) {
        let n: usize = tasks
            .iter()
            .map(|(_, s)| s.lock().map_or(0, |s| s.tracker.received as usize))
            .sum();
        if n != last.0 {
            last = (n, Instant::now());
        } else if last.1.elapsed() > Duration::from_secs(5) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

struct PathResult {
    pct: Option<Percentiles>,
    from_send: Option<Percentiles>,
    loss: u64,
    gaps: u64,
    lagged: u64,
    duplicates: u64,
}

fn finish(task: JoinHandle<()>, s: &Shared, total: u64) -> PathResult {
    task.abort();
    let mut s = s.lock().unwrap_or_else(|e| e.into_inner());
    let mut lat = std::mem::take(&mut s.lat);
    let mut from_send = std::mem::take(&mut s.from_send);
    PathResult {
        pct: percentiles(&mut lat),
        from_send: percentiles(&mut from_send),
        loss: s.tracker.lost(total),
        gaps: s.tracker.gaps,
        lagged: s.tracker.lagged,
        duplicates: s.tracker.duplicates,
    }
}

struct TidingsResult {
    ws: PathResult,
    sse: PathResult,
    rate: f64,
    behind: Duration,
}

/// The payload: `t` the scheduled send time, `s` when the publisher
/// actually built the event (both ns of [`mono_ns`]).
fn data(t: u64) -> serde_json::Value {
    json!({"s": mono_ns(), "t": t, "username": "Gribnak"})
}

async fn tidings(args: &Args, plan: &Plan) -> Result<TidingsResult> {
    let total = plan.batches * args.batch as u64;
    let srv = LocalServer::start(args.store, total + 10_000, &args.durability).await?;
    // The send stamp from which samples count: set by the publisher when
    // the warm-up ends (until then u64::MAX, so nothing counts).
    let threshold = Arc::new(std::sync::atomic::AtomicU64::new(u64::MAX));

    let mut ws = ws_subscribe(&format!("{}/ws?pattern={}", srv.ws_base, q("lat.>"))).await?;
    let ws_s = Shared::default();
    let (s, th) = (ws_s.clone(), threshold.clone());
    let ws_task = tokio::spawn(async move {
        while let Some(Ok(msg)) = ws.next().await {
            if let Message::Text(t) = msg {
                let from = th.load(std::sync::atomic::Ordering::Relaxed);
                if record(&s, t.as_str(), from, total) {
                    break;
                }
            }
        }
    });

    let http = reqwest::Client::new();
    let resp = http
        .get(format!("{}/sse?pattern={}", srv.http_base, q("lat.>")))
        .send()
        .await
        .context("GET /sse")?;
    ensure!(
        resp.status().is_success(),
        "GET /sse answered {}",
        resp.status()
    );
    let sse_s = Shared::default();
    let (s, th) = (sse_s.clone(), threshold.clone());
    let sse_task = tokio::spawn(async move {
        let mut body = resp.bytes_stream();
        let mut buf = String::new();
        while let Some(Ok(chunk)) = body.next().await {
            buf.push_str(&String::from_utf8_lossy(&chunk));
            for (_, d) in sse_events(&mut buf) {
                let from = th.load(std::sync::atomic::Ordering::Relaxed);
                if record(&s, &d, from, total) {
                    return;
                }
            }
        }
    });

    let url = format!("{}/events", srv.http_base);
    let batch = args.batch;
    let th = threshold.clone();
    let counted_from_batch = plan.counted_from_batch;
    let slots = Arc::new(tokio::sync::Semaphore::new(args.max_in_flight.max(1)));
    let posts = Arc::new(Mutex::new(Vec::<JoinHandle<Result<()>>>::new()));
    let (rate, behind) = paced(plan, batch, "tidings paced POSTs", |k, t| {
        if k == counted_from_batch {
            th.store(t, std::sync::atomic::Ordering::Relaxed);
        }
        let body: Vec<_> = (0..batch)
            .map(|_| json!({"name": "lat.tick", "data": data(t)}))
            .collect();
        let req = http.post(&url).json(&body);
        let (slots, posts) = (slots.clone(), posts.clone());
        async move {
            // Waiting for a slot is a publisher stall: it shows as latency.
            let permit = slots.acquire_owned().await?;
            let task = tokio::spawn(async move {
                let _permit = permit;
                let r = req.send().await.context("POST /events")?;
                ensure!(
                    r.status().is_success(),
                    "POST /events answered {}",
                    r.status()
                );
                r.bytes().await?;
                Ok(())
            });
            posts.lock().unwrap_or_else(|e| e.into_inner()).push(task);
            Ok(())
        }
    })
    .await?;
    let posts = std::mem::take(&mut *posts.lock().unwrap_or_else(|e| e.into_inner()));
    for p in posts {
        p.await??;
    }
    let tasks = vec![(ws_task, ws_s.clone()), (sse_task, sse_s.clone())];
    settle(&tasks).await;
    let mut it = tasks.into_iter();
    let (wt, _) = it.next().expect("ws task");
    let (st, _) = it.next().expect("sse task");
    let ws = finish(wt, &ws_s, total);
    let sse = finish(st, &sse_s, total);
    srv.shutdown().await;
    Ok(TidingsResult {
        ws,
        sse,
        rate,
        behind,
    })
}

/// NATS core: one publisher and `SUBSCRIBERS` subscriber connections.
async fn peer(args: &Args, plan: &Plan) -> Result<(Vec<PathResult>, f64, Duration)> {
    const SUBSCRIBERS: usize = 2;
    let total = plan.batches * args.batch as u64;
    let publisher = nats::connect(&args.nats_url, "latency").await?;
    let subject = format!("tidingsbench.{}.lat", nats::unique());
    let threshold = Arc::new(std::sync::atomic::AtomicU64::new(u64::MAX));
    let mut tasks = Vec::new();
    let mut conns = Vec::new();
    for _ in 0..SUBSCRIBERS {
        let subscriber = nats::connect(&args.nats_url, "latency").await?;
        let mut sub = subscriber.subscribe(subject.clone()).await?;
        subscriber.flush().await?;
        conns.push(subscriber);
        let shared = Shared::default();
        let (s, th) = (shared.clone(), threshold.clone());
        let task = tokio::spawn(async move {
            while let Some(msg) = sub.next().await {
                let text = std::str::from_utf8(&msg.payload).unwrap_or("");
                let from = th.load(std::sync::atomic::Ordering::Relaxed);
                if record(&s, text, from, total) {
                    break;
                }
            }
        });
        tasks.push((task, shared));
    }
    let batch = args.batch;
    let counted_from_batch = plan.counted_from_batch;
    let mut seq = 0u64;
    let th = threshold.clone();
    let (rate, behind) = paced(plan, batch, "nats paced publishes", |k, t| {
        if k == counted_from_batch {
            th.store(t, std::sync::atomic::Ordering::Relaxed);
        }
        let payloads: Vec<Bytes> = (0..batch)
            .map(|_| {
                seq += 1;
                let e = NewEvent::new("lat.tick", data(t))
                    .expect("valid name")
                    .source("http")
                    .commit(seq);
                Bytes::from(serde_json::to_vec(&e).expect("json"))
            })
            .collect();
        let (p, subj) = (publisher.clone(), subject.clone());
        // Publishing only queues into the connection's buffer, and must
        // stay in order (the subscribers check seqs): sent inline.
        async move {
            for b in payloads {
                p.publish(subj.clone(), b).await?;
            }
            Ok(())
        }
    })
    .await?;
    publisher.flush().await?;
    settle(&tasks).await;
    let results = tasks
        .into_iter()
        .map(|(t, s)| finish(t, &s, total))
        .collect();
    drop(conns);
    Ok((results, rate, behind))
}

fn path_json(p: &PathResult) -> serde_json::Value {
    let mut v = match &p.pct {
        Some(x) => json!({
            "p50_us": x.p50 as f64 / 1e3,
            "p99_us": x.p99 as f64 / 1e3,
            "p999_us": x.p999 as f64 / 1e3,
            "max_us": x.max as f64 / 1e3,
            "mean_us": x.mean / 1e3,
            "samples": x.count,
            "loss": p.loss,
            "gaps": p.gaps,
            "lagged": p.lagged,
            "duplicates": p.duplicates,
        }),
        None => json!({"samples": 0, "loss": p.loss, "gaps": p.gaps, "lagged": p.lagged}),
    };
    if let Some(x) = &p.from_send {
        v["from_send_p50_us"] = json!(x.p50 as f64 / 1e3);
        v["from_send_p99_us"] = json!(x.p99 as f64 / 1e3);
    }
    v
}

fn p99(p: &PathResult) -> Option<u64> {
    p.pct.map(|x| x.p99)
}

/// One run's figure: 1 / the worse subscriber's p99, the loss of all of
/// them, every subscriber's percentiles as the detail.
fn side_run(paths: &[(&str, &PathResult)], rate: f64, behind: Duration) -> Result<Run> {
    let mut worst = 0u64;
    for (label, p) in paths {
        let x =
            p99(p).with_context(|| format!("the {label} subscriber received no counted event"))?;
        worst = worst.max(x);
    }
    // A duplicate breaks "every event once" as a missing one does.
    let lost: u64 = paths.iter().map(|(_, p)| p.loss + p.duplicates).sum();
    let mut detail = serde_json::Map::new();
    for (label, p) in paths {
        detail.insert((*label).to_owned(), path_json(p));
    }
    detail.insert("worst_p99_us".into(), json!(worst as f64 / 1e3));
    detail.insert("achieved_rate".into(), json!(rate));
    detail.insert(
        "publisher_max_behind_ms".into(),
        json!(behind.as_secs_f64() * 1e3),
    );
    Ok(Run::of(1e9 / worst.max(1) as f64)
        .lost(lost)
        .detail(serde_json::Value::Object(detail)))
}

/// A subscriber's `field` (µs) across the runs, from the runs' details.
fn p99_series(name: &str, side: &Series, key: &str, field: &str) -> Series {
    let mut s = Series::new(name);
    for (k, d) in side.details.iter().enumerate() {
        if let Some(v) = d[key][field].as_f64() {
            s.record(k, Ok(Run::of(v)));
        }
    }
    s
}

/// Runs the scenario: `runs` runs per side, a fresh server each.
pub fn run(args: &Args, runs: usize) -> Result<Report> {
    let plan = Plan::new(args)?;
    let rt = super::runtime()?;
    progress::phase(&format!(
        "latency: {} events/s in batches of {} every {:?} for {} s (+{} s warm-up), {runs} runs: tidings WS+SSE ({:?} store), nats core 2 subscribers",
        args.rate, args.batch, plan.period, args.duration_secs, args.warmup_secs, args.store
    ));
    rt.block_on(nats::connect(&args.nats_url, "latency"))?;
    mono_ns();
    let sides = alternate(
        runs,
        &mut [
            ("tidings", &mut |_| {
                let t = rt.block_on(tidings(args, &plan))?;
                eprintln!(
                    "tidings ws: {}\ntidings sse: {}",
                    path_json(&t.ws),
                    path_json(&t.sse)
                );
                side_run(&[("ws", &t.ws), ("sse", &t.sse)], t.rate, t.behind)
            }),
            ("nats", &mut |_| {
                let (subs, rate, behind) = rt.block_on(peer(args, &plan))?;
                for s in &subs {
                    eprintln!("nats sub: {}", path_json(s));
                }
                side_run(&[("sub1", &subs[0]), ("sub2", &subs[1])], rate, behind)
            }),
        ],
        || {},
    );
    let (t, p) = (&sides.series[0], &sides.series[1]);
    let ws = p99_series("ws", t, "ws", "p99_us");
    let sse = p99_series("sse", t, "sse", "p99_us");
    let n1 = p99_series("nats sub1", p, "sub1", "p99_us");
    let n2 = p99_series("nats sub2", p, "sub2", "p99_us");
    let from_send =
        |side: &Series, key: &str| p99_series(key, side, key, "from_send_p99_us").to_json();
    let under_1ms = |s: &Series| s.median().is_some_and(|m| m < 1000.0);
    let goal = under_1ms(&ws) && under_1ms(&sse);
    Ok(Report::compared(
        "latency",
        "NATS core pub -> 2 subscribers (1 / worse subscriber's p99)",
        "median p99 < 1 ms over WebSocket and SSE",
        goal,
        t,
        Some(p),
    )
    .orders(&sides)
    .with(
        "per_s_means",
        "1 / p99 latency in seconds of the worse of the side's two subscribers",
    )
    .with("stamp", "scheduled send time (open loop)")
    .with("rate", args.rate)
    .with("batch", args.batch)
    .with(
        "store",
        match args.store {
            StoreKind::Memory => "memory".to_owned(),
            StoreKind::Sqlite => format!("sqlite, durability {}", args.durability),
        },
    )
    .with("max_in_flight", args.max_in_flight)
    .with("duration_secs", args.duration_secs)
    .with("ws_p99_us", ws.to_json())
    .with("sse_p99_us", sse.to_json())
    .with("peer_sub1_p99_us", n1.to_json())
    .with("peer_sub2_p99_us", n2.to_json())
    .with(
        "from_send_p99_us",
        json!({
            "ws": from_send(t, "ws"),
            "sse": from_send(t, "sse"),
            "peer_sub1": from_send(p, "sub1"),
            "peer_sub2": from_send(p, "sub2"),
        }),
    )
    .with("server_runtime_workers", crate::clients::SERVER_WORKERS))
}
