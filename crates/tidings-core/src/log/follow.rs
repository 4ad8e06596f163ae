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
    /// The read in flight, if any.
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
            while self.buf.front().is_some_and(|e| e.seq <= seq) {
                self.buf.pop_front();
            }
        }
    }

    /// The next delivery; `Ok(None)` when the log held nothing after
    /// [`Reader::last`] at the time of the read (caught up).
    pub fn poll_next(&mut self, cx: &mut Context<'_>) -> Poll<Result<Option<Delivery>, ReadError>> {
        loop {
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
pub fn follow(log: Arc<dyn EventLog>, from: Position) -> LogStream {
    let resolver = log.clone();
    let start: BoxFuture<Result<u64, ReadError>> =
        Box::pin(async move { resolve_position(&*resolver, from).await });
    LogStream {
        reader: Reader::new(log, 0),
        state: State::Starting(start),
    }
}

impl LogStream {
    /// The last sequence delivered (or skipped as lagged).
    pub fn last(&self) -> u64 {
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
