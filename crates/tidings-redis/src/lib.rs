//! # tidings-redis: the Redis Streams event log
//!
//! [`RedisLog`] implements tidings-core's [`EventLog`] on a Redis stream, so
//! several Tidings servers share **one ordered log**: each appends through
//! the same atomic Lua script, each follows every append (its own and the
//! others') through a blocking `XREAD`, and Tidings' dense `seq` stays the
//! public cursor because the stream ids *are* the seqs.
//!
//! ```no_run
//! use tidings_core::{EventLog, NewEvent};
//! use tidings_redis::{RedisLog, RedisOptions};
//!
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! let log = RedisLog::connect("redis://127.0.0.1:6379?key=orders", RedisOptions::default()).await?;
//! let ev = NewEvent::new("order.placed", serde_json::json!({"id": 7}))?;
//! let committed = log.append(vec![ev], None).await?;
//! println!("committed as #{}", committed[0].event.seq);
//! # Ok(()) }
//! ```
//!
//! ## Key types
//!
//! * [`RedisLog`]: the log. Cheap to clone (clones share one connection and
//!   one set of background tasks, which stop when the last clone is
//!   dropped). [`RedisLog::connect`] takes the server's store URL
//!   `redis://HOST:PORT[/DB]?key=NAME` (key defaults to [`DEFAULT_KEY`]; the
//!   `key` parameter is removed before the URL reaches the Redis client);
//!   [`RedisLog::open`] takes a client URL and a key separately.
//! * [`RedisOptions`]: retention, idempotency window, pruning interval, the
//!   per-operation timeout, the follower's block time, reconnect backoff.
//! * [`KeyLayout`]: the names of the Redis keys a log uses.
//! * [`RedisStats`]: what [`RedisLog::stats`] counts (appends, plain
//!   groups, lost writes, follower reconnects); the server exports them.
//! * Errors: [`ConnectError`] for opening, [`StorageError`] for what
//!   core's `LogFailure::Storage` (the `Failed(..)` variant of each
//!   operation's error) boxes. Outages map to `LogFailure::Unavailable`.
//!
//! ## Key layout
//!
//! For the key `K` (see [`KeyLayout`]):
//!
//! | key            | type   | holds                                                     |
//! |----------------|--------|-----------------------------------------------------------|
//! | `K`            | stream | the events, one entry per up to 128 events of a group; entry id `<seq of its last event>-0`; see "Stream entries" below |
//! | `K:seq`        | string | the last seq ever assigned (never trimmed, never reset)   |
//! | `K:first`      | string | the first seq count retention keeps (absent: 1)           |
//! | `K:cursors`    | hash   | durable consumer name -> last processed seq              |
//! | `K:consumers`  | hash   | durable consumer name -> its definition (opaque spec)    |
//! | `K:idem:<key>` | string | an idempotency key -> `<seq> <record>` of the original, `PX` window |
//!
//! With Redis Cluster all of them must hash to one slot: use a hash tag as
//! the key, e.g. `?key={orders}`.
//!
//! ## The append script
//!
//! One `EVALSHA` per group of appends (loaded again by the client after a
//! server restart empties the script cache): an append that finds no call
//! in flight is sent alone by its caller; appends that arrive meanwhile are
//! queued and sent together, as one call, up to 2 calls in flight (core's
//! `GroupCommit`). Redis runs a script atomically, so no other client's
//! command runs in between. The script, for each append of the group in
//! order:
//!
//! 1. reads the counter `K:seq` (once per call; later appends of the group
//!    see it plus what the earlier ones took); if `expected_last` is given
//!    and differs, that append is refused as a conflict and takes nothing;
//! 2. reads every idempotency key of the batch and decides each event's fate:
//!    a key held in Redis is a duplicate of the stored original, a key used
//!    earlier in the same batch is a duplicate of that event, anything else
//!    is fresh and gets the next seq (`last + 1`, `last + 2`, ...);
//! 3. only then writes: the fresh events of the whole group as one stream
//!    entry (`XADD K <last seq>-0 at <time> e <record> e <record> ..`; a
//!    group of more than 128 events takes several entries), `INCRBY K:seq
//!    <fresh>`, `SET K:idem:<key> <seq> <record> PX <window>` per fresh
//!    keyed event, and, when count retention is set, raises `K:first` and
//!    `XTRIM K MINID`s the entries wholly below it.
//!
//! A group with no idempotency key, no `expected_last` and no count
//! retention (the common case: plain emits) is sent to a second, smaller
//! script that does steps 1 and 3 only (the floor check, the entries, the
//! counter): every event of such a group is fresh, so the group takes the
//! next seqs whole and the reply is just the new last seq. It writes the
//! same entries, so readers cannot tell which script wrote one.
//!
//! So two servers never assign the same seq, never leave a gap, and a batch
//! is all or nothing: everything that can refuse it (the expectation, the
//! keys) is checked before the first write, and the first write (the first
//! `XADD`) is the only one that can fail (on a key of the wrong type), before
//! anything was written. A duplicate is answered from the stored JSON, so
//! the original is returned even if retention already removed it from the
//! stream.
//!
//! ## Reads, cursors and wake-ups
//!
//! `read(after, limit)` is one script: `GET K:seq`, `GET K:first` and the
//! entries holding the `limit` events after `after`, found by id (ids are
//! last seqs), so [`Page::last_seq`](tidings_core::log::Page) is
//! consistent with the events; the events of the first and last entry
//! outside the range are dropped before decoding. `bounds()` likewise
//! reads the counter, `K:first` and the first entry together. `commit_cursor` checks the seq against the
//! counter and `HSET`s in one script (`BeyondEnd` otherwise).
//! `define_consumer` is one script, `HSETNX` then `HGET` of `K:consumers`,
//! so the first definer wins and every server gets the stored spec back;
//! `delete_consumer` `HDEL`s the name from `K:consumers` and `K:cursors` in
//! one script, and `consumers()` reads both hashes in one script.
//! `seq_before(time)` scans the events' times from the front, in script
//! steps of 1,000 entries that return only seqs.
//!
//! [`EventLog::watch`] is set at open from the counter, after each of this
//! instance's appends, and by a **follower task** that loops `XREAD COUNT 1
//! BLOCK <block> STREAMS K <last>-0` followed (pipelined, on the same
//! connection) by `GET K:seq`: it wakes as soon as *any* process appends and
//! publishes the counter, never the id of a half-seen batch. The follower has
//! its own connection (a blocking command would stall the shared one).
//!
//! ## Retention
//!
//! A hard limit, not waiting for cursors (a consumer behind it is told by
//! [`tidings_core::stream_from`] with a `Lagged`). `max_count` is exact, on
//! every append and on prune: `K:first` rises to `last - max_count + 1`,
//! the entries wholly below it are removed (`XTRIM MINID`), and the older
//! events of an entry straddling it are hidden from every read. Stream ids
//! are seqs, not times, so `max_age` is applied by a script that reads the
//! `at` field (the commit time by Redis' clock, never the client-set event
//! `time`; one per entry, shared by its events) of the entries at the
//! front and `XTRIM MINID`s up to the first entry young enough (in steps of 10,000 entries, so Redis is never
//! blocked long). [`EventLog::prune`] applies both now; a background task
//! does so every `prune_interval` of [`RedisOptions::log`] (default 1 s). The counter
//! is never trimmed, so seqs are never reused, and `bounds().first` is the
//! first event of the first entry left, not below `K:first` (`last + 1`
//! when no entry is left).
//!
//! ## Outages
//!
//! Commands go through a [`redis::aio::ConnectionManager`], which
//! reconnects with exponential backoff (capped at
//! [`RedisOptions::max_reconnect_delay`]). Every operation is bounded by
//! [`RedisOptions::timeout`] (default 3 s): while Redis is unreachable,
//! appends fail with `Unavailable` ([`LogFailure::Unavailable`]) within that time, never
//! hang and never succeed silently. An append that timed out *after* the
//! script was sent may have been committed (the answer was lost): retry it
//! with an idempotency key to make that safe. The follower reconnects on its
//! own with the same backoff and goes on from the last seq it saw, so
//! `watch` (and the followers waiting on it) miss nothing.
//!
//! Durability across a Redis crash is Redis' own: only `appendonly yes`
//! with `appendfsync always` keeps every acknowledged write. With
//! `everysec` (Redis' default) a crash can lose up to about two seconds of
//! acknowledged events (Redis postpones the write when an fsync is slow),
//! and Redis' counter then goes back. An instance that already saw a seq
//! the counter no longer covers refuses to append
//! ([`StorageError::LostWrites`]) rather than hand that seq out again; a
//! process that opens the log afterwards cannot know and continues from
//! the counter.
//!
//! ## Stream entries
//!
//! One entry per at most 128 events of a call of the append script (a
//! call carries one group, up to 512 events, so it may write several): field
//! `at`, the commit time (µs, Redis' clock), then one field `e` per event
//! whose value is the event's record, JSON with `time` (µs since the
//! epoch) first, then `id`, `name`, `source`, `data`, and `key` and
//! `priority` when present. The `n` events of the entry with id `L` have
//! seqs `L - n + 1 ..= L`. Entries an earlier version wrote (one event
//! each, one field per event attribute) are still read. Times are kept to
//! the microsecond; the events an append returns carry the same truncated
//! time as later reads. `codec.rs` has the details, and why few entries
//! per group (the script's cost grows with its number of arguments).
//!
//! ## Code map
//!
//! * `log.rs`: [`RedisLog`], [`KeyLayout`], the state the clones share and
//!   the [`EventLog`] impl, which delegates to:
//!   * `log/open.rs`: connecting, checking the keys, starting the tasks,
//!     `destroy`;
//!   * `log/append.rs`: group commit, the append script's call and reply;
//!   * `log/follower.rs`: the follower task behind `watch`;
//!   * `log/read.rs`: `read`, `bounds`, `seq_before`;
//!   * `log/prune.rs`: retention and the periodic pruner;
//!   * `log/consumers.rs`: cursors and consumer definitions.
//! * `scripts.rs`: the Lua scripts and the helpers they share; `codec.rs`: stream entries to and from
//!   events; `options.rs`: [`RedisOptions`] and the URL; `error.rs`: the
//!   errors and how Redis errors map to them; `stats.rs`: [`RedisStats`]
//!   and the counters behind it.
//!
//! [`EventLog`]: tidings_core::EventLog
//! [`EventLog::watch`]: tidings_core::EventLog::watch
//! [`EventLog::prune`]: tidings_core::EventLog::prune
//! [`LogFailure::Unavailable`]: tidings_core::log::LogFailure::Unavailable

mod codec;
mod error;
mod log;
mod options;
mod scripts;
mod stats;

pub use error::{ConnectError, StorageError};
pub use log::{KeyLayout, RedisLog};
pub use options::{parse_url, RedisOptions, DEFAULT_KEY};
pub use stats::RedisStats;
pub use tidings_core::log::WriteStats;
