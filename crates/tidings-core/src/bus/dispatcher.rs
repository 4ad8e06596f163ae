//! Ordered dispatch by combining.
//!
//! Events are committed concurrently (so a log can group-commit them) and
//! arrive here in any order. Whoever hands in the batch whose turn it is,
//! while nobody else is dispatching, becomes the *combiner*: it dispatches
//! that batch and then every consecutive batch already queued. Everyone
//! else queues their batch and returns at once; an emitter that must not
//! return before its handlers ran then waits for [`Dispatcher::done`] to
//! pass its seqs, blocking (sync) or awaiting (async).
//!
//! Nobody ever waits *for a turn* while holding something another emitter
//! needs, so there is no deadlock between emitters, including async tasks
//! sharing a runtime's workers, and an emit from inside a handler simply
//! queues behind the event being dispatched.
//!
//! [`Dispatcher::exclusive`] runs a closure between two events (the plugin
//! host swaps a plugin's subscriptions there): it waits, holding nothing,
//! until nobody dispatches, and then acts as the combiner for the closure's
//! duration; what is submitted meanwhile is queued and dispatched after it.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering::SeqCst};

use parking_lot::{Condvar, Mutex};

use crate::event::SharedEvent;

/// Identifies the calling thread: the address of a thread-local, unique
/// among live threads (cheaper than `thread::current().id()`, which
/// clones an `Arc`).
fn thread_token() -> usize {
    thread_local!(static TOKEN: u8 = const { 0 });
    TOKEN.with(|t| t as *const u8 as usize)
}

/// How [`Dispatcher::wait_done`] waits before it parks: rounds of busy
/// spins, doubling from 1 pause to `2^(SPIN_LOOPS-1)` (about a microsecond
/// in all), then yields up to `SPIN_ROUNDS` rounds in all. A queued batch is
/// usually dispatched within that time (the combiner runs a few handlers),
/// and parking on the condvar costs a futex sleep and wake per emit: with 4
/// threads emitting into one bus on 2 cores that was 370k emits/s, against
/// 1.05M/s with the spin (crates/tidings-bench/results/EARLIER.md, "Several
/// threads emitting").
const SPIN_LOOPS: u32 = 6;
const SPIN_ROUNDS: u32 = 8;

/// A committed batch waiting for its turn.
struct Queued {
    /// Consecutive seqs, ascending, non-empty.
    events: Vec<SharedEvent>,
    depth: u32,
}

struct State {
    /// Invariant: every seq below `next` has been dispatched. While a
    /// combiner runs a batch, `next` is that batch's first seq (its events
    /// are being dispatched); no seq past the batch has started.
    next: u64,
    /// Batches not yet dispatched, by first seq. A key may be below `next`
    /// (a batch handed in by two sources, or one whose gap was skipped):
    /// when popped, its events below `next` are dropped, not dispatched
    /// again.
    ready: BTreeMap<u64, Queued>,
    /// The thread currently dispatching, if any.
    combiner: Option<usize>,
    /// Seqs below this that were never handed in are gone (a shared log
    /// pruned them before this bus dispatched them): a combiner that
    /// reaches such a gap moves past it instead of waiting. Set by
    /// [`Dispatcher::skip_to`] while someone dispatches; only grows.
    skip: u64,
}

/// What [`Dispatcher::submit`] did with a batch.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Submitted {
    /// Dispatched by the caller before returning.
    Dispatched,
    /// Queued for another thread's combiner; wait for `done` to pass it.
    Queued,
    /// Queued behind the event this very thread is dispatching (an emit
    /// from inside a handler); it will run when that event is done.
    Nested,
}

/// Releases the combiner role even if a bug unwinds through `run`.
struct Release<'a>(&'a Dispatcher);

impl Drop for Release<'_> {
    fn drop(&mut self) {
        if std::thread::panicking() {
            let mut st = self.0.state.lock();
            st.combiner = None;
        }
    }
}

pub(crate) struct Dispatcher {
    state: Mutex<State>,
    /// Every seq below this has been fully dispatched. Only grows.
    done: AtomicU64,
    sync_waiters: AtomicUsize,
    cv: Condvar,
    async_waiters: AtomicUsize,
    notify: tokio::sync::Notify,
}

impl Dispatcher {
    /// A dispatcher whose first seq is `next`.
    pub fn new(next: u64) -> Self {
        Dispatcher {
            state: Mutex::new(State {
                next,
                ready: BTreeMap::new(),
                combiner: None,
                skip: 0,
            }),
            done: AtomicU64::new(next),
            sync_waiters: AtomicUsize::new(0),
            cv: Condvar::new(),
            async_waiters: AtomicUsize::new(0),
            notify: tokio::sync::Notify::new(),
        }
    }

    /// Whether the calling thread is the one dispatching (it runs a sync
    /// handler, or an [`exclusive`](Self::exclusive) closure): it must not
    /// wait for a seq, which may be queued behind the event it runs.
    pub fn dispatching_here(&self) -> bool {
        self.state.lock().combiner == Some(thread_token())
    }

    /// Every seq below the returned value has been dispatched.
    pub fn done(&self) -> u64 {
        self.done.load(SeqCst)
    }

    /// Hands in the committed batch `events` (consecutive seqs starting at
    /// `first`). `run` dispatches one event at the given depth; it is
    /// called on this thread, in seq order, for this batch and any others
    /// this thread ends up combining.
    pub fn submit<'a, I>(
        &self,
        first: u64,
        events: I,
        depth: u32,
        run: &dyn Fn(&SharedEvent, u32),
    ) -> Submitted
    where
        I: Iterator<Item = &'a SharedEvent> + Clone,
    {
        let me = thread_token();
        let mut st = self.state.lock();
        // The same seqs may arrive twice (the emitter and, on a shared log,
        // the external-appends task): whatever is below `next` was
        // dispatched.
        let mut first = first;
        if first < st.next {
            let mut rest = events.clone().filter(|e| e.seq >= st.next).peekable();
            match rest.peek() {
                None => return Submitted::Dispatched,
                Some(e) => first = e.seq,
            }
        }
        let fresh = {
            let next = st.next;
            events.filter(move |e| e.seq >= next)
        };
        if st.combiner.is_some() || st.next != first {
            let nested = st.combiner == Some(me);
            let events: Vec<SharedEvent> = fresh.cloned().collect();
            // Two sources may queue batches starting at the same seq: keep
            // the longer (both hold the same events where they overlap).
            if st
                .ready
                .get(&first)
                .is_none_or(|q| q.events.len() < events.len())
            {
                st.ready.insert(first, Queued { events, depth });
            }
            return if nested {
                Submitted::Nested
            } else {
                Submitted::Queued
            };
        }
        st.combiner = Some(me);
        drop(st);
        let _release = Release(self);

        let mut last = first;
        for e in fresh {
            run(e, depth);
            last = e.seq;
        }
        let mut st = self.state.lock();
        st.next = last + 1;
        self.combine_and_release(st, run);
        Submitted::Dispatched
    }

    /// Runs `f` while no event is being dispatched, so the subscriptions
    /// `f` changes are changed between two events: it waits until no other
    /// thread is dispatching, takes the combiner role, runs `f`, then
    /// dispatches (with `run`) every batch queued meanwhile and releases
    /// the role. Emits `f` makes on this thread are nested: they are
    /// queued and dispatched after `f`, like an emit from a handler.
    ///
    /// Called on the thread that is dispatching (from inside a handler),
    /// `f` runs at once: the event being dispatched is the boundary.
    pub fn exclusive<R>(&self, f: impl FnOnce() -> R, run: &dyn Fn(&SharedEvent, u32)) -> R {
        let me = thread_token();
        let mut st = self.state.lock();
        if st.combiner == Some(me) {
            drop(st);
            return f();
        }
        while st.combiner.is_some() {
            self.sync_waiters.fetch_add(1, SeqCst);
            self.cv.wait(&mut st);
            self.sync_waiters.fetch_sub(1, SeqCst);
        }
        st.combiner = Some(me);
        drop(st);
        let out = std::panic::catch_unwind(std::panic::AssertUnwindSafe(f));
        // Even if `f` panicked, what was queued meanwhile must be
        // dispatched, or every later event would wait for it.
        self.combine_and_release(self.state.lock(), run);
        match out {
            Ok(r) => r,
            Err(panic) => std::panic::resume_unwind(panic),
        }
    }

    /// As the combiner: dispatches every queued batch whose turn it is,
    /// then releases the role and publishes progress.
    fn combine_and_release<'a>(
        &'a self,
        mut st: parking_lot::MutexGuard<'a, State>,
        run: &dyn Fn(&SharedEvent, u32),
    ) {
        let _release = Release(self);
        loop {
            let next = st.next;
            let first_ready = st.ready.first_key_value().map(|(&k, _)| k);
            match first_ready {
                Some(k) if k <= next => {
                    let (_, q) = st.ready.pop_first().expect("just seen");
                    if q.events.last().is_none_or(|e| e.seq < next) {
                        continue; // already dispatched from another source
                    }
                    self.publish_done(next, &st);
                    drop(st);
                    let mut last = next - 1;
                    for e in q.events.iter().filter(|e| e.seq >= next) {
                        run(e, q.depth);
                        last = e.seq;
                    }
                    st = self.state.lock();
                    st.next = last + 1;
                }
                // A gap the log no longer holds: on to the next batch
                // held, or to the first seq the log still has.
                _ if st.skip > next => {
                    st.next = first_ready.map_or(st.skip, |k| k.min(st.skip));
                }
                _ => break,
            }
        }
        st.combiner = None;
        let next = st.next;
        self.publish_done(next, &st);
        drop(st);
    }

    /// Declares every seq below `seq` that was never handed in gone
    /// (pruned from a shared log before this bus dispatched it): dispatch
    /// moves past those gaps, and still runs the batches it holds. While
    /// someone dispatches, that combiner moves past the gaps when it
    /// reaches them; otherwise the caller does, as the combiner, running
    /// held batches with `run`.
    pub fn skip_to(&self, seq: u64, run: &dyn Fn(&SharedEvent, u32)) {
        let mut st = self.state.lock();
        st.skip = st.skip.max(seq);
        if st.combiner.is_some() || st.skip <= st.next {
            return;
        }
        st.combiner = Some(thread_token());
        self.combine_and_release(st, run);
    }

    /// Records progress (called with the state lock held) and wakes waiters.
    fn publish_done(&self, next: u64, _locked: &State) {
        self.done.store(next, SeqCst);
        if self.sync_waiters.load(SeqCst) > 0 {
            self.cv.notify_all();
        }
        if self.async_waiters.load(SeqCst) > 0 {
            self.notify.notify_waiters();
        }
    }

    /// Blocks until `seq` has been dispatched: spins briefly (see
    /// [`SPIN_ROUNDS`]), then parks on the condvar.
    pub fn wait_done(&self, seq: u64) {
        for round in 0..SPIN_ROUNDS {
            if self.done.load(SeqCst) > seq {
                return;
            }
            if round < SPIN_LOOPS {
                for _ in 0..(1u32 << round) {
                    std::hint::spin_loop();
                }
            } else {
                std::thread::yield_now();
            }
        }
        self.sync_waiters.fetch_add(1, SeqCst);
        let mut st = self.state.lock();
        while self.done.load(SeqCst) <= seq {
            self.cv.wait(&mut st);
        }
        drop(st);
        self.sync_waiters.fetch_sub(1, SeqCst);
    }

    /// Waits, without blocking the thread, until `seq` has been dispatched.
    /// Cancel-safe: a waiter dropped mid-wait (a timed-out or cancelled
    /// caller) counts itself out again.
    pub async fn wait_done_async(&self, seq: u64) {
        /// Counts one async waiter while it lives.
        struct Waiting<'a>(&'a AtomicUsize);
        impl Drop for Waiting<'_> {
            fn drop(&mut self) {
                self.0.fetch_sub(1, SeqCst);
            }
        }
        while self.done.load(SeqCst) <= seq {
            self.async_waiters.fetch_add(1, SeqCst);
            let _waiting = Waiting(&self.async_waiters);
            let notified = self.notify.notified();
            let mut notified = std::pin::pin!(notified);
            notified.as_mut().enable();
            if self.done.load(SeqCst) <= seq {
                notified.await;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::NewEvent;
    use std::sync::Arc;

    fn ev(seq: u64) -> SharedEvent {
        Arc::new(
            NewEvent::new("t", serde_json::Value::Null)
                .unwrap()
                .commit(seq),
        )
    }

    #[test]
    fn out_of_order_submissions_are_dispatched_in_order() {
        let d = Arc::new(Dispatcher::new(1));
        let order = Arc::new(Mutex::new(Vec::new()));
        let mut hs = Vec::new();
        for seq in (1..=40u64).rev() {
            let (d, order) = (d.clone(), order.clone());
            hs.push(std::thread::spawn(move || {
                let e = ev(seq);
                let o = order.clone();
                d.submit(seq, std::iter::once(&e), 0, &move |e, _| {
                    o.lock().push(e.seq)
                });
                d.wait_done(seq);
                assert!(
                    order.lock().contains(&seq),
                    "{seq} returned before it was dispatched"
                );
            }));
        }
        for h in hs {
            h.join().unwrap();
        }
        assert_eq!(*order.lock(), (1..=40).collect::<Vec<_>>());
        assert_eq!(d.done(), 41);
    }

    /// A waiter whose batch takes longer to dispatch than the spin lasts
    /// parks, and still returns only after its event ran.
    #[test]
    fn a_waiter_outlasting_the_spin_returns_after_its_dispatch() {
        let d = Arc::new(Dispatcher::new(1));
        let order = Arc::new(Mutex::new(Vec::new()));
        let run = {
            let order = order.clone();
            move |e: &SharedEvent, _| {
                if e.seq == 1 {
                    // The combiner is slow: far beyond the spin.
                    std::thread::sleep(std::time::Duration::from_millis(50));
                }
                order.lock().push(e.seq);
            }
        };
        let (one, two) = (ev(1), ev(2));
        std::thread::scope(|s| {
            s.spawn(|| {
                d.submit(1, std::iter::once(&one), 0, &run);
            });
            std::thread::sleep(std::time::Duration::from_millis(10));
            assert_eq!(
                d.submit(2, std::iter::once(&two), 0, &run),
                Submitted::Queued
            );
            d.wait_done(2);
            assert_eq!(*order.lock(), vec![1, 2], "returned before its dispatch");
        });
    }

    #[test]
    fn a_gap_holds_later_batches_until_filled() {
        let d = Dispatcher::new(1);
        let seen = Mutex::new(Vec::new());
        let run = |e: &SharedEvent, _| seen.lock().push(e.seq);
        let (e2, e3, e1) = (ev(2), ev(3), ev(1));
        assert_eq!(
            d.submit(2, [&e2, &e3].into_iter(), 0, &run),
            Submitted::Queued
        );
        assert!(seen.lock().is_empty());
        assert_eq!(
            d.submit(1, std::iter::once(&e1), 0, &run),
            Submitted::Dispatched
        );
        assert_eq!(*seen.lock(), vec![1, 2, 3]);
        assert_eq!(d.done(), 4);
    }

    #[test]
    fn seqs_arriving_twice_are_dispatched_once() {
        let d = Dispatcher::new(1);
        let seen = Mutex::new(Vec::new());
        let run = |e: &SharedEvent, _| seen.lock().push(e.seq);
        let evs: Vec<SharedEvent> = (1..=5).map(ev).collect();
        // The external-appends task queues 2..=3 and dispatches 1; the emitter then
        // brings 1..=3 again, and 3..=5 overlaps both.
        assert_eq!(d.submit(2, evs[1..3].iter(), 0, &run), Submitted::Queued);
        assert_eq!(
            d.submit(1, evs[0..1].iter(), 0, &run),
            Submitted::Dispatched
        );
        assert_eq!(
            d.submit(1, evs[0..3].iter(), 0, &run),
            Submitted::Dispatched
        );
        assert_eq!(
            d.submit(3, evs[2..5].iter(), 0, &run),
            Submitted::Dispatched
        );
        assert_eq!(*seen.lock(), vec![1, 2, 3, 4, 5]);
        // A queued batch overlapping what was dispatched meanwhile.
        let evs: Vec<SharedEvent> = (6..=9).map(ev).collect();
        assert_eq!(d.submit(7, evs[1..4].iter(), 0, &run), Submitted::Queued);
        assert_eq!(
            d.submit(6, evs[0..2].iter(), 0, &run),
            Submitted::Dispatched
        );
        assert_eq!(*seen.lock(), (1..=9).collect::<Vec<_>>());
    }

    #[test]
    fn skip_to_moves_past_pruned_seqs() {
        let d = Dispatcher::new(1);
        let seen = Mutex::new(Vec::new());
        let run = |e: &SharedEvent, _| seen.lock().push(e.seq);
        d.skip_to(10, &run);
        let e = ev(10);
        assert_eq!(
            d.submit(10, std::iter::once(&e), 0, &run),
            Submitted::Dispatched
        );
        assert_eq!(*seen.lock(), vec![10]);
        assert_eq!(d.done(), 11);
    }

    #[test]
    fn a_skip_asked_while_dispatching_is_kept_for_the_gap() {
        let d = Dispatcher::new(1);
        let seen = Mutex::new(Vec::new());
        let (e1, e3, e7) = (ev(1), ev(3), ev(7));
        // Asked while this batch runs (the combiner is busy): seqs below 7
        // that were never handed in are gone.
        let run = |e: &SharedEvent, _| {
            seen.lock().push(e.seq);
            if e.seq == 1 {
                d.skip_to(7, &|_, _| unreachable!("the combiner runs what is held"));
            }
        };
        // 3 is held already: it is dispatched, the gaps around it skipped.
        assert_eq!(
            d.submit(3, std::iter::once(&e3), 0, &run),
            Submitted::Queued
        );
        assert_eq!(
            d.submit(1, std::iter::once(&e1), 0, &run),
            Submitted::Dispatched
        );
        assert_eq!(*seen.lock(), vec![1, 3]);
        assert_eq!(d.done(), 7, "past the pruned 2 and 4-6");
        assert_eq!(
            d.submit(7, std::iter::once(&e7), 0, &run),
            Submitted::Dispatched
        );
        assert_eq!(*seen.lock(), vec![1, 3, 7]);
    }

    #[test]
    fn a_skip_while_idle_still_runs_the_batches_held() {
        let d = Dispatcher::new(1);
        let seen = Mutex::new(Vec::new());
        let run = |e: &SharedEvent, _| seen.lock().push(e.seq);
        let e3 = ev(3);
        assert_eq!(
            d.submit(3, std::iter::once(&e3), 0, &run),
            Submitted::Queued
        );
        // 1, 2 and 4 were pruned before anyone handed them in; 3 is held.
        d.skip_to(5, &run);
        assert_eq!(*seen.lock(), vec![3]);
        assert_eq!(d.done(), 5);
    }

    #[test]
    fn exclusive_runs_between_two_events() {
        let d = Dispatcher::new(1);
        let seen = Mutex::new(Vec::new());
        let run = |e: &SharedEvent, _| seen.lock().push(e.seq);
        let (e1, e2) = (ev(1), ev(2));
        let inside = d.exclusive(
            || {
                // Another thread's batch waits; this thread's is nested.
                let other = std::thread::scope(|s| {
                    s.spawn(|| d.submit(1, std::iter::once(&e1), 0, &run))
                        .join()
                        .unwrap()
                });
                let mine = d.submit(2, std::iter::once(&e2), 0, &run);
                (other, mine, seen.lock().len())
            },
            &run,
        );
        assert_eq!(inside, (Submitted::Queued, Submitted::Nested, 0));
        assert_eq!(*seen.lock(), vec![1, 2], "dispatched right after");
        assert_eq!(d.done(), 3);
        // From inside dispatch (the combiner's own thread) it runs at once.
        let e3 = ev(3);
        let nested = |e: &SharedEvent, _| {
            seen.lock().push(e.seq);
            d.exclusive(|| seen.lock().push(100), &|_, _| unreachable!());
        };
        d.submit(3, std::iter::once(&e3), 0, &nested);
        assert_eq!(*seen.lock(), vec![1, 2, 3, 100]);
    }

    #[test]
    fn a_panic_in_exclusive_still_dispatches_what_was_queued() {
        let d = Dispatcher::new(1);
        let seen = Mutex::new(Vec::new());
        let run = |e: &SharedEvent, _| seen.lock().push(e.seq);
        let e1 = ev(1);
        let out = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            d.exclusive(
                || {
                    d.submit(1, std::iter::once(&e1), 0, &run);
                    panic!("in f");
                },
                &run,
            )
        }));
        assert!(out.is_err());
        assert_eq!(*seen.lock(), vec![1]);
        let e2 = ev(2);
        assert_eq!(
            d.submit(2, std::iter::once(&e2), 0, &run),
            Submitted::Dispatched,
            "the combiner role was released"
        );
    }

    #[tokio::test]
    async fn a_cancelled_async_waiter_counts_itself_out() {
        let d = Dispatcher::new(1);
        let waiting =
            tokio::time::timeout(std::time::Duration::from_millis(20), d.wait_done_async(5));
        assert!(waiting.await.is_err(), "seq 5 was never dispatched");
        assert_eq!(d.async_waiters.load(SeqCst), 0);
    }

    #[tokio::test]
    async fn async_waiters_are_woken() {
        let d = Arc::new(Dispatcher::new(1));
        let d2 = d.clone();
        let waiter = tokio::spawn(async move { d2.wait_done_async(1).await });
        tokio::task::yield_now().await;
        let e = ev(1);
        d.submit(1, std::iter::once(&e), 0, &|_, _| ());
        tokio::time::timeout(std::time::Duration::from_secs(5), waiter)
            .await
            .expect("woken")
            .unwrap();
    }
}
