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

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;

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
    /// Records this process published and the follower has not applied
    /// yet, by stream seq: the follower applies them as they are instead
    /// of decoding the message. Invariant: every key is above
    /// `applied_stream_seq` (applying removes what it passed).
    pub(super) own: BTreeMap<u64, Arc<Record>>,
}

impl State {
    pub(super) fn raise_tail(&mut self, t: Tail) {
        if t.stream_seq >= self.tail.stream_seq {
            self.tail = t;
        }
    }
}
