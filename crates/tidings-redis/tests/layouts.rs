//! Reads against a model, over random stream layouts: single entries an
//! earlier version wrote (with and without `at`), then group entries of
//! random sizes (some spanning several entries), with and without count
//! retention. Every `read`, `bounds` and `seq_before` must answer what a
//! dense log of the same events, keeping the newest `max_count`, answers.

mod common;

use chrono::{DateTime, Duration, Utc};
use proptest::prelude::*;
use serde_json::json;
use tidings_core::log::Retention;
use tidings_core::{EventLog, LogOptions, NewEvent};
use tidings_redis::{KeyLayout, RedisOptions};

/// Event `seq`'s time: one second per seq from a fixed base.
fn at(seq: u64) -> DateTime<Utc> {
    DateTime::from_timestamp(1_700_000_000, 0).expect("a valid time")
        + Duration::seconds(seq as i64)
}

fn event(seq: u64) -> NewEvent {
    let mut e = NewEvent::new("lay.item", json!({ "i": seq })).expect("name");
    e.time = at(seq);
    e
}

/// Writes `n` single entries (seqs 1..=n) as the layout before group
/// entries did, every other one with a commit time, and sets the counter.
fn write_single_entries(url: &str, layout: &KeyLayout, n: u64) {
    let client = redis::Client::open(url).expect("client");
    let mut con = client.get_connection().expect("connection");
    for seq in 1..=n {
        let mut cmd = redis::cmd("XADD");
        cmd.arg(&layout.stream).arg(format!("{seq}-0"));
        if seq % 2 == 0 {
            cmd.arg("at").arg(Utc::now().timestamp_micros());
        }
        cmd.arg("id")
            .arg(uuid::Uuid::now_v7().hyphenated().to_string())
            .arg("name")
            .arg("lay.item")
            .arg("source")
            .arg("app")
            .arg("time")
            .arg(at(seq).timestamp_micros())
            .arg("data")
            .arg(json!({ "i": seq }).to_string());
        cmd.query::<()>(&mut con).expect("XADD");
    }
    if n > 0 {
        redis::cmd("SET")
            .arg(&layout.counter)
            .arg(n)
            .query::<()>(&mut con)
            .expect("SET");
    }
}

async fn check(
    url: &str,
    singles: u64,
    batches: Vec<u64>,
    max_count: Option<u64>,
    afters: Vec<u64>,
) {
    let key = common::unique_key("layout");
    let _cleanup = common::delete_on_drop(url, &key);
    write_single_entries(url, &KeyLayout::new(&key), singles);
    let options = RedisOptions::default().log(
        LogOptions::retention(Retention {
            max_count,
            max_age: None,
        })
        .with_prune_interval(None),
    );
    let log = common::open_log(url, &key, options).await;
    let mut last = singles;
    for size in batches {
        let c = log
            .append((last + 1..=last + size).map(event).collect(), None)
            .await
            .expect("append");
        last = c.last().expect("committed").event.seq;
    }
    log.prune().await.expect("prune");
    let first = max_count.map_or(1, |m| last.saturating_sub(m) + 1).max(1);

    let b = log.bounds().await.expect("bounds");
    assert_eq!((b.first, b.last), (first, last), "bounds");
    let mut afters = afters;
    afters.extend([
        0,
        first.saturating_sub(1),
        first,
        last.saturating_sub(1),
        last,
        last + 1,
    ]);
    for after in afters {
        for limit in [1usize, 2, 7, 128, 129, 300, usize::MAX] {
            let page = log.read(after, limit).await.expect("read");
            let from = (after + 1).max(first);
            // A read behind the first kept event starts at it.
            let to = last.min(from.saturating_add(limit as u64 - 1));
            let want: Vec<u64> = (from..=to).collect();
            let got: Vec<u64> = page.events.iter().map(|e| e.seq).collect();
            assert_eq!(got, want, "read({after}, {limit}) of {first}..={last}");
            for e in &page.events {
                assert_eq!(e.data["i"], json!(e.seq));
                assert_eq!(e.time, at(e.seq));
            }
            assert_eq!(page.last_seq, last);
        }
    }
    for k in [0, 1, first, first + 1, (first + last) / 2, last, last + 1] {
        let want = if k.max(first) <= last {
            k.max(first) - 1
        } else {
            last
        };
        assert_eq!(
            log.seq_before(at(k)).await.expect("seq_before"),
            want,
            "seq_before(at({k}))"
        );
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 32, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn reads_match_a_dense_model(
        singles in 0u64..4,
        batches in proptest::collection::vec(1u64..300, 1..6),
        max_count in proptest::option::of(1u64..400),
        afters in proptest::collection::vec(0u64..1_300, 0..12),
    ) {
        let Some(url) = common::redis_url() else {
            return Ok(());
        };
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("runtime");
        rt.block_on(check(&url, singles, batches, max_count, afters));
    }
}
