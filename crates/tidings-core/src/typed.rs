//! Typed events: a serde type tied to its event name, so applications need
//! not touch raw JSON.
//!
//! ```
//! use serde::{Deserialize, Serialize};
//! use tidings_core::{typed_event, Bus};
//!
//! #[derive(Serialize, Deserialize)]
//! struct TriviaStarted { question: String }
//! typed_event!(TriviaStarted => "trivia.started");
//!
//! let bus = Bus::new();
//! let _sub = bus.on_typed(|t: &TriviaStarted, e| println!("#{}: {}", e.seq, t.question)).unwrap();
//! bus.emit_typed(&TriviaStarted { question: "6 x 7?".into() }).unwrap();
//! ```

use std::borrow::Cow;

use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::event::Event;

/// A payload type with its event name.
///
/// For a type that is one event, `PATTERN` is its name (see
/// [`typed_event!`](crate::typed_event)). For an enum of several events
/// (seed 003's `EntityEvent`), `PATTERN` covers them all (`entity.*`) and
/// [`TypedEvent::name`] gives each value's own name.
pub trait TypedEvent: Serialize + DeserializeOwned + Send + Sync + 'static {
    /// What typed subscriptions listen to.
    const PATTERN: &'static str;

    /// The name this value is emitted under (default: `PATTERN`).
    fn name(&self) -> Cow<'static, str> {
        Cow::Borrowed(Self::PATTERN)
    }
}

/// Implements [`TypedEvent`] for a type that is exactly one event name.
#[macro_export]
macro_rules! typed_event {
    ($ty:ty => $name:literal) => {
        impl $crate::TypedEvent for $ty {
            const PATTERN: &'static str = $name;
        }
    };
}

/// Decodes an event's payload as `T`, with a message naming both on failure.
pub(crate) fn decode<T: TypedEvent>(event: &Event) -> Result<T, String> {
    event.data_as::<T>().map_err(|e| {
        format!(
            "event #{} {:?} does not decode as {}: {e}",
            event.seq,
            event.name,
            std::any::type_name::<T>()
        )
    })
}
