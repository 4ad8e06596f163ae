//! What the log handle asks of the writer thread, and what an append gets
//! back.
//!
//! A [`Command`] is the only way anything reaches the writer: the handle
//! ([`SqliteLog`](crate::SqliteLog)) sends one down the writer's channel
//! with a oneshot sender for its answer, and awaits the receiver.
//!
//! # Contract
//!
//! * Every command the writer takes is answered exactly once, or its reply
//!   sender is dropped unanswered (the writer stopped or panicked); the
//!   handle turns a dropped sender into `Closed` or, after a panic, into
//!   [`StorageError::WriterPanicked`](crate::StorageError::WriterPanicked).
//! * An [`Appended`] only exists for a batch whose transaction committed:
//!   its [`Slots`] say where each event of the batch went (a new seq, or
//!   the original event of a live idempotency key), one per event, in
//!   order. The *caller* builds the committed `Arc<Event>`s from it
//!   ([`Appended::into_committed`]), so the writer thread neither allocates
//!   them nor frees the encoded payloads.
//! * The `#[cfg(test)]` variants are hooks for the unit tests; the writer
//!   runs `Hold`, `Query`, `Exec` and `Inspect` on their own, between
//!   groups (`solo`), never inside one.

use std::sync::Arc;

use tidings_core::log::{AppendError, Committed, CursorError, PruneError};
use tidings_core::SharedEvent;
use tokio::sync::oneshot;

use crate::codec::Encoded;
use crate::error::SyncError;

/// Answer channel of an append: the batch comes back with where each
/// event went, and the caller builds the committed events. So the writer
/// thread neither allocates the `Arc<Event>`s nor frees the encoded
/// payloads (both would be cross-thread allocator traffic on its hot path).
pub(crate) type AppendReply = oneshot::Sender<Result<Appended, AppendError>>;

/// A committed append, to be turned into its result by the caller.
pub(crate) struct Appended {
    /// The batch as it was sent.
    pub(crate) batch: Vec<Encoded>,
    /// Invariant: committed, and one slot per event of `batch`
    /// ([`Slots::len_matches`]).
    pub(crate) slots: Slots,
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
    /// Define a consumer unless it is defined (name already validated);
    /// answered with the stored spec.
    DefineConsumer {
        name: String,
        spec: String,
        reply: oneshot::Sender<Result<String, CursorError>>,
    },
    /// Delete a consumer's definition and cursor (name already validated);
    /// answered with whether there was either.
    DeleteConsumer {
        name: String,
        reply: oneshot::Sender<Result<bool, CursorError>>,
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
pub(crate) fn solo(c: &Command) -> bool {
    matches!(
        c,
        Command::Hold(_) | Command::Query(..) | Command::Exec(..) | Command::Inspect(_)
    )
}

impl Command {
    /// How many events it adds to a group (`max_group_events`).
    pub(crate) fn events(&self) -> usize {
        match self {
            Command::Append { batch, .. } => batch.len(),
            _ => 1,
        }
    }
}

/// One event's fate inside a not yet committed transaction.
pub(crate) enum Slot {
    /// Inserted at this seq.
    New(u64),
    /// Its key was live: the original event.
    Dup(SharedEvent),
}

/// The fates of a batch's events.
pub(crate) enum Slots {
    /// No duplicate: the events went to `first..first + len`.
    Dense(u64),
    /// One slot per event, in order.
    Mixed(Vec<Slot>),
}

impl Slots {
    /// (new, duplicate) events.
    pub(crate) fn counts(&self, len: usize) -> (u64, u64) {
        match self {
            Slots::Dense(_) => (len as u64, 0),
            Slots::Mixed(v) => {
                let dup = v.iter().filter(|s| matches!(s, Slot::Dup(_))).count() as u64;
                (v.len() as u64 - dup, dup)
            }
        }
    }

    /// Whether there is one slot per event of a batch of `len`.
    pub(crate) fn len_matches(&self, len: usize) -> bool {
        match self {
            Slots::Dense(_) => true,
            Slots::Mixed(v) => v.len() == len,
        }
    }
}
