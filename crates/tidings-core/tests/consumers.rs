//! Durable consumers and filters in the library.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::StreamExt;
use serde_json::json;
use tidings_core::{Bus, ConsumerError, Delivery, EventLog, SharedFilter};

async fn next_seq(c: &mut tidings_core::Consumer) -> u64 {
    match tokio::time::timeout(Duration::from_secs(5), c.next())
        .await
        .unwrap()
    {
        Some(Ok(Delivery::Event(e))) => e.seq,
        other => panic!("expected an event, got {other:?}"),
    }
}

#[tokio::test]
async fn a_consumer_resumes_after_its_last_ack_and_redelivers_the_rest() {
    let bus = Bus::new();
    for i in 0..5 {
        bus.emit(if i % 2 == 0 { "story.x" } else { "noise" }, json!(i))
            .unwrap();
    }
    let mut c = bus
        .consumer("timeline")
        .pattern("story.>")
        .stream()
        .await
        .unwrap();
    assert_eq!(next_seq(&mut c).await, 1);
    assert_eq!(next_seq(&mut c).await, 3);
    c.ack(1).unwrap();
    assert!(c.ack(9).is_err(), "cannot ack what was not delivered");
    c.flush().await.unwrap();
    assert_eq!(bus.log().cursor("timeline").await.unwrap(), Some(1));
    drop(c);
    // Not acknowledged: 3 comes again.
    let mut c = bus
        .consumer("timeline")
        .pattern("story.>")
        .stream()
        .await
        .unwrap();
    assert_eq!(next_seq(&mut c).await, 3);
    assert_eq!(next_seq(&mut c).await, 5);
    c.ack(5).unwrap();
    c.ack(3).unwrap(); // cumulative: lower changes nothing
    assert_eq!(c.acked(), 5);
    drop(c);
    // The last write happens when the consumer is dropped.
    let mut rx = bus.log().watch();
    for _ in 0..100 {
        if bus.log().cursor("timeline").await.unwrap() == Some(5) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(bus.log().cursor("timeline").await.unwrap(), Some(5));
    let _ = rx.borrow_and_update();
    bus.emit("story.y", json!(6)).unwrap();
    let mut c = bus
        .consumer("timeline")
        .pattern("story.>")
        .stream()
        .await
        .unwrap();
    assert_eq!(next_seq(&mut c).await, 6, "resumes exactly after the ack");
}

#[tokio::test]
async fn a_consumers_patterns_are_part_of_it() {
    let bus = Bus::new();
    let c = bus.consumer("a").pattern("x.*").stream().await.unwrap();
    drop(c);
    match bus.consumer("a").pattern("y.*").stream().await {
        Err(ConsumerError::Mismatch { existing, .. }) => assert_eq!(existing, ["x.*"]),
        other => panic!("expected a mismatch, got {:?}", other.map(|_| ())),
    }
    assert!(matches!(
        bus.consumer("b").stream().await,
        Err(ConsumerError::NoPatterns)
    ));
    assert!(bus.log().delete_consumer("a").await.unwrap());
    assert!(bus.consumer("a").pattern("y.*").stream().await.is_ok());
}

#[tokio::test]
async fn on_async_retries_until_ok_and_commits() {
    let bus = Bus::new();
    let calls = Arc::new(AtomicUsize::new(0));
    let seen = Arc::new(Mutex::new(Vec::new()));
    let (c2, s2) = (calls.clone(), seen.clone());
    let _task = bus
        .consumer("proj")
        .pattern("p.*")
        .commit_interval(Duration::from_millis(5))
        .on_async(move |e| {
            let (calls, seen) = (c2.clone(), s2.clone());
            async move {
                // The first call for seq 2 fails once.
                if calls.fetch_add(1, Ordering::SeqCst) == 1 {
                    return Err("transient");
                }
                seen.lock().unwrap().push(e.seq);
                Ok(())
            }
        })
        .await
        .unwrap();
    for i in 0..3 {
        bus.emit("p.x", json!(i)).unwrap();
    }
    for _ in 0..500 {
        if bus.log().cursor("proj").await.unwrap() == Some(3) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(bus.log().cursor("proj").await.unwrap(), Some(3));
    assert_eq!(
        *seen.lock().unwrap(),
        [1, 2, 3],
        "retried, in order, once each"
    );
    assert_eq!(calls.load(Ordering::SeqCst), 4);
}

#[tokio::test]
async fn filters_deliver_exactly_the_matching_events_in_order() {
    let bus = Bus::builder().stream_capacity(2).build().unwrap();
    let world: SharedFilter = Arc::new(|e: &tidings_core::Event| e.data["world_id"] == 42);
    let mut s = bus
        .subscribe_filtered(["move"], tidings_core::Position::End, Some(world.clone()))
        .await
        .unwrap();
    // More than the queue holds: the stream reads the log with the filter.
    let mut expected = Vec::new();
    for i in 0..40u64 {
        let w = if i % 3 == 0 { 42 } else { 7 };
        let e = bus.emit("move", json!({"world_id": w})).unwrap();
        if w == 42 {
            expected.push(e.seq);
        }
    }
    let mut got = Vec::new();
    while got.len() < expected.len() {
        match tokio::time::timeout(Duration::from_secs(5), s.next())
            .await
            .unwrap()
        {
            Some(Ok(Delivery::Event(e))) => got.push(e.seq),
            other => panic!("{other:?}"),
        }
    }
    assert_eq!(got, expected);
    // A sync `once` handler is not used up by a rejected event.
    let hits = Arc::new(Mutex::new(Vec::new()));
    let h = hits.clone();
    let _once = bus
        .handler("move")
        .filter(|e: &tidings_core::Event| e.data["world_id"] == 42)
        .once(move |e| h.lock().unwrap().push(e.seq))
        .unwrap();
    bus.emit("move", json!({"world_id": 1})).unwrap();
    let e = bus.emit("move", json!({"world_id": 42})).unwrap();
    bus.emit("move", json!({"world_id": 42})).unwrap();
    assert_eq!(*hits.lock().unwrap(), [e.seq]);
}

#[test]
fn a_filter_behind_an_arc_is_shared_and_none_clears_it() {
    let bus = Bus::builder().build().unwrap();
    let even: tidings_core::SharedFilter =
        Arc::new(|e: &tidings_core::Event| e.data["n"].as_u64().is_some_and(|n| n % 2 == 0));
    let (evens, all) = (
        Arc::new(Mutex::new(Vec::new())),
        Arc::new(Mutex::new(Vec::new())),
    );
    let (a, b, c) = (evens.clone(), evens.clone(), all.clone());
    let _first = bus
        .handler("n")
        .filter_arc(Some(even.clone()))
        .sync(move |e| a.lock().unwrap().push(e.data["n"].as_u64().unwrap()))
        .unwrap();
    let _second = bus
        .handler("n")
        .filter_arc(Some(even))
        .sync(move |e| b.lock().unwrap().push(e.data["n"].as_u64().unwrap()))
        .unwrap();
    // `None` clears a filter set before it.
    let _cleared = bus
        .handler("n")
        .filter(|_: &tidings_core::Event| false)
        .filter_arc(None)
        .sync(move |e| c.lock().unwrap().push(e.data["n"].as_u64().unwrap()))
        .unwrap();
    for n in 0..5u64 {
        bus.emit("n", json!({ "n": n })).unwrap();
    }
    assert_eq!(*evens.lock().unwrap(), [0, 0, 2, 2, 4, 4]);
    assert_eq!(*all.lock().unwrap(), [0, 1, 2, 3, 4]);
}

#[tokio::test]
async fn a_new_consumers_start_is_kept_before_its_first_ack() {
    let bus = Bus::new();
    for i in 0..6 {
        bus.emit("story.x", json!(i)).unwrap();
    }
    let open = || {
        bus.consumer("late")
            .pattern("story.>")
            .start(tidings_core::Position::After(4))
            .stream()
    };
    let mut c = open().await.unwrap();
    assert_eq!(next_seq(&mut c).await, 5);
    assert_eq!(
        bus.log().cursor("late").await.unwrap(),
        Some(4),
        "saved at once"
    );
    drop(c); // nothing acknowledged
             // Reopened (the start asked for again, or any other): after 4, not before.
    let mut c = bus
        .consumer("late")
        .pattern("story.>")
        .stream()
        .await
        .unwrap();
    assert_eq!(next_seq(&mut c).await, 5);
}
