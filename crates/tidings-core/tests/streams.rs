//! Streams, async handlers and wait_for: ordered, lossless, explicit lag.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::StreamExt;
use serde_json::json;
use tidings_core::{
    Bus, Delivery, EventStream, LogOptions, MemoryLog, NewEvent, Position, Retention,
    SubscribeError, WaitError,
};

async fn next_seq(s: &mut EventStream) -> u64 {
    match tokio::time::timeout(Duration::from_secs(5), s.next())
        .await
        .expect("nothing within 5 s")
        .expect("stream ended")
        .expect("read error")
    {
        Delivery::Event(e) => e.seq,
        lag => panic!("unexpected {lag:?}"),
    }
}

async fn eventually(mut f: impl FnMut() -> bool) {
    for _ in 0..500 {
        if f() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("condition not reached within 5 s");
}

#[tokio::test]
async fn subscribe_sees_only_later_events_in_order() {
    let bus = Bus::new();
    bus.emit("room.1.enter", json!(null)).unwrap();
    let mut s = bus.subscribe("room.*.enter").unwrap();
    bus.emit("room.2.enter", json!(null)).unwrap();
    bus.emit("room.2.leave", json!(null)).unwrap();
    bus.emit("room.3.enter", json!(null)).unwrap();
    assert_eq!(next_seq(&mut s).await, 2);
    assert_eq!(next_seq(&mut s).await, 4);
    assert_eq!(s.last_seq(), 4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscribe_from_beginning_catches_up_then_follows_live() {
    let bus = Bus::new();
    for i in 0..100 {
        bus.emit("m", json!(i)).unwrap();
    }
    let mut s = bus.subscribe_from("m", Position::Beginning).await.unwrap();
    let writer = bus.clone();
    let t = std::thread::spawn(move || {
        for i in 0..400 {
            writer.emit("m", json!(i)).unwrap();
        }
    });
    for want in 1..=500 {
        assert_eq!(next_seq(&mut s).await, want);
    }
    t.join().unwrap();
}

#[tokio::test]
async fn a_slow_stream_overflows_its_queue_and_catches_up_losslessly() {
    let bus = Bus::builder().stream_capacity(4).build().unwrap();
    let mut s = bus.subscribe("load.*").unwrap();
    for i in 0..1000 {
        bus.emit(if i % 3 == 0 { "other" } else { "load.x" }, json!(i))
            .unwrap();
    }
    let want: Vec<u64> = (1..=1000u64).filter(|n| (n - 1) % 3 != 0).collect();
    let mut got = Vec::new();
    while got.len() < want.len() {
        got.push(next_seq(&mut s).await);
    }
    assert_eq!(got, want);
    assert_eq!(bus.stats().lagged, 0, "nothing was pruned, so no lag");
    bus.emit("load.x", json!("after")).unwrap();
    assert_eq!(next_seq(&mut s).await, 1001);
}

#[tokio::test]
async fn a_stream_behind_pruned_events_gets_an_explicit_lag() {
    let log = MemoryLog::with_options(LogOptions {
        idempotency_window: Duration::from_secs(60),
        ..LogOptions::retention(Retention {
            max_count: Some(10),
            max_age: None,
        })
    })
    .expect("valid options");
    let bus = Bus::builder().log(log).stream_capacity(2).build().unwrap();
    let mut s = bus.subscribe(">").unwrap();
    for i in 0..50 {
        bus.emit("p", json!(i)).unwrap();
    }
    assert_eq!(next_seq(&mut s).await, 1);
    assert_eq!(next_seq(&mut s).await, 2);
    let lag = s.next().await.unwrap().unwrap();
    assert_eq!(
        lag,
        Delivery::Lagged {
            missed: 38,
            resume_from: 41
        }
    );
    for want in 41..=50 {
        assert_eq!(next_seq(&mut s).await, want);
    }
    assert_eq!(bus.stats().lagged, 1);
}

#[tokio::test]
async fn resuming_from_last_seq_has_no_gap_and_no_duplicate() {
    let bus = Bus::new();
    let mut s = bus.subscribe("r.*").unwrap();
    for i in 0..5 {
        bus.emit("r.a", json!(i)).unwrap();
    }
    assert_eq!(next_seq(&mut s).await, 1);
    assert_eq!(next_seq(&mut s).await, 2);
    let resume = s.last_seq();
    drop(s);
    for i in 0..3 {
        bus.emit("r.b", json!(i)).unwrap();
    }
    let mut again = bus
        .subscribe_from("r.*", Position::After(resume))
        .await
        .unwrap();
    for want in 3..=8 {
        assert_eq!(next_seq(&mut again).await, want);
    }
}

#[tokio::test]
async fn dropping_a_stream_unsubscribes_and_unsubscribe_all_ends_it() {
    let bus = Bus::new();
    let s = bus.subscribe("x").unwrap();
    assert_eq!(bus.stats().subscriptions, 1);
    drop(s);
    assert_eq!(bus.stats().subscriptions, 0);

    let id = bus.handler("y").owner("p").sync(|_| ()).unwrap().keep();
    assert!(id > 0);
    assert_eq!(bus.unsubscribe_all("p"), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn async_handlers_receive_events_in_seq_order() {
    let bus = Bus::builder().stream_capacity(8).build().unwrap();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let (count, mut count_rx) = tokio::sync::watch::channel(0usize);
    let s = seen.clone();
    let count = Arc::new(count);
    let _h = bus
        .on_async("work.*", move |e| {
            let (s, count) = (s.clone(), count.clone());
            async move {
                if e.seq % 10 == 0 {
                    tokio::time::sleep(Duration::from_millis(1)).await; // a slow one
                }
                let mut s = s.lock().unwrap();
                s.push(e.seq);
                count.send_replace(s.len());
            }
        })
        .unwrap();
    let writers: Vec<_> = (0..3)
        .map(|_| {
            let b = bus.clone();
            std::thread::spawn(move || {
                for i in 0..100 {
                    b.emit("work.item", json!(i)).unwrap();
                }
            })
        })
        .collect();
    for w in writers {
        w.join().unwrap();
    }
    tokio::time::timeout(Duration::from_secs(5), count_rx.wait_for(|n| *n >= 300))
        .await
        .expect("300 events not handled within 5 s")
        .unwrap();
    assert_eq!(*seen.lock().unwrap(), (1..=300).collect::<Vec<_>>());
}

#[tokio::test]
async fn async_handler_errors_and_panics_are_counted_and_isolated() {
    let bus = Bus::new();
    let ok = Arc::new(AtomicUsize::new(0));
    let o = ok.clone();
    // An async handler records an outcome before it takes its next event,
    // so when `_bad` gets "done" its outcomes for the three "j" are counted.
    let (done, done_rx) = tokio::sync::oneshot::channel();
    let done = Arc::new(Mutex::new(Some(done)));
    let _bad = bus
        .on_async(">", move |e| {
            let done = done.clone();
            async move {
                if e.name == "done" {
                    let _ = done.lock().unwrap().take().expect("one done").send(());
                    return Ok(());
                }
                if e.seq == 1 {
                    panic!("async boom");
                }
                Err::<(), String>("async failure".into())
            }
        })
        .unwrap();
    let (good_done, good_done_rx) = tokio::sync::oneshot::channel();
    let good_done = Arc::new(Mutex::new(Some(good_done)));
    let _good = bus
        .on_async(">", move |e| {
            let (o, good_done) = (o.clone(), good_done.clone());
            async move {
                if e.name == "done" {
                    let _ = good_done.lock().unwrap().take().expect("one done").send(());
                } else {
                    o.fetch_add(1, Ordering::SeqCst);
                }
            }
        })
        .unwrap();
    for _ in 0..3 {
        bus.emit("j", json!(null)).unwrap();
    }
    bus.emit("done", json!(null)).unwrap();
    let wait = Duration::from_secs(5);
    tokio::time::timeout(wait, done_rx).await.unwrap().unwrap();
    tokio::time::timeout(wait, good_done_rx)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(ok.load(Ordering::SeqCst), 3, "the good handler ran for all");
    let st = bus.stats();
    assert_eq!((st.handler_panics, st.handler_errors), (1, 2));
}

#[tokio::test]
async fn async_handler_ping_pong_stops_at_the_depth_guard() {
    let bus = Bus::builder().max_depth(6).build().unwrap();
    let (b1, b2) = (bus.clone(), bus.clone());
    let _ping = bus
        .on_async("ping", move |_| {
            let b = b1.clone();
            async move { b.emit_async("pong", json!(null)).await.map(|_| ()) }
        })
        .unwrap();
    let _pong = bus
        .on_async("pong", move |_| {
            let b = b2.clone();
            async move { b.emit_async("ping", json!(null)).await.map(|_| ()) }
        })
        .unwrap();
    bus.emit("ping", json!(null)).unwrap();
    eventually(|| bus.stats().depth_exceeded == 1).await;
    // The refused emit fails the handler that made it, which ends the
    // chain: once that error is counted, nothing else is in flight.
    eventually(|| bus.stats().handler_errors == 1).await;
    assert_eq!(bus.last_seq(), 7, "depths 0..=6 committed, 7 refused");
    assert_eq!(
        bus.stats().handler_errors,
        1,
        "the refused emit surfaces as the handler's error"
    );
}

#[test]
fn async_handlers_need_a_runtime() {
    let bus = Bus::new();
    let err = bus.on_async("x", |_| async {}).err().expect("refused");
    assert!(matches!(err, SubscribeError::NoRuntime));
    let rt = tokio::runtime::Runtime::new().unwrap();
    let bus = Bus::builder().runtime(rt.handle().clone()).build().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    let tx = Mutex::new(tx);
    let _h = bus
        .on_async("x", move |e| {
            let _ = tx.lock().unwrap().send(e.seq);
            async {}
        })
        .unwrap();
    bus.emit("x", json!(null)).unwrap();
    assert_eq!(
        rx.recv_timeout(Duration::from_secs(5)),
        Ok(1),
        "the async handler ran on the given runtime"
    );
}

#[tokio::test]
async fn wait_for_returns_the_next_match() {
    let bus = Bus::new();
    let mut waiting = Box::pin(bus.wait_for("player.*", Duration::from_secs(5)));
    // The first poll subscribes; only then are the events emitted.
    let first_poll = std::future::poll_fn(|cx| {
        std::task::Poll::Ready(std::future::Future::poll(waiting.as_mut(), cx).is_pending())
    });
    assert!(first_poll.await, "nothing emitted yet");
    let b = bus.clone();
    tokio::spawn(async move {
        b.emit("noise", json!(null)).unwrap();
        b.emit("player:login", json!({"u": "ann"})).unwrap();
    });
    let e = waiting.await.unwrap();
    assert_eq!(e.name, "player:login");
    assert_eq!(e.seq, 2);
    assert_eq!(bus.stats().subscriptions, 0, "wait_for cleans up");
}

#[tokio::test]
async fn wait_for_times_out_and_refuses_bad_patterns() {
    let bus = Bus::new();
    let err = bus
        .wait_for("never", Duration::from_millis(30))
        .await
        .unwrap_err();
    assert!(matches!(err, WaitError::Timeout(_)));
    assert!(err.to_string().contains("no matching event"));
    let err = bus
        .wait_for("a.>.b", Duration::from_millis(30))
        .await
        .unwrap_err();
    assert!(matches!(err, WaitError::Pattern(_)));
}

#[tokio::test]
async fn emit_async_commits_and_dispatches() {
    let bus = Bus::new();
    let mut s = bus.subscribe(">").unwrap();
    let e = bus.emit_async("a.b", json!(1)).await.unwrap();
    assert_eq!(e.seq, 1);
    assert_eq!(next_seq(&mut s).await, 1);
}

#[tokio::test]
async fn subscribe_from_a_time() {
    let bus = Bus::new();
    let first = bus.emit("t", json!(1)).unwrap();
    // The second event is dated after the first explicitly: no clock needs
    // to move between the two emits.
    let cut = first.time + chrono::Duration::milliseconds(1);
    let mut second = NewEvent::new("t", json!(2)).unwrap();
    second.time = cut;
    bus.emit_batch(vec![second], None).unwrap();
    let mut s = bus.subscribe_from("t", Position::At(cut)).await.unwrap();
    assert_eq!(next_seq(&mut s).await, 2);
}

#[tokio::test]
async fn several_patterns_deliver_each_event_once_in_order() {
    let bus = Bus::builder().stream_capacity(3).build().unwrap();
    let mut s = bus
        .subscribe_many(["order.*", "order.paid", "user.>"], Position::End)
        .await
        .unwrap();
    assert_eq!(s.patterns().len(), 3);
    for n in [
        "order.placed",
        "order.paid",
        "noise",
        "user.a.b",
        "order.paid",
    ] {
        bus.emit(n, json!(null)).unwrap();
    }
    // The queue (3) overflowed: the rest comes from the log, still deduplicated.
    let mut got = Vec::new();
    for _ in 0..4 {
        got.push(next_seq(&mut s).await);
    }
    assert_eq!(got, vec![1, 2, 4, 5]);
    assert_eq!(bus.stats().subscriptions, 3);
    drop(s);
    assert_eq!(bus.stats().subscriptions, 0);
}

#[tokio::test]
async fn patterns_can_be_added_and_dropped_on_a_live_stream() {
    let bus = Bus::new();
    let mut s = bus
        .subscribe_many(Vec::<&str>::new(), Position::End)
        .await
        .unwrap();
    assert!(s.add_pattern("a.*").unwrap());
    assert!(!s.add_pattern("a:*").unwrap(), "same tokens, same pattern");
    bus.emit("a.x", json!(null)).unwrap();
    assert!(s.add_pattern("b").unwrap());
    bus.emit("b", json!(null)).unwrap();
    assert!(s.remove_pattern("a.*").unwrap());
    assert!(!s.remove_pattern("zzz").unwrap());
    assert!(s.add_pattern("bad..p").is_err());
    bus.emit("a.y", json!(null)).unwrap();
    bus.emit("b", json!(null)).unwrap();
    assert_eq!(next_seq(&mut s).await, 1);
    assert_eq!(next_seq(&mut s).await, 2);
    assert_eq!(next_seq(&mut s).await, 4);
    assert_eq!(bus.stats().subscriptions, 1);
}

#[tokio::test]
async fn subscribe_many_from_a_seq_catches_up_on_all_patterns() {
    let bus = Bus::new();
    for n in ["x.1", "y.1", "z.1", "x.2"] {
        bus.emit(n, json!(null)).unwrap();
    }
    let mut s = bus
        .subscribe_many(["x.*", "z.*"], Position::After(1))
        .await
        .unwrap();
    bus.emit("z.2", json!(null)).unwrap();
    assert_eq!(next_seq(&mut s).await, 3);
    assert_eq!(next_seq(&mut s).await, 4);
    assert_eq!(next_seq(&mut s).await, 5);
}
