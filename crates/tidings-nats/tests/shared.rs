//! What is particular to NATS when several `NatsLog`s share one stream.
//! (What every shared backend promises — one order, keys, expectations and
//! consumer definitions across instances — is in the conformance suite's
//! store checks.)

mod common;

use std::sync::Arc;

use serde_json::json;
use tidings_core::{EventLog, NewEvent};
use tidings_nats::{NatsLog, NatsOptions};

/// An instance whose cache holds only the newest few events reads older
/// positions, appended by another instance, from the engine.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn old_positions_are_read_from_the_engine() {
    let Some(server) = common::nats_url() else {
        return;
    };
    let stream = common::unique_stream("shared");
    let a = Arc::new(
        NatsLog::open(&server, &stream, NatsOptions::default())
            .await
            .expect("open a"),
    );
    for i in 0..40 {
        a.append(vec![NewEvent::new("shared.item", json!(i)).unwrap()], None)
            .await
            .expect("append");
    }
    let all = a.read(0, 100).await.expect("read on a");
    let small = NatsOptions {
        cache_events: 8,
        ..NatsOptions::default()
    };
    let c = NatsLog::open(&server, &stream, small)
        .await
        .expect("open c");
    let p = c.read(5, 20).await.expect("read on c");
    assert_eq!(
        p.events.iter().map(|e| (e.seq, e.id)).collect::<Vec<_>>(),
        all.events[5..25]
            .iter()
            .map(|e| (e.seq, e.id))
            .collect::<Vec<_>>()
    );
    drop((a, c));
    common::delete_stream(&server, &stream).await;
}
