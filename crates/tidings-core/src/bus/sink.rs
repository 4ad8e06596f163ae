//! [`Sink`]: the dispatch side of a stream subscription, a bounded queue.
//!
//! # Contract
//!
//! * Dispatch pushes each event the sink's filter accepts; the queue keeps
//!   them in seq order and never holds more than its capacity.
//! * When the queue is full the event is left out *of the queue only* (it
//!   is committed to the log already) and the sink is marked overflowed;
//!   from then on nothing is queued until the reader has seen the mark and
//!   caught up from the log. So the queue never has a hole the reader
//!   does not know about.
//! * Once closed (its subscription removed) a sink queues nothing more and
//!   its reader ends.
//! * Once finished at a seq (its subscription handed over), it queues
//!   nothing after that seq; its reader delivers everything up to it
//!   (reading the log if events were left out) and then ends.
//! * Every push or close wakes the reader's last registered waker.

use std::collections::VecDeque;
use std::task::Waker;

use parking_lot::Mutex;

use crate::event::SharedEvent;
use crate::filter::{passes, SharedFilter};

pub(crate) struct Queued {
    pub event: SharedEvent,
    /// Emit depth of the event (for the depth guard of async handlers).
    pub depth: u32,
}

struct SinkState {
    /// Invariant: ascending seqs, at most `capacity` entries.
    queue: VecDeque<Queued>,
    /// Set when an event was left out because the queue was full.
    overflowed: bool,
    /// Set when the subscription was removed; the stream then ends.
    closed: bool,
    /// Set when the subscription was handed over at this seq: the stream
    /// ends after delivering everything up to it.
    until: Option<u64>,
    waker: Option<Waker>,
}

/// The dispatch side of a stream subscription.
pub(crate) struct Sink {
    state: Mutex<SinkState>,
    capacity: usize,
    /// True if an async handler task reads this sink.
    handler: bool,
    /// Events it rejects are never queued (and never read back from the
    /// log by the stream).
    filter: Option<SharedFilter>,
}

impl Sink {
    pub fn filtered(capacity: usize, handler: bool, filter: Option<SharedFilter>) -> Self {
        Sink {
            filter,
            state: Mutex::new(SinkState {
                queue: VecDeque::new(),
                overflowed: false,
                closed: false,
                until: None,
                waker: None,
            }),
            capacity,
            handler,
        }
    }

    pub fn is_handler(&self) -> bool {
        self.handler
    }

    /// True if the sink's filter lets `event` through.
    pub fn accepts(&self, event: &crate::event::Event) -> bool {
        passes(&self.filter, event)
    }

    /// Queues an event the filter accepted (dispatch asks [`Sink::accepts`]
    /// first, so a filter runs once per event); returns false if it was
    /// left for the log instead.
    pub fn push(&self, event: &SharedEvent, depth: u32) -> bool {
        let mut st = self.state.lock();
        if st.closed || st.until.is_some_and(|u| event.seq > u) {
            return false;
        }
        let queued = if st.overflowed || st.queue.len() >= self.capacity {
            st.overflowed = true;
            false
        } else {
            st.queue.push_back(Queued {
                event: event.clone(),
                depth,
            });
            true
        };
        let waker = st.waker.take();
        drop(st);
        if let Some(w) = waker {
            w.wake();
        }
        queued
    }

    /// Ends the stream after seq `until` (see the contract).
    pub fn finish_at(&self, until: u64) {
        let mut st = self.state.lock();
        st.until = Some(until);
        let waker = st.waker.take();
        drop(st);
        if let Some(w) = waker {
            w.wake();
        }
    }

    /// The seq the stream ends after, once handed over.
    pub fn until(&self) -> Option<u64> {
        self.state.lock().until
    }

    pub fn close(&self) {
        let mut st = self.state.lock();
        st.closed = true;
        let waker = st.waker.take();
        drop(st);
        if let Some(w) = waker {
            w.wake();
        }
    }
}

/// What the head of a sink's queue is, for a reader catching up.
pub(crate) enum Peek {
    /// The subscription was removed.
    Closed,
    /// The seq of the first queued event.
    Front(u64),
    /// Nothing queued.
    Empty,
}

/// What [`Sink::take_after`] found.
pub(crate) enum Take {
    /// The first queued event after the given seq.
    Event(Queued),
    /// The queue is drained and events were left for the log: read it. The
    /// mark is cleared.
    Overflowed,
    /// The queue is drained and the subscription was removed.
    Closed,
    /// The queue is drained and the subscription was handed over at this
    /// seq: read the log up to it, then end.
    Finish(u64),
    /// Nothing to take; the waker is registered.
    Pending,
}

impl Sink {
    /// The head of the queue, or whether the sink is closed.
    pub fn peek(&self) -> Peek {
        let st = self.state.lock();
        if st.closed {
            return Peek::Closed;
        }
        match st.queue.front() {
            Some(q) => Peek::Front(q.event.seq),
            None => Peek::Empty,
        }
    }

    /// Pops queued events up to and including seq `last` (the reader has
    /// them) and returns the next one; when the queue is drained, reports
    /// an overflow (clearing it) or the close, or registers `waker`.
    pub fn take_after(&self, last: u64, waker: &Waker) -> Take {
        let mut st = self.state.lock();
        while let Some(q) = st.queue.pop_front() {
            if q.event.seq > last {
                return Take::Event(q);
            }
        }
        if st.overflowed {
            st.overflowed = false;
            return Take::Overflowed;
        }
        if st.closed {
            return Take::Closed;
        }
        if let Some(u) = st.until {
            return Take::Finish(u);
        }
        st.waker = Some(waker.clone());
        Take::Pending
    }
}
