//! Behaviour specific to the Redis backend, beyond the conformance suite:
//! opening from a store URL, refusing foreign keys and unreachable servers,
//! multi-step age retention (by commit time; by event time for entries
//! written without one) and `seq_before` over many entries, count
//! retention on append, duplicates answered after their original was
//! pruned, `destroy`, and refusing to reuse seqs after Redis lost writes.

mod common;

use std::time::Duration;
use tidings_core::log::LogFailure;

use chrono::Utc;
use serde_json::json;
use tidings_core::log::{AppendError, Retention};
use tidings_core::{EventLog, LogOptions, NewEvent};
use tidings_redis::{ConnectError, RedisLog, RedisOptions, StorageError};

fn ev(i: u64) -> NewEvent {
    NewEvent::new("beh.item", json!({ "i": i })).expect("name")
}

fn with_key(url: &str, key: &str) -> String {
    let sep = if url.contains('?') { '&' } else { '?' };
    format!("{url}{sep}key={key}")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_takes_the_key_from_the_url() {
    let Some(url) = common::redis_url() else {
        return;
    };
    let key = common::unique_key("url");
    let log = RedisLog::connect(&with_key(&url, &key), RedisOptions::default())
        .await
        .expect("connect");
    assert_eq!(log.keys().stream, key);
    log.append(vec![ev(0)], None).await.expect("append");
    let direct = common::open_log(&url, &key, RedisOptions::default()).await;
    assert_eq!(direct.bounds().await.expect("bounds").last, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn foreign_keys_and_dead_servers_are_refused() {
    let Some(url) = common::redis_url() else {
        return;
    };
    let key = common::unique_key("foreign");
    let client = redis::Client::open(url.as_str()).expect("client");
    let mut c = client
        .get_multiplexed_async_connection()
        .await
        .expect("connect");
    redis::cmd("SET")
        .arg(&key)
        .arg("not a stream")
        .arg("EX")
        .arg(60)
        .query_async::<()>(&mut c)
        .await
        .expect("set");
    match RedisLog::open(&url, &key, RedisOptions::default()).await {
        Err(ConnectError::BadKeys { .. }) => {}
        other => panic!("expected BadKeys, got {other:?}"),
    }
    redis::cmd("DEL")
        .arg(&key)
        .query_async::<()>(&mut c)
        .await
        .expect("del");
    // The consumer definitions must be a hash too.
    let consumers = format!("{key}:consumers");
    redis::cmd("SET")
        .arg(&consumers)
        .arg("not a hash")
        .arg("EX")
        .arg(60)
        .query_async::<()>(&mut c)
        .await
        .expect("set");
    match RedisLog::open(&url, &key, RedisOptions::default()).await {
        Err(ConnectError::BadKeys { reason, .. }) => assert!(reason.contains("consumers")),
        other => panic!("expected BadKeys, got {other:?}"),
    }
    redis::cmd("DEL")
        .arg(&consumers)
        .query_async::<()>(&mut c)
        .await
        .expect("del");

    // Nothing listens on this port (bound, then released).
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("ephemeral port")
        .port();
    let started = std::time::Instant::now();
    let r = RedisLog::open(
        &format!("redis://127.0.0.1:{port}"),
        "x",
        RedisOptions::default().timeout(Duration::from_secs(1)),
    )
    .await;
    assert!(matches!(r, Err(ConnectError::Unavailable(_))), "got {r:?}");
    assert!(started.elapsed() < Duration::from_secs(3));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn age_retention_and_seq_before_span_many_script_steps() {
    let Some(url) = common::redis_url() else {
        return;
    };
    let options = RedisOptions::default().log(
        LogOptions::retention(Retention {
            max_count: None,
            max_age: Some(Duration::from_secs(2)),
        })
        .with_prune_interval(None),
    );
    let log = common::fresh(&url, "age", options).await;
    // 15,000 events dated an hour ago (more than one 10,000-entry pruning
    // step and many 1,000-entry seq_before steps), then, once their commits
    // are older than max_age, 5 recent ones. seq_before goes by the events'
    // time; age retention by their commit time.
    // Whole milliseconds, so times compare exactly after the µs truncation.
    let old = Utc::now() - chrono::Duration::hours(1);
    let old = chrono::DateTime::from_timestamp_millis(old.timestamp_millis()).expect("time");
    for b in 0..15u64 {
        let batch = (0..1_000)
            .map(|i| {
                let mut e = ev(b * 1_000 + i);
                e.time = old + chrono::Duration::milliseconds((b * 1_000 + i) as i64);
                e
            })
            .collect();
        log.append(batch, None).await.expect("append old");
    }
    // Age retention needs the clock to move past max_age: nothing to wait on.
    tokio::time::sleep(Duration::from_millis(2200)).await;
    for i in 0..5 {
        log.append(vec![ev(i)], None).await.expect("append new");
    }
    let mid = old + chrono::Duration::milliseconds(12_345);
    assert_eq!(log.seq_before(mid).await.expect("seq_before"), 12_345);
    let recent = Utc::now() - chrono::Duration::minutes(30);
    assert_eq!(log.seq_before(recent).await.expect("seq_before"), 15_000);
    assert_eq!(
        log.seq_before(Utc::now() + chrono::Duration::hours(1))
            .await
            .expect("seq_before"),
        15_005,
        "nothing that late: the last seq"
    );

    assert_eq!(log.prune().await.expect("prune"), 15_000);
    let b = log.bounds().await.expect("bounds");
    assert_eq!((b.first, b.last), (15_001, 15_005));
    assert_eq!(log.prune().await.expect("prune again"), 0);
    let c = log.append(vec![ev(9)], None).await.expect("append");
    assert_eq!(c[0].event.seq, 15_006, "seqs are never reused");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn count_retention_applies_on_append_and_duplicates_outlive_it() {
    let Some(url) = common::redis_url() else {
        return;
    };
    let options = RedisOptions::default().log(
        LogOptions::retention(Retention {
            max_count: Some(3),
            max_age: None,
        })
        .with_prune_interval(None),
    );
    let log = common::fresh(&url, "count", options).await;
    let first = log
        .append(vec![ev(0).key("k-0")], None)
        .await
        .expect("append");
    for i in 1..10 {
        log.append(vec![ev(i)], None).await.expect("append");
    }
    // No prune call: the append script trimmed exactly.
    let b = log.bounds().await.expect("bounds");
    assert_eq!((b.first, b.last), (8, 10));
    // The original of k-0 is gone from the stream, but a duplicate still
    // gets it back (from the idempotency record).
    let again = log
        .append(vec![ev(99).key("k-0")], None)
        .await
        .expect("append dup");
    assert!(again[0].duplicate);
    assert_eq!(again[0].event, first[0].event);
    assert_eq!(log.bounds().await.expect("bounds").last, 10);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn destroy_removes_every_key() {
    let Some(url) = common::redis_url() else {
        return;
    };
    let key = common::unique_key("destroy");
    let log = RedisLog::open(&url, &key, RedisOptions::default())
        .await
        .expect("open");
    log.append(vec![ev(0).key("a"), ev(1).key("b")], None)
        .await
        .expect("append");
    log.commit_cursor("c", 1).await.expect("commit");
    log.define_consumer("c", "{}").await.expect("define");
    // stream, counter, cursors, consumers, two idempotency keys
    assert_eq!(log.destroy().await.expect("destroy"), 6);
    let client = redis::Client::open(url.as_str()).expect("client");
    let mut c = client
        .get_multiplexed_async_connection()
        .await
        .expect("connect");
    let left: Vec<String> = redis::cmd("KEYS")
        .arg(format!("{key}*"))
        .query_async(&mut c)
        .await
        .expect("keys");
    assert!(left.is_empty(), "left: {left:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn appends_are_refused_when_redis_lost_acknowledged_events() {
    let Some(url) = common::redis_url() else {
        return;
    };
    let key = common::unique_key("lost");
    let log = RedisLog::open(&url, &key, RedisOptions::default())
        .await
        .expect("open");
    log.append(vec![ev(0)], None).await.expect("append");
    log.append(vec![ev(1), ev(2)], None).await.expect("append");
    // What a Redis crash under `appendfsync everysec` can do: the last
    // acknowledged entry (the batch, seqs 2 and 3) and the counter go back.
    let client = redis::Client::open(url.as_str()).expect("client");
    let mut c = client
        .get_multiplexed_async_connection()
        .await
        .expect("connect");
    let deleted: u64 = redis::cmd("XDEL")
        .arg(&log.keys().stream)
        .arg("3-0")
        .query_async(&mut c)
        .await
        .expect("xdel");
    assert_eq!(deleted, 1, "the batch is one entry, id 3-0");
    redis::cmd("SET")
        .arg(&log.keys().counter)
        .arg(1)
        .query_async::<()>(&mut c)
        .await
        .expect("set counter");
    // Both append scripts check: the plain one (no key, no expectation)
    // and the full one.
    for (what, event) in [("plain", ev(3)), ("keyed", ev(4).key("k-lost"))] {
        let err = log
            .append(vec![event], None)
            .await
            .expect_err("seq 2 must not be handed out again");
        let AppendError::Failed(LogFailure::Storage(inner)) = &err else {
            panic!("{what}: expected Storage(LostWrites), got {err:?}");
        };
        match inner.downcast_ref::<StorageError>() {
            Some(StorageError::LostWrites {
                counter: 1,
                seen: 3,
            }) => {}
            other => {
                panic!("{what}: expected LostWrites {{ counter: 1, seen: 3 }}, got {other:?}")
            }
        }
        assert!(err.to_string().contains("appendfsync always"), "{err}");
    }
    // Nothing was written.
    let page = log.read(0, 10).await.expect("read");
    assert_eq!(page.last_seq, 1);
    assert_eq!(page.events.len(), 1);
    log.destroy().await.expect("destroy");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn entries_without_a_commit_time_are_aged_by_their_event_time() {
    let Some(url) = common::redis_url() else {
        return;
    };
    // Two entries as an older version wrote them (no `at` field): one
    // dated an hour ago, one dated now.
    let key = common::unique_key("legacy");
    let _cleanup = common::delete_on_drop(&url, &key);
    let layout = tidings_redis::KeyLayout::new(&key);
    {
        let client = redis::Client::open(url.as_str()).expect("client");
        let mut con = client.get_connection().expect("connection");
        let now = Utc::now().timestamp_micros();
        for (seq, time) in [(1, now - 3_600_000_000), (2, now)] {
            redis::cmd("XADD")
                .arg(&layout.stream)
                .arg(format!("{seq}-0"))
                .arg("id")
                .arg(uuid::Uuid::now_v7().hyphenated().to_string())
                .arg("name")
                .arg("beh.legacy")
                .arg("source")
                .arg("app")
                .arg("time")
                .arg(time)
                .arg("data")
                .arg("null")
                .query::<()>(&mut con)
                .expect("XADD");
        }
        redis::cmd("SET")
            .arg(&layout.counter)
            .arg(2)
            .query::<()>(&mut con)
            .expect("SET");
    }
    let options = RedisOptions::default().log(
        LogOptions::retention(Retention {
            max_count: None,
            max_age: Some(Duration::from_secs(60)),
        })
        .with_prune_interval(None),
    );
    let log = RedisLog::open(&url, &key, options).await.expect("open");
    let c = log.append(vec![ev(3)], None).await.expect("append");
    assert_eq!(c[0].event.seq, 3);
    assert_eq!(log.prune().await.expect("prune"), 1, "the hour-old entry");
    let b = log.bounds().await.expect("bounds");
    assert_eq!((b.first, b.last), (2, 3));
    let page = log.read(0, 10).await.expect("read");
    assert_eq!(
        page.events
            .iter()
            .map(|e| (e.seq, e.name.as_str()))
            .collect::<Vec<_>>(),
        vec![(2, "beh.legacy"), (3, "beh.item")]
    );
}
