//! `NatsLog::stats`: each counter moves with what it counts.

mod common;

use std::time::Duration;

use serde_json::json;
use tidings_core::conformance::write_stats_count_each_outcome;
use tidings_core::{EventLog, NewEvent};
use tidings_nats::{NatsLog, NatsOptions};

fn event() -> NewEvent {
    NewEvent::new("stats.item", json!(1)).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn appends_duplicates_conflicts_and_lost_races_are_counted() {
    let Some(server) = common::nats_url() else {
        return;
    };
    let stream = common::unique_stream("stats");
    let log = NatsLog::open(&server, &stream, NatsOptions::default())
        .await
        .expect("open");
    write_stats_count_each_outcome(&log, || log.stats().appends).await;
    let s = log.stats();
    assert_eq!((s.lost_races, s.messages_skipped), (0, 0));

    // Another handle on the same stream appends at the same time: each
    // record planned against a tail the other just moved loses its race,
    // reads the tail and goes in after it. Rounds until a race was lost
    // (a round rarely has none; 50 in a row do not happen).
    let other = NatsLog::open(&server, &stream, NatsOptions::default())
        .await
        .expect("open the other");
    let mut rounds = 0;
    while log.stats().lost_races + other.stats().lost_races == 0 && rounds < 50 {
        rounds += 1;
        let (a, b) = (log.clone(), other.clone());
        let one = tokio::spawn(async move {
            for _ in 0..20 {
                a.append(vec![event()], None).await.unwrap();
            }
        });
        for _ in 0..20 {
            b.append(vec![event()], None).await.unwrap();
        }
        one.await.unwrap();
    }
    let (s, t) = (log.stats(), other.stats());
    assert!(s.lost_races + t.lost_races > 0, "{s:?} {t:?}");
    assert_eq!(
        3 + 40 * rounds,
        s.appends.events_appended + t.appends.events_appended
    );
    assert_eq!(log.bounds().await.unwrap().last, 3 + 40 * rounds);

    // A message on the log's subject that is no Tidings record: the
    // follower skips it (counted), and the next append, which finds it at
    // the tail, fails with a storage error (counted) instead of guessing.
    let client = async_nats::connect(&server).await.expect("connect");
    let js = async_nats::jetstream::new(client);
    js.publish(log.subject().to_owned(), "not a record".into())
        .await
        .expect("publish")
        .await
        .expect("ack");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while log.stats().messages_skipped == 0 && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(log.append(vec![event()], None).await.is_err());
    let s = log.stats();
    assert_eq!(s.messages_skipped, 1, "{s:?}");
    assert_eq!(s.appends.failed_appends, 1, "{s:?}");
    // Deleted through the open handle: opening the stream again would
    // fail on the foreign message at its tail.
    drop(other);
    log.destroy().await.expect("delete the test's streams");
}
