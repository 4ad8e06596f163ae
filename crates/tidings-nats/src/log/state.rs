//! The in-memory view one process keeps of the stream, behind
//! `Inner::state`.
//!
//! # Contract
//!
//! * [`Tail`] only rises: `raise_tail` ignores a tail older (by stream seq)
//!   than the one held, so the follower and the writer's own acks can both
//!   report it in any order.
//! * `cache` holds records ascending and contiguous in stream seq (the
//!   follower clears it at a hole); `cache_events` is the number of events
//!   in it.
//! * `keys` holds each idempotency key once, with the event first appended
//!   with it and its record's time, for the window (core's [`KeyWindow`]).
//! * An [`Own`] record is applied in place of a message only if the
//!   message's payload is byte for byte the one this process published:
//!   a record another writer got in at that stream seq is decoded, never
//!   taken for ours.

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;

use bytes::Bytes;
use tidings_core::log::KeyWindow;

use crate::record::Record;

/// The newest record known: its stream seq and the Tidings seq it ends at.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(super) struct Tail {
    pub(super) stream_seq: u64,
    pub(super) last: u64,
}

/// The stream's state as JetStream reports it.
#[derive(Debug, Clone, Copy)]
pub(super) struct StreamState {
    pub(super) first: u64,
    pub(super) last: u64,
    pub(super) messages: u64,
}

impl StreamState {
    pub(super) fn is_empty(&self) -> bool {
        self.messages == 0 || self.first > self.last
    }
}

pub(super) struct State {
    /// Best known tail (from the follower and this process's own acks).
    pub(super) tail: Tail,
    /// Last Tidings seq applied by the follower (what the cache covers).
    pub(super) applied_last: u64,
    /// Records the follower saw, ascending and contiguous in stream seq.
    pub(super) cache: VecDeque<Arc<Record>>,
    pub(super) cache_events: usize,
    /// Idempotency keys of the window, timed in µs (record times).
    pub(super) keys: KeyWindow,
    /// Stream seq of the last record the follower applied.
    pub(super) applied_stream_seq: u64,
    /// Records this process is publishing or published and the follower
    /// has not applied yet, by the stream seq they are expected at: the
    /// follower applies them as they are instead of decoding the message
    /// ([`State::take_own`]). The writer registers a record before its
    /// publish (a publish guarded by `Nats-Expected-Last-Sequence: s` lands
    /// at `s + 1` or nowhere), since the follower's copy of the message
    /// often arrives before the publish's ack; it removes it again if the
    /// publish fails. (A write cancelled mid-publish leaves its entry: the
    /// follower drops it when it passes that stream seq, and takes it only
    /// for the very payload.) Invariant: every key is above
    /// `applied_stream_seq` (applying removes what it passed).
    pub(super) own: BTreeMap<u64, Own>,
}

/// A record of this process's, with the exact payload it was published
/// with.
pub(super) struct Own {
    pub(super) record: Arc<Record>,
    pub(super) payload: Bytes,
}

impl State {
    pub(super) fn raise_tail(&mut self, t: Tail) {
        if t.stream_seq >= self.tail.stream_seq {
            self.tail = t;
        }
    }

    /// The record this process published as the message at `stream_seq`
    /// whose payload is `payload`, if it is ours: the entry registered for
    /// that stream seq is removed either way (the follower is past it).
    pub(super) fn take_own(&mut self, stream_seq: u64, payload: &[u8]) -> Option<Arc<Record>> {
        self.own
            .remove(&stream_seq)
            .filter(|own| own.payload == payload)
            .map(|own| own.record)
    }

    /// Forgets `record`, registered at `stream_seq` before a publish that
    /// failed, unless the follower already took it (the message was
    /// stored after all) or another record replaced it.
    pub(super) fn forget_own(&mut self, stream_seq: u64, record: &Arc<Record>) {
        if self
            .own
            .get(&stream_seq)
            .is_some_and(|own| Arc::ptr_eq(&own.record, record))
        {
            self.own.remove(&stream_seq);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::encode;
    use serde_json::json;
    use tidings_core::NewEvent;

    fn state() -> State {
        State {
            tail: Tail::default(),
            applied_last: 0,
            cache: VecDeque::new(),
            cache_events: 0,
            keys: KeyWindow::new(std::time::Duration::from_secs(1)),
            applied_stream_seq: 0,
            own: BTreeMap::new(),
        }
    }

    fn record(stream_seq: u64, data: i64) -> (Arc<Record>, Bytes) {
        let events = vec![Arc::new(
            NewEvent::new("a.b", json!(data)).unwrap().commit(1),
        )];
        let payload = encode(1, 7, &events).unwrap();
        let record = Arc::new(Record {
            stream_seq,
            first: 1,
            at: 7,
            events,
        });
        (record, payload)
    }

    #[test]
    fn an_own_record_is_taken_only_for_the_very_payload_published() {
        let mut st = state();
        let (ours, payload) = record(5, 1);
        st.own.insert(
            5,
            Own {
                record: ours.clone(),
                payload: payload.clone(),
            },
        );
        // Another writer's record at the same stream seq, same Tidings seq:
        // not ours, and our entry is gone (the follower passed it).
        let (_, theirs) = record(5, 2);
        assert!(st.take_own(5, &theirs).is_none());
        assert!(st.own.is_empty());

        st.own.insert(
            5,
            Own {
                record: ours.clone(),
                payload: payload.clone(),
            },
        );
        let taken = st.take_own(5, &payload).expect("our own payload");
        assert!(Arc::ptr_eq(&taken, &ours));
        assert!(st.take_own(5, &payload).is_none(), "taken once");
    }

    #[test]
    fn a_failed_publish_forgets_only_its_own_entry() {
        let mut st = state();
        let (ours, payload) = record(5, 1);
        let (other, other_payload) = record(5, 2);
        st.own.insert(
            5,
            Own {
                record: other.clone(),
                payload: other_payload,
            },
        );
        st.forget_own(5, &ours);
        assert!(st.own.contains_key(&5), "another record's entry stays");
        st.own.insert(
            5,
            Own {
                record: ours.clone(),
                payload,
            },
        );
        st.forget_own(5, &ours);
        assert!(st.own.is_empty());
    }
}
