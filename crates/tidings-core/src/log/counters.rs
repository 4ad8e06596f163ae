//! Counters of a group-committing backend's appends (NATS, Redis): what
//! their `stats()` report, with one meaning in every backend.
//!
//! # Contract
//!
//! * A backend calls [`WriteCounters::answered`] once per group it answers
//!   with results (written, or decided without a write when every append
//!   of it was a duplicate or refused), and [`WriteCounters::failed`] with
//!   the number of appends it answered with a failure (a whole group, or
//!   the late ones of one) or that failed on their caller's side (a
//!   timeout, no answer). Nothing else moves these counters.
//! * Every append its caller saw fail counts once in `failed_appends`,
//!   however it failed.
//! * `events_appended` counts the events of the groups the backend saw
//!   written. It can be lower than what the store holds, never higher: a
//!   write that landed although its append failed is not counted there
//!   when the backend never learned it landed (a caller's timeout that
//!   cancelled the write it was running itself, an engine acknowledgement
//!   that timed out). A write that ran in another caller's turn and landed
//!   after its own caller gave up is counted in both. An append whose
//!   caller dropped its future before any answer counts only if its group
//!   is answered with results.
//! * Counters only grow, with relaxed atomics: each is exact on its own; a
//!   snapshot of several ([`WriteCounters::snapshot`]) is not atomic. The
//!   backends' own counters (`NatsStats`, `RedisStats`) keep the same
//!   rule.

use std::sync::atomic::{AtomicU64, Ordering};

use super::{AppendError, Committed};

/// A snapshot of [`WriteCounters`]: a backend's appends since it was
/// opened, through this handle and its clones (other processes' appends
/// not counted).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct WriteStats {
    /// Groups of appends answered with results (each one write, or none
    /// when every append of it was a duplicate or refused).
    pub groups: u64,
    /// Events appended (duplicates not counted).
    pub events_appended: u64,
    /// Events answered with the original because their key was seen.
    pub duplicates: u64,
    /// Appends refused for an `expected_last` mismatch.
    pub conflicts: u64,
    /// Appends that failed (outage, timeout, storage error), answered by
    /// the backend or given up by their caller.
    pub failed_appends: u64,
    /// The most events one group appended.
    pub largest_group: u64,
}

/// The live counters behind [`WriteStats`].
#[derive(Debug, Default)]
pub struct WriteCounters {
    groups: AtomicU64,
    events_appended: AtomicU64,
    duplicates: AtomicU64,
    conflicts: AtomicU64,
    failed_appends: AtomicU64,
    largest_group: AtomicU64,
}

impl WriteCounters {
    /// A group was answered with `results` (one per append of the group).
    pub fn answered(&self, results: &[Result<Vec<Committed>, AppendError>]) {
        let (mut fresh, mut duplicates, mut conflicts, mut failed) = (0, 0, 0, 0);
        for r in results {
            match r {
                Ok(events) => {
                    let dup = events.iter().filter(|c| c.duplicate).count() as u64;
                    duplicates += dup;
                    fresh += events.len() as u64 - dup;
                }
                Err(AppendError::Conflict { .. }) => conflicts += 1,
                Err(_) => failed += 1,
            }
        }
        self.groups.fetch_add(1, Ordering::Relaxed);
        self.events_appended.fetch_add(fresh, Ordering::Relaxed);
        self.duplicates.fetch_add(duplicates, Ordering::Relaxed);
        self.conflicts.fetch_add(conflicts, Ordering::Relaxed);
        self.failed_appends.fetch_add(failed, Ordering::Relaxed);
        self.largest_group.fetch_max(fresh, Ordering::Relaxed);
    }

    /// `appends` appends failed without results.
    pub fn failed(&self, appends: usize) {
        self.failed_appends
            .fetch_add(appends as u64, Ordering::Relaxed);
    }

    /// The counters now.
    pub fn snapshot(&self) -> WriteStats {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        WriteStats {
            groups: get(&self.groups),
            events_appended: get(&self.events_appended),
            duplicates: get(&self.duplicates),
            conflicts: get(&self.conflicts),
            failed_appends: get(&self.failed_appends),
            largest_group: get(&self.largest_group),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::log::LogFailure;
    use crate::NewEvent;

    fn committed(seq: u64, duplicate: bool) -> Committed {
        let event = NewEvent::new("a", serde_json::json!(null))
            .unwrap()
            .commit(seq);
        Committed {
            event: Arc::new(event),
            duplicate,
        }
    }

    #[test]
    fn a_group_counts_fresh_events_duplicates_conflicts_and_failures() {
        let c = WriteCounters::default();
        c.answered(&[
            Ok(vec![
                committed(1, false),
                committed(1, true),
                committed(2, false),
            ]),
            Err(AppendError::Conflict {
                expected: 0,
                actual: 2,
            }),
            Ok(vec![committed(3, false)]),
        ]);
        c.answered(&[
            Ok(vec![committed(3, true)]),
            Err(AppendError::Failed(LogFailure::Closed)),
        ]);
        c.failed(4);
        assert_eq!(
            c.snapshot(),
            WriteStats {
                groups: 2,
                events_appended: 3,
                duplicates: 2,
                conflicts: 1,
                failed_appends: 5,
                largest_group: 3,
            }
        );
    }
}
