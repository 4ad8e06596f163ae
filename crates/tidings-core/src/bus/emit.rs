//! Emitting: commit to the log, then dispatch, with the depth guard.
//!
//! # Contract
//!
//! * **Commit before notify.** An emit appends to the log first; only the
//!   committed events (with their seqs) are handed to dispatch. A failed
//!   emit committed nothing, unless its log failed after the engine
//!   committed (see [`EmitError`](super::EmitError)); a bus over a shared
//!   log then dispatches those events when it reads them back.
//! * **Sync emits return after their handlers.** `emit` and `emit_batch`
//!   block until the log committed and every sync handler of the events
//!   ran; the `_async` variants await the same without blocking the
//!   runtime on the log's I/O.
//! * **Re-entrant emits are queued.** An emit from inside a handler is one
//!   level deeper than the event being handled; past the bus's
//!   `max_depth` it is refused with [`EmitError::DepthExceeded`] (and
//!   counted). A nested emit returns once committed; its dispatch follows
//!   the current event's.
//! * **Contracts before the append.** Every event is checked against the
//!   bus's data contracts before anything is appended; a violation refuses
//!   the whole emit ([`EmitError::Contract`]) with no seq used.
//! * **Cancelled async emits still dispatch.** Dropping an `_async` emit
//!   after its append started leaves the append to finish and be
//!   dispatched in the background.

use std::sync::atomic::Ordering;

use super::dispatch::{block_on, parent_depth, DispatchOnDrop};
use super::{Bus, EmitError};
use crate::event::{NewEvent, Priority, SharedEvent};
use crate::log::{AppendFuture, Committed, EventLog};
use crate::name::NameError;

/// An event being built: made by [`Bus::event`].
#[must_use = "call .emit() or .emit_async() to commit the event"]
pub struct EmitBuilder<'a> {
    bus: &'a Bus,
    /// The event so far, or why its name was refused (reported by `emit`,
    /// so the builder chain stays infallible).
    event: Result<NewEvent, NameError>,
    expected_last: Option<u64>,
}

impl<'a> EmitBuilder<'a> {
    pub(super) fn new(bus: &'a Bus, name: impl Into<String>) -> Self {
        EmitBuilder {
            bus,
            event: NewEvent::new(name, serde_json::Value::Null),
            expected_last: None,
        }
    }

    /// Emits `value` under its name, built by `event` (the bus's or a
    /// plugin's [`Bus::event`]): what every `emit_typed` does.
    pub(crate) fn typed<T: crate::typed::TypedEvent>(
        value: &T,
        event: impl FnOnce(String) -> EmitBuilder<'a>,
    ) -> Result<SharedEvent, EmitError> {
        let data = serde_json::to_value(value).map_err(EmitError::Serialize)?;
        event(value.name().into_owned()).data(data).emit()
    }
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
        Ok(self.bus.commit(self.event?, self.expected_last)?.event)
    }
    /// Commits and dispatches without blocking the async runtime on I/O.
    pub async fn emit_async(self) -> Result<SharedEvent, EmitError> {
        let committed = self
            .bus
            .commit_async(self.event?, self.expected_last)
            .await?;
        Ok(committed.event)
    }
}

impl Bus {
    fn emit_depth(&self) -> Result<u32, EmitError> {
        let parent = parent_depth(self.inner.id());
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

    /// Refuses the emit if an event breaks a contract.
    fn check_contracts<'a>(
        &self,
        events: impl IntoIterator<Item = &'a NewEvent>,
    ) -> Result<(), EmitError> {
        self.inner.contracts.check(events).map_err(|r| {
            self.inner
                .stats
                .contract_refused
                .fetch_add(1, Ordering::Relaxed);
            EmitError::Contract(r)
        })
    }

    /// Checks the contracts and the depth, then starts the append.
    fn begin<E: Emitted>(
        &self,
        emitted: E,
        expected_last: Option<u64>,
    ) -> Result<(u32, AppendFuture<E::Output>), EmitError> {
        self.check_contracts(emitted.events())?;
        let depth = self.emit_depth()?;
        Ok((depth, emitted.append(&*self.inner.log, expected_last)))
    }

    /// Commits (blocking if the log does I/O), then dispatches the
    /// committed events and waits until their handlers ran.
    pub(super) fn commit<E: Emitted>(
        &self,
        emitted: E,
        expected_last: Option<u64>,
    ) -> Result<E::Output, EmitError> {
        let (depth, mut fut) = self.begin(emitted, expected_last)?;
        let out = match fut.try_take() {
            Some(r) => r?,
            None => block_on(fut)?,
        };
        if let Some(seq) = self.inner.after_commit(E::committed(&out), depth) {
            self.inner.dispatcher.wait_done(seq);
        }
        Ok(out)
    }

    /// [`Bus::commit`] without blocking the async runtime: the append and
    /// the wait for the handlers are awaited, and an append whose emitter
    /// is dropped meanwhile is still dispatched ([`DispatchOnDrop`]).
    pub(super) async fn commit_async<E: Emitted>(
        &self,
        emitted: E,
        expected_last: Option<u64>,
    ) -> Result<E::Output, EmitError> {
        let (depth, mut fut) = self.begin(emitted, expected_last)?;
        let out = match fut.try_take() {
            Some(r) => r?,
            None => DispatchOnDrop::new(fut, self.inner.clone(), depth, E::committed).await?,
        };
        if let Some(seq) = self.inner.after_commit(E::committed(&out), depth) {
            self.inner.dispatcher.wait_done_async(seq).await;
        }
        Ok(out)
    }
}

/// What one emit appends: a batch ([`EventLog::append`]) or one event
/// ([`EventLog::append_one`], no batch to allocate). The sync and async
/// commits are written once over it.
pub(super) trait Emitted: Send {
    /// What the log answers.
    type Output: Send + Unpin + 'static;
    /// The events, for the contract check.
    fn events(&self) -> &[NewEvent];
    /// Starts the append.
    fn append(self, log: &dyn EventLog, expected_last: Option<u64>) -> AppendFuture<Self::Output>;
    /// The committed events in the answer.
    fn committed(out: &Self::Output) -> &[Committed];
}

impl Emitted for Vec<NewEvent> {
    type Output = Vec<Committed>;
    fn events(&self) -> &[NewEvent] {
        self
    }
    fn append(self, log: &dyn EventLog, expected_last: Option<u64>) -> AppendFuture<Self::Output> {
        log.append(self, expected_last)
    }
    fn committed(out: &Self::Output) -> &[Committed] {
        out
    }
}

impl Emitted for NewEvent {
    type Output = Committed;
    fn events(&self) -> &[NewEvent] {
        std::slice::from_ref(self)
    }
    fn append(self, log: &dyn EventLog, expected_last: Option<u64>) -> AppendFuture<Self::Output> {
        log.append_one(self, expected_last)
    }
    fn committed(out: &Self::Output) -> &[Committed] {
        std::slice::from_ref(out)
    }
}
