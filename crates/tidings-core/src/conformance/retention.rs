//! Retention: by count and by age (commit time), a hard limit that
//! reports lag.

use super::*;

/// A stream from `after` (2) on a log whose events 3..=7 are gone is told
/// it missed 5, then gets event 8.
async fn lagged_then_8(log: &Arc<dyn EventLog>, after: u64) {
    let mut s = stream_from(log.clone(), Position::After(after));
    assert_eq!(
        next_delivery(&mut s).await,
        Delivery::Lagged {
            missed: 5,
            resume_from: 8
        }
    );
    assert_eq!(next_seq(&mut s).await, 8);
}

/// Options keeping the newest `n` events.
fn keep_newest(n: u64) -> LogOptions {
    LogOptions::retention(Retention {
        max_count: Some(n),
        max_age: None,
    })
}

/// Count retention keeps the newest events; a reader behind it is told
/// what it missed, and `Beginning` means the oldest event kept.
pub async fn retention_by_count<F, Fut>(make: F)
where
    F: Fn(LogOptions) -> Fut,
    Fut: Future<Output = Opened>,
{
    let log = fresh(&make, keep_newest(5)).await;
    append_n(&*log, 12).await;
    log.prune().await.unwrap();
    let b = log.bounds().await.unwrap();
    assert_eq!((b.first, b.last), (8, 12));
    let p = log.read(0, 100).await.unwrap();
    assert_eq!(p.events.first().map(|e| e.seq), Some(8));
    assert_eq!(p.events.len(), 5);

    lagged_then_8(&log, 2).await;
    let mut b = stream_from(log.clone(), Position::Beginning);
    assert_eq!(next_seq(&mut b).await, 8);
}

/// Count retention is exact inside a batch: of one batch of 12 with a
/// limit of 5, the last 5 stay readable and nothing older is ever read.
pub async fn retention_by_count_inside_a_batch<F, Fut>(make: F)
where
    F: Fn(LogOptions) -> Fut,
    Fut: Future<Output = Opened>,
{
    let log = fresh(&make, keep_newest(5)).await;
    let base = chrono::DateTime::from_timestamp(1_700_000_000, 0).expect("a valid time");
    let at = |i: u64| base + chrono::Duration::seconds(i as i64);
    let batch = (1..=12).map(|i| {
        let mut e = ev("conf.item", i);
        e.time = at(i);
        e
    });
    log.append(batch.collect(), None).await.unwrap();
    log.prune().await.unwrap();
    let b = log.bounds().await.unwrap();
    assert_eq!((b.first, b.last), (8, 12));
    assert_eq!(
        log.seq_before(base).await.unwrap(),
        7,
        "seq_before never points into the hidden part"
    );
    assert_eq!(log.seq_before(at(3)).await.unwrap(), 7);
    assert_eq!(log.seq_before(at(10)).await.unwrap(), 9);
    assert_eq!(
        log.read(u64::MAX, usize::MAX).await.unwrap().events.len(),
        0
    );
    assert_eq!(log.read(0, usize::MAX).await.unwrap().events.len(), 5);
    let seqs = |p: crate::log::Page| p.events.iter().map(|e| e.seq).collect::<Vec<_>>();
    assert_eq!(seqs(log.read(0, 100).await.unwrap()), [8, 9, 10, 11, 12]);
    assert_eq!(seqs(log.read(3, 2).await.unwrap()), [8, 9]);
    assert_eq!(seqs(log.read(9, 1).await.unwrap()), [10]);
    lagged_then_8(&log, 2).await;
    // One more single append moves the window by one, inside the batch.
    log.append(vec![ev("conf.item", 12)], None).await.unwrap();
    log.prune().await.unwrap();
    let b = log.bounds().await.unwrap();
    assert_eq!((b.first, b.last), (9, 13));
    assert_eq!(seqs(log.read(0, 100).await.unwrap()), [9, 10, 11, 12, 13]);
}

/// Retention is a hard limit: it does not wait for a consumer's cursor, and
/// the consumer resuming from it is told exactly what it missed.
pub async fn retention_ignores_cursors_but_reports_lag<F, Fut>(make: F)
where
    F: Fn(LogOptions) -> Fut,
    Fut: Future<Output = Opened>,
{
    let log = fresh(&make, keep_newest(3)).await;
    append_n(&*log, 2).await;
    log.commit_cursor("slow", 2).await.unwrap();
    append_n(&*log, 8).await;
    log.prune().await.unwrap();
    let from = log.cursor("slow").await.unwrap().unwrap();
    assert_eq!(from, 2, "the cursor itself survives pruning");
    lagged_then_8(&log, from).await;
}

/// Age retention drops events older than the limit; seqs are not reused.
pub async fn retention_by_age<F, Fut>(make: F)
where
    F: Fn(LogOptions) -> Fut,
    Fut: Future<Output = Opened>,
{
    let log = fresh(
        &make,
        LogOptions {
            retention: Retention {
                max_count: None,
                max_age: Some(Duration::from_millis(1500)),
            },
            ..LogOptions::default()
        },
    )
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
    F: Fn(LogOptions) -> Fut,
    Fut: Future<Output = Opened>,
{
    let log = fresh(
        &make,
        LogOptions {
            retention: Retention {
                max_count: None,
                max_age: Some(Duration::from_millis(1500)),
            },
            ..LogOptions::default()
        },
    )
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
