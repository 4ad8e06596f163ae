//! Edge cases of the bus: re-entrancy, duplicates in batches, cancellation
//! of an in-flight async emit, and logs that are slow to acknowledge.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};
use futures_util::StreamExt;
use serde_json::json;
use tidings_core::log::{AppendFuture, Bounds, BoxFuture, Page};
use tidings_core::{
    Bus, CursorError, Delivery, EventLog, LogOptions, MemoryLog, NewEvent, PruneError, ReadError,
    Retention,
};

/// A real memory log whose appends complete only after a delay, like a log
/// waiting for an fsync or a network round-trip (at once with a zero delay
/// and no gate).
struct SlowLog {
    inner: MemoryLog,
    delay: Duration,
    /// Claim to be shared between processes (as NATS and Redis logs are).
    shared: bool,
    /// Reads served (the external-appends task's among them).
    reads: Arc<AtomicUsize>,
    /// When set, an append, once committed, reports its last seq here and
    /// acknowledges only when the test opens the gate (instead of after
    /// `delay`): the test knows exactly when the log is acknowledging.
    gate: Option<Gate>,
}

#[derive(Clone)]
struct Gate {
    committed: tokio::sync::mpsc::UnboundedSender<u64>,
    open: tokio::sync::watch::Receiver<bool>,
}

impl EventLog for SlowLog {
    fn append(&self, batch: Vec<NewEvent>, expected_last: Option<u64>) -> AppendFuture {
        if self.delay.is_zero() && self.gate.is_none() {
            return AppendFuture::ready(self.inner.append_now(batch, expected_last));
        }
        let inner = self.inner.clone();
        let delay = self.delay;
        let gate = self.gate.clone();
        AppendFuture::Pending(Box::pin(async move {
            let r = inner.append_now(batch, expected_last);
            // Committed; acknowledged later.
            match gate {
                Some(mut g) => {
                    if let Ok(c) = &r {
                        let _ = g.committed.send(c.last().map_or(0, |c| c.event.seq));
                    }
                    g.open.wait_for(|open| *open).await.expect("gate dropped");
                }
                None => tokio::time::sleep(delay).await,
            }
            r
        }))
    }
    fn read(&self, after: u64, limit: usize) -> BoxFuture<Result<Page, ReadError>> {
        self.reads.fetch_add(1, Ordering::Relaxed);
        self.inner.read(after, limit)
    }
    fn bounds(&self) -> BoxFuture<Result<Bounds, ReadError>> {
        self.inner.bounds()
    }
    fn seq_before(&self, time: DateTime<Utc>) -> BoxFuture<Result<u64, ReadError>> {
        self.inner.seq_before(time)
    }
    fn watch(&self) -> tokio::sync::watch::Receiver<u64> {
        self.inner.watch()
    }
    fn cursor(&self, consumer: &str) -> BoxFuture<Result<Option<u64>, CursorError>> {
        self.inner.cursor(consumer)
    }
    fn commit_cursor(&self, consumer: &str, seq: u64) -> BoxFuture<Result<(), CursorError>> {
        self.inner.commit_cursor(consumer, seq)
    }
    fn prune(&self) -> BoxFuture<Result<u64, PruneError>> {
        self.inner.prune()
    }
    fn close(&self) -> BoxFuture<Result<(), tidings_core::CloseError>> {
        self.inner.close()
    }
    fn define_consumer(&self, name: &str, spec: &str) -> BoxFuture<Result<String, CursorError>> {
        self.inner.define_consumer(name, spec)
    }
    fn consumers(&self) -> BoxFuture<Result<Vec<tidings_core::ConsumerRecord>, CursorError>> {
        self.inner.consumers()
    }
    fn delete_consumer(&self, name: &str) -> BoxFuture<Result<bool, CursorError>> {
        self.inner.delete_consumer(name)
    }
    fn shared(&self) -> bool {
        self.shared
    }
}

fn slow_bus(ms: u64) -> Bus {
    Bus::builder()
        .log(SlowLog {
            inner: MemoryLog::new(),
            delay: Duration::from_millis(ms),
            shared: false,
            reads: Default::default(),
            gate: None,
        })
        .build()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancelled_async_emit_is_still_dispatched_and_does_not_stall_the_bus() {
    let (committed, mut committed_rx) = tokio::sync::mpsc::unbounded_channel();
    let (open, open_rx) = tokio::sync::watch::channel(false);
    let bus = Bus::builder()
        .log(SlowLog {
            inner: MemoryLog::new(),
            delay: Duration::ZERO,
            shared: false,
            reads: Default::default(),
            gate: Some(Gate {
                committed,
                open: open_rx,
            }),
        })
        .build()
        .unwrap();
    let mut s = bus.subscribe(">").unwrap();
    let mut first = Box::pin(bus.emit_async("first", json!(1)));
    tokio::select! {
        r = &mut first => panic!("the emit returned before the log acknowledged: {r:?}"),
        seq = committed_rx.recv() => assert_eq!(seq, Some(1)),
    }
    // Cancel the emit while the log is acknowledging.
    drop(first);
    open.send_replace(true);
    // The append had committed; the bus must dispatch it and go on.
    let second = bus.emit_async("second", json!(2)).await.unwrap();
    assert_eq!(second.seq, 2);
    let mut got = Vec::new();
    for _ in 0..2 {
        match tokio::time::timeout(Duration::from_secs(5), s.next())
            .await
            .unwrap()
            .unwrap()
            .unwrap()
        {
            Delivery::Event(e) => got.push((e.seq, e.name.clone())),
            other => panic!("{other:?}"),
        }
    }
    assert_eq!(got, vec![(1, "first".to_owned()), (2, "second".to_owned())]);
}

#[test]
fn sync_emit_waits_for_a_slow_log_without_a_runtime() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let _guard = rt.enter(); // the slow log sleeps on tokio's timer
    let bus = slow_bus(10);
    let n = Arc::new(AtomicUsize::new(0));
    let n1 = n.clone();
    let _h = bus
        .on("x", move |_| {
            n1.fetch_add(1, Ordering::SeqCst);
        })
        .unwrap();
    let e = bus.emit("x", json!(null)).unwrap();
    assert_eq!(e.seq, 1);
    assert_eq!(
        n.load(Ordering::SeqCst),
        1,
        "handlers ran before emit returned"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_async_emits_on_a_slow_log_keep_order() {
    let bus = slow_bus(3);
    let seen = Arc::new(Mutex::new(Vec::new()));
    let s = seen.clone();
    let _h = bus.on(">", move |e| s.lock().unwrap().push(e.seq)).unwrap();
    let tasks: Vec<_> = (0..8)
        .map(|i| {
            let b = bus.clone();
            tokio::spawn(async move {
                for j in 0..10 {
                    b.emit_async("c", json!([i, j])).await.unwrap();
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
    assert_eq!(*seen.lock().unwrap(), (1..=80).collect::<Vec<_>>());
}

#[test]
fn duplicates_in_a_batch_are_not_dispatched_twice() {
    let bus = Bus::new();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let s = seen.clone();
    let _h = bus.on(">", move |e| s.lock().unwrap().push(e.seq)).unwrap();
    bus.event("pay").key("p1").emit().unwrap();
    let batch = vec![
        NewEvent::new("pay", json!(1)).unwrap().key("p1"),
        NewEvent::new("pay", json!(2)).unwrap().key("p2"),
        NewEvent::new("pay", json!(3)).unwrap(),
    ];
    let c = bus.emit_batch(batch, None).unwrap();
    assert_eq!(
        c.iter()
            .map(|c| (c.event.seq, c.duplicate))
            .collect::<Vec<_>>(),
        vec![(1, true), (2, false), (3, false)]
    );
    assert_eq!(*seen.lock().unwrap(), vec![1, 2, 3]);
}

#[test]
fn handlers_may_subscribe_and_unsubscribe_during_dispatch() {
    let bus = Bus::new();
    let late = Arc::new(AtomicUsize::new(0));
    let slot: Arc<Mutex<Option<tidings_core::Subscription>>> = Arc::new(Mutex::new(None));
    let (b, l, sl) = (bus.clone(), late.clone(), slot.clone());
    let _adder = bus
        .once("start", move |_| {
            let l = l.clone();
            *sl.lock().unwrap() = Some(
                b.on("tick", move |_| {
                    l.fetch_add(1, Ordering::SeqCst);
                })
                .unwrap(),
            );
        })
        .unwrap();
    let s2 = slot.clone();
    let _remover = bus
        .on("stop", move |_| {
            s2.lock().unwrap().take();
        })
        .unwrap();
    bus.emit("tick", json!(null)).unwrap();
    bus.emit("start", json!(null)).unwrap();
    bus.emit("tick", json!(null)).unwrap();
    bus.emit("stop", json!(null)).unwrap();
    bus.emit("tick", json!(null)).unwrap();
    assert_eq!(late.load(Ordering::SeqCst), 1);
}

#[test]
fn a_handler_can_unsubscribe_itself() {
    let bus = Bus::new();
    let n = Arc::new(AtomicUsize::new(0));
    let id = Arc::new(AtomicUsize::new(0));
    let (b, n1, id1) = (bus.clone(), n.clone(), id.clone());
    let sid = bus
        .on("x", move |_| {
            n1.fetch_add(1, Ordering::SeqCst);
            b.unsubscribe(id1.load(Ordering::SeqCst) as u64);
        })
        .unwrap()
        .keep();
    id.store(sid as usize, Ordering::SeqCst);
    bus.emit("x", json!(null)).unwrap();
    bus.emit("x", json!(null)).unwrap();
    assert_eq!(n.load(Ordering::SeqCst), 1);
}

#[test]
fn batch_emitted_from_a_handler_is_dispatched_after_the_current_event() {
    let bus = Bus::new();
    let order = Arc::new(Mutex::new(Vec::new()));
    let (b, o) = (bus.clone(), order.clone());
    let _h = bus
        .on("cart.checkout", move |_| {
            let batch = vec![
                NewEvent::new("order.placed", json!(null)).unwrap(),
                NewEvent::new("stock.reserved", json!(null)).unwrap(),
            ];
            b.emit_batch(batch, None).unwrap();
        })
        .unwrap();
    let _w = bus
        .on(">", move |e| o.lock().unwrap().push(e.name.clone()))
        .unwrap();
    bus.emit("cart.checkout", json!(null)).unwrap();
    assert_eq!(
        *order.lock().unwrap(),
        vec!["cart.checkout", "order.placed", "stock.reserved"]
    );
}

#[test]
fn many_threads_many_buses_no_cross_talk() {
    let a = Bus::new();
    let b = Bus::new();
    let (ca, cb) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let (ca1, cb1) = (ca.clone(), cb.clone());
    let _ha = a.on(">", move |_| {
        ca1.fetch_add(1, Ordering::SeqCst);
    });
    let _hb = b.on(">", move |_| {
        cb1.fetch_add(1, Ordering::SeqCst);
    });
    let ts: Vec<_> = (0..4)
        .map(|i| {
            let bus = if i % 2 == 0 { a.clone() } else { b.clone() };
            std::thread::spawn(move || {
                for _ in 0..100 {
                    bus.emit("e", json!(null)).unwrap();
                }
            })
        })
        .collect();
    for t in ts {
        t.join().unwrap();
    }
    assert_eq!((a.last_seq(), b.last_seq()), (200, 200));
    assert_eq!(ca.load(Ordering::SeqCst), 200);
    assert_eq!(cb.load(Ordering::SeqCst), 200);
}

#[test]
fn a_handler_emitting_on_another_bus_is_ordered_there_too() {
    let a = Bus::new();
    let b = Bus::new();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let s = seen.clone();
    let _w = b.on(">", move |e| s.lock().unwrap().push(e.seq)).unwrap();
    let b2 = b.clone();
    let _bridge = a
        .on("x", move |e| {
            b2.emit("mirrored", e.data.clone()).unwrap();
        })
        .unwrap();
    for i in 0..5 {
        a.emit("x", json!(i)).unwrap();
    }
    assert_eq!(*seen.lock().unwrap(), vec![1, 2, 3, 4, 5]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn buses_sharing_a_log_each_dispatch_every_event_in_one_order() {
    let log = MemoryLog::new();
    let make = || {
        Bus::builder()
            .log(SlowLog {
                inner: log.clone(),
                delay: Duration::from_millis(1),
                shared: true,
                reads: Default::default(),
                gate: None,
            })
            .build()
            .unwrap()
    };
    let (a, b) = (make(), make());
    // Each bus's handler records its seqs and publishes how many it has.
    let record = |bus: &Bus| {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let (count, count_rx) = tokio::sync::watch::channel(0usize);
        let s = seen.clone();
        let sub = bus
            .on(">", move |e| {
                let mut s = s.lock().unwrap();
                s.push(e.seq);
                count.send_replace(s.len());
            })
            .unwrap();
        (seen, count_rx, sub)
    };
    let ((seen_a, mut count_a, _ha), (seen_b, mut count_b, _hb)) = (record(&a), record(&b));
    let mut stream_b = b.subscribe("shared.*").unwrap();
    let tasks: Vec<_> = [a.clone(), b.clone(), a.clone(), b.clone()]
        .into_iter()
        .enumerate()
        .map(|(i, bus)| {
            tokio::spawn(async move {
                for j in 0..25 {
                    bus.emit_async("shared.e", json!([i, j])).await.unwrap();
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
    // Each bus dispatches the other's events through its external-appends
    // task: wait
    // until both handlers have seen all 100.
    for count in [&mut count_a, &mut count_b] {
        tokio::time::timeout(Duration::from_secs(5), count.wait_for(|n| *n >= 100))
            .await
            .expect("a bus did not dispatch 100 events within 5 s")
            .expect("handler dropped");
    }
    let want: Vec<u64> = (1..=100).collect();
    assert_eq!(
        *seen_a.lock().unwrap(),
        want,
        "bus A saw its own and B's events, in order"
    );
    assert_eq!(*seen_b.lock().unwrap(), want, "bus B too");
    for w in 1..=100u64 {
        match tokio::time::timeout(Duration::from_secs(5), stream_b.next())
            .await
            .unwrap()
            .unwrap()
            .unwrap()
        {
            Delivery::Event(e) => assert_eq!(e.seq, w),
            other => panic!("{other:?}"),
        }
    }
}

#[test]
fn following_a_shared_log_needs_a_runtime() {
    let r = Bus::builder()
        .log(SlowLog {
            inner: MemoryLog::new(),
            delay: Duration::from_millis(1),
            shared: true,
            reads: Default::default(),
            gate: None,
        })
        .build();
    assert!(matches!(r, Err(tidings_core::ConfigError::NoRuntime)));
}

#[test]
fn a_handler_repeating_a_key_gets_the_original_without_waiting_for_it() {
    let bus = Bus::new();
    let b = bus.clone();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let s = seen.clone();
    let _inner = bus
        .on("inner", move |e| s.lock().unwrap().push(e.seq))
        .unwrap();
    let nested = Arc::new(Mutex::new(Vec::new()));
    let n = nested.clone();
    let _outer = bus
        .on("outer", move |_| {
            // The second emit is a duplicate of the first, whose event is
            // queued behind the one this handler runs for.
            for _ in 0..2 {
                let e = b.event("inner").key("K").emit().unwrap();
                n.lock().unwrap().push(e.seq);
            }
        })
        .unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    let b = bus.clone();
    std::thread::spawn(move || tx.send(b.emit("outer", json!(null)).map(|e| e.seq)));
    let outer = rx
        .recv_timeout(Duration::from_secs(10))
        .expect("the outer emit returns (no deadlock)")
        .unwrap();
    assert_eq!(outer, 1);
    assert_eq!(
        *nested.lock().unwrap(),
        [2, 2],
        "the duplicate is the original"
    );
    assert_eq!(
        *seen.lock().unwrap(),
        [2],
        "dispatched once, after the outer event"
    );
    bus.emit("inner", json!(null)).unwrap();
    assert_eq!(*seen.lock().unwrap(), [2, 3], "the bus goes on");
}

/// A log other processes append to (as NATS and Redis logs are) whose
/// appends answer at once, counting its reads.
fn shared_at_once(inner: MemoryLog) -> SlowLog {
    SlowLog {
        inner,
        delay: Duration::ZERO,
        shared: true,
        reads: Default::default(),
        gate: None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_external_appends_task_waits_while_another_thread_dispatches() {
    // Appends answer at once, so the emitting thread dispatches its event
    // itself, while the task finds the same event in the log.
    let log = shared_at_once(MemoryLog::new());
    let reads = log.reads.clone();
    let bus = Bus::builder().log(log).build().unwrap();
    let _slow = bus
        .on("slow", |_| std::thread::sleep(Duration::from_millis(300)))
        .unwrap();
    tokio::time::sleep(Duration::from_millis(50)).await;
    let before = reads.load(Ordering::Relaxed);
    let b = bus.clone();
    tokio::task::spawn_blocking(move || b.emit("slow", json!(null)).unwrap())
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(50)).await;
    // The task reads the new event once (it cannot tell it is this bus's
    // own), hands it in and waits for the log to move: no read loop while
    // the handler runs.
    let during = reads.load(Ordering::Relaxed) - before;
    assert!(
        during <= 3,
        "{during} reads of the log during one 300 ms handler"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_external_appends_task_reads_a_bounded_way_ahead_of_dispatch() {
    let memory = MemoryLog::with_options(LogOptions::retention(Retention {
        max_count: Some(1_000_000),
        max_age: None,
    }))
    .unwrap();
    let log = shared_at_once(memory.clone());
    let reads = log.reads.clone();
    let bus = Bus::builder().log(log).build().unwrap();
    let at_end = Arc::new(AtomicUsize::new(usize::MAX));
    let (r, a) = (reads.clone(), at_end.clone());
    let _slow = bus
        .on("slow", move |_| {
            // Meanwhile another process appends 20,000 events at once.
            std::thread::sleep(Duration::from_millis(500));
            a.store(r.load(Ordering::Relaxed), Ordering::Relaxed);
        })
        .unwrap();
    let others = Arc::new(AtomicUsize::new(0));
    let o = others.clone();
    let _count = bus
        .on("other", move |_| {
            o.fetch_add(1, Ordering::Relaxed);
        })
        .unwrap();
    tokio::time::sleep(Duration::from_millis(50)).await;
    let before = reads.load(Ordering::Relaxed);
    let b = bus.clone();
    let emit = tokio::task::spawn_blocking(move || b.emit("slow", json!(null)).unwrap());
    tokio::time::sleep(Duration::from_millis(50)).await;
    // In one batch, so the task finds full pages of 512 to read.
    let batch = (0..20_000)
        .map(|i| NewEvent::new("other", json!(i)).unwrap())
        .collect();
    memory.append_now(batch, None).unwrap();
    emit.await.unwrap();
    // Pages of 512 read while the slow handler held up dispatch: the
    // task stops about 4,096 events ahead, not at the log's end (40 pages).
    let pages = at_end.load(Ordering::Relaxed) - before;
    assert!(
        pages <= 12,
        "{pages} pages read ahead of a stalled dispatch"
    );
    // And nothing is lost: every foreign event is dispatched.
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while others.load(Ordering::Relaxed) < 20_000 {
        assert!(
            std::time::Instant::now() < deadline,
            "{others:?} of 20,000 dispatched"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(others.load(Ordering::Relaxed), 20_000);
}
