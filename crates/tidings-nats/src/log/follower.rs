//! The follower: the task that reads every record of the stream, this
//! process's and the others', in stream order, and applies it.
//!
//! # Contract
//!
//! * Records are applied once each, in stream seq order, from the stream
//!   seq given at open; `seen_tx` then holds the stream seq applied, so
//!   `wait_seen(s)` returns once every record up to `s` is reflected in the
//!   tail, the cache and the idempotency keys.
//! * A message that is not a Tidings record is skipped (and counted as
//!   seen). A record this process published is applied from the writer's
//!   copy (`State::own`), not decoded again, when the message's payload is
//!   the very one published.
//! * `watch` only rises, to the last seq of each record applied.
//! * The consumer is recreated, from the next stream seq, when it ends,
//!   after a reconnect, and when a `wait_seen` timed out (it looked stuck);
//!   creating it is retried with backoff (100 ms doubling to 2 s).

use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::consumer;
use futures_util::StreamExt;
use tracing::{debug, info, warn};

use super::state::Tail;
use super::{now_micros, Inner};
use crate::error::EngineError;
use crate::record::Record;
use crate::stats::Counters;

impl Inner {
    pub(super) async fn wait_seen(&self, stream_seq: u64) -> Result<(), EngineError> {
        let mut rx = self.seen_tx.subscribe();
        let res = tokio::time::timeout(self.opts.request_timeout, async {
            rx.wait_for(|s| *s >= stream_seq).await.map(|_| ())
        })
        .await;
        match res {
            Ok(Ok(())) => Ok(()),
            Ok(Err(_)) => Err(EngineError::Unavailable("the follower stopped".into())),
            Err(_) => {
                self.restart_follower.notify_one();
                Err(EngineError::Unavailable(format!(
                    "the stream follower did not reach stream seq {stream_seq} within {:?}",
                    self.opts.request_timeout
                )))
            }
        }
    }

    pub(super) fn raise_watch(&self, last: u64) {
        self.watch_tx.send_if_modified(|v| {
            if last > *v {
                *v = last;
                true
            } else {
                false
            }
        });
    }

    /// The follower applies one record (every record, in stream order).
    pub(super) fn apply(&self, rec: Arc<Record>) {
        let seq = rec.stream_seq;
        let last = rec.last();
        {
            let mut st = self.state.lock();
            st.keys.remember_all(&rec.events, rec.at, now_micros());
            st.raise_tail(Tail {
                stream_seq: seq,
                last,
            });
            st.applied_last = st.applied_last.max(last);
            st.applied_stream_seq = st.applied_stream_seq.max(seq);
            // Own records the follower passed (it decoded them first).
            while st.own.first_key_value().is_some_and(|(&k, _)| k <= seq) {
                st.own.pop_first();
            }
            if st.cache.back().is_some_and(|b| b.stream_seq + 1 != seq) {
                // A hole (records pruned before we read them): restart the
                // cache so it stays contiguous.
                st.cache.clear();
                st.cache_events = 0;
            }
            st.cache_events += rec.events.len();
            st.cache.push_back(rec);
            while st.cache_events > self.opts.cache_events && st.cache.len() > 1 {
                if let Some(old) = st.cache.pop_front() {
                    st.cache_events -= old.events.len();
                }
            }
        }
        self.raise_watch(last);
        self.seen_tx.send_replace(seq);
    }
}

pub(super) async fn follower_loop(inner: Arc<Inner>, mut next: u64) {
    let mut backoff = Duration::from_millis(100);
    let mut started = false;
    loop {
        if started {
            Counters::bump(&inner.counters.follower_restarts);
        }
        started = true;
        let config = consumer::pull::OrderedConfig {
            deliver_policy: consumer::DeliverPolicy::ByStartSequence {
                start_sequence: next.max(1),
            },
            ..Default::default()
        };
        let messages = match inner.stream.create_consumer(config).await {
            Ok(c) => c.messages().await.map_err(|e| e.to_string()),
            Err(e) => Err(e.to_string()),
        };
        let mut messages = match messages {
            Ok(m) => m,
            Err(e) => {
                debug!(stream = %inner.stream_name, error = %e, "follower: cannot start a consumer; retrying");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(2));
                continue;
            }
        };
        backoff = Duration::from_millis(100);
        // The ordered consumer only notices a lost consumer after missing
        // two heartbeats; restart it at once after a reconnect instead.
        let mut was_connected = true;
        let mut check = tokio::time::interval(Duration::from_millis(200));
        loop {
            let item = tokio::select! {
                item = messages.next() => item,
                _ = inner.restart_follower.notified() => {
                    debug!(stream = %inner.stream_name, next, "follower: restart requested");
                    break;
                }
                _ = check.tick() => {
                    let connected = inner.client.connection_state()
                        == async_nats::connection::State::Connected;
                    let reconnected = connected && !was_connected;
                    was_connected = connected;
                    if reconnected {
                        info!(stream = %inner.stream_name, next, "follower: reconnected; resuming");
                        break;
                    }
                    continue;
                }
            };
            let Some(item) = item else { break };
            let msg = match item {
                Ok(m) => m,
                Err(e) => {
                    debug!(stream = %inner.stream_name, error = %e, "follower: consumer error");
                    continue;
                }
            };
            let seq = match msg.info() {
                Ok(i) => i.stream_sequence,
                Err(e) => {
                    warn!(stream = %inner.stream_name, error = %e, "follower: message without metadata");
                    continue;
                }
            };
            if seq < next {
                continue;
            }
            let own = inner.state.lock().take_own(seq, &msg.payload);
            if let Some(rec) = own {
                inner.apply(rec);
                next = seq + 1;
                continue;
            }
            match Record::decode(seq, &msg.payload) {
                Ok(rec) => inner.apply(rec),
                Err(e) => {
                    warn!(stream = %inner.stream_name, error = %e, "follower: skipping a message that is not a Tidings record");
                    Counters::bump(&inner.counters.messages_skipped);
                    inner.seen_tx.send_replace(seq);
                }
            }
            next = seq + 1;
        }
        debug!(stream = %inner.stream_name, next, "follower: consumer ended; restarting");
    }
}
