//! Dispatching committed events to the subscriptions that match them.
//!
//! # Contract
//!
//! * Only committed events are dispatched, and only through the
//!   [`Dispatcher`](super::dispatcher::Dispatcher), which runs them strictly
//!   by seq: every subscriber sees the log's order, with no gap and no
//!   duplicate (duplicates of an idempotent emit are not dispatched).
//! * Within one event: higher priority first, then registration order (the
//!   registry's match order). A subscription removed before its turn is
//!   skipped; no call starts after removal returned.
//! * A sync handler's error or panic is caught, counted and logged; the
//!   other handlers still run. Streams and async handlers get the event in
//!   their queue, with its emit depth.
//! * While a thread runs sync handlers, [`DISPATCHING`] holds a [`Frame`]
//!   (which bus, what emit depth) for the event they handle, innermost last
//!   (async handlers carry theirs in [`DEPTH`]). The emit depth guard reads
//!   only frames of its own bus, so one bus's depth never leaks into
//!   another's; a cycle through several buses still ends, since every bus's
//!   own depth grows on each turn.
//! * A committed append is always dispatched, even if its emitter is
//!   cancelled ([`DispatchOnDrop`]): an undispatched seq would hold back
//!   every later event.

use std::cell::RefCell;
use std::future::Future;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::task::{Context, Poll, Wake};

use super::dispatcher::Submitted;
use super::registry::SubKind;
use super::Inner;
use crate::event::SharedEvent;
use crate::log::{AppendError, AppendFuture, Committed};

/// The emit depth of an event being handled, and the bus it belongs to.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Frame {
    /// [`Inner::id`] of the bus dispatching the event.
    pub(crate) bus: usize,
    /// 0 for an event emitted outside any handler of that bus.
    pub(crate) depth: u32,
}

tokio::task_local! {
    /// The frame of the event an async handler is handling.
    pub(crate) static DEPTH: Frame;
}

thread_local! {
    /// The frames of the events this thread is dispatching to sync
    /// handlers, innermost last (nested only when a handler of one bus
    /// emits into another bus).
    pub(super) static DISPATCHING: RefCell<Vec<Frame>> = const { RefCell::new(Vec::new()) };
}

/// The depth of the innermost event of bus `bus` that this thread or task
/// is handling, if any.
pub(super) fn parent_depth(bus: usize) -> Option<u32> {
    DISPATCHING
        .with(|frames| {
            frames
                .borrow()
                .iter()
                .rev()
                .find(|f| f.bus == bus)
                .map(|f| f.depth)
        })
        .or_else(|| {
            DEPTH
                .try_with(|f| (f.bus == bus).then_some(f.depth))
                .ok()
                .flatten()
        })
}

/// Pops this thread's innermost [`Frame`] when dropped.
struct PopFrame;

impl Drop for PopFrame {
    fn drop(&mut self) {
        DISPATCHING.with(|f| f.borrow_mut().pop());
    }
}

impl Inner {
    /// This bus's identity while it lives (its address): what [`Frame`]s
    /// name.
    pub(crate) fn id(&self) -> usize {
        self as *const Inner as usize
    }

    /// Hands a committed batch to the dispatcher. Returns the seq the
    /// emitter must wait for before returning (its handlers have not all run
    /// yet), or `None` if it must not wait (an emit from inside a handler,
    /// dispatched after the current event).
    pub(super) fn after_commit(&self, committed: &[Committed], depth: u32) -> Option<u64> {
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
        } else if self.dispatcher.dispatching_here() {
            // Only duplicates, emitted from inside a handler: their
            // originals may be queued behind the event this very thread is
            // dispatching, so waiting for them would never end.
            return None;
        }
        Some(wait_for)
    }

    /// Hands consecutive committed events to the dispatcher.
    pub(super) fn submit(&self, events: &[SharedEvent], depth: u32) -> Submitted {
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
        self.dispatcher
            .submit(first, events, depth, &|e, d| self.run_one(e, d))
    }

    /// Moves dispatch past seqs below `seq` the log no longer holds (see
    /// [`super::dispatcher::Dispatcher::skip_to`]).
    pub(super) fn skip_to(&self, seq: u64) {
        self.dispatcher.skip_to(seq, &|e, d| self.run_one(e, d));
    }

    /// Runs `f` between two events (see [`super::dispatcher::Dispatcher::exclusive`]):
    /// no event is dispatched while it runs, except, when called from
    /// inside a handler, the rest of the event being dispatched.
    pub(crate) fn exclusive<R>(&self, f: impl FnOnce() -> R) -> R {
        self.dispatcher.exclusive(f, &|e, d| self.run_one(e, d))
    }

    /// Dispatches one event with its [`Frame`] on [`DISPATCHING`].
    fn run_one(&self, event: &SharedEvent, depth: u32) {
        let frame = Frame {
            bus: self.id(),
            depth,
        };
        DISPATCHING.with(|f| f.borrow_mut().push(frame));
        // Popped on unwind too: a handler's panic is caught inside
        // `dispatch_one`, but the guard keeps the stack true regardless.
        let _pop = PopFrame;
        self.dispatch_one(event, depth);
    }

    fn dispatch_one(&self, event: &SharedEvent, depth: u32) {
        if let Some(ring) = &self.history {
            let mut ring = ring.lock();
            if ring.len() >= self.history_cap {
                ring.pop_front();
            }
            ring.push_back(event.clone());
        }
        let subs = self.registry.lookup(event);
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
                    if let Some(c) = &sub.counters {
                        c.record(&outcome);
                    }
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
                let message = panic_message(&*panic);
                tracing::error!(seq = event.seq, name = %event.name, subscription, %message, "handler panicked");
            }
        }
    }
}

/// The message a panic was raised with.
pub(crate) fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    panic
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "non-string panic payload".to_owned())
}

/// Awaits an append; if dropped before it completes (the emitter was
/// cancelled), finishes it on the runtime and dispatches the result, so a
/// committed event is never left undispatched (which would hold back every
/// later event).
pub(super) struct DispatchOnDrop<T: Send + Unpin + 'static> {
    /// `None` once the append completed (and was handed to the poller);
    /// `Some` in `drop` means nobody saw the result, so `drop` finishes it.
    fut: Option<AppendFuture<T>>,
    inner: Arc<Inner>,
    /// Emit depth of the append, for the dispatch of its events.
    depth: u32,
    /// The committed events in the append's answer.
    committed: fn(&T) -> &[Committed],
}

impl<T: Send + Unpin + 'static> DispatchOnDrop<T> {
    pub(super) fn new(
        fut: AppendFuture<T>,
        inner: Arc<Inner>,
        depth: u32,
        committed: fn(&T) -> &[Committed],
    ) -> Self {
        DispatchOnDrop {
            fut: Some(fut),
            inner,
            depth,
            committed,
        }
    }
}

impl<T: Send + Unpin + 'static> Future for DispatchOnDrop<T> {
    type Output = Result<T, AppendError>;
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

impl<T: Send + Unpin + 'static> Drop for DispatchOnDrop<T> {
    fn drop(&mut self) {
        let Some(fut) = self.fut.take() else { return };
        let inner = self.inner.clone();
        let (depth, committed) = (self.depth, self.committed);
        let finish = async move {
            if let Ok(out) = fut.await {
                // Nobody is waiting for this emit any more.
                let _ = inner.after_commit(committed(&out), depth);
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
pub(super) fn block_on<F: Future>(fut: F) -> F::Output {
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
