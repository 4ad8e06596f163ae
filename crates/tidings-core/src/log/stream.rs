//! Catch-up-then-live reading over any [`EventLog`].
//!
//! [`Reader`] reads pages after a position and turns holes left by retention
//! into [`Delivery::Lagged`]; [`LogStream`] adds waiting on
//! [`EventLog::watch`] so the stream continues live. Both are written once
//! here so every backend gets the same no-gap, no-duplicate behaviour.

use std::collections::VecDeque;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};

use futures_core::Stream;

use super::{resolve_position, BoxFuture, Delivery, EventLog, Page, Position, ReadError};
use crate::event::SharedEvent;

/// Events fetched per read.
pub const PAGE_SIZE: usize = 512;
/// Bytes fetched per read, about: a page of large events stops early, so a
/// catch-up never holds `PAGE_SIZE` megabyte payloads at once.
pub const PAGE_BYTES: usize = 4 * 1024 * 1024;

/// Reads a log forward from a position, page by page.
pub struct Reader {
    log: Arc<dyn EventLog>,
    /// Invariant: every seq `<= last` has been handed out, either as an event
    /// or inside a `Lagged` notice; nothing above it has.
    last: u64,
    /// Fetched events not yet handed out, ascending.
    buf: VecDeque<SharedEvent>,
    /// The read in flight, if any. Invariant: issued for `after == last`
    /// (`advance_to` drops it), so an empty page really means "nothing
    /// after `last`".
    pending: Option<BoxFuture<Result<Page, ReadError>>>,
}

impl Reader {
    /// A reader that will hand out events with `seq > after`.
    pub fn new(log: Arc<dyn EventLog>, after: u64) -> Reader {
        Reader {
            log,
            last: after,
            buf: VecDeque::new(),
            pending: None,
        }
    }

    /// The last sequence handed out (or skipped as lagged).
    pub fn last(&self) -> u64 {
        self.last
    }

    /// Records that everything up to `seq` was delivered by other means.
    pub fn advance_to(&mut self, seq: u64) {
        if seq > self.last {
            self.last = seq;
            // A read in flight was issued for the old position: its empty
            // answer would claim "caught up" past events it never saw (a
            // stream switching between its queue and the log would then
            // skip them). Read again from the new position when needed.
            self.pending = None;
            while self.buf.front().is_some_and(|e| e.seq <= seq) {
                self.buf.pop_front();
            }
        }
    }

    /// The next delivery; `Ok(None)` when the log held nothing after
    /// [`Reader::last`] at the time of the read (caught up).
    pub fn poll_next(&mut self, cx: &mut Context<'_>) -> Poll<Result<Option<Delivery>, ReadError>> {
        self.poll_next_upto(cx, u64::MAX)
    }

    /// Like [`Reader::poll_next`], handing out nothing after seq `upto`:
    /// `Ok(None)` also when the next event is past it (it is kept for a
    /// later call).
    pub fn poll_next_upto(
        &mut self,
        cx: &mut Context<'_>,
        upto: u64,
    ) -> Poll<Result<Option<Delivery>, ReadError>> {
        loop {
            let past = |e: &SharedEvent| e.seq > self.last && e.seq > upto;
            if self.buf.front().is_some_and(past) || (self.buf.is_empty() && self.last >= upto) {
                return Poll::Ready(Ok(None));
            }
            if let Some(ev) = self.buf.pop_front() {
                if ev.seq <= self.last {
                    continue;
                }
                if ev.seq > self.last + 1 {
                    let missed = ev.seq - self.last - 1;
                    let resume_from = ev.seq;
                    self.buf.push_front(ev);
                    self.last = resume_from - 1;
                    return Poll::Ready(Ok(Some(Delivery::Lagged {
                        missed,
                        resume_from,
                    })));
                }
                self.last = ev.seq;
                return Poll::Ready(Ok(Some(Delivery::Event(ev))));
            }
            if self.pending.is_none() {
                self.pending = Some(self.log.read_within(self.last, PAGE_SIZE, PAGE_BYTES));
            }
            let fut = self.pending.as_mut().expect("just set");
            let page = ready!(fut.as_mut().poll(cx));
            self.pending = None;
            let page = page?;
            if page.events.is_empty() {
                if page.last_seq > self.last {
                    // Everything after `last` is gone.
                    let missed = page.last_seq - self.last;
                    self.last = page.last_seq;
                    return Poll::Ready(Ok(Some(Delivery::Lagged {
                        missed,
                        resume_from: page.last_seq + 1,
                    })));
                }
                return Poll::Ready(Ok(None));
            }
            self.buf.extend(page.events);
        }
    }
}

enum State {
    /// Resolving the start position.
    Starting(BoxFuture<Result<u64, ReadError>>),
    /// Reading what the log already holds.
    Reading,
    /// Caught up: waiting for the log to pass `Reader::last`.
    Waiting(BoxFuture<bool>),
    /// The log was closed.
    Done,
}

/// A stream of a log from a position, catching up from storage and then
/// following live appends (woken by [`EventLog::watch`], never by polling).
///
/// Items are in sequence order with no duplicate; a hole left by retention
/// is reported as [`Delivery::Lagged`]. A read error is yielded as `Err`;
/// polling again retries from the same position.
pub struct LogStream {
    reader: Reader,
    state: State,
}

/// Opens a [`LogStream`] on `log` from `from`.
pub fn stream_from(log: Arc<dyn EventLog>, from: Position) -> LogStream {
    let resolver = log.clone();
    let start: BoxFuture<Result<u64, ReadError>> =
        Box::pin(async move { resolve_position(&*resolver, from).await });
    LogStream {
        reader: Reader::new(log, 0),
        state: State::Starting(start),
    }
}

impl LogStream {
    /// The last sequence delivered (or skipped as lagged); the same name as
    /// [`EventStream::last_seq`](crate::EventStream::last_seq).
    pub fn last_seq(&self) -> u64 {
        self.reader.last()
    }
}

impl Stream for LogStream {
    type Item = Result<Delivery, ReadError>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        loop {
            match &mut this.state {
                State::Done => return Poll::Ready(None),
                State::Starting(f) => match ready!(f.as_mut().poll(cx)) {
                    Ok(after) => {
                        this.reader.advance_to(after);
                        this.state = State::Reading;
                    }
                    Err(e) => return Poll::Ready(Some(Err(e))),
                },
                State::Reading => match ready!(this.reader.poll_next(cx)) {
                    Ok(Some(d)) => return Poll::Ready(Some(Ok(d))),
                    Ok(None) => {
                        let mut rx = this.reader.log.watch();
                        let last = this.reader.last();
                        this.state = State::Waiting(Box::pin(async move {
                            rx.wait_for(|v| *v > last).await.is_ok()
                        }));
                    }
                    Err(e) => return Poll::Ready(Some(Err(e))),
                },
                State::Waiting(f) => {
                    if ready!(f.as_mut().poll(cx)) {
                        this.state = State::Reading;
                    } else {
                        this.state = State::Done;
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::task::Waker;

    use chrono::{DateTime, Utc};
    use serde_json::json;
    use tokio::sync::watch;

    use super::*;
    use crate::event::NewEvent;
    use crate::log::{AppendFuture, Bounds, CursorError, MemoryLog, PruneError};

    /// A memory log whose reads take their snapshot when issued and
    /// complete only once the gate opens (a slow network read).
    struct GatedReads {
        inner: MemoryLog,
        gate: watch::Receiver<bool>,
    }

    impl EventLog for GatedReads {
        fn append(&self, batch: Vec<NewEvent>, expected_last: Option<u64>) -> AppendFuture {
            self.inner.append(batch, expected_last)
        }
        fn read(&self, after: u64, limit: usize) -> BoxFuture<Result<Page, ReadError>> {
            let snapshot = self.inner.read(after, limit);
            let mut gate = self.gate.clone();
            Box::pin(async move {
                let page = snapshot.await;
                gate.wait_for(|open| *open).await.expect("gate kept");
                page
            })
        }
        fn bounds(&self) -> BoxFuture<Result<Bounds, ReadError>> {
            self.inner.bounds()
        }
        fn seq_before(&self, time: DateTime<Utc>) -> BoxFuture<Result<u64, ReadError>> {
            self.inner.seq_before(time)
        }
        fn watch(&self) -> watch::Receiver<u64> {
            self.inner.watch()
        }
        fn cursor(&self, consumer: &str) -> BoxFuture<Result<Option<u64>, CursorError>> {
            self.inner.cursor(consumer)
        }
        fn commit_cursor(&self, consumer: &str, seq: u64) -> BoxFuture<Result<(), CursorError>> {
            self.inner.commit_cursor(consumer, seq)
        }
        fn prune(&self) -> BoxFuture<Result<u64, PruneError>> {
            self.inner.prune()
        }
        fn close(&self) -> BoxFuture<Result<(), crate::log::CloseError>> {
            self.inner.close()
        }
        fn define_consumer(
            &self,
            name: &str,
            spec: &str,
        ) -> BoxFuture<Result<String, CursorError>> {
            self.inner.define_consumer(name, spec)
        }
        fn consumers(&self) -> BoxFuture<Result<Vec<crate::log::ConsumerRecord>, CursorError>> {
            self.inner.consumers()
        }
        fn delete_consumer(&self, name: &str) -> BoxFuture<Result<bool, CursorError>> {
            self.inner.delete_consumer(name)
        }
    }

    fn append(log: &MemoryLog, n: usize) {
        for _ in 0..n {
            let e = NewEvent::new("r", json!(null)).unwrap();
            log.append_now(vec![e], None).unwrap();
        }
    }

    #[tokio::test]
    async fn a_read_in_flight_before_advance_to_is_not_taken_as_caught_up() {
        let inner = MemoryLog::new();
        append(&inner, 3);
        let (open, gate) = watch::channel(false);
        let log = Arc::new(GatedReads {
            inner: inner.clone(),
            gate,
        });
        let mut reader = Reader::new(log, 3);
        let mut cx = Context::from_waker(Waker::noop());
        // A read for "after 3" is issued while the log ends at 3.
        assert!(reader.poll_next(&mut cx).is_pending());
        // Events 4 and 5 are committed; 4 reaches the caller another way
        // (a stream's queue), 5 does not.
        append(&inner, 2);
        reader.advance_to(4);
        open.send_replace(true);
        let next = std::future::poll_fn(|cx| reader.poll_next(cx)).await;
        match next {
            Ok(Some(Delivery::Event(e))) => assert_eq!(e.seq, 5),
            other => panic!("expected event 5, got {other:?}"),
        }
    }

    #[tokio::test]
    async fn a_reader_hands_out_nothing_past_its_ceiling() {
        let log = MemoryLog::new();
        append(&log, 5);
        let mut reader = Reader::new(Arc::new(log), 0);
        let mut next = |upto| {
            let mut cx = Context::from_waker(Waker::noop());
            match reader.poll_next_upto(&mut cx, upto) {
                Poll::Ready(Ok(Some(Delivery::Event(e)))) => Some(e.seq),
                Poll::Ready(Ok(None)) => None,
                other => panic!("{other:?}"),
            }
        };
        assert_eq!((next(2), next(2), next(2)), (Some(1), Some(2), None));
        // Event 3 was fetched but is kept for a call with a higher ceiling.
        assert_eq!((next(4), next(4), next(4)), (Some(3), Some(4), None));
        assert_eq!((next(u64::MAX), next(u64::MAX)), (Some(5), None));
    }
}
