//! What a backend promises beyond one handle and one call: reopening
//! its storage, several instances on one store, `close`, and refusing
//! options that make no sense.

use super::*;
use crate::log::LogFailure;

/// What a durable log promises across a close and reopen: every event with
/// its seq and id, the last seq, durable cursors, idempotency keys within
/// their window, and the next append continuing at `last + 1` (no seq
/// reused). `open` must open the same, initially empty, storage on every
/// call; the check closes each log (and drops it) before opening the next,
/// so what `close` flushes is what the next open finds.
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
    log.close().await.expect("close before reopening");
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

/// Two handles opened on one shared store (two servers on one stream)
/// append concurrently and both see one dense order: by reads, by `stream_from`
/// and by `watch`. Stores that are not shared ([`EventLog::shared`] is
/// false: one process appends) pass without running.
pub async fn instances_share_one_order<F, Fut>(open: F)
where
    F: Fn() -> Fut,
    Fut: Future<Output = Arc<dyn EventLog>>,
{
    let a = open().await;
    if !a.shared() {
        return;
    }
    let b = open().await;
    const EACH: u64 = 40;
    let mut streams = [
        stream_from(a.clone(), Position::Beginning),
        stream_from(b.clone(), Position::Beginning),
    ];
    // Each instance: EACH appends, every fifth a batch of three.
    let appends = [a.clone(), b.clone()].map(|log| {
        tokio::spawn(async move {
            for i in 0..EACH {
                let batch: Vec<_> = (0..if i % 5 == 4 { 3 } else { 1 })
                    .map(|j| ev("shared.item", i * 10 + j))
                    .collect();
                let n = batch.len() as u64;
                let c = log
                    .append(batch, None)
                    .await
                    .expect("append on one instance");
                let seqs: Vec<u64> = c.iter().map(|c| c.event.seq).collect();
                let first = seqs[0];
                assert_eq!(
                    seqs,
                    (first..first + n).collect::<Vec<_>>(),
                    "a batch stays consecutive"
                );
            }
        })
    });
    for task in appends {
        task.await.expect("appender");
    }
    let total = 2 * (EACH + 2 * (EACH / 5));
    let pa = a.read(0, 1000).await.expect("read on a");
    let pb = b.read(0, 1000).await.expect("read on b");
    let order = |p: &Page| p.events.iter().map(|e| (e.seq, e.id)).collect::<Vec<_>>();
    assert_eq!(
        pa.events.iter().map(|e| e.seq).collect::<Vec<_>>(),
        (1..=total).collect::<Vec<_>>(),
        "dense seqs over both instances' appends"
    );
    assert_eq!(order(&pa), order(&pb), "both instances read one order");
    for s in &mut streams {
        let mut seen = Vec::new();
        while seen.len() < total as usize {
            match next_delivery(s).await {
                Delivery::Event(e) => seen.push((e.seq, e.id)),
                other => panic!("no lag expected, got {other:?}"),
            }
        }
        assert_eq!(seen, order(&pa), "a follower sees the same order");
    }
    for log in [&a, &b] {
        let mut w = log.watch();
        tokio::time::timeout(Duration::from_secs(10), w.wait_for(|last| *last >= total))
            .await
            .expect("watch reaches the last seq of both instances")
            .expect("watch kept");
    }
}

/// After `close`, every call on the log fails with `Closed` and appends
/// nothing; closing again is fine.
pub async fn closed_log_refuses_everything<F, Fut>(make: F)
where
    F: Fn(LogOptions) -> Fut,
    Fut: Future<Output = Opened>,
{
    let log = fresh(&make, LogOptions::default()).await;
    append_n(&*log, 2).await;
    log.commit_cursor("before-close", 1)
        .await
        .expect("commit before close");
    log.close().await.expect("close");
    assert!(matches!(
        log.append(vec![ev("closed.item", 0)], None).await,
        Err(AppendError::Failed(LogFailure::Closed))
    ));
    assert!(matches!(
        log.append_one(ev("closed.item", 1), None).await,
        Err(AppendError::Failed(LogFailure::Closed))
    ));
    assert!(matches!(
        log.read(0, 10).await,
        Err(ReadError::Failed(LogFailure::Closed))
    ));
    assert!(matches!(
        log.bounds().await,
        Err(ReadError::Failed(LogFailure::Closed))
    ));
    assert!(matches!(
        log.cursor("before-close").await,
        Err(CursorError::Failed(LogFailure::Closed))
    ));
    assert!(matches!(
        log.commit_cursor("before-close", 2).await,
        Err(CursorError::Failed(LogFailure::Closed))
    ));
    assert!(matches!(
        log.consumers().await,
        Err(CursorError::Failed(LogFailure::Closed))
    ));
    assert!(matches!(
        log.prune().await,
        Err(PruneError::Failed(LogFailure::Closed))
    ));
    assert!(matches!(
        log.read_within(0, 10, 1 << 20).await,
        Err(ReadError::Failed(LogFailure::Closed))
    ));
    assert!(matches!(
        log.seq_before(chrono::Utc::now()).await,
        Err(ReadError::Failed(LogFailure::Closed))
    ));
    assert!(matches!(
        log.define_consumer("after-close", r#"{"patterns":[">"]}"#)
            .await,
        Err(CursorError::Failed(LogFailure::Closed))
    ));
    assert!(matches!(
        log.delete_consumer("before-close").await,
        Err(CursorError::Failed(LogFailure::Closed))
    ));
    log.close().await.expect("closing twice is fine");
}

/// Every zero in [`LogOptions`] is refused by the backend's open, with a
/// message naming the option (one meaning of zero: never "unlimited").
pub async fn zero_options_are_refused<F, Fut>(make: F)
where
    F: Fn(LogOptions) -> Fut,
    Fut: Future<Output = Opened>,
{
    let zero = |f: fn(&mut LogOptions)| {
        let mut o = LogOptions::default();
        f(&mut o);
        o
    };
    for (options, named) in [
        (zero(|o| o.retention.max_count = Some(0)), "max_count"),
        (
            zero(|o| o.retention.max_age = Some(Duration::ZERO)),
            "max_age",
        ),
        (
            zero(|o| o.idempotency_window = Duration::ZERO),
            "idempotency_window",
        ),
        (
            zero(|o| o.prune_interval = Some(Duration::ZERO)),
            "prune_interval",
        ),
    ] {
        match make(options).await {
            Ok(_) => panic!("{named} = 0 was accepted"),
            Err(e) => assert!(e.contains(named), "the refusal names {named}: {e}"),
        }
    }
}

/// Two handles on one shared store agree on idempotency keys (a key
/// appended through one is a duplicate through the other; racing appends of
/// one key make one event), on expectations (racing appends at one expected
/// seq: exactly one wins) and on consumer definitions (racing definers get
/// the first one). Stores that are not shared pass without running.
pub async fn instances_share_keys_expectations_and_consumers<F, Fut>(open: F)
where
    F: Fn() -> Fut,
    Fut: Future<Output = Arc<dyn EventLog>>,
{
    let a = open().await;
    if !a.shared() {
        return;
    }
    let b = open().await;
    let first = a
        .append(vec![ev("shared.key", 0).key("order-9")], None)
        .await
        .expect("append");
    let again = b
        .append(
            vec![ev("shared.key", 1).key("order-9"), ev("shared.key", 2)],
            None,
        )
        .await
        .expect("append");
    assert!(again[0].duplicate, "a key appended through a is known to b");
    assert_eq!(again[0].event, first[0].event, "the original envelope");
    assert_eq!((again[1].event.seq, again[1].duplicate), (2, false));

    let (ra, rb) = tokio::join!(
        a.append(vec![ev("shared.expect", 0)], Some(2)),
        b.append(vec![ev("shared.expect", 1)], Some(2))
    );
    assert_eq!(
        [&ra, &rb].iter().filter(|r| r.is_ok()).count(),
        1,
        "exactly one of {ra:?} / {rb:?} wins"
    );
    let loser = if ra.is_err() { ra } else { rb };
    assert!(matches!(
        loser,
        Err(AppendError::Conflict {
            expected: 2,
            actual: 3
        })
    ));

    let tasks: Vec<_> = (0..8u64)
        .map(|i| {
            let log = if i % 2 == 0 { a.clone() } else { b.clone() };
            tokio::spawn(async move {
                log.append(vec![ev("shared.once", i).key("once")], None)
                    .await
                    .expect("append")
            })
        })
        .collect();
    let mut originals = HashSet::new();
    let mut new = 0;
    for t in tasks {
        let c = t.await.expect("task");
        originals.insert((c[0].event.seq, c[0].event.id));
        new += usize::from(!c[0].duplicate);
    }
    assert_eq!(new, 1, "exactly one append of the key was new");
    assert_eq!(originals.len(), 1, "all saw the same original");
    assert_eq!(a.bounds().await.expect("bounds").last, 4);

    for round in 0..5 {
        let name = format!("c{round}");
        let (da, db) = tokio::join!(
            a.define_consumer(&name, "from-a"),
            b.define_consumer(&name, "from-b")
        );
        assert_eq!(
            da.expect("define on a"),
            db.expect("define on b"),
            "both instances agree on {name}"
        );
    }
    assert_eq!(b.consumers().await.expect("list").len(), 5);
    assert!(a.delete_consumer("c0").await.expect("delete"));
    assert!(!b.delete_consumer("c0").await.expect("delete again"));
}
