//! # Tidings core: an event bus that records facts
//!
//! Each event is something that already happened. Once emitted it is
//! immutable (handed out as `Arc<Event>`) and carries a gap-free sequence
//! number: the one true order.
//!
//! The key types:
//!
//! * [`Bus`]: cheap to clone, `Send + Sync`. [`Bus::emit`] commits an event
//!   to the log, then dispatches it to sync handlers (inline, before `emit`
//!   returns), async handlers (on tokio, in seq order) and streams.
//! * [`Event`]: the envelope (`seq`, `id`, `name`, `source`, `time`, `data`).
//! * [`Pattern`]: `.` and `:` separate tokens, `*` is one token, `>` (or
//!   `**`) at the end is one or more; see [`name`] for the rules. Matching
//!   uses a token trie (`trie.rs`) with a bounded cache, never a scan.
//! * [`EventStream`]: a `Stream` of [`Delivery`] items that never loses an
//!   event silently: it catches up from the log, or says exactly what it
//!   missed.
//! * [`EventLog`]: where events are committed. [`MemoryLog`] here; SQLite,
//!   NATS JetStream and Redis Streams in their own crates, all held to
//!   `conformance` (with the `conformance` feature).
//! * [`Plugin`] / [`PluginHost`]: components that own their subscriptions,
//!   listed and reloaded without losing or doubling an event.
//! * [`TypedEvent`]: serde types tied to their event names.
//! * [`DataContract`]: a rule an event's `data` must keep to be emitted
//!   (JSON Schema in the `tidings-schema` crate), checked before the append.
//!
//! ```
//! use serde_json::json;
//! use tidings_core::{Bus, Priority};
//!
//! let bus = Bus::new();
//! let log = bus.handler("player.*").priority(Priority::Low)
//!     .sync(|e| println!("log: {e}")).unwrap();
//! let ev = bus.emit("player:move", json!({"to": "street"})).unwrap();
//! assert_eq!((ev.seq, bus.last_seq()), (1, 1));
//! assert_eq!(bus.history(10, Some("player.>")).unwrap().len(), 1);
//! drop(log); // unsubscribes
//! ```
//!
//! This crate does no network I/O and has no server dependencies.

pub mod bus;
pub mod contract;
pub mod event;
pub mod filter;
pub mod log;
pub mod name;
pub mod plugin;
pub(crate) mod trie;
pub mod typed;

#[cfg(any(test, feature = "conformance"))]
pub mod conformance;

pub use bus::{
    AckError, Bus, BusBuilder, ConfigError, Consumer, ConsumerBuilder, ConsumerError, ConsumerSpec,
    ConsumerTask, EmitBuilder, EmitError, EventStream, HandlerBuilder, HandlerResult, OwnerStats,
    Stats, SubscribeError, Subscription, SubscriptionInfo, SubscriptionKind, WaitError,
};
pub use contract::{DataContract, Refusal, SharedContract, Violation};
pub use event::{source_from_storage, Event, NewEvent, Priority, SharedEvent, DEFAULT_SOURCE};
pub use filter::{EventFilter, SharedFilter};
pub use log::{
    stream_from, AppendError, Bounds, CloseError, Committed, ConsumerRecord, CursorError, Delivery,
    EventLog, LogFailure, LogHealth, LogOptions, LogStream, MemoryLog, OptionsError, Page,
    Position, PruneError, ReadError, Retention,
};
pub use name::{IntoPattern, NameError, Pattern, PatternError};
pub use plugin::{Plugin, PluginContext, PluginError, PluginHost, PluginInfo, Reloaded};
pub use typed::TypedEvent;

/// Internals exposed only for the fuzz targets, the property tests and the
/// benchmarks; not part of the API and free to change.
#[doc(hidden)]
pub mod fuzzing {
    pub use crate::trie::Trie;
}
