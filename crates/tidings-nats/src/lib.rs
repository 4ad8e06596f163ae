//! Tidings' NATS JetStream backend: an [`EventLog`](tidings_core::EventLog)
//! that several Tidings servers share, with one dense, gap-free order.
//!
//! # Key types
//!
//! * [`NatsLog`] — the log. Open it from the URL form the server uses,
//!   `NatsLog::connect("nats://HOST:PORT?stream=NAME", NatsOptions::default())`
//!   (stream default [`DEFAULT_STREAM`]), or with
//!   [`NatsLog::open`]`(server, stream, options)` / [`NatsLog::with_client`].
//! * [`NatsOptions`] — retention, idempotency window, timeouts, group commit
//!   and cache sizes, storage type. [`NatsUrl`] parses the URL form.
//! * [`NatsStats`] — what [`NatsLog::stats`] counts (appends, lost races,
//!   follower restarts, skipped foreign messages); the server exports them.
//! * [`ConnectError`] — why opening failed; operations fail with the core
//!   error types (`AppendError`, `ReadError`, ...).
//!
//! # Layout in JetStream
//!
//! One stream `NAME` with the single subject `NAME.events`, limits
//! retention, `allow_direct`; and a stream `NAME_cursors` for durable
//! consumers, used as a key-value bucket, one message kept per subject:
//! `NAME_cursors.c_<hex of the consumer name>` holds its cursor (payload the
//! seq) and `NAME_cursors.d_<hex of the consumer name>` its definition
//! (payload the spec). The KV API of async-nats cannot create buckets on
//! nats-server 2.9, so the bucket is a plain stream.
//!
//! A definition is created only if absent: it is published with
//! `Nats-Expected-Last-Subject-Sequence: 0`, so when two servers define one
//! consumer at once the server refuses the second ("wrong last sequence")
//! and that one reads the stored spec back: the first definer wins.
//! `consumers()` lists the bucket's subjects (stream info with a subjects
//! filter) and reads the last message of each; `delete_consumer` purges
//! both of the consumer's subjects.
//!
//! # Seq mapping and atomic batches
//!
//! nats-server 2.9 has no multi-message transaction, so **one append is one
//! JetStream message**, a *batch record* (see the `record` module): JSON
//! `{"first": F, "at": µs, "events": [...]}` holding the whole envelopes with
//! their Tidings seqs `F, F+1, ...` (no Tidings headers: only the guard
//! below). A batch is therefore atomic: it is one message or
//! nothing. Tidings' dense seq stays the public cursor; the JetStream stream
//! sequence is internal. With single-event appends the two are equal
//! (first message = seq 1); a batch of `n` makes Tidings run `n - 1` ahead.
//!
//! Seqs are assigned optimistically and made atomic by JetStream: a writer
//! knows the *tail* (stream seq `S` of the newest record and the Tidings seq
//! `T` it ends at), numbers its events from `T + 1` and publishes with
//! `Nats-Expected-Last-Sequence: S`. If anyone appended meanwhile the server
//! refuses ("wrong last sequence"); the writer re-reads the tail (stream info
//! and a direct get of the newest record) and re-numbers. Two servers can thus
//! never assign the same seq or leave a gap. A record published into an
//! empty stream is guarded the same way, with an expected last sequence
//! of 0, which the server checks too.
//! An `expected_last` append is refused with `Conflict` only against a tail
//! just read from the server, and accepted under the same guard.
//!
//! Concurrent appends of one process are *group committed* (core's
//! `GroupCommit`, one record at a time): an append that finds no record
//! being written publishes its own; those that arrive meanwhile are merged
//! (up to [`NatsOptions::max_record_events`] events) into the next record;
//! each append keeps consecutive seqs and stays all-or-nothing (an append
//! refused by its `expected_last` is left out).
//!
//! # Reads, watch and followers
//!
//! Each `NatsLog` runs a follower: an ordered JetStream consumer that
//! applies every record (its own and other processes') in stream order. It
//! updates [`watch`](tidings_core::EventLog::watch) with the last Tidings
//! seq, keeps the newest [`NatsOptions::cache_events`] events in memory for
//! reads, and indexes idempotency keys. `read(after, limit)` first asks the
//! server for the stream's last sequence and waits until the follower has
//! applied it (read-your-writes across servers), then serves from the cache,
//! or for older positions binary-searches the record holding `after + 1` by
//! direct gets and reads forward. `Page::last_seq` is the follower's applied
//! tail, so it is always consistent with the events returned.
//!
//! # Idempotency keys
//!
//! Keys are checked against the follower's index of keys in records younger
//! than the window (rebuilt on open by replaying the window from the
//! stream). Before planning a keyed record the writer waits until the
//! follower has applied every record up to the stream seq it will publish
//! behind; since the publish only succeeds if nothing was appended after
//! that, the check and the append are atomic: two servers racing with the
//! same key cannot both append it (the loser retries and finds the key). A
//! duplicate returns the original event with `duplicate = true`, also for a
//! key repeated inside one batch. The window runs from the append time of
//! the original (the appender's clock). Limits: a key whose record was
//! pruned by retention is forgotten when a process restarts, even inside the
//! window (the in-process index keeps it until the window ends).
//!
//! # Retention
//!
//! `max_count` becomes the stream's `MaxMsgs`. It counts records, so the
//! server never removes more than asked; [`EventLog::prune`](tidings_core::EventLog::prune)
//! removes the records wholly older than the newest `max_count` events; a
//! batch record that straddles the limit is kept whole, and reads and
//! `bounds` hide its older events, so exactly `max_count` stay readable.
//! `max_age` is **not** the stream's `MaxAge`: JetStream would also
//! expire the newest record, and with it the only durable copy of the seq
//! tail. Instead `prune()` (run by a background task every
//! `prune_interval` of [`NatsOptions::log`]) purges whole records older than the
//! limit (by the record's append time `at`, never the events' client-set
//! `time`) with a purge-up-to-sequence; when every event goes, it first
//! appends an empty *tail marker* record (under the same expected-sequence
//! guard) and purges below it. Removal is from the front only and no
//! individual message is ever deleted. Retention is a hard limit: cursors do
//! not hold it back; readers behind it get `Delivery::Lagged`.
//!
//! # Outages
//!
//! The client reconnects forever with backoff. While it is disconnected,
//! appends fail fast with `AppendError::Failed(LogFailure::Unavailable)`; every request to the
//! server is bounded by [`NatsOptions::request_timeout`] and an append as a
//! whole by [`NatsOptions::append_timeout`], so nothing hangs and nothing is
//! dropped silently. An append whose acknowledgement was lost (the server
//! went away after storing it) is reported `Unavailable` although it may
//! be committed: retry it with an idempotency key for exactly-once. After
//! reconnecting, the ordered consumer resumes from the last stream seq it
//! delivered, so `watch` and followers go on without a gap.
//!
//! # Code map
//!
//! * `log.rs`: [`NatsLog`], the state its tasks share and the
//!   [`EventLog`](tidings_core::EventLog) impl, which delegates to:
//!   * `log/open.rs`: connecting, creating or updating the streams, catching
//!     up, starting the tasks, `destroy`;
//!   * `log/writer.rs`: writing records (group commit, idempotency keys,
//!     the expected-last-sequence guard, retries after a lost race);
//!   * `log/follower.rs`: the task applying every record, in stream order;
//!   * `log/state.rs`: the in-memory view (tail, cache, keys) it keeps;
//!   * `log/read.rs`: `read`, `bounds`, `seq_before`;
//!   * `log/prune.rs`: retention and the periodic pruner;
//!   * `log/consumers.rs`: cursors and consumer definitions.
//! * `record.rs`: the batch record stored per append (its body says which
//!   Tidings seqs it holds; it carries no Tidings headers);
//!   `options.rs`: [`NatsOptions`] and the URL; `error.rs`: the errors and
//!   how NATS errors map to them; `stats.rs`: [`NatsStats`] and the
//!   counters behind it.

mod error;
mod log;
mod options;
mod record;
mod stats;

pub use error::{ConnectError, StorageError};
pub use log::NatsLog;
pub use options::{validate_stream_name, NatsOptions, NatsUrl, Storage, DEFAULT_STREAM};
pub use stats::NatsStats;
pub use tidings_core::log::WriteStats;
