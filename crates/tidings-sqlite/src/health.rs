//! Whether the log can take writes: [`EventLog::health`] of a
//! [`SqliteLog`](crate::SqliteLog).
//!
//! The writer thread records every storage *fault* (see
//! [`StorageError::is_fault`]) that fails a write, and every write that
//! succeeds; the log is `Degraded` from the first until the second. A
//! writer thread that panicked marks it too, and remembers the panic so
//! requests it dropped are answered with an error naming it instead of
//! `Closed`.
//!
//! # Contract
//!
//! * Only the writer thread changes it (a fault, a recovery, a panic);
//!   the handle only reads it.
//! * `Degraded` only for faults of the storage
//!   ([`StorageError::is_fault`]): a request's own failure (a bad event)
//!   never degrades the log.
//! * A recorded panic is kept for the life of the log, so any reply the
//!   panicking writer dropped is answered with it
//!   ([`Health::dropped_reply`]), never `Closed`.
//!
//! [`EventLog::health`]: tidings_core::EventLog::health

use std::sync::atomic::{AtomicBool, Ordering};

use parking_lot::Mutex;
use tidings_core::log::LogHealth;

use crate::error::StorageError;

#[derive(Debug, Default)]
pub(crate) struct Health {
    /// Fast path for the writer. Invariant: true exactly when `state` is
    /// `Some` (both change under the `state` lock).
    degraded: AtomicBool,
    /// The fault that degraded the log (the latest one while it stays
    /// degraded); `None` while writes succeed.
    state: Mutex<Option<Degraded>>,
    /// The last writer panic, for requests whose reply it dropped.
    panic: Mutex<Option<String>>,
}

#[derive(Debug, Clone)]
struct Degraded {
    reason: String,
    no_space: bool,
}

impl Health {
    pub(crate) fn get(&self) -> LogHealth {
        match &*self.state.lock() {
            None => LogHealth::Ok,
            Some(d) => LogHealth::Degraded {
                reason: d.reason.clone(),
                no_space: d.no_space,
            },
        }
    }

    pub(crate) fn is_degraded(&self) -> bool {
        self.degraded.load(Ordering::Acquire)
    }

    /// A write failed with `e`; only faults of the storage degrade the log.
    pub(crate) fn fault(&self, e: &StorageError) {
        if !e.is_fault() {
            return;
        }
        let reason = e.to_string();
        let no_space = e.is_no_space();
        let mut state = self.state.lock();
        if state.is_none() {
            tracing::error!(error = %reason, no_space, "event log writes are failing");
        }
        *state = Some(Degraded { reason, no_space });
        self.degraded.store(true, Ordering::Release);
    }

    /// A write transaction committed.
    pub(crate) fn recovered(&self) {
        if !self.is_degraded() {
            return;
        }
        let mut state = self.state.lock();
        if let Some(d) = state.take() {
            tracing::info!(was = %d.reason, "event log writes succeed again");
        }
        self.degraded.store(false, Ordering::Release);
    }

    /// The writer thread panicked with `detail` (and was restarted).
    pub(crate) fn writer_panicked(&self, detail: String) {
        let e = StorageError::WriterPanicked {
            detail: detail.clone(),
        };
        *self.panic.lock() = Some(detail);
        self.fault(&e);
    }

    /// The error for a request whose reply the writer dropped without
    /// answering: a panic if one happened, else `None` (the log closed).
    pub(crate) fn dropped_reply(&self) -> Option<StorageError> {
        self.panic
            .lock()
            .clone()
            .map(|detail| StorageError::WriterPanicked { detail })
    }
}
