//! Throughput figures of the Redis backend, measured in one run against one
//! Redis server (`TIDINGS_TEST_REDIS`, default `redis://127.0.0.1:6379`):
//!
//! * acknowledged appends/s through `RedisLog` (one event per append, from
//!   1 and from 32 concurrent tasks; batches of 100),
//! * the same events sent as raw `XADD`s (auto ids, no Lua, no counter, no
//!   idempotency), one per request from 32 tasks and pipelined 100 at a time,
//! * events/s delivered by `tidings_core::stream_from` on a second instance,
//!   live (while a writer appends) and catching up from the beginning.
//!
//! ```text
//! cargo run --release -p tidings-redis --example redis_figures [RUNS] [SIDE]
//! ```
//!
//! The append figures run RUNS times (default 5), alternating which side
//! goes first; the median, min and max of each side are printed. With SIDE
//! (`log` or `raw`: `redis_figures RUNS SIDE`) only that side's appends
//! from 1 task run, RUNS times, each rate printed: a process to profile,
//! or to measure with `perf stat`, one side at a time.
//!
//! All keys are created under a fresh name and deleted at the end.

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use serde_json::json;
use tidings_core::{stream_from, Delivery, EventLog, NewEvent, Position};
use tidings_redis::{RedisLog, RedisOptions};

type Error = Box<dyn std::error::Error + Send + Sync>;

fn event(i: u64) -> NewEvent {
    NewEvent::new(
        "bench.order.placed",
        json!({"order": i, "customer": "c-1042", "total": 129.5, "items": [1, 2, 3]}),
    )
    .expect("valid name")
    .source("figures")
}

/// The event's attributes as the fields of one raw `XADD` (what `RedisLog`
/// stored per event before it kept a group per entry): the raw baseline
/// writes one entry per event, however `RedisLog` packs them.
fn raw_fields(i: u64) -> Vec<(String, String)> {
    let e = event(i);
    vec![
        ("id".into(), e.id.to_string()),
        ("name".into(), e.name),
        ("source".into(), e.source.into_owned()),
        ("time".into(), e.time.timestamp_micros().to_string()),
        (
            "data".into(),
            serde_json::to_string(&e.data).expect("serialize"),
        ),
    ]
}

fn rate(n: u64, d: Duration) -> String {
    format!(
        "{:>9.0}/s  ({n} in {:.2} s)",
        n as f64 / d.as_secs_f64(),
        d.as_secs_f64()
    )
}

/// `total` events appended by `tasks` tasks, `batch` events per append.
async fn appends(log: &RedisLog, tasks: u64, total: u64, batch: u64) -> Result<Duration, Error> {
    let per_task = total / tasks / batch;
    let started = Instant::now();
    let handles: Vec<_> = (0..tasks)
        .map(|t| {
            let log = log.clone();
            tokio::spawn(async move {
                for r in 0..per_task {
                    let base = (t * per_task + r) * batch;
                    let b = (0..batch).map(|j| event(base + j)).collect();
                    log.append(b, None).await?;
                }
                Ok::<(), Error>(())
            })
        })
        .collect();
    for h in handles {
        h.await??;
    }
    Ok(started.elapsed())
}

/// `total` raw XADDs by `tasks` tasks, `pipeline` commands per round trip.
async fn raw_xadds(
    conn: &redis::aio::MultiplexedConnection,
    key: &str,
    tasks: u64,
    total: u64,
    pipeline: u64,
) -> Result<Duration, Error> {
    let per_task = total / tasks / pipeline;
    let started = Instant::now();
    let handles: Vec<_> = (0..tasks)
        .map(|t| {
            let mut conn = conn.clone();
            let key = key.to_owned();
            tokio::spawn(async move {
                for r in 0..per_task {
                    let mut p = redis::pipe();
                    for j in 0..pipeline {
                        let i = (t * per_task + r) * pipeline + j;
                        p.cmd("XADD").arg(&key).arg("*");
                        for (f, v) in raw_fields(i) {
                            p.arg(f).arg(v);
                        }
                        p.ignore();
                    }
                    p.query_async::<()>(&mut conn).await?;
                }
                Ok::<(), Error>(())
            })
        })
        .collect();
    for h in handles {
        h.await??;
    }
    Ok(started.elapsed())
}

/// Reads `n` events from `s`, returning how long it took.
async fn drain(mut s: tidings_core::LogStream, n: u64) -> Result<Duration, Error> {
    let started = Instant::now();
    let mut got = 0;
    while got < n {
        match tokio::time::timeout(Duration::from_secs(30), s.next()).await {
            Ok(Some(Ok(Delivery::Event(_)))) => got += 1,
            Ok(Some(Ok(lag))) => return Err(format!("unexpected {lag:?}").into()),
            Ok(Some(Err(e))) => return Err(e.into()),
            Ok(None) => return Err("stream ended".into()),
            Err(_) => return Err(format!("stalled after {got} events").into()),
        }
    }
    Ok(started.elapsed())
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<(), Error> {
    let url =
        std::env::var("TIDINGS_TEST_REDIS").unwrap_or_else(|_| "redis://127.0.0.1:6379".into());
    let key = format!("tidings-figures:{}", uuid::Uuid::now_v7().simple());
    let raw_key = format!("{key}:raw");
    let log = RedisLog::open(&url, &key, RedisOptions::default()).await?;
    let client = redis::Client::open(url.as_str())?;
    let raw = client.get_multiplexed_async_connection().await?;
    let result = run(&url, &key, &raw_key, &log, &raw).await;
    log.destroy().await?;
    let mut c = raw.clone();
    redis::cmd("DEL")
        .arg(&raw_key)
        .query_async::<()>(&mut c)
        .await?;
    result
}

/// Median, min and max of `v`.
fn spread(v: &mut [f64]) -> (f64, f64, f64) {
    v.sort_by(f64::total_cmp);
    (v[v.len() / 2], v[0], v[v.len() - 1])
}

/// `n` items in `d`, per second.
fn per_sec(n: u64, d: Duration) -> f64 {
    n as f64 / d.as_secs_f64()
}

async fn run(
    url: &str,
    key: &str,
    raw_key: &str,
    log: &RedisLog,
    raw: &redis::aio::MultiplexedConnection,
) -> Result<(), Error> {
    let info: String = redis::cmd("INFO")
        .arg("server")
        .query_async(&mut raw.clone())
        .await?;
    let version = info
        .lines()
        .find_map(|l| l.strip_prefix("redis_version:"))
        .unwrap_or("?");
    let runs: usize = std::env::args()
        .nth(1)
        .map(|a| a.parse().expect("the argument is the number of runs"))
        .unwrap_or(5);
    if let Some(side) = std::env::args().nth(2) {
        let (total, tasks) = (5_000, 1);
        for _ in 0..runs {
            let d = match side.as_str() {
                "log" => appends(log, tasks, total, 1).await?,
                "raw" => raw_xadds(raw, raw_key, tasks, total, 1).await?,
                other => return Err(format!("unknown side {other:?}: log or raw").into()),
            };
            println!("{side}, one append at a time: {:.0}/s", per_sec(total, d));
        }
        return Ok(());
    }
    println!("Redis {version} at {url}; event payload ~90 B of JSON; {runs} runs alternating which side goes first; median (min-max)");
    println!();
    // (tasks, events in total, events per append or XADDs per round trip)
    let shapes = [(1u64, 5_000u64, 1u64), (32, 100_000, 1), (4, 100_000, 100)];
    let mut log_rates = vec![Vec::new(); shapes.len()];
    let mut raw_rates = vec![Vec::new(); shapes.len()];
    for r in 0..runs {
        for (i, &(tasks, total, per)) in shapes.iter().enumerate() {
            for side in 0..2 {
                if (side + r) % 2 == 0 {
                    let d = appends(log, tasks, total, per).await?;
                    log_rates[i].push(per_sec(total, d));
                } else {
                    let d = raw_xadds(raw, raw_key, tasks, total, per).await?;
                    raw_rates[i].push(per_sec(total, d));
                }
            }
        }
    }
    println!("RedisLog appends (append script, group commit) vs raw XADD of the same fields (auto ids; no seq check, no idempotency):");
    for (i, &(tasks, _, per)) in shapes.iter().enumerate() {
        let (lm, ll, lh) = spread(&mut log_rates[i]);
        let (rm, rl, rh) = spread(&mut raw_rates[i]);
        println!(
            "  {tasks:>2} tasks, {per:>3} events/append: RedisLog {lm:>8.0}/s ({ll:.0}-{lh:.0}) | raw {rm:>8.0}/s ({rl:.0}-{rh:.0}) | ratio {:.2}",
            lm / rm
        );
    }
    println!();

    // Delivery through a log stream on a second instance (its own connections).
    let reader: Arc<dyn EventLog> =
        Arc::new(RedisLog::open(url, key, RedisOptions::default()).await?);
    let live = stream_from(reader.clone(), Position::End);
    // Let the stream resolve `End` before the writer starts.
    let mut live = live.peekable();
    let _ = tokio::time::timeout(
        Duration::from_millis(200),
        std::pin::Pin::new(&mut live).peek(),
    )
    .await;
    let n_live = 50_000;
    let writer = {
        let log = log.clone();
        tokio::spawn(async move { appends(&log, 4, n_live, 100).await })
    };
    let started = Instant::now();
    let mut got = 0u64;
    while got < n_live {
        match tokio::time::timeout(Duration::from_secs(30), live.next()).await {
            Ok(Some(Ok(Delivery::Event(_)))) => got += 1,
            other => return Err(format!("live stream failed after {got}: {other:?}").into()),
        }
    }
    let d_live = started.elapsed();
    let d_write = writer.await??;
    println!("delivered by tidings_core::stream_from on a second RedisLog instance:");
    println!(
        "  live, while 4 tasks append batches of 100 {}  (writer took {:.2} s)",
        rate(n_live, d_live),
        d_write.as_secs_f64()
    );
    let total = reader.bounds().await?.last;
    let d = drain(stream_from(reader.clone(), Position::Beginning), total).await?;
    println!(
        "  catch-up from the beginning              {}",
        rate(total, d)
    );
    Ok(())
}
