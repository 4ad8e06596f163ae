//! The log handle: [`SqliteLog`], its opening and closing, and its
//! [`EventLog`] implementation.
//!
//! # Contract
//!
//! * A [`SqliteLog`] is a cheap handle: clones share one [`Inner`], which
//!   owns the writer thread, the reader threads and the queues to them.
//!   The handle itself never touches SQLite after `open`: writes go to the
//!   writer as a [`Command`], reads to the reader pool as a [`ReadJob`],
//!   each with a oneshot for the answer.
//! * Work done on the caller's side: validating consumer names and
//!   encoding payloads before anything is queued (so a bad request never
//!   reaches a thread), and building the committed events and decoding
//!   pages after the answer arrives (so the threads do no per-event
//!   allocation or JSON work).
//! * `Closed` means exactly that the log was closed (or its last clone
//!   dropped). A request whose reply was dropped by a writer that panicked
//!   is answered with the panic ([`Health::dropped_reply`]) instead.
//! * Closing is ordered: the readers' queue is closed and the readers
//!   joined first, then the writer's; so the writer's connection closes
//!   last (SQLite then checkpoints the WAL into the main file and removes
//!   it), and nothing can be queued after the writer drained its queue.
//!
//! The unit tests of the crate's behaviour through this handle are in
//! `handle/tests.rs`.

use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use tidings_core::log::LogFailure;

use chrono::{DateTime, Utc};
use crossbeam_channel::Sender;
use parking_lot::{Mutex, RwLock};
use rusqlite::Connection;
use tidings_core::log::{
    validate_consumer_name, AppendError, AppendFuture, Bounds, BoxFuture, ConsumerRecord,
    CursorError, EventLog, LogHealth, Page, PruneError, ReadError,
};
use tidings_core::NewEvent;
use tokio::sync::{oneshot, watch};

use crate::codec::Encoded;
use crate::command::{Appended, Command};
use crate::error::{CloseError, OpenError, StorageError, SyncError};
use crate::health::Health;
use crate::options::{Durability, SqliteOptions};
use crate::reader::{self, ReadAhead, ReadJob};
use crate::schema;
use crate::stats::{SqliteStats, Stats};
use crate::writer::{Writer, WriterConfig};

/// An [`EventLog`] in a SQLite file. See the [crate docs](crate).
#[derive(Clone)]
pub struct SqliteLog {
    inner: Arc<Inner>,
}

/// What the clones of one [`SqliteLog`] share. Dropping the last clone
/// drops it, which closes the log ([`Inner::shutdown`]).
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
    /// `None` once joined. Its result is the final `Batch`-mode fsync's.
    writer_thread: Mutex<Option<JoinHandle<Result<(), StorageError>>>>,
    /// Empty once joined.
    reader_threads: Mutex<Vec<JoinHandle<()>>>,
    /// Pages read ahead for sequential readers (shared with the readers),
    /// and the readers' counters.
    read_ahead: Arc<ReadAhead>,
    /// A receiver of the writer's watch channel (the writer owns the
    /// sender, so receivers see the channel close when the log closes).
    watch_rx: watch::Receiver<u64>,
    /// The writer's counters (the writer bumps them; this only reads).
    stats: Arc<Stats>,
    /// Shared with the writer (see `health.rs`).
    health: Arc<Health>,
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
        // What the connection really does, not what was asked: the writer
        // counts an fsync per writing COMMIT only if SQLite will do one.
        let sync_level: i64 = conn
            .query_row("PRAGMA synchronous", [], |r| r.get(0))
            .map_err(sqlite)?;

        let stats = Arc::new(Stats::default());
        let health = Arc::new(Health::default());
        let (watch_tx, watch_rx) = watch::channel(last);
        let (reader_tx, reader_rx) = crossbeam_channel::unbounded::<ReadJob>();
        let read_ahead = Arc::new(ReadAhead::default());
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
            retention: options.log.retention,
            idempotency_window: options.log.idempotency_window,
            prune_interval: options.log.prune_interval,
            max_group_events: options.max_group_events,
            group_wait: options.group_wait,
            wal_path: sqlite_path_suffix(&path, "-wal"),
            commit_fsyncs: sync_level >= 2,
            probe_interval: options.probe_interval,
            archive_delay: options.archive_delay,
        };
        let archive = options
            .archive_dir
            .as_deref()
            .map(crate::archive::ArchiveWriter::open)
            .transpose()?;
        let writer = Writer::new(
            conn,
            writer_rx,
            watch_tx,
            stats.clone(),
            cfg,
            last,
            health.clone(),
        )
        .with_archive(archive);
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
                health,
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
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        let ahead = &self.inner.read_ahead;
        SqliteStats {
            read_ahead_served: get(&ahead.served),
            rows_read: get(&ahead.rows_read),
            reads_abandoned: get(&ahead.abandoned),
            ..self.inner.stats.snapshot()
        }
    }

    /// Fsyncs the WAL once everything queued before this call has
    /// committed: afterwards all acknowledged appends survive power loss,
    /// whatever the [`Durability`] mode.
    pub fn sync(&self) -> impl Future<Output = Result<(), SyncError>> + Send + 'static {
        let (tx, rx) = oneshot::channel();
        let _ = self.inner.send_write(Command::Sync { reply: tx });
        let health = self.inner.health.clone();
        reply(rx, move || {
            health
                .dropped_reply()
                .map_or(SyncError::Failed(LogFailure::Closed), SyncError::from)
        })
    }

    /// Closes the log, blocking this thread ([`EventLog::close`] is the
    /// same, awaited): the readers answer the reads already queued and
    /// stop, then the writer commits everything already queued (and in
    /// `Batch` mode fsyncs it) and closes last (SQLite then checkpoints the
    /// WAL into the main file and removes it). Blocks until done. Later calls on any clone fail with
    /// `Closed`. Idempotent. Dropping the last clone closes
    /// too, blocking the dropping thread the same way (normally for at most
    /// one group commit).
    pub fn close_blocking(&self) -> Result<(), CloseError> {
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

    /// Tests: blocks one reader thread until the returned sender is used or
    /// dropped.
    #[cfg(test)]
    fn hold_reader(&self) -> std::sync::mpsc::Sender<()> {
        let (tx, rx) = std::sync::mpsc::channel();
        let _ = self.inner.send_read(ReadJob::Hold(rx));
        tx
    }

    /// Tests: one integer from `sql` run on the writer's connection.
    #[cfg(test)]
    async fn writer_query(&self, sql: &'static str) -> i64 {
        let (tx, rx) = oneshot::channel();
        let _ = self.inner.send_write(Command::Query(sql, tx));
        rx.await.expect("writer answered").expect("query ran")
    }

    /// Tests: runs `sql` on the writer's connection, between groups.
    #[cfg(test)]
    async fn writer_exec(&self, sql: &'static str) {
        let (tx, rx) = oneshot::channel();
        let _ = self.inner.send_write(Command::Exec(sql, tx));
        rx.await.expect("writer answered").expect("statements ran")
    }

    /// Tests: (the writer has commits not yet fsynced, it has a timer set).
    #[cfg(test)]
    async fn writer_inspect(&self) -> (bool, bool) {
        let (tx, rx) = oneshot::channel();
        let _ = self.inner.send_write(Command::Inspect(tx));
        rx.await.expect("writer answered")
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
/// be sent is dropped with its reply sender, and a thread that stops (or,
/// for the writer, panics) drops the senders it holds, so both end as
/// `closed()` (which names a writer panic if there was one).
fn reply<T: Send + 'static, E: Send + 'static>(
    rx: oneshot::Receiver<Result<T, E>>,
    closed: impl FnOnce() -> E + Send + 'static,
) -> BoxFuture<Result<T, E>> {
    Box::pin(async move { rx.await.unwrap_or_else(|_| Err(closed())) })
}

fn read_closed() -> ReadError {
    ReadError::Failed(LogFailure::Closed)
}

fn cursor_closed() -> CursorError {
    CursorError::Failed(LogFailure::Closed)
}

impl SqliteLog {
    /// The answer to a consumer command sent to the writer.
    fn cursor_reply<T: Send + 'static>(
        &self,
        rx: oneshot::Receiver<Result<T, CursorError>>,
    ) -> BoxFuture<Result<T, CursorError>> {
        let health = self.inner.health.clone();
        reply(rx, move || {
            health
                .dropped_reply()
                .map_or(CursorError::Failed(LogFailure::Closed), Into::into)
        })
    }
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
            return AppendFuture::ready(Err(AppendError::Failed(LogFailure::Closed)));
        }
        let health = self.inner.health.clone();
        AppendFuture::Pending(Box::pin(async move {
            rx.await
                .unwrap_or_else(|_| {
                    Err(health
                        .dropped_reply()
                        .map_or(AppendError::Failed(LogFailure::Closed), Into::into))
                })
                .map(Appended::into_committed)
        }))
    }

    /// `Degraded` from the first write that failed for a fault of the
    /// storage (full disk: `no_space: true`; I/O error, lock, writer panic)
    /// until the next write transaction commits: an append, a cursor
    /// commit, a prune, or the writer's own probe (see
    /// [`SqliteOptions::probe_interval`]).
    fn health(&self) -> LogHealth {
        self.inner.health.get()
    }

    fn read(&self, after: u64, limit: usize) -> BoxFuture<Result<Page, ReadError>> {
        self.read_within(after, limit, usize::MAX)
    }

    /// The reader thread stops stepping SQLite once the page reaches
    /// `max_bytes` (sizes computed by SQLite from the stored lengths), so
    /// the rows past the budget are never copied out; see `reader.rs`.
    fn read_within(
        &self,
        after: u64,
        limit: usize,
        max_bytes: usize,
    ) -> BoxFuture<Result<Page, ReadError>> {
        let (tx, rx) = oneshot::channel();
        let _ = self.inner.send_read(ReadJob::Read {
            after,
            limit,
            max_bytes,
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
        for_consumer(consumer, || {
            let (tx, rx) = oneshot::channel();
            let _ = self.inner.send_read(ReadJob::Cursor {
                name: consumer.to_owned(),
                reply: tx,
            });
            reply(rx, cursor_closed)
        })
    }

    fn commit_cursor(&self, consumer: &str, seq: u64) -> BoxFuture<Result<(), CursorError>> {
        for_consumer(consumer, || {
            let (tx, rx) = oneshot::channel();
            let _ = self.inner.send_write(Command::CommitCursor {
                name: consumer.to_owned(),
                seq,
                reply: tx,
            });
            self.cursor_reply(rx)
        })
    }

    fn define_consumer(&self, name: &str, spec: &str) -> BoxFuture<Result<String, CursorError>> {
        for_consumer(name, || {
            let (tx, rx) = oneshot::channel();
            let _ = self.inner.send_write(Command::DefineConsumer {
                name: name.to_owned(),
                spec: spec.to_owned(),
                reply: tx,
            });
            self.cursor_reply(rx)
        })
    }

    fn consumers(&self) -> BoxFuture<Result<Vec<ConsumerRecord>, CursorError>> {
        let (tx, rx) = oneshot::channel();
        let _ = self.inner.send_read(ReadJob::Consumers { reply: tx });
        reply(rx, cursor_closed)
    }

    fn delete_consumer(&self, name: &str) -> BoxFuture<Result<bool, CursorError>> {
        for_consumer(name, || {
            let (tx, rx) = oneshot::channel();
            let _ = self.inner.send_write(Command::DeleteConsumer {
                name: name.to_owned(),
                reply: tx,
            });
            self.cursor_reply(rx)
        })
    }

    fn prune(&self) -> BoxFuture<Result<u64, PruneError>> {
        let (tx, rx) = oneshot::channel();
        let _ = self.inner.send_write(Command::Prune { reply: tx });
        let health = self.inner.health.clone();
        reply(rx, move || {
            health
                .dropped_reply()
                .map_or(PruneError::Failed(LogFailure::Closed), Into::into)
        })
    }

    /// [`SqliteLog::close_blocking`], on a blocking thread (it joins the writer and
    /// readers).
    fn close(&self) -> BoxFuture<Result<(), tidings_core::CloseError>> {
        let log = self.clone();
        Box::pin(async move {
            let closing = move || {
                log.close_blocking()
                    .map_err(|e| tidings_core::CloseError::Storage(Box::new(e)))
            };
            match tokio::runtime::Handle::try_current() {
                Ok(_) => tokio::task::spawn_blocking(closing)
                    .await
                    .unwrap_or_else(|e| Err(tidings_core::CloseError::Storage(Box::new(e)))),
                Err(_) => closing(),
            }
        })
    }
}

/// Runs `op` for a valid consumer name; a name the rule refuses
/// ([`validate_consumer_name`]) is answered at once, with nothing sent to
/// the writer or the readers.
fn for_consumer<T: Send + 'static>(
    name: &str,
    op: impl FnOnce() -> BoxFuture<Result<T, CursorError>>,
) -> BoxFuture<Result<T, CursorError>> {
    match validate_consumer_name(name) {
        Ok(()) => op(),
        Err(e) => Box::pin(std::future::ready(Err(e))),
    }
}

#[cfg(test)]
mod tests;
