//! Retention: `prune`, and the task running it every prune interval.
//!
//! # Contract
//!
//! * A hard limit, not waiting for cursors, and exact: `max_count` raises
//!   the kept floor (`K:first`) to `last - max_count + 1` and `XTRIM
//!   MINID`s the entries wholly below it (an entry straddling it stays, its
//!   older events hidden from every read); `max_age` is a script that reads
//!   the `at` fields (Redis' commit clock, one per entry, shared by its
//!   events) at the front and `XTRIM MINID`s up to the first entry young
//!   enough, in steps of at most [`PRUNE_AGE_STEP`] entries.
//! * The counter is never trimmed, so seqs are never reused.
//! * It returns the number of events no longer readable.
//! * The periodic task holds the log weakly and stops with it; a failure is
//!   logged once, then again only after a success.

use std::sync::{Arc, Weak};
use std::time::Duration;

use redis::Value;
use tokio::sync::watch;

use super::{array, bounded, Shared};
use crate::codec::{int, seq_of};
use crate::error::{OpError, StorageError};
use crate::scripts;

/// Entries one age-retention script step examines at most.
const PRUNE_AGE_STEP: usize = 10_000;

impl Shared {
    pub(super) async fn prune(self: Arc<Self>) -> Result<u64, OpError> {
        let retention = self.options.log.retention;
        let mut removed = 0u64;
        if let Some(max) = retention.max_count {
            let mut conn = self.conn.clone();
            let n: u64 = bounded(self.options.timeout, async {
                Ok(scripts::on_stream(&scripts::PRUNE_COUNT, &self.keys)
                    .arg(max)
                    .invoke_async(&mut conn)
                    .await?)
            })
            .await?;
            removed += n;
        }
        if let Some(age) = retention.max_age {
            // Exact in Lua's doubles (2^53 µs is about 285 years).
            let age_us = u64::try_from(age.as_micros())
                .unwrap_or(u64::MAX)
                .min(1 << 53);
            loop {
                let mut conn = self.conn.clone();
                let reply: Value = bounded(self.options.timeout, async {
                    Ok(scripts::on_stream(&scripts::PRUNE_AGE_STEP, &self.keys)
                        .arg(age_us)
                        .arg(PRUNE_AGE_STEP)
                        .invoke_async(&mut conn)
                        .await?)
                })
                .await?;
                let items = array(reply, "prune reply")?;
                let [n, more] = items.as_slice() else {
                    return Err(StorageError::decode("prune reply is not a pair").into());
                };
                removed += seq_of(n)?;
                if int(more)? == 0 {
                    break;
                }
            }
        }
        if removed > 0 {
            tracing::debug!(key = self.keys.stream, removed, "pruned");
        }
        Ok(removed)
    }
}

/// Applies retention every `interval` until the log is dropped.
pub(super) async fn prune_periodically(
    shared: Weak<Shared>,
    interval: Duration,
    mut stop: watch::Receiver<()>,
) {
    let mut failing = false;
    loop {
        tokio::select! {
            _ = stop.changed() => return,
            _ = tokio::time::sleep(interval) => {}
        }
        let Some(sh) = shared.upgrade() else { return };
        match sh.prune().await {
            Ok(_) => {
                if failing {
                    tracing::info!("background pruning works again");
                    failing = false;
                }
            }
            Err(e) => {
                if !failing {
                    tracing::warn!(error = ?e, "background pruning failed; will retry");
                    failing = true;
                }
            }
        }
    }
}
