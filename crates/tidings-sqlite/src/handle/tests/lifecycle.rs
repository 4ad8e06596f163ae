//! Opening with bad options, closing, and dropping the last handle.

use super::*;
use tidings_core::log::LogFailure;

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
    log.close_blocking().unwrap();
    releaser.join().unwrap();
    for (i, f) in queued.into_iter().enumerate() {
        assert_eq!(f.await.unwrap()[0].event.seq, i as u64 + 1);
    }
    assert!(matches!(
        log.append(vec![ev(0)], None).await,
        Err(AppendError::Failed(LogFailure::Closed))
    ));
    assert!(matches!(
        log.read(0, 1).await,
        Err(ReadError::Failed(LogFailure::Closed))
    ));
    assert!(matches!(
        log.bounds().await,
        Err(ReadError::Failed(LogFailure::Closed))
    ));
    assert!(matches!(
        log.cursor("x").await,
        Err(CursorError::Failed(LogFailure::Closed))
    ));
    assert!(matches!(
        log.commit_cursor("x", 1).await,
        Err(CursorError::Failed(LogFailure::Closed))
    ));
    assert!(matches!(
        log.prune().await,
        Err(PruneError::Failed(LogFailure::Closed))
    ));
    assert!(matches!(
        log.sync().await,
        Err(SyncError::Failed(LogFailure::Closed))
    ));
    assert!(rx.wait_for(|v| *v > 10).await.is_err(), "the watch closes");
    log.close_blocking().unwrap(); // idempotent

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
        SqliteOptions::default()
            .log(LogOptions::default().with_prune_interval(Some(Duration::ZERO))),
        SqliteOptions::default().log(LogOptions::retention(tidings_core::Retention {
            max_count: Some(0),
            max_age: None,
        })),
        SqliteOptions::default().log(LogOptions::default().with_idempotency_window(Duration::ZERO)),
    ] {
        assert!(matches!(
            SqliteLog::open(path_in(&dir), bad),
            Err(OpenError::InvalidOptions(_))
        ));
    }
}
