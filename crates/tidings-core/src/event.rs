//! The event envelope.
//!
//! An [`Event`] is a committed fact: it has a `seq` assigned by the log and
//! is only ever handed out behind an `Arc`, so nobody can change it. A
//! [`NewEvent`] is the same envelope before the log gave it a sequence
//! number; `id` and `time` are fixed when it is built, so an idempotent
//! retry of the same `NewEvent` names the same fact.

use std::borrow::Cow;
use std::fmt;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::{ContextV7, Timestamp, Uuid};

use crate::name::{validate_name, NameError};

/// A shared, immutable, committed event.
pub type SharedEvent = Arc<Event>;

/// Dispatch priority of a subscription (and optional metadata on an event).
///
/// Within one event, handlers run highest priority first, then in
/// registration order.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum Priority {
    /// Runs after the normal handlers (loggers, metrics).
    Low,
    /// The default.
    #[default]
    Normal,
    /// Runs first (validation, bookkeeping others rely on).
    High,
}

/// A committed event: the one envelope used in memory, in every log and on
/// the wire.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Event {
    /// Position in the log: gap-free from 1, the one true order.
    pub seq: u64,
    /// Globally unique id (UUID v7, so ids sort roughly by time too).
    pub id: Uuid,
    /// The event name, as emitted (validated by [`validate_name`]).
    pub name: String,
    /// Which component emitted it (default `"app"`). A `Cow` so that a
    /// source known at compile time (the default among them) costs no
    /// allocation per event.
    #[serde(deserialize_with = "de_source")]
    pub source: Cow<'static, str>,
    /// When it was emitted, UTC. For display; `seq` is the order.
    pub time: DateTime<Utc>,
    /// The payload.
    pub data: serde_json::Value,
    /// The idempotency key it was emitted with, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    /// Priority metadata given by the emitter, if any. Recorded, not used for
    /// ordering: dispatch order comes from the subscriptions' priorities.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub priority: Option<Priority>,
}

impl Event {
    /// About how many bytes the event takes as JSON: its strings and the
    /// payload's, without serializing it. Used for byte budgets on reads.
    pub fn approx_bytes(&self) -> usize {
        fn value(v: &serde_json::Value) -> usize {
            use serde_json::Value::*;
            match v {
                Null | Bool(_) => 5,
                Number(_) => 12,
                String(s) => s.len() + 2,
                Array(a) => a.iter().map(|x| value(x) + 1).sum::<usize>() + 2,
                Object(o) => o.iter().map(|(k, x)| k.len() + 4 + value(x)).sum::<usize>() + 2,
            }
        }
        // seq, id, time and the field names: about 120 bytes.
        120 + self.name.len()
            + self.source.len()
            + self.key.as_ref().map_or(0, |k| k.len() + 8)
            + value(&self.data)
    }

    /// Deserializes the payload into `T`.
    pub fn data_as<T: serde::de::DeserializeOwned>(&self) -> Result<T, serde_json::Error> {
        T::deserialize(&self.data)
    }
}

impl fmt::Display for Event {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "#{} {} from {}", self.seq, self.name, self.source)
    }
}

/// The default `source` when the emitter names none.
pub const DEFAULT_SOURCE: &str = "app";

/// The `source` of an event read back from storage or the wire: the default
/// is borrowed from [`DEFAULT_SOURCE`], not
/// allocated again for every event. Logs decoding events use it.
pub fn source_from_storage(source: String) -> Cow<'static, str> {
    if source == DEFAULT_SOURCE {
        Cow::Borrowed(DEFAULT_SOURCE)
    } else {
        Cow::Owned(source)
    }
}

fn de_source<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Cow<'static, str>, D::Error> {
    String::deserialize(d).map(source_from_storage)
}

/// A fresh UUID v7 and the time it carries, from one read of the clock.
///
/// Each thread keeps its own v7 context, so ids made on one thread are
/// strictly increasing (even within a millisecond) and no lock is shared
/// between emitting threads or buses. Ids from different threads are unique
/// (the context's counter starts at random bits each millisecond) but not
/// ordered against each other: the order of events is their `seq`.
fn stamp() -> (Uuid, DateTime<Utc>) {
    thread_local! {
        static CONTEXT: ContextV7 = const { ContextV7::new() };
    }
    let since_epoch = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    let (secs, nanos) = (since_epoch.as_secs(), since_epoch.subsec_nanos());
    let time = i64::try_from(secs)
        .ok()
        .and_then(|s| DateTime::from_timestamp(s, nanos))
        .unwrap_or_else(Utc::now);
    let ts = CONTEXT.with(|ctx| Timestamp::from_unix(ctx, secs, nanos));
    (Uuid::new_v7(ts), time)
}

/// An event not yet committed: everything but `seq`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NewEvent {
    /// Fixed at construction, kept by the committed event.
    pub id: Uuid,
    /// Validated at construction.
    pub name: String,
    #[serde(deserialize_with = "de_source")]
    pub source: Cow<'static, str>,
    pub time: DateTime<Utc>,
    pub data: serde_json::Value,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub priority: Option<Priority>,
}

impl NewEvent {
    /// A new event with a fresh id, the current time and source `"app"`.
    /// Fails if `name` is not a valid event name.
    pub fn new(name: impl Into<String>, data: serde_json::Value) -> Result<NewEvent, NameError> {
        let name = name.into();
        validate_name(&name)?;
        let (id, time) = stamp();
        Ok(NewEvent {
            id,
            name,
            source: Cow::Borrowed(DEFAULT_SOURCE),
            time,
            data,
            key: None,
            priority: None,
        })
    }

    /// Sets the source.
    pub fn source(mut self, source: impl Into<String>) -> Self {
        self.source = Cow::Owned(source.into());
        self
    }

    /// Sets the idempotency key.
    pub fn key(mut self, key: impl Into<String>) -> Self {
        self.key = Some(key.into());
        self
    }

    /// Sets the priority metadata.
    pub fn priority(mut self, priority: Priority) -> Self {
        self.priority = Some(priority);
        self
    }

    /// The committed envelope at `seq`. Only logs call this.
    pub fn commit(self, seq: u64) -> Event {
        Event {
            seq,
            id: self.id,
            name: self.name,
            source: self.source,
            time: self.time,
            data: self.data,
            key: self.key,
            priority: self.priority,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn new_event_validates_name() {
        assert!(NewEvent::new("a..b", json!(null)).is_err());
        let e = NewEvent::new("player:move", json!({"to": "street"})).unwrap();
        assert_eq!(e.source, DEFAULT_SOURCE);
        assert!(
            matches!(e.source, Cow::Borrowed(_)),
            "the default is not allocated"
        );
        let back: NewEvent = serde_json::from_value(serde_json::to_value(&e).unwrap()).unwrap();
        assert!(
            matches!(back.source, Cow::Borrowed(_)),
            "decoding interns it"
        );
        let other: NewEvent =
            serde_json::from_value(serde_json::to_value(e.source("s")).unwrap()).unwrap();
        assert_eq!(other.source, "s");
    }

    #[test]
    fn ids_increase_and_carry_the_event_time() {
        let events: Vec<NewEvent> = (0..2_000)
            .map(|_| NewEvent::new("a", json!(null)).unwrap())
            .collect();
        for pair in events.windows(2) {
            assert!(pair[0].id < pair[1].id, "ids are strictly increasing");
        }
        for e in &events {
            let (secs, nanos) = e.id.get_timestamp().expect("a v7 id").to_unix();
            let id_ms = secs * 1_000 + u64::from(nanos / 1_000_000);
            // The context may push an id ahead of its clock read (its
            // counter overflowed into the next millisecond), never behind it.
            let time_ms = e.time.timestamp_millis() as u64;
            assert!(
                id_ms >= time_ms && id_ms < time_ms + 1_000,
                "{id_ms} vs {time_ms}"
            );
        }
    }

    #[test]
    fn envelope_roundtrips_json() {
        let e = NewEvent::new("a.b", json!({"x": 1}))
            .unwrap()
            .source("s")
            .key("k")
            .commit(7);
        let s = serde_json::to_string(&e).unwrap();
        assert!(s.contains("\"seq\":7"));
        let back: Event = serde_json::from_str(&s).unwrap();
        assert_eq!(back, e);
    }

    #[test]
    fn optional_fields_are_omitted() {
        let e = NewEvent::new("a", json!(1)).unwrap().commit(1);
        let s = serde_json::to_string(&e).unwrap();
        assert!(!s.contains("key"));
        assert!(!s.contains("priority"));
    }

    #[test]
    fn priorities_order_high_first() {
        let mut v = vec![Priority::Low, Priority::High, Priority::Normal];
        v.sort_by(|a, b| b.cmp(a));
        assert_eq!(v, vec![Priority::High, Priority::Normal, Priority::Low]);
    }

    #[test]
    fn ids_are_unique_and_time_ordered() {
        let a = NewEvent::new("a", json!(null)).unwrap();
        let b = NewEvent::new("a", json!(null)).unwrap();
        assert_ne!(a.id, b.id);
        assert!(a.id < b.id);
    }
}
