//! Reads: `read`, `bounds`, `seq_before`, and the lookups the other parts
//! share (the stream's state, one record by stream seq, the tail, a binary
//! search over the stream).
//!
//! # Contract
//!
//! * A record is found in the follower's cache first, else with a direct
//!   get; a record that is not there (pruned) is `None`, never an error.
//! * `read` first waits until the follower has applied the stream's newest
//!   record, so a page never misses an event committed before the read
//!   started, and its `last_seq` is what the follower applied (consistent
//!   with the events returned).
//! * Count retention is exact: `read` and `bounds` hide the events older
//!   than the newest `max_count` (by this instance's options), which a
//!   record straddling the limit still holds until `prune` removes it whole.
//! * `search` assumes its predicate is false then true along the stream
//!   (true for a bound on seqs; for commit times, which the writers' clocks
//!   stamp, as long as those clocks agree); records pruned during the search
//!   count as false.
//! * Every request is bounded by `request_timeout` (`Unavailable` after).

use std::collections::VecDeque;
use std::sync::Arc;

use async_nats::jetstream::stream;
use chrono::{DateTime, Utc};
use tidings_core::log::{Bounds, Page};
use tidings_core::SharedEvent;

use super::state::{StreamState, Tail};
use super::Inner;
use crate::error::EngineError;
use crate::record::Record;

impl Inner {
    pub(super) async fn stream_state(&self) -> Result<StreamState, EngineError> {
        let info = self.bounded("stream info", self.stream.get_info()).await?;
        Ok(StreamState {
            first: info.state.first_sequence,
            last: info.state.last_sequence,
            messages: info.state.messages,
        })
    }

    /// The record at a stream seq; `None` if it is not there (pruned).
    pub(super) async fn get_record(&self, seq: u64) -> Result<Option<Arc<Record>>, EngineError> {
        if seq == 0 {
            return Ok(None);
        }
        if let Some(r) = self.cached(seq) {
            return Ok(Some(r));
        }
        let res =
            tokio::time::timeout(self.opts.request_timeout, self.stream.direct_get(seq)).await;
        match res {
            Err(_) => Err(EngineError::Unavailable(format!(
                "direct get: no answer from NATS within {:?}",
                self.opts.request_timeout
            ))),
            Ok(Err(e)) if e.kind() == stream::DirectGetErrorKind::NotFound => Ok(None),
            Ok(Err(e)) => Err(self.engine_err("direct get", e)),
            Ok(Ok(m)) => Record::decode(seq, &m.payload)
                .map(Some)
                .map_err(EngineError::Storage),
        }
    }

    fn cached(&self, seq: u64) -> Option<Arc<Record>> {
        let st = self.state.lock();
        let front = st.cache.front()?.stream_seq;
        if seq < front {
            return None;
        }
        let r = st.cache.get((seq - front) as usize)?;
        (r.stream_seq == seq).then(|| r.clone())
    }

    /// The first record in stream seqs `[lo, hi]` satisfying `pred`, which
    /// must be false then true along the stream. Missing records (pruned
    /// meanwhile) count as false.
    pub(super) async fn search(
        &self,
        mut lo: u64,
        mut hi: u64,
        pred: impl Fn(&Record) -> bool,
    ) -> Result<Option<Arc<Record>>, EngineError> {
        let mut found = None;
        while lo <= hi && lo > 0 {
            let mid = lo + (hi - lo) / 2;
            match self.get_record(mid).await? {
                Some(r) if pred(&r) => {
                    found = Some(r);
                    if mid == lo {
                        break;
                    }
                    hi = mid - 1;
                }
                _ => lo = mid + 1,
            }
        }
        Ok(found)
    }

    /// The tail of a stream in the given state.
    pub(super) async fn tail_from(&self, st: StreamState) -> Result<Tail, EngineError> {
        if st.last == 0 {
            return Ok(Tail::default());
        }
        match self.get_record(st.last).await? {
            Some(r) => Ok(Tail {
                stream_seq: st.last,
                last: r.last(),
            }),
            None => Err(EngineError::Storage(format!(
                "the stream's newest record (stream seq {}) is gone, so the seq tail is \
                 unknown: was the stream purged outside Tidings?",
                st.last
            ))),
        }
    }

    /// Reads the tail from the server and records it.
    pub(super) async fn fetch_tail(&self) -> Result<Tail, EngineError> {
        let st = self.stream_state().await?;
        let t = self.tail_from(st).await?;
        self.state.lock().raise_tail(t);
        Ok(t)
    }

    /// The first seq count retention keeps when `last` is the last seq:
    /// reads and bounds hide the older events of a record straddling it.
    fn kept_from(&self, last: u64) -> u64 {
        self.opts
            .log
            .retention
            .max_count
            .map_or(1, |max| last.saturating_sub(max) + 1)
    }

    pub(super) async fn read(&self, after: u64, limit: usize) -> Result<Page, EngineError> {
        let ss = self.stream_state().await?;
        self.wait_seen(ss.last).await?;
        let applied = self.state.lock().applied_last;
        let after = after.max(self.kept_from(applied) - 1);
        let want = after.saturating_add(1);
        {
            let st = self.state.lock();
            if limit == 0 || ss.is_empty() {
                return Ok(Page {
                    events: Vec::new(),
                    last_seq: st.applied_last.max(st.tail.last.min(st.applied_last)),
                });
            }
            if let Some(front) = st.cache.front() {
                if front.stream_seq <= ss.first || front.first <= want {
                    let events = from_cache(&st.cache, ss.first, after, limit);
                    return Ok(Page {
                        events,
                        last_seq: st.applied_last,
                    });
                }
            }
        }
        // Older than the cache: find the record holding `after + 1` and
        // read forward with direct gets until the cache takes over.
        let mut events = Vec::new();
        let start = self.search(ss.first, ss.last, |r| r.last() >= want).await?;
        if let Some(start) = start {
            let mut s = start.stream_seq;
            while s <= ss.last && events.len() < limit {
                let cache_front = self.state.lock().cache.front().map(|r| r.stream_seq);
                if cache_front.is_some_and(|f| f <= s) {
                    let st = self.state.lock();
                    let after_now = events.last().map_or(after, |e: &SharedEvent| e.seq);
                    events.extend(from_cache(&st.cache, s, after_now, limit - events.len()));
                    break;
                }
                if let Some(r) = self.get_record(s).await? {
                    for e in &r.events {
                        if e.seq > after && events.len() < limit {
                            events.push(e.clone());
                        }
                    }
                }
                s += 1;
            }
        }
        let last_seq = self.state.lock().applied_last;
        Ok(Page { events, last_seq })
    }

    pub(super) async fn bounds(&self) -> Result<Bounds, EngineError> {
        for _ in 0..5 {
            let ss = self.stream_state().await?;
            let tail = self.tail_from(ss).await?;
            if ss.is_empty() {
                return Ok(Bounds {
                    first: tail.last + 1,
                    last: tail.last,
                });
            }
            if let Some(r) = self.get_record(ss.first).await? {
                return Ok(Bounds {
                    first: r.first.max(self.kept_from(tail.last)),
                    last: tail.last,
                });
            }
            // The first record was pruned meanwhile: look again.
        }
        Err(EngineError::Unavailable(
            "the stream kept changing under bounds()".into(),
        ))
    }

    pub(super) async fn seq_before(&self, time: DateTime<Utc>) -> Result<u64, EngineError> {
        let ss = self.stream_state().await?;
        let tail = self.tail_from(ss).await?;
        if ss.is_empty() {
            return Ok(tail.last);
        }
        let t = time.timestamp_micros();
        let found = self
            .search(ss.first, ss.last, |r| r.max_time_micros() >= t)
            .await?;
        let kept = self.kept_from(tail.last);
        Ok(match found {
            None => tail.last,
            Some(r) => match r.events.iter().find(|e| e.time >= time) {
                Some(e) => e.seq.max(kept) - 1,
                None => r.first.max(kept) - 1,
            },
        })
    }
}

/// Events with seq > `after` from cached records at or after stream seq
/// `from_stream_seq`, at most `limit`.
fn from_cache(
    cache: &VecDeque<Arc<Record>>,
    from_stream_seq: u64,
    after: u64,
    limit: usize,
) -> Vec<SharedEvent> {
    let start = cache.partition_point(|r| r.last() <= after || r.stream_seq < from_stream_seq);
    cache
        .range(start..)
        .flat_map(|r| r.events.iter())
        .filter(|e| e.seq > after)
        .take(limit)
        .cloned()
        .collect()
}
