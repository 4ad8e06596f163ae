//! `durable`: acknowledged appends/s to the SQLite log against JetStream.
//!
//! * Tidings: `tidings-sqlite` in a temporary directory, `Durability::Sync`
//!   by default (an append is acknowledged after the WAL fsync; group
//!   commit shares one fsync among the queued appends), `--publishers`
//!   (32) tokio tasks each awaiting `EventLog::append` of one event in a
//!   loop for `--duration-secs`.
//! * Peer: JetStream on the machine's nats-server (127.0.0.1:4222), a
//!   stream with a unique name and file storage, one publisher keeping
//!   `--in-flight` (1,000) `jetstream.publish` ack futures in flight. Note
//!   that JetStream acknowledges after writing to its file store **without
//!   fsync** (nats-server's `sync_interval` defaults to 2 minutes), so the
//!   two are not equally durable: Tidings' acknowledged appends survive
//!   power loss, JetStream's do not until its next sync.
//!
//! The disk's fsync latency (4 KiB write + fdatasync, before and after the
//! Tidings run) is reported too: in `Sync` mode a group costs one fsync, so
//! with 32 one-event publishers the rate is at most 32 / fsync latency, and
//! on a shared disk that latency moves a lot between runs.
//!
//! The payload is the same on both sides: the JSON of a `NewEvent`
//! (`orders.placed`, id, time, source, a small object). Goal: ratio >= 2.

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
use crate::Report;

/// Options of `durable`.
#[derive(Debug, Clone, clap::Args)]
pub struct Args {
    /// Concurrent Tidings publishers.
    #[arg(long, default_value_t = 32)]
    pub publishers: usize,
    /// JetStream publish acks kept in flight.
    #[arg(long, default_value_t = 1000)]
    pub in_flight: usize,
    /// Seconds per side.
    #[arg(long, default_value_t = 5.0)]
    pub duration_secs: f64,
    /// Tidings durability: sync, batch (10 ms) or none.
    #[arg(long, default_value = "sync")]
    pub durability: String,
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

struct TidingsRun {
    rate: f64,
    events: u64,
    groups: u64,
    syncs: u64,
    largest_group: u64,
    mean_ack_ms: f64,
}

async fn tidings(args: &Args, durability: Durability) -> anyhow::Result<TidingsRun> {
    let dir = match &args.dir {
        Some(d) => tempfile::tempdir_in(d)?,
        None => tempfile::tempdir()?,
    };
    let log = SqliteLog::open(
        dir.path().join("durable.db"),
        SqliteOptions {
            durability,
            check_on_open: OpenCheck::Off,
            ..SqliteOptions::default()
        },
    )?;
    let stop = Arc::new(AtomicBool::new(false));
    let acked = Arc::new(AtomicU64::new(0));
    let lat_us = Arc::new(AtomicU64::new(0));
    let pb = progress::timed(args.duration_secs, "tidings sqlite appends");
    let start = Instant::now();
    let tasks: Vec<_> = (0..args.publishers)
        .map(|p| {
            let (log, stop, acked, lat_us) =
                (log.clone(), stop.clone(), acked.clone(), lat_us.clone());
            tokio::spawn(async move {
                let mut i = p as u64 * 1_000_000_000;
                while !stop.load(Ordering::Relaxed) {
                    i += 1;
                    let t = Instant::now();
                    log.append(vec![event(i)], None).await?;
                    lat_us.fetch_add(t.elapsed().as_micros() as u64, Ordering::Relaxed);
                    acked.fetch_add(1, Ordering::Relaxed);
                }
                Ok::<_, tidings_core::AppendError>(())
            })
        })
        .collect();
    while start.elapsed().as_secs_f64() < args.duration_secs {
        tokio::time::sleep(Duration::from_millis(100)).await;
        pb.set_position(start.elapsed().as_millis() as u64);
    }
    stop.store(true, Ordering::Relaxed);
    for t in tasks {
        t.await?.context("a Tidings append failed")?;
    }
    let elapsed = start.elapsed().as_secs_f64();
    pb.finish_and_clear();
    let stats = log.stats();
    log.close()?;
    let n = acked.load(Ordering::Relaxed);
    Ok(TidingsRun {
        rate: n as f64 / elapsed,
        events: stats.events_appended,
        groups: stats.groups,
        syncs: stats.syncs,
        largest_group: stats.largest_group,
        mean_ack_ms: lat_us.load(Ordering::Relaxed) as f64 / n.max(1) as f64 / 1000.0,
    })
}

async fn jetstream(args: &Args) -> anyhow::Result<f64> {
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
        let mut inflight = VecDeque::with_capacity(args.in_flight);
        let mut acked = 0u64;
        let mut i = 0u64;
        let start = Instant::now();
        while start.elapsed() < budget {
            for _ in 0..64 {
                i += 1;
                let payload = serde_json::to_vec(&event(i))?;
                let ack = js.publish(subject.clone(), payload.into()).await?;
                inflight.push_back(ack);
                if inflight.len() >= args.in_flight {
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
        Ok::<_, anyhow::Error>(acked as f64 / el)
    }
    .await;
    if let Err(e) = js.delete_stream(&name).await {
        eprintln!("warning: could not delete JetStream stream {name}: {e}");
    }
    result
}

/// Mean latency of a 4 KiB write + fdatasync in the directory the log
/// uses, in ms: the floor of one `Durability::Sync` group commit.
fn fsync_ms(dir: Option<&std::path::Path>) -> anyhow::Result<f64> {
    use std::io::Write;
    let d = match dir {
        Some(d) => tempfile::tempdir_in(d)?,
        None => tempfile::tempdir()?,
    };
    let mut f = std::fs::File::create(d.path().join("fsync.bin"))?;
    let buf = [7u8; 4096];
    let n = 100;
    let t = Instant::now();
    for _ in 0..n {
        f.write_all(&buf)?;
        f.sync_data()?;
    }
    Ok(t.elapsed().as_secs_f64() * 1000.0 / n as f64)
}

fn durability(s: &str) -> anyhow::Result<Durability> {
    Ok(match s {
        "sync" => Durability::Sync,
        "batch" => Durability::Batch {
            interval: Duration::from_millis(10),
        },
        "none" => Durability::None,
        other => anyhow::bail!("--durability {other:?}: use sync, batch or none"),
    })
}

/// Runs the scenario.
pub fn run(args: &Args) -> anyhow::Result<Report> {
    let d = durability(&args.durability)?;
    let rt = super::runtime()?;
    progress::phase(&format!(
        "durable: tidings-sqlite {:?} with {} publishers vs JetStream file store with {} acks in flight, {} s each",
        d, args.publishers, args.in_flight, args.duration_secs
    ));
    // Check the peer first: a missing nats-server fails fast.
    rt.block_on(nats::connect(&args.nats_url, "durable"))?;
    let fsync_before = fsync_ms(args.dir.as_deref())?;
    let t = rt.block_on(tidings(args, d))?;
    let fsync_after = fsync_ms(args.dir.as_deref())?;
    let peer = rt.block_on(jetstream(args))?;
    eprintln!("disk: 4 KiB write + fdatasync {fsync_before:.3} ms before, {fsync_after:.3} ms after the Tidings run");
    eprintln!(
        "tidings {:.0} acked appends/s ({} groups, {} fsyncs, largest group {}, mean ack {:.2} ms); jetstream {:.0} acked publishes/s",
        t.rate, t.groups, t.syncs, t.largest_group, t.mean_ack_ms, peer
    );
    let ratio = t.rate / peer;
    Ok(Report::new(
        "durable",
        t.rate,
        "JetStream file store, async publish (no fsync per ack: sync_interval 2 min default)",
        Some(peer),
    )
    .goal("ratio >= 2.0", ratio >= 2.0)
    .with("durability", args.durability.clone())
    .with("publishers", args.publishers)
    .with("peer_in_flight", args.in_flight)
    .with("duration_secs", args.duration_secs)
    .with("tidings_groups", t.groups)
    .with("tidings_fsyncs", t.syncs)
    .with(
        "tidings_events_per_group",
        t.events as f64 / t.groups.max(1) as f64,
    )
    .with("tidings_largest_group", t.largest_group)
    .with("tidings_mean_ack_ms", t.mean_ack_ms)
    .with("disk_fsync_ms_before", fsync_before)
    .with("disk_fsync_ms_after", fsync_after))
}
