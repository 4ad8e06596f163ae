//! [`RedisLog`]: the [`EventLog`] over one Redis stream (see the crate docs
//! for the design).
//!
//! This module is the facade: the key layout, the handle, the state its
//! clones share, and the [`EventLog`] impl, which only delegates. The work
//! lives in:
//!
//! * [`open`]: connecting, checking the keys, starting the tasks; `destroy`;
//! * [`append`]: appends, group-committed through the append script;
//! * [`follower`]: the task keeping `watch` current with every process's
//!   appends;
//! * [`read`]: `read`, `bounds`, `seq_before`;
//! * [`prune`]: retention, on demand and periodically;
//! * [`consumers`]: durable consumers' cursors and definitions.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;
use tidings_core::log::LogFailure;

use chrono::{DateTime, Utc};
use redis::aio::ConnectionManager;
use redis::Value;
use tidings_core::log::{
    delegate, AppendError, AppendFuture, Bounds, BoxFuture, ConsumerRecord, CursorError, Page,
    PruneError, ReadError,
};
use tidings_core::{EventLog, NewEvent};
use tokio::sync::watch;

use crate::error::{OpError, StorageError};
use crate::options::RedisOptions;
use crate::stats::{Counters, RedisStats};

mod append;
mod consumers;
mod follower;
mod open;
mod prune;
mod read;

/// The names of the Redis keys a log with key `K` uses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyLayout {
    /// `K`: the stream of events.
    pub stream: String,
    /// `K:seq`: the last seq ever assigned.
    pub counter: String,
    /// `K:first`: the first seq count retention keeps (readers hide the
    /// older events of an entry straddling it).
    pub first: String,
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
            first: format!("{key}:first"),
            cursors: format!("{key}:cursors"),
            consumers: format!("{key}:consumers"),
            idempotency_prefix: format!("{key}:idem:"),
        }
    }
}

/// What the handles share (the follower holds only `tx`; the pruner a
/// weak reference).
struct Shared {
    keys: KeyLayout,
    /// The connection for every command but the follower's blocking
    /// `XREAD`; it reconnects on its own with backoff.
    conn: ConnectionManager,
    /// Validated at open.
    options: RedisOptions,
    /// The last committed seq known to this instance. Only rises
    /// (`publish`); the append script refuses to write when Redis' counter
    /// is below it (`LostWrites`).
    tx: Arc<watch::Sender<u64>>,
    /// Sent to by [`EventLog::close`], or dropped with `Shared`: either
    /// tells the background tasks to stop.
    stop: watch::Sender<()>,
    /// Set once by [`EventLog::close`]; every operation checks it first.
    closed: std::sync::atomic::AtomicBool,
    /// Who writes which appends, when (see [`append`]).
    group: tidings_core::log::GroupCommit<Shared>,
    /// What `RedisLog::stats` reports (the follower holds a clone); see
    /// `stats.rs` for who bumps what.
    counters: Arc<Counters>,
}

/// An [`EventLog`] on a Redis stream, shareable by several processes. See
/// the [crate docs](crate).
#[derive(Clone)]
pub struct RedisLog {
    /// The only strong references: dropping the last clone drops `Shared`
    /// and so stops the background tasks.
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

/// The items of an array reply.
fn array(v: Value, what: &str) -> Result<Vec<Value>, OpError> {
    match v {
        Value::Array(items) => Ok(items),
        other => {
            Err(StorageError::decode(format!("{what}: expected an array, got {other:?}")).into())
        }
    }
}

impl RedisLog {
    /// The names of the Redis keys this log uses.
    pub fn keys(&self) -> &KeyLayout {
        &self.shared.keys
    }

    /// The last committed seq this instance knows of (what
    /// [`EventLog::watch`] holds).
    pub fn last_seq(&self) -> u64 {
        *self.shared.tx.borrow()
    }

    /// This log's counters since it was opened (see [`RedisStats`]).
    pub fn stats(&self) -> RedisStats {
        self.shared.counters.snapshot()
    }
}

impl Shared {
    /// Raises the last committed seq this instance knows of (never lowers
    /// it).
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
}

impl RedisLog {
    fn is_closed(&self) -> bool {
        self.shared
            .closed
            .load(std::sync::atomic::Ordering::Acquire)
    }
}

impl EventLog for RedisLog {
    fn append(&self, batch: Vec<NewEvent>, expected_last: Option<u64>) -> AppendFuture {
        if self.is_closed() {
            return AppendFuture::ready(Err(AppendError::Failed(LogFailure::Closed)));
        }
        if batch.is_empty() {
            return AppendFuture::ready(Err(AppendError::EmptyBatch));
        }
        let shared = self.shared.clone();
        AppendFuture::Pending(Box::pin(shared.append(batch, expected_last)))
    }

    fn read(&self, after: u64, limit: usize) -> BoxFuture<Result<Page, ReadError>> {
        delegate(self.is_closed(), &self.shared, move |shared| async move {
            Ok(shared.read(after, limit).await?)
        })
    }

    fn bounds(&self) -> BoxFuture<Result<Bounds, ReadError>> {
        delegate(self.is_closed(), &self.shared, move |shared| async move {
            Ok(shared.bounds().await?)
        })
    }

    fn seq_before(&self, time: DateTime<Utc>) -> BoxFuture<Result<u64, ReadError>> {
        delegate(self.is_closed(), &self.shared, move |shared| async move {
            Ok(shared.seq_before(time).await?)
        })
    }

    fn watch(&self) -> watch::Receiver<u64> {
        self.shared.tx.subscribe()
    }

    fn cursor(&self, consumer: &str) -> BoxFuture<Result<Option<u64>, CursorError>> {
        delegate(self.is_closed(), &self.shared, move |shared| {
            shared.cursor(consumer.to_owned())
        })
    }

    fn commit_cursor(&self, consumer: &str, seq: u64) -> BoxFuture<Result<(), CursorError>> {
        delegate(self.is_closed(), &self.shared, move |shared| {
            shared.commit_cursor(consumer.to_owned(), seq)
        })
    }

    fn define_consumer(&self, name: &str, spec: &str) -> BoxFuture<Result<String, CursorError>> {
        delegate(self.is_closed(), &self.shared, move |shared| {
            shared.define_consumer(name.to_owned(), spec.to_owned())
        })
    }

    fn consumers(&self) -> BoxFuture<Result<Vec<ConsumerRecord>, CursorError>> {
        delegate(self.is_closed(), &self.shared, move |shared| {
            shared.consumers()
        })
    }

    fn delete_consumer(&self, name: &str) -> BoxFuture<Result<bool, CursorError>> {
        delegate(self.is_closed(), &self.shared, move |shared| {
            shared.delete_consumer(name.to_owned())
        })
    }

    /// Refuses every later call on any clone and stops the follower and
    /// the pruner. Every append acknowledged before was written by Redis
    /// (its own persistence settings decide the rest): nothing to flush.
    fn close(&self) -> BoxFuture<Result<(), tidings_core::CloseError>> {
        self.shared
            .closed
            .store(true, std::sync::atomic::Ordering::Release);
        let _ = self.shared.stop.send(());
        Box::pin(std::future::ready(Ok(())))
    }

    fn prune(&self) -> BoxFuture<Result<u64, PruneError>> {
        delegate(self.is_closed(), &self.shared, move |shared| async move {
            Ok(shared.prune().await?)
        })
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
}
