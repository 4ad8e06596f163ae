//! Retention: `prune`, and the task running it every prune interval.
//!
//! # Contract
//!
//! * Records are removed whole, from the front only, with a purge below a
//!   stream seq: by count (the records wholly older than the newest
//!   `max_count` events; reads hide the rest, see `read.rs`) and by age
//!   (the records committed before the cutoff).
//! * The seq tail survives: when every event goes, an empty tail marker
//!   record is appended first (guarded like an append) and the purge stops
//!   below it, so seqs are never reused.
//! * A stream that changes under it (records pruned or appended by another
//!   process) makes it start over, at most ten times, then `Unavailable`.
//! * It returns the number of events removed; the cache drops the purged
//!   records.

use std::sync::Arc;
use std::time::Duration;

use tracing::debug;

use super::writer::PublishFail;
use super::{micros, now_micros, Inner};
use crate::error::EngineError;
use crate::record::encode;

impl Inner {
    pub(super) async fn prune(&self) -> Result<u64, EngineError> {
        for _ in 0..10 {
            let ss = self.stream_state().await?;
            if ss.is_empty() {
                return Ok(0);
            }
            let Some(first_rec) = self.get_record(ss.first).await? else {
                continue;
            };
            let tail = self.tail_from(ss).await?;
            let old_first = first_rec.first;
            // Purge every record below stream seq `cut`.
            let mut cut = ss.first;
            let mut everything = false;
            let r = &self.opts.log.retention;
            if let Some(max) = r.max_count {
                let keep_from = tail.last.saturating_sub(max) + 1;
                if keep_from > old_first {
                    match self
                        .search(ss.first, ss.last, |r| r.last() >= keep_from)
                        .await?
                    {
                        Some(rec) => cut = cut.max(rec.stream_seq),
                        None => everything = true,
                    }
                }
            }
            if let Some(age) = r.max_age {
                let cutoff = now_micros() - micros(age);
                match self.search(ss.first, ss.last, |r| r.at >= cutoff).await? {
                    Some(rec) => cut = cut.max(rec.stream_seq),
                    None => everything = true,
                }
            }
            let mut new_first = None;
            if everything {
                // Every event goes: first append a tail marker so the seq
                // tail survives, then purge below it.
                let marker =
                    encode(tail.last + 1, now_micros(), &[]).map_err(EngineError::Storage)?;
                match self.publish(marker, ss.last).await {
                    Ok(ack) => {
                        cut = ack.sequence;
                        new_first = Some(tail.last + 1);
                    }
                    Err(PublishFail::Lost) => continue,
                    Err(PublishFail::TooLarge(m)) => return Err(EngineError::Storage(m)),
                    Err(PublishFail::Other(e)) => return Err(e),
                }
            }
            if cut <= ss.first {
                return Ok(0);
            }
            let new_first = match new_first {
                Some(f) => f,
                None => match self.get_record(cut).await? {
                    Some(r) => r.first,
                    None => continue,
                },
            };
            self.bounded("purge", async { self.stream.purge().sequence(cut).await })
                .await?;
            {
                let mut st = self.state.lock();
                while st.cache.front().is_some_and(|r| r.stream_seq < cut) {
                    if let Some(old) = st.cache.pop_front() {
                        st.cache_events -= old.events.len();
                    }
                }
            }
            let removed = new_first.saturating_sub(old_first);
            debug!(stream = %self.stream_name, removed, cut, "pruned");
            return Ok(removed);
        }
        Err(EngineError::Unavailable(
            "the stream kept changing under prune()".into(),
        ))
    }
}

pub(super) async fn pruner_loop(inner: Arc<Inner>, every: Duration) {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        match inner.prune().await {
            Ok(0) => {}
            Ok(n) => debug!(stream = %inner.stream_name, removed = n, "age retention"),
            Err(e) => debug!(stream = %inner.stream_name, error = %e, "age retention failed"),
        }
    }
}
