//! Group commit: the writer runs every queued command in one transaction
//! and answers each.
//!
//! # Contract
//!
//! * **Grouping.** The writer blocks for the first command, then takes
//!   everything else already queued (up to `max_group_events`) and runs the
//!   whole group in **one** `BEGIN IMMEDIATE` … `COMMIT`, so concurrent
//!   appenders share one transaction and, in [`Durability::Sync`], one
//!   fsync. Commands queue up naturally while the previous commit is
//!   fsyncing. When every commit fsyncs ([`Durability::Sync`]) and the
//!   previous group was bigger than what is queued now, the writer waits
//!   up to `group_wait` (default 200 µs, about one fsync of a fast disk)
//!   for those appenders to come back, so the group size does not
//!   oscillate between big and tiny and each fsync serves the whole group.
//!   A lone appender never waits: the expectation is the size of the
//!   previous group. Where a commit does not fsync (`Batch`, `None`) the
//!   writer never waits: a commit then costs less than the wait would, so
//!   waiting only adds latency and lowers throughput (BENCHMARKS.md,
//!   "SQLite: the group wait only where a commit fsyncs").
//! * **Refusals cost nothing.** Inside the group each command is checked
//!   against the *running* last seq before anything is written (an
//!   `expected_last` conflict, a `BeyondEnd` cursor and a duplicate key
//!   are decided by reading, not by a failed write), so `expected_last`
//!   behaves exactly as if the commands ran one by one, and a refusal
//!   writes nothing.
//! * **Isolation.** A command whose *write* fails (SQLite error) is
//!   isolated by rolling the transaction back and running the group again
//!   without it: the failed command gets its error, the others commit.
//!   That keeps the common path free of per-command savepoints, and costs
//!   at most `group.len() + 1` attempts.
//! * **Storage faults fail the group.** A write that fails because of the
//!   storage itself (a full disk, an I/O error, a lock held by another
//!   process: [`StorageError::is_fault`]) is not one command's problem, so
//!   the whole group is rolled back and answered with that error at once
//!   (a full disk answers `AppendError::NoSpace`) instead of being retried
//!   command by command. Nothing of it is kept and no seq is consumed; the
//!   fault marks health `Degraded` (see `maintenance.rs`).
//! * **Answers after the commit.** Results are sent only after `COMMIT`
//!   succeeded and the watch was updated; a `Sync` in the group is
//!   answered after the WAL fsync it asked for.

use std::sync::atomic::Ordering;
use std::time::Instant;

use crossbeam_channel::TryRecvError;
use tidings_core::log::{AppendError, CursorError};

use super::Writer;
#[cfg(test)]
use crate::command;
use crate::command::{Appended, Command, Slots};
use crate::error::{StorageError, SyncError};
#[cfg(doc)]
use crate::options::Durability;
use crate::sql;
use crate::stats::{bump, Stats};

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
    /// The consumer's stored spec.
    Defined(String),
    /// Whether the consumer had a definition or a cursor.
    Deleted(bool),
    /// Done (cursor stored, sync queued).
    Done,
    /// Not run: it failed in an earlier attempt of this group.
    Skipped,
}

impl Writer {
    /// Adds to `group` what is queued; false if it met a `Hold` (tests).
    fn drain(&mut self, group: &mut Vec<Command>, events: &mut usize) -> bool {
        while *events < self.cfg.max_group_events {
            match self.rx.try_recv() {
                #[cfg(test)]
                Ok(c) if command::solo(&c) => {
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

    /// The group starting with `first`: everything queued, and, if every
    /// commit fsyncs and that is fewer commands than the previous group
    /// had, whatever else arrives within `group_wait`.
    pub(super) fn gather(&mut self, first: Command) -> Vec<Command> {
        let mut events = first.events();
        let mut group = vec![first];
        let mut open = self.drain(&mut group, &mut events);
        let may_wait = self.cfg.commit_fsyncs && !self.cfg.group_wait.is_zero();
        if open && may_wait && group.len() < self.expect {
            let deadline = Instant::now() + self.cfg.group_wait;
            while open && group.len() < self.expect && events < self.cfg.max_group_events {
                let left = deadline.saturating_duration_since(Instant::now());
                match self.rx.recv_timeout(left) {
                    #[cfg(test)]
                    Ok(c) if command::solo(&c) => {
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

    /// Runs one group of commands in one transaction and answers them.
    ///
    /// The group is held in `self.group` until it is answered, so a panic
    /// while it runs leaves it there for [`Writer::run`] to answer with an
    /// error naming the panic.
    pub(super) fn run_group(&mut self, group: Vec<Command>) {
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
                let sync = if wants_sync { self.sync_wal() } else { Ok(()) };
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
        let now_us = sql::wall_micros();
        let mut last = start;
        let mut outcomes = Vec::with_capacity(group.len());
        let mut archive = self.archive.as_ref().map(|a| a.borrow_mut());
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
                        sql::append_batch(
                            &self.conn,
                            batch,
                            &mut last,
                            now_us,
                            self.cfg.idempotency_window,
                        )
                        .map_err(|e| (i, e))?,
                    ),
                },
                Command::CommitCursor { name, seq, .. } => {
                    if *seq > last {
                        Outcome::BeyondEnd { last }
                    } else {
                        sql::store_cursor(&self.conn, name, *seq, now_us).map_err(|e| (i, e))?;
                        Outcome::Done
                    }
                }
                Command::DefineConsumer { name, spec, .. } => Outcome::Defined(
                    sql::define_consumer(&self.conn, name, spec).map_err(|e| (i, e))?,
                ),
                Command::DeleteConsumer { name, .. } => {
                    Outcome::Deleted(sql::delete_consumer(&self.conn, name).map_err(|e| (i, e))?)
                }
                Command::Prune { .. } => Outcome::Pruned(
                    sql::prune(
                        &self.conn,
                        &self.cfg.retention,
                        self.cfg.idempotency_window,
                        last,
                        now_us,
                        &self.stats,
                        archive.as_mut().map(|w| sql::ArchiveStep {
                            writer: w,
                            all: true,
                            delay: self.cfg.archive_delay,
                        }),
                    )
                    .map_err(|e| (i, e))?,
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
    sync: Result<(), StorageError>,
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
            Command::DefineConsumer { reply, .. } => {
                let r = match (fail, outcome) {
                    (Some(e), _) => Err(e.into()),
                    (None, Outcome::Defined(spec)) => Ok(spec),
                    (None, _) => Err(mismatch().into()),
                };
                let _ = reply.send(r);
            }
            Command::DeleteConsumer { reply, .. } => {
                let r = match (fail, outcome) {
                    (Some(e), _) => Err(e.into()),
                    (None, Outcome::Deleted(any)) => Ok(any),
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
                let _ = reply.send(sync.clone().map_err(SyncError::from));
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
pub(super) fn refuse_all(
    group: Vec<Command>,
    failed: Vec<Option<StorageError>>,
    err: &StorageError,
) {
    for (cmd, fail) in group.into_iter().zip(failed) {
        let e = fail.unwrap_or_else(|| err.clone());
        match cmd {
            Command::Append { reply, .. } => {
                let _ = reply.send(Err(e.into()));
            }
            Command::CommitCursor { reply, .. } => {
                let _ = reply.send(Err(e.into()));
            }
            Command::DefineConsumer { reply, .. } => {
                let _ = reply.send(Err(e.into()));
            }
            Command::DeleteConsumer { reply, .. } => {
                let _ = reply.send(Err(e.into()));
            }
            Command::Prune { reply } => {
                let _ = reply.send(Err(e.into()));
            }
            Command::Sync { reply } => {
                let _ = reply.send(Err(SyncError::from(e)));
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
