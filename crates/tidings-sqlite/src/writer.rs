//! The writer thread: the only code that writes the file.
//!
//! # Group commit
//!
//! Appenders (and cursor commits, prunes, syncs) send a [`Command`] down a
//! channel and wait on a oneshot. The writer blocks for the first command,
//! then takes everything else already queued (up to
//! `max_group_events`) and runs the whole group in **one** `BEGIN
//! IMMEDIATE` … `COMMIT`, so concurrent appenders share one transaction
//! and, in [`Durability::Sync`], one fsync. Commands queue up naturally while
//! the previous commit is fsyncing; no artificial delay is added.
//!
//! If the previous group was bigger than what is queued now, the writer
//! waits up to `group_wait` (default 200 µs, a fraction of an fsync) for
//! those appenders to come back, so the group size does not oscillate
//! between big and tiny. A lone appender never waits: the expectation is
//! the size of the previous group.
//!
//! Inside the group each command is checked against the *running* last
//! sequence before anything is written (an `expected_last` conflict, a
//! `BeyondEnd` cursor and a duplicate key are decided by reading, not by a
//! failed write), so such refusals cost the others nothing. A command whose
//! *write* fails (SQLite error) is isolated by rolling the transaction back
//! and running the group again without it: the failed command gets its
//! error, the others commit. That keeps the common path free of
//! per-command savepoints. Results (the `Arc<Event>`s) are built only after
//! `COMMIT` succeeded.
//!
//! After `COMMIT` returns, the writer publishes the new last sequence on the
//! watch channel (waking followers with no polling delay) and only then
//! answers the appenders: commit, then notify, then acknowledge.
//!
//! Between groups (on a timer) the writer applies retention and forgets
//! expired idempotency keys, and in [`Durability::Batch`] fsyncs the WAL.
//!
//! # Storage faults
//!
//! A write that fails because of the storage itself (a full disk, an I/O
//! error, a lock held by another process: [`StorageError::is_fault`]) is not
//! one command's problem, so the whole group is rolled back and answered
//! with that error at once (a full disk answers `AppendError::NoSpace`)
//! instead of being retried command by command. Nothing of it is kept: the
//! transaction is rolled back, `self.last` only moves after a `COMMIT`
//! succeeded, and every transaction re-reads the last seq from the file, so
//! seqs stay gap-free and the next group simply tries again. The fault
//! marks [`Health`] `Degraded`; the next write transaction that commits
//! marks it `Ok` again. While degraded and idle, the writer probes every
//! `probe_interval` with a one-row write transaction, so health recovers
//! (once space is freed, say) without waiting for the next publish.
//!
//! # Panics
//!
//! [`Writer::run`] catches a panic of the loop (a bug), logs it with
//! `tracing::error`, marks health `Degraded`, rolls back what was open,
//! re-reads the last seq from the file and goes on serving the queue. The
//! requests of the group it was running are dropped unanswered; the log
//! answers those with [`StorageError::WriterPanicked`] (an `Unavailable`
//! append error naming the panic), not `Closed`.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crossbeam_channel::{Receiver, RecvTimeoutError, TryRecvError};
use rusqlite::types::{ToSqlOutput, ValueRef};
use rusqlite::{params, Connection, OptionalExtension};
use tidings_core::log::{AppendError, Committed, CursorError, PruneError, Retention};
use tidings_core::SharedEvent;
use tokio::sync::{oneshot, watch};

use crate::codec::{decode_at, Columns, Encoded, STANDARD};
use crate::error::{StorageError, SyncError};
use crate::health::Health;
use crate::options::Durability;

/// Answer channel of an append: the batch comes back with where each
/// event went, and the caller builds the committed events. So the writer
/// thread neither allocates the `Arc<Event>`s nor frees the encoded
/// payloads (both would be cross-thread allocator traffic on its hot path).
pub(crate) type AppendReply = oneshot::Sender<Result<Appended, AppendError>>;

/// A committed append, to be turned into its result by the caller.
pub(crate) struct Appended {
    batch: Vec<Encoded>,
    slots: Slots,
}

impl Appended {
    /// One `Committed` per input event, in input order.
    pub(crate) fn into_committed(self) -> Vec<Committed> {
        match self.slots {
            Slots::Dense(first) => self
                .batch
                .into_iter()
                .zip(first..)
                .map(|(enc, seq)| Committed {
                    event: Arc::new(enc.event.commit(seq)),
                    duplicate: false,
                })
                .collect(),
            Slots::Mixed(slots) => self
                .batch
                .into_iter()
                .zip(slots)
                .map(|(enc, slot)| match slot {
                    Slot::New(seq) => Committed {
                        event: Arc::new(enc.event.commit(seq)),
                        duplicate: false,
                    },
                    Slot::Dup(event) => Committed {
                        event,
                        duplicate: true,
                    },
                })
                .collect(),
        }
    }
}

/// Work for the writer.
pub(crate) enum Command {
    /// Append a non-empty batch.
    Append {
        batch: Vec<Encoded>,
        expected_last: Option<u64>,
        reply: AppendReply,
    },
    /// Store a consumer cursor (name already validated).
    CommitCursor {
        name: String,
        seq: u64,
        reply: oneshot::Sender<Result<(), CursorError>>,
    },
    /// Apply retention now.
    Prune {
        reply: oneshot::Sender<Result<u64, PruneError>>,
    },
    /// Fsync the WAL after this group commits.
    Sync {
        reply: oneshot::Sender<Result<(), SyncError>>,
    },
    /// Tests: block the writer until the sender side is used or dropped.
    #[cfg(test)]
    Hold(std::sync::mpsc::Receiver<()>),
    /// Tests: one integer from a query on the writer's connection.
    #[cfg(test)]
    Query(&'static str, oneshot::Sender<rusqlite::Result<i64>>),
    /// Tests: statements run on the writer's connection, outside a group.
    #[cfg(test)]
    Exec(&'static str, oneshot::Sender<rusqlite::Result<()>>),
    /// Tests: (commits not yet fsynced, whether a timer is set).
    #[cfg(test)]
    Inspect(oneshot::Sender<(bool, bool)>),
    /// Tests: panics when the group it is in runs.
    #[cfg(test)]
    Panic,
}

/// True for the test commands the writer runs on their own, not in a group.
#[cfg(test)]
fn solo(c: &Command) -> bool {
    matches!(
        c,
        Command::Hold(_) | Command::Query(..) | Command::Exec(..) | Command::Inspect(_)
    )
}

impl Command {
    fn events(&self) -> usize {
        match self {
            Command::Append { batch, .. } => batch.len(),
            _ => 1,
        }
    }
}

/// Counters kept by the writer (read with relaxed loads: each is exact on
/// its own, a snapshot of several is not atomic).
#[derive(Debug, Default)]
pub(crate) struct Stats {
    pub transactions: AtomicU64,
    pub groups: AtomicU64,
    pub syncs: AtomicU64,
    pub append_requests: AtomicU64,
    pub events_appended: AtomicU64,
    pub duplicates: AtomicU64,
    pub conflicts: AtomicU64,
    pub largest_group: AtomicU64,
    pub events_pruned: AtomicU64,
    pub keys_expired: AtomicU64,
    pub failed_transactions: AtomicU64,
    pub writer_panics: AtomicU64,
    pub probes: AtomicU64,
    /// Tests: the value of `syncs` after each change.
    #[cfg(test)]
    pub synced: SyncSignal,
}

/// Tests: a watch of the fsync counter, so tests wait for an fsync instead
/// of sleeping.
#[cfg(test)]
#[derive(Debug)]
pub(crate) struct SyncSignal(pub watch::Sender<u64>);

#[cfg(test)]
impl Default for SyncSignal {
    fn default() -> Self {
        SyncSignal(watch::channel(0).0)
    }
}

impl Stats {
    /// Counts one fsync; called right where it happened.
    fn count_sync(&self) {
        let _n = self.syncs.fetch_add(1, Ordering::Relaxed) + 1;
        #[cfg(test)]
        self.synced.0.send_replace(_n);
    }
}

fn bump(c: &AtomicU64, n: u64) {
    c.fetch_add(n, Ordering::Relaxed);
}

/// Wall-clock microseconds since the epoch (idempotency key times, cursor
/// update times, age retention). A clock before 1970 counts as 0.
pub(crate) fn wall_micros() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_micros()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

fn micros(d: Duration) -> i64 {
    i64::try_from(d.as_micros()).unwrap_or(i64::MAX)
}

/// How the writer was configured.
pub(crate) struct WriterConfig {
    pub durability: Durability,
    pub retention: Retention,
    pub idempotency_window: Duration,
    pub prune_interval: Option<Duration>,
    pub max_group_events: usize,
    pub group_wait: Duration,
    pub wal_path: PathBuf,
    /// Whether SQLite fsyncs the WAL inside every `COMMIT` that wrote
    /// (`synchronous` read back from the connection is `FULL` or more).
    pub commit_fsyncs: bool,
    /// While degraded, how often the idle writer probes with a write.
    pub probe_interval: Option<Duration>,
}

/// One event's fate inside a not yet committed transaction.
enum Slot {
    /// Inserted at this seq.
    New(u64),
    /// Its key was live: the original event.
    Dup(SharedEvent),
}

/// The fates of a batch's events.
enum Slots {
    /// No duplicate: the events went to `first..first + len`.
    Dense(u64),
    /// One slot per event, in order.
    Mixed(Vec<Slot>),
}

impl Slots {
    /// (new, duplicate) events.
    fn counts(&self, len: usize) -> (u64, u64) {
        match self {
            Slots::Dense(_) => (len as u64, 0),
            Slots::Mixed(v) => {
                let dup = v.iter().filter(|s| matches!(s, Slot::Dup(_))).count() as u64;
                (v.len() as u64 - dup, dup)
            }
        }
    }

    fn len_matches(&self, len: usize) -> bool {
        match self {
            Slots::Dense(_) => true,
            Slots::Mixed(v) => v.len() == len,
        }
    }
}

/// What one command did inside a not yet committed transaction.
enum Outcome {
    /// Appended: where each event of the batch went.
    Appended(Slots),
    /// Refused: the log was not at the expected seq.
    Conflict { expected: u64, actual: u64 },
    /// Refused: the cursor is past the last seq.
    BeyondEnd { last: u64 },
    /// Pruned this many events.
    Pruned(u64),
    /// Done (cursor stored, sync queued).
    Done,
    /// Not run: it failed in an earlier attempt of this group.
    Skipped,
}

pub(crate) struct Writer {
    conn: Connection,
    rx: Receiver<Command>,
    /// Invariant: holds `self.last`, the last seq of the last *committed*
    /// transaction, and is sent right after each commit that changed it.
    watch: watch::Sender<u64>,
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
    /// The group being run (empty between groups).
    group: Vec<Command>,
    /// While degraded: when the next probe write runs.
    next_probe: Option<Instant>,
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
            #[cfg(test)]
            stashed: None,
        }
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
            refuse_all(group, failed, &StorageError::WriterPanicked { detail });
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
        match read_last(&self.conn) {
            Ok(last) if last != self.last => {
                self.last = last;
                self.watch.send_replace(last);
            }
            Ok(_) => {}
            Err(e) => tracing::error!(error = %e, "re-reading the last seq after a panic failed"),
        }
        self.schedule_probe();
    }

    /// Adds to `group` what is queued; false if it met a `Hold` (tests).
    fn drain(&mut self, group: &mut Vec<Command>, events: &mut usize) -> bool {
        while *events < self.cfg.max_group_events {
            match self.rx.try_recv() {
                #[cfg(test)]
                Ok(c) if solo(&c) => {
                    self.stashed = Some(c);
                    return false;
                }
                Ok(c) => {
                    *events += c.events();
                    group.push(c);
                }
                Err(TryRecvError::Empty) | Err(TryRecvError::Disconnected) => break,
            }
        }
        true
    }

    /// The group starting with `first`: everything queued, and if that is
    /// fewer commands than the previous group had, whatever else arrives
    /// within `group_wait`.
    fn gather(&mut self, first: Command) -> Vec<Command> {
        let mut events = first.events();
        let mut group = vec![first];
        let mut open = self.drain(&mut group, &mut events);
        if open && group.len() < self.expect && !self.cfg.group_wait.is_zero() {
            let deadline = Instant::now() + self.cfg.group_wait;
            while open && group.len() < self.expect && events < self.cfg.max_group_events {
                let left = deadline.saturating_duration_since(Instant::now());
                match self.rx.recv_timeout(left) {
                    #[cfg(test)]
                    Ok(c) if solo(&c) => {
                        self.stashed = Some(c);
                        open = false;
                    }
                    Ok(c) => {
                        events += c.events();
                        group.push(c);
                        open = self.drain(&mut group, &mut events);
                    }
                    Err(_) => break,
                }
            }
        }
        self.expect = group.len();
        group
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

    fn next_deadline(&self) -> Option<Instant> {
        let sync_due = match self.cfg.durability {
            Durability::Batch { interval } if self.unsynced => Some(self.last_sync + interval),
            _ => None,
        };
        [self.next_prune, sync_due, self.next_probe]
            .into_iter()
            .flatten()
            .min()
    }

    /// While degraded, the idle writer probes after `probe_interval`.
    fn schedule_probe(&mut self) {
        self.next_probe = self.cfg.probe_interval.map(|i| Instant::now() + i);
    }

    /// Records a failed write: degrades health if it was a fault.
    fn write_failed(&mut self, e: &StorageError) {
        if e.is_fault() {
            self.health.fault(e);
            if self.next_probe.is_none() {
                self.schedule_probe();
            }
        }
    }

    /// Records a committed write: health is `Ok` again.
    fn write_succeeded(&mut self) {
        self.health.recovered();
        self.next_probe = None;
    }

    /// While degraded: one small write transaction (rewriting the
    /// `last_seq` meta row with its own value, which writes and, in `Sync`
    /// mode, fsyncs a WAL frame). Success makes health `Ok`.
    fn probe(&mut self) {
        bump(&self.stats.probes, 1);
        let r = self.begin().and_then(|start| {
            let changes_before = self.conn.total_changes();
            let r = self
                .exec(
                    "UPDATE meta SET v = v WHERE k = 'last_seq'",
                    "probing the storage",
                )
                .and_then(|()| self.commit(changes_before, "committing a probe"));
            match r {
                Ok(wrote) => Ok((start, wrote)),
                Err(e) => {
                    let e = e.with_os_error(&self.conn);
                    self.rollback();
                    Err(e)
                }
            }
        });
        match r {
            Ok((start, wrote)) => {
                tracing::debug!("storage probe succeeded");
                self.committed(start, wrote);
            }
            Err(e) => {
                tracing::debug!(error = %e, "storage probe failed");
                bump(&self.stats.failed_transactions, 1);
                self.write_failed(&e);
                self.schedule_probe();
            }
        }
    }

    fn maintenance_if_due(&mut self) {
        let now = Instant::now();
        if self.next_prune.is_some_and(|t| now >= t) {
            self.next_prune = self.cfg.prune_interval.map(|i| now + i);
            if let Err(e) = self.background_prune() {
                tracing::warn!(error = %e, "background pruning failed");
                self.write_failed(&e);
            }
        }
        if let Durability::Batch { interval } = self.cfg.durability {
            if self.unsynced && now >= self.last_sync + interval {
                if let Err(e) = self.sync_wal() {
                    // Retry after another interval, not in a busy loop.
                    self.last_sync = now;
                    tracing::warn!(error = %e, "periodic WAL sync failed");
                    self.write_failed(&e);
                }
            }
        }
        if self.next_probe.is_some_and(|t| now >= t) {
            self.next_probe = None;
            if self.health.is_degraded() {
                self.probe();
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
        match read_last(&self.conn) {
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

    /// Runs one group of commands in one transaction and answers them.
    ///
    /// The group is held in `self.group` until it is answered, so a panic
    /// while it runs leaves it there for [`Writer::run`] to answer with an
    /// error naming the panic.
    fn run_group(&mut self, group: Vec<Command>) {
        self.group = group;
        let group_len = self.group.len();
        bump(&self.stats.groups, 1);
        self.stats
            .largest_group
            .fetch_max(group_len as u64, Ordering::Relaxed);
        let mut failed: Vec<Option<StorageError>> = (0..group_len).map(|_| None).collect();
        // Each failed attempt marks one more command failed: at most
        // `group.len() + 1` attempts.
        let result = loop {
            let start = match self.begin() {
                Ok(s) => s,
                Err(e) => break Err(e),
            };
            let changes_before = self.conn.total_changes();
            match self.execute(&self.group, &failed, start) {
                Ok((last, outcomes)) => match self.commit(changes_before, "committing") {
                    Ok(wrote) => break Ok((last, outcomes, wrote)),
                    Err(e) => {
                        let e = e.with_os_error(&self.conn);
                        self.rollback();
                        break Err(e);
                    }
                },
                // A fault of the storage fails every command alike: answer
                // the group now instead of rerunning it command by command.
                Err((_, e)) if e.is_fault() => {
                    let e = e.with_os_error(&self.conn);
                    self.rollback();
                    break Err(e);
                }
                Err((i, e)) => {
                    tracing::warn!(error = %e, "a command failed; rerunning its group without it");
                    self.rollback();
                    bump(&self.stats.failed_transactions, 1);
                    failed[i] = Some(e);
                }
            }
        };
        let group = std::mem::take(&mut self.group);
        match result {
            Ok((last, outcomes, wrote)) => {
                self.committed(last, wrote);
                let wants_sync = group.iter().any(|c| matches!(c, Command::Sync { .. }));
                let sync = if wants_sync {
                    self.sync_wal().map_err(SyncError::Storage)
                } else {
                    Ok(())
                };
                answer(group, outcomes, failed, sync, &self.stats);
            }
            Err(e) => {
                tracing::warn!(error = %e, "group commit failed");
                bump(&self.stats.failed_transactions, 1);
                self.write_failed(&e);
                refuse_all(group, failed, &e);
            }
        }
    }

    /// Runs the group's commands (except those already failed) inside the
    /// open transaction. On a failed write: the index of the command.
    fn execute(
        &self,
        group: &[Command],
        failed: &[Option<StorageError>],
        start: u64,
    ) -> Result<(u64, Vec<Outcome>), (usize, StorageError)> {
        let now_us = wall_micros();
        let mut last = start;
        let mut outcomes = Vec::with_capacity(group.len());
        for (i, cmd) in group.iter().enumerate() {
            if failed[i].is_some() {
                outcomes.push(Outcome::Skipped);
                continue;
            }
            let outcome = match cmd {
                Command::Append {
                    batch,
                    expected_last,
                    ..
                } => match expected_last {
                    Some(expected) if *expected != last => Outcome::Conflict {
                        expected: *expected,
                        actual: last,
                    },
                    _ => Outcome::Appended(
                        append_batch(&self.conn, batch, &mut last, now_us, &self.cfg)
                            .map_err(|e| (i, e))?,
                    ),
                },
                Command::CommitCursor { name, seq, .. } => {
                    if *seq > last {
                        Outcome::BeyondEnd { last }
                    } else {
                        store_cursor(&self.conn, name, *seq, now_us).map_err(|e| (i, e))?;
                        Outcome::Done
                    }
                }
                Command::Prune { .. } => Outcome::Pruned(
                    prune(&self.conn, &self.cfg, last, now_us, &self.stats).map_err(|e| (i, e))?,
                ),
                Command::Sync { .. } => Outcome::Done,
                #[cfg(test)]
                Command::Panic => panic!("injected writer panic"),
                #[cfg(test)]
                Command::Hold(_) | Command::Query(..) | Command::Exec(..) | Command::Inspect(_) => {
                    Outcome::Done
                }
            };
            outcomes.push(outcome);
        }
        Ok((last, outcomes))
    }

    /// Retention and key expiry in a transaction of their own.
    fn background_prune(&mut self) -> Result<u64, StorageError> {
        let start = self.begin()?;
        let changes_before = self.conn.total_changes();
        let r = prune(&self.conn, &self.cfg, start, wall_micros(), &self.stats)
            .and_then(|n| Ok((n, self.commit(changes_before, "committing a prune")?)));
        match r {
            Ok((n, wrote)) => {
                self.committed(start, wrote);
                if n > 0 {
                    tracing::debug!(removed = n, "retention pruned events");
                }
                Ok(n)
            }
            Err(e) => {
                let e = e.with_os_error(&self.conn);
                self.rollback();
                bump(&self.stats.failed_transactions, 1);
                Err(e)
            }
        }
    }

    /// Fsyncs the WAL file: every transaction committed so far is then on
    /// stable storage (the WAL is where commits live until checkpointed;
    /// checkpoints fsync the database file themselves).
    fn sync_wal(&mut self) -> Result<(), StorageError> {
        let path = &self.cfg.wal_path;
        let r = match std::fs::File::open(path) {
            Ok(f) => f.sync_all(),
            // No WAL file: nothing was written since it was last removed.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(e),
        };
        r.map_err(|e| StorageError::Io {
            path: path.clone(),
            source: Arc::new(e),
        })?;
        self.stats.count_sync();
        self.unsynced = false;
        self.last_sync = Instant::now();
        Ok(())
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

/// An internal inconsistency between a command and its outcome (a bug);
/// answered as a storage error rather than a panic.
fn mismatch() -> StorageError {
    StorageError::Decode {
        seq: -1,
        detail: "internal error: a command's outcome does not match it".into(),
    }
}

/// Answers a committed group.
fn answer(
    group: Vec<Command>,
    outcomes: Vec<Outcome>,
    failed: Vec<Option<StorageError>>,
    sync: Result<(), SyncError>,
    stats: &Stats,
) {
    // A dropped receiver only means the caller stopped waiting.
    for ((cmd, outcome), fail) in group.into_iter().zip(outcomes).zip(failed) {
        match cmd {
            Command::Append { batch, reply, .. } => {
                bump(&stats.append_requests, 1);
                let r = match (fail, outcome) {
                    (Some(e), _) => Err(e.into()),
                    (None, Outcome::Appended(slots)) if slots.len_matches(batch.len()) => {
                        let (new, dup) = slots.counts(batch.len());
                        bump(&stats.events_appended, new);
                        bump(&stats.duplicates, dup);
                        Ok(Appended { batch, slots })
                    }
                    (None, Outcome::Conflict { expected, actual }) => {
                        bump(&stats.conflicts, 1);
                        Err(AppendError::Conflict { expected, actual })
                    }
                    (None, _) => Err(mismatch().into()),
                };
                let _ = reply.send(r);
            }
            Command::CommitCursor {
                name, seq, reply, ..
            } => {
                let r = match (fail, outcome) {
                    (Some(e), _) => Err(e.into()),
                    (None, Outcome::Done) => Ok(()),
                    (None, Outcome::BeyondEnd { last }) => {
                        Err(CursorError::BeyondEnd { name, seq, last })
                    }
                    (None, _) => Err(mismatch().into()),
                };
                let _ = reply.send(r);
            }
            Command::Prune { reply } => {
                let r = match (fail, outcome) {
                    (Some(e), _) => Err(e.into()),
                    (None, Outcome::Pruned(n)) => Ok(n),
                    (None, _) => Err(mismatch().into()),
                };
                let _ = reply.send(r);
            }
            Command::Sync { reply } => {
                let r = match &sync {
                    Ok(()) => Ok(()),
                    Err(SyncError::Storage(e)) => Err(SyncError::Storage(e.clone())),
                    Err(SyncError::Closed) => Err(SyncError::Closed),
                };
                let _ = reply.send(r);
            }
            #[cfg(test)]
            Command::Hold(_)
            | Command::Query(..)
            | Command::Exec(..)
            | Command::Inspect(_)
            | Command::Panic => {}
        }
    }
}

/// Answers a group whose transaction failed: each command with its own
/// error if it had one, else with the group's.
fn refuse_all(group: Vec<Command>, failed: Vec<Option<StorageError>>, err: &StorageError) {
    for (cmd, fail) in group.into_iter().zip(failed) {
        let e = fail.unwrap_or_else(|| err.clone());
        match cmd {
            Command::Append { reply, .. } => {
                let _ = reply.send(Err(e.into()));
            }
            Command::CommitCursor { reply, .. } => {
                let _ = reply.send(Err(e.into()));
            }
            Command::Prune { reply } => {
                let _ = reply.send(Err(e.into()));
            }
            Command::Sync { reply } => {
                let _ = reply.send(Err(SyncError::Storage(e)));
            }
            #[cfg(test)]
            Command::Hold(_)
            | Command::Query(..)
            | Command::Exec(..)
            | Command::Inspect(_)
            | Command::Panic => {}
        }
    }
}

/// The last seq ever assigned: the newest event's, or, if retention removed
/// it, the one recorded in `meta` when it did.
pub(crate) fn read_last(conn: &Connection) -> Result<u64, StorageError> {
    let v: i64 = conn
        .prepare_cached(
            "SELECT max(ifnull((SELECT max(seq) FROM events), 0),
                        ifnull((SELECT v FROM meta WHERE k = 'last_seq'), 0))",
        )
        .and_then(|mut s| s.query_row([], |r| r.get(0)))
        .map_err(StorageError::sqlite("reading the last seq"))?;
    Ok(v.max(0) as u64)
}

fn store_cursor(conn: &Connection, name: &str, seq: u64, now_us: i64) -> Result<(), StorageError> {
    conn.prepare_cached(
        "INSERT INTO cursors (name, seq, updated) VALUES (?1, ?2, ?3)
         ON CONFLICT (name) DO UPDATE SET seq = excluded.seq, updated = excluded.updated",
    )
    .and_then(|mut s| s.execute(params![name, seq as i64, now_us]))
    .map(|_| ())
    .map_err(StorageError::sqlite("storing a cursor"))
}

/// Column layout of the key lookup: the event row first, then the copy kept
/// in `idem_keys`.
const KEY_LOOKUP: &str = "SELECT k.at, e.seq, e.id, e.name, e.source, e.time, e.key, e.data,
       e.priority, k.seq, k.id, k.name, k.source, k.time, k.key, k.data, k.priority
FROM idem_keys AS k LEFT JOIN events AS e ON e.seq = k.seq
WHERE k.key = ?1";

const FROM_EVENTS: Columns = Columns {
    seq: STANDARD.seq + 1,
    id: STANDARD.id + 1,
    name: STANDARD.name + 1,
    source: STANDARD.source + 1,
    time: STANDARD.time + 1,
    key: STANDARD.key + 1,
    data: STANDARD.data + 1,
    priority: STANDARD.priority + 1,
};
const FROM_KEY_COPY: Columns = Columns {
    seq: 9,
    id: 10,
    name: 11,
    source: 12,
    time: 13,
    key: 14,
    data: 15,
    priority: 16,
};

/// The original event of `key` if it was recorded after `window_start`.
fn lookup_key(
    conn: &Connection,
    key: &str,
    window_start: i64,
) -> Result<Option<SharedEvent>, StorageError> {
    let op = "looking up an idempotency key";
    let mut stmt = conn
        .prepare_cached(KEY_LOOKUP)
        .map_err(StorageError::sqlite(op))?;
    let mut rows = stmt.query([key]).map_err(StorageError::sqlite(op))?;
    let Some(row) = rows.next().map_err(StorageError::sqlite(op))? else {
        return Ok(None);
    };
    let at: i64 = row.get(0).map_err(StorageError::sqlite(op))?;
    if at <= window_start {
        return Ok(None); // expired, not yet swept
    }
    let present = |i: usize| !matches!(row.get_ref(i), Ok(ValueRef::Null));
    let event = if present(FROM_EVENTS.seq) {
        decode_at(row, FROM_EVENTS)?
    } else if present(FROM_KEY_COPY.id) {
        decode_at(row, FROM_KEY_COPY)?
    } else {
        // Only possible for keys written by schema v1 whose event was then
        // pruned: nothing left to answer with, so the key counts as unseen.
        tracing::warn!(key, "the original event of a live idempotency key is gone");
        return Ok(None);
    };
    Ok(Some(Arc::new(event)))
}

/// Writes one request's events at `*last + 1..`, advancing `*last`.
fn append_batch(
    conn: &Connection,
    batch: &[Encoded],
    last: &mut u64,
    now_us: i64,
    cfg: &WriterConfig,
) -> Result<Slots, StorageError> {
    let op = "inserting an event";
    let window_start = now_us.saturating_sub(micros(cfg.idempotency_window));
    let mut insert = conn
        .prepare_cached(
            "INSERT INTO events (seq, id, name, source, time, key, data, priority, committed)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
        )
        .map_err(StorageError::sqlite(op))?;
    let first = *last + 1;
    // Filled only once a duplicate shows up.
    let mut slots: Vec<Slot> = Vec::new();
    for (i, enc) in batch.iter().enumerate() {
        let seq = *last + 1;
        if let Some(key) = &enc.event.key {
            if let Some(orig) = lookup_key(conn, key, window_start)? {
                if slots.is_empty() {
                    slots.reserve(batch.len());
                    slots.extend((first..).take(i).map(Slot::New));
                }
                slots.push(Slot::Dup(orig));
                continue;
            }
            conn.prepare_cached(
                "INSERT INTO idem_keys (key, seq, at) VALUES (?1, ?2, ?3)
                 ON CONFLICT (key) DO UPDATE SET seq = excluded.seq, at = excluded.at,
                 id = NULL, name = NULL, source = NULL, time = NULL, data = NULL,
                 priority = NULL",
            )
            .and_then(|mut s| s.execute(params![key, seq as i64, now_us]))
            .map_err(StorageError::sqlite("recording an idempotency key"))?;
        }
        insert
            .execute(params![
                seq as i64,
                enc.event.id.as_bytes(),
                enc.event.name,
                enc.event.source,
                enc.time_us,
                enc.event.key,
                enc.data,
                enc.priority,
                now_us,
            ])
            .map_err(StorageError::sqlite(op))?;
        *last = seq;
        if !slots.is_empty() {
            slots.push(Slot::New(seq));
        }
    }
    Ok(if slots.is_empty() {
        Slots::Dense(first)
    } else {
        Slots::Mixed(slots)
    })
}

/// Forgets expired keys and applies retention; returns the events removed.
///
/// Retention removes a prefix of the log (so the seqs left stay dense):
/// everything up to the larger of the count cut (`last - max_count`) and
/// the age cut (just before the first event, in seq order, whose *commit*
/// time is within `max_age`; the event's own, client-sent `time` plays no
/// part). It does not look at consumer cursors. Before deleting
/// it records `last` in `meta`, in the same transaction, so the last seq
/// survives even when no event is left.
fn prune(
    conn: &Connection,
    cfg: &WriterConfig,
    last: u64,
    now_us: i64,
    stats: &Stats,
) -> Result<u64, StorageError> {
    let op = "pruning";
    let window_start = now_us.saturating_sub(micros(cfg.idempotency_window));
    let expired = conn
        .prepare_cached("DELETE FROM idem_keys WHERE at <= ?1")
        .and_then(|mut s| s.execute([window_start]))
        .map_err(StorageError::sqlite("expiring idempotency keys"))?;
    bump(&stats.keys_expired, expired as u64);

    let mut cut = 0u64;
    if let Some(max) = cfg.retention.max_count {
        cut = cut.max(last.saturating_sub(max));
    }
    if let Some(age) = cfg.retention.max_age {
        let cutoff = now_us.saturating_sub(micros(age));
        let first_kept: Option<i64> = conn
            .prepare_cached("SELECT seq FROM events WHERE committed >= ?1 ORDER BY seq LIMIT 1")
            .and_then(|mut s| s.query_row([cutoff], |r| r.get(0)).optional())
            .map_err(StorageError::sqlite(op))?;
        let age_cut = match first_kept {
            Some(s) => (s.max(1) - 1) as u64,
            None => last,
        };
        cut = cut.max(age_cut);
    }
    if cut == 0 {
        return Ok(0);
    }
    let first: Option<i64> = conn
        .prepare_cached("SELECT min(seq) FROM events")
        .and_then(|mut s| s.query_row([], |r| r.get(0)))
        .map_err(StorageError::sqlite(op))?;
    match first {
        Some(f) if f as u64 <= cut => {}
        _ => return Ok(0),
    }
    conn.prepare_cached("UPDATE meta SET v = ?1 WHERE k = 'last_seq' AND v < ?1")
        .and_then(|mut s| s.execute([last as i64]))
        .map_err(StorageError::sqlite("recording the last seq"))?;
    preserve_keyed_events(conn, cut)?;
    let removed = conn
        .prepare_cached("DELETE FROM events WHERE seq <= ?1")
        .and_then(|mut s| s.execute([cut as i64]))
        .map_err(StorageError::sqlite(op))? as u64;
    bump(&stats.events_pruned, removed);
    Ok(removed)
}

/// Before events up to `cut` are deleted, copies those whose idempotency
/// key is still live into `idem_keys`, so a duplicate append can still be
/// answered with the original event (retention does not shorten the
/// idempotency window).
fn preserve_keyed_events(conn: &Connection, cut: u64) -> Result<(), StorageError> {
    let op = "keeping the originals of live idempotency keys";
    let mut select = conn
        .prepare_cached(
            "SELECT seq, key, id, name, source, time, data, priority
             FROM events WHERE seq <= ?1 AND key IS NOT NULL",
        )
        .map_err(StorageError::sqlite(op))?;
    let mut update = conn
        .prepare_cached(
            "UPDATE idem_keys SET id = ?3, name = ?4, source = ?5, time = ?6, data = ?7,
             priority = ?8 WHERE key = ?2 AND seq = ?1 AND id IS NULL",
        )
        .map_err(StorageError::sqlite(op))?;
    let mut rows = select
        .query([cut as i64])
        .map_err(StorageError::sqlite(op))?;
    while let Some(row) = rows.next().map_err(StorageError::sqlite(op))? {
        let mut vals = Vec::with_capacity(8);
        for i in 0..8 {
            vals.push(ToSqlOutput::Borrowed(
                row.get_ref(i).map_err(StorageError::sqlite(op))?,
            ));
        }
        update
            .execute(rusqlite::params_from_iter(vals.iter()))
            .map_err(StorageError::sqlite(op))?;
    }
    Ok(())
}
