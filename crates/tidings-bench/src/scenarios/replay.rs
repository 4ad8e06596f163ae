//! `replay`: catch-up read rate from the SQLite log, against plain
//! rusqlite given the same threads, read-ahead and pragmas.
//!
//! The log is filled with `--events` (1,000,000) events in 10,000-event
//! appends with `Durability::None`, closed (checkpointing the WAL) and
//! reopened with **one reader thread** (`SqliteOptions::readers = 1`).
//! Then, `--runs` times, the sides taking turns going first:
//!
//! * `read` (headline): `EventLog::read(after, --page)` page after page,
//!   one read at a time (the next `after` is the last seq of the page);
//! * `follow` (side figure): `tidings_core::stream_from(log, Beginning)`, the
//!   catch-up-then-live stream every subscriber uses, until the last seq;
//! * peer: plain rusqlite built the same way as the log's reader: **one
//!   reader thread** on its own connection with the **same pragmas**
//!   (`cache_size` = the log's `cache_kib`, `temp_store = MEMORY`,
//!   `query_only`, `mmap_size` = the log's `reader_mmap_bytes`) stepping
//!   the same `SELECT seq, id, name, source, time, key, data, priority
//!   FROM events WHERE seq > ?1 ORDER BY seq LIMIT ?2` page after page and
//!   copying the columns out; the page goes over a channel of one slot, so
//!   the thread reads the next page while the caller decodes this one
//!   (**one page of read-ahead**, as the log's reader does). The caller
//!   decodes each row into the same `Arc<tidings_core::Event>` (UUID from
//!   the blob, time from micros, `data` parsed as JSON), as the log's
//!   caller does.
//! * `peer_raw` (side figure): one SELECT over every row on the caller's
//!   thread that only touches the columns (no copy, no decode): SQLite's
//!   own floor.
//!
//! Goal: median `read` and median `follow` >= 1,000,000 events/s.

use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use anyhow::{ensure, Context, Result};
use chrono::DateTime;
use futures_util::StreamExt;
use rusqlite::types::ValueRef;
use serde_json::json;
use tidings_core::{Delivery, Event, EventLog, NewEvent, Position};
use tidings_sqlite::{Durability, OpenCheck, SqliteLog, SqliteOptions};
use uuid::Uuid;

use crate::progress;
use crate::repeat::{alternate, ratio, unsound, Run};
use crate::Report;

/// Options of `replay`.
#[derive(Debug, Clone, clap::Args)]
pub struct Args {
    /// Events in the log.
    #[arg(long, default_value_t = 1_000_000)]
    pub events: u64,
    /// Events per `read` page (follow's own page is 512).
    #[arg(long, default_value_t = 512)]
    pub page: usize,
    /// Directory for the SQLite file (default: a temporary directory).
    #[arg(long)]
    pub dir: Option<std::path::PathBuf>,
}

fn event(i: u64) -> NewEvent {
    NewEvent::new(
        "orders.placed",
        json!({"order": i, "sku": "ABC-123", "qty": 2, "note": "bench"}),
    )
    .expect("a valid name")
    .source("bench")
}

/// The log's options: one reader thread (the peer has one too).
fn options(durability: Durability) -> SqliteOptions {
    SqliteOptions {
        durability,
        check_on_open: OpenCheck::Off,
        readers: 1,
        ..SqliteOptions::default()
    }
}

async fn fill(path: &Path, total: u64) -> Result<f64> {
    let log = SqliteLog::open(path, options(Durability::None))?;
    let pb = progress::bar(total, "filling the log");
    let t = Instant::now();
    let mut i = 0;
    while i < total {
        let n = 10_000.min(total - i);
        log.append((0..n).map(|k| event(i + k)).collect(), None)
            .await?;
        i += n;
        pb.set_position(i);
    }
    let rate = total as f64 / t.elapsed().as_secs_f64();
    pb.finish_and_clear();
    log.close_blocking()?;
    Ok(rate)
}

async fn read_pages(log: &SqliteLog, total: u64, page: usize) -> Result<f64> {
    let t = Instant::now();
    let (mut after, mut seen, mut sum) = (0u64, 0u64, 0u64);
    loop {
        let p = log.read(after, page).await?;
        let Some(last) = p.events.last() else { break };
        after = last.seq;
        seen += p.events.len() as u64;
        sum = sum.wrapping_add(p.events.iter().map(|e| e.seq).sum::<u64>());
    }
    let rate = seen as f64 / t.elapsed().as_secs_f64();
    ensure!(seen == total, "read {seen} events, expected {total}");
    ensure!(sum == total * (total + 1) / 2, "seqs are not 1..={total}");
    Ok(rate)
}

async fn follow(log: &SqliteLog, total: u64) -> Result<f64> {
    let shared: Arc<dyn EventLog> = Arc::new(log.clone());
    let t = Instant::now();
    let mut stream = tidings_core::stream_from(shared, Position::Beginning);
    let mut seen = 0u64;
    while let Some(item) = stream.next().await {
        match item? {
            Delivery::Event(e) => {
                seen += 1;
                ensure!(
                    e.seq == seen,
                    "follow gave seq {} at position {seen}",
                    e.seq
                );
                if e.seq == total {
                    break;
                }
            }
            Delivery::Lagged { missed, .. } => anyhow::bail!("follow lagged by {missed}"),
        }
    }
    let rate = seen as f64 / t.elapsed().as_secs_f64();
    ensure!(seen == total, "followed {seen} events, expected {total}");
    Ok(rate)
}

/// A row's columns copied out of SQLite (what the log's reader thread
/// hands its caller).
struct RawRow {
    seq: i64,
    id: Vec<u8>,
    name: String,
    source: String,
    time: i64,
    key: Option<String>,
    data: Vec<u8>,
}

/// Opens a read-only connection with the log's reader pragmas.
fn peer_connection(path: &Path) -> Result<rusqlite::Connection> {
    let o = SqliteOptions::default();
    let conn = rusqlite::Connection::open_with_flags(
        path,
        rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )?;
    conn.execute_batch(&format!(
        "PRAGMA cache_size = -{}; PRAGMA temp_store = MEMORY; PRAGMA query_only = ON; PRAGMA mmap_size = {};",
        o.cache_kib, o.reader_mmap_bytes
    ))?;
    Ok(conn)
}

/// The peer: a reader thread pages through the table, one page ahead of
/// the caller, which decodes every row into an `Arc<Event>`.
fn plain(path: &Path, total: u64, page: usize) -> Result<f64> {
    let conn = peer_connection(path)?;
    let t = Instant::now();
    let (tx, rx) = std::sync::mpsc::sync_channel::<Result<Vec<RawRow>>>(1);
    let reader = std::thread::Builder::new()
        .name("bench-sqlr".into())
        .spawn(move || {
            let read = || -> Result<()> {
                let mut stmt = conn.prepare(
                    "SELECT seq, id, name, source, time, key, data, priority FROM events WHERE seq > ?1 ORDER BY seq LIMIT ?2",
                )?;
                let mut after = 0i64;
                loop {
                    let mut rows = stmt.query(rusqlite::params![after, page as i64])?;
                    let mut out = Vec::with_capacity(page);
                    while let Some(row) = rows.next()? {
                        let text = |i: usize| -> Result<String> {
                            Ok(row.get_ref(i)?.as_str()?.to_owned())
                        };
                        out.push(RawRow {
                            seq: row.get(0)?,
                            id: row.get_ref(1)?.as_blob()?.to_vec(),
                            name: text(2)?,
                            source: text(3)?,
                            time: row.get(4)?,
                            key: match row.get_ref(5)? {
                                ValueRef::Null => None,
                                v => Some(v.as_str()?.to_owned()),
                            },
                            data: row.get_ref(6)?.as_bytes()?.to_vec(),
                        });
                    }
                    let Some(last) = out.last() else { return Ok(()) };
                    after = last.seq;
                    if tx.send(Ok(out)).is_err() {
                        return Ok(());
                    }
                }
            };
            if let Err(e) = read() {
                let _ = tx.send(Err(e));
            }
        })?;
    let (mut seen, mut sum, mut bytes) = (0u64, 0u64, 0usize);
    for rows in rx {
        for r in rows? {
            let e = Arc::new(Event {
                seq: r.seq as u64,
                id: Uuid::from_slice(&r.id)?,
                name: r.name,
                source: tidings_core::source_from_storage(r.source),
                time: DateTime::from_timestamp_micros(r.time).context("time")?,
                key: r.key,
                data: serde_json::from_slice(&r.data)?,
                priority: None,
            });
            seen += 1;
            sum = sum.wrapping_add(e.seq);
            bytes += e.name.len();
        }
    }
    let rate = seen as f64 / t.elapsed().as_secs_f64();
    let _ = reader.join();
    std::hint::black_box(bytes);
    ensure!(seen == total, "selected {seen} rows, expected {total}");
    ensure!(sum == total * (total + 1) / 2, "seqs are not 1..={total}");
    Ok(rate)
}

/// SQLite's floor: one SELECT over all rows on this thread, each column
/// only touched.
fn raw(path: &Path, total: u64) -> Result<f64> {
    let conn = peer_connection(path)?;
    let t = Instant::now();
    let mut stmt = conn.prepare(
        "SELECT seq, id, name, source, time, key, data, priority FROM events ORDER BY seq",
    )?;
    let mut rows = stmt.query([])?;
    let (mut seen, mut bytes) = (0u64, 0usize);
    while let Some(row) = rows.next()? {
        seen += 1;
        for i in 0..8 {
            bytes += match row.get_ref(i)? {
                ValueRef::Text(t) | ValueRef::Blob(t) => t.len(),
                _ => 1,
            };
        }
    }
    let rate = seen as f64 / t.elapsed().as_secs_f64();
    std::hint::black_box(bytes);
    ensure!(seen == total, "selected {seen} rows, expected {total}");
    Ok(rate)
}

/// Runs the scenario, `runs` runs per reader.
pub fn run(args: &Args, runs: usize) -> Result<Report> {
    let rt = super::runtime()?;
    let dir = match &args.dir {
        Some(d) => tempfile::tempdir_in(d)?,
        None => tempfile::tempdir()?,
    };
    let path = dir.path().join("replay.db");
    progress::phase(&format!(
        "replay: filling {} events, then {runs} runs of read(page {}), rusqlite, follow, rusqlite raw",
        args.events, args.page
    ));
    let fill_rate = rt.block_on(fill(&path, args.events))?;
    eprintln!("filled at {fill_rate:.0} events/s (10k-event appends, Durability::None)");
    let log = SqliteLog::open(&path, options(Durability::Sync))?;
    let pb = progress::bar(runs.max(1) as u64 * 4, "replay runs");
    let sides = alternate(
        runs,
        &mut [
            ("read", &mut |_| {
                rt.block_on(read_pages(&log, args.events, args.page))
                    .map(Run::of)
            }),
            ("rusqlite", &mut |_| {
                plain(&path, args.events, args.page).map(Run::of)
            }),
            ("follow", &mut |_| {
                rt.block_on(follow(&log, args.events)).map(Run::of)
            }),
            ("rusqlite_raw", &mut |_| {
                raw(&path, args.events).map(Run::of)
            }),
        ],
        || pb.inc(1),
    );
    pb.finish_and_clear();
    log.close_blocking()?;
    let [read, peer, fol, rawp] = &sides.series[..] else {
        anyhow::bail!("four series expected");
    };
    eprintln!(
        "read(page {}) {:.0}/s, follow {:.0}/s, rusqlite (same threads, read-ahead, pragmas) {:.0}/s, rusqlite raw {:.0}/s",
        args.page,
        read.median().unwrap_or(f64::NAN),
        fol.median().unwrap_or(f64::NAN),
        peer.median().unwrap_or(f64::NAN),
        rawp.median().unwrap_or(f64::NAN),
    );
    let at_1m = |m: Option<f64>| m.is_some_and(|m| m >= 1e6);
    Ok(Report::compared(
        "replay",
        "rusqlite, one reader thread, one page read ahead, the log's pragmas, rows decoded into Arc<Event>",
        "median read and follow >= 1,000,000 events/s",
        at_1m(read.median()) && at_1m(fol.median()),
        read,
        Some(peer),
    )
        // follow is Tidings too: its failure or loss blocks the goal as read's.
    .blocked_also("", unsound(fol))
    .blocked_also("", unsound(rawp))
    .orders(&sides)
    .with("events", args.events)
    .with("page", args.page)
    .with("reader_threads", 1)
    .with("follow_runs", fol.to_json())
    .with("follow_ratio", ratio(fol.median(), peer.median()))
    .with("peer_raw_runs", rawp.to_json())
    .with("fill_per_s", fill_rate))
}
