//! Appends: dense seqs, atomic batches, refusals, idempotency, reads.

use super::*;

/// Appends get dense seqs from 1; batches get consecutive seqs in input
/// order; reads return what was written.
pub async fn dense_seqs_and_roundtrip<F, Fut>(make: F)
where
    F: Fn(LogOptions) -> Fut,
    Fut: Future<Output = Opened>,
{
    let log = fresh(&make, LogOptions::default()).await;
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
    F: Fn(LogOptions) -> Fut,
    Fut: Future<Output = Opened>,
{
    let log = fresh(&make, LogOptions::default()).await;
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
    F: Fn(LogOptions) -> Fut,
    Fut: Future<Output = Opened>,
{
    let log = fresh(&make, LogOptions::default()).await;
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

/// Reads of any `after` and `limit` return the dense run of seqs that
/// follows, wherever it starts and ends inside batches (some backends keep
/// a batch as one unit: their reads must cut it exactly).
pub async fn reads_inside_batches<F, Fut>(make: F)
where
    F: Fn(LogOptions) -> Fut,
    Fut: Future<Output = Opened>,
{
    let log = fresh(&make, LogOptions::default()).await;
    let mut last = 0;
    for size in [1u64, 5, 300, 2, 1, 40] {
        let batch = (0..size).map(|i| ev("conf.batch", last + i + 1)).collect();
        let c = log.append(batch, None).await.unwrap();
        last = c.last().expect("a batch commits").event.seq;
    }
    assert_eq!(last, 349);
    for (after, limit) in [
        (0, 1),
        (0, 3),
        (1, 5),
        (2, 4),
        (3, 300),
        (5, 1),
        (6, 299),
        (6, 300),
        (100, 7),
        (305, 50),
        (308, 100),
        (348, 5),
        (0, 1_000),
    ] {
        let p = log.read(after, limit).await.unwrap();
        let want: Vec<u64> = (after + 1..=(after + limit as u64).min(last)).collect();
        let got: Vec<u64> = p.events.iter().map(|e| e.seq).collect();
        assert_eq!(got, want, "read({after}, {limit})");
        for e in &p.events {
            assert_eq!(
                e.data["i"],
                serde_json::json!(e.seq),
                "event {} roundtrips",
                e.seq
            );
        }
        assert_eq!(p.last_seq, last);
    }
}

/// `seq_before(t)` is the seq just before the first event dated at or
/// after `t`, found inside batches too; 0 before every event, the last seq
/// after them all.
pub async fn seq_before_finds_times<F, Fut>(make: F)
where
    F: Fn(LogOptions) -> Fut,
    Fut: Future<Output = Opened>,
{
    let log = fresh(&make, LogOptions::default()).await;
    let base = chrono::DateTime::from_timestamp(1_700_000_000, 0).expect("a valid time");
    let at = |seq: u64| base + chrono::Duration::seconds(seq as i64);
    let dated = |seq: u64| {
        let mut e = ev("conf.dated", seq);
        e.time = at(seq);
        e
    };
    log.append(vec![dated(1)], None).await.unwrap();
    log.append((2..=20).map(dated).collect(), None)
        .await
        .unwrap();
    log.append(vec![dated(21)], None).await.unwrap();
    assert_eq!(log.seq_before(base).await.unwrap(), 0);
    assert_eq!(log.seq_before(at(1)).await.unwrap(), 0);
    assert_eq!(log.seq_before(at(2)).await.unwrap(), 1);
    assert_eq!(log.seq_before(at(11)).await.unwrap(), 10);
    assert_eq!(
        log.seq_before(at(11) - chrono::Duration::milliseconds(500))
            .await
            .unwrap(),
        10
    );
    assert_eq!(log.seq_before(at(20)).await.unwrap(), 19);
    assert_eq!(log.seq_before(at(21)).await.unwrap(), 20);
    assert_eq!(log.seq_before(at(22)).await.unwrap(), 21);
}

/// An empty batch and an expected-seq mismatch are refused and append
/// nothing; a matching expectation appends.
pub async fn refusals_append_nothing<F, Fut>(make: F)
where
    F: Fn(LogOptions) -> Fut,
    Fut: Future<Output = Opened>,
{
    let log = fresh(&make, LogOptions::default()).await;
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
    F: Fn(LogOptions) -> Fut,
    Fut: Future<Output = Opened>,
{
    let log = fresh(&make, LogOptions::default()).await;
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
    F: Fn(LogOptions) -> Fut,
    Fut: Future<Output = Opened>,
{
    let log = fresh(
        &make,
        LogOptions {
            idempotency_window: Duration::from_millis(1000),
            ..LogOptions::default()
        },
    )
    .await;
    log.append(vec![ev("k", 1).key("w")], None).await.unwrap();
    tokio::time::sleep(Duration::from_millis(2100)).await;
    let c = log.append(vec![ev("k", 2).key("w")], None).await.unwrap();
    assert!(!c[0].duplicate, "the key should have expired");
    assert_eq!(c[0].event.seq, 2);
}

/// Many concurrent appenders: every seq from 1 to N exactly once, every
/// event present once.
pub async fn concurrent_appends_are_dense<F, Fut>(make: F)
where
    F: Fn(LogOptions) -> Fut,
    Fut: Future<Output = Opened>,
{
    let log = fresh(&make, LogOptions::default()).await;
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

/// Concurrent appends that a backend may commit together (group commit)
/// still behave as separate calls: of many appends of one idempotency key
/// exactly one is fresh and every other gets that same original; of many
/// appends expecting the same last seq exactly one commits and every other
/// is refused as a conflict and takes no seq; a refused batch does not
/// stop the fresh events beside it.
pub async fn concurrent_keys_and_expectations<F, Fut>(make: F)
where
    F: Fn(LogOptions) -> Fut,
    Fut: Future<Output = Opened>,
{
    let log = fresh(&make, LogOptions::default()).await;
    const N: u64 = 16;
    // Each round first queues FILL appends that keep a group-committing
    // writer busy, so the contending appends arrive together.
    const FILL: u64 = 8;
    let spawn_fill = |key: Option<&'static str>| {
        (0..FILL)
            .map(|i| {
                let log = log.clone();
                tokio::spawn(async move {
                    let e = ev("g.fill", i);
                    let e = match key {
                        Some(k) => e.key(k),
                        None => e,
                    };
                    log.append(vec![e], None).await.unwrap()
                })
            })
            .collect::<Vec<_>>()
    };
    let fill = spawn_fill(None);
    let keyed: Vec<_> = (0..N)
        .map(|i| {
            let log = log.clone();
            tokio::spawn(async move {
                let batch = vec![ev("g.free", i), ev("g.keyed", i).key("shared")];
                log.append(batch, None).await.unwrap()
            })
        })
        .collect();
    for t in fill {
        t.await.unwrap();
    }
    let mut fresh_keyed = Vec::new();
    let mut all_keyed = HashSet::new();
    for t in keyed {
        let c = t.await.unwrap();
        assert_eq!(c.len(), 2);
        assert!(!c[0].duplicate, "an unkeyed event beside a repeat is fresh");
        if !c[1].duplicate {
            fresh_keyed.push(c[1].event.seq);
        }
        all_keyed.insert((c[1].event.seq, c[1].event.id));
    }
    assert_eq!(
        fresh_keyed.len(),
        1,
        "exactly one append of the key is fresh"
    );
    assert_eq!(all_keyed.len(), 1, "every repeat gets the one original");
    let last = log.bounds().await.unwrap().last;
    assert_eq!(
        last,
        FILL + N + 1,
        "the fillers, N unkeyed events and one keyed"
    );

    // Repeats of the key take no seq, so these fillers leave `last` as is.
    let fill = spawn_fill(Some("shared"));
    let expecting: Vec<_> = (0..N)
        .map(|i| {
            let log = log.clone();
            tokio::spawn(async move {
                let batch = vec![ev("g.exp", i), ev("g.exp", i)];
                log.append(batch, Some(last)).await
            })
        })
        .collect();
    for t in fill {
        assert!(t.await.unwrap()[0].duplicate);
    }
    let mut won = 0;
    for t in expecting {
        match t.await.unwrap() {
            Ok(c) => {
                won += 1;
                let s: Vec<u64> = c.iter().map(|c| c.event.seq).collect();
                assert_eq!(s, vec![last + 1, last + 2]);
            }
            Err(AppendError::Conflict { expected, actual }) => {
                assert_eq!(expected, last);
                assert_eq!(actual, last + 2, "refused against the winner's tail");
            }
            Err(e) => panic!("expected a commit or a conflict, got {e:?}"),
        }
    }
    assert_eq!(won, 1, "exactly one append expecting {last} commits");
    let p = log.read(0, 1_000).await.unwrap();
    let seqs: Vec<u64> = p.events.iter().map(|e| e.seq).collect();
    assert_eq!(
        seqs,
        (1..=last + 2).collect::<Vec<_>>(),
        "dense, nothing else"
    );
}
