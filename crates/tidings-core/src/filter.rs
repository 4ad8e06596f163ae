//! Filters: a predicate over a committed event, decided once per event per
//! subscription, before the event is queued for it.
//!
//! The core defines only the trait; an expression language (CEL, in the
//! `tidings-filter` crate) or a plain closure implements it. A filter is
//! compiled once per subscription and shared (`Arc`), never rebuilt per
//! event. An event it rejects costs its subscriber no queue space, and a
//! stream catching up from the log applies the same filter, so the events
//! a filtered subscription receives are exactly the matching ones, in seq
//! order, with no gap among them.

use std::sync::Arc;

use crate::event::Event;

/// Decides whether a subscription receives an event.
///
/// `accepts` must not block, and must decide the same way every time for
/// the same event (a stream may evaluate it again when it reads the log).
/// An event the filter cannot evaluate (a missing field, a type mismatch)
/// is not delivered; the implementation counts such failures itself.
pub trait EventFilter: Send + Sync + 'static {
    /// True to deliver `event`.
    fn accepts(&self, event: &Event) -> bool;
}

impl<F: Fn(&Event) -> bool + Send + Sync + 'static> EventFilter for F {
    fn accepts(&self, event: &Event) -> bool {
        self(event)
    }
}

/// A filter shared by the subscriptions that use it.
pub type SharedFilter = Arc<dyn EventFilter>;

/// True if there is no filter or it accepts `event`.
pub(crate) fn passes(filter: &Option<SharedFilter>, event: &Event) -> bool {
    filter.as_ref().is_none_or(|f| f.accepts(event))
}
