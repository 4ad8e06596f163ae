//! # tidings-sqlite: the SQLite event log
//!
//! [`SqliteLog`] implements tidings-core's [`EventLog`] on one SQLite file in
//! WAL mode. It is the embedded default for a Tidings server: events survive
//! restarts, followers are woken the moment a commit lands (no polling), and
//! concurrent publishers share fsyncs.
//!
//! ```no_run
//! use std::sync::Arc;
//! use tidings_core::{EventLog, NewEvent};
//! use tidings_sqlite::{Durability, SqliteLog, SqliteOptions};
//!
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! let log = SqliteLog::open("events.db", SqliteOptions::default().durability(Durability::Sync))?;
//! let ev = NewEvent::new("order.placed", serde_json::json!({"id": 7}))?;
//! let committed = log.append(vec![ev], None).await?;
//! assert_eq!(committed[0].event.seq, log.last_seq());
//! let bus_log: Arc<dyn EventLog> = Arc::new(log.clone());
//! # drop(bus_log);
//! log.close()?;
//! # Ok(()) }
//! ```
//!
//! ## Key types
//!
//! * [`SqliteLog`]: the log. Cheap to clone (clones share it); `Send + Sync`.
//!   [`SqliteLog::open`] creates, migrates or refuses a file;
//!   [`SqliteLog::close`] flushes and stops it; [`SqliteLog::stats`] counts
//!   transactions and fsyncs.
//! * [`SqliteOptions`]: durability, retention, idempotency window, pruning
//!   interval, reader threads, open-time verification.
//! * [`Durability`]: `Sync` (default), `Batch { interval }`, `None`. The
//!   table on [`Durability`] says exactly what each guarantees.
//! * Errors: [`OpenError`] (with a variant for each way a file can be
//!   refused: not a database, corrupt, foreign, newer schema...),
//!   [`CloseError`], [`SyncError`], and [`StorageError`], which is what the
//!   `Storage(..)` variants of core's `AppendError`, `ReadError`,
//!   `CursorError` and `PruneError` box.
//!
//! ## Group commit
//!
//! One **writer thread** owns the only writing connection. `append`
//! serializes the payloads on the caller's thread, sends the batch down a
//! channel and returns a future waiting on a oneshot. The writer takes the
//! first request, then everything else already queued, and runs them all in
//! one transaction: with `Durability::Sync`, N concurrent appenders cost one
//! fsync, not N. When fewer requests are queued than the previous group
//! had, it waits up to [`SqliteOptions::group_wait`] (200 µs) for the rest
//! to come back, so groups stay large under load; a lone appender never
//! waits. Each request is checked against the running last sequence inside
//! the group (so `expected_last` behaves exactly as if requests ran one by
//! one, and a refusal writes nothing); a request whose write fails is
//! isolated by rolling back and re-running the group without it, so it does
//! not affect the others. After `COMMIT` the writer publishes the new last
//! sequence on [`EventLog::watch`] and then answers the appenders. Cursor
//! commits and on-demand prunes ride the same queue.
//!
//! The writer answers with where each event went; the appender's future
//! builds the committed `Arc<Event>`s itself, so the writer thread does no
//! per-event allocation or free.
//!
//! ## Reads
//!
//! Reads go to a small pool of **reader threads**
//! ([`SqliteOptions::readers`]), each with its own read connection: WAL lets
//! them read a consistent snapshot while the writer commits, and the writer
//! never waits for them. A page's `last_seq` comes from the same snapshot as
//! its events. Reader threads only step SQLite and copy the rows' bytes; the
//! future returned by `read` decodes them (UTF-8, JSON) on the thread that
//! awaits it. When a read returns a full page of 64 to 16,384 events, the
//! reader reads the next page ahead, so a catching-up consumer (core's
//! `follow`, a replay) decodes page k while page k+1 is fetched; a page read
//! ahead is served only if retention has not touched it since (see
//! `reader.rs`), so it is always exactly what a fresh read would return.
//!
//! `time` is stored in microseconds: the event `append` returns already has
//! its time truncated to microseconds, so it equals what `read` returns.
//!
//! ## Sequence numbers
//!
//! `seq` is the rowid of `events` (INTEGER PRIMARY KEY, assigned explicitly
//! by the writer), gap-free from 1. The last sequence ever assigned is
//! `max(max(events.seq), meta.last_seq)`: appends only add rows (one page
//! less to write per commit than also updating a counter), and retention,
//! the only thing that deletes rows, first records the last sequence in
//! the `meta` row *in the same transaction*. So a number is never reused:
//! not after a crash (a transaction is all there or not at all) and not
//! after retention emptied the table.
//!
//! ## Retention is a hard limit
//!
//! [`SqliteOptions::retention`] (`max_count`, `max_age`) is applied by the
//! writer thread every [`SqliteOptions::prune_interval`] (default 1 s) and by
//! [`EventLog::prune`]. It **does not wait for durable consumers**: a
//! consumer whose committed cursor points into the pruned range keeps its
//! cursor, and when it resumes, [`tidings_core::follow`] reports exactly
//! what it missed as a [`Delivery::Lagged`](tidings_core::Delivery::Lagged)
//! before going on with the oldest event kept. Size retention for the
//! slowest consumer, not the other way round.
//!
//! ## Idempotency keys
//!
//! A key seen within [`SqliteOptions::idempotency_window`] is not appended
//! again: its slot in the result is the original event (read back from the
//! file) with `duplicate = true`, also when the key repeats inside one batch.
//! Keys live in their own table with the wall-clock time they were recorded,
//! so they survive restarts; they are swept when the window passes. If
//! retention prunes an event whose key is still live, the event is copied
//! beside its key first, so the answer stays the original event.
//!
//! ## Files
//!
//! The schema is versioned (`PRAGMA user_version`, see [`schema`]); older
//! files are migrated in one transaction at open, newer ones are refused
//! with [`OpenError::NewerSchema`]. Other SQLite databases are refused with
//! [`OpenError::NotATidingsLog`], garbage with [`OpenError::NotADatabase`],
//! and, with the default [`OpenCheck::Quick`], damaged files with
//! [`OpenError::Corrupt`]. Opening never panics on a bad file.
//!
//! One process should own a log file. Another process appending to the same
//! file gets correct sequence numbers (the writer re-reads the last sequence
//! in every transaction), but this process' `watch` is not woken by it.

mod codec;
mod error;
#[doc(hidden)]
pub mod fuzzing;
mod options;
mod reader;
pub mod schema;
mod writer;

use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::thread::JoinHandle;

use chrono::{DateTime, Utc};
use crossbeam_channel::Sender;
use parking_lot::{Mutex, RwLock};
use rusqlite::Connection;
use tidings_core::log::{
    validate_consumer_name, AppendError, AppendFuture, Bounds, BoxFuture, CursorError, EventLog,
    Page, PruneError, ReadError,
};
use tidings_core::NewEvent;
use tokio::sync::{oneshot, watch};

pub use error::{CloseError, OpenError, StorageError, SyncError};
pub use options::{Durability, OpenCheck, SqliteOptions};
pub use schema::{APPLICATION_ID, SCHEMA_VERSION};

use codec::Encoded;
use reader::ReadJob;
use writer::{Command, Stats, Writer, WriterConfig};

/// Counters of a [`SqliteLog`] since it was opened.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SqliteStats {
    /// Write transactions committed (group commits and background pruning).
    pub transactions: u64,
    /// Group commits run (each took one or more queued commands).
    pub groups: u64,
    /// WAL fsyncs: in `Sync` mode one per committed transaction that wrote
    /// something (SQLite's own checkpoint fsyncs are not counted); in
    /// `Batch` mode one per periodic or requested sync; in `None` mode only
    /// requested ones.
    pub syncs: u64,
    /// Append requests taken by the writer (batches, not events).
    pub append_requests: u64,
    /// Events appended (duplicates not counted).
    pub events_appended: u64,
    /// Events answered with the original because their key was seen.
    pub duplicates: u64,
    /// Appends refused for an `expected_last` mismatch.
    pub conflicts: u64,
    /// The most commands one group commit took.
    pub largest_group: u64,
    /// Events removed by retention.
    pub events_pruned: u64,
    /// Idempotency keys forgotten after their window.
    pub keys_expired: u64,
    /// Write transactions that failed and were rolled back.
    pub failed_transactions: u64,
    /// Reads answered with a page the readers had read ahead.
    pub read_ahead_served: u64,
}

/// An [`EventLog`] in a SQLite file. See the [crate docs](crate).
#[derive(Clone)]
pub struct SqliteLog {
    inner: Arc<Inner>,
}

struct Inner {
    path: PathBuf,
    options: SqliteOptions,
    /// The writer's queue; `None` once closed. Invariant: taken (under the
    /// write lock) before the writer thread is joined, so nothing can be
    /// queued after the writer drained its queue.
    writer_tx: RwLock<Option<Sender<Command>>>,
    /// The readers' queue; `None` once closed. Invariant: taken, and the
    /// readers joined, before the writer is stopped, so the writer's
    /// connection closes last.
    reader_tx: RwLock<Option<Sender<ReadJob>>>,
    /// `None` once joined.
    writer_thread: Mutex<Option<JoinHandle<Result<(), StorageError>>>>,
    /// Empty once joined.
    reader_threads: Mutex<Vec<JoinHandle<()>>>,
    /// Pages read ahead for sequential readers (shared with the readers).
    read_ahead: Arc<reader::ReadAhead>,
    /// A receiver of the writer's watch channel (the writer owns the
    /// sender, so receivers see the channel close when the log closes).
    watch_rx: watch::Receiver<u64>,
    stats: Arc<Stats>,
}

fn connect(path: &Path, options: &SqliteOptions) -> Result<Connection, OpenError> {
    let sqlite = |e| OpenError::from_sqlite(path, e);
    let conn = Connection::open(path).map_err(sqlite)?;
    conn.busy_timeout(options.busy_timeout).map_err(sqlite)?;
    conn.set_prepared_statement_cache_capacity(64);
    conn.execute_batch(&format!(
        "PRAGMA cache_size = -{}; PRAGMA temp_store = MEMORY;",
        options.cache_kib
    ))
    .map_err(sqlite)?;
    Ok(conn)
}

fn sqlite_path_suffix(path: &Path, suffix: &str) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(suffix);
    PathBuf::from(s)
}

impl SqliteLog {
    /// Opens (or creates) the log at `path`.
    ///
    /// A new file gets the current schema; an older one is migrated; a
    /// newer, foreign, garbage or (per [`SqliteOptions::check_on_open`])
    /// damaged one is refused with the matching [`OpenError`]. Then the
    /// writer thread and `options.readers` reader threads start.
    pub fn open(path: impl AsRef<Path>, options: SqliteOptions) -> Result<SqliteLog, OpenError> {
        let path = path.as_ref().to_path_buf();
        options.validate().map_err(OpenError::InvalidOptions)?;
        let sqlite = |e| OpenError::from_sqlite(&path, e);

        let mut conn = connect(&path, &options)?;
        schema::prepare(&mut conn, &path)?;
        schema::check(&conn, &path, options.check_on_open)?;
        let last = schema::load_last_seq(&conn, &path)?;
        let synchronous = match options.durability {
            Durability::Sync => "FULL",
            Durability::Batch { .. } => "NORMAL",
            Durability::None => "OFF",
        };
        conn.execute_batch(&format!(
            "PRAGMA synchronous = {synchronous}; PRAGMA journal_size_limit = 67108864;"
        ))
        .map_err(sqlite)?;

        let stats = Arc::new(Stats::default());
        let (watch_tx, watch_rx) = watch::channel(last);
        let (reader_tx, reader_rx) = crossbeam_channel::unbounded::<ReadJob>();
        let read_ahead = Arc::new(reader::ReadAhead::default());
        let mut reader_threads = Vec::with_capacity(options.readers);
        for i in 0..options.readers {
            let rconn = connect(&path, &options)?;
            rconn
                .execute_batch(&format!(
                    "PRAGMA query_only = ON; PRAGMA mmap_size = {};",
                    options.reader_mmap_bytes
                ))
                .map_err(sqlite)?;
            let (rx, ahead) = (reader_rx.clone(), read_ahead.clone());
            let handle = std::thread::Builder::new()
                .name(format!("tidings-sqlr-{i}"))
                .spawn(move || reader::run(rconn, rx, ahead))
                .map_err(OpenError::Thread)?;
            reader_threads.push(handle);
        }
        drop(reader_rx);

        let (writer_tx, writer_rx) = crossbeam_channel::unbounded::<Command>();
        let cfg = WriterConfig {
            durability: options.durability,
            retention: options.retention,
            idempotency_window: options.idempotency_window,
            prune_interval: options.prune_interval,
            max_group_events: options.max_group_events,
            group_wait: options.group_wait,
            wal_path: sqlite_path_suffix(&path, "-wal"),
        };
        let writer = Writer::new(conn, writer_rx, watch_tx, stats.clone(), cfg, last);
        let writer_thread = std::thread::Builder::new()
            .name("tidings-sqlw".into())
            .spawn(move || writer.run())
            .map_err(OpenError::Thread)?;
        tracing::debug!(path = %path.display(), last, "event log open");

        Ok(SqliteLog {
            inner: Arc::new(Inner {
                path,
                options,
                writer_tx: RwLock::new(Some(writer_tx)),
                reader_tx: RwLock::new(Some(reader_tx)),
                writer_thread: Mutex::new(Some(writer_thread)),
                reader_threads: Mutex::new(reader_threads),
                read_ahead,
                watch_rx,
                stats,
            }),
        })
    }

    /// The file this log lives in.
    pub fn path(&self) -> &Path {
        &self.inner.path
    }

    /// The options it was opened with.
    pub fn options(&self) -> &SqliteOptions {
        &self.inner.options
    }

    /// The last committed sequence (what [`EventLog::watch`] holds).
    pub fn last_seq(&self) -> u64 {
        *self.inner.watch_rx.borrow()
    }

    /// A snapshot of the counters.
    pub fn stats(&self) -> SqliteStats {
        let s = &*self.inner.stats;
        let get = |c: &std::sync::atomic::AtomicU64| c.load(Ordering::Relaxed);
        SqliteStats {
            transactions: get(&s.transactions),
            groups: get(&s.groups),
            syncs: get(&s.syncs),
            append_requests: get(&s.append_requests),
            events_appended: get(&s.events_appended),
            duplicates: get(&s.duplicates),
            conflicts: get(&s.conflicts),
            largest_group: get(&s.largest_group),
            events_pruned: get(&s.events_pruned),
            keys_expired: get(&s.keys_expired),
            failed_transactions: get(&s.failed_transactions),
            read_ahead_served: get(&self.inner.read_ahead.served),
        }
    }

    /// Fsyncs the WAL once everything queued before this call has
    /// committed: afterwards all acknowledged appends survive power loss,
    /// whatever the [`Durability`] mode.
    pub fn sync(&self) -> impl Future<Output = Result<(), SyncError>> + Send + 'static {
        let (tx, rx) = oneshot::channel();
        let _ = self.inner.send_write(Command::Sync { reply: tx });
        reply(rx, || SyncError::Closed)
    }

    /// Closes the log: the readers answer the reads already queued and
    /// stop, then the writer commits everything already queued (and in
    /// `Batch` mode fsyncs it) and closes last (SQLite then checkpoints the
    /// WAL into the main file and removes it). Blocks until done. Later calls on any clone fail with
    /// `Closed`. Idempotent. Dropping the last clone closes
    /// too, blocking the dropping thread the same way (normally for at most
    /// one group commit).
    pub fn close(&self) -> Result<(), CloseError> {
        self.inner.shutdown()
    }

    /// Tests: stops the writer until the returned sender is used or
    /// dropped, so commands queue up into one group.
    #[cfg(test)]
    fn hold_writer(&self) -> std::sync::mpsc::Sender<()> {
        let (tx, rx) = std::sync::mpsc::channel();
        let _ = self.inner.send_write(Command::Hold(rx));
        tx
    }

    /// Tests: one integer from `sql` run on the writer's connection.
    #[cfg(test)]
    async fn writer_query(&self, sql: &'static str) -> i64 {
        let (tx, rx) = oneshot::channel();
        let _ = self.inner.send_write(Command::Query(sql, tx));
        rx.await.expect("writer answered").expect("query ran")
    }
}

impl Inner {
    fn send_write(&self, cmd: Command) -> Result<(), Command> {
        match self.writer_tx.read().as_ref() {
            Some(tx) => tx.send(cmd).map_err(|e| e.0),
            None => Err(cmd),
        }
    }

    fn send_read(&self, job: ReadJob) -> Result<(), ReadJob> {
        match self.reader_tx.read().as_ref() {
            Some(tx) => tx.send(job).map_err(|e| e.0),
            None => Err(job),
        }
    }

    fn shutdown(&self) -> Result<(), CloseError> {
        let mut result = Ok(());
        // Readers first, so the writer's connection is the last one to
        // close: SQLite then checkpoints the WAL into the main file and
        // removes it (two readers closing at once could each see the other
        // still open and leave the WAL behind).
        drop(self.reader_tx.write().take());
        for handle in self.reader_threads.lock().drain(..) {
            if handle.join().is_err() {
                result = Err(CloseError::ThreadPanicked("reader"));
            }
        }
        drop(self.writer_tx.write().take());
        if let Some(handle) = self.writer_thread.lock().take() {
            match handle.join() {
                Ok(Ok(())) => {}
                Ok(Err(e)) => result = Err(CloseError::Sync(e)),
                Err(_) => result = Err(CloseError::ThreadPanicked("writer")),
            }
        }
        result
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        if let Err(e) = self.shutdown() {
            tracing::warn!(path = %self.path.display(), error = %e, "closing the event log failed");
        }
    }
}

/// The answer to a job sent to the writer or a reader. A job that could not
/// be sent is dropped with its reply sender, and a thread that stops drops
/// the senders it holds, so both end as `closed()`.
fn reply<T: Send + 'static, E: Send + 'static>(
    rx: oneshot::Receiver<Result<T, E>>,
    closed: fn() -> E,
) -> BoxFuture<Result<T, E>> {
    Box::pin(async move { rx.await.unwrap_or_else(|_| Err(closed())) })
}

fn read_closed() -> ReadError {
    ReadError::Closed
}

fn cursor_closed() -> CursorError {
    CursorError::Closed
}

impl EventLog for SqliteLog {
    fn append(&self, batch: Vec<NewEvent>, expected_last: Option<u64>) -> AppendFuture {
        if batch.is_empty() {
            return AppendFuture::ready(Err(AppendError::EmptyBatch));
        }
        let mut encoded = Vec::with_capacity(batch.len());
        for ev in batch {
            match Encoded::new(ev) {
                Ok(e) => encoded.push(e),
                Err(e) => return AppendFuture::ready(Err(e.into())),
            }
        }
        let (tx, rx) = oneshot::channel();
        let cmd = Command::Append {
            batch: encoded,
            expected_last,
            reply: tx,
        };
        if self.inner.send_write(cmd).is_err() {
            return AppendFuture::ready(Err(AppendError::Closed));
        }
        AppendFuture::Pending(Box::pin(async move {
            rx.await
                .unwrap_or(Err(AppendError::Closed))
                .map(writer::Appended::into_committed)
        }))
    }

    fn read(&self, after: u64, limit: usize) -> BoxFuture<Result<Page, ReadError>> {
        let (tx, rx) = oneshot::channel();
        let _ = self.inner.send_read(ReadJob::Read {
            after,
            limit,
            reply: tx,
        });
        let raw = reply(rx, read_closed);
        Box::pin(async move { raw.await?.decode().map_err(Into::into) })
    }

    fn bounds(&self) -> BoxFuture<Result<Bounds, ReadError>> {
        let (tx, rx) = oneshot::channel();
        let _ = self.inner.send_read(ReadJob::Bounds { reply: tx });
        reply(rx, read_closed)
    }

    fn seq_before(&self, time: DateTime<Utc>) -> BoxFuture<Result<u64, ReadError>> {
        let (tx, rx) = oneshot::channel();
        let _ = self.inner.send_read(ReadJob::SeqBefore { time, reply: tx });
        reply(rx, read_closed)
    }

    fn watch(&self) -> watch::Receiver<u64> {
        let mut rx = self.inner.watch_rx.clone();
        rx.borrow_and_update();
        rx
    }

    fn cursor(&self, consumer: &str) -> BoxFuture<Result<Option<u64>, CursorError>> {
        if let Err(e) = validate_consumer_name(consumer) {
            return Box::pin(std::future::ready(Err(e)));
        }
        let (tx, rx) = oneshot::channel();
        let _ = self.inner.send_read(ReadJob::Cursor {
            name: consumer.to_owned(),
            reply: tx,
        });
        reply(rx, cursor_closed)
    }

    fn commit_cursor(&self, consumer: &str, seq: u64) -> BoxFuture<Result<(), CursorError>> {
        if let Err(e) = validate_consumer_name(consumer) {
            return Box::pin(std::future::ready(Err(e)));
        }
        let (tx, rx) = oneshot::channel();
        let _ = self.inner.send_write(Command::CommitCursor {
            name: consumer.to_owned(),
            seq,
            reply: tx,
        });
        reply(rx, cursor_closed)
    }

    fn prune(&self) -> BoxFuture<Result<u64, PruneError>> {
        let (tx, rx) = oneshot::channel();
        let _ = self.inner.send_write(Command::Prune { reply: tx });
        reply(rx, || PruneError::Closed)
    }
}

#[cfg(test)]
mod tests;
