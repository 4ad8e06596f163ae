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
//! * Errors: [`ConnectError`] for opening, [`StorageError`] for what the
//!   `Storage(..)` variants of core's errors box. Outages map to the
//!   `Unavailable(..)` variants.
//!
//! ## Key layout
//!
//! For the key `K` (see [`KeyLayout`]):
//!
//! | key            | type   | holds                                                     |
//! |----------------|--------|-----------------------------------------------------------|
//! | `K`            | stream | the events; entry id `<seq>-0`; fields under "Stream entries" below |
//! | `K:seq`        | string | the last seq ever assigned (never trimmed, never reset)   |
//! | `K:cursors`    | hash   | durable consumer name -> last processed seq              |
//! | `K:consumers`  | hash   | durable consumer name -> its definition (opaque spec)    |
//! | `K:idem:<key>` | string | an idempotency key -> the committed entry (JSON), `PX` window |
//!
//! With Redis Cluster all of them must hash to one slot: use a hash tag as
//! the key, e.g. `?key={orders}`.
//!
//! ## The append script
//!
//! One `EVALSHA` per batch (loaded again by the client after a server
//! restart empties the script cache). Redis runs a script atomically, so no
//! other client's command runs in between. The script:
//!
//! 1. reads the counter `K:seq`; if `expected_last` is given and differs,
//!    it returns the conflict and writes nothing;
//! 2. reads every idempotency key of the batch and decides each event's fate:
//!    a key held in Redis is a duplicate of the stored original, a key used
//!    earlier in the same batch is a duplicate of that event, anything else
//!    is fresh and gets the next seq (`last + 1`, `last + 2`, ...);
//! 3. only then writes: `XADD K <seq>-0 ...` per fresh event, `INCRBY K:seq
//!    <fresh>`, `SET K:idem:<key> <entry JSON> PX <window>` per fresh keyed
//!    event, and `XTRIM K MAXLEN = <max_count>` when count retention is set.
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
//! `read(after, limit)` is one script: `GET K:seq` and `XRANGE K (after-0 +
//! COUNT limit`, so [`Page::last_seq`](tidings_core::log::Page) is
//! consistent with the events. `bounds()` likewise reads the counter and the
//! first entry's id together. `commit_cursor` checks the seq against the
//! counter and `HSET`s in one script (`BeyondEnd` otherwise).
//! `define_consumer` is one script, `HSETNX` then `HGET` of `K:consumers`,
//! so the first definer wins and every server gets the stored spec back;
//! `delete_consumer` `HDEL`s the name from `K:consumers` and `K:cursors` in
//! one script, and `consumers()` reads both hashes in one script.
//! `seq_before(time)` scans the stream's `time` fields from the front, in
//! script steps of 1,000 entries that return only ids.
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
//! [`tidings_core::follow`] with a `Lagged`). `max_count` is applied with
//! `XTRIM MAXLEN =` (exact) on every append and on prune. Stream ids are
//! seqs, not times, so `max_age` is applied by a script that reads the
//! `at` field (the commit time by Redis' clock, never the client-set event
//! `time`) of the entries at the front and `XTRIM MINID`s up to the first
//! entry young enough (in steps of 10,000 entries, so Redis is never
//! blocked long). [`EventLog::prune`] applies both now; a background task
//! does so every [`RedisOptions::prune_interval`] (default 1 s). The counter
//! is never trimmed, so seqs are never reused, and `bounds().first` is the
//! first entry left (`last + 1` when none is).
//!
//! ## Outages
//!
//! Commands go through a [`redis::aio::ConnectionManager`], which
//! reconnects with exponential backoff (capped at
//! [`RedisOptions::max_reconnect_delay`]). Every operation is bounded by
//! [`RedisOptions::timeout`] (default 3 s): while Redis is unreachable,
//! appends fail with [`AppendError::Unavailable`] within that time, never
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
//! Each event is one entry with fields `id` (UUID), `name`, `source`, `time`
//! (µs since the epoch), `data` (JSON text), `key` and `priority` when
//! present, and `at`, the commit time the append script adds (µs, Redis'
//! clock). Times are kept to the microsecond; the events an append returns
//! carry the same truncated time as later reads.

mod codec;
mod error;
mod options;
mod scripts;
mod tasks;

use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::Value;
use tidings_core::log::{
    validate_consumer_name, AppendError, AppendFuture, Bounds, BoxFuture, Committed,
    ConsumerRecord, CursorError, Page, PruneError, ReadError,
};
use tidings_core::{EventLog, NewEvent, SharedEvent};
use tokio::sync::watch;

pub use error::{ConnectError, StorageError};
pub use options::{parse_url, RedisOptions, DEFAULT_KEY};

use codec::{decode_entry, decode_stored, int, parse_id, seq_of, text};
use error::OpError;

/// Entries one `seq_before` script step examines.
const SEQ_BEFORE_STEP: usize = 1_000;
/// Entries one age-retention script step examines at most.
const PRUNE_AGE_STEP: usize = 10_000;

/// The names of the Redis keys a log with key `K` uses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyLayout {
    /// `K`: the stream of events.
    pub stream: String,
    /// `K:seq`: the last seq ever assigned.
    pub counter: String,
    /// `K:cursors`: consumer name -> seq.
    pub cursors: String,
    /// `K:consumers`: consumer name -> definition.
    pub consumers: String,
    /// `K:idem:`: prefix of the idempotency keys.
    pub idempotency_prefix: String,
}

impl KeyLayout {
    /// The layout for the log key `key`.
    pub fn new(key: &str) -> KeyLayout {
        KeyLayout {
            stream: key.to_owned(),
            counter: format!("{key}:seq"),
            cursors: format!("{key}:cursors"),
            consumers: format!("{key}:consumers"),
            idempotency_prefix: format!("{key}:idem:"),
        }
    }
}

struct Shared {
    keys: KeyLayout,
    conn: ConnectionManager,
    options: RedisOptions,
    /// The last committed seq known to this instance.
    tx: Arc<watch::Sender<u64>>,
    /// Dropped with `Shared`, which tells the background tasks to stop.
    _stop: watch::Sender<()>,
}

/// An [`EventLog`] on a Redis stream, shareable by several processes. See
/// the [crate docs](crate).
#[derive(Clone)]
pub struct RedisLog {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for RedisLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisLog")
            .field("key", &self.shared.keys.stream)
            .field("last_seq", &*self.shared.tx.borrow())
            .finish()
    }
}

/// Runs `fut`, failing with `Unavailable` if it takes longer than `limit`.
async fn bounded<T>(
    limit: Duration,
    fut: impl Future<Output = Result<T, OpError>>,
) -> Result<T, OpError> {
    match tokio::time::timeout(limit, fut).await {
        Ok(r) => r,
        Err(_) => Err(OpError::timed_out(limit)),
    }
}

fn array(v: Value, what: &str) -> Result<Vec<Value>, OpError> {
    match v {
        Value::Array(items) => Ok(items),
        other => {
            Err(StorageError::decode(format!("{what}: expected an array, got {other:?}")).into())
        }
    }
}

/// Microseconds since the epoch, rounded up (so `stored >= result` exactly
/// when the stored, truncated time is at or after `t`).
fn micros_ceil(t: DateTime<Utc>) -> i64 {
    let us = t.timestamp_micros();
    if t.timestamp_subsec_nanos() % 1000 != 0 {
        us.saturating_add(1)
    } else {
        us
    }
}

impl RedisLog {
    /// Opens the log named by a store URL `redis://HOST:PORT[/DB][?key=NAME]`
    /// (also `rediss://`, `redis+unix://`, `unix://`). The key defaults to
    /// [`DEFAULT_KEY`]; other query parameters go to the Redis client.
    pub async fn connect(url: &str, options: RedisOptions) -> Result<RedisLog, ConnectError> {
        let (client_url, key) = parse_url(url)?;
        RedisLog::open(&client_url, &key, options).await
    }

    /// Opens the log stored under `key` on the Redis server at `client_url`
    /// (any URL the `redis` crate accepts). Fails if Redis cannot be reached
    /// within [`RedisOptions::timeout`] or the keys hold foreign values.
    pub async fn open(
        client_url: &str,
        key: &str,
        options: RedisOptions,
    ) -> Result<RedisLog, ConnectError> {
        options.validate()?;
        if key.is_empty() {
            return Err(ConnectError::InvalidOptions("the key is empty".to_owned()));
        }
        let client = redis::Client::open(client_url).map_err(|e| ConnectError::InvalidUrl {
            url: client_url.to_owned(),
            reason: e.to_string(),
        })?;
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(options.timeout))
            .set_response_timeout(Some(options.timeout))
            .set_max_delay(options.max_reconnect_delay);
        let limit = options.timeout;
        let unavailable = |e: redis::RedisError| {
            if error::is_unavailable(&e) {
                ConnectError::Unavailable(e.to_string())
            } else {
                ConnectError::Redis(e)
            }
        };
        let mut conn = tokio::time::timeout(
            limit,
            ConnectionManager::new_with_config(client.clone(), config),
        )
        .await
        .map_err(|_| ConnectError::Unavailable(format!("no connection within {limit:?}")))?
        .map_err(unavailable)?;
        let keys = KeyLayout::new(key);
        let last = tokio::time::timeout(limit, Self::check_keys(&mut conn, &keys))
            .await
            .map_err(|_| ConnectError::Unavailable(format!("no answer within {limit:?}")))??;

        let (tx, _) = watch::channel(last);
        let tx = Arc::new(tx);
        let (stop, stop_rx) = watch::channel(());
        let shared = Arc::new(Shared {
            keys,
            conn,
            options,
            tx: tx.clone(),
            _stop: stop,
        });
        tokio::spawn(tasks::follow(tasks::FollowerSetup {
            client,
            stream: shared.keys.stream.clone(),
            counter: shared.keys.counter.clone(),
            tx,
            last,
            block: shared.options.block,
            timeout: shared.options.timeout,
            max_delay: shared.options.max_reconnect_delay,
            stop: stop_rx.clone(),
        }));
        let r = &shared.options.retention;
        if let (Some(interval), true) = (
            shared.options.prune_interval,
            r.max_count.is_some() || r.max_age.is_some(),
        ) {
            tokio::spawn(tasks::prune_periodically(
                Arc::downgrade(&shared),
                interval,
                stop_rx,
            ));
        }
        tracing::debug!(key, last, "opened Redis event log");
        Ok(RedisLog { shared })
    }

    /// Checks the key types and returns the counter, recovering it from the
    /// stream's last generated id if the counter key alone was lost.
    async fn check_keys(
        conn: &mut ConnectionManager,
        keys: &KeyLayout,
    ) -> Result<u64, ConnectError> {
        let redis_err = |e: redis::RedisError| {
            if error::is_unavailable(&e) {
                ConnectError::Unavailable(e.to_string())
            } else {
                ConnectError::Redis(e)
            }
        };
        let bad = |reason: String| ConnectError::BadKeys {
            key: keys.stream.clone(),
            reason,
        };
        let (stream_type, counter_type, cursors_type, consumers_type): (
            String,
            String,
            String,
            String,
        ) = redis::pipe()
            .cmd("TYPE")
            .arg(&keys.stream)
            .cmd("TYPE")
            .arg(&keys.counter)
            .cmd("TYPE")
            .arg(&keys.cursors)
            .cmd("TYPE")
            .arg(&keys.consumers)
            .query_async(conn)
            .await
            .map_err(redis_err)?;
        if stream_type != "stream" && stream_type != "none" {
            return Err(bad(format!(
                "{} is a {stream_type}, not a stream",
                keys.stream
            )));
        }
        if counter_type != "string" && counter_type != "none" {
            return Err(bad(format!(
                "{} is a {counter_type}, not a string",
                keys.counter
            )));
        }
        if cursors_type != "hash" && cursors_type != "none" {
            return Err(bad(format!(
                "{} is a {cursors_type}, not a hash",
                keys.cursors
            )));
        }
        if consumers_type != "hash" && consumers_type != "none" {
            return Err(bad(format!(
                "{} is a {consumers_type}, not a hash",
                keys.consumers
            )));
        }
        let counter: Option<String> = redis::cmd("GET")
            .arg(&keys.counter)
            .query_async(conn)
            .await
            .map_err(redis_err)?;
        match counter {
            Some(c) => c
                .parse()
                .map_err(|_| bad(format!("{} holds {c:?}, not a seq", keys.counter))),
            None if stream_type == "stream" => {
                let info: Value = redis::cmd("XINFO")
                    .arg("STREAM")
                    .arg(&keys.stream)
                    .query_async(conn)
                    .await
                    .map_err(redis_err)?;
                let last = last_generated_seq(&info)
                    .ok_or_else(|| bad("cannot read the stream's last generated id".to_owned()))?;
                tracing::warn!(
                    key = keys.stream,
                    last,
                    "the seq counter is missing but the stream exists; restoring it from the stream"
                );
                let _: Value = redis::cmd("SET")
                    .arg(&keys.counter)
                    .arg(last)
                    .arg("NX")
                    .query_async(conn)
                    .await
                    .map_err(redis_err)?;
                let now: Option<u64> = redis::cmd("GET")
                    .arg(&keys.counter)
                    .query_async(conn)
                    .await
                    .map_err(redis_err)?;
                Ok(now.unwrap_or(last))
            }
            None => Ok(0),
        }
    }

    /// The names of the Redis keys this log uses.
    pub fn keys(&self) -> &KeyLayout {
        &self.shared.keys
    }

    /// The last committed seq this instance knows of (what
    /// [`EventLog::watch`] holds).
    pub fn last_seq(&self) -> u64 {
        *self.shared.tx.borrow()
    }

    /// Deletes every key of this log (the stream, the counter, the cursors,
    /// the consumer definitions and the idempotency keys, found with
    /// `SCAN`). Meant for tests and
    /// administration. Every instance that was open on the key, this one
    /// included, then refuses appends with [`StorageError::LostWrites`]
    /// (it saw seqs the counter no longer covers); a log opened afterwards
    /// starts again from seq 1.
    pub async fn destroy(&self) -> Result<u64, StorageError> {
        let sh = &self.shared;
        let mut conn = sh.conn.clone();
        let pattern = format!("{}*", glob_escape(&sh.keys.idempotency_prefix));
        let mut removed: u64 = 0;
        let mut cursor: u64 = 0;
        loop {
            let (next, found): (u64, Vec<String>) = redis::cmd("SCAN")
                .arg(cursor)
                .arg("MATCH")
                .arg(&pattern)
                .arg("COUNT")
                .arg(1000)
                .query_async(&mut conn)
                .await
                .map_err(StorageError::Redis)?;
            if !found.is_empty() {
                let n: u64 = redis::cmd("DEL")
                    .arg(&found)
                    .query_async(&mut conn)
                    .await
                    .map_err(StorageError::Redis)?;
                removed += n;
            }
            if next == 0 {
                break;
            }
            cursor = next;
        }
        let n: u64 = redis::cmd("DEL")
            .arg(&sh.keys.stream)
            .arg(&sh.keys.counter)
            .arg(&sh.keys.cursors)
            .arg(&sh.keys.consumers)
            .query_async(&mut conn)
            .await
            .map_err(StorageError::Redis)?;
        Ok(removed + n)
    }
}

/// Escapes the glob characters of `SCAN MATCH`.
fn glob_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if matches!(c, '*' | '?' | '[' | ']' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// The seq of `last-generated-id` in an `XINFO STREAM` reply.
fn last_generated_seq(info: &Value) -> Option<u64> {
    let find = |k: &Value, v: &Value| -> Option<u64> {
        (text(k).ok()? == "last-generated-id")
            .then(|| parse_id(text(v).ok()?.as_bytes()).ok())
            .flatten()
    };
    match info {
        Value::Array(items) => items.chunks(2).find_map(|kv| match kv {
            [k, v] => find(k, v),
            _ => None,
        }),
        Value::Map(pairs) => pairs.iter().find_map(|(k, v)| find(k, v)),
        _ => None,
    }
}

/// What the append script answered.
enum AppendOutcome {
    /// The counter is below the floor the caller sent.
    Regressed {
        counter: u64,
    },
    Conflict {
        expected: u64,
        actual: u64,
    },
    Done {
        last: u64,
        committed: Vec<Committed>,
    },
}

/// Decodes the append script's reply (see [`scripts::APPEND`]).
fn decode_append(
    reply: Value,
    encoded: Vec<codec::Encoded>,
    expected_last: Option<u64>,
) -> Result<AppendOutcome, StorageError> {
    let n = encoded.len();
    let Value::Array(items) = reply else {
        return Err(StorageError::decode(format!(
            "append reply: expected an array, got {reply:?}"
        )));
    };
    let (Some(status), Some(last)) = (items.first(), items.get(1)) else {
        return Err(StorageError::decode("short append reply"));
    };
    let last = seq_of(last)?;
    let status = int(status)?;
    if status == 2 {
        return Ok(AppendOutcome::Regressed { counter: last });
    }
    if status == 0 {
        return Ok(AppendOutcome::Conflict {
            expected: expected_last.unwrap_or_default(),
            actual: last,
        });
    }
    if items.len() != n + 2 {
        return Err(StorageError::decode(format!(
            "append reply has {} results for {n} events",
            items.len().saturating_sub(2)
        )));
    }
    let mut out: Vec<Committed> = Vec::with_capacity(n);
    for (e, fate) in encoded.into_iter().zip(&items[2..]) {
        let committed = match fate {
            Value::Int(s) if *s > 0 => Committed {
                event: Arc::new(e.event.commit(*s as u64)),
                duplicate: false,
            },
            Value::Int(s) => {
                let want = s.unsigned_abs();
                let orig: SharedEvent = out
                    .iter()
                    .find(|c| !c.duplicate && c.event.seq == want)
                    .map(|c| c.event.clone())
                    .ok_or_else(|| {
                        StorageError::decode(format!(
                            "duplicate of seq {want}, which is not in the batch"
                        ))
                    })?;
                Committed {
                    event: orig,
                    duplicate: true,
                }
            }
            other => Committed {
                event: Arc::new(decode_stored(text(other)?)?),
                duplicate: true,
            },
        };
        out.push(committed);
    }
    Ok(AppendOutcome::Done {
        last,
        committed: out,
    })
}

impl Shared {
    fn publish(&self, last: u64) {
        self.tx.send_if_modified(|v| {
            if last > *v {
                *v = last;
                true
            } else {
                false
            }
        });
    }

    async fn append(
        self: Arc<Self>,
        batch: Vec<NewEvent>,
        expected_last: Option<u64>,
    ) -> Result<Vec<Committed>, AppendError> {
        let n = batch.len();
        let encoded = batch
            .into_iter()
            .map(codec::encode)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| AppendError::Storage(Box::new(e)))?;
        let window_ms = self.options.idempotency_window.as_millis();
        let mut inv = scripts::APPEND.prepare_invoke();
        inv.key(&self.keys.stream).key(&self.keys.counter);
        // Idempotency key -> its index in KEYS (1-based; 1 and 2 are taken).
        let mut key_index: HashMap<&str, usize> = HashMap::new();
        let mut kidx = Vec::with_capacity(n);
        for e in &encoded {
            let idx = match (&e.event.key, window_ms > 0) {
                (Some(k), true) => {
                    let next = key_index.len() + 3;
                    *key_index.entry(k.as_str()).or_insert_with(|| {
                        inv.key(format!("{}{k}", self.keys.idempotency_prefix));
                        next
                    })
                }
                _ => 0,
            };
            kidx.push(idx);
        }
        inv.arg(expected_last.map(|e| e.to_string()).unwrap_or_default())
            .arg(window_ms.max(1).to_string())
            .arg(
                self.options
                    .retention
                    .max_count
                    .map(|m| m.to_string())
                    .unwrap_or_default(),
            )
            .arg(n);
        // Every seq up to the floor was seen committed by this instance; a
        // counter below it means Redis lost them (see `LostWrites`).
        let floor = *self.tx.borrow();
        inv.arg(floor);
        for (e, idx) in encoded.iter().zip(&kidx) {
            inv.arg(*idx).arg(e.fields.len()).arg(&e.fields);
        }
        let mut conn = self.conn.clone();
        let reply = bounded(self.options.timeout, async {
            inv.invoke_async::<Value>(&mut conn)
                .await
                .map_err(OpError::from)
        })
        .await;
        let reply = match reply {
            Ok(r) => r,
            Err(e) => {
                if let OpError::Unavailable(m) = &e {
                    tracing::warn!(key = self.keys.stream, error = %m, "append failed: Redis unavailable");
                }
                return Err(e.into());
            }
        };
        let (last, out) = match decode_append(reply, encoded, expected_last) {
            Ok(AppendOutcome::Done { last, committed }) => (last, committed),
            Ok(AppendOutcome::Conflict { expected, actual }) => {
                return Err(AppendError::Conflict { expected, actual })
            }
            Ok(AppendOutcome::Regressed { counter }) => {
                tracing::error!(
                    key = self.keys.stream,
                    counter,
                    floor,
                    "Redis lost acknowledged events; appends refused"
                );
                return Err(AppendError::Storage(Box::new(StorageError::LostWrites {
                    counter,
                    seen: floor,
                })));
            }
            Err(e) => return Err(AppendError::Storage(Box::new(e))),
        };
        self.publish(last);
        tracing::trace!(key = self.keys.stream, last, n, "appended");
        Ok(out)
    }

    async fn read(self: Arc<Self>, after: u64, limit: usize) -> Result<Page, OpError> {
        let mut conn = self.conn.clone();
        let limit = limit.min(i64::MAX as usize);
        let reply: Value = bounded(self.options.timeout, async {
            Ok(scripts::READ
                .key(&self.keys.stream)
                .key(&self.keys.counter)
                .arg(after)
                .arg(limit)
                .invoke_async(&mut conn)
                .await?)
        })
        .await?;
        let mut items = array(reply, "read reply")?.into_iter();
        let (Some(last), Some(entries)) = (items.next(), items.next()) else {
            return Err(StorageError::decode("short read reply").into());
        };
        let last_seq = seq_of(&last)?;
        let entries = array(entries, "read entries")?;
        let events = entries
            .iter()
            .map(|e| decode_entry(e).map(Arc::new))
            .collect::<Result<Vec<_>, _>>()?;
        self.publish(last_seq);
        Ok(Page { events, last_seq })
    }

    async fn bounds(self: Arc<Self>) -> Result<Bounds, OpError> {
        let mut conn = self.conn.clone();
        let reply: Value = bounded(self.options.timeout, async {
            Ok(scripts::BOUNDS
                .key(&self.keys.stream)
                .key(&self.keys.counter)
                .invoke_async(&mut conn)
                .await?)
        })
        .await?;
        let items = array(reply, "bounds reply")?;
        let last = items
            .first()
            .map(seq_of)
            .transpose()?
            .ok_or_else(|| StorageError::decode("empty bounds reply"))?;
        let first = match items.get(1) {
            Some(id) => parse_id(text(id)?.as_bytes())?,
            None => last + 1,
        };
        self.publish(last);
        Ok(Bounds { first, last })
    }

    async fn seq_before(self: Arc<Self>, time: DateTime<Utc>) -> Result<u64, OpError> {
        let t = micros_ceil(time);
        let mut start = String::new();
        loop {
            let mut conn = self.conn.clone();
            let reply: Value = bounded(self.options.timeout, async {
                Ok(scripts::SEQ_BEFORE_STEP
                    .key(&self.keys.stream)
                    .key(&self.keys.counter)
                    .arg(t)
                    .arg(&start)
                    .arg(SEQ_BEFORE_STEP)
                    .invoke_async(&mut conn)
                    .await?)
            })
            .await?;
            let items = array(reply, "seq_before reply")?;
            let [status, value] = items.as_slice() else {
                return Err(StorageError::decode("seq_before reply is not a pair").into());
            };
            match int(status)? {
                1 => return Ok(parse_id(text(value)?.as_bytes())?.saturating_sub(1)),
                2 => return Ok(seq_of(value)?),
                _ => start = parse_id(text(value)?.as_bytes())?.to_string(),
            }
        }
    }

    async fn cursor(self: Arc<Self>, consumer: String) -> Result<Option<u64>, CursorError> {
        validate_consumer_name(&consumer)?;
        let mut conn = self.conn.clone();
        let v: Option<String> = bounded(self.options.timeout, async {
            Ok(redis::cmd("HGET")
                .arg(&self.keys.cursors)
                .arg(&consumer)
                .query_async(&mut conn)
                .await?)
        })
        .await?;
        match v {
            None => Ok(None),
            Some(s) => s.parse().map(Some).map_err(|_| {
                CursorError::Storage(Box::new(StorageError::decode(format!(
                    "cursor {consumer:?} holds {s:?}, not a seq"
                ))))
            }),
        }
    }

    async fn commit_cursor(self: Arc<Self>, consumer: String, seq: u64) -> Result<(), CursorError> {
        validate_consumer_name(&consumer)?;
        let mut conn = self.conn.clone();
        let reply: Value = bounded(self.options.timeout, async {
            Ok(scripts::COMMIT_CURSOR
                .key(&self.keys.cursors)
                .key(&self.keys.counter)
                .arg(&consumer)
                .arg(seq)
                .invoke_async(&mut conn)
                .await?)
        })
        .await?;
        let items = array(reply, "commit_cursor reply")?;
        match items.as_slice() {
            [ok] if int(ok).map_err(OpError::from)? == 1 => Ok(()),
            [_, last] => Err(CursorError::BeyondEnd {
                name: consumer,
                seq,
                last: seq_of(last).map_err(OpError::from)?,
            }),
            _ => Err(OpError::from(StorageError::decode("bad commit_cursor reply")).into()),
        }
    }

    async fn define_consumer(
        self: Arc<Self>,
        name: String,
        spec: String,
    ) -> Result<String, CursorError> {
        validate_consumer_name(&name)?;
        let mut conn = self.conn.clone();
        let stored: String = bounded(self.options.timeout, async {
            Ok(scripts::DEFINE_CONSUMER
                .key(&self.keys.consumers)
                .arg(&name)
                .arg(&spec)
                .invoke_async(&mut conn)
                .await?)
        })
        .await?;
        Ok(stored)
    }

    async fn consumers(self: Arc<Self>) -> Result<Vec<ConsumerRecord>, CursorError> {
        let mut conn = self.conn.clone();
        let (specs, cursors): (HashMap<String, String>, HashMap<String, String>) =
            bounded(self.options.timeout, async {
                Ok(scripts::CONSUMERS
                    .key(&self.keys.consumers)
                    .key(&self.keys.cursors)
                    .invoke_async(&mut conn)
                    .await?)
            })
            .await?;
        let mut names: Vec<&String> = specs.keys().chain(cursors.keys()).collect();
        names.sort();
        names.dedup();
        names
            .into_iter()
            .map(|name| {
                let cursor = match cursors.get(name) {
                    None => None,
                    Some(s) => Some(s.parse().map_err(|_| {
                        CursorError::Storage(Box::new(StorageError::decode(format!(
                            "cursor {name:?} holds {s:?}, not a seq"
                        ))))
                    })?),
                };
                Ok(ConsumerRecord {
                    name: name.clone(),
                    spec: specs.get(name).cloned().unwrap_or_default(),
                    cursor,
                })
            })
            .collect()
    }

    async fn delete_consumer(self: Arc<Self>, name: String) -> Result<bool, CursorError> {
        validate_consumer_name(&name)?;
        let mut conn = self.conn.clone();
        let removed: u64 = bounded(self.options.timeout, async {
            Ok(scripts::DELETE_CONSUMER
                .key(&self.keys.consumers)
                .key(&self.keys.cursors)
                .arg(&name)
                .invoke_async(&mut conn)
                .await?)
        })
        .await?;
        Ok(removed > 0)
    }

    async fn prune(self: Arc<Self>) -> Result<u64, OpError> {
        let retention = self.options.retention;
        let mut removed = 0u64;
        if let Some(max) = retention.max_count {
            let mut conn = self.conn.clone();
            let n: u64 = bounded(self.options.timeout, async {
                Ok(redis::cmd("XTRIM")
                    .arg(&self.keys.stream)
                    .arg("MAXLEN")
                    .arg("=")
                    .arg(max)
                    .query_async(&mut conn)
                    .await?)
            })
            .await?;
            removed += n;
        }
        if let Some(age) = retention.max_age {
            // Exact in Lua's doubles (2^53 µs is about 285 years).
            let age_us = u64::try_from(age.as_micros())
                .unwrap_or(u64::MAX)
                .min(1 << 53);
            loop {
                let mut conn = self.conn.clone();
                let reply: Value = bounded(self.options.timeout, async {
                    Ok(scripts::PRUNE_AGE_STEP
                        .key(&self.keys.stream)
                        .arg(age_us)
                        .arg(PRUNE_AGE_STEP)
                        .invoke_async(&mut conn)
                        .await?)
                })
                .await?;
                let items = array(reply, "prune reply")?;
                let [n, more] = items.as_slice() else {
                    return Err(StorageError::decode("prune reply is not a pair").into());
                };
                removed += seq_of(n)?;
                if int(more)? == 0 {
                    break;
                }
            }
        }
        if removed > 0 {
            tracing::debug!(key = self.keys.stream, removed, "pruned");
        }
        Ok(removed)
    }
}

impl EventLog for RedisLog {
    fn append(&self, batch: Vec<NewEvent>, expected_last: Option<u64>) -> AppendFuture {
        if batch.is_empty() {
            return AppendFuture::ready(Err(AppendError::EmptyBatch));
        }
        let shared = self.shared.clone();
        AppendFuture::Pending(Box::pin(shared.append(batch, expected_last)))
    }

    fn read(&self, after: u64, limit: usize) -> BoxFuture<Result<Page, ReadError>> {
        let shared = self.shared.clone();
        Box::pin(async move { Ok(shared.read(after, limit).await?) })
    }

    fn bounds(&self) -> BoxFuture<Result<Bounds, ReadError>> {
        let shared = self.shared.clone();
        Box::pin(async move { Ok(shared.bounds().await?) })
    }

    fn seq_before(&self, time: DateTime<Utc>) -> BoxFuture<Result<u64, ReadError>> {
        let shared = self.shared.clone();
        Box::pin(async move { Ok(shared.seq_before(time).await?) })
    }

    fn watch(&self) -> watch::Receiver<u64> {
        self.shared.tx.subscribe()
    }

    fn cursor(&self, consumer: &str) -> BoxFuture<Result<Option<u64>, CursorError>> {
        Box::pin(self.shared.clone().cursor(consumer.to_owned()))
    }

    fn commit_cursor(&self, consumer: &str, seq: u64) -> BoxFuture<Result<(), CursorError>> {
        Box::pin(self.shared.clone().commit_cursor(consumer.to_owned(), seq))
    }

    fn define_consumer(&self, name: &str, spec: &str) -> BoxFuture<Result<String, CursorError>> {
        Box::pin(
            self.shared
                .clone()
                .define_consumer(name.to_owned(), spec.to_owned()),
        )
    }

    fn consumers(&self) -> BoxFuture<Result<Vec<ConsumerRecord>, CursorError>> {
        Box::pin(self.shared.clone().consumers())
    }

    fn delete_consumer(&self, name: &str) -> BoxFuture<Result<bool, CursorError>> {
        Box::pin(self.shared.clone().delete_consumer(name.to_owned()))
    }

    fn prune(&self) -> BoxFuture<Result<u64, PruneError>> {
        let shared = self.shared.clone();
        Box::pin(async move { Ok(shared.prune().await?) })
    }
    /// Several servers append to the same stream: a bus over this log
    /// follows it to deliver their events too.
    fn shared(&self) -> bool {
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_layout() {
        let k = KeyLayout::new("{orders}");
        assert_eq!(k.stream, "{orders}");
        assert_eq!(k.counter, "{orders}:seq");
        assert_eq!(k.cursors, "{orders}:cursors");
        assert_eq!(k.consumers, "{orders}:consumers");
        assert_eq!(k.idempotency_prefix, "{orders}:idem:");
    }

    #[test]
    fn glob_is_escaped() {
        assert_eq!(glob_escape("a*b?[c]\\"), "a\\*b\\?\\[c\\]\\\\");
    }

    #[test]
    fn micros_round_up() {
        let t = DateTime::from_timestamp(10, 1_500).unwrap();
        assert_eq!(micros_ceil(t), 10_000_002);
        let t = DateTime::from_timestamp(10, 2_000).unwrap();
        assert_eq!(micros_ceil(t), 10_000_002);
    }

    #[test]
    fn last_generated_id_is_found() {
        let info = Value::Array(vec![
            Value::BulkString(b"length".to_vec()),
            Value::Int(3),
            Value::BulkString(b"last-generated-id".to_vec()),
            Value::BulkString(b"41-0".to_vec()),
        ]);
        assert_eq!(last_generated_seq(&info), Some(41));
    }
}
