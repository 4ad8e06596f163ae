//! Registering handlers: the builder, handler results, and the handle that
//! unsubscribes on drop.
//!
//! # Contract
//!
//! * A subscription lives while its [`Subscription`] does (or, after
//!   [`Subscription::keep`], until removed by id or owner); once removal
//!   returned, no new call of its handler starts.
//! * A sync handler runs on the dispatching thread, in the order of the
//!   registry (priority, then registration); a `once` handler runs for at
//!   most one event, the first its filter accepts.
//! * An async handler gets every matching event, one at a time, in seq
//!   order, from a stream (queue first, then the log), on the bus's runtime;
//!   events retention removed before it read them are logged and skipped.
//! * Every handler's error or panic is caught, counted (per bus, and per
//!   owner when it has one) and logged; it never reaches the emitter.

use std::fmt::Display;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::sync::{Arc, Weak};

use futures_util::{FutureExt, StreamExt};

use super::dispatch::{Frame, DEPTH};
use super::registry::{SubKind, SyncFn};
use super::{Bus, Inner, SubscribeError};
use crate::event::{Event, Priority, SharedEvent};
use crate::filter::{EventFilter, SharedFilter};
use crate::log::Delivery;
use crate::name::IntoPattern;
use crate::typed::TypedEvent;

/// What a handler may return: `()` or `Result<(), E>` for any displayable
/// `E`. An `Err` is counted in [`crate::Stats::handler_errors`] and logged.
pub trait HandlerResult {
    /// The failure message, if the handler failed.
    fn into_outcome(self) -> Result<(), String>;
}

impl HandlerResult for () {
    fn into_outcome(self) -> Result<(), String> {
        Ok(())
    }
}

impl<E: Display> HandlerResult for Result<(), E> {
    fn into_outcome(self) -> Result<(), String> {
        self.map_err(|e| e.to_string())
    }
}

/// A live subscription. Dropping it unsubscribes (so does
/// [`Subscription::unsubscribe`]); [`Subscription::keep`] keeps it for the
/// bus's lifetime, until [`Bus::unsubscribe`] or [`Bus::unsubscribe_all`].
#[must_use = "dropping a Subscription unsubscribes it; call .keep() to keep it"]
pub struct Subscription {
    bus: Weak<Inner>,
    id: u64,
    detached: bool,
}

impl Subscription {
    pub(crate) fn new(bus: &Bus, id: u64) -> Self {
        Subscription {
            bus: Arc::downgrade(&bus.inner),
            id,
            detached: false,
        }
    }

    /// The subscription id (unique within the bus, in registration order).
    pub fn id(&self) -> u64 {
        self.id
    }

    /// Unsubscribes now. After this returns no new handler call starts.
    pub fn unsubscribe(self) {
        // Drop does it.
    }

    /// Keeps the subscription for the bus's life after this handle is
    /// dropped (until removed by id or owner); returns its id.
    pub fn keep(mut self) -> u64 {
        self.detached = true;
        self.id
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        if !self.detached {
            if let Some(inner) = self.bus.upgrade() {
                Bus { inner }.remove(self.id);
            }
        }
    }
}

/// Options for a new handler: made by [`Bus::handler`].
///
/// ```
/// # use tidings_core::{Bus, Priority};
/// let bus = Bus::new();
/// let sub = bus.handler("trivia.*").priority(Priority::High).owner("stats")
///     .sync(|e| println!("{e}")).unwrap();
/// # drop(sub);
/// ```
#[must_use]
pub struct HandlerBuilder<'a, P> {
    bus: &'a Bus,
    pattern: P,
    priority: Priority,
    owner: Option<Arc<str>>,
    filter: Option<SharedFilter>,
}

impl<'a, P: IntoPattern> HandlerBuilder<'a, P> {
    pub(crate) fn new(bus: &'a Bus, pattern: P) -> Self {
        HandlerBuilder {
            bus,
            pattern,
            priority: Priority::Normal,
            owner: None,
            filter: None,
        }
    }

    /// Only events `filter` accepts reach the handler (see
    /// [`crate::filter`]); a rejected event does not use up a `once`.
    pub fn filter(mut self, filter: impl EventFilter) -> Self {
        self.filter = Some(Arc::new(filter));
        self
    }

    /// Like [`HandlerBuilder::filter`], with a filter already behind an
    /// `Arc` (or none: `None` clears a filter set before).
    pub fn filter_arc(mut self, filter: Option<SharedFilter>) -> Self {
        self.filter = filter;
        self
    }

    /// Dispatch priority (default normal).
    pub fn priority(mut self, priority: Priority) -> Self {
        self.priority = priority;
        self
    }

    /// The owner (a plugin's name): see [`Bus::unsubscribe_all`].
    pub fn owner(mut self, owner: impl Into<Arc<str>>) -> Self {
        self.owner = Some(owner.into());
        self
    }

    fn register_sync(self, f: SyncFn, once: bool) -> Result<Subscription, SubscribeError> {
        let pattern = self.pattern.into_pattern()?;
        let sub = self.bus.inner.registry.register(
            pattern,
            self.priority,
            self.owner,
            SubKind::Sync {
                f,
                once,
                filter: self.filter,
            },
        );
        Ok(Subscription::new(self.bus, sub.id))
    }

    /// A sync handler: runs inline, before `emit` returns.
    pub fn sync<F, R>(self, f: F) -> Result<Subscription, SubscribeError>
    where
        F: Fn(&SharedEvent) -> R + Send + Sync + 'static,
        R: HandlerResult,
    {
        self.register_sync(Box::new(move |e| f(e).into_outcome()), false)
    }

    /// A sync handler that runs for the first matching event only, then
    /// unsubscribes itself.
    pub fn once<F, R>(self, f: F) -> Result<Subscription, SubscribeError>
    where
        F: Fn(&SharedEvent) -> R + Send + Sync + 'static,
        R: HandlerResult,
    {
        self.register_sync(Box::new(move |e| f(e).into_outcome()), true)
    }

    /// A sync handler for a typed event: receives the decoded payload and
    /// the envelope. A payload that does not decode counts as a handler
    /// error.
    pub fn typed<T, F, R>(self, f: F) -> Result<Subscription, SubscribeError>
    where
        T: TypedEvent,
        F: Fn(&T, &Event) -> R + Send + Sync + 'static,
        R: HandlerResult,
    {
        self.register_sync(
            Box::new(move |e| {
                let t = crate::typed::decode::<T>(e)?;
                f(&t, e).into_outcome()
            }),
            false,
        )
    }

    /// An async handler: runs on tokio after the commit, one event at a time
    /// in seq order (an ordered queue per subscription), lossless (it catches
    /// up from the log if its queue overflows). Needs a tokio runtime: the
    /// bus's ([`crate::BusBuilder::runtime`]) or the current one.
    pub fn run_async<F, Fut, R>(self, f: F) -> Result<Subscription, SubscribeError>
    where
        F: Fn(SharedEvent) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = R> + Send + 'static,
        R: HandlerResult,
    {
        let handle = self.bus.runtime()?;
        let pattern = self.pattern.into_pattern()?;
        let bus = self.bus.clone();
        let mut stream = bus.open_stream(
            vec![pattern],
            self.priority,
            self.owner,
            true,
            None,
            self.filter,
        );
        let id = stream.id();
        // The counters the subscription was registered with (the owner's
        // entry while it has this one).
        let counters = stream.owner_counters();
        let task_bus = bus.clone();
        handle.spawn(async move {
            while let Some(item) = stream.next().await {
                let event = match item {
                    Ok(Delivery::Event(e)) => e,
                    Ok(Delivery::Lagged { missed, resume_from }) => {
                        tracing::warn!(subscription = id, missed, resume_from, "async handler lagged");
                        continue;
                    }
                    Err(err) => {
                        tracing::error!(subscription = id, %err, "async handler could not read the log");
                        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                        continue;
                    }
                };
                let depth = stream.last_depth();
                let call = AssertUnwindSafe(async { f(event.clone()).await.into_outcome() });
                let frame = Frame {
                    bus: task_bus.inner.id(),
                    depth,
                };
                let outcome = DEPTH.scope(frame, call.catch_unwind()).await;
                if let Some(c) = &counters {
                    c.record(&outcome);
                }
                task_bus.inner.record_outcome(&event, id, outcome);
            }
        });
        Ok(Subscription::new(self.bus, id))
    }
}
