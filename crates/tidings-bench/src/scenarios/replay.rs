//! `replay`: catch-up read rate from the SQLite log.
//!
//! The log is filled with `--events` (1,000,000) events in 10,000-event
//! appends with `Durability::None`, closed (checkpointing the WAL) and
//! reopened. Then, `--rounds` times, alternating:
//!
//! * `read`: `EventLog::read(after, --page)` page after page, one read at
//!   a time (the next `after` is the last seq of the page);
//! * `follow`: `tidings_core::follow(log, Position::Beginning)`, the
//!   catch-up-then-live stream every subscriber uses, until the last seq;
//! * peer: plain rusqlite on its own read-only connection, one
//!   `SELECT seq, id, name, source, time, key, data, priority FROM events
//!   ORDER BY seq` over every row, each decoded into the same
//!   `Arc<tidings_core::Event>` (UUID from the blob, time from micros,
//!   `data` parsed as JSON) — the same work per row without the log's
//!   threads and channels. `peer_raw_per_s` is the same SELECT that only
//!   touches the columns (no decode), the floor of SQLite itself.
//!
//! The median round counts. `tidings_per_s` is the slower of `read` and
//! `follow`. Goal: >= 1,000,000 events/s for both.

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
use crate::stats::median;
use crate::Report;

/// Options of `replay`.
#[derive(Debug, Clone, clap::Args)]
pub struct Args {
    /// Events in the log.
    #[arg(long, default_value_t = 1_000_000)]
    pub events: u64,
    /// Rounds of each reader; the median counts.
    #[arg(long, default_value_t = 3)]
    pub rounds: usize,
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

fn options(durability: Durability) -> SqliteOptions {
    SqliteOptions {
        durability,
        check_on_open: OpenCheck::Off,
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
    log.close()?;
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
    let mut stream = tidings_core::follow(shared, Position::Beginning);
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

/// Plain rusqlite: one SELECT over all rows; `decode` builds each
/// `Arc<Event>`, otherwise the columns are only touched.
fn plain(path: &Path, total: u64, decode: bool) -> Result<f64> {
    let conn = rusqlite::Connection::open_with_flags(
        path,
        rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )?;
    let t = Instant::now();
    let mut stmt = conn.prepare(
        "SELECT seq, id, name, source, time, key, data, priority FROM events ORDER BY seq",
    )?;
    let mut rows = stmt.query([])?;
    let (mut seen, mut bytes) = (0u64, 0usize);
    while let Some(row) = rows.next()? {
        seen += 1;
        if decode {
            let text = |i: usize| -> Result<String> { Ok(row.get_ref(i)?.as_str()?.to_owned()) };
            let e = Event {
                seq: row.get::<_, i64>(0)? as u64,
                id: Uuid::from_slice(row.get_ref(1)?.as_blob()?)?,
                name: text(2)?,
                source: tidings_core::intern_source(text(3)?),
                time: DateTime::from_timestamp_micros(row.get(4)?).context("time")?,
                key: match row.get_ref(5)? {
                    ValueRef::Null => None,
                    v => Some(v.as_str()?.to_owned()),
                },
                data: serde_json::from_slice(row.get_ref(6)?.as_bytes()?)?,
                priority: None,
            };
            let e = Arc::new(e);
            bytes += e.name.len();
        } else {
            for i in 0..8 {
                bytes += match row.get_ref(i)? {
                    ValueRef::Text(t) | ValueRef::Blob(t) => t.len(),
                    _ => 1,
                };
            }
        }
    }
    let rate = seen as f64 / t.elapsed().as_secs_f64();
    std::hint::black_box(bytes);
    ensure!(seen == total, "selected {seen} rows, expected {total}");
    Ok(rate)
}

/// Runs the scenario.
pub fn run(args: &Args) -> Result<Report> {
    let rt = super::runtime()?;
    let dir = match &args.dir {
        Some(d) => tempfile::tempdir_in(d)?,
        None => tempfile::tempdir()?,
    };
    let path = dir.path().join("replay.db");
    progress::phase(&format!(
        "replay: filling {} events, then {} rounds of read(page {}), follow, rusqlite",
        args.events, args.rounds, args.page
    ));
    let fill_rate = rt.block_on(fill(&path, args.events))?;
    eprintln!("filled at {fill_rate:.0} events/s (10k-event appends, Durability::None)");
    let log = SqliteLog::open(&path, options(Durability::Sync))?;
    let (mut reads, mut follows, mut peers, mut raws) = (vec![], vec![], vec![], vec![]);
    let pb = progress::bar(args.rounds as u64 * 4, "replay rounds");
    for r in 0..args.rounds.max(1) {
        let mut steps: Vec<u8> = vec![0, 1, 2, 3];
        if r % 2 == 1 {
            steps.reverse();
        }
        for s in steps {
            match s {
                0 => reads.push(rt.block_on(read_pages(&log, args.events, args.page))?),
                1 => follows.push(rt.block_on(follow(&log, args.events))?),
                2 => peers.push(plain(&path, args.events, true)?),
                _ => raws.push(plain(&path, args.events, false)?),
            }
            pb.inc(1);
        }
    }
    pb.finish_and_clear();
    log.close()?;
    let (read, fol, peer, raw) = (
        median(&reads),
        median(&follows),
        median(&peers),
        median(&raws),
    );
    eprintln!(
        "read(page {}) {read:.0}/s, follow {fol:.0}/s, rusqlite decoded {peer:.0}/s, rusqlite raw {raw:.0}/s",
        args.page
    );
    let tidings = read.min(fol);
    Ok(Report::new(
        "replay",
        tidings,
        "rusqlite SELECT of all rows decoded into Arc<Event>",
        Some(peer),
    )
    .goal(
        "read and follow >= 1,000,000 events/s",
        read >= 1e6 && fol >= 1e6,
    )
    .with("events", args.events)
    .with("page", args.page)
    .with("read_per_s", read)
    .with("follow_per_s", fol)
    .with("peer_raw_per_s", raw)
    .with("fill_per_s", fill_rate)
    .with(
        "rounds",
        json!({"read": reads, "follow": follows, "peer": peers, "peer_raw": raws}),
    ))
}
