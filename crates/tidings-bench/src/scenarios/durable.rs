//! `durable`: acknowledged appends/s to the SQLite log against peers of
//! the same durability class, at the same number of appends in flight.
//!
//! For each `--in-flight` count N (default 32 and 1,000), two pairs:
//!
//! * **class `batch`** — Tidings: `tidings-sqlite` with
//!   `Durability::Batch` (fsync at most every `--batch-interval-ms`, 10 ms;
//!   an ack does not wait for it) against **JetStream's default** file
//!   store on the machine's nats-server (127.0.0.1:4222), which acks after
//!   writing and syncs every 2 minutes (`sync_interval`). Tidings' window
//!   of loss on power failure is 10 ms, JetStream's up to 2 min: the class
//!   is "acked before fsync", and Tidings is the more durable of the two.
//! * **class `sync`** — Tidings: `Durability::Sync` (acked after the WAL
//!   fsync; group commit shares one fsync among the queued appends)
//!   against **the fsync limit of this disk**, measured in the same run,
//!   since nats-server 2.9 has no per-message sync: a minimal log that does
//!   nothing but append the same JSON records to a file in the same
//!   directory and `fdatasync`, with group commit (one writer thread drains
//!   every queued record, writes them, syncs once, acks them all), N in
//!   flight. The raw disk figure, a loop of 4 KiB write + fdatasync
//!   (`fsync_loop_per_s`, one at a time), is measured in the same run too;
//!   `N × fsync_loop_per_s` is the ceiling no fsync-per-ack log reaches at N.
//!
//! In flight means the same on every side: Tidings and the appender run N
//! tokio tasks each awaiting its one-event append in a loop; JetStream one
//! task keeping N publish-ack futures pending (async-nats pipelines them on
//! one connection). Everything runs on the same 2-worker runtime; the
//! SQLite log has its writer thread, the appender its writer thread,
//! nats-server is its own process. The payload is the JSON of the same
//! `NewEvent` everywhere. An append or ack that fails is a failed run.
//!
//! Each pair runs `--runs` times, the sides taking turns going first. The
//! headline is the `batch` pair at the first in-flight count; every pair is
//! in `pairs`. Goal: Tidings/JetStream >= 2.0 in the `batch` class at every
//! in-flight count (the `sync` pairs are reported, no goal).

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use serde_json::json;
use tidings_core::{EventLog, NewEvent};
use tidings_sqlite::{Durability, OpenCheck, SqliteLog, SqliteOptions};

use crate::nats;
use crate::progress;
use crate::repeat::{alternate, ratio, unsound, verdict, Alternated, Run, Series};
use crate::Report;

/// Options of `durable`.
#[derive(Debug, Clone, clap::Args)]
pub struct Args {
    /// Appends in flight on every side (each count is one pair per class).
    #[arg(long, value_delimiter = ',', default_value = "32,1000")]
    pub in_flight: Vec<usize>,
    /// Seconds per side per run.
    #[arg(long, default_value_t = 3.0)]
    pub duration_secs: f64,
    /// The `batch` class: Tidings syncs at most this often.
    #[arg(long, default_value_t = 10)]
    pub batch_interval_ms: u64,
    /// The peer nats-server.
    #[arg(long, default_value = nats::NATS_URL)]
    pub nats_url: String,
    /// Directory for the SQLite file (default: a temporary directory).
    #[arg(long)]
    pub dir: Option<std::path::PathBuf>,
}

/// The event both sides write.
pub fn event(i: u64) -> NewEvent {
    NewEvent::new(
        "orders.placed",
        json!({"order": i, "sku": "ABC-123", "qty": 2, "note": "bench"}),
    )
    .expect("a valid name")
    .source("bench")
}

fn tempdir(args: &Args) -> anyhow::Result<tempfile::TempDir> {
    Ok(match &args.dir {
        Some(d) => tempfile::tempdir_in(d)?,
        None => tempfile::tempdir()?,
    })
}

/// Runs `n` tasks, each awaiting `append(i)` in a loop, for `secs`;
/// returns (acked, elapsed seconds, mean ack latency in ms).
async fn closed_loop<F, Fut>(
    n: usize,
    secs: f64,
    label: &str,
    append: F,
) -> anyhow::Result<(u64, f64, f64)>
where
    F: Fn(u64) -> Fut + Clone + Send + 'static,
    Fut: std::future::Future<Output = anyhow::Result<()>> + Send,
{
    let stop = Arc::new(AtomicBool::new(false));
    let acked = Arc::new(AtomicU64::new(0));
    let lat_us = Arc::new(AtomicU64::new(0));
    let pb = progress::timed(secs, label);
    let start = Instant::now();
    let tasks: Vec<_> = (0..n)
        .map(|p| {
            let (stop, acked, lat_us, append) =
                (stop.clone(), acked.clone(), lat_us.clone(), append.clone());
            tokio::spawn(async move {
                let mut i = p as u64 * 1_000_000_000;
                while !stop.load(Ordering::Relaxed) {
                    i += 1;
                    let t = Instant::now();
                    append(i).await?;
                    lat_us.fetch_add(t.elapsed().as_micros() as u64, Ordering::Relaxed);
                    acked.fetch_add(1, Ordering::Relaxed);
                }
                Ok::<_, anyhow::Error>(())
            })
        })
        .collect();
    while start.elapsed().as_secs_f64() < secs {
        tokio::time::sleep(Duration::from_millis(100)).await;
        pb.set_position(start.elapsed().as_millis() as u64);
    }
    stop.store(true, Ordering::Relaxed);
    for t in tasks {
        t.await??;
    }
    let elapsed = start.elapsed().as_secs_f64();
    pb.finish_and_clear();
    let n = acked.load(Ordering::Relaxed);
    Ok((
        n,
        elapsed,
        lat_us.load(Ordering::Relaxed) as f64 / n.max(1) as f64 / 1000.0,
    ))
}

/// Tidings: `n` one-event appenders on a fresh SQLite log.
async fn tidings(args: &Args, durability: Durability, n: usize) -> anyhow::Result<Run> {
    let dir = tempdir(args)?;
    let log = SqliteLog::open(
        dir.path().join("durable.db"),
        SqliteOptions {
            durability,
            check_on_open: OpenCheck::Off,
            ..SqliteOptions::default()
        },
    )?;
    let l = log.clone();
    let (acked, elapsed, mean_ack_ms) =
        closed_loop(n, args.duration_secs, "tidings sqlite appends", move |i| {
            let l = l.clone();
            async move {
                l.append(vec![event(i)], None)
                    .await
                    .context("a Tidings append failed")?;
                Ok(())
            }
        })
        .await?;
    let stats = log.stats();
    // Every appender waited for its acks, one event each: the log holds
    // exactly as many events as were acknowledged.
    let stored = log.last_seq();
    log.close_blocking()?;
    Ok(Run::of(acked as f64 / elapsed)
        .lost(acked.abs_diff(stored))
        .detail(json!({
            "groups": stats.groups,
            "fsyncs": stats.syncs,
            "events_per_group": stats.events_appended as f64 / stats.groups.max(1) as f64,
            "largest_group": stats.largest_group,
            "mean_ack_ms": mean_ack_ms,
        })))
}

/// The fsync-limit peer: a file appended to by one writer thread that
/// drains every queued record, writes them, `fdatasync`s once and acks
/// them all; `n` one-record appenders.
async fn appender(args: &Args, n: usize) -> anyhow::Result<Run> {
    use std::io::Write;
    type Job = (Vec<u8>, tokio::sync::oneshot::Sender<std::io::Result<()>>);
    let dir = tempdir(args)?;
    let mut file = std::fs::File::create(dir.path().join("append.log"))?;
    let (tx, rx) = std::sync::mpsc::channel::<Job>();
    let syncs = Arc::new(AtomicU64::new(0));
    let s2 = syncs.clone();
    let writer = std::thread::Builder::new()
        .name("bench-appender".into())
        .spawn(move || {
            let mut buf = Vec::new();
            let mut acks = Vec::new();
            while let Ok((rec, ack)) = rx.recv() {
                buf.extend_from_slice(&rec);
                acks.push(ack);
                while let Ok((rec, ack)) = rx.try_recv() {
                    buf.extend_from_slice(&rec);
                    acks.push(ack);
                }
                let r = file.write_all(&buf).and_then(|_| file.sync_data());
                s2.fetch_add(1, Ordering::Relaxed);
                for a in acks.drain(..) {
                    let _ = a.send(
                        r.as_ref()
                            .map(|_| ())
                            .map_err(|e| std::io::Error::new(e.kind(), e.to_string())),
                    );
                }
                buf.clear();
            }
        })?;
    let t = tx.clone();
    let result = closed_loop(n, args.duration_secs, "fsync appender", move |i| {
        let t = t.clone();
        async move {
            let mut rec = serde_json::to_vec(&event(i))?;
            rec.push(b'\n');
            let (ack, done) = tokio::sync::oneshot::channel();
            t.send((rec, ack))
                .map_err(|_| anyhow::anyhow!("the appender's writer stopped"))?;
            done.await
                .context("the appender's writer dropped an ack")?
                .context("append + fdatasync failed")?;
            Ok(())
        }
    })
    .await;
    drop(tx);
    let _ = writer.join();
    let (acked, elapsed, mean_ack_ms) = result?;
    let syncs = syncs.load(Ordering::Relaxed);
    Ok(Run::of(acked as f64 / elapsed).detail(json!({
        "fsyncs": syncs,
        "events_per_fsync": acked as f64 / syncs.max(1) as f64,
        "mean_ack_ms": mean_ack_ms,
    })))
}

/// JetStream's default file store, `n` publish acks in flight.
async fn jetstream(args: &Args, n: usize) -> anyhow::Result<Run> {
    use async_nats::jetstream;
    let client = nats::connect(&args.nats_url, "durable").await?;
    let js = jetstream::new(client.clone());
    let u = nats::unique();
    let name = format!("TIDINGS_BENCH_{u}");
    let subject = format!("tidingsbench.{u}.orders");
    js.create_stream(jetstream::stream::Config {
        name: name.clone(),
        subjects: vec![subject.clone()],
        storage: jetstream::stream::StorageType::File,
        ..Default::default()
    })
    .await
    .with_context(|| {
        format!(
            "cannot create JetStream stream {name} at {} (is JetStream enabled: nats-server -js?)",
            args.nats_url
        )
    })?;
    let result = async {
        let pb = progress::timed(args.duration_secs, "jetstream publishes");
        let budget = Duration::from_secs_f64(args.duration_secs);
        let mut inflight = VecDeque::with_capacity(n);
        let mut acked = 0u64;
        let mut i = 0u64;
        let start = Instant::now();
        while start.elapsed() < budget {
            for _ in 0..16 {
                i += 1;
                let payload = serde_json::to_vec(&event(i))?;
                let ack = js.publish(subject.clone(), payload.into()).await?;
                inflight.push_back(ack);
                if inflight.len() >= n {
                    if let Some(f) = inflight.pop_front() {
                        f.await?;
                        acked += 1;
                    }
                }
            }
            pb.set_position(start.elapsed().as_millis() as u64);
        }
        while let Some(f) = inflight.pop_front() {
            f.await?;
            acked += 1;
        }
        let el = start.elapsed().as_secs_f64();
        pb.finish_and_clear();
        // Every publish was acknowledged before this: the stream holds
        // exactly as many messages.
        let stored = js.get_stream(&name).await?.info().await?.state.messages;
        Ok::<_, anyhow::Error>(Run::of(acked as f64 / el).lost(acked.abs_diff(stored)))
    }
    .await;
    if let Err(e) = js.delete_stream(&name).await {
        eprintln!("warning: could not delete JetStream stream {name}: {e}");
    }
    result
}

/// 4 KiB write + fdatasync, one at a time, for `secs`, in the directory
/// the logs use: fsyncs per second.
fn fsync_loop(args: &Args, secs: f64) -> anyhow::Result<Run> {
    use std::io::Write;
    let d = tempdir(args)?;
    let mut f = std::fs::File::create(d.path().join("fsync.bin"))?;
    let buf = [7u8; 4096];
    let t = Instant::now();
    let mut n = 0u64;
    while t.elapsed().as_secs_f64() < secs {
        f.write_all(&buf)?;
        f.sync_data()?;
        n += 1;
    }
    let el = t.elapsed().as_secs_f64();
    Ok(Run::of(n as f64 / el).detail(json!({"mean_ms": el * 1000.0 / n.max(1) as f64})))
}

struct Pair {
    class: &'static str,
    in_flight: usize,
    sides: Alternated,
}

impl Pair {
    fn to_json(&self, peer: &str) -> serde_json::Value {
        let (t, p) = (&self.sides.series[0], &self.sides.series[1]);
        let (met, why) = verdict(true, t, Some(p));
        let mut v = json!({
            "class": self.class,
            "in_flight": self.in_flight,
            "peer": peer,
            "ratio": ratio(t.median(), p.median()),
            "tidings_runs": t.to_json(),
            "peer_runs": p.to_json(),
            "sound": met,
            "problems": why,
        });
        if let Some(l) = self.sides.series.get(2) {
            v["fsync_loop_per_s"] = l.to_json();
            v["ceiling_per_s"] = json!(l.median().map(|f| f * self.in_flight as f64));
            v["ratio_to_ceiling"] = json!(ratio(
                t.median(),
                l.median().map(|f| f * self.in_flight as f64)
            ));
        }
        v
    }
}

const JS_PEER: &str = "JetStream file store, default sync (every 2 min), async publish";
const FSYNC_PEER: &str = "the disk's fsync limit: file append + fdatasync per group, group commit";

/// Runs the scenario: every pair `runs` times.
pub fn run(args: &Args, runs: usize) -> anyhow::Result<Report> {
    anyhow::ensure!(
        !args.in_flight.is_empty() && args.in_flight.iter().all(|&n| n > 0),
        "--in-flight needs one or more positive counts"
    );
    anyhow::ensure!(args.duration_secs > 0.0, "--duration-secs must be positive");
    let batch = Durability::Batch {
        interval: Duration::from_millis(args.batch_interval_ms.max(1)),
    };
    let rt = super::runtime()?;
    progress::phase(&format!(
        "durable: in flight {:?}; sqlite batch vs JetStream, sqlite sync vs the disk's fsync limit; {runs} runs x {} s per side",
        args.in_flight, args.duration_secs
    ));
    // Check the peer first: a missing nats-server fails fast.
    rt.block_on(nats::connect(&args.nats_url, "durable"))?;
    let mut pairs = Vec::new();
    for &n in &args.in_flight {
        let sides = alternate(
            runs,
            &mut [
                ("tidings_batch", &mut |_| {
                    rt.block_on(tidings(args, batch, n))
                }),
                ("jetstream", &mut |_| rt.block_on(jetstream(args, n))),
            ],
            || {},
        );
        pairs.push(Pair {
            class: "batch",
            in_flight: n,
            sides,
        });
        let loop_secs = args.duration_secs.min(1.0);
        let sides = alternate(
            runs,
            &mut [
                ("tidings_sync", &mut |_| {
                    rt.block_on(tidings(args, Durability::Sync, n))
                }),
                ("fsync_appender", &mut |_| rt.block_on(appender(args, n))),
                ("fsync_loop", &mut |_| fsync_loop(args, loop_secs)),
            ],
            || {},
        );
        pairs.push(Pair {
            class: "sync",
            in_flight: n,
            sides,
        });
    }
    for p in &pairs {
        let (t, q) = (&p.sides.series[0], &p.sides.series[1]);
        eprintln!(
            "{:>5} in flight, class {:5}: tidings {:>9.0}/s ({:.0}–{:.0})  {} {:>9.0}/s ({:.0}–{:.0})",
            p.in_flight,
            p.class,
            t.median().unwrap_or(f64::NAN),
            t.min().unwrap_or(f64::NAN),
            t.max().unwrap_or(f64::NAN),
            q.name,
            q.median().unwrap_or(f64::NAN),
            q.min().unwrap_or(f64::NAN),
            q.max().unwrap_or(f64::NAN),
        );
    }
    let batch_pairs: Vec<&Pair> = pairs.iter().filter(|p| p.class == "batch").collect();
    let met_all = batch_pairs.iter().all(|p| {
        let (t, q): (&Series, &Series) = (&p.sides.series[0], &p.sides.series[1]);
        verdict(
            ratio(t.median(), q.median()).is_some_and(|r| r >= 2.0),
            t,
            Some(q),
        )
        .0
    });
    // A failed or lossy run in any pair (the sync pairs too) blocks the
    // goal: the headline's through `compared`, the others' below.
    let head = batch_pairs[0];
    // The other pairs' problems (the headline's are `compared`'s).
    let others_why: Vec<String> = pairs
        .iter()
        .filter(|p| !std::ptr::eq(*p, head))
        .flat_map(|p| {
            let label = format!("{} at {} in flight", p.class, p.in_flight);
            verdict(true, &p.sides.series[0], Some(&p.sides.series[1]))
                .1
                .into_iter()
                .map(move |w| format!("{label}: {w}"))
        })
        .collect();
    // The sync pairs' fsync loop (their ceiling) is published too.
    let loops_why: Vec<String> = pairs
        .iter()
        .flat_map(|p| p.sides.series.get(2))
        .flat_map(unsound)
        .collect();
    let pairs_json: Vec<_> = pairs
        .iter()
        .map(|p| {
            p.to_json(if p.class == "batch" {
                JS_PEER
            } else {
                FSYNC_PEER
            })
        })
        .collect();
    Ok(Report::compared(
        "durable",
        JS_PEER,
        "class batch: ratio >= 2.0 vs JetStream at every in-flight count",
        met_all,
        &head.sides.series[0],
        Some(&head.sides.series[1]),
    )
    .orders(&head.sides)
    .with("class", "batch")
    .with("in_flight", head.in_flight)
    .with("batch_interval_ms", args.batch_interval_ms)
    .with("duration_secs", args.duration_secs)
    .with("pairs", pairs_json)
    .blocked_also("", others_why)
    .blocked_also("", loops_why))
}
