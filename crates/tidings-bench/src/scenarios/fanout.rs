//! `fanout`: events delivered per second from one publisher to
//! `--subscribers` (100) subscribers over loopback, every subscriber
//! receiving every event.
//!
//! * Tidings: a server started in this process on its own runtime (see
//!   [`crate::clients::LocalServer`]: its workers are not the clients'),
//!   store `memory:` by default with retention raised to hold the run, or
//!   `--store sqlite` with `--durability` (default `none`); subscribers are
//!   tokio-tungstenite clients of `/ws?pattern=fan.>`; the publisher POSTs
//!   JSON arrays of `--batch` (100) events to `/events`, one request at a
//!   time, so publishing is not the bottleneck.
//! * Peer: NATS core on the machine's nats-server: 100 async-nats
//!   connections with one subscription each, one publisher connection
//!   publishing the same envelope JSON (`client.publish` per event, then
//!   `flush`).
//!
//! The clock runs from the first publish until the last subscriber has
//! seen the last event; `per_s` = deliveries (events × subscribers) per
//! second. Every subscriber checks its sequence numbers (WebSocket: the
//! envelope's `seq`; NATS: the same `seq` inside the payload) and the loss
//! of each side (gaps, lag notices, events never received within
//! `--idle-secs` of no progress) is reported; loss on either side blocks
//! the goal. Each run starts a fresh server and fresh NATS connections;
//! the sides take turns going first. Goal: ratio of medians >= 1.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{ensure, Context, Result};
use bytes::Bytes;
use futures_util::StreamExt;
use serde_json::json;
use tidings_core::NewEvent;
use tokio::task::JoinHandle;
use tokio_tungstenite::tungstenite::Message;

use crate::clients::{lag_notice, q, ws_subscribe, LocalServer, SeqTracker, StoreKind};
use crate::nats;
use crate::progress;
use crate::repeat::{alternate, Run};
use crate::stats::json_u64;
use crate::Report;

/// Options of `fanout`.
#[derive(Debug, Clone, clap::Args)]
pub struct Args {
    /// Events published.
    #[arg(long, default_value_t = 20_000)]
    pub events: u64,
    /// Subscribers, each receiving every event.
    #[arg(long, default_value_t = 100)]
    pub subscribers: usize,
    /// Events per HTTP POST.
    #[arg(long, default_value_t = 100)]
    pub batch: usize,
    /// Where the Tidings server keeps its log.
    #[arg(long, value_enum, default_value_t = StoreKind::Memory)]
    pub store: StoreKind,
    /// Durability of `--store sqlite`: sync, batch or none.
    #[arg(long, default_value = "none")]
    pub durability: String,
    /// Give up waiting after this many seconds without progress.
    #[arg(long, default_value_t = 10.0)]
    pub idle_secs: f64,
    /// The peer nats-server.
    #[arg(long, default_value = nats::NATS_URL)]
    pub nats_url: String,
}

/// What one side measured.
struct Side {
    deliveries_per_s: f64,
    elapsed: f64,
    publish_secs: f64,
    loss: u64,
    gaps: u64,
    lagged: u64,
    duplicates: u64,
}

#[derive(Default)]
struct Sub {
    tracker: SeqTracker,
    finished: Option<Instant>,
}

type Shared = Arc<Mutex<Sub>>;

/// Records one received message text's seq; true when the subscriber has
/// everything up to `total`.
fn record(sub: &Shared, text: &str, total: u64, received: &AtomicU64) -> bool {
    let mut s = sub.lock().unwrap_or_else(|e| e.into_inner());
    if let Some((missed, resume_from)) = lag_notice(text) {
        s.tracker.lagged(missed, resume_from);
    } else if let Some(seq) = json_u64(text, "seq") {
        s.tracker.event(seq);
        received.fetch_add(1, Ordering::Relaxed);
    }
    if s.tracker.done(total) {
        s.finished = Some(Instant::now());
        return true;
    }
    false
}

/// Waits for the subscriber tasks (or for `idle` without progress, then
/// aborts them) and sums up.
async fn collect(
    tasks: Vec<(JoinHandle<()>, Shared)>,
    progress_count: &AtomicU64,
    total: u64,
    start: Instant,
    publish_secs: f64,
    idle: Duration,
    label: &str,
) -> Side {
    let subs = tasks.len() as u64;
    let pb = progress::bar(total * subs, label);
    let mut last = (0, Instant::now());
    loop {
        let n = progress_count.load(Ordering::Relaxed);
        pb.set_position(n);
        if tasks.iter().all(|(t, _)| t.is_finished()) {
            break;
        }
        if n != last.0 {
            last = (n, Instant::now());
        } else if last.1.elapsed() > idle {
            eprintln!("{label}: no progress for {idle:?}; counting the rest as lost");
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    pb.finish_and_clear();
    let mut side = Side {
        deliveries_per_s: 0.0,
        elapsed: 0.0,
        publish_secs,
        loss: 0,
        gaps: 0,
        lagged: 0,
        duplicates: 0,
    };
    let mut received = 0u64;
    let mut end = start;
    for (t, shared) in tasks {
        t.abort();
        let _ = t.await;
        let s = shared.lock().unwrap_or_else(|e| e.into_inner());
        received += s.tracker.received;
        side.loss += s.tracker.lost(total);
        side.gaps += s.tracker.gaps;
        side.lagged += s.tracker.lagged;
        side.duplicates += s.tracker.duplicates;
        // A subscriber that never finished ends the clock now.
        end = end.max(s.finished.unwrap_or_else(Instant::now));
    }
    side.elapsed = (end - start).as_secs_f64();
    side.deliveries_per_s = received as f64 / side.elapsed;
    side
}

fn envelope_data(i: u64) -> serde_json::Value {
    json!({"i": i, "username": "Gribnak", "from_room": "tavern", "to_room": "street"})
}

async fn tidings(args: &Args) -> Result<Side> {
    let srv = LocalServer::start(args.store, args.events + 10_000, &args.durability).await?;
    let url = format!("{}/ws?pattern={}", srv.ws_base, q("fan.>"));
    let received = Arc::new(AtomicU64::new(0));
    let total = args.events;
    let mut tasks = Vec::with_capacity(args.subscribers);
    for _ in 0..args.subscribers {
        let mut ws = ws_subscribe(&url).await?;
        let received = received.clone();
        let shared = Shared::default();
        let sub = shared.clone();
        let task = tokio::spawn(async move {
            while let Some(Ok(msg)) = ws.next().await {
                let Message::Text(t) = msg else { continue };
                if record(&sub, t.as_str(), total, &received) {
                    break;
                }
            }
        });
        tasks.push((task, shared));
    }
    // The bodies are built before the clock starts.
    let bodies: Vec<String> = (0..total)
        .collect::<Vec<_>>()
        .chunks(args.batch.max(1))
        .map(|c| {
            serde_json::to_string(
                &c.iter()
                    .map(|i| json!({"name": "fan.tick", "data": envelope_data(*i)}))
                    .collect::<Vec<_>>(),
            )
            .expect("json")
        })
        .collect();
    let http = reqwest::Client::new();
    let post_url = format!("{}/events", srv.http_base);
    let start = Instant::now();
    for body in bodies {
        let r = http
            .post(&post_url)
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
        r.bytes().await?;
    }
    let publish_secs = start.elapsed().as_secs_f64();
    let side = collect(
        tasks,
        &received,
        total,
        start,
        publish_secs,
        Duration::from_secs_f64(args.idle_secs),
        "tidings ws deliveries",
    )
    .await;
    srv.shutdown().await;
    Ok(side)
}

async fn peer(args: &Args) -> Result<Side> {
    let publisher = nats::connect(&args.nats_url, "fanout").await?;
    let subject = format!("tidingsbench.{}.fan", nats::unique());
    let received = Arc::new(AtomicU64::new(0));
    let total = args.events;
    let mut tasks = Vec::with_capacity(args.subscribers);
    let mut clients = Vec::with_capacity(args.subscribers);
    for _ in 0..args.subscribers {
        let c = nats::connect(&args.nats_url, "fanout").await?;
        let mut sub = c.subscribe(subject.clone()).await?;
        c.flush().await?;
        clients.push(c);
        let received = received.clone();
        let shared = Shared::default();
        let state = shared.clone();
        let task = tokio::spawn(async move {
            while let Some(msg) = sub.next().await {
                let text = std::str::from_utf8(&msg.payload).unwrap_or("");
                if record(&state, text, total, &received) {
                    break;
                }
            }
        });
        tasks.push((task, shared));
    }
    // The same envelope JSON Tidings delivers, built before the clock.
    let payloads: Vec<Bytes> = (1..=total)
        .map(|seq| {
            let e = NewEvent::new("fan.tick", envelope_data(seq - 1))
                .expect("valid name")
                .source("http")
                .commit(seq);
            Bytes::from(serde_json::to_vec(&e).expect("json"))
        })
        .collect();
    let start = Instant::now();
    for p in payloads {
        publisher.publish(subject.clone(), p).await?;
    }
    publisher.flush().await?;
    let publish_secs = start.elapsed().as_secs_f64();
    let side = collect(
        tasks,
        &received,
        total,
        start,
        publish_secs,
        Duration::from_secs_f64(args.idle_secs),
        "nats core deliveries",
    )
    .await;
    drop(clients);
    Ok(side)
}

fn side_json(s: &Side) -> serde_json::Value {
    json!({
        "deliveries_per_s": s.deliveries_per_s,
        "elapsed_s": s.elapsed,
        "publish_s": s.publish_secs,
        "loss": s.loss,
        "gaps": s.gaps,
        "lagged": s.lagged,
        "duplicates": s.duplicates,
    })
}

fn side_run(s: &Side) -> Run {
    // A duplicate breaks "every event once" as a missing one does.
    Run::of(s.deliveries_per_s)
        .lost(s.loss + s.duplicates)
        .detail(side_json(s))
}

/// Runs the scenario: `runs` runs per side, fresh servers and connections.
pub fn run(args: &Args, runs: usize) -> Result<Report> {
    let rt = super::runtime()?;
    progress::phase(&format!(
        "fanout: {} events to {} subscribers, {runs} runs; tidings over WebSocket ({:?} store, {} events per POST) vs nats core",
        args.events, args.subscribers, args.store, args.batch
    ));
    rt.block_on(nats::connect(&args.nats_url, "fanout"))?;
    let sides = alternate(
        runs,
        &mut [
            ("tidings", &mut |_| {
                let t = rt.block_on(tidings(args))?;
                eprintln!(
                    "tidings: {:.0} deliveries/s ({:.2} s, publishing took {:.2} s), loss {}",
                    t.deliveries_per_s, t.elapsed, t.publish_secs, t.loss
                );
                Ok(side_run(&t))
            }),
            ("nats", &mut |_| {
                let p = rt.block_on(peer(args))?;
                eprintln!(
                    "nats:    {:.0} deliveries/s ({:.2} s, publishing took {:.2} s), loss {}",
                    p.deliveries_per_s, p.elapsed, p.publish_secs, p.loss
                );
                Ok(side_run(&p))
            }),
        ],
        || {},
    );
    let (t, p) = (&sides.series[0], &sides.series[1]);
    let met = crate::repeat::ratio(t.median(), p.median()).is_some_and(|r| r >= 1.0);
    Ok(Report::compared(
        "fanout",
        "NATS core publish to N subscriber connections",
        "ratio >= 1.0, no loss on either side",
        met,
        t,
        Some(p),
    )
    .orders(&sides)
    .with("events", args.events)
    .with("subscribers", args.subscribers)
    .with("batch_per_post", args.batch)
    .with(
        "store",
        match args.store {
            StoreKind::Memory => "memory: (retention holds the run)".to_owned(),
            StoreKind::Sqlite => format!("sqlite, durability {}", args.durability),
        },
    )
    .with("server_runtime_workers", crate::clients::SERVER_WORKERS))
}
