//! Bus counters, and per-owner handler counters (a plugin's stats).
//!
//! # Contract
//!
//! * Counters only grow, by relaxed atomic adds: a [`Stats`] snapshot is
//!   each counter's value at some moment during the read, not one instant
//!   across all of them.
//! * Bumping a counter never takes a lock, so the emit path pays one
//!   atomic add per counted thing and nothing else.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use serde::Serialize;

/// A snapshot of the bus's counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Stats {
    /// Events committed through this bus (idempotent duplicates excluded).
    pub published: u64,
    /// Deliveries: sync handler calls plus events queued for streams and
    /// async handlers.
    pub dispatched: u64,
    /// Handlers that returned an error.
    pub handler_errors: u64,
    /// Handlers that panicked.
    pub handler_panics: u64,
    /// Lag notices delivered (events pruned before a slow reader got them).
    pub lagged: u64,
    /// Emits refused by the depth guard.
    pub depth_exceeded: u64,
    /// Emits refused because an event broke a data contract.
    pub contract_refused: u64,
    /// Live subscriptions.
    pub subscriptions: usize,
}

#[derive(Default)]
pub(crate) struct Counters {
    pub published: AtomicU64,
    pub dispatched: AtomicU64,
    pub handler_errors: AtomicU64,
    pub handler_panics: AtomicU64,
    pub lagged: AtomicU64,
    pub depth_exceeded: AtomicU64,
    pub contract_refused: AtomicU64,
}

impl Counters {
    pub fn record_lag(&self) {
        self.lagged.fetch_add(1, Relaxed);
    }

    pub fn snapshot(&self, subscriptions: usize) -> Stats {
        Stats {
            published: self.published.load(Relaxed),
            dispatched: self.dispatched.load(Relaxed),
            handler_errors: self.handler_errors.load(Relaxed),
            handler_panics: self.handler_panics.load(Relaxed),
            lagged: self.lagged.load(Relaxed),
            depth_exceeded: self.depth_exceeded.load(Relaxed),
            contract_refused: self.contract_refused.load(Relaxed),
            subscriptions,
        }
    }
}

/// Handler calls of the subscriptions of one owner (a plugin), counted
/// since the owner's first subscription on this bus, across reloads.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct OwnerStats {
    /// Handler calls (sync calls, and events an async handler ran on),
    /// failed ones included.
    pub calls: u64,
    /// Calls that returned an error.
    pub errors: u64,
    /// Calls that panicked.
    pub panics: u64,
}

/// The live counters behind an [`OwnerStats`], shared by the owner's
/// subscriptions.
#[derive(Default)]
pub(crate) struct OwnerCounters {
    calls: AtomicU64,
    errors: AtomicU64,
    panics: AtomicU64,
}

impl OwnerCounters {
    pub fn record<T>(&self, outcome: &std::thread::Result<Result<(), T>>) {
        self.calls.fetch_add(1, Relaxed);
        match outcome {
            Ok(Ok(())) => {}
            Ok(Err(_)) => {
                self.errors.fetch_add(1, Relaxed);
            }
            Err(_) => {
                self.panics.fetch_add(1, Relaxed);
            }
        }
    }

    pub fn snapshot(&self) -> OwnerStats {
        OwnerStats {
            calls: self.calls.load(Relaxed),
            errors: self.errors.load(Relaxed),
            panics: self.panics.load(Relaxed),
        }
    }
}
