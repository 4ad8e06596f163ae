//! Reloading a plugin while other threads emit: every event it subscribes
//! to reaches exactly one instance (no loss, no duplicate), the old
//! instance up to the reload's `after` seq and the new one after it; for
//! sync handlers, async handlers on tiny queues (so the hand-over reads the
//! log), and a reload made from inside a handler. And `list()`.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use serde_json::json;
use tidings_core::{
    Bus, Plugin, PluginContext, PluginError, PluginHost, Priority, SubscriptionKind,
};

/// (instance, seq) pairs, in the order the handlers ran.
type Seen = Arc<Mutex<Vec<(usize, u64)>>>;

/// Records every `count.*` event with its instance number.
struct Counter {
    instance: usize,
    seen: Seen,
    run_async: bool,
}

impl Plugin for Counter {
    fn name(&self) -> &str {
        "counter"
    }
    fn version(&self) -> &str {
        "2.0.0"
    }
    fn setup(&mut self, ctx: &PluginContext) -> Result<(), PluginError> {
        let (seen, i) = (self.seen.clone(), self.instance);
        if self.run_async {
            ctx.handler("count.*")
                .run_async(move |e| {
                    let seen = seen.clone();
                    async move {
                        tokio::task::yield_now().await;
                        seen.lock().unwrap().push((i, e.seq));
                    }
                })?
                .keep();
        } else {
            ctx.handler("count.*")
                .sync(move |e| seen.lock().unwrap().push((i, e.seq)))?
                .keep();
        }
        Ok(())
    }
    fn teardown(&mut self, _ctx: &PluginContext) {
        // A teardown that takes a while (flushing state, say): events are
        // emitted meanwhile.
        thread::sleep(Duration::from_micros(200));
    }
}

/// Loads a counter whose factory numbers its instances.
fn load_counter(host: &PluginHost, seen: &Seen, run_async: bool) {
    let (seen, next) = (seen.clone(), AtomicUsize::new(0));
    host.load_with(move || Counter {
        instance: next.fetch_add(1, Ordering::SeqCst),
        seen: seen.clone(),
        run_async,
    })
    .unwrap();
}

/// `threads` emitters, each emitting `per_thread` counted events with
/// noise between them; returns the seqs of the counted ones.
fn emit_concurrently(
    bus: &Bus,
    threads: usize,
    per_thread: usize,
) -> Vec<thread::JoinHandle<Vec<u64>>> {
    (0..threads)
        .map(|t| {
            let bus = bus.clone();
            thread::spawn(move || {
                let mut seqs = Vec::with_capacity(per_thread);
                for n in 0..per_thread {
                    let e = bus.emit(format!("count.t{t}"), json!(n)).unwrap();
                    seqs.push(e.seq);
                    if n % 3 == 0 {
                        bus.emit("noise", json!(n)).unwrap();
                    }
                }
                seqs
            })
        })
        .collect()
}

/// Every emitted seq exactly once; instance `i` got only seqs in
/// `(afters[i-1], afters[i]]`, in ascending order.
fn check(mut emitted: Vec<u64>, seen: &[(usize, u64)], afters: &[u64]) {
    emitted.sort_unstable();
    let mut got: Vec<u64> = seen.iter().map(|s| s.1).collect();
    got.sort_unstable();
    let dups: Vec<u64> = got
        .windows(2)
        .filter(|w| w[0] == w[1])
        .map(|w| w[0])
        .collect();
    let who: Vec<&(usize, u64)> = seen.iter().filter(|s| dups.contains(&s.1)).collect();
    assert!(
        dups.is_empty(),
        "delivered twice (instance, seq): {who:?} (afters {afters:?})"
    );
    let missing: Vec<u64> = emitted
        .iter()
        .filter(|s| got.binary_search(s).is_err())
        .copied()
        .collect();
    assert!(missing.is_empty(), "lost: {missing:?} (afters {afters:?})");
    assert_eq!(got, emitted, "delivered events nobody emitted");
    let mut last = vec![0u64; afters.len() + 1];
    for &(i, seq) in seen {
        let lo = if i == 0 { 0 } else { afters[i - 1] };
        let hi = afters.get(i).copied().unwrap_or(u64::MAX);
        assert!(
            lo < seq && seq <= hi,
            "instance {i} got #{seq}, outside ({lo}, {hi}]"
        );
        assert!(seq > last[i], "instance {i} got #{seq} after #{}", last[i]);
        last[i] = seq;
    }
}

#[test]
fn reloads_under_concurrent_emits_lose_and_double_nothing() {
    for round in 0..8usize {
        let bus = Bus::new();
        let host = PluginHost::new(bus.clone());
        let seen: Seen = Arc::default();
        load_counter(&host, &seen, false);
        let emitters = emit_concurrently(&bus, 2 + round % 3, 300);
        let mut afters = Vec::new();
        for _ in 0..(5 + round) {
            thread::sleep(Duration::from_micros(300));
            afters.push(host.reload("counter").unwrap().after);
        }
        let emitted: Vec<u64> = emitters
            .into_iter()
            .flat_map(|h| h.join().unwrap())
            .collect();
        check(emitted, &seen.lock().unwrap(), &afters);
        assert!(afters.windows(2).all(|w| w[0] <= w[1]), "{afters:?}");
        assert_eq!(host.list()[0].reloads, afters.len() as u64);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn async_handlers_on_tiny_queues_hand_over_exactly() {
    for _round in 0..8 {
        // Queues of 2: the handlers overflow all the time, so the old
        // instance's share is often read back from the log.
        let bus = Bus::builder().stream_capacity(2).build().unwrap();
        let host = Arc::new(PluginHost::new(bus.clone()));
        let seen: Seen = Arc::default();
        load_counter(&host, &seen, true);
        let emitters = emit_concurrently(&bus, 3, 200);
        let h = host.clone();
        let afters = tokio::task::spawn_blocking(move || {
            (0..6)
                .map(|_| {
                    thread::sleep(Duration::from_micros(500));
                    h.reload("counter").unwrap().after
                })
                .collect::<Vec<u64>>()
        })
        .await
        .unwrap();
        let emitted: Vec<u64> = emitters
            .into_iter()
            .flat_map(|h| h.join().unwrap())
            .collect();
        let deadline = Instant::now() + Duration::from_secs(20);
        while seen.lock().unwrap().len() < emitted.len() && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        // Give a would-be duplicate the time to show up.
        tokio::time::sleep(Duration::from_millis(50)).await;
        check(emitted, &seen.lock().unwrap(), &afters);
        // The old instances' handler tasks ended: only the live one is left.
        assert_eq!(host.subscriptions("counter").len(), 1);
    }
}

#[test]
fn a_reload_from_inside_a_handler_loses_and_doubles_nothing() {
    let bus = Bus::new();
    let host = Arc::new(PluginHost::new(bus.clone()));
    let seen: Seen = Arc::default();
    load_counter(&host, &seen, false);
    let afters: Arc<Mutex<Vec<u64>>> = Arc::default();
    let (weak, a) = (Arc::downgrade(&host), afters.clone());
    // Seed 001's `!plugin reload`, arriving as an event.
    bus.on("admin.reload", move |_| -> Result<(), PluginError> {
        let host = weak.upgrade().expect("host alive");
        a.lock().unwrap().push(host.reload("counter")?.after);
        Ok(())
    })
    .unwrap()
    .keep();
    let emitters = emit_concurrently(&bus, 3, 300);
    let admin = {
        let bus = bus.clone();
        thread::spawn(move || {
            for _ in 0..10 {
                thread::sleep(Duration::from_micros(300));
                bus.emit("admin.reload", json!(null)).unwrap();
            }
        })
    };
    admin.join().unwrap();
    let emitted: Vec<u64> = emitters
        .into_iter()
        .flat_map(|h| h.join().unwrap())
        .collect();
    let afters = afters.lock().unwrap().clone();
    assert_eq!(afters.len(), 10);
    assert_eq!(bus.stats().handler_errors, 0);
    check(emitted, &seen.lock().unwrap(), &afters);
}

/// Fails on `mood.bad`, panics on `mood.panic`.
struct Moody;

impl Plugin for Moody {
    fn name(&self) -> &str {
        "moody"
    }
    fn version(&self) -> &str {
        "3.1.4"
    }
    fn setup(&mut self, ctx: &PluginContext) -> Result<(), PluginError> {
        ctx.handler("mood.*")
            .priority(Priority::High)
            .sync(|e| match e.name.as_str() {
                "mood.bad" => Err("bad mood"),
                "mood.panic" => panic!("very bad mood"),
                _ => Ok(()),
            })?
            .keep();
        ctx.handler("mood.>").sync(|_| ())?.keep();
        Ok(())
    }
}

#[test]
fn list_shows_name_version_subscriptions_and_stats_across_a_reload() {
    let bus = Bus::new();
    let host = PluginHost::new(bus.clone());
    host.load_with(|| Moody).unwrap();
    for name in ["mood.ok", "mood.ok", "mood.bad", "mood.panic", "other"] {
        bus.emit(name, json!(null)).unwrap();
    }
    let list = host.list();
    assert_eq!(list.len(), 1);
    let p = &list[0];
    assert_eq!((p.name.as_str(), p.version.as_str()), ("moody", "3.1.4"));
    assert!(p.reloadable);
    assert_eq!(p.reloads, 0);
    let subs: Vec<(&str, Priority, Option<&str>, SubscriptionKind)> = p
        .subscriptions
        .iter()
        .map(|s| (s.pattern.as_str(), s.priority, s.owner.as_deref(), s.kind))
        .collect();
    assert_eq!(
        subs,
        [
            (
                "mood.*",
                Priority::High,
                Some("moody"),
                SubscriptionKind::Sync
            ),
            (
                "mood.>",
                Priority::Normal,
                Some("moody"),
                SubscriptionKind::Sync
            ),
        ]
    );
    assert_eq!((p.stats.calls, p.stats.errors, p.stats.panics), (8, 1, 1));

    let old_ids: Vec<u64> = p.subscriptions.iter().map(|s| s.id).collect();
    host.reload("moody").unwrap();
    bus.emit("mood.bad", json!(null)).unwrap();
    let p = &host.list()[0];
    assert_eq!(p.reloads, 1);
    assert_eq!(p.subscriptions.len(), 2);
    assert!(
        p.subscriptions.iter().all(|s| !old_ids.contains(&s.id)),
        "fresh subscriptions"
    );
    // Counted per plugin name, across reloads.
    assert_eq!((p.stats.calls, p.stats.errors, p.stats.panics), (10, 2, 1));
    host.unload("moody").unwrap();
    assert!(host.list().is_empty());
}
