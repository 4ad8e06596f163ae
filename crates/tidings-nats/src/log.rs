//! [`NatsLog`]: the [`EventLog`] over one JetStream stream.
//!
//! This module is the facade: the handle, the state its tasks share, and
//! the [`EventLog`] impl, which only delegates. The work lives in:
//!
//! * [`open`]: connecting, creating or updating the streams, catching up
//!   and starting the background tasks; `destroy`;
//! * [`writer`]: writing records (group commit, idempotency keys,
//!   the expected-last-seq guard, retries after a lost race);
//! * [`follower`]: the task applying every record of the stream, in order,
//!   to the in-memory [`state`] and the `watch` channel;
//! * [`read`]: `read`, `bounds`, `seq_before` and the lookups they share;
//! * [`prune`]: retention, on demand and periodically;
//! * [`consumers`]: durable consumers' cursors and definitions.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;
use tidings_core::log::LogFailure;

use async_nats::jetstream::{self, stream};
use chrono::{DateTime, Utc};
use parking_lot::Mutex;
use tidings_core::log::{
    delegate, AppendError, AppendFuture, Bounds, BoxFuture, ConsumerRecord, CursorError, EventLog,
    GroupCommit, Page, PruneError, ReadError,
};
use tidings_core::NewEvent;
use tokio::sync::{oneshot, watch};
use tokio::task::AbortHandle;
use tokio::time::Instant;

use crate::error::EngineError;
use crate::options::NatsOptions;
use crate::stats::{Counters, NatsStats};

mod consumers;
mod follower;
mod open;
mod prune;
mod read;
mod state;
mod writer;

use state::State;
use writer::Request;

/// What the handles and the background tasks share.
struct Inner {
    /// The connection; it reconnects on its own, forever.
    client: async_nats::Client,
    /// JetStream over `client`, with `opts.request_timeout` set.
    js: jetstream::Context,
    /// The event stream `stream_name`; its only subject is `subject`.
    stream: stream::Stream,
    /// A valid stream name (`validate_stream_name`).
    stream_name: String,
    /// `<stream_name>.events`: every record is published here.
    subject: String,
    /// Stream `<name>_cursors`, one subject per consumer cursor and one per
    /// consumer definition, last value kept (see `consumers.rs`).
    cursors: stream::Stream,
    /// `<stream_name>_cursors.`: the prefix of every subject of `cursors`.
    cursor_prefix: String,
    opts: NatsOptions,
    /// The in-memory view of the stream (tail, cache, idempotency keys);
    /// see [`state`] for its invariants. Never held across an await.
    state: Mutex<State>,
    /// Last committed Tidings seq (the `EventLog::watch` channel). Only
    /// rises (`raise_watch`).
    watch_tx: watch::Sender<u64>,
    /// Stream seq up to which the follower has applied every record (only
    /// rises; `wait_seen` waits on it).
    seen_tx: watch::Sender<u64>,
    /// Asks the follower to recreate its consumer (it looked stuck).
    restart_follower: tokio::sync::Notify,
    /// Who writes which appends, when: one record at a time (each is
    /// guarded by the one before), see [`writer`].
    group: GroupCommit<Inner>,
    /// What `NatsLog::stats` reports; see `stats.rs` for who bumps what.
    counters: Counters,
}

/// Stops the background tasks when the last handle is dropped.
struct Guard {
    /// The follower and (with retention by age) the pruner.
    tasks: Vec<AbortHandle>,
    /// Set once by [`EventLog::close`] (which then aborts `tasks`); every
    /// operation checks it first.
    closed: std::sync::atomic::AtomicBool,
}

impl Drop for Guard {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

/// An [`EventLog`] kept in a NATS JetStream stream, shareable by several
/// processes. See the crate docs for the design. Cheap to clone; the
/// background tasks stop when the last clone is dropped.
#[derive(Clone)]
pub struct NatsLog {
    /// Shared with the background tasks, which hold it as long as they run.
    inner: Arc<Inner>,
    /// Held by the handles only: dropping the last clone stops the tasks
    /// (which would otherwise keep `inner` alive forever).
    guard: Arc<Guard>,
}

/// Now, in µs since the epoch (the commit time stamped on records).
fn now_micros() -> i64 {
    Utc::now().timestamp_micros()
}

/// `d` in µs, saturating.
fn micros(d: Duration) -> i64 {
    i64::try_from(d.as_micros()).unwrap_or(i64::MAX)
}

impl NatsLog {
    /// The JetStream stream name.
    pub fn stream_name(&self) -> &str {
        &self.inner.stream_name
    }

    /// The subject records are published on (`<stream>.events`).
    pub fn subject(&self) -> &str {
        &self.inner.subject
    }

    /// The underlying client (for health checks: `connection_state()`).
    pub fn client(&self) -> &async_nats::Client {
        &self.inner.client
    }

    /// This log's counters since it was opened (see [`NatsStats`]).
    pub fn stats(&self) -> NatsStats {
        self.inner.counters.snapshot()
    }
}

impl Inner {
    /// Maps a client error: `Unavailable` while disconnected, else `Storage`.
    fn engine_err(&self, what: &str, e: impl std::fmt::Display) -> EngineError {
        if self.client.connection_state() != async_nats::connection::State::Connected {
            EngineError::Unavailable(format!("{what}: not connected to NATS ({e})"))
        } else {
            EngineError::Storage(format!("{what}: {e}"))
        }
    }

    /// Runs `f` within `request_timeout`, mapping its error as `engine_err`
    /// does and a timeout to `Unavailable`.
    async fn bounded<T, E: std::fmt::Display>(
        &self,
        what: &str,
        f: impl Future<Output = Result<T, E>>,
    ) -> Result<T, EngineError> {
        match tokio::time::timeout(self.opts.request_timeout, f).await {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e)) => Err(self.engine_err(what, e)),
            Err(_) => Err(EngineError::Unavailable(format!(
                "{what}: no answer from NATS within {:?}",
                self.opts.request_timeout
            ))),
        }
    }
}

impl NatsLog {
    fn is_closed(&self) -> bool {
        self.guard.closed.load(std::sync::atomic::Ordering::Acquire)
    }
}

impl EventLog for NatsLog {
    fn append(&self, batch: Vec<NewEvent>, expected_last: Option<u64>) -> AppendFuture {
        if self.is_closed() {
            return AppendFuture::ready(Err(AppendError::Failed(LogFailure::Closed)));
        }
        if batch.is_empty() {
            return AppendFuture::ready(Err(AppendError::EmptyBatch));
        }
        let (reply, rx) = oneshot::channel();
        let req = Request {
            batch,
            expected: expected_last,
            deadline: Instant::now() + self.inner.opts.append_timeout,
            reply,
        };
        let inner = self.inner.clone();
        AppendFuture::Pending(Box::pin(async move {
            GroupCommit::submit(&inner, req).await;
            rx.await
                .unwrap_or(Err(AppendError::Failed(LogFailure::Closed)))
        }))
    }

    fn read(&self, after: u64, limit: usize) -> BoxFuture<Result<Page, ReadError>> {
        delegate(self.is_closed(), &self.inner, move |inner| async move {
            Ok(inner.read(after, limit).await?)
        })
    }

    fn bounds(&self) -> BoxFuture<Result<Bounds, ReadError>> {
        delegate(self.is_closed(), &self.inner, move |inner| async move {
            Ok(inner.bounds().await?)
        })
    }

    fn seq_before(&self, time: DateTime<Utc>) -> BoxFuture<Result<u64, ReadError>> {
        delegate(self.is_closed(), &self.inner, move |inner| async move {
            Ok(inner.seq_before(time).await?)
        })
    }

    fn watch(&self) -> watch::Receiver<u64> {
        self.inner.watch_tx.subscribe()
    }

    fn cursor(&self, consumer: &str) -> BoxFuture<Result<Option<u64>, CursorError>> {
        let consumer = consumer.to_owned();
        delegate(self.is_closed(), &self.inner, move |inner| async move {
            inner.cursor(&consumer).await
        })
    }

    fn commit_cursor(&self, consumer: &str, seq: u64) -> BoxFuture<Result<(), CursorError>> {
        let consumer = consumer.to_owned();
        delegate(self.is_closed(), &self.inner, move |inner| async move {
            inner.commit_cursor(&consumer, seq).await
        })
    }

    fn define_consumer(&self, name: &str, spec: &str) -> BoxFuture<Result<String, CursorError>> {
        let (name, spec) = (name.to_owned(), spec.to_owned());
        delegate(self.is_closed(), &self.inner, move |inner| async move {
            inner.define_consumer(&name, &spec).await
        })
    }

    fn consumers(&self) -> BoxFuture<Result<Vec<ConsumerRecord>, CursorError>> {
        delegate(self.is_closed(), &self.inner, move |inner| async move {
            inner.consumers().await
        })
    }

    fn delete_consumer(&self, name: &str) -> BoxFuture<Result<bool, CursorError>> {
        let name = name.to_owned();
        delegate(self.is_closed(), &self.inner, move |inner| async move {
            inner.delete_consumer(&name).await
        })
    }

    fn prune(&self) -> BoxFuture<Result<u64, PruneError>> {
        delegate(self.is_closed(), &self.inner, move |inner| async move {
            Ok(inner.prune().await?)
        })
    }
    /// Refuses every later call on any clone and stops the follower and
    /// the pruner (appends already queued are still written). Every append acknowledged before was acked
    /// by JetStream, so there is nothing to flush.
    fn close(&self) -> BoxFuture<Result<(), tidings_core::CloseError>> {
        self.guard
            .closed
            .store(true, std::sync::atomic::Ordering::Release);
        for t in &self.guard.tasks {
            t.abort();
        }
        Box::pin(std::future::ready(Ok(())))
    }

    /// Several servers append to the same stream: a bus over this log
    /// follows it to deliver their events too.
    fn shared(&self) -> bool {
        true
    }
}
