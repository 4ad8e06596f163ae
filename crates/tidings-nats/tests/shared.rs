//! Two `NatsLog`s on one stream, as two Tidings servers would be.

mod common;

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use futures_util::{FutureExt, StreamExt};
use serde_json::json;
use tidings_core::log::{follow, Delivery, Position};
use tidings_core::{EventLog, NewEvent};
use tidings_nats::{NatsLog, NatsOptions};

const TASKS: u64 = 4;
const PER_TASK: u64 = 60;

async fn append_from(log: Arc<NatsLog>, server: u64) -> Vec<u64> {
    let tasks: Vec<_> = (0..TASKS)
        .map(|t| {
            let log = log.clone();
            tokio::spawn(async move {
                let mut seqs = Vec::new();
                for i in 0..PER_TASK {
                    let ev = |k: u64| {
                        NewEvent::new(
                            "shared.item",
                            json!({"server": server, "task": t, "i": i, "k": k}),
                        )
                        .expect("valid name")
                    };
                    let batch = if i % 6 == 0 {
                        vec![ev(0), ev(1), ev(2)]
                    } else {
                        vec![ev(0)]
                    };
                    let c = log.append(batch, None).await.expect("append");
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
        all.extend(t.await.expect("task"));
    }
    all
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_servers_share_one_gap_free_order() {
    let Some(server) = common::nats_url() else {
        return;
    };
    let stream = common::unique_stream("shared");
    let a = Arc::new(
        NatsLog::open(&server, &stream, NatsOptions::default())
            .await
            .unwrap(),
    );
    let b = Arc::new(
        NatsLog::open(&server, &stream, NatsOptions::default())
            .await
            .unwrap(),
    );
    let (wa, wb) = (a.watch(), b.watch());

    // Followers on both, opened before the appends.
    let fa = follow(a.clone() as Arc<dyn EventLog>, Position::Beginning);
    let fb = follow(b.clone() as Arc<dyn EventLog>, Position::Beginning);

    let (sa, sb) = tokio::join!(append_from(a.clone(), 1), append_from(b.clone(), 2));
    let mut all: Vec<u64> = sa.into_iter().chain(sb).collect();
    all.sort_unstable();
    let n = all.len() as u64;
    // 2 servers x TASKS x (PER_TASK singles, a third of every 6 is a batch of 3).
    assert_eq!(n, 2 * TASKS * (PER_TASK + 2 * PER_TASK / 6));
    assert_eq!(all, (1..=n).collect::<Vec<_>>(), "every seq exactly once");

    // Both watches reach the same last seq.
    for mut w in [wa, wb] {
        tokio::time::timeout(Duration::from_secs(10), w.wait_for(|v| *v == n))
            .await
            .expect("watch reached the last seq")
            .expect("watch open");
    }

    // Both read the same order.
    let pa = a.read(0, 100_000).await.unwrap();
    let pb = b.read(0, 100_000).await.unwrap();
    assert_eq!(pa.last_seq, n);
    assert_eq!(pb.last_seq, n);
    let ids_a: Vec<_> = pa.events.iter().map(|e| (e.seq, e.id)).collect();
    let ids_b: Vec<_> = pb.events.iter().map(|e| (e.seq, e.id)).collect();
    assert_eq!(ids_a, ids_b, "both servers read the same order");
    assert_eq!(
        ids_a.iter().map(|x| x.0).collect::<Vec<_>>(),
        (1..=n).collect::<Vec<_>>()
    );
    assert_eq!(
        ids_a.iter().map(|x| x.1).collect::<HashSet<_>>().len() as u64,
        n
    );
    // Both servers' appends are in it.
    let servers: HashSet<_> = pa
        .events
        .iter()
        .map(|e| e.data["server"].as_u64())
        .collect();
    assert_eq!(servers.len(), 2);

    // Both followers deliver the same gap-free order.
    for mut f in [fa, fb] {
        let mut got = Vec::new();
        while (got.len() as u64) < n {
            let d = tokio::time::timeout(Duration::from_secs(10), f.next())
                .await
                .expect("follower delivered within 10 s")
                .expect("stream open")
                .expect("read ok");
            match d {
                Delivery::Event(e) => got.push((e.seq, e.id)),
                other => panic!("unexpected {other:?}"),
            }
        }
        assert_eq!(got, ids_a);
    }

    // An old position is read from the engine, not the cache.
    let small = NatsOptions {
        cache_events: 8,
        ..NatsOptions::default()
    };
    let c = NatsLog::open(&server, &stream, small).await.unwrap();
    let p = c.read(5, 20).await.unwrap();
    assert_eq!(
        p.events.iter().map(|e| (e.seq, e.id)).collect::<Vec<_>>(),
        ids_a[5..25].to_vec()
    );

    // Keys race between the servers: exactly one append wins.
    let (ka, kb) = tokio::join!(
        a.append(
            vec![NewEvent::new("k", json!(1)).unwrap().key("same")],
            None
        ),
        b.append(
            vec![NewEvent::new("k", json!(2)).unwrap().key("same")],
            None
        ),
    );
    let (ka, kb) = (ka.unwrap(), kb.unwrap());
    assert_eq!(ka[0].event.id, kb[0].event.id, "both see the same original");
    assert!(ka[0].duplicate != kb[0].duplicate, "exactly one is new");

    drop((a, b, c));
    common::delete_stream(&server, &stream).await;
}

/// Two servers defining one consumer at once agree on one spec (the first
/// definer's), both list it, and the definition survives reopening.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consumer_definitions_agree_across_servers() {
    let Some(server) = common::nats_url() else {
        return;
    };
    let stream = common::unique_stream("consumers");
    let outcome = std::panic::AssertUnwindSafe(async {
        let a = NatsLog::open(&server, &stream, NatsOptions::default())
            .await
            .expect("open a");
        let b = NatsLog::open(&server, &stream, NatsOptions::default())
            .await
            .expect("open b");
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
        let stored = a.define_consumer("c1", "ignored").await.expect("define");
        drop((a, b));
        let c = NatsLog::open(&server, &stream, NatsOptions::default())
            .await
            .expect("reopen");
        let list = c.consumers().await.expect("list");
        assert_eq!(list.len(), 9);
        assert_eq!(
            (list[0].name.as_str(), list[0].spec.as_str()),
            ("c1", stored.as_str())
        );
    })
    .catch_unwind()
    .await;
    common::delete_stream(&server, &stream).await;
    if let Err(panic) = outcome {
        std::panic::resume_unwind(panic);
    }
}
