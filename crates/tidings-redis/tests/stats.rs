//! `RedisLog::stats`: each counter moves with what it counts.

mod common;

use serde_json::json;
use tidings_core::conformance::write_stats_count_each_outcome;
use tidings_core::{EventLog, NewEvent};
use tidings_redis::{RedisLog, RedisOptions};

fn event() -> NewEvent {
    NewEvent::new("stats.item", json!(1)).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn appends_duplicates_conflicts_plain_groups_and_lost_writes_are_counted() {
    let Some(url) = common::redis_url() else {
        return;
    };
    let key = common::unique_key("stats");
    let log = RedisLog::open(&url, &key, RedisOptions::default())
        .await
        .expect("open");
    // Of its four groups, the first is plain (the smaller script).
    write_stats_count_each_outcome(&log, || log.stats().appends).await;
    let s = log.stats();
    assert_eq!((s.plain_groups, s.lost_writes), (1, 0));

    // The keys vanish (as when Redis restarts without persistence): the
    // next append finds the counter below what this instance saw committed
    // and is refused, counted as lost writes and as a failed append.
    log.destroy().await.expect("destroy");
    assert!(log.append(vec![event()], None).await.is_err());
    let s = log.stats();
    assert_eq!((s.lost_writes, s.appends.failed_appends), (1, 1), "{s:?}");
    assert_eq!(s.plain_groups, 1, "a refused group is not counted as plain");
    common::delete_keys(&url, &key);
}
