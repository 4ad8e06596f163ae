//! # tidings-sqlite: the SQLite event log
//!
//! [`SqliteLog`] implements tidings-core's [`EventLog`] on one SQLite file in
//! WAL mode. It is the embedded default for a Tidings server: events survive
//! restarts, streams reading it are woken the moment a commit lands (no polling), and
//! concurrent publishers share fsyncs.
//!
//! ```no_run
//! use std::sync::Arc;
//! use tidings_core::{EventLog, NewEvent};
//! use tidings_sqlite::{Durability, SqliteLog, SqliteOptions};
//!
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! let log = SqliteLog::open("events.db", SqliteOptions::default().durability(Durability::Sync))?;
//! let ev = NewEvent::new("order.placed", serde_json::json!({"id": 7}))?;
//! let committed = log.append(vec![ev], None).await?;
//! assert_eq!(committed[0].event.seq, log.last_seq());
//! let bus_log: Arc<dyn EventLog> = Arc::new(log.clone());
//! # drop(bus_log);
//! log.close_blocking()?;
//! # Ok(()) }
//! ```
//!
//! ## Key types
//!
//! * [`SqliteLog`]: the log. Cheap to clone (clones share it); `Send + Sync`.
//!   [`SqliteLog::open`] creates, migrates or refuses a file;
//!   [`SqliteLog::close_blocking`] flushes and stops it; [`SqliteLog::stats`] counts
//!   transactions, fsyncs, failures, probes and writer restarts;
//!   [`EventLog::health`] says whether writes currently succeed.
//! * [`SqliteOptions`]: durability, retention, idempotency window, pruning
//!   interval, reader threads, open-time verification, the probe interval
//!   while degraded.
//! * [`Durability`]: `Sync` (default), `Batch { interval }`, `None`. The
//!   table on [`Durability`] says exactly what each guarantees.
//! * Errors: [`OpenError`] (with a variant for each way a file can be
//!   refused: not a database, corrupt, foreign, newer schema...),
//!   [`CloseError`], [`SyncError`], and [`StorageError`], which is what
//!   core's `LogFailure::Storage` (the `Failed(..)` variant of
//!   `AppendError`, `ReadError`, `CursorError` and `PruneError`) boxes.
//!
//! ## Code map
//!
//! | module | owns |
//! |---|---|
//! | `lib.rs` | this overview and the public re-exports |
//! | `handle.rs` | [`SqliteLog`]: open, close, the [`EventLog`] impl; sends work to the threads |
//! | `command.rs` | `Command`, what the handle asks of the writer, and an append's answer |
//! | `writer.rs` | the writer thread: its loop, panic recovery, the transaction primitives |
//! | `writer/group.rs` | group commit: gathering, running, isolating and answering a group |
//! | `writer/maintenance.rs` | between groups: retention, `Batch` fsyncs, health probes |
//! | `reader.rs` | the reader threads and the read-ahead of full pages |
//! | `sql.rs` | the SQL shared by writer and readers: last seq, appends, keys, cursors, consumers, pruning |
//! | `codec.rs` | events to rows and back (encoding on the appender, decoding on the reader) |
//! | [`archive`] | the archive retention writes before it deletes (zstd JSON lines + manifest), and its reader |
//! | [`schema`] | the on-disk schema, its versions, migrations and open-time checks |
//! | `health.rs` | whether writes currently succeed ([`EventLog::health`]) |
//! | `stats.rs` | [`SqliteStats`] and the counters behind it |
//! | `options.rs` | [`SqliteOptions`], [`Durability`], [`OpenCheck`] |
//! | `error.rs` | [`OpenError`], [`CloseError`], [`SyncError`], [`StorageError`] |
//! | `fuzzing.rs` | (hidden) the row codec, exposed for the fuzz target |
//! | `bin/*.rs` | two test binaries the crash and archive tests start and kill |
//!
//! Only the handle talks to the threads, and only the writer writes. The
//! statements on events, cursors and consumers are in `sql.rs` and
//! `reader.rs` (the schema's in `schema.rs`); the only other SQL is
//! connection settings (the `PRAGMA`s in `handle.rs`) and the writer's own
//! transaction control and health probe (`writer.rs`,
//! `writer/maintenance.rs`).
//!
//! ## Group commit
//!
//! One **writer thread** owns the only writing connection. `append`
//! serializes the payloads on the caller's thread, sends the batch down a
//! channel and returns a future waiting on a oneshot. The writer takes the
//! first request, then everything else already queued, and runs them all in
//! one transaction: with `Durability::Sync`, N concurrent appenders cost one
//! fsync, not N. In `Sync`, when fewer requests are queued than the
//! previous group had, it waits up to [`SqliteOptions::group_wait`]
//! (200 µs) for the rest to come back, so groups stay large under load; a
//! lone appender never waits, and in `Batch` and `None`, where a commit
//! costs less than such a wait, nobody does. Each request is checked
//! against the running last sequence inside the group (so `expected_last` behaves exactly as if requests ran one by
//! one, and a refusal writes nothing); a request whose write fails is
//! isolated by rolling back and re-running the group without it, so it does
//! not affect the others. After `COMMIT` the writer publishes the new last
//! sequence on [`EventLog::watch`] and then answers the appenders. Cursor
//! commits, consumer definitions and deletions, and on-demand prunes ride
//! the same queue.
//!
//! The writer answers with where each event went; the appender's future
//! builds the committed `Arc<Event>`s itself, so the writer thread does no
//! per-event allocation or free.
//!
//! With [`Durability::Sync`] the connection runs `synchronous=FULL`, so
//! SQLite fsyncs the WAL inside every `COMMIT` that wrote, before the
//! writer acknowledges anything; [`SqliteStats::syncs`] counts that fsync at
//! the one place commits happen, and only if `synchronous` as read back
//! from the connection really is `FULL`.
//!
//! ## Storage faults and health
//!
//! A write that fails because of the storage rather than the request (a
//! full disk, an I/O error, a file gone read-only, a lock held by another
//! process) fails its whole group at once and is rolled back: nothing of it
//! is kept, no seq is consumed, and the next group simply tries again, so
//! the log recovers by itself once the cause is gone (no reopen). Appends
//! answer:
//!
//! * [`AppendError::NoSpace`] for a full disk or quota: `SQLITE_FULL`, or an
//!   I/O error whose OS errno is `ENOSPC`/`EDQUOT` (the errno behind an
//!   `SQLITE_IOERR_*` is read with `sqlite3_system_errno`);
//! * [`AppendError::Failed`] with [`LogFailure::Unavailable`] for a lock
//!   held by another process, or a writer thread that panicked (see below);
//! * [`AppendError::Failed`] with [`LogFailure::Storage`] (a boxed
//!   [`StorageError`]) for other faults.
//!
//! Every message names the cause; none of these is `Closed`, which only
//! ever means the log was closed: [`SqliteLog::close_blocking`] or
//! [`EventLog::close`] was called, or the last clone dropped.
//!
//! [`EventLog::health`] is `Degraded { reason, no_space }` from the first
//! such failure until a write transaction commits again. Besides appends,
//! cursor commits and prunes, the idle writer itself retries while
//! degraded: every [`SqliteOptions::probe_interval`] (default 1 s) it runs
//! a one-row write transaction (rewriting a `meta` row with its own value),
//! so health returns to `Ok` once space is freed even if nobody publishes.
//! A probe is a small write: it can succeed in space a failed larger write
//! left behind, in which case health reads `Ok` until the next append that
//! does not fit.
//!
//! A writer thread that panics (a bug) is not left dead: the panic is
//! caught, logged with `tracing::error`, counted
//! ([`SqliteStats::writer_panics`]) and reported by `health()`; the open
//! transaction is rolled back, the requests of the group it was running
//! are answered with [`StorageError::WriterPanicked`] (as `Unavailable`),
//! and the writer goes on with the queue.
//!
//! ## Reads
//!
//! Reads go to a small pool of **reader threads**
//! ([`SqliteOptions::readers`]), each with its own read connection: WAL lets
//! them read a consistent snapshot while the writer commits, and the writer
//! never waits for them. A page's `last_seq` comes from the same snapshot as
//! its events. Reader threads only step SQLite and copy the rows' bytes; the
//! future returned by `read` decodes them (UTF-8, JSON) on the thread that
//! awaits it. When a read returns a full page of 64 to 16,384 events, the
//! reader reads the next page ahead, so a catching-up consumer (core's
//! `stream_from`, a replay) decodes page k while page k+1 is fetched; a page read
//! ahead is served only if retention has not touched it since (see
//! `reader.rs`), so it is always exactly what a fresh read would return.
//! A read whose requester dropped it before a reader thread took it is
//! skipped, and a requester that went away gets no read-ahead.
//!
//! [`EventLog::read_within`] (what core's log streams use) stops the SQL read
//! itself at the byte budget: SQLite computes each row's size from its
//! stored lengths (about [`Event::approx_bytes`](tidings_core::Event::approx_bytes))
//! and the reader stops stepping before copying the first row past the
//! budget, keeping at least one. A page of 1 MiB payloads under a 4 MiB
//! budget copies the three rows that fit, not `limit` rows.
//!
//! `time` is stored in microseconds: the event `append` returns already has
//! its time truncated to microseconds, so it equals what `read` returns.
//!
//! ## Sequence numbers
//!
//! `seq` is the rowid of `events` (INTEGER PRIMARY KEY, assigned explicitly
//! by the writer), gap-free from 1. The last sequence ever assigned is
//! `max(max(events.seq), meta.last_seq)`: appends only add rows (one page
//! less to write per commit than also updating a counter), and retention,
//! the only thing that deletes rows, first records the last sequence in
//! the `meta` row *in the same transaction*. So a number is never reused:
//! not after a crash (a transaction is all there or not at all) and not
//! after retention emptied the table.
//!
//! ## Retention is a hard limit
//!
//! the retention of [`SqliteOptions::log`] (`max_count`, `max_age`) is applied by the
//! writer thread every `prune_interval` (default 1 s) and by
//! [`EventLog::prune`]. `max_age` goes by the time the log *committed* each
//! event (stored per event since schema version 3), never by the event's
//! own, client-sent `time`: a publisher cannot keep an event forever by
//! dating it in the future, nor have it pruned at once by dating it in the
//! past. It **does not wait for durable consumers**: a
//! consumer whose committed cursor points into the pruned range keeps its
//! cursor, and when it resumes, [`tidings_core::stream_from`] reports exactly
//! what it missed as a [`Delivery::Lagged`](tidings_core::Delivery::Lagged)
//! before going on with the oldest event kept. Size retention for the
//! slowest consumer, not the other way round.
//!
//! ## Archive
//!
//! With [`SqliteOptions::archive_dir`], retention archives before it
//! deletes: the events due go, in seq order, to a zstd JSON-lines file
//! (fsynced, renamed, directory fsynced), then into `manifest.json` (the
//! same way), and only then are the rows deleted, in the prune's
//! transaction. Everything up to the manifest's last seq is archived, so
//! after a crash between the two the next prune deletes those rows and
//! writes nothing again. The background step writes at most one file of
//! [`archive::CHUNK_EVENTS`] per run (the next run follows the next group
//! at once), and waits for a full chunk or
//! [`SqliteOptions::archive_delay`]; an explicit
//! [`EventLog::prune`] archives all that is
//! due. A failed archive write deletes nothing and is retried. See
//! [`archive`].
//!
//! ## Idempotency keys
//!
//! A key seen within the idempotency window is not appended
//! again: its slot in the result is the original event (read back from the
//! file) with `duplicate = true`, also when the key repeats inside one batch.
//! Keys live in their own table with the wall-clock time they were recorded,
//! so they survive restarts; they are swept when the window passes. If
//! retention prunes an event whose key is still live, the event is copied
//! beside its key first, so the answer stays the original event.
//!
//! ## Consumers
//!
//! A consumer's definition (core's opaque spec) is a row of `consumers`
//! beside its cursor in `cursors`. The writer defines one with an insert
//! that does nothing if the name is taken, then reads the stored spec back
//! in the same transaction, so the first definition wins (also against
//! another process on the file); deleting a consumer removes both rows in
//! one transaction. The list is read in one statement, one snapshot.
//!
//! ## Files
//!
//! The schema is versioned (`PRAGMA user_version`, see [`schema`]); older
//! files are migrated in one transaction at open, newer ones are refused
//! with [`OpenError::NewerSchema`]. Other SQLite databases are refused with
//! [`OpenError::NotATidingsLog`], garbage with [`OpenError::NotADatabase`],
//! and, with the default [`OpenCheck::Quick`], damaged files with
//! [`OpenError::Corrupt`]. Opening never panics on a bad file.
//!
//! One process should own a log file. Another process appending to the same
//! file gets correct sequence numbers (the writer re-reads the last sequence
//! in every transaction), but this process' `watch` is not woken by it.

pub mod archive;
mod codec;
mod command;
mod error;
#[doc(hidden)]
pub mod fuzzing;
mod handle;
mod health;
mod options;
mod reader;
pub mod schema;
mod sql;
mod stats;
mod writer;

pub use error::{CloseError, OpenError, StorageError, SyncError};
pub use handle::SqliteLog;
pub use options::{Durability, OpenCheck, SqliteOptions};
pub use schema::{APPLICATION_ID, SCHEMA_VERSION};
pub use stats::SqliteStats;

// Only for the links in the docs above.
#[cfg(doc)]
use tidings_core::{log::AppendError, log::LogFailure, EventLog};
