//! Counters: the public snapshot [`SqliteStats`] and the live atomics
//! behind it.
//!
//! # Contract
//!
//! * The writer thread owns [`Stats`] (shared read-only with the handle)
//!   and bumps each counter right where the thing it counts happened: an
//!   fsync is counted by [`Stats::count_sync`] at the one place it is done
//!   or known to be done, never estimated.
//! * Counters only grow, with relaxed atomics: each is exact on its own; a
//!   snapshot of several ([`Stats::snapshot`]) is not atomic.
//! * The readers' counters live in the read-ahead (`reader.rs`), which the
//!   reader threads share; [`SqliteLog::stats`](crate::SqliteLog::stats)
//!   joins the two.

use std::sync::atomic::{AtomicU64, Ordering};

#[cfg(test)]
use tokio::sync::watch;

/// Counters of a [`SqliteLog`](crate::SqliteLog) since it was opened.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SqliteStats {
    /// Write transactions committed (group commits and background pruning).
    pub transactions: u64,
    /// Group commits run (each took one or more queued commands).
    pub groups: u64,
    /// WAL fsyncs: in `Sync` mode one per committed transaction that wrote
    /// something (the fsync SQLite does inside that `COMMIT`, counted there,
    /// and only if the connection's `synchronous` really is `FULL`;
    /// SQLite's own checkpoint fsyncs are not counted); in `Batch` mode one
    /// per periodic or requested sync; in `None` mode only requested ones.
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
    /// Times the writer thread panicked and was restarted (a bug: each is
    /// also logged with `tracing::error`).
    pub writer_panics: u64,
    /// Probe writes the idle writer ran while writes were failing (see
    /// [`SqliteOptions::probe_interval`](crate::SqliteOptions::probe_interval)).
    pub probes: u64,
    /// Reads answered with a page the readers had read ahead.
    pub read_ahead_served: u64,
    /// Rows the reader threads copied out of SQLite (pages read, read ahead
    /// or re-read; a byte-budgeted read copies no row past its budget).
    pub rows_read: u64,
    /// Reads skipped because whoever asked had dropped the request before
    /// a reader thread got to it.
    pub reads_abandoned: u64,
}

/// Counters kept by the writer (read with relaxed loads: each is exact on
/// its own, a snapshot of several is not atomic).
#[derive(Debug, Default)]
pub(crate) struct Stats {
    pub(crate) transactions: AtomicU64,
    pub(crate) groups: AtomicU64,
    pub(crate) syncs: AtomicU64,
    pub(crate) append_requests: AtomicU64,
    pub(crate) events_appended: AtomicU64,
    pub(crate) duplicates: AtomicU64,
    pub(crate) conflicts: AtomicU64,
    pub(crate) largest_group: AtomicU64,
    pub(crate) events_pruned: AtomicU64,
    pub(crate) keys_expired: AtomicU64,
    pub(crate) failed_transactions: AtomicU64,
    pub(crate) writer_panics: AtomicU64,
    pub(crate) probes: AtomicU64,
    /// Tests: the value of `syncs` after each change.
    #[cfg(test)]
    pub(crate) synced: SyncSignal,
}

/// Tests: a watch of the fsync counter, so tests wait for an fsync instead
/// of sleeping.
#[cfg(test)]
#[derive(Debug)]
pub(crate) struct SyncSignal(pub(crate) watch::Sender<u64>);

#[cfg(test)]
impl Default for SyncSignal {
    fn default() -> Self {
        SyncSignal(watch::channel(0).0)
    }
}

impl Stats {
    /// A snapshot of the writer's counters; the readers' counters
    /// (`read_ahead_served`, `rows_read`, `reads_abandoned`) are left at 0
    /// for the caller to fill from [`ReadAhead`](crate::reader::ReadAhead).
    pub(crate) fn snapshot(&self) -> SqliteStats {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        SqliteStats {
            transactions: get(&self.transactions),
            groups: get(&self.groups),
            syncs: get(&self.syncs),
            append_requests: get(&self.append_requests),
            events_appended: get(&self.events_appended),
            duplicates: get(&self.duplicates),
            conflicts: get(&self.conflicts),
            largest_group: get(&self.largest_group),
            events_pruned: get(&self.events_pruned),
            keys_expired: get(&self.keys_expired),
            failed_transactions: get(&self.failed_transactions),
            writer_panics: get(&self.writer_panics),
            probes: get(&self.probes),
            read_ahead_served: 0,
            rows_read: 0,
            reads_abandoned: 0,
        }
    }

    /// Counts one fsync; called right where it happened.
    pub(crate) fn count_sync(&self) {
        let _n = self.syncs.fetch_add(1, Ordering::Relaxed) + 1;
        #[cfg(test)]
        self.synced.0.send_replace(_n);
    }
}

/// Adds `n` to a counter.
pub(crate) fn bump(c: &AtomicU64, n: u64) {
    c.fetch_add(n, Ordering::Relaxed);
}
