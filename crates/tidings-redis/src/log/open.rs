//! Opening a [`RedisLog`]: connecting, checking the keys, reading the
//! counter and starting the background tasks; and `destroy`.
//!
//! # Contract
//!
//! * Opening fails (`BadKeys`) when one of the log's keys holds a value of
//!   the wrong type, and (`Unavailable`) when Redis does not answer within
//!   [`RedisOptions::timeout`](crate::RedisOptions::timeout); it never
//!   writes, except to restore a lost counter.
//! * A counter lost while the stream exists is restored from the stream's
//!   last generated id with `SET NX` (so of several processes restoring it
//!   at once, one value wins and every one reads it back): seqs are never
//!   reused.
//! * `watch` starts at the counter; the follower follows from there, and
//!   the pruner runs only when retention is set and a prune interval is.

use std::sync::Arc;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::Value;
use tidings_core::log::GroupCommit;
use tokio::sync::watch;

use super::append;
use super::follower::{self, FollowerSetup};
use super::prune::prune_periodically;
use super::{KeyLayout, RedisLog, Shared};
use crate::codec::{parse_id, text};
use crate::error::{self, ConnectError, StorageError};
use crate::options::{parse_url, RedisOptions};

/// `Unavailable` for an outage, else the Redis error as it is.
fn connect_err(e: redis::RedisError) -> ConnectError {
    if error::is_unavailable(&e) {
        ConnectError::Unavailable(e.to_string())
    } else {
        ConnectError::Redis(e)
    }
}

/// The client for `client_url` and a connection manager over it, within
/// the timeout.
async fn connect_manager(
    client_url: &str,
    options: &RedisOptions,
) -> Result<(redis::Client, ConnectionManager), ConnectError> {
    let client = redis::Client::open(client_url).map_err(|e| ConnectError::InvalidUrl {
        url: client_url.to_owned(),
        reason: e.to_string(),
    })?;
    let config = ConnectionManagerConfig::new()
        .set_connection_timeout(Some(options.timeout))
        .set_response_timeout(Some(options.timeout))
        .set_max_delay(options.max_reconnect_delay);
    let limit = options.timeout;
    let conn = tokio::time::timeout(
        limit,
        ConnectionManager::new_with_config(client.clone(), config),
    )
    .await
    .map_err(|_| ConnectError::Unavailable(format!("no connection within {limit:?}")))?
    .map_err(connect_err)?;
    Ok((client, conn))
}

/// Checks the key types and returns the counter, recovering it from the
/// stream's last generated id if the counter key alone was lost.
async fn check_keys(conn: &mut ConnectionManager, keys: &KeyLayout) -> Result<u64, ConnectError> {
    let stream_exists = check_types(conn, keys).await?;
    let counter: Option<String> = redis::cmd("GET")
        .arg(&keys.counter)
        .query_async(conn)
        .await
        .map_err(connect_err)?;
    match counter {
        Some(c) => c
            .parse()
            .map_err(|_| bad_keys(keys, format!("{} holds {c:?}, not a seq", keys.counter))),
        None if stream_exists => restore_counter(conn, keys).await,
        None => Ok(0),
    }
}

/// Checks that each key of the layout is missing or of its type; returns
/// whether the stream exists.
async fn check_types(conn: &mut ConnectionManager, keys: &KeyLayout) -> Result<bool, ConnectError> {
    let (stream_type, counter_type, first_type, cursors_type, consumers_type): (
        String,
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
        .arg(&keys.first)
        .cmd("TYPE")
        .arg(&keys.cursors)
        .cmd("TYPE")
        .arg(&keys.consumers)
        .query_async(conn)
        .await
        .map_err(connect_err)?;
    let expected = [
        (&keys.stream, stream_type.as_str(), "stream"),
        (&keys.counter, counter_type.as_str(), "string"),
        (&keys.first, first_type.as_str(), "string"),
        (&keys.cursors, cursors_type.as_str(), "hash"),
        (&keys.consumers, consumers_type.as_str(), "hash"),
    ];
    for (key, found, want) in expected {
        if found != want && found != "none" {
            return Err(bad_keys(keys, format!("{key} is a {found}, not a {want}")));
        }
    }
    Ok(stream_type == "stream")
}

fn bad_keys(keys: &KeyLayout, reason: String) -> ConnectError {
    ConnectError::BadKeys {
        key: keys.stream.clone(),
        reason,
    }
}

/// Restores the lost counter from the stream's last generated id (`SET NX`,
/// so concurrent restorers agree) and returns the counter as stored.
async fn restore_counter(
    conn: &mut ConnectionManager,
    keys: &KeyLayout,
) -> Result<u64, ConnectError> {
    let info: Value = redis::cmd("XINFO")
        .arg("STREAM")
        .arg(&keys.stream)
        .query_async(conn)
        .await
        .map_err(connect_err)?;
    let last = last_generated_seq(&info).ok_or_else(|| {
        bad_keys(
            keys,
            "cannot read the stream's last generated id".to_owned(),
        )
    })?;
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
        .map_err(connect_err)?;
    let now: Option<u64> = redis::cmd("GET")
        .arg(&keys.counter)
        .query_async(conn)
        .await
        .map_err(connect_err)?;
    Ok(now.unwrap_or(last))
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

/// Starts the follower and, when retention and a prune interval are set,
/// the pruner. Both stop when `shared` is dropped (`stop` then errs).
fn spawn_tasks(
    shared: &Arc<Shared>,
    client: redis::Client,
    tx: Arc<watch::Sender<u64>>,
    last: u64,
    stop: watch::Receiver<()>,
) {
    tokio::spawn(follower::follow(FollowerSetup {
        client,
        stream: shared.keys.stream.clone(),
        counter: shared.keys.counter.clone(),
        tx,
        last,
        block: shared.options.block,
        timeout: shared.options.timeout,
        max_delay: shared.options.max_reconnect_delay,
        stop: stop.clone(),
        counters: shared.counters.clone(),
    }));
    let r = &shared.options.log.retention;
    if let (Some(interval), true) = (
        shared.options.log.prune_interval,
        r.max_count.is_some() || r.max_age.is_some(),
    ) {
        tokio::spawn(prune_periodically(Arc::downgrade(shared), interval, stop));
    }
}

impl RedisLog {
    /// Opens the log named by a store URL `redis://HOST:PORT[/DB][?key=NAME]`
    /// (also `rediss://`, `redis+unix://`, `unix://`). The key defaults to
    /// [`DEFAULT_KEY`](crate::DEFAULT_KEY); other query parameters go to the
    /// Redis client.
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
        let (client, mut conn) = connect_manager(client_url, &options).await?;
        let limit = options.timeout;
        let keys = KeyLayout::new(key);
        let last = tokio::time::timeout(limit, check_keys(&mut conn, &keys))
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
            stop,
            closed: std::sync::atomic::AtomicBool::new(false),
            group: GroupCommit::new(append::MAX_IN_FLIGHT, append::MAX_GROUP_EVENTS),
            counters: Default::default(),
        });
        spawn_tasks(&shared, client, tx, last, stop_rx);
        tracing::debug!(key, last, "opened Redis event log");
        Ok(RedisLog { shared })
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
            .arg(&sh.keys.first)
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn glob_is_escaped() {
        assert_eq!(glob_escape("a*b?[c]\\"), "a\\*b\\?\\[c\\]\\\\");
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
