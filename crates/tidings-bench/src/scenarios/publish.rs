//! `publish`: acknowledged single-event HTTP publishes per second, the same
//! server binary on each store, side by side.
//!
//! # What is compared
//!
//! A `tidings serve` **process** per store (fresh for every run, the
//! binary `--tidings-bin`, by default the one next to this executable), and
//! `--publishers` closed-loop clients, each sending one event per
//! `POST /events` and waiting for its answer before the next. The stores:
//! SQLite (`sync`, the server's default), NATS JetStream and Redis Streams,
//! each on a stream or key of its own per run (deleted afterwards). The
//! headline compares the NATS-backed server with the SQLite-backed one;
//! Redis is a side figure against the same SQLite runs.
//!
//! This is what the engine work of issue 10 is for: whether a server on
//! an engine keeps up with one on the embedded store. There is no outside
//! peer, so the goal is only that the measurement is sound: every
//! acknowledged event must be in the log once (the answered seqs are
//! distinct and the log's last seq is their count), else the run counts as
//! lost events.
//!
//! Each run measures every store in turn, the order alternating between
//! runs ([`crate::repeat`]); `--warmup-secs` of publishing precede the
//! `--duration-secs` counted.

use std::io::{Read, Write};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{ensure, Context, Result};

use crate::process::{default_tidings_bin, last_seq, post_events, SeqOnly, ServerProcess};
use crate::progress;
use crate::repeat::{alternate, ratio, unsound, Run};
use crate::Report;

/// Options of `publish`.
#[derive(Debug, Clone, clap::Args)]
pub struct Args {
    /// Closed-loop publishers, one event per POST each.
    #[arg(long, default_value_t = 32)]
    pub publishers: usize,
    /// Seconds counted per store per run.
    #[arg(long, default_value_t = 5)]
    pub duration_secs: u64,
    /// Seconds of publishing before counting starts.
    #[arg(long, default_value_t = 1)]
    pub warmup_secs: u64,
    /// NATS with JetStream, `host:port`.
    #[arg(long, default_value = "127.0.0.1:4222")]
    pub nats_addr: String,
    /// Redis `host:port`.
    #[arg(long, default_value = "127.0.0.1:6379")]
    pub redis_addr: String,
    /// The `tidings` binary to measure.
    #[arg(long)]
    pub tidings_bin: Option<PathBuf>,
}

#[derive(Clone, Copy, Debug)]
enum Store {
    Sqlite,
    Nats,
    Redis,
}

/// What one store measured in one run.
struct Measured {
    per_s: f64,
    /// Acknowledged events the log does not hold exactly once.
    lost: u64,
}

/// A fresh server on `store` (its stream or key named after `tag`).
async fn start(
    args: &Args,
    bin: &std::path::Path,
    store: Store,
    tag: &str,
) -> Result<ServerProcess> {
    let config = match store {
        Store::Sqlite => String::new(),
        Store::Nats => format!(
            "store = \"nats://{}?stream=BENCH_PUBLISH_{tag}\"\n",
            args.nats_addr
        ),
        Store::Redis => format!(
            "store = \"redis://{}?key=bench-publish-{tag}\"\n",
            args.redis_addr
        ),
    };
    ServerProcess::start(bin, &config, &[]).await.map_err(|e| {
        e.error
            .context(format!("{store:?} server: {}", e.stderr.trim()))
    })
}

/// Removes the stream or key a run used.
async fn clean_up(args: &Args, store: Store, tag: &str) -> Result<()> {
    match store {
        Store::Sqlite => Ok(()), // in the server's temporary directory
        Store::Nats => {
            let client = crate::nats::connect(&args.nats_addr, "publish").await?;
            let js = async_nats::jetstream::new(client);
            js.delete_stream(format!("BENCH_PUBLISH_{tag}")).await?;
            Ok(())
        }
        Store::Redis => {
            // UNLINK of every key the log uses (no Redis client here).
            let prefix = format!("bench-publish-{tag}");
            let keys = [
                prefix.clone(),
                format!("{prefix}:seq"),
                format!("{prefix}:cursors"),
                format!("{prefix}:consumers"),
            ];
            let mut cmd = format!("*{}\r\n$6\r\nUNLINK\r\n", keys.len() + 1);
            for k in &keys {
                cmd.push_str(&format!("${}\r\n{k}\r\n", k.len()));
            }
            let mut s = std::net::TcpStream::connect(&args.redis_addr)?;
            s.set_read_timeout(Some(Duration::from_secs(5)))?;
            s.write_all(cmd.as_bytes())?;
            let mut reply = [0u8; 64];
            let n = s.read(&mut reply)?;
            ensure!(
                reply[..n].starts_with(b":"),
                "UNLINK answered {:?}",
                String::from_utf8_lossy(&reply[..n])
            );
            Ok(())
        }
    }
}

/// One run on one store: publishers POST until the warm-up and the counted
/// time are over; returns acknowledged events per counted second.
async fn measure(args: &Args, bin: &std::path::Path, store: Store, run: usize) -> Result<Measured> {
    let tag = format!("{}_{run}_{store:?}", crate::nats::unique());
    let server = start(args, bin, store, &tag).await?;
    let base = server.http();
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(args.publishers)
        .build()?;
    let counting = Arc::new(AtomicBool::new(false));
    let stop = Arc::new(AtomicBool::new(false));
    let tasks: Vec<_> = (0..args.publishers)
        .map(|p| {
            let (http, counting, stop) = (http.clone(), counting.clone(), stop.clone());
            let base = base.clone();
            tokio::spawn(async move {
                let (mut seqs, mut counted) = (Vec::new(), 0u64);
                let mut n = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    n += 1;
                    let body =
                        format!("{{\"name\":\"bench.publish\",\"data\":{{\"p\":{p},\"n\":{n}}}}}");
                    let bytes = post_events(&http, &base, body).await?;
                    let e: SeqOnly =
                        serde_json::from_slice(&bytes).context("POST /events answer has no seq")?;
                    seqs.push(e.seq);
                    if counting.load(Ordering::Relaxed) {
                        counted += 1;
                    }
                }
                Ok::<_, anyhow::Error>((seqs, counted))
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_secs(args.warmup_secs)).await;
    counting.store(true, Ordering::Relaxed);
    let t = Instant::now();
    tokio::time::sleep(Duration::from_secs(args.duration_secs)).await;
    counting.store(false, Ordering::Relaxed);
    let elapsed = t.elapsed().as_secs_f64();
    stop.store(true, Ordering::Relaxed);
    let (mut seqs, mut counted) = (Vec::new(), 0u64);
    for t in tasks {
        let (s, c) = t.await??;
        seqs.extend(s);
        counted += c;
    }
    let last = last_seq(&http, &base).await?;
    server.stop().await;
    if let Err(e) = clean_up(args, store, &tag).await {
        eprintln!("warning: cleaning up after {store:?}: {e:#}");
    }
    Ok(Measured {
        per_s: counted as f64 / elapsed,
        lost: not_exactly_once(seqs, last),
    })
}

/// How far the answered `seqs` are from "every acknowledged event in the
/// log exactly once, and nothing else": repeated seqs, plus the seqs of
/// `1..=last` (the log started empty) that no answer named, plus answered
/// seqs the log does not hold (above `last`).
fn not_exactly_once(mut seqs: Vec<u64>, last: u64) -> u64 {
    let acked = seqs.len() as u64;
    seqs.sort_unstable();
    seqs.dedup();
    let repeated = acked - seqs.len() as u64;
    let beyond = seqs.iter().filter(|&&s| s == 0 || s > last).count() as u64;
    let unnamed = last - (seqs.len() as u64 - beyond).min(last);
    repeated + unnamed + beyond
}

/// Runs the scenario, `runs` times per store.
pub fn run(args: &Args, runs: usize) -> Result<Report> {
    let bin = match &args.tidings_bin {
        Some(b) => b.clone(),
        None => default_tidings_bin()?,
    };
    progress::phase(&format!(
        "publish: {} publishers x 1 event per POST, {} s (+{} s warm-up) per store, {runs} runs, {}",
        args.publishers,
        args.duration_secs,
        args.warmup_secs,
        bin.display()
    ));
    let rt = tokio::runtime::Runtime::new()?;
    let pb = progress::bar(runs.max(1) as u64 * 3, "publish");
    let side = |store: Store, run: usize| -> Result<Run> {
        let m = rt.block_on(measure(args, &bin, store, run))?;
        Ok(Run::of(m.per_s).lost(m.lost))
    };
    let (mut sqlite, mut nats, mut redis) = (
        |r| side(Store::Sqlite, r),
        |r| side(Store::Nats, r),
        |r| side(Store::Redis, r),
    );
    let sides = alternate(
        runs,
        &mut [
            ("nats", &mut nats),
            ("sqlite", &mut sqlite),
            ("redis", &mut redis),
        ],
        || pb.inc(1),
    );
    pb.finish_and_clear();
    let [n, s, r] = [0, 1, 2].map(|i| sides.series[i].median());
    eprintln!(
        "publish: acked/s  nats {:.0}  sqlite {:.0}  redis {:.0}  nats/sqlite {:.2}  redis/sqlite {:.2}",
        n.unwrap_or(f64::NAN),
        s.unwrap_or(f64::NAN),
        r.unwrap_or(f64::NAN),
        ratio(n, s).unwrap_or(f64::NAN),
        ratio(r, s).unwrap_or(f64::NAN),
    );
    Ok(Report::compared(
        "publish",
        "the same server binary on SQLite (sync)",
        "informational: no loss on any store (tidings = the NATS-backed server)",
        // Sound: the NATS and SQLite sides are `compared`'s, Redis is added.
        true,
        &sides.series[0],
        Some(&sides.series[1]),
    )
    .blocked_also("", unsound(&sides.series[2]))
    .orders(&sides)
    .with("publishers", args.publishers as u64)
    .with("tidings_bin", bin.display().to_string())
    .with("redis_runs", sides.series[2].to_json())
    .with("ratio_redis_vs_sqlite", ratio(r, s)))
}

#[cfg(test)]
mod tests {
    use super::not_exactly_once;

    #[test]
    fn loss_counts_repeats_unanswered_and_unlogged_seqs() {
        // (answered seqs, the log's last seq, faults, why)
        let cases: [(&[u64], u64, u64, &str); 6] = [
            (&[3, 1, 2], 3, 0, "each once"),
            (
                &[1, 2, 2],
                3,
                2,
                "2 answered twice; 3 logged, never answered",
            ),
            (
                &[1, 2, 4],
                3,
                2,
                "4 answered, not logged; 3 logged, never answered",
            ),
            (&[1, 2, 3], 5, 2, "two events nobody was told of"),
            (&[1, 2, 3], 2, 1, "an answered seq not in the log"),
            (&[], 0, 0, "nothing at all"),
        ];
        for (seqs, last, faults, why) in cases {
            assert_eq!(not_exactly_once(seqs.to_vec(), last), faults, "{why}");
        }
    }
}
