//! The [`EventLog`] trait: where committed events live.
//!
//! # Contract
//!
//! Every backend (memory here; SQLite, NATS JetStream and Redis Streams in
//! their own crates) promises, and the `conformance` module (feature `conformance`) checks:
//!
//! * **Dense order.** `append` assigns sequence numbers gap-free from 1, in
//!   the order batches are accepted; a batch is atomic (all of it or none of
//!   it) and its new events get consecutive numbers. A number is never
//!   reused, even after a crash.
//! * **Idempotency.** An event whose `key` was already appended within the
//!   log's idempotency window is not appended again: its slot in the result
//!   is the original event, marked `duplicate`.
//! * **Optimistic concurrency.** `append(batch, Some(n))` is refused with
//!   [`AppendError::Conflict`] unless the log's last sequence is `n`.
//! * **Reads.** `read(after, limit)` returns events with `seq > after`,
//!   oldest first. If retention removed some of them, the page starts at the
//!   first survivor; [`Page::last_seq`] always tells the log's last sequence
//!   so a reader can tell "nothing more" from "pruned".
//! * **Wake-ups.** [`EventLog::watch`] publishes the last committed sequence
//!   after every append, so streams and followers wait without polling.
//! * **Retention is a hard limit.** Pruning by count or age does not wait for
//!   durable consumers: a consumer whose position was pruned is told so
//!   (a [`Delivery::Lagged`]), never silently skipped. Age counts from the
//!   log's commit time, not from the client-set [`Event::time`](crate::Event).
//! * **Cursors.** Named consumer cursors survive as long as the log does;
//!   delivery from a cursor is at-least-once (commit after processing). A
//!   consumer's definition is stored beside its cursor, created once
//!   (first definer wins), listed with it, and deleted with it.
//!
//! Futures returned by the trait are `'static` so streams and detached tasks
//! can hold them; implementations clone their shared state into them.
//!
//! # For backend authors only
//!
//! An application needs what the crate root re-exports from here
//! ([`EventLog`], its errors, [`LogOptions`], [`MemoryLog`], [`Page`],
//! [`Position`], `stream_from`, ...) and, reading a backend's stats,
//! [`WriteStats`]. The rest of this module's public items exist so that the
//! backend crates (SQLite, NATS, Redis) keep each rule once instead of
//! copying it, and are public only because those crates are separate:
//! [`GroupCommit`] and [`GroupWriter`] (group commit: one call in flight,
//! the rest queued), [`WriteCounters`] (the append counters a
//! group-committing backend keeps), [`KeyWindow`] (the idempotency key window),
//! [`delegate`] and [`BoxFuture`] (the trait's futures from a backend's own
//! async methods), `failures_into_op_errors!` (a backend's error into each
//! operation's enum) and [`validate_consumer_name`].

mod counters;
mod group;
mod keys;
mod memory;
mod options;
mod stream;

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use chrono::{DateTime, Utc};

use crate::event::{NewEvent, SharedEvent};

pub use counters::{WriteCounters, WriteStats};
pub use group::{GroupCommit, GroupWriter};
pub use keys::KeyWindow;
pub use memory::{MemoryLog, DEFAULT_MAX_COUNT};
pub use options::{LogOptions, OptionsError, DEFAULT_IDEMPOTENCY_WINDOW, DEFAULT_PRUNE_INTERVAL};
pub(crate) use stream::Reader;
pub use stream::{stream_from, LogStream};

/// A boxed, sendable, `'static` future.
pub type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send + 'static>>;

/// The delegation a backend's [`EventLog`] methods share: refused with
/// [`LogFailure::Closed`] when `closed`, else `op` run on a clone of the
/// backend's shared `state`, boxed.
pub fn delegate<S, T, E, F, Fut>(
    closed: bool,
    state: &std::sync::Arc<S>,
    op: F,
) -> BoxFuture<Result<T, E>>
where
    S: ?Sized,
    F: FnOnce(std::sync::Arc<S>) -> Fut,
    Fut: Future<Output = Result<T, E>> + Send + 'static,
    T: Send + 'static,
    E: From<LogFailure> + Send + 'static,
{
    if closed {
        return Box::pin(std::future::ready(Err(E::from(LogFailure::Closed))));
    }
    Box::pin(op(state.clone()))
}

/// Where a stream starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Position {
    /// From the first event still in the log.
    Beginning,
    /// Only events committed after the stream was opened.
    End,
    /// From the event after this sequence number (`After(0)` = beginning).
    After(u64),
    /// From the first event whose time is at or after this instant.
    At(DateTime<Utc>),
}

/// One item of a stream: an event, or an explicit notice of loss.
#[derive(Debug, Clone, PartialEq)]
pub enum Delivery {
    /// The next event in sequence order.
    Event(SharedEvent),
    /// Events the stream should have delivered were pruned before it read
    /// them. `missed` counts the sequence numbers skipped (of any name);
    /// delivery goes on at `resume_from`.
    Lagged { missed: u64, resume_from: u64 },
}

impl Delivery {
    /// The event, if this is one.
    pub fn event(&self) -> Option<&SharedEvent> {
        match self {
            Delivery::Event(e) => Some(e),
            Delivery::Lagged { .. } => None,
        }
    }
}

/// One event of an append's result.
#[derive(Debug, Clone, PartialEq)]
pub struct Committed {
    /// The committed event (the original one, for a duplicate).
    pub event: SharedEvent,
    /// True if the key was seen within the window and nothing was appended.
    pub duplicate: bool,
}

/// A page of a read.
#[derive(Debug, Clone, Default)]
pub struct Page {
    /// Events with `seq > after`, oldest first, at most `limit`.
    pub events: Vec<SharedEvent>,
    /// The log's last sequence when the page was read (0 if empty).
    pub last_seq: u64,
}

impl Page {
    /// Drops events from the end once the page holds about `max_bytes`
    /// (by [`crate::Event::approx_bytes`]), keeping at least the first.
    pub fn truncate_to_bytes(&mut self, max_bytes: usize) {
        let mut total = 0usize;
        let keep = self
            .events
            .iter()
            .position(|e| {
                total = total.saturating_add(e.approx_bytes());
                total > max_bytes
            })
            .map_or(self.events.len(), |i| i.max(1));
        self.events.truncate(keep);
    }
}

/// First and last sequence still held.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Bounds {
    /// The oldest sequence still in the log; `last + 1` when it holds none.
    pub first: u64,
    /// The newest sequence ever assigned (0 before the first append).
    pub last: u64,
}

/// How much a log keeps. `None` means no limit of that kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Retention {
    /// Keep at most this many events (the newest).
    pub max_count: Option<u64>,
    /// Drop events committed longer ago than this. Age is measured from
    /// when the log committed the event, never from the event's `time`
    /// (set by the client, so it may be far in the past or the future).
    pub max_age: Option<Duration>,
}

/// Why closing a log failed. The log is closed all the same: later calls
/// fail with `Closed`.
#[derive(Debug, thiserror::Error)]
pub enum CloseError {
    /// Flushing or shutting down the storage failed.
    #[error("closing the event log failed: {0}")]
    Storage(#[source] Box<dyn std::error::Error + Send + Sync>),
}

/// Why an append was refused or failed.
///
/// After `EmptyBatch`, `Conflict` or `NoSpace` nothing was appended. After
/// `Failed` the outcome is unknown when the log does I/O: the engine may
/// have committed the batch before the answer was lost (a connection
/// dropped, a timeout, a close). Retry with an idempotency key to make
/// sure the events are committed once.
#[derive(Debug, thiserror::Error)]
pub enum AppendError {
    /// The batch was empty.
    #[error("cannot append an empty batch")]
    EmptyBatch,
    /// Optimistic concurrency: the log was not at the expected sequence.
    #[error("expected the log's last seq to be {expected}, but it is {actual}")]
    Conflict { expected: u64, actual: u64 },
    /// The storage is out of space (disk full, quota). Nothing was
    /// appended; appends succeed again once space is freed.
    #[error("the event log's storage is full: {0}")]
    NoSpace(String),
    /// Closed, unavailable or a storage fault.
    #[error(transparent)]
    Failed(#[from] LogFailure),
}

/// A durable consumer as a log keeps it: its definition and its cursor.
///
/// The definition (`spec`) is opaque to the log: the bus stores the
/// consumer's patterns and filter there, so every server on a shared log
/// sees the same consumer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConsumerRecord {
    /// The consumer's name.
    pub name: String,
    /// Its definition; empty for a cursor committed without one.
    pub spec: String,
    /// The last seq it processed, if it committed any.
    pub cursor: Option<u64>,
}

/// Whether a log can take appends right now ([`EventLog::health`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LogHealth {
    /// Appends are expected to succeed.
    Ok,
    /// Appends are failing; `reason` says why. The log keeps trying to
    /// recover by itself (for example once disk space is freed).
    Degraded {
        /// Why, for an operator.
        reason: String,
        /// The cause is a full disk (or quota), not another I/O fault.
        no_space: bool,
    },
}

/// A failure any log operation can meet, whatever it was asked: each
/// operation's error embeds it as its `Failed` variant, so the three causes
/// are written once and every caller maps them once.
#[derive(Debug, thiserror::Error)]
pub enum LogFailure {
    /// The log was closed.
    #[error("the event log is closed")]
    Closed,
    /// The backing engine cannot be reached right now; retry later.
    #[error("the event log is unavailable: {0}")]
    Unavailable(String),
    /// The backing storage failed.
    #[error("event log storage failed: {0}")]
    Storage(#[source] Box<dyn std::error::Error + Send + Sync>),
}

/// Lets `?` turn a backend's own failure type into every operation's error
/// through the backend's one `From<$failure> for LogFailure`, so how a
/// backend's failures map onto [`LogFailure`] is written once. Lists the
/// operation errors to cover after `=>`, or none for all four
/// ([`AppendError`], [`ReadError`], [`CursorError`], [`PruneError`]).
///
/// ```
/// use tidings_core::log::{LogFailure, ReadError};
///
/// struct Down(String);
/// impl From<Down> for LogFailure {
///     fn from(d: Down) -> LogFailure {
///         LogFailure::Unavailable(d.0)
///     }
/// }
/// tidings_core::failures_into_op_errors!(Down);
///
/// fn read() -> Result<(), ReadError> {
///     Err(Down("no route".into()))?
/// }
/// assert!(matches!(read(), Err(ReadError::Failed(LogFailure::Unavailable(_)))));
/// ```
#[macro_export]
macro_rules! failures_into_op_errors {
    ($failure:ty) => {
        $crate::failures_into_op_errors!($failure => AppendError, ReadError, CursorError, PruneError);
    };
    ($failure:ty => $($op:ident),+ $(,)?) => {
        $(
            impl ::std::convert::From<$failure> for $crate::log::$op {
                fn from(e: $failure) -> Self {
                    $crate::log::$op::Failed($crate::log::LogFailure::from(e))
                }
            }
        )+
    };
}

/// Why a read failed.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    /// Closed, unavailable or a storage fault: reads have no other cause.
    #[error(transparent)]
    Failed(#[from] LogFailure),
}

/// Why a cursor operation failed.
#[derive(Debug, thiserror::Error)]
pub enum CursorError {
    /// The consumer name is empty, too long, or has whitespace/control chars.
    #[error("invalid consumer name {0:?}: it must be 1 to 255 bytes with no whitespace or control characters")]
    InvalidName(String),
    /// A cursor may not point past the log's last sequence.
    #[error("cannot commit cursor {name:?} at seq {seq}: the log's last seq is {last}")]
    BeyondEnd { name: String, seq: u64, last: u64 },
    /// Closed, unavailable or a storage fault.
    #[error(transparent)]
    Failed(#[from] LogFailure),
}

/// Why pruning failed.
#[derive(Debug, thiserror::Error)]
pub enum PruneError {
    /// Closed, unavailable or a storage fault: pruning has no other cause.
    #[error(transparent)]
    Failed(#[from] LogFailure),
}

/// Checks a durable consumer name.
pub fn validate_consumer_name(name: &str) -> Result<(), CursorError> {
    if name.is_empty()
        || name.len() > crate::name::MAX_LEN
        || name.chars().any(|c| c.is_whitespace() || c.is_control())
    {
        return Err(CursorError::InvalidName(name.to_owned()));
    }
    Ok(())
}

/// The result of [`EventLog::append`] (`T` = one [`Committed`] per input)
/// and [`EventLog::append_one`] (`T` = [`Committed`]): ready at once for
/// in-memory logs (no allocation, no waiting), a boxed future for logs
/// that do I/O.
pub enum AppendFuture<T = Vec<Committed>> {
    /// Already done. `None` once polled to completion.
    Ready(Option<Result<T, AppendError>>),
    /// In flight.
    Pending(BoxFuture<Result<T, AppendError>>),
}

impl<T: Send + 'static> AppendFuture<T> {
    /// A future that is already complete.
    pub fn ready(result: Result<T, AppendError>) -> Self {
        AppendFuture::Ready(Some(result))
    }

    /// Takes the result if it is available without waiting.
    pub fn try_take(&mut self) -> Option<Result<T, AppendError>> {
        match self {
            AppendFuture::Ready(r) => r.take(),
            AppendFuture::Pending(_) => None,
        }
    }

    /// The same append, its result passed through `f`.
    pub fn map<U>(self, f: impl FnOnce(T) -> U + Send + 'static) -> AppendFuture<U> {
        match self {
            AppendFuture::Ready(r) => AppendFuture::Ready(r.map(|r| r.map(f))),
            AppendFuture::Pending(fut) => {
                AppendFuture::Pending(Box::pin(async move { fut.await.map(f) }))
            }
        }
    }
}

impl<T: Unpin> Future for AppendFuture<T> {
    type Output = Result<T, AppendError>;
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.get_mut() {
            AppendFuture::Ready(r) => {
                Poll::Ready(r.take().expect("AppendFuture polled after completion"))
            }
            AppendFuture::Pending(f) => f.as_mut().poll(cx),
        }
    }
}

/// Storage of committed events. See the module docs for the contract.
pub trait EventLog: Send + Sync + 'static {
    /// Appends `batch` atomically. With `expected_last`, refuses unless the
    /// log's last sequence equals it. Returns one [`Committed`] per input
    /// event, in input order.
    fn append(&self, batch: Vec<NewEvent>, expected_last: Option<u64>) -> AppendFuture;

    /// Appends one event: exactly [`EventLog::append`] with a batch of one.
    /// Logs that can skip the batch's allocations override it (the bus's
    /// `emit` goes through here).
    fn append_one(&self, event: NewEvent, expected_last: Option<u64>) -> AppendFuture<Committed> {
        self.append(vec![event], expected_last).map(|committed| {
            committed
                .into_iter()
                .next()
                .expect("a one-event append returns one result")
        })
    }

    /// Events with `seq > after`, oldest first, at most `limit` of them.
    fn read(&self, after: u64, limit: usize) -> BoxFuture<Result<Page, ReadError>>;

    /// Like [`EventLog::read`], but the page also stops once its events
    /// reach about `max_bytes` (by [`Event::approx_bytes`]); it always holds
    /// at least one event when any follows `after`. Backends that can stop
    /// the read itself at the budget override this; the default reads
    /// `limit` events and cuts the page.
    ///
    /// [`Event::approx_bytes`]: crate::Event::approx_bytes
    fn read_within(
        &self,
        after: u64,
        limit: usize,
        max_bytes: usize,
    ) -> BoxFuture<Result<Page, ReadError>> {
        let read = self.read(after, limit);
        Box::pin(async move {
            let mut page = read.await?;
            page.truncate_to_bytes(max_bytes);
            Ok(page)
        })
    }

    /// Whether appends can succeed right now. The default is always
    /// [`LogHealth::Ok`]; durable backends report a failing disk here.
    fn health(&self) -> LogHealth {
        LogHealth::Ok
    }

    /// The first and last sequence held.
    fn bounds(&self) -> BoxFuture<Result<Bounds, ReadError>>;

    /// The sequence just before the first event at or after `time` (so a
    /// stream from `After(result)` starts at that event).
    fn seq_before(&self, time: DateTime<Utc>) -> BoxFuture<Result<u64, ReadError>>;

    /// The last committed sequence, updated after every append (including
    /// appends by other processes sharing the log, for shared backends).
    fn watch(&self) -> tokio::sync::watch::Receiver<u64>;

    /// A durable consumer's committed position (the last seq it processed).
    fn cursor(&self, consumer: &str) -> BoxFuture<Result<Option<u64>, CursorError>>;

    /// Records that `consumer` has processed everything up to `seq`.
    fn commit_cursor(&self, consumer: &str, seq: u64) -> BoxFuture<Result<(), CursorError>>;

    /// Defines consumer `name` with `spec` unless it is already defined,
    /// atomically (two servers defining one name at once agree on one
    /// spec). Returns the stored spec: `spec`, or the existing one.
    fn define_consumer(&self, name: &str, spec: &str) -> BoxFuture<Result<String, CursorError>>;

    /// Every consumer with a definition or a cursor, by name.
    fn consumers(&self) -> BoxFuture<Result<Vec<ConsumerRecord>, CursorError>>;

    /// Deletes consumer `name`: its definition and its cursor. Returns
    /// whether there was anything to delete.
    fn delete_consumer(&self, name: &str) -> BoxFuture<Result<bool, CursorError>>;

    /// Applies the retention limits now; returns how many events were removed.
    fn prune(&self) -> BoxFuture<Result<u64, PruneError>>;

    /// Closes the log: what was acknowledged is kept as the backend's
    /// durability promises (flushed where it batches), its background work
    /// stops, and from then on every call on any handle fails with `Closed`
    /// (appends, reads, cursors, consumers, prune). Idempotent. An append
    /// still in flight when `close` runs may be answered `Closed` and yet
    /// have been committed, as after a crash: retry it with its
    /// idempotency key.
    fn close(&self) -> BoxFuture<Result<(), CloseError>>;

    /// True if other processes may append to this log too (NATS, Redis).
    /// A bus over a shared log also dispatches the events appended
    /// elsewhere, in the same seq order.
    fn shared(&self) -> bool {
        false
    }
}

/// Resolves a [`Position`] to the sequence to read after.
pub(crate) async fn resolve_position(log: &dyn EventLog, from: Position) -> Result<u64, ReadError> {
    Ok(match from {
        Position::Beginning => log.bounds().await?.first.saturating_sub(1),
        Position::After(n) => n,
        Position::End => log.bounds().await?.last,
        Position::At(t) => log.seq_before(t).await?,
    })
}

impl<T: EventLog + ?Sized> EventLog for Arc<T> {
    fn append(&self, batch: Vec<NewEvent>, expected_last: Option<u64>) -> AppendFuture {
        (**self).append(batch, expected_last)
    }
    fn append_one(&self, event: NewEvent, expected_last: Option<u64>) -> AppendFuture<Committed> {
        (**self).append_one(event, expected_last)
    }
    fn read(&self, after: u64, limit: usize) -> BoxFuture<Result<Page, ReadError>> {
        (**self).read(after, limit)
    }
    fn read_within(
        &self,
        after: u64,
        limit: usize,
        max_bytes: usize,
    ) -> BoxFuture<Result<Page, ReadError>> {
        (**self).read_within(after, limit, max_bytes)
    }
    fn health(&self) -> LogHealth {
        (**self).health()
    }
    fn bounds(&self) -> BoxFuture<Result<Bounds, ReadError>> {
        (**self).bounds()
    }
    fn seq_before(&self, time: DateTime<Utc>) -> BoxFuture<Result<u64, ReadError>> {
        (**self).seq_before(time)
    }
    fn watch(&self) -> tokio::sync::watch::Receiver<u64> {
        (**self).watch()
    }
    fn cursor(&self, consumer: &str) -> BoxFuture<Result<Option<u64>, CursorError>> {
        (**self).cursor(consumer)
    }
    fn commit_cursor(&self, consumer: &str, seq: u64) -> BoxFuture<Result<(), CursorError>> {
        (**self).commit_cursor(consumer, seq)
    }
    fn define_consumer(&self, name: &str, spec: &str) -> BoxFuture<Result<String, CursorError>> {
        (**self).define_consumer(name, spec)
    }
    fn consumers(&self) -> BoxFuture<Result<Vec<ConsumerRecord>, CursorError>> {
        (**self).consumers()
    }
    fn delete_consumer(&self, name: &str) -> BoxFuture<Result<bool, CursorError>> {
        (**self).delete_consumer(name)
    }
    fn prune(&self) -> BoxFuture<Result<u64, PruneError>> {
        (**self).prune()
    }
    fn close(&self) -> BoxFuture<Result<(), CloseError>> {
        (**self).close()
    }
    fn shared(&self) -> bool {
        (**self).shared()
    }
}
