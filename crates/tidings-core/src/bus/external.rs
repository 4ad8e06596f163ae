//! The external-appends task: how a bus over a shared log dispatches what
//! other processes append.
//!
//! # Contract
//!
//! * Events other processes append to a shared log are dispatched by this
//!   bus too, in the same one order as its own: the task hands the
//!   missing seqs to the dispatcher, which drops the ones a local emitter
//!   handed in already (no duplicate) and runs them strictly by seq.
//! * Events pruned from the log before this bus dispatched them are
//!   skipped with a warning (the dispatcher moves past them), never waited
//!   for forever.
//! * Each seq is read and handed in once: while another thread dispatches
//!   (its batch queued behind), the task waits for the log to move, never
//!   reads in a loop. Pruned seqs are skipped once, too.
//! * It reads at most [`READ_AHEAD`] events past what was dispatched:
//!   when dispatch falls behind, it waits for it rather than queueing
//!   the log in memory.
//! * A read error is logged and retried; the task never gives up while
//!   the bus lives.
//! * The task holds the bus weakly: it ends when the bus is dropped or the
//!   log closes its watch channel.

use std::sync::Weak;
use std::time::Duration;

use super::Inner;

/// How far past what was dispatched the task reads and queues (events):
/// when dispatch falls further behind, it waits instead of holding more
/// of the log in memory.
const READ_AHEAD: u64 = 4_096;

/// Dispatches events other processes appended to a shared log: whenever the
/// log is ahead of the dispatcher, reads the missing seqs and hands them in
/// (the dispatcher drops the ones a local emitter handed in already). Ends
/// when the bus is dropped or the log closes.
pub(super) async fn dispatch_external(
    bus: Weak<Inner>,
    mut watch: tokio::sync::watch::Receiver<u64>,
) {
    // Every seq below it was handed to the dispatcher (or skipped) by this
    // task; the dispatcher may not have reached them yet.
    let mut handed = 0;
    loop {
        let Some(inner) = bus.upgrade() else { return };
        let done = inner.dispatcher.done();
        if handed > done + READ_AHEAD {
            // Bounded, so the task holds the bus only briefly and ends
            // soon after the bus is dropped.
            let behind = inner.dispatcher.wait_done_async(handed - READ_AHEAD);
            let _ = tokio::time::timeout(Duration::from_millis(100), behind).await;
            continue;
        }
        let next = done.max(handed);
        let last = *watch.borrow_and_update();
        if last >= next {
            match inner.log.read(next - 1, 512).await {
                Ok(page) => {
                    if let Some(first) = page.events.first() {
                        if first.seq > next {
                            tracing::warn!(
                                from = next,
                                to = first.seq - 1,
                                "shared log pruned events before this bus dispatched them"
                            );
                            inner.skip_to(first.seq);
                        }
                        inner.submit(&page.events, 0);
                        handed = page.events.last().map_or(handed, |e| e.seq + 1);
                    } else if page.last_seq >= next {
                        inner.skip_to(page.last_seq + 1);
                        handed = page.last_seq + 1;
                    } else {
                        drop(inner);
                        tokio::time::sleep(Duration::from_millis(5)).await;
                    }
                }
                Err(e) => {
                    tracing::warn!(%e, "cannot read the shared log; retrying");
                    drop(inner);
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            }
            continue;
        }
        drop(inner);
        if watch.changed().await.is_err() {
            return;
        }
    }
}
