//! What the writer does between groups: timers, and the health of the
//! storage.
//!
//! # Contract
//!
//! * **Retention and key expiry** run every `prune_interval` in a
//!   transaction of their own ([`sql::prune`]); a failure is logged, marks
//!   health if it was a fault, and is retried at the next interval. With
//!   an archive, one step archives at most one chunk before it deletes
//!   (so appends wait for at most one chunk's write); if more is due, the
//!   next step runs right after the next group.
//! * **`Batch` durability.** Some commit not yet fsynced (`unsynced`) sets
//!   a timer `interval` after the last fsync; [`Writer::sync_wal`] fsyncs
//!   the WAL file then (and for every `Sync` command, and at close). A
//!   failed fsync is retried after another interval, never in a busy loop.
//! * **Health.** Every write that fails for a storage fault
//!   ([`StorageError::is_fault`]) marks [`Health`](crate::health::Health)
//!   `Degraded` ([`Writer::write_failed`]); the next write transaction that
//!   commits marks it `Ok` again ([`Writer::write_succeeded`]). While
//!   degraded and idle, the writer probes every `probe_interval` with a
//!   one-row write transaction, so health recovers (once space is freed,
//!   say) without waiting for the next publish; a probe runs only if
//!   health still reads `Degraded` when its timer fires, and every write
//!   that commits cancels the next one.
//! * The writer never blocks past [`Writer::next_deadline`] waiting for a
//!   command, so timers fire on time on an idle log.

use std::sync::Arc;
use std::time::Instant;

use super::Writer;
use crate::error::StorageError;
use crate::options::Durability;
use crate::sql;
use crate::stats::bump;

impl Writer {
    /// When the next timer fires: background prune, `Batch` fsync or probe.
    pub(super) fn next_deadline(&self) -> Option<Instant> {
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
    pub(super) fn schedule_probe(&mut self) {
        self.next_probe = self.cfg.probe_interval.map(|i| Instant::now() + i);
    }

    /// Records a failed write: degrades health if it was a fault.
    pub(super) fn write_failed(&mut self, e: &StorageError) {
        if e.is_fault() {
            self.health.fault(e);
            if self.next_probe.is_none() {
                self.schedule_probe();
            }
        }
    }

    /// Records a committed write: health is `Ok` again.
    pub(super) fn write_succeeded(&mut self) {
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

    /// Runs whatever timer is due (prune, `Batch` fsync, probe).
    pub(super) fn maintenance_if_due(&mut self) {
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

    /// Retention and key expiry in a transaction of their own. With an
    /// archive, events are archived (durably) before the delete, at most
    /// one chunk per call (see [`crate::archive`]).
    fn background_prune(&mut self) -> Result<u64, StorageError> {
        let start = self.begin()?;
        let changes_before = self.conn.total_changes();
        let (r, pending) = {
            let mut archive = self.archive.as_ref().map(|a| a.borrow_mut());
            let r = sql::prune(
                &self.conn,
                &self.cfg.retention,
                self.cfg.idempotency_window,
                start,
                sql::wall_micros(),
                &self.stats,
                archive.as_mut().map(|w| sql::ArchiveStep {
                    writer: w,
                    all: false,
                    delay: self.cfg.archive_delay,
                }),
            );
            (r, archive.is_some_and(|w| w.pending))
        };
        let r = r.and_then(|n| Ok((n, self.commit(changes_before, "committing a prune")?)));
        // A bounded archive step left more due: the next step runs right
        // after the next group, not a whole interval later.
        if pending {
            self.next_prune = Some(Instant::now());
        }
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
    pub(super) fn sync_wal(&mut self) -> Result<(), StorageError> {
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
