//! The writer: how this process appends records to the stream.
//!
//! # Contract
//!
//! * Appends are written through core's [`GroupCommit`] with one write at a
//!   time: an append that finds no write running is written by its caller;
//!   those that arrive meanwhile are queued and written together, several
//!   requests per record (up to `max_record_events` events), so this
//!   process never races itself.
//! * Every record is published with `Nats-Expected-Last-Sequence` set to the
//!   tail it was planned against, or, into a stream still empty (where the
//!   server checks no expected sequence), with `Nats-Msg-Id: tidings-<first
//!   seq>`: a record planned against a stale tail is refused, never written
//!   with reused or skipped seqs. After losing such a race the writer
//!   re-reads the tail and plans again.
//! * Idempotency keys are checked against every record up to the tail the
//!   publish is guarded by (the writer waits for the follower to get
//!   there), and against the earlier events of the same record.
//! * An `expected_last` conflict is only reported against a tail read from
//!   the server just now.
//! * Every request is answered exactly once: committed, refused, or failed
//!   (`Unavailable` once past its deadline or while disconnected).
//! * A record is published with the guard header only (its body says which
//!   Tidings seqs it holds), and registered in `State::own`, with its exact
//!   payload, before the publish: the follower then applies it without
//!   decoding, whichever of the ack and its copy of the message comes
//!   first.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream;
use async_nats::{header, HeaderMap};
use bytes::Bytes;
use tidings_core::log::{AppendError, BoxFuture, Committed, GroupCommit, GroupWriter};
use tidings_core::{NewEvent, SharedEvent};
use tokio::sync::oneshot;
use tokio::time::Instant;
use tracing::{debug, warn};

use super::state::{Own, Tail};
use super::{now_micros, Inner};
use crate::error::EngineError;
use crate::record::{encode, Record};
use crate::stats::Counters;

/// One `append` call waiting for the writer.
pub(super) struct Request {
    pub(super) batch: Vec<NewEvent>,
    pub(super) expected: Option<u64>,
    pub(super) deadline: Instant,
    pub(super) reply: oneshot::Sender<Result<Vec<Committed>, AppendError>>,
}

impl Inner {
    /// Publishes the record `payload` guarded by the expected last stream
    /// seq.
    pub(super) async fn publish(
        &self,
        payload: Bytes,
        expected_stream_seq: u64,
    ) -> Result<jetstream::publish::PublishAck, PublishFail> {
        // Only the guard: the record's body already says which Tidings
        // seqs it holds, and every header costs the client a hashed map
        // entry and allocations per publish.
        // Into an empty stream too: the server checks an expected last
        // sequence of 0 (nats-server 2.9 refuses it once the stream holds
        // a message). A message id would guard only for the server's
        // duplicate window, after which a handle still at the empty tail
        // could publish seq `first` a second time.
        let mut headers = HeaderMap::new();
        headers.insert(
            header::NATS_EXPECTED_LAST_SEQUENCE,
            expected_stream_seq.to_string(),
        );
        let timeout = self.opts.request_timeout;
        let classify = |e: jetstream::context::PublishError| {
            use jetstream::context::PublishErrorKind as K;
            match e.kind() {
                K::WrongLastSequence => PublishFail::Lost,
                K::MaxPayloadExceeded => PublishFail::TooLarge(e.to_string()),
                K::TimedOut | K::BrokenPipe => PublishFail::Other(EngineError::Unavailable(
                    format!("publish to NATS failed: {e}"),
                )),
                _ => PublishFail::Other(self.engine_err("publish", e)),
            }
        };
        // One timer bounds both the send and the acknowledgement.
        let published = async {
            let ack = self
                .js
                .publish_with_headers(self.subject.clone(), headers, payload)
                .await?;
            ack.await
        };
        match tokio::time::timeout(timeout, published).await {
            Err(_) => Err(PublishFail::timed_out(timeout)),
            Ok(Err(e)) => Err(classify(e)),
            Ok(Ok(ack)) if ack.duplicate => Err(PublishFail::Lost),
            Ok(Ok(ack)) => Ok(ack),
        }
    }

    /// Plans one record for the requests against `tail`: per request its
    /// result, and the new events (consecutive seqs from `tail.last + 1`).
    fn plan(
        &self,
        reqs: &[Request],
        tail: Tail,
    ) -> (Vec<Result<Vec<Committed>, AppendError>>, Vec<SharedEvent>) {
        let mut st = self.state.lock();
        let now = now_micros();
        st.keys.expire(now);
        let mut running = tail.last;
        let mut local: HashMap<&str, SharedEvent> = HashMap::new();
        let mut new_events = Vec::new();
        let mut results = Vec::with_capacity(reqs.len());
        for req in reqs {
            if let Some(expected) = req.expected {
                if expected != running {
                    results.push(Err(AppendError::Conflict {
                        expected,
                        actual: running,
                    }));
                    continue;
                }
            }
            let mut out = Vec::with_capacity(req.batch.len());
            for ev in &req.batch {
                if let Some(k) = ev.key.as_deref() {
                    if let Some(orig) = st.keys.get(k) {
                        out.push(Committed {
                            event: orig.clone(),
                            duplicate: true,
                        });
                        continue;
                    }
                    if let Some(orig) = local.get(k) {
                        out.push(Committed {
                            event: orig.clone(),
                            duplicate: true,
                        });
                        continue;
                    }
                }
                running += 1;
                let committed: SharedEvent = Arc::new(ev.clone().commit(running));
                if let Some(k) = ev.key.as_deref() {
                    local.insert(k, committed.clone());
                }
                new_events.push(committed.clone());
                out.push(Committed {
                    event: committed,
                    duplicate: false,
                });
            }
            results.push(Ok(out));
        }
        (results, new_events)
    }

    /// Writes the requests as one record (retrying after losing a race),
    /// and answers every one of them.
    async fn write(&self, mut reqs: Vec<Request>) {
        let mut tail = self.state.lock().tail;
        let mut fresh = false;
        loop {
            let now = Instant::now();
            let (late, keep): (Vec<_>, Vec<_>) = reqs.into_iter().partition(|r| r.deadline <= now);
            reqs = keep;
            if !late.is_empty() {
                self.fail_all(
                    late,
                    EngineError::Unavailable(format!(
                        "the append did not complete within {:?}",
                        self.opts.append_timeout
                    )),
                );
            }
            if reqs.is_empty() {
                return;
            }
            if self.client.connection_state() != async_nats::connection::State::Connected {
                return self.fail_all(
                    reqs,
                    EngineError::Unavailable("not connected to the NATS server".into()),
                );
            }
            let has_keys = reqs.iter().any(|r| r.batch.iter().any(|e| e.key.is_some()));
            if has_keys {
                // Keys are checked against every record up to the one the
                // publish will be guarded by.
                if let Err(e) = self.wait_seen(tail.stream_seq).await {
                    return self.fail_all(reqs, e);
                }
            }
            let (results, new_events) = self.plan(&reqs, tail);
            let conflicted = results
                .iter()
                .any(|r| matches!(r, Err(AppendError::Conflict { .. })));
            if conflicted && !fresh {
                // Only refuse against a tail read from the server just now.
                match self.fetch_tail().await {
                    Ok(t) => {
                        tail = t;
                        fresh = true;
                        continue;
                    }
                    Err(e) => return self.fail_all(reqs, e),
                }
            }
            if new_events.is_empty() {
                return self.answer(reqs, results);
            }
            let first = tail.last + 1;
            let at = now_micros();
            let payload = match encode(first, at, &new_events) {
                Ok(p) => p,
                Err(e) => {
                    warn!(stream = %self.stream_name, error = %e, "append failed");
                    return self.fail_all(reqs, EngineError::Storage(e));
                }
            };
            // Registered before the publish: the follower's copy of the
            // message often arrives before the ack (see `State::own`).
            let expected_at = tail.stream_seq + 1;
            let record = Arc::new(Record {
                stream_seq: expected_at,
                first,
                at,
                events: new_events,
            });
            {
                let mut st = self.state.lock();
                // Not if the follower is already past that stream seq: the
                // record cannot land there.
                if expected_at > st.applied_stream_seq {
                    st.own.insert(
                        expected_at,
                        Own {
                            record: record.clone(),
                            payload: payload.clone(),
                        },
                    );
                }
            }
            let published = self.publish(payload, tail.stream_seq).await;
            if published.is_err() {
                self.state.lock().forget_own(expected_at, &record);
            }
            match published {
                Ok(ack) => {
                    let new_tail = Tail {
                        stream_seq: ack.sequence,
                        last: record.last(),
                    };
                    {
                        let mut st = self.state.lock();
                        st.raise_tail(new_tail);
                        // Timed by the record's own append time, as every
                        // other process times it, so the key leaves the
                        // window at the same moment everywhere.
                        st.keys
                            .remember_all(&record.events, record.at, now_micros());
                        if ack.sequence != expected_at {
                            // The guard makes this the seq after the one
                            // expected; should the server ever place it
                            // elsewhere, the follower decodes it.
                            st.forget_own(expected_at, &record);
                        }
                    }
                    self.raise_watch(new_tail.last);
                    return self.answer(reqs, results);
                }
                Err(PublishFail::Lost) => {
                    // Another writer appended first: re-read and re-plan.
                    debug!(stream = %self.stream_name, "lost an append race; retrying");
                    Counters::bump(&self.counters.lost_races);
                    match self.fetch_tail().await {
                        Ok(t) => {
                            tail = t;
                            fresh = true;
                        }
                        Err(e) => return self.fail_all(reqs, e),
                    }
                }
                Err(PublishFail::TooLarge(msg)) => {
                    if reqs.len() > 1 {
                        // Group commit made it too big: one record each.
                        for r in reqs {
                            Box::pin(self.write(vec![r])).await;
                        }
                        return;
                    }
                    return self.fail_all(
                        reqs,
                        EngineError::Storage(format!("the batch is too large for NATS: {msg}")),
                    );
                }
                Err(PublishFail::Other(e)) => {
                    warn!(stream = %self.stream_name, error = %e, "append failed");
                    return self.fail_all(reqs, e);
                }
            }
        }
    }
}

pub(super) enum PublishFail {
    /// Another record got there first (wrong last sequence, or the
    /// first-seq message id was taken).
    Lost,
    /// Over the server's max payload.
    TooLarge(String),
    Other(EngineError),
}

impl PublishFail {
    fn timed_out(d: Duration) -> PublishFail {
        PublishFail::Other(EngineError::Unavailable(format!(
            "no answer to a publish from NATS within {d:?}"
        )))
    }
}

impl Inner {
    /// Fails every request with `e` (counted, if its caller still waits).
    fn fail_all(&self, reqs: Vec<Request>, e: EngineError) {
        let told = reqs
            .into_iter()
            .filter_map(|r| r.reply.send(Err(e.clone().into())).ok())
            .count();
        self.counters.appends.failed(told);
    }

    /// Answers each request with its result (counted).
    fn answer(&self, reqs: Vec<Request>, results: Vec<Result<Vec<Committed>, AppendError>>) {
        self.counters.appends.answered(&results);
        for (r, res) in reqs.into_iter().zip(results) {
            let _ = r.reply.send(res);
        }
    }
}

impl GroupWriter for Inner {
    type Request = Request;

    fn group_commit(&self) -> &GroupCommit<Inner> {
        &self.group
    }

    fn units(r: &Request) -> usize {
        r.batch.len()
    }

    fn write_group(self: Arc<Self>, group: Vec<Request>) -> BoxFuture<()> {
        Box::pin(async move { self.write(group).await })
    }
}
