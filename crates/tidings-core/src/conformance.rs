//! The conformance suite every [`EventLog`] backend runs (feature
//! `conformance`).
//!
//! Longer than our other files on purpose: it is test code, a flat list of
//! independent checks that each read top to bottom, and keeping every
//! backend contract in one file is what makes it the one suite.
//!
//! A backend's integration test supplies a factory that makes a fresh, empty
//! log for a [`LogSpec`] and expands [`conformance_tests!`](crate::conformance_tests):
//!
//! ```text
//! async fn make(spec: LogSpec) -> Arc<dyn EventLog> { /* open a new, empty log */ }
//! tidings_core::conformance_tests!(make);
//! ```
//!
//! Each check is also a public function, so a backend can run them its own
//! way. Every check starts from an empty log and asserts the contract
//! written at the top of [`crate::log`].
//!
//! Durable backends also run [`survives_reopen`], whose factory opens the
//! *same* storage every time it is called (not part of the macro: the
//! memory log has nothing to reopen).

use std::collections::HashSet;
use std::future::Future;
use std::sync::Arc;
use std::task::Poll;
use std::time::Duration;

use parking_lot::Mutex;

use futures_util::StreamExt;
use serde_json::json;

use crate::bus::{Bus, EventStream};
use crate::event::{NewEvent, SharedEvent};
use crate::log::{
    follow, AppendError, AppendFuture, Bounds, BoxFuture, CursorError, Delivery, EventLog,
    LogStream, Page, Position, PruneError, ReadError, Retention,
};

/// What the factory must configure on the log it makes.
#[derive(Debug, Clone, Copy)]
pub struct LogSpec {
    /// Retention limits.
    pub retention: Retention,
    /// How long idempotency keys are remembered.
    pub idempotency_window: Duration,
}

impl Default for LogSpec {
    fn default() -> Self {
        LogSpec {
            retention: Retention::default(),
            idempotency_window: Duration::from_secs(120),
        }
    }
}

/// A log kept with a fixture that must outlive it and go after it (a
/// temporary directory, a guard deleting the engine's keys): what backend
/// tests hand the suite. Forwards every [`EventLog`] method, so no method
/// (like [`EventLog::shared`]) is lost by a hand-written wrapper. Fields drop
/// in order: the log first, then the guard.
pub struct Guarded<L, G> {
    /// The log under test.
    pub log: L,
    /// Kept alive until after the log is dropped.
    pub guard: G,
}

impl<L: EventLog, G: Send + Sync + 'static> EventLog for Guarded<L, G> {
    fn append(&self, batch: Vec<NewEvent>, expected_last: Option<u64>) -> AppendFuture {
        self.log.append(batch, expected_last)
    }
    fn append_one(
        &self,
        event: NewEvent,
        expected_last: Option<u64>,
    ) -> AppendFuture<crate::log::Committed> {
        self.log.append_one(event, expected_last)
    }
    fn read(&self, after: u64, limit: usize) -> BoxFuture<Result<Page, ReadError>> {
        self.log.read(after, limit)
    }
    fn bounds(&self) -> BoxFuture<Result<Bounds, ReadError>> {
        self.log.bounds()
    }
    fn seq_before(&self, time: chrono::DateTime<chrono::Utc>) -> BoxFuture<Result<u64, ReadError>> {
        self.log.seq_before(time)
    }
    fn watch(&self) -> tokio::sync::watch::Receiver<u64> {
        self.log.watch()
    }
    fn cursor(&self, consumer: &str) -> BoxFuture<Result<Option<u64>, CursorError>> {
        self.log.cursor(consumer)
    }
    fn commit_cursor(&self, consumer: &str, seq: u64) -> BoxFuture<Result<(), CursorError>> {
        self.log.commit_cursor(consumer, seq)
    }
    fn define_consumer(&self, name: &str, spec: &str) -> BoxFuture<Result<String, CursorError>> {
        self.log.define_consumer(name, spec)
    }
    fn consumers(&self) -> BoxFuture<Result<Vec<crate::log::ConsumerRecord>, CursorError>> {
        self.log.consumers()
    }
    fn delete_consumer(&self, name: &str) -> BoxFuture<Result<bool, CursorError>> {
        self.log.delete_consumer(name)
    }
    fn prune(&self) -> BoxFuture<Result<u64, PruneError>> {
        self.log.prune()
    }
    fn shared(&self) -> bool {
        self.log.shared()
    }
}

fn ev(name: &str, i: u64) -> NewEvent {
    NewEvent::new(name, json!({ "i": i })).expect("valid name")
}

async fn append_n(log: &dyn EventLog, n: u64) {
    for i in 0..n {
        log.append(vec![ev("conf.item", i)], None)
            .await
            .expect("append");
    }
}

async fn next_delivery(s: &mut LogStream) -> Delivery {
    tokio::time::timeout(Duration::from_secs(10), s.next())
        .await
        .expect("stream delivered nothing within 10 s")
        .expect("stream ended")
        .expect("read failed")
}

async fn next_seq(s: &mut LogStream) -> u64 {
    match next_delivery(s).await {
        Delivery::Event(e) => e.seq,
        other => panic!("expected an event, got {other:?}"),
    }
}

/// Appends get dense seqs from 1; batches get consecutive seqs in input
/// order; reads return what was written.
pub async fn dense_seqs_and_roundtrip<F, Fut>(make: F)
where
    F: Fn(LogSpec) -> Fut,
    Fut: Future<Output = Arc<dyn EventLog>>,
{
    let log = make(LogSpec::default()).await;
    let b = log.bounds().await.unwrap();
    assert_eq!((b.first, b.last), (1, 0), "an empty log");
    for i in 0..3 {
        let c = log.append(vec![ev("a.single", i)], None).await.unwrap();
        assert_eq!(c.len(), 1);
        assert_eq!(c[0].event.seq, i + 1);
        assert!(!c[0].duplicate);
    }
    let batch: Vec<NewEvent> = (0..5).map(|i| ev("b.batch", i).source("conf")).collect();
    let ids: Vec<_> = batch.iter().map(|e| e.id).collect();
    let c = log.append(batch.clone(), None).await.unwrap();
    assert_eq!(
        c.iter().map(|c| c.event.seq).collect::<Vec<_>>(),
        vec![4, 5, 6, 7, 8]
    );
    let page = log.read(0, 100).await.unwrap();
    assert_eq!(page.last_seq, 8);
    assert_eq!(page.events.len(), 8);
    for (i, e) in page.events.iter().enumerate() {
        assert_eq!(e.seq, i as u64 + 1);
    }
    for (e, (orig, id)) in page.events[3..].iter().zip(batch.iter().zip(ids)) {
        assert_eq!(e.id, id);
        assert_eq!(e.name, orig.name);
        assert_eq!(e.source, "conf");
        assert_eq!(e.data, orig.data);
        assert_eq!(e.time.timestamp_micros(), orig.time.timestamp_micros());
    }
    let b = log.bounds().await.unwrap();
    assert_eq!((b.first, b.last), (1, 8));
}

/// `append_one` is a batch of one: the next seq, refusals on a wrong
/// expectation, duplicates answered with the original, all seen by reads.
pub async fn append_one_is_a_batch_of_one<F, Fut>(make: F)
where
    F: Fn(LogSpec) -> Fut,
    Fut: Future<Output = Arc<dyn EventLog>>,
{
    let log = make(LogSpec::default()).await;
    append_n(&*log, 2).await;
    let c = log.append_one(ev("one.a", 0), None).await.unwrap();
    assert_eq!((c.event.seq, c.duplicate), (3, false));
    let c = log.append_one(ev("one.b", 1), Some(3)).await.unwrap();
    assert_eq!(c.event.seq, 4);
    match log.append_one(ev("one.c", 2), Some(3)).await {
        Err(AppendError::Conflict {
            expected: 3,
            actual: 4,
        }) => {}
        other => panic!("expected Conflict {{ 3, 4 }}, got {other:?}"),
    }
    let keyed = ev("one.k", 3).key("one-key");
    let first = log.append_one(keyed.clone(), None).await.unwrap();
    assert_eq!((first.event.seq, first.duplicate), (5, false));
    let again = log.append_one(keyed, None).await.unwrap();
    assert!(again.duplicate, "a repeated key is a duplicate");
    assert_eq!((again.event.seq, again.event.id), (5, first.event.id));
    let page = log.read(0, 100).await.unwrap();
    assert_eq!(page.last_seq, 5);
    assert_eq!(
        page.events
            .iter()
            .map(|e| e.name.as_str())
            .collect::<Vec<_>>(),
        vec!["conf.item", "conf.item", "one.a", "one.b", "one.k"]
    );
}

/// Reads honour `after` and `limit` and report the last seq.
pub async fn reads_page<F, Fut>(make: F)
where
    F: Fn(LogSpec) -> Fut,
    Fut: Future<Output = Arc<dyn EventLog>>,
{
    let log = make(LogSpec::default()).await;
    append_n(&*log, 8).await;
    let p = log.read(3, 2).await.unwrap();
    assert_eq!(
        p.events.iter().map(|e| e.seq).collect::<Vec<_>>(),
        vec![4, 5]
    );
    assert_eq!(p.last_seq, 8);
    let p = log.read(8, 10).await.unwrap();
    assert!(p.events.is_empty());
    assert_eq!(p.last_seq, 8);
    let p = log.read(100, 10).await.unwrap();
    assert!(p.events.is_empty());
}

/// An empty batch and an expected-seq mismatch are refused and append
/// nothing; a matching expectation appends.
pub async fn refusals_append_nothing<F, Fut>(make: F)
where
    F: Fn(LogSpec) -> Fut,
    Fut: Future<Output = Arc<dyn EventLog>>,
{
    let log = make(LogSpec::default()).await;
    assert!(matches!(
        log.append(vec![], None).await,
        Err(AppendError::EmptyBatch)
    ));
    append_n(&*log, 2).await;
    let batch = vec![ev("x.y", 1), ev("x.y", 2)];
    match log.append(batch.clone(), Some(1)).await {
        Err(AppendError::Conflict {
            expected: 1,
            actual: 2,
        }) => {}
        other => panic!("expected a conflict, got {other:?}"),
    }
    assert_eq!(
        log.bounds().await.unwrap().last,
        2,
        "a refused batch appends nothing"
    );
    let c = log.append(batch, Some(2)).await.unwrap();
    assert_eq!(c[1].event.seq, 4);
    assert!(log.append(vec![ev("x", 0)], Some(0)).await.is_err());
}

/// A key seen within the window returns the original event and appends
/// nothing, including twice inside one batch.
pub async fn idempotency_keys<F, Fut>(make: F)
where
    F: Fn(LogSpec) -> Fut,
    Fut: Future<Output = Arc<dyn EventLog>>,
{
    let log = make(LogSpec::default()).await;
    let first = log
        .append(vec![ev("k.v", 1).key("order-1")], None)
        .await
        .unwrap();
    let again = log
        .append(vec![ev("k.v", 2).key("order-1")], None)
        .await
        .unwrap();
    assert!(again[0].duplicate);
    assert_eq!(again[0].event.seq, first[0].event.seq);
    assert_eq!(again[0].event.id, first[0].event.id);
    assert_eq!(log.bounds().await.unwrap().last, 1);
    let mixed = log
        .append(
            vec![
                ev("k.v", 3).key("order-2"),
                ev("k.v", 4),
                ev("k.v", 5).key("order-2"),
            ],
            None,
        )
        .await
        .unwrap();
    assert_eq!(
        mixed
            .iter()
            .map(|c| (c.event.seq, c.duplicate))
            .collect::<Vec<_>>(),
        vec![(2, false), (3, false), (2, true)]
    );
    assert_eq!(log.bounds().await.unwrap().last, 3);
}

/// Keys are forgotten after the window.
pub async fn idempotency_window_expires<F, Fut>(make: F)
where
    F: Fn(LogSpec) -> Fut,
    Fut: Future<Output = Arc<dyn EventLog>>,
{
    let log = make(LogSpec {
        idempotency_window: Duration::from_millis(1000),
        ..LogSpec::default()
    })
    .await;
    log.append(vec![ev("k", 1).key("w")], None).await.unwrap();
    tokio::time::sleep(Duration::from_millis(2100)).await;
    let c = log.append(vec![ev("k", 2).key("w")], None).await.unwrap();
    assert!(!c[0].duplicate, "the key should have expired");
    assert_eq!(c[0].event.seq, 2);
}

/// `watch` follows the last committed seq.
pub async fn watch_follows_appends<F, Fut>(make: F)
where
    F: Fn(LogSpec) -> Fut,
    Fut: Future<Output = Arc<dyn EventLog>>,
{
    let log = make(LogSpec::default()).await;
    let mut rx = log.watch();
    assert_eq!(*rx.borrow(), 0);
    append_n(&*log, 3).await;
    tokio::time::timeout(Duration::from_secs(10), rx.wait_for(|v| *v == 3))
        .await
        .expect("watch did not reach 3")
        .expect("watch closed");
}

/// A stream from the beginning catches up, then follows live appends with
/// no gap and no duplicate.
pub async fn follow_catches_up_then_live<F, Fut>(make: F)
where
    F: Fn(LogSpec) -> Fut,
    Fut: Future<Output = Arc<dyn EventLog>>,
{
    let log = make(LogSpec::default()).await;
    append_n(&*log, 10).await;
    let mut s = follow(log.clone(), Position::Beginning);
    for want in 1..=10 {
        assert_eq!(next_seq(&mut s).await, want);
    }
    let writer = log.clone();
    let task = tokio::spawn(async move {
        for i in 0..30 {
            writer.append(vec![ev("live", i)], None).await.unwrap();
            if i % 7 == 0 {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        }
    });
    for want in 11..=40 {
        assert_eq!(next_seq(&mut s).await, want);
    }
    task.await.unwrap();
}

/// Streams from `End`, `After(n)` and `At(time)` start where they say.
pub async fn follow_positions<F, Fut>(make: F)
where
    F: Fn(LogSpec) -> Fut,
    Fut: Future<Output = Arc<dyn EventLog>>,
{
    let log = make(LogSpec::default()).await;
    // Event times set explicitly around `cut` (whole milliseconds, which
    // every backend stores exactly), so no clock has to move.
    let cut = chrono::DateTime::from_timestamp_millis(chrono::Utc::now().timestamp_millis())
        .expect("now is representable");
    for i in 0..10i64 {
        let mut e = ev("conf.item", i as u64);
        e.time = cut + chrono::Duration::milliseconds(i - 5);
        log.append(vec![e], None).await.expect("append");
    }

    let mut after = follow(log.clone(), Position::After(7));
    assert_eq!(next_seq(&mut after).await, 8);
    let mut at = follow(log.clone(), Position::At(cut));
    assert_eq!(next_seq(&mut at).await, 6);
    let mut end = follow(log.clone(), Position::End);
    // Drive `end` until it has resolved `End` (its position becomes the
    // last seq) and waits for more, before the next append.
    tokio::time::timeout(
        Duration::from_secs(10),
        std::future::poll_fn(|cx| match end.poll_next_unpin(cx) {
            Poll::Ready(item) => panic!("`End` delivered {item:?} before any append"),
            Poll::Pending if end.last() == 10 => Poll::Ready(()),
            Poll::Pending => Poll::Pending,
        }),
    )
    .await
    .expect("`End` did not resolve within 10 s");
    log.append(vec![ev("after.end", 0)], None).await.unwrap();
    assert_eq!(next_seq(&mut end).await, 11);
}

/// Named cursors: absent, committed, overwritten; bad names and positions
/// past the end are refused.
pub async fn cursors<F, Fut>(make: F)
where
    F: Fn(LogSpec) -> Fut,
    Fut: Future<Output = Arc<dyn EventLog>>,
{
    let log = make(LogSpec::default()).await;
    append_n(&*log, 5).await;
    assert_eq!(log.cursor("indexer").await.unwrap(), None);
    log.commit_cursor("indexer", 3).await.unwrap();
    assert_eq!(log.cursor("indexer").await.unwrap(), Some(3));
    log.commit_cursor("indexer", 5).await.unwrap();
    assert_eq!(log.cursor("indexer").await.unwrap(), Some(5));
    assert_eq!(log.cursor("other").await.unwrap(), None);
    assert!(matches!(
        log.commit_cursor("indexer", 6).await,
        Err(CursorError::BeyondEnd { .. })
    ));
    assert!(matches!(
        log.commit_cursor("", 1).await,
        Err(CursorError::InvalidName(_))
    ));
    assert!(matches!(
        log.cursor("a b").await,
        Err(CursorError::InvalidName(_))
    ));
    // Resume from the cursor: at-least-once from the next event.
    let from = log.cursor("indexer").await.unwrap().unwrap_or(0);
    append_n(&*log, 1).await;
    let mut s = follow(log.clone(), Position::After(from));
    assert_eq!(next_seq(&mut s).await, 6);
}

/// Count retention keeps the newest events; a reader behind it is told
/// what it missed, and `Beginning` means the oldest event kept.
pub async fn retention_by_count<F, Fut>(make: F)
where
    F: Fn(LogSpec) -> Fut,
    Fut: Future<Output = Arc<dyn EventLog>>,
{
    let log = make(LogSpec {
        retention: Retention {
            max_count: Some(5),
            max_age: None,
        },
        ..LogSpec::default()
    })
    .await;
    append_n(&*log, 12).await;
    log.prune().await.unwrap();
    let b = log.bounds().await.unwrap();
    assert_eq!((b.first, b.last), (8, 12));
    let p = log.read(0, 100).await.unwrap();
    assert_eq!(p.events.first().map(|e| e.seq), Some(8));
    assert_eq!(p.events.len(), 5);

    let mut s = follow(log.clone(), Position::After(2));
    assert_eq!(
        next_delivery(&mut s).await,
        Delivery::Lagged {
            missed: 5,
            resume_from: 8
        }
    );
    assert_eq!(next_seq(&mut s).await, 8);
    let mut b = follow(log.clone(), Position::Beginning);
    assert_eq!(next_seq(&mut b).await, 8);
}

/// Retention is a hard limit: it does not wait for a consumer's cursor, and
/// the consumer resuming from it is told exactly what it missed.
pub async fn retention_ignores_cursors_but_reports_lag<F, Fut>(make: F)
where
    F: Fn(LogSpec) -> Fut,
    Fut: Future<Output = Arc<dyn EventLog>>,
{
    let log = make(LogSpec {
        retention: Retention {
            max_count: Some(3),
            max_age: None,
        },
        ..LogSpec::default()
    })
    .await;
    append_n(&*log, 2).await;
    log.commit_cursor("slow", 2).await.unwrap();
    append_n(&*log, 8).await;
    log.prune().await.unwrap();
    let from = log.cursor("slow").await.unwrap().unwrap();
    assert_eq!(from, 2, "the cursor itself survives pruning");
    let mut s = follow(log.clone(), Position::After(from));
    assert_eq!(
        next_delivery(&mut s).await,
        Delivery::Lagged {
            missed: 5,
            resume_from: 8
        }
    );
    assert_eq!(next_seq(&mut s).await, 8);
}

/// Age retention drops events older than the limit; seqs are not reused.
pub async fn retention_by_age<F, Fut>(make: F)
where
    F: Fn(LogSpec) -> Fut,
    Fut: Future<Output = Arc<dyn EventLog>>,
{
    let log = make(LogSpec {
        retention: Retention {
            max_count: None,
            max_age: Some(Duration::from_millis(1500)),
        },
        ..LogSpec::default()
    })
    .await;
    append_n(&*log, 3).await;
    tokio::time::sleep(Duration::from_millis(2100)).await;
    append_n(&*log, 2).await;
    log.prune().await.unwrap();
    let b = log.bounds().await.unwrap();
    assert_eq!((b.first, b.last), (4, 5));
    let c = log.append(vec![ev("after.prune", 0)], None).await.unwrap();
    assert_eq!(c[0].event.seq, 6, "seqs are never reused");
}

/// Age retention measures the time since the log committed an event, not
/// the `time` the client put in it: an event dated in year 9999 goes once
/// its commit is older than `max_age`, and one dated 1970 committed now
/// stays.
pub async fn retention_by_age_uses_commit_time<F, Fut>(make: F)
where
    F: Fn(LogSpec) -> Fut,
    Fut: Future<Output = Arc<dyn EventLog>>,
{
    let log = make(LogSpec {
        retention: Retention {
            max_count: None,
            max_age: Some(Duration::from_millis(1500)),
        },
        ..LogSpec::default()
    })
    .await;
    let dated = |name: &str, time: chrono::DateTime<chrono::Utc>| {
        let mut e = ev(name, 0);
        e.time = time;
        e
    };
    let epoch = chrono::DateTime::UNIX_EPOCH;
    let far = chrono::NaiveDate::from_ymd_opt(9999, 12, 31)
        .and_then(|d| d.and_hms_opt(23, 59, 59))
        .expect("a valid date")
        .and_utc();
    log.append(vec![dated("age.past", epoch)], None)
        .await
        .unwrap();
    log.append(vec![dated("age.future", far)], None)
        .await
        .unwrap();
    log.prune().await.unwrap();
    let b = log.bounds().await.unwrap();
    assert_eq!(
        (b.first, b.last),
        (1, 2),
        "both were committed just now: an event dated 1970 is kept"
    );
    // Waiting for the clock is the point here: nothing else to wait on.
    tokio::time::sleep(Duration::from_millis(2100)).await;
    log.append(vec![dated("age.past", epoch)], None)
        .await
        .unwrap();
    log.prune().await.unwrap();
    let b = log.bounds().await.unwrap();
    assert_eq!(
        (b.first, b.last),
        (3, 3),
        "the event dated 9999 was committed over max_age ago and is pruned; \
         the one dated 1970 committed now is kept"
    );
    let page = log.read(0, 10).await.unwrap();
    assert_eq!(page.events.len(), 1);
    assert_eq!(page.events[0].name, "age.past");
    assert_eq!(
        page.events[0].time, epoch,
        "the event's own time is kept as sent"
    );
}

/// Commit before notify, seen from the receivers: when a sync handler, an
/// async handler and a stream of a bus over this log receive seq N, the log
/// already returns N from `read(N - 1, 1)`. Each receiver checks inside
/// itself (the sync handler blocks on the read with `block_in_place`, so
/// this check needs a multi-threaded runtime, as `conformance_tests!`
/// gives it).
pub async fn commit_before_notify<F, Fut>(make: F)
where
    F: Fn(LogSpec) -> Fut,
    Fut: Future<Output = Arc<dyn EventLog>>,
{
    let log = make(LogSpec::default()).await;
    let bus = Bus::builder()
        .shared_log(log.clone())
        .build()
        .expect("a bus over the log");
    /// `Ok` if the log holds `e` at its seq.
    async fn held(log: &dyn EventLog, e: &SharedEvent) -> Result<(), String> {
        match log.read(e.seq - 1, 1).await {
            Ok(p) if p.events.first().map(|x| (x.seq, x.id)) == Some((e.seq, e.id)) => Ok(()),
            Ok(p) => Err(format!(
                "seq {} delivered but the log reads {:?} (last {})",
                e.seq,
                p.events.first().map(|x| x.seq),
                p.last_seq
            )),
            Err(err) => Err(format!("seq {}: read failed: {err}", e.seq)),
        }
    }
    let rt = tokio::runtime::Handle::current();
    let sync_seen = Arc::new(Mutex::new(Vec::new()));
    let (seen, l) = (sync_seen.clone(), log.clone());
    let _sync = bus
        .on("cbn.>", move |e| {
            // Sync handlers may run on a runtime worker (async emit, the
            // shared-log follower): step out of it to wait for the read.
            let r = tokio::task::block_in_place(|| rt.block_on(held(&*l, e)));
            seen.lock().push((e.seq, r));
        })
        .expect("a sync handler");
    let (tx, mut async_seen) = tokio::sync::mpsc::unbounded_channel();
    let l = log.clone();
    let _async = bus
        .on_async("cbn.>", move |e| {
            let (tx, l) = (tx.clone(), l.clone());
            async move {
                let r = held(&*l, &e).await;
                let _ = tx.send((e.seq, r));
            }
        })
        .expect("an async handler");
    let mut stream = bus.subscribe("cbn.>").expect("a stream");

    let mut want = Vec::new();
    for i in 0..20u64 {
        let e = bus
            .emit_async(format!("cbn.{}", i % 3), json!({ "i": i }))
            .await
            .expect("emit");
        want.push(e.seq);
        if i % 5 == 4 {
            let batch = vec![ev("cbn.batch", i), ev("skip.me", i), ev("cbn.batch", i)];
            let c = bus
                .emit_batch_async(batch, None)
                .await
                .expect("emit a batch");
            want.extend(
                c.iter()
                    .filter(|c| c.event.name.starts_with("cbn"))
                    .map(|c| c.event.seq),
            );
        }
    }
    let sync_got: Vec<(u64, Result<(), String>)> = sync_seen.lock().clone();
    assert_eq!(
        sync_got,
        want.iter().map(|s| (*s, Ok(()))).collect::<Vec<_>>(),
        "sync handler: every seq, each already in the log"
    );
    for &seq in &want {
        let got = tokio::time::timeout(Duration::from_secs(10), async_seen.recv())
            .await
            .expect("the async handler got nothing within 10 s")
            .expect("the async handler ended");
        assert_eq!(got, (seq, Ok(())), "async handler");
        let e = next_bus_event(&mut stream).await;
        assert_eq!(e.seq, seq, "stream order");
        assert_eq!(held(&*log, &e).await, Ok(()), "stream");
    }
}

async fn next_bus_event(s: &mut EventStream) -> SharedEvent {
    match tokio::time::timeout(Duration::from_secs(10), s.next())
        .await
        .expect("stream delivered nothing within 10 s")
        .expect("stream ended")
        .expect("read failed")
    {
        Delivery::Event(e) => e,
        other => panic!("expected an event, got {other:?}"),
    }
}

/// A bus stream with a tiny queue, started from the beginning of the log
/// while events are emitted faster than it reads: its queue overflows
/// during catch-up and after, and it still yields every matching seq
/// exactly once, in order, across the switch from the log to live
/// delivery, with no lag reported.
pub async fn stream_overflow_catch_up_to_live<F, Fut>(make: F)
where
    F: Fn(LogSpec) -> Fut,
    Fut: Future<Output = Arc<dyn EventLog>>,
{
    let log = make(LogSpec::default()).await;
    let name = |i: u64| if i % 3 == 0 { "ovf.skip" } else { "ovf.in.x" };
    // History from before the bus existed.
    for i in 0..20 {
        log.append(vec![ev(name(i), i)], None)
            .await
            .expect("append");
    }
    let bus = Bus::builder()
        .shared_log(log.clone())
        .stream_capacity(2)
        .build()
        .expect("a bus over the log");
    let mut s = bus
        .subscribe_from("ovf.in.>", Position::Beginning)
        .await
        .expect("a stream from the beginning");
    // A burst before the stream reads anything: its queue overflows.
    let burst: Vec<NewEvent> = (20..50).map(|i| ev(name(i), i)).collect();
    bus.emit_batch_async(burst, None)
        .await
        .expect("emit a burst");
    // Then a writer racing the reader: single emits and batches, so the
    // queue overflows again while the stream is live.
    let writer = bus.clone();
    let task = tokio::spawn(async move {
        let mut k = 50u64;
        while k < 150 {
            if k % 10 == 0 {
                let batch = (k..k + 4).map(|j| ev(name(j), j)).collect();
                writer
                    .emit_batch_async(batch, None)
                    .await
                    .expect("emit a batch");
                k += 4;
            } else {
                writer
                    .emit_async(name(k), json!({ "i": k }))
                    .await
                    .expect("emit");
                k += 1;
            }
        }
    });
    // Event k (0-based, in append order) has seq k + 1.
    let want: Vec<u64> = (0..150u64).filter(|k| k % 3 != 0).map(|k| k + 1).collect();
    let mut got = Vec::with_capacity(want.len());
    while got.len() < want.len() {
        let e = next_bus_event(&mut s).await;
        assert!(e.name.starts_with("ovf.in."), "only matching events");
        got.push(e.seq);
    }
    task.await.expect("writer");
    assert_eq!(got, want, "every matching seq once, in order");
    let last = bus
        .emit_async("ovf.in.last", json!(null))
        .await
        .expect("emit");
    assert_eq!(next_bus_event(&mut s).await.seq, last.seq, "then live");
    assert_eq!(last.seq, 151);
}

/// Many concurrent appenders: every seq from 1 to N exactly once, every
/// event present once.
pub async fn concurrent_appends_are_dense<F, Fut>(make: F)
where
    F: Fn(LogSpec) -> Fut,
    Fut: Future<Output = Arc<dyn EventLog>>,
{
    let log = make(LogSpec::default()).await;
    let tasks: Vec<_> = (0..8u64)
        .map(|t| {
            let log = log.clone();
            tokio::spawn(async move {
                let mut seqs = Vec::new();
                for i in 0..40 {
                    let batch = if i % 5 == 0 {
                        vec![ev("c.batch", t), ev("c.batch", t)]
                    } else {
                        vec![ev("c.one", t)]
                    };
                    let c = log.append(batch, None).await.unwrap();
                    let s: Vec<u64> = c.iter().map(|c| c.event.seq).collect();
                    assert!(
                        s.windows(2).all(|w| w[1] == w[0] + 1),
                        "a batch is consecutive"
                    );
                    seqs.extend(s);
                }
                seqs
            })
        })
        .collect();
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.unwrap());
    }
    all.sort_unstable();
    let n = all.len() as u64;
    assert_eq!(all, (1..=n).collect::<Vec<_>>());
    let p = log.read(0, 10_000).await.unwrap();
    assert_eq!(p.events.len() as u64, n);
    let ids: HashSet<_> = p.events.iter().map(|e| e.id).collect();
    assert_eq!(ids.len() as u64, n);
}

/// What a durable log promises across a close and reopen: every event with
/// its seq and id, the last seq, durable cursors, idempotency keys within
/// their window, and the next append continuing at `last + 1` (no seq
/// reused). `open` must open the same, initially empty, storage on every
/// call; the check drops each log before opening the next.
pub async fn survives_reopen<F, Fut>(open: F)
where
    F: Fn() -> Fut,
    Fut: Future<Output = Arc<dyn EventLog>>,
{
    let log = open().await;
    append_n(&*log, 3).await;
    let batch = vec![
        ev("reopen.batch", 0).source("conf"),
        ev("reopen.batch", 1).key("reopen-key"),
    ];
    let batch_ids: Vec<_> = batch.iter().map(|e| e.id).collect();
    let c = log.append(batch, None).await.expect("append a batch");
    assert_eq!(
        c.iter().map(|c| c.event.seq).collect::<Vec<_>>(),
        vec![4, 5]
    );
    log.commit_cursor("reopen-consumer", 4)
        .await
        .expect("commit a cursor");
    let before = log.read(0, 100).await.expect("read before closing");
    drop(log);

    let log = open().await;
    let b = log.bounds().await.expect("bounds after reopening");
    assert_eq!((b.first, b.last), (1, 5), "every event is still there");
    assert_eq!(*log.watch().borrow(), 5, "watch starts at the last seq");
    let after = log.read(0, 100).await.expect("read after reopening");
    assert_eq!(after.last_seq, 5);
    let view = |p: &Page| {
        p.events
            .iter()
            .map(|e| {
                (
                    e.seq,
                    e.id,
                    e.name.clone(),
                    e.source.to_string(),
                    e.data.clone(),
                )
            })
            .collect::<Vec<_>>()
    };
    assert_eq!(view(&after), view(&before), "the same events, unchanged");
    assert_eq!(
        after.events[3..].iter().map(|e| e.id).collect::<Vec<_>>(),
        batch_ids
    );
    assert_eq!(
        log.cursor("reopen-consumer").await.expect("cursor"),
        Some(4),
        "a committed cursor survives"
    );
    let again = log
        .append(vec![ev("reopen.batch", 9).key("reopen-key")], None)
        .await
        .expect("append a repeated key");
    assert!(again[0].duplicate, "the idempotency key survives");
    assert_eq!((again[0].event.seq, again[0].event.id), (5, batch_ids[1]));
    let next = log
        .append(vec![ev("reopen.next", 0)], None)
        .await
        .expect("append after reopening");
    assert_eq!(next[0].event.seq, 6, "no seq is reused");
    drop(log);

    let log = open().await;
    assert_eq!(log.bounds().await.expect("bounds").last, 6);
}

/// Consumer definitions: the first definer wins, they are listed with
/// their cursors (and cursors without a definition), and deleting one
/// removes its definition and its cursor.
pub async fn consumer_definitions<F, Fut>(make: F)
where
    F: Fn(LogSpec) -> Fut,
    Fut: Future<Output = Arc<dyn EventLog>>,
{
    let log = make(LogSpec::default()).await;
    assert!(log.consumers().await.unwrap().is_empty());
    let first = log
        .define_consumer("timeline", r#"{"patterns":["story.>"]}"#)
        .await
        .unwrap();
    assert_eq!(first, r#"{"patterns":["story.>"]}"#);
    let second = log
        .define_consumer("timeline", r#"{"patterns":["other"]}"#)
        .await
        .unwrap();
    assert_eq!(second, first, "the first definition wins");
    log.append(vec![NewEvent::new("story.a", json!(1)).unwrap()], None)
        .await
        .unwrap();
    log.commit_cursor("timeline", 1).await.unwrap();
    log.commit_cursor("bare", 1).await.unwrap();
    let list = log.consumers().await.unwrap();
    let names: Vec<&str> = list.iter().map(|c| c.name.as_str()).collect();
    assert_eq!(names, ["bare", "timeline"], "sorted by name");
    assert_eq!(list[0].spec, "", "a cursor without a definition");
    assert_eq!(list[0].cursor, Some(1));
    assert_eq!(list[1].spec, first);
    assert_eq!(list[1].cursor, Some(1));
    assert!(log.delete_consumer("timeline").await.unwrap());
    assert!(!log.delete_consumer("timeline").await.unwrap());
    assert_eq!(log.cursor("timeline").await.unwrap(), None);
    assert_eq!(log.consumers().await.unwrap().len(), 1);
    let again = log
        .define_consumer("timeline", r#"{"patterns":["other"]}"#)
        .await
        .unwrap();
    assert_eq!(
        again, r#"{"patterns":["other"]}"#,
        "defined anew after delete"
    );
    assert!(matches!(
        log.define_consumer("bad name", "x").await,
        Err(CursorError::InvalidName(_))
    ));
    assert!(matches!(
        log.delete_consumer("").await,
        Err(CursorError::InvalidName(_))
    ));
}

/// Calls `$callback!([args] check, check, ...)` with the given arguments
/// and the name of every check, for backends that wrap each check
/// themselves (setup, cleanup); the list of checks then lives only here.
#[macro_export]
macro_rules! conformance_checks {
    ($callback:path $(, $arg:expr)* $(,)?) => {
        $callback!(
            [$($arg),*]
            dense_seqs_and_roundtrip,
            append_one_is_a_batch_of_one,
            reads_page,
            refusals_append_nothing,
            idempotency_keys,
            idempotency_window_expires,
            watch_follows_appends,
            follow_catches_up_then_live,
            follow_positions,
            cursors,
            consumer_definitions,
            retention_by_count,
            retention_ignores_cursors_but_reports_lag,
            retention_by_age,
            retention_by_age_uses_commit_time,
            concurrent_appends_are_dense,
            commit_before_notify,
            stream_overflow_catch_up_to_live
        );
    };
}

#[doc(hidden)]
#[macro_export]
macro_rules! __conformance_each {
    ([$make:expr, $var:expr] $($check:ident),*) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $check() {
                let var: &str = $var;
                if !var.is_empty() && std::env::var(var).is_err() {
                    eprintln!("skipped: {var} not set");
                    return;
                }
                $crate::conformance::$check($make).await;
            }
        )*
    };
}

/// Expands to one `#[tokio::test]` per check, each calling `$make`.
///
/// With `skip_unless_env = "VAR"`, each test returns early (printing
/// `skipped: VAR not set`) when the variable is unset: for backends that
/// need an external engine, which CI switches on.
#[macro_export]
macro_rules! conformance_tests {
    ($make:expr) => {
        $crate::conformance_checks!($crate::__conformance_each, $make, "");
    };
    ($make:expr, skip_unless_env = $var:literal) => {
        $crate::conformance_checks!($crate::__conformance_each, $make, $var);
    };
}
