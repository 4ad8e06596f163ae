//! The append counters of a group-committing backend ([`WriteStats`]),
//! checked the same way for each (NATS, Redis): not in the macro, since
//! only such backends keep them.

use super::*;
use crate::log::WriteStats;

fn event(key: Option<&str>) -> NewEvent {
    let e = NewEvent::new("stats.item", json!(1)).unwrap();
    match key {
        Some(k) => e.key(k),
        None => e,
    }
}

/// On a fresh, empty `log` whose counters `stats` reads: one plain append,
/// a batch whose second event repeats the first's key (and one more
/// event), the same key again later, and a conflict are four groups,
/// three events appended, two duplicates, one conflict, no failure, and a
/// largest group of two events.
pub async fn write_stats_count_each_outcome(log: &dyn EventLog, stats: impl Fn() -> WriteStats) {
    assert_eq!(stats(), WriteStats::default(), "a fresh log counts nothing");
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
    assert_eq!(
        stats(),
        WriteStats {
            groups: 4,
            events_appended: 3,
            duplicates: 2,
            conflicts: 1,
            failed_appends: 0,
            largest_group: 2,
        }
    );
}

/// After an outage check that saw `unavailable` appends answered
/// `Unavailable` (what [`outage_fails_fast_and_loses_nothing`] returns,
/// the only way its appends may fail): each of them is counted in
/// `failed_appends`, once, and `follower` (the
/// backend's count of its follower's restarts or reconnects) rises within
/// 10 s, the follower coming back on its own schedule.
pub async fn outage_shows_in_the_counters(
    unavailable: u64,
    stats: impl Fn() -> WriteStats,
    follower: impl Fn() -> u64,
) {
    assert!(
        unavailable > 0,
        "the outage check saw no Unavailable answer"
    );
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while follower() == 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "the follower's restarts were never counted"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let s = stats();
    assert_eq!(
        s.failed_appends, unavailable,
        "{unavailable} appends were answered Unavailable, {s:?}"
    );
}
