//! Reads: round trips, read-ahead (validity, concurrency, readers that went
//! away) and byte budgets.

use super::*;

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

/// A page read ahead is not served once retention removed part of it, and
/// a served one carries the current last seq.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn read_ahead_respects_pruning_and_new_appends() {
    let dir = tempfile::tempdir().unwrap();
    let options = quiet().log(
        LogOptions::retention(Retention {
            max_count: Some(100),
            max_age: None,
        })
        .with_prune_interval(None),
    );
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
