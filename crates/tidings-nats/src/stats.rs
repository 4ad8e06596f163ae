//! Counters: the public snapshot [`NatsStats`] and the live atomics behind
//! it.
//!
//! # Contract
//!
//! * Each counter is bumped where the thing it counts happened: appends by
//!   the writer when it answers a group (core's `WriteCounters`), a lost
//!   race when a publish is refused for a stale tail, a follower restart
//!   when the follower recreates its consumer, a skipped message when the
//!   follower finds one that is not a Tidings record.
//! * Counters only grow, as core's `WriteCounters` (its contract says what
//!   a timed-out or abandoned append counts as).

use std::sync::atomic::{AtomicU64, Ordering};

use tidings_core::log::{WriteCounters, WriteStats};

/// Counters of a [`NatsLog`](crate::NatsLog) since it was opened (all its
/// clones together; other processes' handles count their own).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct NatsStats {
    /// The appends: groups (one record each, when any event was fresh),
    /// events, duplicates, conflicts, failures.
    pub appends: WriteStats,
    /// Records refused for a stale tail: usually another process appended
    /// first (also: our own earlier publish landed though its ack was
    /// lost). Usually followed by a tail read and another publish.
    pub lost_races: u64,
    /// Times the follower started (or tried to start) its consumer again
    /// after the first: after a reconnect, a stall, the consumer's
    /// messages ending, or a failed start.
    pub follower_restarts: u64,
    /// Messages on the stream's subject that were not Tidings records, and
    /// were skipped.
    pub messages_skipped: u64,
}

/// The live counters behind [`NatsStats`].
#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub(crate) appends: WriteCounters,
    pub(crate) lost_races: AtomicU64,
    pub(crate) follower_restarts: AtomicU64,
    pub(crate) messages_skipped: AtomicU64,
}

impl Counters {
    /// Adds one to `counter`.
    pub(crate) fn bump(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn snapshot(&self) -> NatsStats {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        NatsStats {
            appends: self.appends.snapshot(),
            lost_races: get(&self.lost_races),
            follower_restarts: get(&self.follower_restarts),
            messages_skipped: get(&self.messages_skipped),
        }
    }
}
