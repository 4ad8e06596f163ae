//! Group commit (grouping, running-seq checks, isolating a failed write),
//! durability modes and their fsyncs, the watch, storage faults and health,
//! writer panics.

use super::*;
use tidings_core::log::LogFailure;

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

/// The writer waits for the previous group's appenders to come back only
/// where every commit fsyncs: after a group of two, a lone append commits
/// at once in `Batch` and `None`, and waits out `group_wait` in `Sync`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_group_wait_applies_only_where_commits_fsync() {
    let wait = Duration::from_secs(2);
    let batch = Durability::Batch {
        interval: Duration::from_millis(10),
    };
    for (durability, waits) in [
        (batch, false),
        (Durability::None, false),
        (Durability::Sync, true),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let options = SqliteOptions {
            group_wait: wait,
            ..quiet()
        }
        .durability(durability);
        let log = open(&path_in(&dir), options);
        let release = log.hold_writer();
        let pair = [log.append(vec![ev(1)], None), log.append(vec![ev(2)], None)];
        release.send(()).unwrap();
        for f in pair {
            f.await.unwrap();
        }
        assert_eq!(log.stats().largest_group, 2, "{durability:?}");
        let started = std::time::Instant::now();
        log.append(vec![ev(3)], None).await.unwrap();
        let took = started.elapsed();
        if waits {
            assert!(
                took >= wait,
                "{durability:?}: the lone append took {took:?}"
            );
        } else {
            assert!(
                took < wait / 2,
                "{durability:?}: the lone append took {took:?}"
            );
        }
    }
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

/// Consumer definitions in one group behave as if they ran one by one: the
/// first wins, a delete in between lets the next one define anew.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consumer_definitions_in_one_group_run_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let log = open(&path_in(&dir), quiet());
    let release = log.hold_writer();
    let a = log.define_consumer("c", "a");
    let b = log.define_consumer("c", "b");
    let gone = log.delete_consumer("c");
    let again = log.delete_consumer("c");
    let d = log.define_consumer("c", "d");
    release.send(()).unwrap();
    assert_eq!(a.await.unwrap(), "a");
    assert_eq!(b.await.unwrap(), "a", "the first definition wins");
    assert!(gone.await.unwrap());
    assert!(!again.await.unwrap());
    assert_eq!(d.await.unwrap(), "d");
    assert_eq!(log.stats().groups, 1);
}

/// A request whose write fails (here a trigger aborts it) gets the error;
/// the others in its group commit, with dense seqs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_write_does_not_affect_its_group() {
    let dir = tempfile::tempdir().unwrap();
    let path = path_in(&dir);
    open(&path, SqliteOptions::default())
        .close_blocking()
        .unwrap();
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
        Err(AppendError::Failed(LogFailure::Storage(e))) => {
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
    batch2.close_blocking().unwrap();
    assert_eq!(batch2.stats().syncs, before_close + 1);
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
            Err(AppendError::Failed(LogFailure::Storage(e))) => {
                assert!(e.to_string().contains("readonly"), "{e}")
            }
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
            Err(AppendError::Failed(LogFailure::Unavailable(m))) => {
                assert!(m.contains("panicked"), "{m}")
            }
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
    log.close_blocking().unwrap();
}
