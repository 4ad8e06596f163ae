//! The writer thread: the only code that writes the file.
//!
//! # Contract
//!
//! * One [`Writer`] per open log, on its own thread, owns the only writing
//!   connection. Everything that writes (appends, cursor commits, consumer
//!   definitions and deletions, prunes, syncs) reaches it as a [`Command`] on its channel; nothing else ever
//!   writes the file.
//! * Commit, then notify, then acknowledge: after a `COMMIT` returns, the
//!   writer publishes the new last seq on the watch channel (waking
//!   followers with no polling delay) and only then answers the commands
//!   of that transaction. The watch never runs ahead of the file:
//!   `self.last` only moves after a `COMMIT` succeeded.
//! * Every transaction re-reads the last seq from the file
//!   ([`sql::read_last`]), so seqs stay gap-free even after a failed
//!   transaction or another process' appends.
//! * Every command taken off the queue is answered, also when its group
//!   fails or the writer panics (see below); a reply sender a panic lost
//!   is answered by the handle, from [`Health`], with the panic. The
//!   writer stops only once the queue is closed and drained, and then (in
//!   `Batch` mode) fsyncs what it committed.
//!
//! # Code map
//!
//! * this file: the thread's loop, panic recovery, and the transaction
//!   primitives (`begin`, `commit`, `rollback`) every write goes through;
//!   `commit` is the one place commits happen, so it counts the fsync
//!   SQLite does inside a `COMMIT` in [`Durability::Sync`];
//! * [`group`]: group commit (gathering queued commands, running them in
//!   one transaction, isolating a failed one) and answering them;
//! * [`maintenance`]: what runs between groups on timers: retention and
//!   key expiry, the `Batch`-mode WAL fsync, and the probe writes that
//!   bring health back after a storage fault.
//!
//! The SQL itself is in [`crate::sql`].
//!
//! # Panics
//!
//! [`Writer::run`] catches a panic of the loop (a bug), logs it with
//! `tracing::error`, marks health `Degraded`, rolls back what was open,
//! re-reads the last seq from the file and goes on serving the queue. The
//! requests of the group it was running are answered with
//! [`StorageError::WriterPanicked`] (an `Unavailable` append error naming
//! the panic), not `Closed`.

mod group;
mod maintenance;

use std::cell::RefCell;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, RecvTimeoutError};
use rusqlite::Connection;
use tidings_core::log::Retention;
use tokio::sync::watch;

use crate::archive::ArchiveWriter;
use crate::command::Command;
use crate::error::StorageError;
use crate::health::Health;
use crate::options::Durability;
use crate::sql;
use crate::stats::{bump, Stats};

/// How the writer was configured (from [`SqliteOptions`](crate::SqliteOptions)
/// and what `open` read back from the connection).
pub(crate) struct WriterConfig {
    pub(crate) durability: Durability,
    pub(crate) retention: Retention,
    pub(crate) idempotency_window: Duration,
    pub(crate) prune_interval: Option<Duration>,
    pub(crate) max_group_events: usize,
    pub(crate) group_wait: Duration,
    pub(crate) wal_path: PathBuf,
    /// Whether SQLite fsyncs the WAL inside every `COMMIT` that wrote
    /// (`synchronous` read back from the connection is `FULL` or more).
    pub(crate) commit_fsyncs: bool,
    /// While degraded, how often the idle writer probes with a write.
    pub(crate) probe_interval: Option<Duration>,
    /// See [`SqliteOptions::archive_delay`](crate::SqliteOptions::archive_delay).
    pub(crate) archive_delay: Duration,
}

/// The writer thread's state. Only [`Writer::run`] drives it, on its own
/// thread.
pub(crate) struct Writer {
    /// The only connection that writes the file. Invariant: in autocommit
    /// mode (no transaction open) between groups and between maintenance
    /// steps; every `BEGIN` is matched by a `COMMIT` or a rollback in the
    /// same call.
    conn: Connection,
    /// The command queue; the writer stops once every sender is gone and
    /// the queue is drained.
    rx: Receiver<Command>,
    /// Invariant: holds `self.last`, the last seq of the last *committed*
    /// transaction, and is sent right after each commit that changed it.
    watch: watch::Sender<u64>,
    /// Shared with the log handle, which only reads it.
    stats: Arc<Stats>,
    cfg: WriterConfig,
    /// Last committed seq as this writer knows it (re-read at the start of
    /// every transaction, so another process' appends are never
    /// overwritten).
    last: u64,
    /// Commands the previous group held: how many to wait for (at most
    /// `group_wait`) before committing a smaller group.
    expect: usize,
    /// When background pruning runs next (`None`: never).
    next_prune: Option<Instant>,
    /// Batch durability: whether some commit has not been fsynced yet.
    unsynced: bool,
    /// Batch durability: when the WAL was last fsynced.
    last_sync: Instant,
    /// Shared with the log: whether writes fail.
    health: Arc<Health>,
    /// The group being run. Invariant: empty between groups; a panic while
    /// a group runs leaves it here, and [`Writer::run`] answers it.
    group: Vec<Command>,
    /// While degraded: when the next probe write runs.
    next_probe: Option<Instant>,
    /// Where retention puts events before deleting them, if anywhere.
    /// Only prunes use it (a `RefCell` because a group runs under `&self`).
    archive: Option<RefCell<ArchiveWriter>>,
    /// A command taken off the channel but not yet run (tests' `Hold`).
    #[cfg(test)]
    stashed: Option<Command>,
}

impl Writer {
    pub(crate) fn new(
        conn: Connection,
        rx: Receiver<Command>,
        watch: watch::Sender<u64>,
        stats: Arc<Stats>,
        cfg: WriterConfig,
        last: u64,
        health: Arc<Health>,
    ) -> Writer {
        let now = Instant::now();
        Writer {
            conn,
            rx,
            watch,
            stats,
            next_prune: cfg.prune_interval.map(|i| now + i),
            cfg,
            last,
            expect: 1,
            unsynced: false,
            last_sync: now,
            health,
            group: Vec::new(),
            next_probe: None,
            archive: None,
            #[cfg(test)]
            stashed: None,
        }
    }

    /// The writer with an archive: its prunes archive before deleting.
    pub(crate) fn with_archive(mut self, archive: Option<ArchiveWriter>) -> Writer {
        self.archive = archive.map(RefCell::new);
        self
    }

    /// Runs until every sender is gone and the queue is drained, restarting
    /// the loop after a panic (see the module docs).
    pub(crate) fn run(mut self) -> Result<(), StorageError> {
        tracing::debug!(last = self.last, "event log writer started");
        while let Err(payload) = catch_unwind(AssertUnwindSafe(|| self.serve())) {
            let detail = panic_message(payload.as_ref());
            tracing::error!(panic = %detail, "the event log writer thread panicked; restarting it");
            bump(&self.stats.writer_panics, 1);
            self.health.writer_panicked(detail.clone());
            self.recover_after_panic();
            // The group it was running, if any: rolled back, so answer it.
            let group = std::mem::take(&mut self.group);
            let failed = group.iter().map(|_| None).collect();
            group::refuse_all(group, failed, &StorageError::WriterPanicked { detail });
        }
        // Closing: make batch-mode commits durable before the file closes.
        let result = if self.unsynced {
            self.sync_wal()
        } else {
            Ok(())
        };
        tracing::debug!(last = self.last, "event log writer stopped");
        result
    }

    /// The loop of [`Writer::run`].
    fn serve(&mut self) {
        while let Some(first) = self.next_command() {
            #[cfg(test)]
            let first = match first {
                Command::Hold(release) => {
                    let _ = release.recv();
                    continue;
                }
                Command::Query(sql, reply) => {
                    let _ = reply.send(self.conn.query_row(sql, [], |r| r.get(0)));
                    continue;
                }
                Command::Exec(sql, reply) => {
                    let _ = reply.send(self.conn.execute_batch(sql));
                    continue;
                }
                Command::Inspect(reply) => {
                    let _ = reply.send((self.unsynced, self.next_deadline().is_some()));
                    continue;
                }
                other => other,
            };
            let group = self.gather(first);
            self.run_group(group);
            self.maintenance_if_due();
        }
    }

    /// After a caught panic: nothing half-done stays open, and the last seq
    /// (and the watch) match the file again.
    fn recover_after_panic(&mut self) {
        self.rollback();
        match sql::read_last(&self.conn) {
            Ok(last) if last != self.last => {
                self.last = last;
                self.watch.send_replace(last);
            }
            Ok(_) => {}
            Err(e) => tracing::error!(error = %e, "re-reading the last seq after a panic failed"),
        }
        self.schedule_probe();
    }

    /// The next command, running maintenance whenever its timer fires while
    /// waiting. `None` once the channel is closed and empty.
    fn next_command(&mut self) -> Option<Command> {
        #[cfg(test)]
        if let Some(c) = self.stashed.take() {
            return Some(c);
        }
        loop {
            let got = match self.next_deadline() {
                None => self.rx.recv().map_err(|_| RecvTimeoutError::Disconnected),
                Some(d) => self
                    .rx
                    .recv_timeout(d.saturating_duration_since(Instant::now())),
            };
            match got {
                Ok(c) => return Some(c),
                Err(RecvTimeoutError::Timeout) => self.maintenance_if_due(),
                Err(RecvTimeoutError::Disconnected) => return None,
            }
        }
    }

    fn exec(&self, sql: &'static str, op: &'static str) -> Result<(), StorageError> {
        self.conn
            .prepare_cached(sql)
            .and_then(|mut s| s.execute([]))
            .map(|_| ())
            .map_err(StorageError::sqlite(op))
    }

    /// `BEGIN IMMEDIATE` and the last seq as stored.
    fn begin(&self) -> Result<u64, StorageError> {
        self.exec("BEGIN IMMEDIATE", "beginning a write transaction")
            .map_err(|e| e.with_os_error(&self.conn))?;
        match sql::read_last(&self.conn) {
            Ok(last) => Ok(last),
            Err(e) => {
                let e = e.with_os_error(&self.conn);
                self.rollback();
                Err(e)
            }
        }
    }

    fn rollback(&self) {
        if !self.conn.is_autocommit() {
            if let Err(e) = self.conn.execute_batch("ROLLBACK") {
                tracing::warn!(error = %e, "rollback failed");
            }
        }
    }

    /// `COMMIT`s the open transaction; true if it wrote anything (changed
    /// rows since `changes_before`). This is the one place commits happen,
    /// so the fsync SQLite does inside a `COMMIT` that wrote (with
    /// `synchronous=FULL`, i.e. [`Durability::Sync`]) is counted right here.
    fn commit(&mut self, changes_before: u64, op: &'static str) -> Result<bool, StorageError> {
        self.exec("COMMIT", op)?;
        let wrote = self.conn.total_changes() != changes_before;
        if wrote {
            if self.cfg.commit_fsyncs {
                self.stats.count_sync();
            }
            if let Durability::Batch { .. } = self.cfg.durability {
                self.unsynced = true;
            }
        }
        Ok(wrote)
    }

    /// Bookkeeping after a successful commit: stats, health, watch.
    fn committed(&mut self, last: u64, wrote: bool) {
        bump(&self.stats.transactions, 1);
        if wrote {
            self.write_succeeded();
        }
        if last != self.last {
            self.last = last;
            self.watch.send_replace(last);
        }
    }
}

/// The message of a panic payload.
fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_owned()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "a panic with a non-string payload".to_owned()
    }
}
