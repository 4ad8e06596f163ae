//! Internal tests: the match cache and dispatch bookkeeping.

use super::*;
use serde_json::json;

#[test]
fn names_nobody_matches_are_not_cached() {
    let bus = Bus::builder().cache_capacity(8).build().unwrap();
    let _a = bus.on("a.*", |_| ()).unwrap();
    for i in 0..20 {
        bus.emit(format!("b.{i}"), json!(null)).unwrap();
    }
    assert_eq!(bus.inner.registry.lock().cache_len(), 0);
    bus.emit("a.x", json!(null)).unwrap();
    assert_eq!(bus.inner.registry.lock().cache_len(), 1);
    assert_eq!(bus.stats().dispatched, 1);
}

#[test]
fn cache_is_filled_bounded_and_invalidated() {
    let bus = Bus::builder().cache_capacity(2).build().unwrap();
    let _a = bus.on("a.*", |_| ()).unwrap();
    for n in ["a.x", "a.y", "a.z", "b.q"] {
        bus.emit(n, json!(null)).unwrap();
    }
    assert!(
        bus.inner.registry.lock().cache_len() <= 2,
        "cache is bounded"
    );
    let hits = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let h = hits.clone();
    let _b = bus
        .on("a.x", move |_| {
            h.fetch_add(1, Ordering::SeqCst);
        })
        .unwrap();
    assert_eq!(
        bus.inner.registry.lock().cache_len(),
        0,
        "subscribe clears the cache"
    );
    bus.emit("a.x", json!(null)).unwrap();
    assert_eq!(
        hits.load(Ordering::SeqCst),
        1,
        "a cached name sees the new subscription"
    );
    drop(_b);
    bus.emit("a.x", json!(null)).unwrap();
    assert_eq!(
        hits.load(Ordering::SeqCst),
        1,
        "and no longer after unsubscribe"
    );
}

#[test]
fn registry_start_is_last_looked_up_seq() {
    let bus = Bus::new();
    bus.emit("x", json!(1)).unwrap();
    bus.emit("y", json!(2)).unwrap();
    let s = bus.subscribe("x").unwrap();
    assert_eq!(s.last_seq(), 2);
}

#[test]
fn dispatcher_is_done_after_each_emit() {
    let bus = Bus::new();
    for _ in 0..5 {
        bus.emit("t", json!(null)).unwrap();
    }
    assert_eq!(bus.inner.dispatcher.done(), 6);
}
