//! Two `RedisLog` instances on one key, as two Tidings servers would have:
//! concurrent appends from both give one gap-free order that both see, by
//! reads, by `follow` and by `watch`; idempotency keys, expectations and
//! consumer definitions hold across instances.

mod common;

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use serde_json::json;
use tidings_core::log::AppendError;
use tidings_core::{follow, Delivery, EventLog, NewEvent, Position};
use tidings_redis::{RedisLog, RedisOptions};
use uuid::Uuid;

fn ev(server: u64, task: u64, i: u64) -> NewEvent {
    NewEvent::new(
        "shared.item",
        json!({"server": server, "task": task, "i": i}),
    )
    .expect("name")
}

/// Collects `n` events from a stream, asserting there is no `Lagged`.
async fn collect(log: Arc<dyn EventLog>, n: usize) -> Vec<(u64, Uuid)> {
    let mut s = follow(log, Position::Beginning);
    let mut out = Vec::with_capacity(n);
    while out.len() < n {
        let d = tokio::time::timeout(Duration::from_secs(20), s.next())
            .await
            .expect("the follower stalled")
            .expect("the stream ended")
            .expect("read failed");
        match d {
            Delivery::Event(e) => out.push((e.seq, e.id)),
            other => panic!("unexpected {other:?}"),
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_instances_share_one_gap_free_order() {
    let Some(url) = common::redis_url() else {
        return;
    };
    let key = common::unique_key("shared");
    // `a` owns the keys' cleanup; `b` is a plain second instance.
    let a = Arc::new(common::open_log(&url, &key, RedisOptions::default()).await);
    let b = Arc::new(
        RedisLog::open(&url, &key, RedisOptions::default())
            .await
            .expect("open b"),
    );
    let logs: [Arc<dyn EventLog>; 2] = [a.clone(), b.clone()];

    const TASKS: u64 = 4;
    const ROUNDS: u64 = 30;
    // Per task: every 5th round a batch of 3, otherwise one event.
    let per_task = (ROUNDS / 5) * 3 + (ROUNDS - ROUNDS / 5);
    let total = (2 * TASKS * per_task) as usize;

    // Followers on both instances, started before any append.
    let follow_a = tokio::spawn(collect(logs[0].clone(), total));
    let follow_b = tokio::spawn(collect(logs[1].clone(), total));

    let mut writers = Vec::new();
    for (server, log) in logs.iter().enumerate() {
        for task in 0..TASKS {
            let log = log.clone();
            writers.push(tokio::spawn(async move {
                let mut mine = Vec::new();
                for i in 0..ROUNDS {
                    let batch = if i % 5 == 0 {
                        (0..3).map(|_| ev(server as u64, task, i)).collect()
                    } else {
                        vec![ev(server as u64, task, i)]
                    };
                    let c = log.append(batch, None).await.expect("append");
                    let seqs: Vec<u64> = c.iter().map(|c| c.event.seq).collect();
                    assert!(
                        seqs.windows(2).all(|w| w[1] == w[0] + 1),
                        "a batch gets consecutive seqs: {seqs:?}"
                    );
                    mine.extend(c.iter().map(|c| (c.event.seq, c.event.id)));
                }
                mine
            }));
        }
    }
    let mut acked = Vec::new();
    for w in writers {
        acked.extend(w.await.expect("writer"));
    }
    acked.sort_unstable();
    let seqs: Vec<u64> = acked.iter().map(|(s, _)| *s).collect();
    assert_eq!(
        seqs,
        (1..=total as u64).collect::<Vec<_>>(),
        "every seq exactly once"
    );

    // Reads from both instances: the same order, and it is the acked one.
    let pa = a.read(0, 10_000).await.expect("read a");
    let pb = b.read(0, 10_000).await.expect("read b");
    assert_eq!(pa.last_seq, total as u64);
    assert_eq!(pb.last_seq, total as u64);
    let ra: Vec<(u64, Uuid)> = pa.events.iter().map(|e| (e.seq, e.id)).collect();
    let rb: Vec<(u64, Uuid)> = pb.events.iter().map(|e| (e.seq, e.id)).collect();
    assert_eq!(ra, acked, "a reads what was acknowledged, in seq order");
    assert_eq!(rb, acked, "b reads the same");
    assert_eq!(pa.events, pb.events, "the same envelopes");

    // Follow on both instances delivered the same order.
    let fa = follow_a.await.expect("follower a");
    let fb = follow_b.await.expect("follower b");
    assert_eq!(fa, acked);
    assert_eq!(fb, acked);

    // Both watches reach the last seq.
    for log in &logs {
        let mut rx = log.watch();
        tokio::time::timeout(Duration::from_secs(10), rx.wait_for(|v| *v == total as u64))
            .await
            .expect("watch reached the last seq")
            .expect("watch open");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_sees_appends_of_the_other_instance() {
    let Some(url) = common::redis_url() else {
        return;
    };
    let key = common::unique_key("watch");
    let a = common::open_log(&url, &key, RedisOptions::default()).await;
    let b = RedisLog::open(&url, &key, RedisOptions::default())
        .await
        .expect("open b");
    let mut rx = b.watch();
    assert_eq!(*rx.borrow(), 0);
    for i in 0..5 {
        a.append(vec![ev(0, 0, i)], None).await.expect("append");
    }
    // `b` never appended nor read: only its XREAD follower can tell it.
    tokio::time::timeout(Duration::from_secs(10), rx.wait_for(|v| *v == 5))
        .await
        .expect("b's watch follows a's appends")
        .expect("watch open");
    // A third instance opened later starts at the current last seq.
    let c = RedisLog::open(&url, &key, RedisOptions::default())
        .await
        .expect("open c");
    assert_eq!(c.last_seq(), 5);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idempotency_and_expectations_hold_across_instances() {
    let Some(url) = common::redis_url() else {
        return;
    };
    let key = common::unique_key("idem");
    let a = common::open_log(&url, &key, RedisOptions::default()).await;
    let b = RedisLog::open(&url, &key, RedisOptions::default())
        .await
        .expect("open b");

    let first = a
        .append(vec![ev(0, 0, 0).key("order-9")], None)
        .await
        .expect("append");
    let again = b
        .append(vec![ev(1, 0, 0).key("order-9"), ev(1, 0, 1)], None)
        .await
        .expect("append");
    assert!(again[0].duplicate);
    assert_eq!(again[0].event, first[0].event, "the original envelope");
    assert_eq!(again[1].event.seq, 2);
    assert!(!again[1].duplicate);

    // Both race to append at expected 2: exactly one wins.
    let (ra, rb) = tokio::join!(
        a.append(vec![ev(0, 1, 0)], Some(2)),
        b.append(vec![ev(1, 1, 0)], Some(2))
    );
    let wins = [&ra, &rb].iter().filter(|r| r.is_ok()).count();
    assert_eq!(wins, 1, "one of {ra:?} / {rb:?} wins");
    let loser = if ra.is_err() { ra } else { rb };
    assert!(matches!(
        loser,
        Err(AppendError::Conflict {
            expected: 2,
            actual: 3
        })
    ));

    // Concurrent appends of the same key from both: one event only.
    let tasks: Vec<_> = (0..8)
        .map(|i| {
            let log: Arc<dyn EventLog> = if i % 2 == 0 {
                Arc::new(a.log.clone())
            } else {
                Arc::new(b.clone())
            };
            tokio::spawn(async move {
                log.append(vec![ev(i % 2, i, 0).key("once")], None)
                    .await
                    .expect("append")
            })
        })
        .collect();
    let mut originals = HashSet::new();
    let mut fresh = 0;
    for t in tasks {
        let c = t.await.expect("task");
        originals.insert((c[0].event.seq, c[0].event.id));
        if !c[0].duplicate {
            fresh += 1;
        }
    }
    assert_eq!(fresh, 1, "exactly one append of the key was fresh");
    assert_eq!(originals.len(), 1, "all saw the same original");
    assert_eq!(a.bounds().await.expect("bounds").last, 4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consumer_definitions_agree_across_instances() {
    let Some(url) = common::redis_url() else {
        return;
    };
    let key = common::unique_key("consumers");
    let a = common::open_log(&url, &key, RedisOptions::default()).await;
    let b = RedisLog::open(&url, &key, RedisOptions::default())
        .await
        .expect("open b");

    // Both define one name at once: both get the same, first, spec.
    for round in 0..10 {
        let name = format!("c{round}");
        let (ra, rb) = tokio::join!(
            a.define_consumer(&name, "from-a"),
            b.define_consumer(&name, "from-b")
        );
        let (ra, rb) = (ra.expect("define a"), rb.expect("define b"));
        assert_eq!(ra, rb, "both servers agree on {name}");
    }
    assert_eq!(b.consumers().await.expect("list").len(), 10);
    assert!(a.delete_consumer("c0").await.expect("delete"));
    assert!(!b.delete_consumer("c0").await.expect("delete again"));
    drop(b);

    // A definition survives reopening the log.
    let stored = a.define_consumer("c1", "ignored").await.expect("define");
    let c = RedisLog::open(&url, &key, RedisOptions::default())
        .await
        .expect("reopen");
    let list = c.consumers().await.expect("list");
    assert_eq!(list.len(), 9);
    assert_eq!(
        (list[0].name.as_str(), list[0].spec.as_str()),
        ("c1", stored.as_str())
    );
}
