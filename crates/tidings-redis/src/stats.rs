//! Counters: the public snapshot [`RedisStats`] and the live atomics
//! behind it.
//!
//! # Contract
//!
//! * Each counter is bumped where the thing it counts happened: appends by
//!   the writer when it answers a group (core's `WriteCounters`), a plain
//!   group when the smaller script answered it, a lost-writes refusal
//!   when the script finds Redis' counter below what this instance saw
//!   committed, a follower reconnect when the follower's connection comes
//!   back after it lost Redis.
//! * Counters only grow, as core's `WriteCounters` (its contract says what
//!   a timed-out or abandoned append counts as).

use std::sync::atomic::{AtomicU64, Ordering};

use tidings_core::log::{WriteCounters, WriteStats};

/// Counters of a [`RedisLog`](crate::RedisLog) since it was opened (all
/// its clones together; other processes' handles count their own).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RedisStats {
    /// The appends: groups (one script call each), events, duplicates,
    /// conflicts, failures.
    pub appends: WriteStats,
    /// Of `appends.groups`, those the smaller script answered (no key, no
    /// expectation, no count retention).
    pub plain_groups: u64,
    /// Groups refused because Redis' counter was below a seq this instance
    /// saw committed: Redis lost acknowledged events
    /// ([`StorageError::LostWrites`](crate::StorageError::LostWrites)).
    pub lost_writes: u64,
    /// Times the follower got its connection back after losing Redis.
    pub follower_reconnects: u64,
}

/// The live counters behind [`RedisStats`].
#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub(crate) appends: WriteCounters,
    pub(crate) plain_groups: AtomicU64,
    pub(crate) lost_writes: AtomicU64,
    pub(crate) follower_reconnects: AtomicU64,
}

impl Counters {
    /// Adds one to `counter`.
    pub(crate) fn bump(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn snapshot(&self) -> RedisStats {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        RedisStats {
            appends: self.appends.snapshot(),
            plain_groups: get(&self.plain_groups),
            lost_writes: get(&self.lost_writes),
            follower_reconnects: get(&self.follower_reconnects),
        }
    }
}
