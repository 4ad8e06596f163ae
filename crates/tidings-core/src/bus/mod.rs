//! The [`Bus`]: emit facts, dispatch them to subscribers in one order.
//!
//! # Contract
//!
//! * **Commit before notify.** `emit` appends to the log first; only a
//!   committed event (with its seq) is dispatched. When `emit` returns the
//!   event is in the log, and every sync handler has run.
//! * **One order.** Emitters on many threads commit concurrently (a log may
//!   group-commit them); a combining dispatcher then runs the committed
//!   batches strictly by seq (whoever completes the next seq dispatches it
//!   and every consecutive batch queued behind it), so every subscriber —
//!   sync handler, async handler, stream — sees events in seq order with no
//!   gap and no duplicate. No emitter waits for a turn while holding one,
//!   so async emitters sharing a runtime cannot deadlock each other.
//! * **Deterministic dispatch.** Within one event: higher priority first,
//!   then registration order.
//! * **Re-entrant emits are queued, not recursed.** An `emit` from inside a
//!   sync handler commits at once (it returns the committed event) but is
//!   dispatched after the current event's dispatch has finished, so order
//!   holds and the stack does not grow. Each such emit is one level deeper;
//!   past [`BusBuilder::max_depth`] it is refused with
//!   [`EmitError::DepthExceeded`]. Async handlers carry the depth too.
//! * **Isolation.** A handler error or panic is caught, counted in
//!   [`Stats`] and logged with `tracing`; other handlers still run and the
//!   bus stays usable.
//! * **No silent loss.** Streams and async handlers read from a bounded
//!   queue and fall back to the log when it overflows; only pruned events
//!   are reported as [`Delivery::Lagged`].
//!
//! A sync handler must not block on another thread's `emit` to the same bus
//! (that emit waits for the handler's dispatch to finish). In async code use
//! the `_async` emits: sync `emit` blocks its thread until its handlers ran.

mod cache;
pub mod consumer;
mod dispatcher;
mod handler;
mod registry;
mod stats;
mod stream;

use std::cell::Cell;
use std::collections::VecDeque;
use std::future::Future;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::task::{Context, Poll, Wake};
use std::time::Duration;

use futures_util::StreamExt;
use parking_lot::Mutex;

use crate::event::{NewEvent, Priority, SharedEvent};
use crate::filter::SharedFilter;
use crate::log::{
    resolve_position, AppendError, AppendFuture, Committed, Delivery, EventLog, MemoryLog,
    Position, ReadError, Reader,
};
use crate::name::{IntoPattern, NameError, Pattern, PatternError};
use crate::typed::TypedEvent;

pub use handler::{HandlerBuilder, HandlerResult, Subscription};
pub use registry::{SubscriptionInfo, SubscriptionKind};
pub use stats::Stats;
pub use stream::EventStream;

use dispatcher::{Dispatcher, Submitted};
use registry::{Registry, SubKind};
use stats::Counters;
use stream::Sink;

pub use consumer::{
    AckError, Consumer, ConsumerBuilder, ConsumerError, ConsumerSpec, ConsumerTask,
};

/// Default history ring size.
pub const DEFAULT_HISTORY: usize = 10_000;
/// Default queue size of a stream or async handler before it falls back to
/// reading the log.
pub const DEFAULT_STREAM_CAPACITY: usize = 1024;
/// Default limit of nested emits.
pub const DEFAULT_MAX_DEPTH: u32 = 32;
/// Default number of names whose matches are cached.
pub const DEFAULT_CACHE_CAPACITY: usize = 4096;

/// Why an emit failed. Nothing was committed in any of these cases.
#[derive(Debug, thiserror::Error)]
pub enum EmitError {
    /// The event name is invalid.
    #[error(transparent)]
    Name(#[from] NameError),
    /// The log refused or failed the append.
    #[error(transparent)]
    Append(#[from] AppendError),
    /// Handlers emitting from handlers went deeper than the limit.
    #[error("emit refused at depth {depth} (limit {max}): handlers keep emitting events whose handlers emit again; is there a loop?")]
    DepthExceeded { depth: u32, max: u32 },
    /// A typed event could not be serialized.
    #[error("cannot serialize the typed event: {0}")]
    Serialize(#[source] serde_json::Error),
}

/// Why a subscription could not be made.
#[derive(Debug, thiserror::Error)]
pub enum SubscribeError {
    /// The pattern is invalid.
    #[error(transparent)]
    Pattern(#[from] PatternError),
    /// An async handler needs a tokio runtime and none was given or running.
    #[error("async handlers need a tokio runtime: call this inside one, or give the bus one with BusBuilder::runtime")]
    NoRuntime,
    /// Resolving the start position failed.
    #[error(transparent)]
    Read(#[from] ReadError),
}

/// Why [`Bus::wait_for`] returned without an event.
#[derive(Debug, thiserror::Error)]
pub enum WaitError {
    /// The pattern is invalid.
    #[error(transparent)]
    Pattern(#[from] PatternError),
    /// No matching event within the timeout.
    #[error("no matching event within {0:?}")]
    Timeout(Duration),
    /// Reading the log failed.
    #[error(transparent)]
    Read(#[from] ReadError),
    /// The subscription was removed while waiting.
    #[error("the subscription was removed while waiting")]
    Closed,
}

/// A bus setting was out of range.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    /// A capacity or limit of zero.
    #[error("{setting} must be at least 1, got 0{hint}")]
    Zero {
        setting: &'static str,
        hint: &'static str,
    },
    /// Following a shared log needs a tokio runtime.
    #[error("following a shared log needs a tokio runtime: build the bus inside one, or give it one with BusBuilder::runtime")]
    NoRuntime,
}

tokio::task_local! {
    /// Emit depth of the event an async handler is handling.
    pub(crate) static DEPTH: u32;
}

thread_local! {
    /// `Some(depth)` while this thread dispatches an event of that emit
    /// depth (that is, inside sync handlers).
    static DISPATCHING: Cell<Option<u32>> = const { Cell::new(None) };
}

pub(crate) struct Inner {
    log: Arc<dyn EventLog>,
    registry: Mutex<Registry>,
    dispatcher: Dispatcher,
    /// Invariant: the newest `history_cap` dispatched events, ascending.
    history: Option<Mutex<VecDeque<SharedEvent>>>,
    history_cap: usize,
    pub(crate) stats: Counters,
    max_depth: u32,
    stream_capacity: usize,
    runtime: Option<tokio::runtime::Handle>,
}

/// Settings for a [`Bus`]; every limit has a default.
#[must_use]
pub struct BusBuilder {
    log: Option<Arc<dyn EventLog>>,
    history: Option<usize>,
    stream_capacity: usize,
    max_depth: u32,
    cache_capacity: usize,
    runtime: Option<tokio::runtime::Handle>,
    follow: Option<bool>,
}

impl Default for BusBuilder {
    fn default() -> Self {
        BusBuilder {
            log: None,
            history: Some(DEFAULT_HISTORY),
            stream_capacity: DEFAULT_STREAM_CAPACITY,
            max_depth: DEFAULT_MAX_DEPTH,
            cache_capacity: DEFAULT_CACHE_CAPACITY,
            runtime: None,
            follow: None,
        }
    }
}

impl BusBuilder {
    /// The log to commit to (default: a new [`MemoryLog`]).
    pub fn log(mut self, log: impl EventLog) -> Self {
        self.log = Some(Arc::new(log));
        self
    }

    /// The log to commit to, already shared.
    pub fn shared_log(mut self, log: Arc<dyn EventLog>) -> Self {
        self.log = Some(log);
        self
    }

    /// Size of the in-memory history ring (default 10,000; must be ≥ 1).
    pub fn history_capacity(mut self, n: usize) -> Self {
        self.history = Some(n);
        self
    }

    /// Keeps no in-memory history ([`Bus::history`] returns nothing; the
    /// log still has every event).
    pub fn without_history(mut self) -> Self {
        self.history = None;
        self
    }

    /// Queue size per stream or async handler (default 1024; must be ≥ 1).
    pub fn stream_capacity(mut self, n: usize) -> Self {
        self.stream_capacity = n;
        self
    }

    /// Deepest allowed chain of handler-emitted events (default 32; ≥ 1).
    pub fn max_depth(mut self, n: u32) -> Self {
        self.max_depth = n;
        self
    }

    /// Whether the bus follows its log to dispatch events appended by other
    /// processes (default: when [`EventLog::shared`] says the log is shared).
    /// Following needs a tokio runtime (given, or current at `build`).
    pub fn follow_log(mut self, follow: bool) -> Self {
        self.follow = Some(follow);
        self
    }

    /// Names whose matched subscriptions are cached (default 4096; ≥ 1).
    pub fn cache_capacity(mut self, n: usize) -> Self {
        self.cache_capacity = n;
        self
    }

    /// The runtime async handlers run on (default: the current one at the
    /// time the handler is registered).
    pub fn runtime(mut self, handle: tokio::runtime::Handle) -> Self {
        self.runtime = Some(handle);
        self
    }

    /// Builds the bus; refuses zero capacities.
    pub fn build(self) -> Result<Bus, ConfigError> {
        let zero = |setting, hint| Err(ConfigError::Zero { setting, hint });
        if self.history == Some(0) {
            return zero("history_capacity", " (use without_history() to keep none)");
        }
        if self.stream_capacity == 0 {
            return zero("stream_capacity", "");
        }
        if self.max_depth == 0 {
            return zero("max_depth", "");
        }
        if self.cache_capacity == 0 {
            return zero("cache_capacity", "");
        }
        let log = self.log.unwrap_or_else(|| Arc::new(MemoryLog::new()));
        let follow = self.follow.unwrap_or_else(|| log.shared());
        let follower_runtime = if follow {
            let rt = self
                .runtime
                .clone()
                .or_else(|| tokio::runtime::Handle::try_current().ok());
            Some(rt.ok_or(ConfigError::NoRuntime)?)
        } else {
            None
        };
        let last = *log.watch().borrow();
        let bus = Bus {
            inner: Arc::new(Inner {
                registry: Mutex::new(Registry::new(self.cache_capacity, last)),
                dispatcher: Dispatcher::new(last + 1),
                history: self
                    .history
                    .map(|n| Mutex::new(VecDeque::with_capacity(n.min(1024)))),
                history_cap: self.history.unwrap_or(0),
                stats: Counters::default(),
                max_depth: self.max_depth,
                stream_capacity: self.stream_capacity,
                runtime: self.runtime,
                log,
            }),
        };
        if let Some(rt) = follower_runtime {
            rt.spawn(follow_log(
                Arc::downgrade(&bus.inner),
                bus.inner.log.watch(),
            ));
        }
        Ok(bus)
    }
}

/// Dispatches events other processes appended to a shared log: whenever the
/// log is ahead of the dispatcher, reads the missing seqs and hands them in
/// (the dispatcher drops the ones a local emitter handed in already). Ends
/// when the bus is dropped or the log closes.
async fn follow_log(bus: std::sync::Weak<Inner>, mut watch: tokio::sync::watch::Receiver<u64>) {
    loop {
        let Some(inner) = bus.upgrade() else { return };
        let next = inner.dispatcher.done();
        let last = *watch.borrow_and_update();
        if last >= next {
            match inner.log.read(next - 1, 512).await {
                Ok(page) => {
                    if let Some(first) = page.events.first() {
                        if first.seq > next {
                            tracing::warn!(
                                from = next,
                                to = first.seq - 1,
                                "shared log pruned events before this bus dispatched them"
                            );
                            inner.dispatcher.skip_to(first.seq);
                        }
                        inner.submit(&page.events, 0);
                    } else if page.last_seq >= next {
                        inner.dispatcher.skip_to(page.last_seq + 1);
                    } else {
                        drop(inner);
                        tokio::time::sleep(Duration::from_millis(5)).await;
                    }
                }
                Err(e) => {
                    tracing::warn!(%e, "cannot read the shared log; retrying");
                    drop(inner);
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            }
            continue;
        }
        drop(inner);
        if watch.changed().await.is_err() {
            return;
        }
    }
}

/// The event bus. Cheap to clone (clones share one bus), `Send + Sync`.
///
/// ```
/// use serde_json::json;
/// use std::sync::{Arc, Mutex};
/// let bus = tidings_core::Bus::new();
/// let seen = Arc::new(Mutex::new(Vec::new()));
/// let s = seen.clone();
/// let _sub = bus.on("player:*", move |e| s.lock().unwrap().push(e.seq)).unwrap();
/// let ev = bus.emit("player:move", json!({"to": "street"})).unwrap();
/// assert_eq!(ev.seq, 1);
/// assert_eq!(*seen.lock().unwrap(), vec![1]);
/// ```
#[derive(Clone)]
pub struct Bus {
    pub(crate) inner: Arc<Inner>,
}

impl Default for Bus {
    fn default() -> Self {
        Bus::new()
    }
}

impl std::fmt::Debug for Bus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Bus")
            .field("sequence", &self.sequence())
            .field("subscriptions", &self.inner.registry.lock().len())
            .finish()
    }
}

/// An event being built: made by [`Bus::event`].
#[must_use = "call .emit() or .emit_async() to commit the event"]
pub struct EmitBuilder<'a> {
    bus: &'a Bus,
    event: Result<NewEvent, NameError>,
    expected_last: Option<u64>,
}

impl EmitBuilder<'_> {
    fn map(mut self, f: impl FnOnce(NewEvent) -> NewEvent) -> Self {
        self.event = self.event.map(f);
        self
    }
    /// The payload (default `null`).
    pub fn data(self, data: serde_json::Value) -> Self {
        self.map(|e| NewEvent { data, ..e })
    }
    /// The emitting component (default `"app"`).
    pub fn source(self, source: impl Into<String>) -> Self {
        self.map(|e| e.source(source))
    }
    /// An idempotency key: a second emit with the same key within the log's
    /// window returns the original event and dispatches nothing.
    pub fn key(self, key: impl Into<String>) -> Self {
        self.map(|e| e.key(key))
    }
    /// Priority metadata recorded on the event.
    pub fn priority(self, priority: Priority) -> Self {
        self.map(|e| e.priority(priority))
    }
    /// Refuse unless the log's last seq is `seq` (optimistic concurrency).
    pub fn expect_last(mut self, seq: u64) -> Self {
        self.expected_last = Some(seq);
        self
    }
    /// Commits and dispatches; blocks if the log does I/O.
    pub fn emit(self) -> Result<SharedEvent, EmitError> {
        Ok(self.bus.commit_one(self.event?, self.expected_last)?.event)
    }
    /// Commits and dispatches without blocking the async runtime on I/O.
    pub async fn emit_async(self) -> Result<SharedEvent, EmitError> {
        let committed = self
            .bus
            .commit_async(vec![self.event?], self.expected_last)
            .await?;
        Ok(first_event(committed))
    }
}

fn first_event(committed: Vec<Committed>) -> SharedEvent {
    committed
        .into_iter()
        .next()
        .expect("a one-event append returns one result")
        .event
}

impl Bus {
    /// A bus over a new in-memory log, with default settings.
    pub fn new() -> Bus {
        BusBuilder::default().build().expect("defaults are valid")
    }

    /// Settings for a bus.
    pub fn builder() -> BusBuilder {
        BusBuilder::default()
    }

    /// The log this bus commits to.
    pub fn log(&self) -> &Arc<dyn EventLog> {
        &self.inner.log
    }

    // ----- emitting -------------------------------------------------------

    /// Emits `name` with `data` from source `"app"`; returns the committed
    /// event after every sync handler ran.
    pub fn emit(
        &self,
        name: impl Into<String>,
        data: serde_json::Value,
    ) -> Result<SharedEvent, EmitError> {
        Ok(self.commit_one(NewEvent::new(name, data)?, None)?.event)
    }

    /// [`Bus::emit`] for async code.
    pub async fn emit_async(
        &self,
        name: impl Into<String>,
        data: serde_json::Value,
    ) -> Result<SharedEvent, EmitError> {
        self.event(name).data(data).emit_async().await
    }

    /// Starts building an event (source, key, priority, expected seq).
    pub fn event(&self, name: impl Into<String>) -> EmitBuilder<'_> {
        EmitBuilder {
            bus: self,
            event: NewEvent::new(name, serde_json::Value::Null),
            expected_last: None,
        }
    }

    /// Emits a typed event under its name.
    pub fn emit_typed<T: TypedEvent>(&self, value: &T) -> Result<SharedEvent, EmitError> {
        let data = serde_json::to_value(value).map_err(EmitError::Serialize)?;
        self.event(value.name().into_owned()).data(data).emit()
    }

    /// Emits several events atomically: all are committed with consecutive
    /// seqs, or none is. One result per input, in order.
    pub fn emit_batch(
        &self,
        batch: Vec<NewEvent>,
        expected_last: Option<u64>,
    ) -> Result<Vec<Committed>, EmitError> {
        self.commit(batch, expected_last)
    }

    /// [`Bus::emit_batch`] for async code.
    pub async fn emit_batch_async(
        &self,
        batch: Vec<NewEvent>,
        expected_last: Option<u64>,
    ) -> Result<Vec<Committed>, EmitError> {
        self.commit_async(batch, expected_last).await
    }

    fn emit_depth(&self) -> Result<u32, EmitError> {
        let parent = DISPATCHING
            .with(Cell::get)
            .or_else(|| DEPTH.try_with(|d| *d).ok());
        let depth = parent.map_or(0, |d| d + 1);
        if depth > self.inner.max_depth {
            self.inner
                .stats
                .depth_exceeded
                .fetch_add(1, Ordering::Relaxed);
            tracing::error!(
                depth,
                max = self.inner.max_depth,
                "emit refused: depth limit"
            );
            return Err(EmitError::DepthExceeded {
                depth,
                max: self.inner.max_depth,
            });
        }
        Ok(depth)
    }

    fn commit(
        &self,
        batch: Vec<NewEvent>,
        expected_last: Option<u64>,
    ) -> Result<Vec<Committed>, EmitError> {
        self.commit_with(|log| log.append(batch, expected_last), Vec::as_slice)
    }

    /// [`Bus::commit`] for one event, through [`EventLog::append_one`]
    /// (no batch to allocate).
    fn commit_one(
        &self,
        event: NewEvent,
        expected_last: Option<u64>,
    ) -> Result<Committed, EmitError> {
        self.commit_with(
            |log| log.append_one(event, expected_last),
            std::slice::from_ref,
        )
    }

    /// Checks the depth, appends (blocking if the log does I/O), then
    /// dispatches the committed events (`committed` views the result as
    /// them) and waits until their handlers ran.
    fn commit_with<T: Send + Unpin + 'static>(
        &self,
        append: impl FnOnce(&dyn EventLog) -> AppendFuture<T>,
        committed: impl Fn(&T) -> &[Committed],
    ) -> Result<T, EmitError> {
        let depth = self.emit_depth()?;
        let mut fut = append(&*self.inner.log);
        let result = match fut.try_take() {
            Some(r) => r?,
            None => block_on(fut)?,
        };
        if let Some(seq) = self.inner.after_commit(committed(&result), depth) {
            self.inner.dispatcher.wait_done(seq);
        }
        Ok(result)
    }

    async fn commit_async(
        &self,
        batch: Vec<NewEvent>,
        expected_last: Option<u64>,
    ) -> Result<Vec<Committed>, EmitError> {
        let depth = self.emit_depth()?;
        let mut fut = self.inner.log.append(batch, expected_last);
        let committed = match fut.try_take() {
            Some(r) => r?,
            None => {
                DispatchOnDrop {
                    fut: Some(fut),
                    inner: self.inner.clone(),
                    depth,
                }
                .await?
            }
        };
        if let Some(seq) = self.inner.after_commit(&committed, depth) {
            self.inner.dispatcher.wait_done_async(seq).await;
        }
        Ok(committed)
    }

    // ----- subscribing ----------------------------------------------------

    /// Subscribes a sync handler (normal priority). See [`Bus::handler`] for
    /// options.
    pub fn on<P, F, R>(&self, pattern: P, f: F) -> Result<Subscription, SubscribeError>
    where
        P: IntoPattern,
        F: Fn(&SharedEvent) -> R + Send + Sync + 'static,
        R: HandlerResult,
    {
        self.handler(pattern).sync(f)
    }

    /// Subscribes an async handler (normal priority).
    pub fn on_async<P, F, Fut, R>(&self, pattern: P, f: F) -> Result<Subscription, SubscribeError>
    where
        P: IntoPattern,
        F: Fn(SharedEvent) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = R> + Send + 'static,
        R: HandlerResult,
    {
        self.handler(pattern).run_async(f)
    }

    /// Subscribes a sync handler that runs for one event only.
    pub fn once<P, F, R>(&self, pattern: P, f: F) -> Result<Subscription, SubscribeError>
    where
        P: IntoPattern,
        F: Fn(&SharedEvent) -> R + Send + Sync + 'static,
        R: HandlerResult,
    {
        self.handler(pattern).once(f)
    }

    /// Subscribes a sync handler to a typed event (its `PATTERN`).
    pub fn on_typed<T, F, R>(&self, f: F) -> Result<Subscription, SubscribeError>
    where
        T: TypedEvent,
        F: Fn(&T, &crate::Event) -> R + Send + Sync + 'static,
        R: HandlerResult,
    {
        self.handler(T::PATTERN).typed(f)
    }

    /// Starts building a durable consumer named `name` (see
    /// [`consumer`](self::consumer)): its position is kept in the log.
    pub fn consumer(&self, name: impl Into<String>) -> ConsumerBuilder {
        ConsumerBuilder::new(self, name)
    }

    /// Starts building a handler subscription (priority, owner, kind).
    pub fn handler<P: IntoPattern>(&self, pattern: P) -> HandlerBuilder<'_, P> {
        HandlerBuilder::new(self, pattern)
    }

    /// A stream of events matching `pattern`, from now on.
    pub fn subscribe<P: IntoPattern>(&self, pattern: P) -> Result<EventStream, SubscribeError> {
        let pattern = pattern.into_pattern()?;
        Ok(self.open_stream(vec![pattern], Priority::Normal, None, false, None, None))
    }

    /// A stream of events matching `pattern` from a position: it catches up
    /// from the log, then continues live, with no gap and no duplicate.
    pub async fn subscribe_from<P: IntoPattern>(
        &self,
        pattern: P,
        from: Position,
    ) -> Result<EventStream, SubscribeError> {
        let pattern = pattern.into_pattern()?;
        let after = resolve_position(&*self.inner.log, from).await?;
        Ok(self.open_stream(
            vec![pattern],
            Priority::Normal,
            None,
            false,
            Some(after),
            None,
        ))
    }

    /// A stream of events matching any of `patterns` (an event matching
    /// several is delivered once), from a position. With no pattern the
    /// stream waits until one is added.
    pub async fn subscribe_many<P: IntoPattern>(
        &self,
        patterns: impl IntoIterator<Item = P>,
        from: Position,
    ) -> Result<EventStream, SubscribeError> {
        self.subscribe_filtered(patterns, from, None).await
    }

    /// Like [`Bus::subscribe_many`], delivering only the events `filter`
    /// accepts: a rejected event is never queued for the stream, and the
    /// stream's catch-up from the log applies the same filter.
    pub async fn subscribe_filtered<P: IntoPattern>(
        &self,
        patterns: impl IntoIterator<Item = P>,
        from: Position,
        filter: Option<SharedFilter>,
    ) -> Result<EventStream, SubscribeError> {
        let patterns = patterns
            .into_iter()
            .map(IntoPattern::into_pattern)
            .collect::<Result<Vec<_>, _>>()?;
        let after = match from {
            Position::End => None,
            other => Some(resolve_position(&*self.inner.log, other).await?),
        };
        Ok(self.open_stream(patterns, Priority::Normal, None, false, after, filter))
    }

    pub(crate) fn open_stream(
        &self,
        patterns: Vec<Pattern>,
        priority: Priority,
        owner: Option<Arc<str>>,
        handler: bool,
        after: Option<u64>,
        filter: Option<SharedFilter>,
    ) -> EventStream {
        let sink = Arc::new(Sink::filtered(self.inner.stream_capacity, handler, filter));
        let mut unique: Vec<Pattern> = Vec::with_capacity(patterns.len());
        for p in patterns {
            if !unique.contains(&p) {
                unique.push(p);
            }
        }
        let (subs, start) = {
            let mut reg = self.inner.registry.lock();
            let subs: Vec<_> = unique
                .into_iter()
                .map(|p| {
                    reg.insert(p, priority, owner.clone(), SubKind::Sink(sink.clone()))
                        .0
                })
                .collect();
            (subs, reg.looked_up())
        };
        let (reader_start, catching_up) = match after {
            Some(a) => (a, true),
            None => (start, false),
        };
        let reader = Reader::new(self.inner.log.clone(), reader_start);
        EventStream::new(self.clone(), subs, sink, reader, catching_up)
    }

    /// Waits for the next event matching `pattern` (emitted after this call
    /// subscribes), or fails with [`WaitError::Timeout`].
    pub async fn wait_for<P: IntoPattern>(
        &self,
        pattern: P,
        timeout: Duration,
    ) -> Result<SharedEvent, WaitError> {
        let mut stream = self.subscribe(pattern).map_err(|e| match e {
            SubscribeError::Pattern(p) => WaitError::Pattern(p),
            SubscribeError::Read(r) => WaitError::Read(r),
            SubscribeError::NoRuntime => unreachable!("streams need no runtime"),
        })?;
        let next = async {
            while let Some(item) = stream.next().await {
                match item? {
                    Delivery::Event(e) => return Ok(e),
                    Delivery::Lagged { .. } => continue,
                }
            }
            Err(WaitError::Closed)
        };
        match tokio::time::timeout(timeout, next).await {
            Ok(r) => r,
            Err(_) => Err(WaitError::Timeout(timeout)),
        }
    }

    pub(crate) fn runtime(&self) -> Result<tokio::runtime::Handle, SubscribeError> {
        match &self.inner.runtime {
            Some(h) => Ok(h.clone()),
            None => tokio::runtime::Handle::try_current().map_err(|_| SubscribeError::NoRuntime),
        }
    }

    /// Removes a subscription by id; returns whether it existed.
    pub fn unsubscribe(&self, id: u64) -> bool {
        self.remove(id)
    }

    pub(crate) fn remove(&self, id: u64) -> bool {
        self.inner.remove(id)
    }

    /// Removes every subscription of `owner`; returns how many.
    pub fn unsubscribe_all(&self, owner: &str) -> usize {
        let mut reg = self.inner.registry.lock();
        let ids: Vec<u64> = reg.by_owner(owner).iter().map(|s| s.id).collect();
        for id in &ids {
            reg.remove(*id);
        }
        ids.len()
    }

    /// The live subscriptions, of one owner or all, in registration order.
    pub fn subscriptions(&self, owner: Option<&str>) -> Vec<SubscriptionInfo> {
        let reg = self.inner.registry.lock();
        match owner {
            Some(o) => reg
                .by_owner(o)
                .iter()
                .map(|s| SubscriptionInfo::from(&**s))
                .collect(),
            None => reg.all().map(|s| SubscriptionInfo::from(&**s)).collect(),
        }
    }

    /// For a plain name: how many subscriptions an event of that name would
    /// reach (wildcards included). For a pattern with wildcards: how many
    /// subscriptions were made with exactly that pattern.
    pub fn handler_count(&self, name_or_pattern: &str) -> Result<usize, PatternError> {
        let pattern = Pattern::parse(name_or_pattern)?;
        let reg = self.inner.registry.lock();
        Ok(if pattern.is_literal() {
            reg.count_matching(name_or_pattern)
        } else {
            reg.count_with_pattern(&pattern)
        })
    }

    // ----- introspection --------------------------------------------------

    /// The newest `limit` events of the history ring matching `pattern`
    /// (all if `None`), oldest first.
    pub fn history(
        &self,
        limit: usize,
        pattern: Option<&str>,
    ) -> Result<Vec<SharedEvent>, PatternError> {
        let pattern = pattern.map(Pattern::parse).transpose()?;
        let Some(ring) = &self.inner.history else {
            return Ok(Vec::new());
        };
        let ring = ring.lock();
        let mut out: Vec<SharedEvent> = ring
            .iter()
            .rev()
            .filter(|e| pattern.as_ref().is_none_or(|p| p.matches(&e.name)))
            .take(limit)
            .cloned()
            .collect();
        out.reverse();
        Ok(out)
    }

    /// The log's last committed seq (0 before the first event).
    pub fn sequence(&self) -> u64 {
        *self.inner.log.watch().borrow()
    }

    /// Counters since the bus was built.
    pub fn stats(&self) -> Stats {
        let subscriptions = self.inner.registry.lock().len();
        self.inner.stats.snapshot(subscriptions)
    }
}

impl Inner {
    fn remove(&self, id: u64) -> bool {
        self.registry.lock().remove(id).is_some()
    }

    /// Hands a committed batch to the dispatcher. Returns the seq the
    /// emitter must wait for before returning (its handlers have not all run
    /// yet), or `None` if it must not wait (an emit from inside a handler,
    /// dispatched after the current event).
    fn after_commit(&self, committed: &[Committed], depth: u32) -> Option<u64> {
        let fresh = committed.iter().filter(|c| !c.duplicate).map(|c| &c.event);
        let wait_for = committed.iter().map(|c| c.event.seq).max()?;
        if let Some(first) = fresh.clone().next() {
            let count = fresh.clone().count();
            self.stats
                .published
                .fetch_add(count as u64, Ordering::Relaxed);
            if self.submit_iter(first.seq, fresh, depth) == Submitted::Nested {
                return None;
            }
        }
        Some(wait_for)
    }

    /// Hands consecutive committed events to the dispatcher.
    fn submit(&self, events: &[SharedEvent], depth: u32) -> Submitted {
        match events.first() {
            Some(first) => self.submit_iter(first.seq, events.iter(), depth),
            None => Submitted::Dispatched,
        }
    }

    fn submit_iter<'a>(
        &self,
        first: u64,
        events: impl Iterator<Item = &'a SharedEvent> + Clone,
        depth: u32,
    ) -> Submitted {
        let run = |e: &SharedEvent, d: u32| {
            let outer = DISPATCHING.with(|c| c.replace(Some(d)));
            self.dispatch_one(e, d);
            DISPATCHING.with(|c| c.set(outer));
        };
        self.dispatcher.submit(first, events, depth, &run)
    }

    fn dispatch_one(&self, event: &SharedEvent, depth: u32) {
        if let Some(ring) = &self.history {
            let mut ring = ring.lock();
            if ring.len() >= self.history_cap {
                ring.pop_front();
            }
            ring.push_back(event.clone());
        }
        let subs = self.registry.lock().lookup(event);
        for sub in subs.iter() {
            if !sub.active.load(Ordering::Acquire) {
                continue;
            }
            match &sub.kind {
                SubKind::Sync { f, once, filter } => {
                    if !crate::filter::passes(filter, event) {
                        continue;
                    }
                    if *once && sub.fired.swap(true, Ordering::AcqRel) {
                        continue;
                    }
                    self.stats.dispatched.fetch_add(1, Ordering::Relaxed);
                    let outcome = catch_unwind(AssertUnwindSafe(|| f(event)));
                    self.record_outcome(event, sub.id, outcome);
                    if *once {
                        self.remove(sub.id);
                    }
                }
                SubKind::Sink(sink) => {
                    if sink.accepts(event) {
                        self.stats.dispatched.fetch_add(1, Ordering::Relaxed);
                        sink.push(event, depth);
                    }
                }
            }
        }
    }

    pub(crate) fn record_outcome(
        &self,
        event: &SharedEvent,
        subscription: u64,
        outcome: std::thread::Result<Result<(), String>>,
    ) {
        match outcome {
            Ok(Ok(())) => {}
            Ok(Err(error)) => {
                self.stats.handler_errors.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(seq = event.seq, name = %event.name, subscription, %error, "handler failed");
            }
            Err(panic) => {
                self.stats.handler_panics.fetch_add(1, Ordering::Relaxed);
                let message = panic
                    .downcast_ref::<&str>()
                    .map(|s| s.to_string())
                    .or_else(|| panic.downcast_ref::<String>().cloned())
                    .unwrap_or_else(|| "non-string panic payload".to_owned());
                tracing::error!(seq = event.seq, name = %event.name, subscription, %message, "handler panicked");
            }
        }
    }
}

/// Awaits an append; if dropped before it completes (the emitter was
/// cancelled), finishes it on the runtime and dispatches the result, so a
/// committed event is never left undispatched (which would hold back every
/// later event).
struct DispatchOnDrop {
    fut: Option<AppendFuture>,
    inner: Arc<Inner>,
    depth: u32,
}

impl Future for DispatchOnDrop {
    type Output = Result<Vec<Committed>, AppendError>;
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.get_mut();
        let fut = this.fut.as_mut().expect("polled after completion");
        let out = Pin::new(fut).poll(cx);
        if out.is_ready() {
            this.fut = None;
        }
        out
    }
}

impl Drop for DispatchOnDrop {
    fn drop(&mut self) {
        let Some(fut) = self.fut.take() else { return };
        let inner = self.inner.clone();
        let depth = self.depth;
        let finish = async move {
            if let Ok(committed) = fut.await {
                // Nobody is waiting for this emit any more.
                let _ = inner.after_commit(&committed, depth);
            }
        };
        match tokio::runtime::Handle::try_current() {
            Ok(h) => {
                h.spawn(finish);
            }
            Err(_) => {
                std::thread::spawn(move || block_on(finish));
            }
        }
    }
}

/// Runs a future to completion on this thread (for sync `emit` over a log
/// that does I/O).
fn block_on<F: Future>(fut: F) -> F::Output {
    struct ThreadWaker(std::thread::Thread);
    impl Wake for ThreadWaker {
        fn wake(self: Arc<Self>) {
            self.0.unpark();
        }
    }
    let waker = Arc::new(ThreadWaker(std::thread::current())).into();
    let mut cx = Context::from_waker(&waker);
    let mut fut = std::pin::pin!(fut);
    loop {
        if let Poll::Ready(v) = fut.as_mut().poll(&mut cx) {
            return v;
        }
        std::thread::park();
    }
}

#[cfg(test)]
mod tests;
