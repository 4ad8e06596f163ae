//! Losing the engine while appending: the check every engine backend (NATS,
//! Redis) runs against an engine process of its own, which the check kills
//! and starts again. It is not part of [`conformance_tests!`](crate::conformance_tests):
//! it needs a process it may kill, never the machine's shared engine.
//!
//! # Contract checked
//!
//! * While the engine is down, an append answers `Unavailable` within the
//!   backend's bound: it neither hangs nor succeeds (at most the one append
//!   in flight at the kill may still be acknowledged).
//! * Once the engine is back on the same storage, appends succeed again
//!   without reopening the log.
//! * Nothing acknowledged is lost: every acknowledged seq holds the event
//!   that was acknowledged, and the log is gap-free.
//! * A stream reading the log from the beginning through the whole outage
//!   (its reads fail while the engine is down and are retried) delivers
//!   every event once, in order, and the log's watch reaches the last seq.

use super::*;
use crate::log::{AppendError, LogFailure};
use crate::{stream_from, Delivery, Position};

/// An engine process the outage check kills and starts again: same port,
/// same storage.
pub trait EngineProcess: Send {
    /// Kills the process at once (SIGKILL: no shutdown, no final save).
    fn kill(&mut self) -> impl Future<Output = ()> + Send;
    /// Starts the process again on the same port and storage; returns once
    /// it answers.
    fn restart(&mut self) -> impl Future<Output = ()> + Send;
}

/// What the appender saw.
#[derive(Default)]
struct Tally {
    /// (seq, id) of every acknowledged event, in ack order.
    acked: Mutex<Vec<(u64, uuid::Uuid)>>,
    unavailable: std::sync::atomic::AtomicU64,
    /// The longest an append took to answer.
    slowest: Mutex<Duration>,
    /// When the append now waiting for its answer started.
    in_flight_since: Mutex<Option<std::time::Instant>>,
    /// An answer other than success or `Unavailable`: the check fails.
    wrong: Mutex<Option<String>>,
}

impl Tally {
    fn acked(&self) -> usize {
        self.acked.lock().len()
    }
    fn unavailable(&self) -> u64 {
        self.unavailable.load(std::sync::atomic::Ordering::Relaxed)
    }
    /// The longest wait for an answer so far, the one still waiting
    /// included (an append that hangs shows here before it returns).
    fn slowest(&self) -> Duration {
        let waiting = self.in_flight_since.lock().map(|t| t.elapsed());
        (*self.slowest.lock()).max(waiting.unwrap_or_default())
    }
}

/// Waits up to `secs` for `cond`, failing at once if the appender got a
/// wrong answer or stopped.
async fn wait_until(
    tally: &Tally,
    appender: &tokio::task::JoinHandle<()>,
    what: &str,
    secs: u64,
    cond: impl Fn() -> bool,
) {
    let deadline = std::time::Instant::now() + Duration::from_secs(secs);
    while !cond() {
        if let Some(wrong) = tally.wrong.lock().clone() {
            panic!("while waiting for {what}: {wrong}");
        }
        assert!(
            !appender.is_finished(),
            "while waiting for {what}: the appender stopped (it panicked)"
        );
        assert!(
            std::time::Instant::now() < deadline,
            "timed out after {secs} s waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Appends one event at a time to `log` while `engine` is killed and
/// started again, and checks the contract at the top of this module.
/// `fail_within` bounds how long any append may take to answer, before,
/// during and after the outage (the backend's timeout and some slack). Needs a
/// multi-threaded tokio runtime. Returns how many appends were answered
/// `Unavailable` (so a backend's test can check its own counters).
pub async fn outage_fails_fast_and_loses_nothing<E: EngineProcess>(
    log: Arc<dyn EventLog>,
    engine: &mut E,
    fail_within: Duration,
) -> u64 {
    // A stream from the beginning, running through the whole outage.
    let seen: Arc<Mutex<Vec<(u64, uuid::Uuid)>>> = Arc::default();
    let read_errors = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let reader = {
        let (log, seen, read_errors) = (log.clone(), seen.clone(), read_errors.clone());
        tokio::spawn(async move {
            let mut s = stream_from(log, Position::Beginning);
            while let Some(item) = s.next().await {
                match item {
                    Ok(Delivery::Event(e)) => seen.lock().push((e.seq, e.id)),
                    Ok(other) => panic!("the stream was told {other:?}"),
                    Err(_) => {
                        // A read failed while the engine was down: the
                        // stream retries from the same position.
                        read_errors.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                }
            }
        })
    };

    // The appender: one event at a time, as fast as the log answers.
    let tally = Arc::new(Tally::default());
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let appender = {
        let (log, tally, stop) = (log.clone(), tally.clone(), stop.clone());
        tokio::spawn(async move {
            let mut i = 0u64;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let started = std::time::Instant::now();
                *tally.in_flight_since.lock() = Some(started);
                let r = log.append(vec![ev("outage.tick", i)], None).await;
                let took = started.elapsed();
                *tally.in_flight_since.lock() = None;
                {
                    let mut slowest = tally.slowest.lock();
                    *slowest = (*slowest).max(took);
                }
                match r {
                    Ok(c) => tally.acked.lock().push((c[0].event.seq, c[0].event.id)),
                    Err(AppendError::Failed(LogFailure::Unavailable(_))) => {
                        tally
                            .unavailable
                            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        tokio::time::sleep(Duration::from_millis(20)).await;
                    }
                    Err(other) => {
                        *tally.wrong.lock() =
                            Some(format!("append {i} answered {other:?}, not Unavailable"));
                        return;
                    }
                }
                i += 1;
            }
        })
    };

    // Appends work; kill the engine in the middle of them.
    wait_until(&tally, &appender, "200 acknowledged appends", 30, || {
        tally.acked() >= 200
    })
    .await;
    engine.kill().await;
    let acked_at_kill = tally.acked();

    // Appends now fail with Unavailable, promptly, and none succeeds.
    wait_until(&tally, &appender, "3 Unavailable answers", 20, || {
        tally.unavailable() >= 3
    })
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let acked_while_down = tally.acked() - acked_at_kill;
    assert!(
        acked_while_down <= 1,
        "{acked_while_down} appends were acknowledged by a dead engine"
    );
    let slowest = tally.slowest();
    assert!(
        slowest <= fail_within,
        "an append took {slowest:?} to answer while the engine was down (bound {fail_within:?})"
    );

    // Back on the same storage: appends succeed again.
    engine.restart().await;
    let before = tally.acked();
    wait_until(
        &tally,
        &appender,
        "100 acknowledged appends after the restart",
        30,
        || tally.acked() >= before + 100,
    )
    .await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    appender.await.expect("the appender");
    if let Some(wrong) = tally.wrong.lock().clone() {
        panic!("{wrong}");
    }
    // Every append answered within the bound, before and after the kill.
    let slowest = tally.slowest();
    assert!(
        slowest <= fail_within,
        "an append took {slowest:?} to answer (bound {fail_within:?})"
    );

    // Nothing acknowledged was lost, and the log is gap-free.
    let page = log
        .read(0, 1_000_000)
        .await
        .expect("read after the restart");
    let seqs: Vec<u64> = page.events.iter().map(|e| e.seq).collect();
    assert_eq!(
        seqs,
        (1..=page.last_seq).collect::<Vec<_>>(),
        "the log is gap-free"
    );
    let stored: std::collections::HashMap<u64, uuid::Uuid> =
        page.events.iter().map(|e| (e.seq, e.id)).collect();
    for (seq, id) in tally.acked.lock().iter() {
        assert_eq!(stored.get(seq), Some(id), "acknowledged seq {seq} is kept");
    }

    // The watch and the stream went on through the outage.
    let last = page.last_seq;
    let mut rx = log.watch();
    tokio::time::timeout(Duration::from_secs(10), rx.wait_for(|v| *v >= last))
        .await
        .expect("the watch reached the last seq")
        .expect("the watch is open");
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while seen.lock().last().map(|(s, _)| *s) != Some(last) {
        if reader.is_finished() {
            reader.await.expect("the stream's task");
            panic!("the stream ended before seq {last}");
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the stream did not reach seq {last}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    reader.abort();
    let want: Vec<(u64, uuid::Uuid)> = page.events.iter().map(|e| (e.seq, e.id)).collect();
    assert_eq!(
        *seen.lock(),
        want,
        "the stream delivered every event once, in order"
    );
    println!(
        "outage: {} acknowledged, log holds {last} (the rest were sent but unanswered), {} Unavailable, slowest append {slowest:?}, {} failed reads retried",
        tally.acked(),
        tally.unavailable(),
        read_errors.load(std::sync::atomic::Ordering::Relaxed)
    );
    tally.unavailable()
}
