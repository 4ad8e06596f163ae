//! Throughput figures of the SQLite log (measured, not asserted anywhere).
//!
//! ```sh
//! cargo run --release -p tidings-sqlite --example sqlite_figures
//! ```
//!
//! Prints, in one run, on a temporary directory (set `FIGURES_DIR` to put
//! the files on another disk; `FIGURES_SECS` to change the length of each
//! timed phase, default 3):
//!
//! * acknowledged appends/s in `Sync` mode with 1 and with 32 concurrent
//!   publishers (tokio tasks each awaiting `append` in a loop), with one
//!   event per append and with batches of 8 and 64 events per append;
//! * the same 32-publisher run in `Batch { 10 ms }` and `None` modes;
//! * replay: events/s reading 1,000,000 events with `read()` pages;
//! * plain rusqlite on the same schema (WAL, `synchronous=FULL`): 1 row per
//!   transaction and 1,000 rows per transaction;
//! * the raw fsync latency of the disk, which bounds everything in `Sync`.
//!
//! `FIGURES_ONLY=<text>` runs only the append rows whose label contains
//! the text (and the rest only if it is `replay`), for profiling.

use std::io::Write;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::json;
use tidings_core::{EventLog, NewEvent};
use tidings_sqlite::{Durability, OpenCheck, SqliteLog, SqliteOptions};

fn event(i: u64) -> NewEvent {
    NewEvent::new(
        "orders.placed",
        json!({"order": i, "sku": "ABC-123", "qty": 2, "note": "figures"}),
    )
    .expect("valid name")
    .source("bench")
}

/// CPU time (user + system) this process used so far, in seconds (Linux;
/// 0 elsewhere). Less sensitive than wall time to other load on the box.
fn cpu_secs() -> f64 {
    let Ok(stat) = std::fs::read_to_string("/proc/self/stat") else {
        return 0.0;
    };
    // Fields after the parenthesised command name; utime and stime are the
    // 12th and 13th of them, in clock ticks (100 per second on Linux).
    let Some(rest) = stat.rsplit(')').next() else {
        return 0.0;
    };
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    (ticks(11) + ticks(12)) / 100.0
}

fn secs() -> f64 {
    std::env::var("FIGURES_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(3.0)
}

fn base_dir() -> tempfile::TempDir {
    match std::env::var("FIGURES_DIR") {
        Ok(d) => tempfile::tempdir_in(d).expect("temp dir"),
        Err(_) => tempfile::tempdir().expect("temp dir"),
    }
}

fn options(durability: Durability) -> SqliteOptions {
    SqliteOptions {
        durability,
        check_on_open: OpenCheck::Off,
        ..SqliteOptions::default()
    }
}

/// `publishers` tasks append batches of `batch` events for `secs`; returns
/// (acknowledged events/s, stats).
async fn publish(
    durability: Durability,
    publishers: usize,
    batch: usize,
) -> (f64, tidings_sqlite::SqliteStats, f64, f64) {
    let dir = base_dir();
    let log = SqliteLog::open(dir.path().join("pub.db"), options(durability)).expect("open");
    let stop = Arc::new(AtomicBool::new(false));
    let acked = Arc::new(AtomicU64::new(0));
    let latency_us = Arc::new(AtomicU64::new(0));
    let appends = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let cpu0 = cpu_secs();
    let tasks: Vec<_> = (0..publishers)
        .map(|p| {
            let (log, stop, acked) = (log.clone(), stop.clone(), acked.clone());
            let (latency_us, appends) = (latency_us.clone(), appends.clone());
            tokio::spawn(async move {
                let mut i = p as u64 * 1_000_000_000;
                while !stop.load(Ordering::Relaxed) {
                    let b: Vec<NewEvent> = (0..batch)
                        .map(|_| {
                            i += 1;
                            event(i)
                        })
                        .collect();
                    let t = Instant::now();
                    let c = log.append(b, None).await.expect("append");
                    latency_us.fetch_add(t.elapsed().as_micros() as u64, Ordering::Relaxed);
                    appends.fetch_add(1, Ordering::Relaxed);
                    acked.fetch_add(c.len() as u64, Ordering::Relaxed);
                }
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_secs_f64(secs())).await;
    stop.store(true, Ordering::Relaxed);
    for t in tasks {
        t.await.expect("publisher");
    }
    let elapsed = start.elapsed().as_secs_f64();
    let cpu = cpu_secs() - cpu0;
    let stats = log.stats();
    log.close_blocking().expect("close");
    let n = appends.load(Ordering::Relaxed).max(1);
    let mean_latency_ms = latency_us.load(Ordering::Relaxed) as f64 / n as f64 / 1000.0;
    let events = acked.load(Ordering::Relaxed).max(1) as f64;
    (events / elapsed, stats, mean_latency_ms, cpu * 1e6 / events)
}

/// Fills a log with `total` events (10k-event appends, `Durability::None`);
/// returns the directory and the fill rate.
async fn fill(total: u64) -> (tempfile::TempDir, f64) {
    let dir = base_dir();
    let log =
        SqliteLog::open(dir.path().join("replay.db"), options(Durability::None)).expect("open");
    let t = Instant::now();
    let mut i = 0;
    while i < total {
        let n = 10_000.min(total - i);
        let b: Vec<NewEvent> = (0..n).map(|k| event(i + k)).collect();
        log.append(b, None).await.expect("append");
        i += n;
    }
    let rate = total as f64 / t.elapsed().as_secs_f64();
    log.close_blocking().expect("close");
    (dir, rate)
}

/// Reads the whole log with `read()` pages of `page`; with `pipelined`,
/// the read of the next page is in flight while the current one is
/// consumed (seqs are dense, so the next `after` is known). Events/s.
async fn replay(dir: &tempfile::TempDir, total: u64, page: usize, pipelined: bool) -> (f64, f64) {
    let log =
        SqliteLog::open(dir.path().join("replay.db"), options(Durability::Sync)).expect("reopen");
    let t = Instant::now();
    let cpu0 = cpu_secs();
    let mut seen = 0u64;
    let mut checksum = 0u64;
    let mut after = 0u64;
    let mut next = pipelined.then(|| log.read(after, page));
    loop {
        let p = match next.take() {
            Some(f) => f.await,
            None => log.read(after, page).await,
        }
        .expect("read");
        let Some(last) = p.events.last() else { break };
        after = last.seq;
        if pipelined {
            next = Some(log.read(after, page));
        }
        seen += p.events.len() as u64;
        checksum = checksum.wrapping_add(p.events.iter().map(|e| e.seq).sum::<u64>());
    }
    assert_eq!(seen, total);
    assert_eq!(checksum, total * (total + 1) / 2);
    let rate = total as f64 / t.elapsed().as_secs_f64();
    let cpu_us = (cpu_secs() - cpu0) * 1e6 / total as f64;
    log.close_blocking().expect("close");
    (rate, cpu_us)
}

const PLAIN_SCHEMA: &str = "
CREATE TABLE events (seq INTEGER PRIMARY KEY, id BLOB NOT NULL, name TEXT NOT NULL,
  source TEXT NOT NULL, time INTEGER NOT NULL, key TEXT, data TEXT NOT NULL, priority INTEGER);";

/// Plain rusqlite inserts, `per_tx` rows per transaction, for `secs`.
fn plain(per_tx: usize) -> f64 {
    let dir = base_dir();
    let conn = rusqlite::Connection::open(dir.path().join("plain.db")).expect("open");
    conn.query_row("PRAGMA journal_mode = WAL", [], |r| r.get::<_, String>(0))
        .expect("wal");
    conn.execute_batch("PRAGMA synchronous = FULL;")
        .expect("pragma");
    conn.execute_batch(PLAIN_SCHEMA).expect("schema");
    let mut seq = 0i64;
    let start = Instant::now();
    let budget = Duration::from_secs_f64(secs());
    while start.elapsed() < budget {
        conn.execute_batch("BEGIN").expect("begin");
        {
            let mut ins = conn
                .prepare_cached(
                    "INSERT INTO events (seq, id, name, source, time, key, data, priority)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
                )
                .expect("prepare");
            for _ in 0..per_tx {
                seq += 1;
                let e = event(seq as u64);
                let data = serde_json::to_string(&e.data).expect("json");
                ins.execute(rusqlite::params![
                    seq,
                    e.id.as_bytes(),
                    e.name,
                    e.source,
                    e.time.timestamp_micros(),
                    e.key,
                    data,
                    None::<i64>,
                ])
                .expect("insert");
            }
        }
        conn.execute_batch("COMMIT").expect("commit");
    }
    seq as f64 / start.elapsed().as_secs_f64()
}

/// Mean latency of write+fsync of 4 KiB to a file on the same disk.
fn fsync_latency_ms() -> f64 {
    let dir = base_dir();
    let mut f = std::fs::File::create(dir.path().join("fsync.bin")).expect("file");
    let buf = [7u8; 4096];
    let n = 200;
    let t = Instant::now();
    for _ in 0..n {
        f.write_all(&buf).expect("write");
        f.sync_data().expect("fsync");
    }
    t.elapsed().as_secs_f64() * 1000.0 / n as f64
}

pub fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    println!(
        "tidings-sqlite figures ({} s per timed phase, {} CPUs)",
        secs(),
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    println!(
        "disk fsync (4 KiB write + fdatasync): {:.3} ms",
        fsync_latency_ms()
    );
    println!();
    println!(
        "{:<44} {:>10} {:>8} {:>10} {:>9} {:>11}",
        "append (acknowledged)", "events/s", "lat ms", "events/tx", "fsyncs/s", "cpu us/ev"
    );
    let runs: &[(&str, Durability, usize, usize)] = &[
        ("Sync, 1 publisher x 1 event", Durability::Sync, 1, 1),
        ("Sync, 32 publishers x 1 event", Durability::Sync, 32, 1),
        (
            "Sync, 32 publishers x 8-event batches",
            Durability::Sync,
            32,
            8,
        ),
        (
            "Sync, 32 publishers x 64-event batches",
            Durability::Sync,
            32,
            64,
        ),
        (
            "Sync, 1 publisher x 1000-event batches",
            Durability::Sync,
            1,
            1000,
        ),
        (
            "Batch 10ms, 32 publishers x 1 event",
            Durability::Batch {
                interval: Duration::from_millis(10),
            },
            32,
            1,
        ),
        ("None, 32 publishers x 1 event", Durability::None, 32, 1),
    ];
    let only = std::env::var("FIGURES_ONLY").unwrap_or_default();
    for (label, durability, publishers, batch) in runs {
        if !label.contains(only.as_str()) {
            continue;
        }
        let (rate, stats, lat, cpu_us) = rt.block_on(publish(*durability, *publishers, *batch));
        let per_tx = stats.events_appended as f64 / stats.groups.max(1) as f64;
        println!(
            "{:<44} {:>10.0} {:>8.2} {:>10.1} {:>9.0} {:>11.2}",
            label,
            rate,
            lat,
            per_tx,
            stats.syncs as f64 / secs(),
            cpu_us
        );
    }
    if !only.is_empty() && !"replay".contains(only.as_str()) {
        return;
    }
    println!();
    let total = 1_000_000;
    let (dir, fill_rate) = rt.block_on(fill(total));
    println!(
        "replay of {total} events (filled at {fill_rate:.0} events/s with 10k-event appends, \
         Durability::None)"
    );
    for (page, pipelined) in [
        (512usize, false),
        (512, true),
        (10_000, false),
        (10_000, true),
    ] {
        let (rate, cpu_us) = rt.block_on(replay(&dir, total, page, pipelined));
        println!(
            "  read() pages of {page:>6}, {:<38} {rate:>10.0} events/s, {cpu_us:.2} cpu us/event",
            if pipelined {
                "next page requested before consuming"
            } else {
                "one read at a time"
            }
        );
    }
    println!();
    for per_tx in [1usize, 1000] {
        println!(
            "plain rusqlite, WAL, synchronous=FULL, {per_tx:>4} rows/tx: {:>12.0} rows/s",
            plain(per_tx)
        );
    }
}
