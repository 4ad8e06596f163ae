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
//!
//! # Layout
//!
//! This file is the facade: [`Bus`], its shared state and its public
//! methods. Each part it delegates to states its own contract:
//! `error.rs` (the error types), `builder.rs` ([`BusBuilder`]), `emit.rs`
//! (commit then dispatch, the depth guard), `dispatch.rs` (running one
//! event's subscriptions), `dispatcher.rs` (the seq order), `external.rs`
//! (dispatching what other processes append to a shared log), `registry.rs` (subscriptions, over
//! `trie` and `cache.rs`), `sink.rs` and `stream.rs` (queued delivery),
//! `handler.rs`, [`consumer`] and `stats.rs`.

mod builder;
mod cache;
pub mod consumer;
mod dispatch;
mod dispatcher;
mod emit;
mod error;
mod external;
mod handler;
mod registry;
mod sink;
mod stats;
mod stream;

use std::collections::VecDeque;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use parking_lot::Mutex;

use crate::event::{NewEvent, Priority, SharedEvent};
use crate::filter::SharedFilter;
use crate::log::{resolve_position, Committed, Delivery, EventLog, Position};
use crate::name::{validate_name, IntoPattern, NameError, Pattern, PatternError};
use crate::typed::TypedEvent;

pub use builder::{
    BusBuilder, DEFAULT_CACHE_CAPACITY, DEFAULT_HISTORY, DEFAULT_MAX_DEPTH, DEFAULT_STREAM_CAPACITY,
};
pub use consumer::{
    AckError, Consumer, ConsumerBuilder, ConsumerError, ConsumerSpec, ConsumerTask,
};
pub(crate) use dispatch::panic_message;
pub use emit::EmitBuilder;
pub use error::{ConfigError, EmitError, SubscribeError, WaitError};
pub use handler::{HandlerBuilder, HandlerResult, Subscription};
pub use registry::{SubscriptionInfo, SubscriptionKind};
pub use stats::{OwnerStats, Stats};
pub use stream::EventStream;

use dispatcher::Dispatcher;
use registry::Registry;
use stats::Counters;

/// What every clone of a [`Bus`] shares.
pub(crate) struct Inner {
    /// Where events are committed; the source of truth for seqs.
    log: Arc<dyn EventLog>,
    /// The subscriptions. Locked only by its own methods.
    registry: Registry,
    /// Runs committed events strictly by seq. Invariant: every seq below
    /// `dispatcher.done()` has been dispatched (or skipped as pruned).
    dispatcher: Dispatcher,
    /// Invariant: the newest `history_cap` dispatched events, ascending.
    history: Option<Mutex<VecDeque<SharedEvent>>>,
    /// Invariant: at least 1 when `history` is `Some`.
    history_cap: usize,
    pub(crate) stats: Counters,
    /// Invariant: at least 1 (checked by the builder).
    max_depth: u32,
    /// Queue size of each new sink. Invariant: at least 1.
    stream_capacity: usize,
    /// The runtime for async handlers; `None` means the current one at
    /// registration.
    runtime: Option<tokio::runtime::Handle>,
    /// Checked against every emitted event before its append.
    contracts: crate::contract::Contracts,
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
            .field("sequence", &self.last_seq())
            .field("subscriptions", &self.inner.registry.len())
            .finish()
    }
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
        Ok(self.commit(NewEvent::new(name, data)?, None)?.event)
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
        EmitBuilder::new(self, name)
    }

    /// Emits a typed event under its name.
    pub fn emit_typed<T: TypedEvent>(&self, value: &T) -> Result<SharedEvent, EmitError> {
        EmitBuilder::typed(value, |name| self.event(name))
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
    /// [`consumer`]): its position is kept in the log.
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
        self.inner.registry.remove_owner(owner)
    }

    /// Removes every subscription of `owner` at a seq, returned with how
    /// many were removed: they get the events up to it and none after it
    /// (see `registry.rs`).
    pub(crate) fn hand_over(&self, owner: &str) -> (usize, u64) {
        self.inner.registry.hand_over(owner)
    }

    /// Runs `f` between two events: no event is dispatched while it runs
    /// (from inside a handler: except the rest of the current event).
    /// Emits made in `f` on this thread are dispatched after it.
    pub(crate) fn exclusive<R>(&self, f: impl FnOnce() -> R) -> R {
        self.inner.exclusive(f)
    }

    /// Handler calls, errors and panics of `owner`'s subscriptions (a
    /// plugin's), counted since the owner last had none (for a plugin:
    /// since it was loaded, across reloads); `None` while it has none.
    pub fn owner_stats(&self, owner: &str) -> Option<OwnerStats> {
        self.inner.registry.owner_stats(owner)
    }

    /// Keeps `owner`'s counters while it has no subscription (a plugin
    /// between the two halves of a reload), or stops keeping them.
    pub(crate) fn pin_owner(&self, owner: &Arc<str>, pinned: bool) {
        self.inner.registry.pin_owner(owner, pinned)
    }

    /// The live subscriptions, of one owner or all, in registration order.
    pub fn subscriptions(&self, owner: Option<&str>) -> Vec<SubscriptionInfo> {
        self.inner.registry.infos(owner)
    }

    /// How many subscriptions an event named `name` would reach, wildcard
    /// subscriptions included. `name` must be a valid event name.
    pub fn handlers_for(&self, name: &str) -> Result<usize, NameError> {
        validate_name(name)?;
        Ok(self.inner.registry.count_matching(name))
    }

    /// How many subscriptions were made with exactly `pattern` (not how
    /// many would match it: `handlers_on("a.*")` does not count `a.>`).
    pub fn handlers_on(&self, pattern: &str) -> Result<usize, PatternError> {
        let pattern = Pattern::parse(pattern)?;
        Ok(self.inner.registry.count_with_pattern(&pattern))
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
    pub fn last_seq(&self) -> u64 {
        *self.inner.log.watch().borrow()
    }

    /// Counters since the bus was built.
    pub fn stats(&self) -> Stats {
        let subscriptions = self.inner.registry.len();
        self.inner.stats.snapshot(subscriptions)
    }
}

impl Inner {
    fn remove(&self, id: u64) -> bool {
        self.registry.remove(id)
    }
}

#[cfg(test)]
mod tests;
