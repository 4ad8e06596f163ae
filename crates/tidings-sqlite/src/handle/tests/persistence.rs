//! What survives restarts and retention: idempotency keys, cursors, the
//! last seq; background and age retention.

use super::*;

/// Idempotency keys survive a restart, and expire after the window even
/// across one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn key_window_holds_and_expires_across_restart() {
    let dir = tempfile::tempdir().unwrap();
    let path = path_in(&dir);
    let options = SqliteOptions::default()
        .log(LogOptions::default().with_idempotency_window(Duration::from_millis(1500)));
    let log = open(&path, options.clone());
    let first = log.append(vec![ev(1).key("pay-1")], None).await.unwrap();
    log.close_blocking().unwrap();

    let log = open(&path, options.clone());
    let again = log.append(vec![ev(2).key("pay-1")], None).await.unwrap();
    assert!(again[0].duplicate, "the key survived the restart");
    assert_eq!(again[0].event, first[0].event, "the original event");
    assert_eq!(log.bounds().await.unwrap().last, 1);
    log.close_blocking().unwrap();

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
    let options = SqliteOptions::default().log(LogOptions::retention(Retention {
        max_count: Some(2),
        max_age: None,
    }));
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
    log.close_blocking().unwrap();
    let log = open(&path, options);
    let dup = log.append(vec![ev(100).key("k")], None).await.unwrap();
    assert!(dup[0].duplicate);
    assert_eq!(dup[0].event, orig[0].event);
}

/// Cursors and consumer definitions survive a restart, and cursors
/// survive retention removing everything they point at.
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
    log.define_consumer("indexer", "spec-1").await.unwrap();
    log.close_blocking().unwrap();

    let options = SqliteOptions::default().log(
        LogOptions::retention(Retention {
            // Everything older than 1 ms: all of it, once the test waited.
            // (A zero count is refused: `LogOptions`.)
            max_count: None,
            max_age: Some(Duration::from_millis(1)),
        })
        .with_prune_interval(None),
    );
    let log = open(&path, options);
    assert_eq!(log.cursor("indexer").await.unwrap(), Some(4));
    assert_eq!(log.cursor("mailer").await.unwrap(), Some(5));
    assert_eq!(log.cursor("nobody").await.unwrap(), None);
    assert_eq!(
        log.define_consumer("indexer", "spec-2").await.unwrap(),
        "spec-1",
        "the definition survived the restart"
    );
    tokio::time::sleep(Duration::from_millis(20)).await;
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
    let options = SqliteOptions::default().log(
        LogOptions::retention(Retention {
            // Everything older than 1 ms: all of it, once the test waited.
            // (A zero count is refused: `LogOptions`.)
            max_count: None,
            max_age: Some(Duration::from_millis(1)),
        })
        .with_prune_interval(None),
    );
    let log = open(&path, options.clone());
    for i in 0..5 {
        log.append(vec![ev(i)], None).await.unwrap();
    }
    tokio::time::sleep(Duration::from_millis(20)).await;
    assert_eq!(log.prune().await.unwrap(), 5);
    let b = log.bounds().await.unwrap();
    assert_eq!((b.first, b.last), (6, 5));
    let p = log.read(0, 10).await.unwrap();
    assert!(p.events.is_empty());
    assert_eq!(p.last_seq, 5);
    log.close_blocking().unwrap();

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
    let options = SqliteOptions::default().log(
        LogOptions::retention(Retention {
            max_count: Some(3),
            max_age: None,
        })
        .with_prune_interval(Some(Duration::from_millis(50))),
    );
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

/// Age retention goes by when the log committed an event, never by the
/// event's own (client-sent) time: an event dated in year 9999 is pruned
/// like any other once its commit is old, and one dated 1970 but committed
/// now is kept.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn age_retention_uses_commit_time_not_event_time() {
    let dir = tempfile::tempdir().unwrap();
    let log = open(
        &path_in(&dir),
        quiet().log(
            LogOptions::retention(Retention {
                max_count: None,
                max_age: Some(Duration::from_secs(3600)),
            })
            .with_prune_interval(None),
        ),
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
