//! `latency`: publish → WebSocket and publish → SSE delivery latency at a
//! steady rate (default 10,000 events/s), against NATS core pub → sub.
//!
//! * Tidings: a server in this process (`memory:` store by default), one
//!   WebSocket client (`/ws?pattern=lat.>`) and one SSE client
//!   (`/sse?pattern=lat.>`) subscribed at once; one publisher POSTs a JSON
//!   array of `--batch` (10) events every `batch / rate` seconds (1 ms),
//!   on absolute deadlines (a late POST is followed at once by the next,
//!   so the rate holds).
//! * Peer: NATS core on the machine's nats-server, one publisher and one
//!   subscriber connection, the same pacing and batch size, the payload
//!   being the same envelope JSON.
//!
//! Each event's `data.t` is the send time in nanoseconds of a monotonic
//! clock shared by publisher and subscribers (same process), taken just
//! before the POST (or publish); the subscriber computes receive − send.
//! Events sent during the first `--warmup-secs` are not counted.
//!
//! `per_s` is `1 / p99` (in seconds) — Tidings' over WebSocket, the
//! closest analogue of a NATS subscription; the raw p50 / p99 / p99.9 of
//! every path are in the report. Goal: p99 < 1 ms over WebSocket and SSE.

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
use crate::clients::{q, sse_events, ws_subscribe, LocalServer, SeqTracker, StoreKind};
use crate::nats;
use crate::progress;
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
    /// Seconds measured per side (after the warm-up).
    #[arg(long, default_value_t = 10.0)]
    pub duration_secs: f64,
    /// Seconds sent first and not counted.
    #[arg(long, default_value_t = 1.0)]
    pub warmup_secs: f64,
    /// Where the Tidings server keeps its log.
    #[arg(long, value_enum, default_value_t = StoreKind::Memory)]
    pub store: StoreKind,
    /// The peer nats-server.
    #[arg(long, default_value = nats::NATS_URL)]
    pub nats_url: String,
}

/// Latencies one subscriber measured.
#[derive(Default)]
struct Samples {
    tracker: SeqTracker,
    /// ns, only of events sent after the warm-up.
    lat: Vec<u64>,
}

type Shared = Arc<Mutex<Samples>>;

/// Records an envelope text; true once `total` events are accounted for.
fn record(s: &Shared, text: &str, counted_from: u64, total: u64) -> bool {
    let now = mono_ns();
    let mut s = s.lock().unwrap_or_else(|e| e.into_inner());
    if text.starts_with("{\"type\"") {
        if text.contains("\"lagged\"") {
            s.tracker.lagged(
                json_u64(text, "missed").unwrap_or(0),
                json_u64(text, "resume_from").unwrap_or(0),
            );
        }
    } else if let (Some(seq), Some(t)) = (json_u64(text, "seq"), json_u64(text, "t")) {
        s.tracker.event(seq);
        if t >= counted_from {
            s.lat.push(now.saturating_sub(t));
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
/// sends batch `k` stamped `t_ns`. Returns (achieved events/s, the most
/// the publisher fell behind its schedule).
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
    let mut behind = Duration::ZERO;
    for k in 0..plan.batches {
        let due = start + plan.period * k as u32;
        let now = tokio::time::Instant::now();
        if now < due {
            tokio::time::sleep_until(due).await;
        } else {
            behind = behind.max(now - due);
        }
        send(k, mono_ns()).await?;
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
    loss: u64,
    gaps: u64,
    lagged: u64,
    duplicates: u64,
}

fn finish(task: JoinHandle<()>, s: &Shared, total: u64) -> PathResult {
    task.abort();
    let mut s = s.lock().unwrap_or_else(|e| e.into_inner());
    let mut lat = std::mem::take(&mut s.lat);
    PathResult {
        pct: percentiles(&mut lat),
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

fn data(t: u64) -> serde_json::Value {
    json!({"t": t, "username": "Gribnak"})
}

async fn tidings(args: &Args, plan: &Plan) -> Result<TidingsResult> {
    let total = plan.batches * args.batch as u64;
    let srv = LocalServer::start(args.store, total + 10_000).await?;
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
    let (rate, behind) = paced(plan, batch, "tidings paced POSTs", |k, t| {
        if k == counted_from_batch {
            th.store(t, std::sync::atomic::Ordering::Relaxed);
        }
        let body: Vec<_> = (0..batch)
            .map(|_| json!({"name": "lat.tick", "data": data(t)}))
            .collect();
        let req = http.post(&url).json(&body).send();
        async move {
            let r = req.await.context("POST /events")?;
            ensure!(
                r.status().is_success(),
                "POST /events answered {}",
                r.status()
            );
            r.bytes().await?;
            Ok(())
        }
    })
    .await?;
    let tasks = vec![(ws_task, ws_s.clone()), (sse_task, sse_s.clone())];
    settle(&tasks).await;
    let mut it = tasks.into_iter();
    let (wt, _) = it.next().expect("ws task");
    let (st, _) = it.next().expect("sse task");
    let ws = finish(wt, &ws_s, total);
    let sse = finish(st, &sse_s, total);
    srv.server.shutdown().await;
    Ok(TidingsResult {
        ws,
        sse,
        rate,
        behind,
    })
}

async fn peer(args: &Args, plan: &Plan) -> Result<(PathResult, f64, Duration)> {
    let total = plan.batches * args.batch as u64;
    let publisher = nats::connect(&args.nats_url, "latency").await?;
    let subscriber = nats::connect(&args.nats_url, "latency").await?;
    let subject = format!("tidingsbench.{}.lat", nats::unique());
    let mut sub = subscriber.subscribe(subject.clone()).await?;
    subscriber.flush().await?;
    let threshold = Arc::new(std::sync::atomic::AtomicU64::new(u64::MAX));
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
        async move {
            for b in payloads {
                p.publish(subj.clone(), b).await?;
            }
            Ok(())
        }
    })
    .await?;
    publisher.flush().await?;
    let tasks = vec![(task, shared.clone())];
    settle(&tasks).await;
    let (t, _) = tasks.into_iter().next().expect("task");
    Ok((finish(t, &shared, total), rate, behind))
}

fn path_json(p: &PathResult) -> serde_json::Value {
    match &p.pct {
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
    }
}

fn p99(p: &PathResult) -> Option<u64> {
    p.pct.map(|x| x.p99)
}

/// Runs the scenario.
pub fn run(args: &Args) -> Result<Report> {
    let plan = Plan::new(args)?;
    let rt = super::runtime()?;
    progress::phase(&format!(
        "latency: {} events/s in batches of {} every {:?} for {} s (+{} s warm-up): tidings WS+SSE, then nats core",
        args.rate, args.batch, plan.period, args.duration_secs, args.warmup_secs
    ));
    rt.block_on(nats::connect(&args.nats_url, "latency"))?;
    mono_ns();
    let t = rt.block_on(tidings(args, &plan))?;
    let (n, peer_rate, peer_behind) = rt.block_on(peer(args, &plan))?;
    for (label, p) in [
        ("tidings ws", &t.ws),
        ("tidings sse", &t.sse),
        ("nats core", &n),
    ] {
        eprintln!("{label:>12}: {}", path_json(p));
    }
    let ws99 = p99(&t.ws).context("the WebSocket client received no counted event")?;
    let sse99 = p99(&t.sse).context("the SSE client received no counted event")?;
    let peer99 = p99(&n);
    let goal = ws99 < 1_000_000 && sse99 < 1_000_000;
    Ok(Report::new(
        "latency",
        1e9 / ws99 as f64,
        "NATS core pub -> sub (1/p99)",
        peer99.map(|p| 1e9 / p as f64),
    )
    .goal("p99 < 1 ms over WebSocket and SSE", goal)
    .with(
        "per_s_means",
        "1 / p99 latency in seconds (tidings: WebSocket)",
    )
    .with("rate", args.rate)
    .with("batch", args.batch)
    .with("duration_secs", args.duration_secs)
    .with("ws_p50_us", t.ws.pct.map_or(0.0, |x| x.p50 as f64 / 1e3))
    .with("ws_p99_us", ws99 as f64 / 1e3)
    .with("ws_p999_us", t.ws.pct.map_or(0.0, |x| x.p999 as f64 / 1e3))
    .with("sse_p50_us", t.sse.pct.map_or(0.0, |x| x.p50 as f64 / 1e3))
    .with("sse_p99_us", sse99 as f64 / 1e3)
    .with(
        "sse_p999_us",
        t.sse.pct.map_or(0.0, |x| x.p999 as f64 / 1e3),
    )
    .with("peer_p50_us", n.pct.map_or(0.0, |x| x.p50 as f64 / 1e3))
    .with("peer_p99_us", peer99.map_or(0.0, |p| p as f64 / 1e3))
    .with("peer_p999_us", n.pct.map_or(0.0, |x| x.p999 as f64 / 1e3))
    .with("ws", path_json(&t.ws))
    .with("sse", path_json(&t.sse))
    .with("peer_detail", path_json(&n))
    .with("tidings_achieved_rate", t.rate)
    .with("peer_achieved_rate", peer_rate)
    .with(
        "tidings_publisher_max_behind_ms",
        t.behind.as_secs_f64() * 1e3,
    )
    .with(
        "peer_publisher_max_behind_ms",
        peer_behind.as_secs_f64() * 1e3,
    ))
}
