//! Internal tests: the match cache and dispatch bookkeeping.

use super::*;
use serde_json::json;
use std::sync::atomic::Ordering;

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
    assert!(
        !bus.inner.registry.lock().cached("a.x"),
        "subscribing drops the entry of a name the pattern matches"
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

/// A bus whose cache holds both `a.x` and `b.x` (they may share a slot
/// under one hasher seed; each bus draws its own).
fn bus_caching_a_x_and_b_x() -> (Bus, [Subscription; 2]) {
    for _ in 0..32 {
        let bus = Bus::builder().cache_capacity(64).build().unwrap();
        let subs = [
            bus.on("a.*", |_| ()).unwrap(),
            bus.on("b.*", |_| ()).unwrap(),
        ];
        bus.emit("a.x", json!(null)).unwrap();
        bus.emit("b.x", json!(null)).unwrap();
        let reg = bus.inner.registry.lock();
        if reg.cached("a.x") && reg.cached("b.x") {
            drop(reg);
            return (bus, subs);
        }
    }
    panic!("a.x and b.x shared a slot under 32 hasher seeds");
}

#[test]
fn unrelated_subscribe_churn_keeps_cached_entries() {
    let (bus, _subs) = bus_caching_a_x_and_b_x();
    let hits = || bus.inner.registry.lock().cache_hits();
    let before = hits();
    // Churn on patterns that match neither name.
    for p in ["c.>", "a.x.y", "*.y", "b:*:*", "a.x.>"] {
        let s = bus.on(p, |_| ()).unwrap();
        drop(s);
        let st = bus.subscribe(p).unwrap();
        drop(st);
    }
    let reg = bus.inner.registry.lock();
    assert!(reg.cached("a.x") && reg.cached("b.x"), "entries kept");
    drop(reg);
    bus.emit("a.x", json!(null)).unwrap();
    bus.emit("b.x", json!(null)).unwrap();
    assert_eq!(hits(), before + 2, "a.x and b.x answered by the cache");
    // A different name is a miss. (Last: in the direct-mapped cache it may
    // take a.x's or b.x's slot, which is no part of this test.)
    bus.emit("b:x", json!(null)).unwrap();
    assert_eq!(hits(), before + 2, "b:x is not b.x's entry");
}

#[test]
fn related_subscribe_is_seen_at_once_others_stay_cached() {
    let (bus, _subs) = bus_caching_a_x_and_b_x();
    let seen = Arc::new(parking_lot::Mutex::new(Vec::new()));
    let s2 = seen.clone();
    let sub = bus.on("*.x", move |e| s2.lock().push(e.seq)).unwrap();
    {
        let reg = bus.inner.registry.lock();
        assert!(!reg.cached("a.x") && !reg.cached("b.x"), "*.x matches both");
    }
    let only_a = bus.subscribe("a.>").unwrap();
    let start = only_a.last_seq();
    let a = bus.emit("a.x", json!(null)).unwrap();
    let b = bus.emit("b.x", json!(null)).unwrap();
    assert_eq!(*seen.lock(), vec![a.seq, b.seq], "seen at once");
    assert_eq!(start, a.seq - 1, "the stream starts right before a.x");
    // a.> matches a.x only: b.x's fresh entry survives, a.x's does not.
    {
        let reg = bus.inner.registry.lock();
        assert!(reg.cached("a.x") && reg.cached("b.x"));
    }
    drop(only_a);
    let hits = bus.inner.registry.lock().cache_hits();
    bus.emit("b.x", json!(null)).unwrap();
    assert_eq!(bus.inner.registry.lock().cache_hits(), hits + 1);
    assert!(!bus.inner.registry.lock().cached("a.x"));
    drop(sub);
    let c = bus.emit("a.x", json!(null)).unwrap();
    assert!(!seen.lock().contains(&c.seq), "unsubscribed at once");
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
