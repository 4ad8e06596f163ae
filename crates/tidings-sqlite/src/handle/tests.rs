//! Unit tests of the writer (grouping, isolation, durability modes),
//! persistence across restarts (keys, cursors, the last seq) and closing.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::json;
use tidings_core::log::{AppendError, CursorError, LogHealth, ReadError, Retention};
use tidings_core::{EventLog, NewEvent};

use super::*;

fn ev(i: u64) -> NewEvent {
    NewEvent::new("unit.test", json!({ "i": i })).expect("valid name")
}

fn path_in(dir: &tempfile::TempDir) -> PathBuf {
    dir.path().join("unit.db")
}

fn open(path: &Path, options: SqliteOptions) -> SqliteLog {
    SqliteLog::open(path, options).expect("open")
}

/// Default options without background pruning, so counters only move
/// because of what the test does.
fn quiet() -> SqliteOptions {
    SqliteOptions::default().prune_interval(None)
}

/// Appends queued while the writer is busy go into one transaction (and
/// so, in Sync mode, one fsync).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queued_appends_share_one_transaction() {
    let dir = tempfile::tempdir().unwrap();
    let log = open(&path_in(&dir), quiet());
    let before = log.stats();
    let release = log.hold_writer();
    let futures: Vec<_> = (0..100).map(|i| log.append(vec![ev(i)], None)).collect();
    release.send(()).unwrap();
    let mut seqs = Vec::new();
    for f in futures {
        seqs.push(f.await.unwrap()[0].event.seq);
    }
    assert_eq!(
        seqs,
        (1..=100).collect::<Vec<_>>(),
        "queue order is seq order"
    );
    let after = log.stats();
    assert_eq!(after.groups - before.groups, 1);
    assert_eq!(after.transactions - before.transactions, 1);
    assert_eq!(after.syncs - before.syncs, 1, "one fsync for 100 appends");
    assert_eq!(after.largest_group, 100);
    assert_eq!(after.append_requests, 100);
    assert_eq!(after.events_appended, 100);
}

/// Under real concurrency (no hold), many appenders need far fewer
/// transactions than appends.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_appenders_are_grouped() {
    let dir = tempfile::tempdir().unwrap();
    let log = open(&path_in(&dir), SqliteOptions::default());
    let tasks: Vec<_> = (0..32)
        .map(|t| {
            let log = log.clone();
            tokio::spawn(async move {
                for i in 0..30 {
                    log.append(vec![ev(t * 100 + i)], None).await.unwrap();
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
    let s = log.stats();
    assert_eq!(s.events_appended, 960);
    assert!(
        s.groups * 2 <= s.append_requests,
        "960 appends from 32 tasks took {} groups",
        s.groups
    );
    assert_eq!(log.bounds().await.unwrap().last, 960);
}

/// Inside one group, each request is checked against the running last
/// seq; a conflicting one is refused without touching the others.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expected_last_is_checked_against_the_running_seq() {
    let dir = tempfile::tempdir().unwrap();
    let log = open(&path_in(&dir), quiet());
    let release = log.hold_writer();
    let a = log.append(vec![ev(1), ev(2)], Some(0));
    let b = log.append(vec![ev(3)], Some(0)); // stale: the log is at 2 by then
    let c = log.append(vec![ev(4)], Some(2));
    release.send(()).unwrap();
    assert_eq!(a.await.unwrap()[1].event.seq, 2);
    match b.await {
        Err(AppendError::Conflict {
            expected: 0,
            actual: 2,
        }) => {}
        other => panic!("expected a conflict, got {other:?}"),
    }
    assert_eq!(c.await.unwrap()[0].event.seq, 3);
    let s = log.stats();
    assert_eq!((s.groups, s.conflicts), (1, 1));
}

/// A request whose write fails (here a trigger aborts it) gets the error;
/// the others in its group commit, with dense seqs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_write_does_not_affect_its_group() {
    let dir = tempfile::tempdir().unwrap();
    let path = path_in(&dir);
    open(&path, SqliteOptions::default()).close().unwrap();
    let raw = rusqlite::Connection::open(&path).unwrap();
    raw.execute_batch(
        "CREATE TRIGGER poison BEFORE INSERT ON events WHEN NEW.source = 'poison'
         BEGIN SELECT RAISE(ABORT, 'poisoned event refused'); END;",
    )
    .unwrap();
    drop(raw);
    let log = open(&path, quiet());
    let release = log.hold_writer();
    let a = log.append(vec![ev(1), ev(2)], None);
    let b = log.append(vec![ev(3), ev(4).source("poison")], None);
    let c = log.append(vec![ev(5)], Some(2));
    let d = log.commit_cursor("reader", 1);
    release.send(()).unwrap();
    let a = a.await.unwrap();
    assert_eq!((a[0].event.seq, a[1].event.seq), (1, 2));
    match b.await {
        Err(AppendError::Storage(e)) => {
            assert!(e.to_string().contains("poisoned event refused"), "{e}")
        }
        other => panic!("expected a storage error, got {other:?}"),
    }
    assert_eq!(c.await.unwrap()[0].event.seq, 3, "nothing of b was kept");
    d.await.unwrap();
    let s = log.stats();
    assert_eq!((s.groups, s.transactions, s.failed_transactions), (1, 1, 1));
    let page = log.read(0, 10).await.unwrap();
    assert_eq!(
        page.events.iter().map(|e| e.seq).collect::<Vec<_>>(),
        vec![1, 2, 3]
    );
    assert_eq!(log.cursor("reader").await.unwrap(), Some(1));
}

/// Each durability mode sets the SQLite mode it documents and fsyncs as
/// documented.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn durability_modes() {
    let dir = tempfile::tempdir().unwrap();

    let sync = open(&dir.path().join("sync.db"), quiet());
    assert_eq!(sync.writer_query("PRAGMA synchronous").await, 2, "FULL");
    for i in 0..5 {
        sync.append(vec![ev(i)], None).await.unwrap();
    }
    let s = sync.stats();
    assert_eq!(s.syncs, s.groups, "Sync: one fsync per group commit");
    assert_eq!(s.syncs, 5);

    let none = open(
        &dir.path().join("none.db"),
        quiet().durability(Durability::None),
    );
    assert_eq!(none.writer_query("PRAGMA synchronous").await, 0, "OFF");
    for i in 0..5 {
        none.append(vec![ev(i)], None).await.unwrap();
    }
    assert_eq!(none.stats().syncs, 0, "None: never fsyncs by itself");
    none.sync().await.unwrap();
    assert_eq!(none.stats().syncs, 1, "but sync() forces one");

    let interval = Duration::from_millis(300);
    let batch = open(
        &dir.path().join("batch.db"),
        quiet().durability(Durability::Batch { interval }),
    );
    assert_eq!(batch.writer_query("PRAGMA synchronous").await, 1, "NORMAL");
    let mut synced = batch.inner.stats.synced.0.subscribe();
    let t = std::time::Instant::now();
    for i in 0..20 {
        batch.append(vec![ev(i)], None).await.unwrap();
    }
    let early = batch.stats().syncs;
    let elapsed = t.elapsed();
    assert!(
        early as u128 <= elapsed.as_millis() / interval.as_millis() + 1,
        "Batch: at most one fsync per interval ({early} in {elapsed:?})"
    );
    // Wait for the periodic fsync itself (no sleep racing the writer).
    tokio::time::timeout(Duration::from_secs(30), synced.wait_for(|n| *n >= 1))
        .await
        .expect("the pending commits were fsynced within the interval")
        .unwrap();
    // Then until no commit is left unsynced: the writer then has no timer
    // at all (no pruning, not degraded), so nothing can fsync again.
    loop {
        synced.borrow_and_update();
        match batch.writer_inspect().await {
            (false, timer) => {
                assert!(!timer, "no fsync when nothing is new: no timer is set");
                break;
            }
            (true, _) => tokio::time::timeout(Duration::from_secs(30), synced.changed())
                .await
                .expect("the remaining commits were fsynced within the interval")
                .unwrap(),
        }
    }
    let settled = batch.stats().syncs;
    assert_eq!(batch.writer_inspect().await, (false, false));
    assert_eq!(batch.stats().syncs, settled, "no fsync when nothing is new");

    // Closing fsyncs what is still pending.
    let batch2 = open(
        &dir.path().join("batch2.db"),
        quiet().durability(Durability::Batch {
            interval: Duration::from_secs(3600),
        }),
    );
    batch2.append(vec![ev(1)], None).await.unwrap();
    let before_close = batch2.stats().syncs;
    batch2.close().unwrap();
    assert_eq!(batch2.stats().syncs, before_close + 1);
}

/// Idempotency keys survive a restart, and expire after the window even
/// across one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn key_window_holds_and_expires_across_restart() {
    let dir = tempfile::tempdir().unwrap();
    let path = path_in(&dir);
    let options = SqliteOptions::default().idempotency_window(Duration::from_millis(1500));
    let log = open(&path, options.clone());
    let first = log.append(vec![ev(1).key("pay-1")], None).await.unwrap();
    log.close().unwrap();

    let log = open(&path, options.clone());
    let again = log.append(vec![ev(2).key("pay-1")], None).await.unwrap();
    assert!(again[0].duplicate, "the key survived the restart");
    assert_eq!(again[0].event, first[0].event, "the original event");
    assert_eq!(log.bounds().await.unwrap().last, 1);
    log.close().unwrap();

    tokio::time::sleep(Duration::from_millis(1700)).await;
    let log = open(&path, options);
    let fresh = log.append(vec![ev(3).key("pay-1")], None).await.unwrap();
    assert!(
        !fresh[0].duplicate,
        "the window passed while the log was closed"
    );
    assert_eq!(fresh[0].event.seq, 2);
    // The swept key row is gone after a prune.
    log.prune().await.unwrap();
}

/// A live key whose event retention pruned still answers with the
/// original event (kept beside the key), also after a restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn key_outlives_its_pruned_event() {
    let dir = tempfile::tempdir().unwrap();
    let path = path_in(&dir);
    let options = SqliteOptions::default().retention(Retention {
        max_count: Some(2),
        max_age: None,
    });
    let log = open(&path, options.clone());
    let orig = log
        .append(
            vec![ev(1).key("k").priority(tidings_core::Priority::Low)],
            None,
        )
        .await
        .unwrap();
    for i in 0..4 {
        log.append(vec![ev(10 + i)], None).await.unwrap();
    }
    assert_eq!(log.prune().await.unwrap(), 3);
    assert_eq!(log.bounds().await.unwrap().first, 4);
    let dup = log.append(vec![ev(99).key("k")], None).await.unwrap();
    assert!(dup[0].duplicate);
    assert_eq!(dup[0].event, orig[0].event);
    log.close().unwrap();
    let log = open(&path, options);
    let dup = log.append(vec![ev(100).key("k")], None).await.unwrap();
    assert!(dup[0].duplicate);
    assert_eq!(dup[0].event, orig[0].event);
}

/// Cursors survive a restart, and survive retention removing everything
/// they point at.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cursors_persist_across_restart() {
    let dir = tempfile::tempdir().unwrap();
    let path = path_in(&dir);
    let log = open(&path, SqliteOptions::default());
    for i in 0..5 {
        log.append(vec![ev(i)], None).await.unwrap();
    }
    log.commit_cursor("indexer", 3).await.unwrap();
    log.commit_cursor("mailer", 5).await.unwrap();
    log.commit_cursor("indexer", 4).await.unwrap();
    log.close().unwrap();

    let options = SqliteOptions::default().retention(Retention {
        max_count: Some(0),
        max_age: None,
    });
    let log = open(&path, options);
    assert_eq!(log.cursor("indexer").await.unwrap(), Some(4));
    assert_eq!(log.cursor("mailer").await.unwrap(), Some(5));
    assert_eq!(log.cursor("nobody").await.unwrap(), None);
    assert_eq!(log.prune().await.unwrap(), 5);
    assert_eq!(log.cursor("indexer").await.unwrap(), Some(4));
    assert!(matches!(
        log.commit_cursor("indexer", 6).await,
        Err(CursorError::BeyondEnd { last: 5, .. })
    ));
}

/// After retention removed every event, the last seq is kept: bounds stay
/// right and the next append is last + 1, also after a restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seq_never_restarts_after_pruning_everything() {
    let dir = tempfile::tempdir().unwrap();
    let path = path_in(&dir);
    let options = SqliteOptions::default().retention(Retention {
        max_count: Some(0),
        max_age: None,
    });
    let log = open(&path, options.clone());
    for i in 0..5 {
        log.append(vec![ev(i)], None).await.unwrap();
    }
    assert_eq!(log.prune().await.unwrap(), 5);
    let b = log.bounds().await.unwrap();
    assert_eq!((b.first, b.last), (6, 5));
    let p = log.read(0, 10).await.unwrap();
    assert!(p.events.is_empty());
    assert_eq!(p.last_seq, 5);
    log.close().unwrap();

    let log = open(&path, options);
    let b = log.bounds().await.unwrap();
    assert_eq!((b.first, b.last), (6, 5));
    assert_eq!(*log.watch().borrow(), 5, "watch starts at the last seq");
    let c = log.append(vec![ev(6)], None).await.unwrap();
    assert_eq!(c[0].event.seq, 6);
}

/// Background pruning applies retention without `prune()` being called.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn background_pruning_runs_on_its_interval() {
    let dir = tempfile::tempdir().unwrap();
    let options = SqliteOptions {
        retention: Retention {
            max_count: Some(3),
            max_age: None,
        },
        prune_interval: Some(Duration::from_millis(50)),
        ..SqliteOptions::default()
    };
    let log = open(&path_in(&dir), options);
    for i in 0..10 {
        log.append(vec![ev(i)], None).await.unwrap();
    }
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while log.bounds().await.unwrap().first != 8 {
        assert!(std::time::Instant::now() < deadline, "never pruned");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(log.stats().events_pruned, 7);
}

/// The watch is updated before the append is acknowledged.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_is_published_before_the_ack() {
    let dir = tempfile::tempdir().unwrap();
    let log = open(&path_in(&dir), SqliteOptions::default());
    let rx = log.watch();
    for i in 0..50 {
        let c = log.append(vec![ev(i)], None).await.unwrap();
        assert!(*rx.borrow() >= c[0].event.seq);
        assert_eq!(log.last_seq(), c[0].event.seq);
    }
}

/// Close commits what was queued before it, then everything fails cleanly.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn close_flushes_then_refuses() {
    let dir = tempfile::tempdir().unwrap();
    let path = path_in(&dir);
    let log = open(&path, SqliteOptions::default());
    let release = log.hold_writer();
    let queued: Vec<_> = (0..10).map(|i| log.append(vec![ev(i)], None)).collect();
    // Release the writer only once close() has started (it takes the
    // writer's queue first), so close really has to wait for the queue.
    let closing = log.clone();
    let releaser = std::thread::spawn(move || {
        while closing.inner.writer_tx.read().is_some() {
            std::thread::yield_now();
        }
        release.send(()).unwrap();
    });
    let mut rx = log.watch();
    log.close().unwrap();
    releaser.join().unwrap();
    for (i, f) in queued.into_iter().enumerate() {
        assert_eq!(f.await.unwrap()[0].event.seq, i as u64 + 1);
    }
    assert!(matches!(
        log.append(vec![ev(0)], None).await,
        Err(AppendError::Closed)
    ));
    assert!(matches!(log.read(0, 1).await, Err(ReadError::Closed)));
    assert!(matches!(log.bounds().await, Err(ReadError::Closed)));
    assert!(matches!(log.cursor("x").await, Err(CursorError::Closed)));
    assert!(matches!(
        log.commit_cursor("x", 1).await,
        Err(CursorError::Closed)
    ));
    assert!(matches!(log.prune().await, Err(PruneError::Closed)));
    assert!(matches!(log.sync().await, Err(SyncError::Closed)));
    assert!(rx.wait_for(|v| *v > 10).await.is_err(), "the watch closes");
    log.close().unwrap(); // idempotent

    let log = open(&path, SqliteOptions::default());
    assert_eq!(
        log.bounds().await.unwrap().last,
        10,
        "the queued appends were kept"
    );
}

/// Dropping the last handle closes the log (the file can be reopened and
/// holds everything acknowledged).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drop_closes() {
    let dir = tempfile::tempdir().unwrap();
    let path = path_in(&dir);
    let log = open(&path, SqliteOptions::default());
    let clone = log.clone();
    log.append(vec![ev(1)], None).await.unwrap();
    drop(log);
    clone.append(vec![ev(2)], None).await.unwrap();
    drop(clone);
    assert!(
        !dir.path().join("unit.db-wal").exists(),
        "closed and checkpointed"
    );
    let log = open(&path, SqliteOptions::default());
    assert_eq!(log.bounds().await.unwrap().last, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_options_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    for bad in [
        SqliteOptions {
            readers: 0,
            ..SqliteOptions::default()
        },
        SqliteOptions::default().durability(Durability::Batch {
            interval: Duration::ZERO,
        }),
        SqliteOptions::default().prune_interval(Some(Duration::ZERO)),
    ] {
        assert!(matches!(
            SqliteLog::open(path_in(&dir), bad),
            Err(OpenError::InvalidOptions(_))
        ));
    }
}

/// Times round-trip at microsecond precision, and what `append` returns is
/// exactly what `read` returns later.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn appended_equals_read() {
    let dir = tempfile::tempdir().unwrap();
    let log = open(&path_in(&dir), SqliteOptions::default());
    let mut e = ev(1)
        .source("svc")
        .key("k1")
        .priority(tidings_core::Priority::High);
    e.time = chrono::DateTime::from_timestamp(1_700_000_000, 123_456_789).unwrap();
    e.data = json!({"nested": {"a": [1, 2.5, null, "s"]}, "u": "é\u{1F600}"});
    let c = log.append(vec![e], None).await.unwrap();
    let page = log.read(0, 1).await.unwrap();
    assert_eq!(*page.events[0], *c[0].event);
    assert_eq!(page.events[0].time.timestamp_subsec_nanos(), 123_456_000);
    let at = log
        .seq_before(chrono::DateTime::from_timestamp(1_700_000_000, 123_456_001).unwrap())
        .await
        .unwrap();
    assert_eq!(at, 1, "no event at or after a time just past the only one");
    let at = log
        .seq_before(chrono::DateTime::from_timestamp(1_700_000_000, 123_456_000).unwrap())
        .await
        .unwrap();
    assert_eq!(at, 0);
}

async fn append_n(log: &SqliteLog, n: u64) {
    let mut i = 0;
    while i < n {
        let batch: Vec<NewEvent> = (i..(i + 100).min(n)).map(ev).collect();
        i += batch.len() as u64;
        log.append(batch, None).await.unwrap();
    }
}

/// Waits until no read-ahead is in progress (signalled by the readers).
async fn settle(log: &SqliteLog) {
    let ahead = log.inner.read_ahead.clone();
    tokio::task::spawn_blocking(move || ahead.wait_idle())
        .await
        .unwrap();
}

/// A page read ahead is not served once retention removed part of it, and
/// a served one carries the current last seq.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn read_ahead_respects_pruning_and_new_appends() {
    let dir = tempfile::tempdir().unwrap();
    let options = quiet().retention(Retention {
        max_count: Some(100),
        max_age: None,
    });
    let log = open(&path_in(&dir), options);
    append_n(&log, 200).await;
    let p = log.read(0, 64).await.unwrap();
    assert_eq!(
        p.events.len(),
        64,
        "a full page: the next one is read ahead"
    );
    settle(&log).await;
    assert_eq!(log.prune().await.unwrap(), 100);
    let p = log.read(64, 64).await.unwrap();
    assert_eq!(
        p.events.first().map(|e| e.seq),
        Some(101),
        "not the stale page 65..=128"
    );
    assert_eq!(p.last_seq, 200);

    assert_eq!(log.stats().read_ahead_served, 0);

    // Served from the read-ahead, with the last seq of now.
    let p = log.read(100, 32).await.unwrap();
    assert_eq!(p.events.len(), 32);
    settle(&log).await;
    let p = log.read(164, 32).await.unwrap();
    assert_eq!(p.events.len(), 32, "too small a page to be read ahead");
    settle(&log).await;
    append_n(&log, 5).await;
    let p = log.read(196, 32).await.unwrap();
    assert_eq!(p.events.len(), 9);
    assert_eq!(log.stats().read_ahead_served, 0);
    let p = log.read(100, 64).await.unwrap();
    assert_eq!(p.events.len(), 64);
    settle(&log).await;
    append_n(&log, 100).await;
    let p = log.read(164, 64).await.unwrap();
    assert_eq!(
        p.events.iter().map(|e| e.seq).collect::<Vec<_>>(),
        (165..=228).collect::<Vec<_>>(),
        "the page read ahead when the log ended at 205 was not full: not kept"
    );
    assert_eq!(p.last_seq, 305);
    assert_eq!(log.stats().read_ahead_served, 0);
    let p = log.read(100, 64).await.unwrap();
    assert_eq!(p.events.len(), 64);
    settle(&log).await;
    append_n(&log, 7).await;
    let p = log.read(164, 64).await.unwrap();
    assert_eq!(
        p.events.iter().map(|e| e.seq).collect::<Vec<_>>(),
        (165..=228).collect::<Vec<_>>()
    );
    assert_eq!(
        p.last_seq, 312,
        "the last seq of now, not of the read-ahead"
    );
    assert_eq!(log.stats().read_ahead_served, 1);
}

/// Several sequential readers at once (each triggering read-ahead) all see
/// exactly the log, page after page.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_sequential_readers() {
    let dir = tempfile::tempdir().unwrap();
    let log = open(&path_in(&dir), quiet());
    append_n(&log, 3000).await;
    let readers: Vec<_> = (0..6u64)
        .map(|r| {
            let log = log.clone();
            tokio::spawn(async move {
                let page = [64usize, 100, 64, 500, 64, 100][r as usize];
                let mut after = r * 37;
                loop {
                    let p = log.read(after, page).await.unwrap();
                    assert_eq!(p.last_seq, 3000);
                    if p.events.is_empty() {
                        break;
                    }
                    for (k, e) in p.events.iter().enumerate() {
                        assert_eq!(e.seq, after + 1 + k as u64);
                        assert_eq!(e.data, json!({ "i": e.seq - 1 }));
                    }
                    after = p.events.last().unwrap().seq;
                }
                after
            })
        })
        .collect();
    for r in readers {
        assert_eq!(r.await.unwrap(), 3000);
    }
}

/// The counting hook on the writer's fsync: in `Sync` mode every
/// acknowledged commit group was fsynced (counted at the `COMMIT` that
/// SQLite fsyncs, given `synchronous=FULL` read back from the connection)
/// before its ack; in `None` mode nothing is. Fails if `Sync` stopped
/// making SQLite fsync (a lower `synchronous`, or commits elsewhere).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sync_mode_fsyncs_each_group_before_acking_it() {
    let dir = tempfile::tempdir().unwrap();
    let log = open(&dir.path().join("sync.db"), quiet());
    for i in 0..10 {
        let before = log.stats().syncs;
        log.append(vec![ev(i)], None).await.unwrap();
        assert!(
            log.stats().syncs > before,
            "append {i} was acknowledged before an fsync"
        );
    }
    // One group of many: every ack comes after the group's fsync.
    let before = log.stats();
    let release = log.hold_writer();
    let queued: Vec<_> = (0..20).map(|i| log.append(vec![ev(i)], None)).collect();
    release.send(()).unwrap();
    for f in queued {
        f.await.unwrap();
        assert!(
            log.stats().syncs > before.syncs,
            "acknowledged before fsync"
        );
    }
    let after = log.stats();
    assert_eq!(after.groups - before.groups, 1);
    assert_eq!(after.syncs - before.syncs, 1, "one fsync for the group");
    // A cursor commit writes too, and is fsynced too.
    log.commit_cursor("c", 3).await.unwrap();
    assert_eq!(log.stats().syncs, after.syncs + 1);

    let none = open(
        &dir.path().join("none.db"),
        quiet().durability(Durability::None),
    );
    for i in 0..10 {
        none.append(vec![ev(i)], None).await.unwrap();
    }
    none.commit_cursor("c", 3).await.unwrap();
    assert_eq!(none.stats().syncs, 0, "None mode never fsyncs by itself");
}

/// A storage fault (here the writer's connection turned read-only) fails
/// the whole group with an error naming it, degrades health, consumes no
/// seq, and the log recovers by itself once the fault is gone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn storage_fault_degrades_health_until_a_write_succeeds() {
    let dir = tempfile::tempdir().unwrap();
    let log = open(&path_in(&dir), quiet().probe_interval(None));
    log.append(vec![ev(1)], None).await.unwrap();
    assert_eq!(log.health(), LogHealth::Ok);
    log.writer_exec("PRAGMA query_only = ON").await;
    let release = log.hold_writer();
    let a = log.append(vec![ev(2), ev(3)], None);
    let b = log.append(vec![ev(4)], None);
    release.send(()).unwrap();
    for r in [a.await, b.await] {
        match r {
            Err(AppendError::Storage(e)) => assert!(e.to_string().contains("readonly"), "{e}"),
            other => panic!("expected a storage error, got {other:?}"),
        }
    }
    match log.health() {
        LogHealth::Degraded { reason, no_space } => {
            assert!(!no_space);
            assert!(reason.contains("readonly"), "{reason}");
        }
        LogHealth::Ok => panic!("health should be degraded"),
    }
    assert_eq!(
        log.stats().failed_transactions,
        1,
        "one attempt for the group"
    );
    log.writer_exec("PRAGMA query_only = OFF").await;
    assert_ne!(log.health(), LogHealth::Ok, "no probe: still degraded");
    let c = log.append(vec![ev(5)], None).await.unwrap();
    assert_eq!(c[0].event.seq, 2, "the failed appends consumed no seq");
    assert_eq!(log.health(), LogHealth::Ok);
    assert_eq!(log.stats().probes, 0);
}

/// While degraded and idle, the writer probes, and health recovers with no
/// new publish once the fault is gone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_writer_probes_until_health_recovers() {
    let dir = tempfile::tempdir().unwrap();
    let log = open(
        &path_in(&dir),
        quiet().probe_interval(Some(Duration::from_millis(10))),
    );
    log.append(vec![ev(1)], None).await.unwrap();
    log.writer_exec("PRAGMA query_only = ON").await;
    assert!(log.append(vec![ev(2)], None).await.is_err());
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    // Probes run and fail while the fault lasts.
    while log.stats().probes < 2 {
        assert!(std::time::Instant::now() < deadline, "no probes ran");
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    assert!(matches!(log.health(), LogHealth::Degraded { .. }));
    log.writer_exec("PRAGMA query_only = OFF").await;
    while log.health() != LogHealth::Ok {
        assert!(
            std::time::Instant::now() < deadline,
            "health never recovered"
        );
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let probes = log.stats().probes;
    assert_eq!(log.last_seq(), 1, "probes append nothing");
    let c = log.append(vec![ev(3)], None).await.unwrap();
    assert_eq!(c[0].event.seq, 2);
    assert_eq!(
        log.writer_inspect().await,
        (false, false),
        "probing stopped"
    );
    assert_eq!(log.stats().probes, probes);
}

/// A writer thread that panics is restarted: the requests of its group get
/// an error naming the panic (not `Closed`), health says so, and the log
/// goes on, gap-free.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writer_panic_is_reported_and_the_writer_restarted() {
    let dir = tempfile::tempdir().unwrap();
    let log = open(&path_in(&dir), quiet().probe_interval(None));
    log.append(vec![ev(1)], None).await.unwrap();
    let release = log.hold_writer();
    let a = log.append(vec![ev(2)], None);
    assert!(log.inner.send_write(Command::Panic).is_ok());
    let b = log.append(vec![ev(3)], None);
    release.send(()).unwrap();
    for r in [a.await, b.await] {
        match r {
            Err(AppendError::Unavailable(m)) => assert!(m.contains("panicked"), "{m}"),
            other => panic!("expected an error naming the panic, got {other:?}"),
        }
    }
    match log.health() {
        LogHealth::Degraded { reason, no_space } => {
            assert!(!no_space);
            assert!(reason.contains("injected writer panic"), "{reason}");
        }
        LogHealth::Ok => panic!("health should report the panic"),
    }
    assert_eq!(log.stats().writer_panics, 1);
    let c = log.append(vec![ev(4)], None).await.unwrap();
    assert_eq!(c[0].event.seq, 2, "the panicked group was rolled back");
    assert_eq!(log.health(), LogHealth::Ok);
    let page = log.read(0, 10).await.unwrap();
    assert_eq!(
        page.events.iter().map(|e| e.seq).collect::<Vec<_>>(),
        vec![1, 2]
    );
    log.close().unwrap();
}

/// Age retention goes by when the log committed an event, never by the
/// event's own (client-sent) time: an event dated in year 9999 is pruned
/// like any other once its commit is old, and one dated 1970 but committed
/// now is kept.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn age_retention_uses_commit_time_not_event_time() {
    let dir = tempfile::tempdir().unwrap();
    let log = open(
        &path_in(&dir),
        quiet().retention(Retention {
            max_count: None,
            max_age: Some(Duration::from_secs(3600)),
        }),
    );
    let mut future = ev(1);
    future.time = chrono::DateTime::parse_from_rfc3339("9999-12-31T23:59:59Z")
        .unwrap()
        .to_utc();
    let mut ancient = ev(3);
    ancient.time = chrono::DateTime::from_timestamp(0, 0).unwrap();

    // Alone and committed now, an event dated 1970 is kept.
    log.append(vec![ancient.clone()], None).await.unwrap();
    assert_eq!(log.prune().await.unwrap(), 0, "committed now: kept");
    // Make that commit two hours old, as far as the log knows; then the
    // future-dated event and another, also committed two hours ago.
    log.append(vec![future], None).await.unwrap();
    log.append(vec![ev(2)], None).await.unwrap();
    log.writer_exec("UPDATE events SET committed = committed - 7200000000")
        .await;
    log.append(vec![ancient], None).await.unwrap();
    let page = log.read(1, 1).await.unwrap();
    assert_eq!(page.events[0].time.format("%Y").to_string(), "9999");

    assert_eq!(log.prune().await.unwrap(), 3, "the year-9999 event too");
    let b = log.bounds().await.unwrap();
    assert_eq!((b.first, b.last), (4, 4));
    let kept = log.read(0, 10).await.unwrap();
    assert_eq!(kept.events.len(), 1);
    assert_eq!(
        kept.events[0].time.timestamp(),
        0,
        "dated 1970, committed now"
    );
    assert_eq!(log.prune().await.unwrap(), 0);
}

/// `read_within` stops the SQL read itself at the byte budget: a page of
/// 1 MiB payloads copies only the rows that fit (plus, for a full page, the
/// next such page read ahead), never `limit` of them; the cut is the same
/// as core's default (read, then `Page::truncate_to_bytes`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn read_within_stops_the_sql_read_at_the_byte_budget() {
    let dir = tempfile::tempdir().unwrap();
    let log = open(&path_in(&dir), quiet());
    let big = "x".repeat(1 << 20);
    for b in 0..6u64 {
        let batch = (0..4)
            .map(|k| NewEvent::new("unit.big", json!({ "i": b * 4 + k, "pad": big })).unwrap())
            .collect();
        log.append(batch, None).await.unwrap();
    }
    let budget = 4 << 20;
    let before = log.stats().rows_read;
    let page = log.read_within(0, 512, budget).await.unwrap();
    settle(&log).await;
    let copied = log.stats().rows_read - before;
    assert!(
        (1..24).contains(&page.events.len()),
        "{} events",
        page.events.len()
    );
    assert_eq!(page.last_seq, 24);
    assert!(
        copied <= 2 * page.events.len() as u64,
        "copied {copied} rows for a page of {}: the read did not stop at the budget",
        page.events.len()
    );
    let mut cut = log.read(0, 512).await.unwrap();
    assert_eq!(cut.events.len(), 24);
    cut.truncate_to_bytes(budget);
    assert_eq!(
        page.events.iter().map(|e| e.seq).collect::<Vec<_>>(),
        cut.events.iter().map(|e| e.seq).collect::<Vec<_>>(),
        "the same cut as the default read_within"
    );

    // The next budgeted page was read ahead, and is exactly a fresh read.
    let after = page.events.last().unwrap().seq;
    let served = log.stats().read_ahead_served;
    let next = log.read_within(after, 512, budget).await.unwrap();
    assert_eq!(log.stats().read_ahead_served, served + 1);
    assert_eq!(next.events.len(), page.events.len());
    assert_eq!(next.events[0].seq, after + 1);

    // At least one event, even past the budget; and no cut without one.
    settle(&log).await;
    let one = log.read_within(0, 512, 10).await.unwrap();
    assert_eq!(one.events.len(), 1);
    settle(&log).await;
    let small = log.read_within(0, 3, usize::MAX).await.unwrap();
    assert_eq!(small.events.len(), 3);
}

/// A read whose requester dropped it before a reader got to it is not
/// read, and nothing is read ahead for it; a reader that stays is.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reader_that_went_away_gets_no_read_ahead() {
    let dir = tempfile::tempdir().unwrap();
    let log = open(
        &path_in(&dir),
        SqliteOptions {
            readers: 1,
            ..quiet()
        },
    );
    append_n(&log, 300).await;
    let before = log.stats();
    let release = log.hold_reader();
    drop(log.read(0, 64));
    release.send(()).unwrap();
    // One reader thread, FIFO: once this is answered the dropped read was
    // taken (and skipped).
    log.bounds().await.unwrap();
    settle(&log).await;
    let after = log.stats();
    assert_eq!(after.reads_abandoned - before.reads_abandoned, 1);
    assert_eq!(after.rows_read, before.rows_read, "nothing was read for it");
    assert_eq!(log.inner.read_ahead.slots(), 0, "nothing read ahead for it");

    let p = log.read(0, 64).await.unwrap();
    assert_eq!(p.events.len(), 64);
    settle(&log).await;
    assert_eq!(
        log.inner.read_ahead.slots(),
        1,
        "a reader that stays is read ahead for"
    );
    assert_eq!(log.stats().rows_read, after.rows_read + 128);
}
