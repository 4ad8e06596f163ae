//! The bus's synchronous contract: emit, dispatch order, isolation,
//! subscription lifetime, history, stats, depth guard, typed events.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};
use serde_json::json;
use tidings_core::{
    typed_event, AppendError, Bus, ConfigError, EmitError, NewEvent, Priority, SubscribeError,
    SubscriptionKind,
};

fn recorder() -> (Arc<Mutex<Vec<String>>>, impl Fn(&str) + Clone) {
    let log = Arc::new(Mutex::new(Vec::new()));
    let l = log.clone();
    (log, move |s: &str| l.lock().unwrap().push(s.to_owned()))
}

#[test]
fn emit_returns_the_committed_envelope() {
    let bus = Bus::new();
    let before = chrono::Utc::now();
    let a = bus
        .emit("player:login", json!({"username": "Gribnak"}))
        .unwrap();
    let b = bus.emit("player:move", json!({"to": "street"})).unwrap();
    assert_eq!((a.seq, b.seq), (1, 2));
    assert_eq!(a.name, "player:login");
    assert_eq!(a.source, "app");
    assert_eq!(a.data["username"], "Gribnak");
    assert!(a.time >= before);
    assert_ne!(a.id, b.id);
    assert_eq!(bus.last_seq(), 2);
}

#[test]
fn builder_sets_source_key_and_priority() {
    let bus = Bus::new();
    let e = bus
        .event("trivia.started")
        .data(json!({"q": "?"}))
        .source("trivia")
        .key("round-1")
        .priority(Priority::High)
        .emit()
        .unwrap();
    assert_eq!(e.source, "trivia");
    assert_eq!(e.key.as_deref(), Some("round-1"));
    assert_eq!(e.priority, Some(Priority::High));
}

#[test]
fn invalid_names_are_refused_and_commit_nothing() {
    let bus = Bus::new();
    for bad in ["", "a..b", "a b", "a.*", "x.>", ".a"] {
        let err = bus.emit(bad, json!(null)).unwrap_err();
        assert!(matches!(err, EmitError::Name(_)), "{bad:?}: {err}");
    }
    assert_eq!(bus.last_seq(), 0);
    assert_eq!(bus.stats().published, 0);
}

#[test]
fn sync_handlers_run_before_emit_returns() {
    let bus = Bus::new();
    let seen = Arc::new(AtomicUsize::new(0));
    let s = seen.clone();
    let _h = bus
        .on("tick", move |_| {
            s.fetch_add(1, Ordering::SeqCst);
        })
        .unwrap();
    bus.emit("tick", json!(null)).unwrap();
    assert_eq!(seen.load(Ordering::SeqCst), 1);
}

#[test]
fn priority_then_registration_order() {
    let bus = Bus::new();
    let (log, rec) = recorder();
    let mut subs = Vec::new();
    for (name, p) in [
        ("low1", Priority::Low),
        ("normal1", Priority::Normal),
        ("high1", Priority::High),
        ("normal2", Priority::Normal),
        ("low2", Priority::Low),
        ("high2", Priority::High),
    ] {
        let r = rec.clone();
        subs.push(
            bus.handler("test")
                .priority(p)
                .sync(move |_| r(name))
                .unwrap(),
        );
    }
    bus.emit("test", json!(null)).unwrap();
    assert_eq!(
        *log.lock().unwrap(),
        vec!["high1", "high2", "normal1", "normal2", "low1", "low2"]
    );
}

#[test]
fn wildcards_and_separators() {
    let bus = Bus::new();
    let (log, rec) = recorder();
    let r1 = rec.clone();
    let r2 = rec.clone();
    let r3 = rec.clone();
    let _a = bus
        .on("*", move |e| r1(&format!("all:{}", e.name)))
        .unwrap();
    let _b = bus
        .on("trivia.*", move |e| r2(&format!("trivia:{}", e.name)))
        .unwrap();
    let _c = bus
        .on("player.>", move |e| r3(&format!("player:{}", e.name)))
        .unwrap();
    bus.emit("trivia.started", json!(null)).unwrap();
    bus.emit("quote.added", json!(null)).unwrap();
    bus.emit("player:move", json!(null)).unwrap();
    bus.emit("player.a.b", json!(null)).unwrap();
    bus.emit("trivia.a.b", json!(null)).unwrap();
    assert_eq!(
        *log.lock().unwrap(),
        vec![
            "all:trivia.started",
            "trivia:trivia.started",
            "all:quote.added",
            "all:player:move",
            "player:player:move",
            "all:player.a.b",
            "player:player.a.b",
            "all:trivia.a.b",
        ]
    );
}

#[test]
fn handler_errors_are_isolated_and_counted() {
    let bus = Bus::new();
    let ok = Arc::new(AtomicUsize::new(0));
    let o = ok.clone();
    let _bad = bus.on("x", |_| Err::<(), _>("handler failed!")).unwrap();
    let _good = bus
        .on("x", move |_| {
            o.fetch_add(1, Ordering::SeqCst);
        })
        .unwrap();
    bus.emit("x", json!(null)).unwrap();
    bus.emit("x", json!(null)).unwrap();
    assert_eq!(ok.load(Ordering::SeqCst), 2);
    assert_eq!(bus.stats().handler_errors, 2);
}

#[test]
fn panicking_handlers_do_not_poison_the_bus() {
    let bus = Bus::new();
    let ok = Arc::new(AtomicUsize::new(0));
    let o = ok.clone();
    let _boom = bus.on("x", |_| -> () { panic!("boom") }).unwrap();
    let _good = bus
        .on("x", move |_| {
            o.fetch_add(1, Ordering::SeqCst);
        })
        .unwrap();
    for _ in 0..3 {
        bus.emit("x", json!(null)).unwrap();
    }
    assert_eq!(ok.load(Ordering::SeqCst), 3);
    let st = bus.stats();
    assert_eq!(st.handler_panics, 3);
    assert_eq!(st.published, 3);
    // The bus still works from another thread too.
    let b2 = bus.clone();
    std::thread::spawn(move || b2.emit("y", json!(null)).unwrap())
        .join()
        .unwrap();
    assert_eq!(bus.last_seq(), 4);
}

#[test]
fn drop_unsubscribes_and_detach_keeps() {
    let bus = Bus::new();
    let n = Arc::new(AtomicUsize::new(0));
    let (n1, n2) = (n.clone(), n.clone());
    let sub = bus
        .on("e", move |_| {
            n1.fetch_add(1, Ordering::SeqCst);
        })
        .unwrap();
    let kept = bus
        .on("e", move |_| {
            n2.fetch_add(100, Ordering::SeqCst);
        })
        .unwrap()
        .keep();
    bus.emit("e", json!(null)).unwrap();
    drop(sub);
    bus.emit("e", json!(null)).unwrap();
    assert_eq!(n.load(Ordering::SeqCst), 201);
    assert!(bus.unsubscribe(kept));
    assert!(!bus.unsubscribe(kept));
    bus.emit("e", json!(null)).unwrap();
    assert_eq!(n.load(Ordering::SeqCst), 201);
    assert_eq!(bus.stats().subscriptions, 0);
}

#[test]
fn explicit_unsubscribe() {
    let bus = Bus::new();
    let n = Arc::new(AtomicUsize::new(0));
    let n1 = n.clone();
    let sub = bus
        .on("e", move |_| {
            n1.fetch_add(1, Ordering::SeqCst);
        })
        .unwrap();
    sub.unsubscribe();
    bus.emit("e", json!(null)).unwrap();
    assert_eq!(n.load(Ordering::SeqCst), 0);
}

#[test]
fn once_fires_once_then_leaves() {
    let bus = Bus::new();
    let n = Arc::new(AtomicUsize::new(0));
    let n1 = n.clone();
    let _once = bus
        .once("door.*", move |_| {
            n1.fetch_add(1, Ordering::SeqCst);
        })
        .unwrap();
    assert_eq!(bus.subscriptions(None)[0].kind, SubscriptionKind::Once);
    bus.emit("door.opened", json!(null)).unwrap();
    bus.emit("door.closed", json!(null)).unwrap();
    assert_eq!(n.load(Ordering::SeqCst), 1);
    assert!(bus.subscriptions(None).is_empty());
}

#[test]
fn once_fires_once_under_concurrent_emits() {
    let bus = Bus::new();
    let n = Arc::new(AtomicUsize::new(0));
    let n1 = n.clone();
    let _once = bus
        .once("race", move |_| {
            n1.fetch_add(1, Ordering::SeqCst);
        })
        .unwrap();
    let threads: Vec<_> = (0..4)
        .map(|_| {
            let b = bus.clone();
            std::thread::spawn(move || {
                for _ in 0..50 {
                    b.emit("race", json!(null)).unwrap();
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    assert_eq!(n.load(Ordering::SeqCst), 1);
    assert_eq!(bus.last_seq(), 200);
}

#[test]
fn idempotent_emit_returns_the_original_and_dispatches_once() {
    let bus = Bus::new();
    let n = Arc::new(AtomicUsize::new(0));
    let n1 = n.clone();
    let _h = bus
        .on("order.placed", move |_| {
            n1.fetch_add(1, Ordering::SeqCst);
        })
        .unwrap();
    let a = bus.event("order.placed").key("o-1").emit().unwrap();
    let b = bus.event("order.placed").key("o-1").emit().unwrap();
    assert_eq!(a.seq, b.seq);
    assert_eq!(a.id, b.id);
    assert_eq!(n.load(Ordering::SeqCst), 1);
    assert_eq!(bus.stats().published, 1);
}

#[test]
fn expected_seq_conflicts_are_refused() {
    let bus = Bus::new();
    bus.emit("a", json!(null)).unwrap();
    let err = bus.event("b").expect_last(0).emit().unwrap_err();
    assert!(matches!(
        err,
        EmitError::Append(AppendError::Conflict {
            expected: 0,
            actual: 1
        })
    ));
    assert_eq!(bus.event("b").expect_last(1).emit().unwrap().seq, 2);
}

#[test]
fn batches_are_consecutive_and_dispatched_in_order() {
    let bus = Bus::new();
    let (log, rec) = recorder();
    let _h = bus.on(">", move |e| rec(&e.seq.to_string())).unwrap();
    bus.emit("before", json!(null)).unwrap();
    let batch: Vec<NewEvent> = (0..4)
        .map(|i| NewEvent::new("batch.item", json!(i)).unwrap())
        .collect();
    let c = bus.emit_batch(batch, None).unwrap();
    assert_eq!(
        c.iter().map(|c| c.event.seq).collect::<Vec<_>>(),
        vec![2, 3, 4, 5]
    );
    assert_eq!(*log.lock().unwrap(), vec!["1", "2", "3", "4", "5"]);
    assert!(matches!(
        bus.emit_batch(vec![], None),
        Err(EmitError::Append(AppendError::EmptyBatch))
    ));
}

#[test]
fn history_is_bounded_filtered_and_oldest_first() {
    let bus = Bus::builder().history_capacity(5).build().unwrap();
    for i in 0..8 {
        let name = if i % 2 == 0 { "even.n" } else { "odd.n" };
        bus.emit(name, json!(i)).unwrap();
    }
    let all = bus.history(100, None).unwrap();
    assert_eq!(
        all.iter().map(|e| e.seq).collect::<Vec<_>>(),
        vec![4, 5, 6, 7, 8]
    );
    let evens = bus.history(2, Some("even.*")).unwrap();
    assert_eq!(evens.iter().map(|e| e.seq).collect::<Vec<_>>(), vec![5, 7]);
    assert!(bus.history(10, Some("a..b")).is_err());
}

#[test]
fn default_history_keeps_ten_thousand() {
    let bus = Bus::new();
    for _ in 0..10_050 {
        bus.emit("h", json!(null)).unwrap();
    }
    let h = bus.history(usize::MAX, None).unwrap();
    assert_eq!(h.len(), 10_000);
    assert_eq!(h[0].seq, 51);
}

#[test]
fn history_can_be_off() {
    let bus = Bus::builder().without_history().build().unwrap();
    bus.emit("x", json!(null)).unwrap();
    assert!(bus.history(10, None).unwrap().is_empty());
    assert_eq!(bus.last_seq(), 1);
}

#[test]
fn zero_capacities_are_config_errors() {
    let cases = [
        Bus::builder().history_capacity(0).build(),
        Bus::builder().stream_capacity(0).build(),
        Bus::builder().max_depth(0).build(),
        Bus::builder().cache_capacity(0).build(),
    ];
    for (r, want) in cases.into_iter().zip([
        "history_capacity",
        "stream_capacity",
        "max_depth",
        "cache_capacity",
    ]) {
        match r {
            Err(ConfigError::Zero { setting, .. }) => assert_eq!(setting, want),
            Err(other) => panic!("{want}: unexpected {other}"),
            Ok(_) => panic!("{want} = 0 was accepted"),
        }
    }
    let msg = Bus::builder()
        .history_capacity(0)
        .build()
        .unwrap_err()
        .to_string();
    assert!(msg.contains("history_capacity must be at least 1"), "{msg}");
}

#[test]
fn invalid_patterns_are_refused() {
    let bus = Bus::new();
    for bad in ["", "a.>.b", "trivia*", "a..b", "a b"] {
        let e = bus.on(bad, |_| ()).err().expect("refused");
        assert!(matches!(e, SubscribeError::Pattern(_)), "{bad:?}");
        assert!(bus.subscribe(bad).is_err());
    }
    assert_eq!(bus.stats().subscriptions, 0);
}

#[test]
fn handlers_for_a_name_and_on_a_pattern() {
    let bus = Bus::new();
    let _a = bus.on("player:move", |_| ()).unwrap();
    let _b = bus.on("player.*", |_| ()).unwrap();
    let _c = bus.on("*", |_| ()).unwrap();
    let _d = bus.on("player.*", |_| ()).unwrap();
    // Who would receive an event of this name.
    assert_eq!(bus.handlers_for("player.move").unwrap(), 4);
    assert_eq!(bus.handlers_for("room.enter").unwrap(), 1);
    assert!(bus.handlers_for("a..b").is_err());
    // Who subscribed with exactly this pattern, literal ones included.
    assert_eq!(bus.handlers_on("player.*").unwrap(), 2);
    assert_eq!(bus.handlers_on("*").unwrap(), 1);
    assert_eq!(bus.handlers_on("player.move").unwrap(), 1);
    assert_eq!(bus.handlers_on("room.>").unwrap(), 0);
    assert!(bus.handlers_on("a..b").is_err());
}

#[test]
fn stats_count_published_and_dispatched() {
    let bus = Bus::new();
    let _a = bus.on("s.*", |_| ()).unwrap();
    let _b = bus.on("s.x", |_| ()).unwrap();
    bus.emit("s.x", json!(null)).unwrap();
    bus.emit("s.y", json!(null)).unwrap();
    bus.emit("t", json!(null)).unwrap();
    let st = bus.stats();
    assert_eq!(st.published, 3);
    assert_eq!(st.dispatched, 3);
    assert_eq!(st.subscriptions, 2);
}

#[test]
fn owners_list_and_remove_their_subscriptions() {
    let bus = Bus::new();
    let _a = bus.handler("a").owner("stats").sync(|_| ()).unwrap().keep();
    let _b = bus
        .handler("b.*")
        .owner("stats")
        .priority(Priority::High)
        .sync(|_| ())
        .unwrap()
        .keep();
    let _c = bus
        .handler("c")
        .owner("trivia")
        .sync(|_| ())
        .unwrap()
        .keep();
    let mine = bus.subscriptions(Some("stats"));
    assert_eq!(mine.len(), 2);
    assert_eq!(mine[1].pattern, "b.*");
    assert_eq!(mine[1].priority, Priority::High);
    assert_eq!(mine[1].owner.as_deref(), Some("stats"));
    assert_eq!(bus.unsubscribe_all("stats"), 2);
    assert_eq!(bus.unsubscribe_all("stats"), 0);
    assert_eq!(bus.subscriptions(None).len(), 1);
}

#[test]
fn emit_loops_stop_at_the_depth_guard() {
    let bus = Bus::builder().max_depth(10).build().unwrap();
    let errors = Arc::new(Mutex::new(Vec::new()));
    let (b1, b2, e1, e2) = (bus.clone(), bus.clone(), errors.clone(), errors.clone());
    let _ping = bus
        .on("ping", move |_| {
            if let Err(e) = b1.emit("pong", json!(null)) {
                e1.lock().unwrap().push(e.to_string());
            }
        })
        .unwrap();
    let _pong = bus
        .on("pong", move |_| {
            if let Err(e) = b2.emit("ping", json!(null)) {
                e2.lock().unwrap().push(e.to_string());
            }
        })
        .unwrap();
    bus.emit("ping", json!(null)).unwrap();
    // Depth 0 is the first ping; depths 1..=10 are allowed; 11 is refused.
    assert_eq!(bus.last_seq(), 11);
    let errors = errors.lock().unwrap();
    assert_eq!(errors.len(), 1);
    assert!(errors[0].contains("depth 11"), "{}", errors[0]);
    assert_eq!(bus.stats().depth_exceeded, 1);
    // The bus is still usable.
    assert_eq!(bus.emit("other", json!(null)).unwrap().seq, 12);
}

#[test]
fn deep_default_loop_does_not_overflow_the_stack() {
    let bus = Bus::new();
    let b = bus.clone();
    let _loop = bus
        .on("again", move |_| {
            let _ = b.emit("again", json!(null));
        })
        .unwrap();
    bus.emit("again", json!(null)).unwrap();
    assert_eq!(bus.last_seq(), 33, "1 + the default depth of 32");
}

#[test]
fn emit_depth_is_per_bus() {
    // A handler of bus A emits into bus B: that is B's first event, depth 0,
    // whatever A's depth was (the depth used to leak through the thread).
    let a = Bus::builder().max_depth(1).build().unwrap();
    let b = Bus::builder().max_depth(1).build().unwrap();
    let refused = Arc::new(AtomicUsize::new(0));
    let (a2, b2, r) = (a.clone(), b.clone(), refused.clone());
    let _chain = a
        .on("step", move |e| {
            let depth: u64 = e.data.as_u64().unwrap();
            if depth < 1 {
                a2.emit("step", json!(depth + 1)).unwrap();
            } else if b2.emit("elsewhere", json!(null)).is_err() {
                r.fetch_add(1, Ordering::Relaxed);
            }
        })
        .unwrap();
    a.emit("step", json!(0)).unwrap();
    assert_eq!(a.last_seq(), 2, "depth 0 and 1 on A");
    assert_eq!(refused.load(Ordering::Relaxed), 0, "B's depth starts at 0");
    assert_eq!(b.last_seq(), 1);
    assert_eq!(b.stats().depth_exceeded, 0);
}

#[test]
fn a_loop_through_two_buses_still_ends() {
    let a = Bus::builder().max_depth(5).build().unwrap();
    let b = Bus::builder().max_depth(5).build().unwrap();
    let (a2, b2) = (a.clone(), b.clone());
    let _ab = a
        .on("ping", move |_| {
            let _ = b2.emit("pong", json!(null));
        })
        .unwrap();
    let _ba = b
        .on("pong", move |_| {
            let _ = a2.emit("ping", json!(null));
        })
        .unwrap();
    a.emit("ping", json!(null)).unwrap();
    // Each bus's own depth grows by one per turn: 0..=5 allowed on each.
    assert_eq!(a.last_seq(), 6);
    assert_eq!(b.last_seq(), 6);
    assert_eq!(a.stats().depth_exceeded, 1);
}

#[test]
fn nested_emits_keep_every_subscriber_in_seq_order() {
    let bus = Bus::new();
    let (log, rec) = recorder();
    let b = bus.clone();
    let _emitter = bus
        .handler("order.placed")
        .priority(Priority::High)
        .sync(move |_| {
            let inner = b.emit("invoice.created", json!(null)).unwrap();
            assert_eq!(inner.seq, 2, "a nested emit returns its committed event");
        })
        .unwrap();
    let _watcher = bus
        .handler(">")
        .priority(Priority::Low)
        .sync(move |e| rec(&format!("{}:{}", e.seq, e.name)))
        .unwrap();
    bus.emit("order.placed", json!(null)).unwrap();
    assert_eq!(
        *log.lock().unwrap(),
        vec!["1:order.placed", "2:invoice.created"],
        "the low-priority watcher sees 1 before 2 though 2 was emitted while 1 was dispatching"
    );
}

#[test]
fn bus_is_send_sync_clone() {
    fn check<T: Send + Sync + Clone + 'static>() {}
    check::<Bus>();
    check::<tidings_core::SharedEvent>();
}

#[test]
fn handlers_get_shared_immutable_events() {
    let bus = Bus::new();
    let kept = Arc::new(Mutex::new(None));
    let k = kept.clone();
    let _h = bus
        .on("fact", move |e| *k.lock().unwrap() = Some(e.clone()))
        .unwrap();
    let ev = bus.emit("fact", json!({"v": 1})).unwrap();
    let held = kept.lock().unwrap().clone().unwrap();
    assert!(Arc::ptr_eq(&ev, &held), "one shared envelope, not copies");
}

#[derive(Debug, Serialize, Deserialize, PartialEq)]
struct Scored {
    player: String,
    points: u32,
}
typed_event!(Scored => "game.scored");

#[test]
fn typed_events_roundtrip_and_bad_payloads_are_counted() {
    let bus = Bus::new();
    let got = Arc::new(Mutex::new(Vec::new()));
    let g = got.clone();
    let _h = bus
        .on_typed(move |s: &Scored, e| g.lock().unwrap().push((e.seq, s.points)))
        .unwrap();
    let e = bus
        .emit_typed(&Scored {
            player: "ann".into(),
            points: 3,
        })
        .unwrap();
    assert_eq!(e.name, "game.scored");
    assert_eq!(e.data_as::<Scored>().unwrap().player, "ann");
    bus.emit("game.scored", json!({"nope": true})).unwrap();
    assert_eq!(*got.lock().unwrap(), vec![(1, 3)]);
    assert_eq!(bus.stats().handler_errors, 1);
}
