//! `GET /export`: the archive, then the log, as one gap-free range of JSON
//! lines (one envelope per line, as clients see it).
//!
//! # Contract
//!
//! * The range is `after + 1 ..= until` (`until` defaults to, and is
//!   capped at, the log's last seq when the export starts, so an export
//!   ends). `after` absent or 0 is the first seq held (archive or log);
//!   an `after` below what is held, or a range with a hole neither the
//!   archive nor the log covers, is refused up front with `Gone` and the
//!   first seq from which a seamless range is available. `after > until`
//!   and a bad pattern are `BadRequest`.
//! * Seqs are read in order, each once: from the log while it holds the
//!   next seq, from the archive (re-reading its manifest) when it does
//!   not. Retention moving events into the archive during an export
//!   loses nothing: the archive is written before the rows are deleted.
//!   A hole that appears anyway ends the body with an error (the client
//!   sees a truncated transfer, never a silent gap).
//! * Only events matching the pattern *and* readable by the caller are
//!   written; an explicit pattern outside the caller's scope is
//!   `Forbidden` (like history).
//! * Streamed: bounded chunks through a bounded channel; the log is read
//!   in pages within `history_max_bytes`; the archive on a blocking
//!   thread, one line at a time. A client that stops reading is dropped
//!   by the send timeout like any other.

use std::path::PathBuf;
use std::sync::Arc;

use bytes::Bytes;
use tidings_core::{Event, EventLog, Pattern};
use tidings_sqlite::archive::{ArchiveReader, Manifest};
use tokio::sync::mpsc;

use super::{wire, ErrorKind, Service, ServiceError};
use crate::auth::Principal;

/// Events read from the log per step.
const PAGE: usize = 1024;

/// A chunk of the body is sent once it holds about this many bytes.
const CHUNK: usize = 64 * 1024;

/// Chunks in flight between the reader and the connection.
const IN_FLIGHT: usize = 8;

/// What `GET /export` asks for.
#[derive(Debug, Clone, Default)]
pub struct ExportRequest {
    /// Start after this seq (absent or 0: the first seq held).
    pub after: Option<u64>,
    /// End at this seq (default: the log's last seq).
    pub until: Option<u64>,
    /// Only events matching this pattern.
    pub pattern: Option<String>,
}

/// A running export: chunks of JSON lines, then the end (or an error,
/// which ends the body early).
pub struct Export {
    /// The chunks.
    pub chunks: mpsc::Receiver<Result<Bytes, ServiceError>>,
}

/// Which events the caller gets.
#[derive(Clone)]
struct Select {
    pattern: Pattern,
    who: Principal,
}

impl Select {
    fn wants(&self, e: &Event) -> bool {
        self.pattern.matches(&e.name) && self.who.may_read(&e.name)
    }
}

fn archive_error(e: tidings_sqlite::archive::ArchiveError) -> ServiceError {
    ServiceError::new(
        ErrorKind::Unavailable,
        "unavailable",
        format!("{e}; retry later"),
    )
}

/// The archive's manifest, or an empty one without an archive.
async fn manifest(dir: Option<PathBuf>) -> Result<Manifest, ServiceError> {
    let Some(dir) = dir else {
        return Ok(Manifest::default());
    };
    tokio::task::spawn_blocking(move || Manifest::load(&dir))
        .await
        .map_err(|e| ServiceError::internal(format!("reading the archive manifest: {e}")))?
        .map_err(archive_error)
}

/// The smallest seq `s` such that `s..=last` is all held, by the archive
/// or the log (whose oldest seq is `log_first`).
fn held_from(manifest: &Manifest, log_first: u64) -> u64 {
    let mut s = log_first;
    for f in manifest.files.iter().rev() {
        if f.first_seq < s && f.last_seq + 1 >= s {
            s = f.first_seq;
        }
    }
    s
}

impl Service {
    /// Starts an export (see the module docs).
    pub async fn export(
        &self,
        who: &Principal,
        req: ExportRequest,
    ) -> Result<Export, ServiceError> {
        let pattern = match req.pattern.as_deref() {
            Some(p) => {
                let p = Pattern::parse(p)?;
                who.check_subscribe(&p)?;
                p
            }
            None => Pattern::all(),
        };
        if let (Some(a), Some(u)) = (req.after, req.until) {
            if a > u {
                return Err(ServiceError::bad_request(
                    "invalid_range",
                    format!("after ({a}) is greater than until ({u})"),
                ));
            }
        }
        let log = self.bus().log().clone();
        let bounds = log.bounds().await?;
        let archive_dir = self.config.archive_dir.clone();
        let held = held_from(&manifest(archive_dir.clone()).await?, bounds.first);
        let until = req.until.unwrap_or(bounds.last).min(bounds.last);
        let after = match req.after {
            // From the start: 410 only when every seq asked for is gone.
            None | Some(0) if until == 0 || until >= held => held.saturating_sub(1),
            None | Some(0) => {
                return Err(ServiceError::new(
                    ErrorKind::Gone,
                    "gone",
                    format!(
                        "seqs 1..={until} are neither in the log nor in the archive (pruned without an archive); \
                         the range held starts at seq {held}"
                    ),
                )
                .with("first_retained_seq", bounds.first)
                .with("first_available_seq", held));
            }
            Some(a) if a.saturating_add(1) < held && a < until => {
                return Err(ServiceError::new(
                    ErrorKind::Gone,
                    "gone",
                    format!(
                        "seqs {}..={} are neither in the log nor in the archive (pruned without an archive); \
                         a seamless range starts at seq {held}: export from --after {}",
                        a + 1,
                        held - 1,
                        held - 1
                    ),
                )
                .with("first_retained_seq", bounds.first)
                .with("first_available_seq", held));
            }
            Some(a) => a,
        };
        let select = Select {
            pattern,
            who: who.clone(),
        };
        let (tx, rx) = mpsc::channel(IN_FLIGHT);
        let budget = self.config.history_max_bytes;
        tokio::spawn(async move {
            let r = run(log, archive_dir, select, after, until, budget, &tx).await;
            if let Err(e) = r {
                tracing::warn!(error = %e, "export ended early");
                let _ = tx.send(Err(e)).await;
            }
        });
        Ok(Export { chunks: rx })
    }
}

type Tx = mpsc::Sender<Result<Bytes, ServiceError>>;

/// Appends `e`'s line to `buf` if the caller wants it.
fn push(buf: &mut Vec<u8>, e: &Event, select: &Select) {
    if select.wants(e) {
        buf.extend_from_slice(wire::to_json(e).as_bytes());
        buf.push(b'\n');
    }
}

/// Sends `buf` if it holds anything; false once the client is gone.
async fn flush(buf: &mut Vec<u8>, tx: &Tx) -> bool {
    if buf.is_empty() {
        return true;
    }
    tx.send(Ok(Bytes::from(std::mem::take(buf)))).await.is_ok()
}

/// Writes `after + 1 ..= until`: the log while it holds the next seq, the
/// archive when it does not.
async fn run(
    log: Arc<dyn EventLog>,
    archive_dir: Option<PathBuf>,
    select: Select,
    after: u64,
    until: u64,
    budget: usize,
    tx: &Tx,
) -> Result<(), ServiceError> {
    let mut cursor = after;
    let mut buf = Vec::new();
    while cursor < until {
        let page = log.read_within(cursor, PAGE, budget).await?;
        let first = page.events.first().map(|e| e.seq);
        if first == Some(cursor + 1) {
            for e in &page.events {
                if e.seq > until {
                    break;
                }
                push(&mut buf, e, &select);
                cursor = e.seq;
                if buf.len() >= CHUNK && !flush(&mut buf, tx).await {
                    return Ok(());
                }
            }
            continue;
        }
        if first.is_none() && page.last_seq <= cursor {
            break; // the log ends before `until` (nothing more to read)
        }
        // The log no longer holds cursor + 1: the archive must.
        let gap_end = first.map_or(page.last_seq, |f| f - 1).min(until);
        if !flush(&mut buf, tx).await {
            return Ok(());
        }
        let Some(dir) = archive_dir.clone() else {
            return Err(hole(cursor, gap_end));
        };
        let (sel, tx2) = (select.clone(), tx.clone());
        let reached =
            tokio::task::spawn_blocking(move || from_archive(&dir, cursor, gap_end, &sel, &tx2))
                .await
                .map_err(|e| ServiceError::internal(format!("reading the archive: {e}")))??;
        match reached {
            None => return Ok(()), // the client is gone
            Some(c) if c == cursor => return Err(hole(cursor, gap_end)),
            Some(c) => cursor = c,
        }
    }
    flush(&mut buf, tx).await;
    Ok(())
}

fn hole(cursor: u64, gap_end: u64) -> ServiceError {
    ServiceError::new(
        ErrorKind::Gone,
        "gone",
        format!(
            "seqs {}..={gap_end} are neither in the log nor in the archive",
            cursor + 1
        ),
    )
}

/// On a blocking thread: archived events `cursor + 1 ..= gap_end`, while
/// dense. Returns the last seq written (`cursor` if none), `None` if the
/// client went away.
fn from_archive(
    dir: &std::path::Path,
    mut cursor: u64,
    gap_end: u64,
    select: &Select,
    tx: &Tx,
) -> Result<Option<u64>, ServiceError> {
    let reader = ArchiveReader::open(dir).map_err(archive_error)?;
    let mut buf = Vec::new();
    for e in reader.events_after(cursor) {
        let e = e.map_err(archive_error)?;
        if e.seq != cursor + 1 || e.seq > gap_end {
            break;
        }
        push(&mut buf, &e, select);
        cursor = e.seq;
        if buf.len() >= CHUNK
            && tx
                .blocking_send(Ok(Bytes::from(std::mem::take(&mut buf))))
                .is_err()
        {
            return Ok(None);
        }
    }
    if !buf.is_empty() && tx.blocking_send(Ok(Bytes::from(buf))).is_err() {
        return Ok(None);
    }
    Ok(Some(cursor))
}

#[cfg(test)]
mod tests {
    use super::*;
    use tidings_sqlite::archive::{file_name, ArchiveFile};

    fn file(first: u64, last: u64) -> ArchiveFile {
        ArchiveFile {
            file: file_name(first, last),
            first_seq: first,
            last_seq: last,
            count: last - first + 1,
            bytes: 0,
            sha256: String::new(),
        }
    }

    #[test]
    fn the_held_range_joins_archive_and_log_only_without_a_hole() {
        let m = |files: Vec<ArchiveFile>| Manifest { version: 1, files };
        assert_eq!(held_from(&m(vec![]), 7), 7);
        assert_eq!(held_from(&m(vec![file(1, 3), file(4, 6)]), 7), 1);
        // Archived but not yet deleted (a crash between): overlap is fine.
        assert_eq!(held_from(&m(vec![file(1, 9)]), 7), 1);
        // A hole before the log, or between files.
        assert_eq!(held_from(&m(vec![file(1, 4)]), 7), 7);
        assert_eq!(held_from(&m(vec![file(1, 2), file(4, 6)]), 7), 4);
    }
}
