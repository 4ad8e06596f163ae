//! Wake-ups and streams: `watch`, `stream_from` every position, commit
//! before notify, overflow during catch-up.

use super::*;

/// `watch` follows the last committed seq.
pub async fn watch_rises_with_appends<F, Fut>(make: F)
where
    F: Fn(LogOptions) -> Fut,
    Fut: Future<Output = Opened>,
{
    let log = fresh(&make, LogOptions::default()).await;
    let mut rx = log.watch();
    assert_eq!(*rx.borrow(), 0);
    append_n(&*log, 3).await;
    tokio::time::timeout(Duration::from_secs(10), rx.wait_for(|v| *v == 3))
        .await
        .expect("watch did not reach 3")
        .expect("watch closed");
}

/// A stream from the beginning catches up, then follows live appends with
/// no gap and no duplicate.
pub async fn stream_catches_up_then_live<F, Fut>(make: F)
where
    F: Fn(LogOptions) -> Fut,
    Fut: Future<Output = Opened>,
{
    let log = fresh(&make, LogOptions::default()).await;
    append_n(&*log, 10).await;
    let mut s = stream_from(log.clone(), Position::Beginning);
    for want in 1..=10 {
        assert_eq!(next_seq(&mut s).await, want);
    }
    let writer = log.clone();
    let task = tokio::spawn(async move {
        for i in 0..30 {
            writer.append(vec![ev("live", i)], None).await.unwrap();
            if i % 7 == 0 {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        }
    });
    for want in 11..=40 {
        assert_eq!(next_seq(&mut s).await, want);
    }
    task.await.unwrap();
}

/// Streams from `End`, `After(n)` and `At(time)` start where they say.
pub async fn stream_positions<F, Fut>(make: F)
where
    F: Fn(LogOptions) -> Fut,
    Fut: Future<Output = Opened>,
{
    let log = fresh(&make, LogOptions::default()).await;
    // Event times set explicitly around `cut` (whole milliseconds, which
    // every backend stores exactly), so no clock has to move.
    let cut = chrono::DateTime::from_timestamp_millis(chrono::Utc::now().timestamp_millis())
        .expect("now is representable");
    for i in 0..10i64 {
        let mut e = ev("conf.item", i as u64);
        e.time = cut + chrono::Duration::milliseconds(i - 5);
        log.append(vec![e], None).await.expect("append");
    }

    let mut after = stream_from(log.clone(), Position::After(7));
    assert_eq!(next_seq(&mut after).await, 8);
    let mut at = stream_from(log.clone(), Position::At(cut));
    assert_eq!(next_seq(&mut at).await, 6);
    let mut end = stream_from(log.clone(), Position::End);
    // Drive `end` until it has resolved `End` (its position becomes the
    // last seq) and waits for more, before the next append.
    tokio::time::timeout(
        Duration::from_secs(10),
        std::future::poll_fn(|cx| match end.poll_next_unpin(cx) {
            Poll::Ready(item) => panic!("`End` delivered {item:?} before any append"),
            Poll::Pending if end.last_seq() == 10 => Poll::Ready(()),
            Poll::Pending => Poll::Pending,
        }),
    )
    .await
    .expect("`End` did not resolve within 10 s");
    log.append(vec![ev("after.end", 0)], None).await.unwrap();
    assert_eq!(next_seq(&mut end).await, 11);
}

/// Commit before notify, seen from the receivers: when a sync handler, an
/// async handler and a stream of a bus over this log receive seq N, the log
/// already returns N from `read(N - 1, 1)`. Each receiver checks inside
/// itself (the sync handler blocks on the read with `block_in_place`, so
/// this check needs a multi-threaded runtime, as `conformance_tests!`
/// gives it).
pub async fn commit_before_notify<F, Fut>(make: F)
where
    F: Fn(LogOptions) -> Fut,
    Fut: Future<Output = Opened>,
{
    let log = fresh(&make, LogOptions::default()).await;
    let bus = Bus::builder()
        .log_arc(log.clone())
        .build()
        .expect("a bus over the log");
    /// `Ok` if the log holds `e` at its seq.
    async fn held(log: &dyn EventLog, e: &SharedEvent) -> Result<(), String> {
        match log.read(e.seq - 1, 1).await {
            Ok(p) if p.events.first().map(|x| (x.seq, x.id)) == Some((e.seq, e.id)) => Ok(()),
            Ok(p) => Err(format!(
                "seq {} delivered but the log reads {:?} (last {})",
                e.seq,
                p.events.first().map(|x| x.seq),
                p.last_seq
            )),
            Err(err) => Err(format!("seq {}: read failed: {err}", e.seq)),
        }
    }
    let rt = tokio::runtime::Handle::current();
    let sync_seen = Arc::new(Mutex::new(Vec::new()));
    let (seen, l) = (sync_seen.clone(), log.clone());
    let _sync = bus
        .on("cbn.>", move |e| {
            // Sync handlers may run on a runtime worker (async emit, the
            // external-appends task of a shared log): step out of it to
            // wait for the read.
            let r = tokio::task::block_in_place(|| rt.block_on(held(&*l, e)));
            seen.lock().push((e.seq, r));
        })
        .expect("a sync handler");
    let (tx, mut async_seen) = tokio::sync::mpsc::unbounded_channel();
    let l = log.clone();
    let _async = bus
        .on_async("cbn.>", move |e| {
            let (tx, l) = (tx.clone(), l.clone());
            async move {
                let r = held(&*l, &e).await;
                let _ = tx.send((e.seq, r));
            }
        })
        .expect("an async handler");
    let mut stream = bus.subscribe("cbn.>").expect("a stream");

    let mut want = Vec::new();
    for i in 0..20u64 {
        let e = bus
            .emit_async(format!("cbn.{}", i % 3), json!({ "i": i }))
            .await
            .expect("emit");
        want.push(e.seq);
        if i % 5 == 4 {
            let batch = vec![ev("cbn.batch", i), ev("skip.me", i), ev("cbn.batch", i)];
            let c = bus
                .emit_batch_async(batch, None)
                .await
                .expect("emit a batch");
            want.extend(
                c.iter()
                    .filter(|c| c.event.name.starts_with("cbn"))
                    .map(|c| c.event.seq),
            );
        }
    }
    let sync_got: Vec<(u64, Result<(), String>)> = sync_seen.lock().clone();
    assert_eq!(
        sync_got,
        want.iter().map(|s| (*s, Ok(()))).collect::<Vec<_>>(),
        "sync handler: every seq, each already in the log"
    );
    for &seq in &want {
        let got = tokio::time::timeout(Duration::from_secs(10), async_seen.recv())
            .await
            .expect("the async handler got nothing within 10 s")
            .expect("the async handler ended");
        assert_eq!(got, (seq, Ok(())), "async handler");
        let e = next_bus_event(&mut stream).await;
        assert_eq!(e.seq, seq, "stream order");
        assert_eq!(held(&*log, &e).await, Ok(()), "stream");
    }
}

async fn next_bus_event(s: &mut EventStream) -> SharedEvent {
    match tokio::time::timeout(Duration::from_secs(10), s.next())
        .await
        .expect("stream delivered nothing within 10 s")
        .expect("stream ended")
        .expect("read failed")
    {
        Delivery::Event(e) => e,
        other => panic!("expected an event, got {other:?}"),
    }
}

/// A bus stream with a tiny queue, started from the beginning of the log
/// while events are emitted faster than it reads: its queue overflows
/// during catch-up and after, and it still yields every matching seq
/// exactly once, in order, across the switch from the log to live
/// delivery, with no lag reported.
pub async fn stream_overflow_catch_up_to_live<F, Fut>(make: F)
where
    F: Fn(LogOptions) -> Fut,
    Fut: Future<Output = Opened>,
{
    let log = fresh(&make, LogOptions::default()).await;
    let name = |i: u64| {
        if i.is_multiple_of(3) {
            "ovf.skip"
        } else {
            "ovf.in.x"
        }
    };
    // History from before the bus existed.
    for i in 0..20 {
        log.append(vec![ev(name(i), i)], None)
            .await
            .expect("append");
    }
    let bus = Bus::builder()
        .log_arc(log.clone())
        .stream_capacity(2)
        .build()
        .expect("a bus over the log");
    let mut s = bus
        .subscribe_from("ovf.in.>", Position::Beginning)
        .await
        .expect("a stream from the beginning");
    // A burst before the stream reads anything: its queue overflows.
    let burst: Vec<NewEvent> = (20..50).map(|i| ev(name(i), i)).collect();
    bus.emit_batch_async(burst, None)
        .await
        .expect("emit a burst");
    // Then a writer racing the reader: single emits and batches, so the
    // queue overflows again while the stream is live.
    let writer = bus.clone();
    let task = tokio::spawn(async move {
        let mut k = 50u64;
        while k < 150 {
            if k.is_multiple_of(10) {
                let batch = (k..k + 4).map(|j| ev(name(j), j)).collect();
                writer
                    .emit_batch_async(batch, None)
                    .await
                    .expect("emit a batch");
                k += 4;
            } else {
                writer
                    .emit_async(name(k), json!({ "i": k }))
                    .await
                    .expect("emit");
                k += 1;
            }
        }
    });
    // Event k (0-based, in append order) has seq k + 1.
    let want: Vec<u64> = (0..150u64).filter(|k| k % 3 != 0).map(|k| k + 1).collect();
    let mut got = Vec::with_capacity(want.len());
    while got.len() < want.len() {
        let e = next_bus_event(&mut s).await;
        assert!(e.name.starts_with("ovf.in."), "only matching events");
        got.push(e.seq);
    }
    task.await.expect("writer");
    assert_eq!(got, want, "every matching seq once, in order");
    let last = bus
        .emit_async("ovf.in.last", json!(null))
        .await
        .expect("emit");
    assert_eq!(next_bus_event(&mut s).await.seq, last.seq, "then live");
    assert_eq!(last.seq, 151);
}
