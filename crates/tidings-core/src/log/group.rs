//! Group commit for backends whose writes are async calls to an engine
//! (NATS, Redis): concurrent appends are written together, and an append
//! that finds nobody writing is written by its own caller, with no task
//! hand-off.
//!
//! # Contract
//!
//! * [`GroupCommit::submit`] runs `write` on the caller's own request, at
//!   once, when no write is running and nothing is queued. Otherwise the
//!   request is queued, and a *drainer* writes what is queued, in queue
//!   order, up to `max_group` units per write, until the queue is empty.
//!   A drainer is a task spawned when a write finished and found a queue,
//!   or, while fewer than `max_in_flight` writes run, when a request is
//!   queued and no drainer is starting yet: it takes its group when it
//!   first runs, so the requests queued meanwhile go together. (Writing a
//!   second caller inline whenever a slot was free sent many groups of
//!   one: callers answered together come back one by one, and the first
//!   took the free slot alone.)
//! * Queued requests never overtake each other: a caller writes inline
//!   only when the queue is empty, and drainers take from its front.
//! * At most `max_in_flight` writes run at once (inline and drained
//!   together); a backend whose writes must not overlap uses 1.
//! * Every queued request is handed to exactly one `write`, or dropped
//!   unwritten if no runtime is left to spawn a drainer on (its reply
//!   channel then closes). Dropping an inline caller's future cancels only
//!   its own request; the queue is handed on as if it had finished.
//!
//! The backend answers each request itself (a reply channel inside it);
//! this type only decides who writes what, when.

use std::collections::VecDeque;
use std::sync::Arc;

use parking_lot::Mutex;

use super::BoxFuture;

/// What a backend provides to [`GroupCommit`]: usually its shared state,
/// which holds the `GroupCommit` too.
pub trait GroupWriter: Send + Sync + Sized + 'static {
    /// One caller's append, with its reply channel.
    type Request: Send + 'static;

    /// The backend's group commit.
    fn group_commit(&self) -> &GroupCommit<Self>;

    /// The size of a request in the unit `max_group` counts (events).
    fn units(request: &Self::Request) -> usize;

    /// Writes `group` (never empty, in queue order) and answers each of its
    /// requests.
    fn write_group(self: Arc<Self>, group: Vec<Self::Request>) -> BoxFuture<()>;
}

/// The queue and the count of running writes; see the module docs.
pub struct GroupCommit<W: GroupWriter> {
    /// `queue` holds requests nobody is writing yet, in arrival order;
    /// `running` counts writes in progress (inline callers and drainers),
    /// never above `max_in_flight` (a spawned drainer counts from its
    /// spawn). A request is queued only while some write runs, and every
    /// write, when it ends, hands a non-empty queue to a drainer, so a
    /// non-empty queue always has a writer coming.
    state: Mutex<State<W::Request>>,
    max_in_flight: usize,
    max_group: usize,
}

struct State<R> {
    queue: VecDeque<R>,
    running: usize,
    /// A drainer was spawned for a free slot (counted in `running`) and
    /// has not taken its group yet: no second one is spawned meanwhile.
    starting: bool,
}

impl<W: GroupWriter> GroupCommit<W> {
    /// At most `max_in_flight` writes at once (at least 1), at most
    /// `max_group` units per drained group (a larger request goes alone).
    pub fn new(max_in_flight: usize, max_group: usize) -> GroupCommit<W> {
        GroupCommit {
            state: Mutex::new(State {
                queue: VecDeque::new(),
                running: 0,
                starting: false,
            }),
            max_in_flight: max_in_flight.max(1),
            max_group: max_group.max(1),
        }
    }

    /// Writes `request` inline, or queues it for a drainer. Returns when the
    /// inline write finished, or at once when queued: the caller then waits
    /// on its request's reply channel either way.
    pub async fn submit(writer: &Arc<W>, request: W::Request) {
        let this = writer.group_commit();
        let request = {
            let mut st = this.state.lock();
            if st.running == 0 && st.queue.is_empty() {
                st.running += 1;
                request
            } else {
                st.queue.push_back(request);
                if st.running < this.max_in_flight && !st.starting {
                    // Without a runtime the running write's drainer takes
                    // the queue instead.
                    if let Ok(rt) = tokio::runtime::Handle::try_current() {
                        st.running += 1;
                        st.starting = true;
                        rt.spawn(start_drain(writer.clone()));
                    }
                }
                return;
            }
        };
        let slot = Slot {
            writer: writer.clone(),
        };
        writer.clone().write_group(vec![request]).await;
        drop(slot);
    }

    /// Takes the next group from the front of the queue, or gives up the
    /// caller's slot when the queue is empty.
    fn next_group(&self) -> Option<Vec<W::Request>> {
        self.take_group(&mut self.state.lock())
    }

    /// [`GroupCommit::next_group`] with the state locked.
    fn take_group(&self, st: &mut State<W::Request>) -> Option<Vec<W::Request>> {
        let first = match st.queue.pop_front() {
            Some(r) => r,
            None => {
                st.running -= 1;
                return None;
            }
        };
        let mut units = W::units(&first);
        let mut group = vec![first];
        while let Some(next) = st.queue.front() {
            let u = W::units(next);
            if units + u > self.max_group {
                break;
            }
            units += u;
            group.extend(st.queue.pop_front());
        }
        Some(group)
    }

    /// How many requests wait in the queue (for tests and stats).
    pub fn queued(&self) -> usize {
        self.state.lock().queue.len()
    }
}

/// A running write's place: when it ends (finished or cancelled), the
/// queue is handed to a drainer, or the place is given up.
struct Slot<W: GroupWriter> {
    writer: Arc<W>,
}

impl<W: GroupWriter> Drop for Slot<W> {
    fn drop(&mut self) {
        let Some(group) = self.writer.group_commit().next_group() else {
            return;
        };
        let writer = self.writer.clone();
        match tokio::runtime::Handle::try_current() {
            Ok(rt) => {
                rt.spawn(drain(writer, group));
            }
            Err(_) => {
                // No runtime: nothing can write; the dropped requests'
                // reply channels close, and the slot is given up.
                drop(group);
                let gc = writer.group_commit();
                let mut st = gc.state.lock();
                st.queue.clear();
                st.running -= 1;
            }
        }
    }
}

/// A drainer spawned for a free slot: takes its group when it first runs
/// (or gives the slot up if another drainer emptied the queue), then
/// drains.
async fn start_drain<W: GroupWriter>(writer: Arc<W>) {
    // Behind the tasks already runnable (a spawned task may run next,
    // before the callers woken with this one have queued their requests).
    tokio::task::yield_now().await;
    let gc = writer.group_commit();
    let group = {
        let mut st = gc.state.lock();
        st.starting = false;
        gc.take_group(&mut st)
    };
    if let Some(group) = group {
        drain(writer.clone(), group).await;
    }
}

/// A drainer: writes `group`, then the queue's next groups, until it is
/// empty.
async fn drain<W: GroupWriter>(writer: Arc<W>, mut group: Vec<W::Request>) {
    loop {
        writer.clone().write_group(group).await;
        match writer.group_commit().next_group() {
            Some(g) => group = g,
            None => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;
    use tokio::sync::{oneshot, Notify};

    /// How long a [`Recorder`]'s write takes.
    #[derive(Clone, Copy)]
    enum Pace {
        /// One scheduler turn.
        Yield,
        /// Until the gate is opened (`open_gate`).
        Gate,
        /// `first id % 4` scheduler turns.
        ById,
    }

    /// Records each group written; each request is (id, reply). `running`
    /// counts writes in progress, a cancelled one included until dropped.
    struct Recorder {
        gc: GroupCommit<Recorder>,
        groups: Mutex<Vec<Vec<u32>>>,
        running: Arc<AtomicUsize>,
        max_seen: AtomicUsize,
        gate: Notify,
        pace: Pace,
    }

    struct Running(Arc<AtomicUsize>);

    impl Drop for Running {
        fn drop(&mut self) {
            self.0.fetch_sub(1, Ordering::SeqCst);
        }
    }

    impl GroupWriter for Recorder {
        type Request = (u32, oneshot::Sender<()>);
        fn group_commit(&self) -> &GroupCommit<Self> {
            &self.gc
        }
        fn units(_: &Self::Request) -> usize {
            1
        }
        fn write_group(self: Arc<Self>, group: Vec<Self::Request>) -> BoxFuture<()> {
            Box::pin(async move {
                let now = self.running.fetch_add(1, Ordering::SeqCst) + 1;
                let running = Running(self.running.clone());
                self.max_seen.fetch_max(now, Ordering::SeqCst);
                match self.pace {
                    Pace::Yield => tokio::task::yield_now().await,
                    Pace::Gate => self.gate.notified().await,
                    Pace::ById => {
                        for _ in 0..(group[0].0 % 4) {
                            tokio::task::yield_now().await;
                        }
                    }
                }
                self.groups
                    .lock()
                    .push(group.iter().map(|(id, _)| *id).collect());
                drop(running);
                for (_, reply) in group {
                    let _ = reply.send(());
                }
            })
        }
    }

    fn recorder(in_flight: usize, max_group: usize, pace: Pace) -> Arc<Recorder> {
        Arc::new(Recorder {
            gc: GroupCommit::new(in_flight, max_group),
            groups: Mutex::new(Vec::new()),
            running: Arc::new(AtomicUsize::new(0)),
            max_seen: AtomicUsize::new(0),
            gate: Notify::new(),
            pace,
        })
    }

    /// Keeps opening the gate for every write to come, until aborted.
    fn open_gate(w: &Arc<Recorder>) -> tokio::task::JoinHandle<()> {
        let w = w.clone();
        tokio::spawn(async move {
            loop {
                w.gate.notify_waiters();
                tokio::task::yield_now().await;
            }
        })
    }

    /// Submits request 0 from a task of its own and returns once its write
    /// runs (held at the gate of a `Pace::Gate` recorder).
    async fn hold_first_write(w: &Arc<Recorder>) -> tokio::task::JoinHandle<()> {
        let first = {
            let w = w.clone();
            tokio::spawn(async move { submit(&w, 0).await.await.unwrap() })
        };
        while w.running.load(Ordering::SeqCst) == 0 {
            tokio::task::yield_now().await;
        }
        first
    }

    async fn submit(w: &Arc<Recorder>, id: u32) -> oneshot::Receiver<()> {
        let (tx, rx) = oneshot::channel();
        GroupCommit::submit(w, (id, tx)).await;
        rx
    }

    #[tokio::test]
    async fn an_uncontended_append_is_written_inline() {
        let w = recorder(1, 10, Pace::Yield);
        for id in 0..3 {
            let rx = submit(&w, id).await;
            rx.await.unwrap();
        }
        assert_eq!(*w.groups.lock(), vec![vec![0], vec![1], vec![2]]);
        assert_eq!(w.gc.state.lock().running, 0);
    }

    #[tokio::test]
    async fn queued_appends_are_drained_in_order_in_groups() {
        let w = recorder(1, 3, Pace::Gate);
        // The first write holds the only slot until the gate opens.
        let first = hold_first_write(&w).await;
        let mut replies = Vec::new();
        for id in 1..=7 {
            replies.push(submit(&w, id).await);
        }
        assert_eq!(w.gc.queued(), 7);
        let opener = open_gate(&w);
        first.await.unwrap();
        for r in replies {
            r.await.unwrap();
        }
        opener.abort();
        assert_eq!(
            *w.groups.lock(),
            vec![vec![0], vec![1, 2, 3], vec![4, 5, 6], vec![7]]
        );
        assert_eq!(w.max_seen.load(Ordering::SeqCst), 1);
        assert_eq!(w.gc.state.lock().running, 0);
    }

    /// With a slot free beside a running write, the requests queued
    /// together go together: one drained group, written while the first
    /// write still runs, not a group of one for the first of them.
    #[tokio::test(start_paused = true)]
    async fn callers_queued_together_share_the_free_slot() {
        let w = recorder(2, 10, Pace::Gate);
        let first = hold_first_write(&w).await;
        let mut replies = Vec::new();
        for id in 1..=3 {
            // Queued: `submit` returns at once (a caller written inline
            // would wait here for the gate).
            let queued = tokio::time::timeout(Duration::from_secs(5), submit(&w, id));
            replies.push(queued.await.expect("queued, not written inline"));
        }
        // The drainer for the free slot starts its write while the first
        // one is still held at the gate.
        while w.running.load(Ordering::SeqCst) < 2 {
            tokio::task::yield_now().await;
        }
        assert_eq!(w.gc.queued(), 0, "all three went into the second write");
        let opener = open_gate(&w);
        first.await.unwrap();
        for r in replies {
            r.await.unwrap();
        }
        opener.abort();
        let mut groups = w.groups.lock().clone();
        groups.sort();
        assert_eq!(groups, vec![vec![0], vec![1, 2, 3]]);
        assert_eq!(w.gc.state.lock().running, 0);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn many_callers_every_request_once_within_the_limit() {
        let w = recorder(3, 5, Pace::Yield);
        let tasks: Vec<_> = (0..200u32)
            .map(|id| {
                let w = w.clone();
                tokio::spawn(async move { submit(&w, id).await.await.unwrap() })
            })
            .collect();
        for t in tasks {
            t.await.unwrap();
        }
        let mut all: Vec<u32> = w.groups.lock().iter().flatten().copied().collect();
        all.sort_unstable();
        assert_eq!(all, (0..200).collect::<Vec<_>>());
        assert!(w.max_seen.load(Ordering::SeqCst) <= 3);
        assert!(w.groups.lock().iter().all(|g| g.len() <= 5));
        assert_eq!(w.gc.state.lock().running, 0);
    }

    #[tokio::test]
    async fn a_cancelled_inline_caller_hands_the_queue_on() {
        let w = recorder(1, 10, Pace::Gate);
        let (tx, _rx) = oneshot::channel();
        let inline = {
            let w = w.clone();
            tokio::spawn(async move { GroupCommit::submit(&w, (0, tx)).await })
        };
        while w.running.load(Ordering::SeqCst) == 0 {
            tokio::task::yield_now().await;
        }
        let queued = submit(&w, 1).await;
        inline.abort();
        let _ = inline.await;
        // The aborted write never finished; the queued one is drained.
        let opener = open_gate(&w);
        queued.await.unwrap();
        opener.abort();
        assert_eq!(*w.groups.lock(), vec![vec![1]]);
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(64))]

        /// Many callers, some cancelled at random points: every request
        /// whose caller waited is written exactly once, none twice, never
        /// more writes at once than allowed nor larger groups, and the
        /// queue ends empty with no write counted as running.
        #[test]
        fn every_waiting_request_is_written_once(
            in_flight in 1usize..4,
            max_group in 1usize..6,
            cancel in proptest::collection::vec(proptest::option::of(0u8..6), 1..40),
        ) {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_time()
                .build()
                .unwrap();
            rt.block_on(async move {
                let w = recorder(in_flight, max_group, Pace::ById);
                let tasks: Vec<_> = cancel
                    .iter()
                    .enumerate()
                    .map(|(id, c)| {
                        let w2 = w.clone();
                        let task = tokio::spawn(async move {
                            let (tx, rx) = oneshot::channel();
                            GroupCommit::submit(&w2, (id as u32, tx)).await;
                            rx.await.is_ok()
                        });
                        (id as u32, *c, task)
                    })
                    .collect();
                let mut waited = Vec::new();
                for (id, c, task) in tasks {
                    match c {
                        Some(turns) => {
                            for _ in 0..turns {
                                tokio::task::yield_now().await;
                            }
                            task.abort();
                            if let Ok(true) = task.await {
                                waited.push(id);
                            }
                        }
                        None => {
                            let got = tokio::time::timeout(Duration::from_secs(10), task)
                                .await
                                .expect("a waiting caller is answered")
                                .unwrap();
                            assert!(got, "request {id} answered as written");
                            waited.push(id);
                        }
                    }
                }
                // Drainers may still be writing cancelled callers' requests.
                let settle = tokio::time::Instant::now() + Duration::from_secs(10);
                while w.gc.state.lock().running != 0 || w.gc.queued() != 0 {
                    assert!(tokio::time::Instant::now() < settle, "the queue drains");
                    tokio::time::sleep(Duration::from_millis(1)).await;
                }
                let groups = w.groups.lock().clone();
                let mut written: Vec<u32> = groups.iter().flatten().copied().collect();
                written.sort_unstable();
                let before = written.len();
                written.dedup();
                assert_eq!(written.len(), before, "no request written twice");
                for id in &waited {
                    assert!(written.binary_search(id).is_ok(), "{id} was written");
                }
                assert!(groups.iter().all(|g| g.len() <= max_group));
                assert!(w.max_seen.load(Ordering::SeqCst) <= in_flight);
            });
        }
    }
}
