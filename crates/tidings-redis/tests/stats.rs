//! `RedisLog::stats`: each counter moves with what it counts.

mod common;

use serde_json::json;
use tidings_core::log::WriteStats;
use tidings_core::{AppendError, EventLog, NewEvent};
use tidings_redis::{RedisLog, RedisOptions, RedisStats};

fn event(key: Option<&str>) -> NewEvent {
    let e = NewEvent::new("stats.item", json!(1)).unwrap();
    match key {
        Some(k) => e.key(k),
        None => e,
    }
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
    assert_eq!(log.stats(), RedisStats::default());

    // A plain append (the smaller script), a batch whose second event
    // repeats the first's key, the same key again later, and a conflict:
    // four groups, one of them plain.
    log.append(vec![event(None)], None).await.unwrap();
    log.append(vec![event(Some("k")), event(Some("k")), event(None)], None)
        .await
        .unwrap();
    let again = log.append(vec![event(Some("k"))], None).await.unwrap();
    assert!(again[0].duplicate);
    let refused = log.append(vec![event(None)], Some(1)).await;
    assert!(
        matches!(refused, Err(AppendError::Conflict { .. })),
        "{refused:?}"
    );
    let s = log.stats();
    assert_eq!(
        s.appends,
        WriteStats {
            groups: 4,
            events_appended: 3,
            duplicates: 2,
            conflicts: 1,
            failed_appends: 0,
            largest_group: 2,
        }
    );
    assert_eq!((s.plain_groups, s.lost_writes), (1, 0));

    // The keys vanish (as when Redis restarts without persistence): the
    // next append finds the counter below what this instance saw committed
    // and is refused, counted as lost writes and as a failed append.
    log.destroy().await.expect("destroy");
    assert!(log.append(vec![event(None)], None).await.is_err());
    let s = log.stats();
    assert_eq!((s.lost_writes, s.appends.failed_appends), (1, 1), "{s:?}");
    assert_eq!(s.plain_groups, 1, "a refused group is not counted as plain");
    common::delete_keys(&url, &key);
}
