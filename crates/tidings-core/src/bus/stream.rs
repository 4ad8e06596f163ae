//! Streams of bus events: a bounded queue filled by dispatch, backed by the
//! log when the queue overflows.
//!
//! # How no event is lost
//!
//! Dispatch pushes each matching event into the subscription's [`Sink`]. If
//! the queue is full, the event is dropped *from the queue only* and the sink
//! is marked overflowed; the event is already committed to the log (commit
//! happens before notify). When the [`EventStream`] has drained the queue
//! and sees the mark, it clears it and reads the log from the last seq it
//! delivered, filtering by its pattern, until either the log has nothing
//! more or the queue continues where the log reading is. Seqs already
//! delivered are skipped, so the switch back to the queue neither loses nor
//! repeats an event. Only if retention pruned the events it needs does the
//! stream yield [`Delivery::Lagged`], with the count and where it resumes.
//!
//! A stream whose subscription was handed over at a seq (a plugin's async
//! handler during a reload) delivers every matching event up to that seq,
//! from its queue or the log, and then ends: none after it. For that cut
//! to be clean, an owned handler's catch-up never reads past the seq
//! dispatch has reached (a log holds committed events dispatch has not
//! reached yet): what comes after reaches it through its queue.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};

use futures_core::Stream;

use super::registry::{Sub, SubKind};
use super::sink::{Peek, Sink, Take};
use super::Bus;
use crate::event::Priority;
use crate::filter::SharedFilter;
use crate::log::{Delivery, ReadError, Reader};
use crate::name::{IntoPattern, Pattern, PatternError};

/// A live, ordered, lossless stream of the bus's events matching one or
/// more patterns.
///
/// Made by [`Bus::subscribe`], [`Bus::subscribe_from`] or
/// [`Bus::subscribe_many`]; patterns can be added and dropped while it runs
/// ([`EventStream::add_pattern`], [`EventStream::remove_pattern`]). An event
/// matching several of its patterns is delivered once. Items are
/// `Ok(Delivery::Event)` in seq order without gap or duplicate, or
/// `Ok(Delivery::Lagged)` when events it needed were pruned from the log;
/// `Err` if reading the log failed (polling again retries). Dropping the
/// stream unsubscribes it. The stream ends when its subscription is removed
/// (for example by [`Bus::unsubscribe_all`]).
pub struct EventStream {
    bus: Bus,
    /// One registry entry per pattern, all feeding `sink`. May be empty (the
    /// stream then waits until a pattern is added).
    subs: Vec<Arc<Sub>>,
    sink: Arc<Sink>,
    /// Reads the log when catching up; `reader.last()` is the last seq this
    /// stream has delivered or skipped.
    reader: Reader,
    catching_up: bool,
    /// An owned (plugin) handler's stream: its catch-up never runs ahead
    /// of dispatch, so a hand-over at the seq dispatch has reached cuts it
    /// cleanly (it has delivered nothing after that seq).
    bounded: bool,
    last_depth: u32,
}

impl EventStream {
    pub(crate) fn new(
        bus: Bus,
        subs: Vec<Arc<Sub>>,
        sink: Arc<Sink>,
        reader: Reader,
        catching_up: bool,
    ) -> Self {
        let bounded = sink.is_handler() && subs.iter().any(|s| s.owner.is_some());
        EventStream {
            bus,
            subs,
            sink,
            reader,
            catching_up,
            bounded,
            last_depth: 0,
        }
    }

    /// The bus the stream belongs to.
    pub(crate) fn bus(&self) -> &Bus {
        &self.bus
    }

    /// The id of the stream's first subscription (for logs).
    pub fn id(&self) -> u64 {
        self.subs.first().map_or(0, |s| s.id)
    }

    /// The owner's counters its subscriptions were registered with.
    pub(crate) fn owner_counters(&self) -> Option<Arc<super::stats::OwnerCounters>> {
        self.subs.first()?.counters.clone()
    }

    /// The stream's patterns, in the order they were added.
    pub fn patterns(&self) -> Vec<Pattern> {
        self.subs.iter().map(|s| s.pattern.clone()).collect()
    }

    fn wants(&self, event: &crate::event::Event) -> bool {
        self.subs.iter().any(|s| s.pattern.matches(&event.name)) && self.sink.accepts(event)
    }

    /// Adds a pattern: events matching it are delivered from now on.
    /// Returns false if the stream already has that pattern.
    pub fn add_pattern(&mut self, pattern: impl IntoPattern) -> Result<bool, PatternError> {
        let pattern = pattern.into_pattern()?;
        if self.subs.iter().any(|s| s.pattern == pattern) {
            return Ok(false);
        }
        let first = &self.subs.first();
        let (priority, owner) =
            first.map_or((Priority::Normal, None), |s| (s.priority, s.owner.clone()));
        let sub = self.bus.inner.registry.register(
            pattern,
            priority,
            owner,
            SubKind::Sink(self.sink.clone()),
        );
        self.subs.push(sub);
        Ok(true)
    }

    /// Drops a pattern; returns false if the stream did not have it.
    pub fn remove_pattern(&mut self, pattern: impl IntoPattern) -> Result<bool, PatternError> {
        let pattern = pattern.into_pattern()?;
        let Some(i) = self.subs.iter().position(|s| s.pattern == pattern) else {
            return Ok(false);
        };
        let sub = self.subs.remove(i);
        self.bus.inner.registry.unlink(sub.id);
        Ok(true)
    }

    /// The last seq this stream delivered (or skipped as not matching or
    /// lagged). A new stream from `Position::After(last())` continues exactly
    /// where this one stopped.
    pub fn last_seq(&self) -> u64 {
        self.reader.last()
    }

    /// Emit depth of the last event delivered live (0 for caught-up events).
    pub(crate) fn last_depth(&self) -> u32 {
        self.last_depth
    }
}

impl Stream for EventStream {
    type Item = Result<Delivery, ReadError>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        loop {
            if this.catching_up {
                match this.sink.peek() {
                    Peek::Closed => return Poll::Ready(None),
                    Peek::Front(seq) if seq <= this.reader.last() + 1 => {
                        this.catching_up = false;
                        continue;
                    }
                    Peek::Front(_) | Peek::Empty => {}
                }
                let upto = if this.bounded {
                    this.bus.inner.registry.looked_up()
                } else {
                    u64::MAX
                };
                match ready!(this.reader.poll_next_upto(cx, upto)) {
                    Ok(Some(Delivery::Event(e))) => {
                        if this.sink.until().is_some_and(|u| e.seq > u) {
                            return Poll::Ready(None); // handed over
                        }
                        if this.wants(&e) {
                            this.last_depth = 0;
                            return Poll::Ready(Some(Ok(Delivery::Event(e))));
                        }
                    }
                    Ok(Some(lag)) => {
                        this.bus.inner.stats.record_lag();
                        return Poll::Ready(Some(Ok(lag)));
                    }
                    // Handed over: the log holds nothing more up to the
                    // hand-over seq (it was committed before).
                    Ok(None) if this.sink.until().is_some() => return Poll::Ready(None),
                    Ok(None) => this.catching_up = false,
                    Err(e) => return Poll::Ready(Some(Err(e))),
                }
            } else {
                match this.sink.take_after(this.reader.last(), cx.waker()) {
                    Take::Event(q) => {
                        this.reader.advance_to(q.event.seq);
                        this.last_depth = q.depth;
                        return Poll::Ready(Some(Ok(Delivery::Event(q.event))));
                    }
                    Take::Overflowed => {
                        this.catching_up = true;
                        continue;
                    }
                    Take::Closed => return Poll::Ready(None),
                    Take::Finish(until) if this.reader.last() >= until => return Poll::Ready(None),
                    // The queue is drained and did not overflow, so every
                    // matching event before `until` was delivered (their
                    // dispatch ended before `until`'s began); only `until`
                    // itself may still be on its way (a hand-over from
                    // inside its dispatch): read just that from the log.
                    Take::Finish(until) => {
                        this.reader.advance_to(until - 1);
                        this.catching_up = true;
                        continue;
                    }
                    Take::Pending => return Poll::Pending,
                }
            }
        }
    }
}

impl Drop for EventStream {
    fn drop(&mut self) {
        self.bus
            .inner
            .registry
            .remove_all(self.subs.iter().map(|s| s.id));
    }
}

impl Bus {
    /// Registers a stream (or an async handler's queue when `handler`) on
    /// `patterns`, duplicates dropped; it starts live, or from the log after
    /// seq `after`.
    pub(crate) fn open_stream(
        &self,
        patterns: Vec<Pattern>,
        priority: Priority,
        owner: Option<Arc<str>>,
        handler: bool,
        after: Option<u64>,
        filter: Option<SharedFilter>,
    ) -> EventStream {
        let sink = Arc::new(Sink::filtered(self.inner.stream_capacity, handler, filter));
        let mut unique: Vec<Pattern> = Vec::with_capacity(patterns.len());
        for p in patterns {
            if !unique.contains(&p) {
                unique.push(p);
            }
        }
        let (subs, start) = self
            .inner
            .registry
            .register_all(unique, priority, owner, || SubKind::Sink(sink.clone()));
        let (reader_start, catching_up) = match after {
            Some(a) => (a, true),
            None => (start, false),
        };
        let reader = Reader::new(self.inner.log.clone(), reader_start);
        EventStream::new(self.clone(), subs, sink, reader, catching_up)
    }
}
