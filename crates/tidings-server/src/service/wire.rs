//! How events look to clients, written once for every transport.
//!
//! Idempotency keys are stored in the log as `namespace` + [`KEY_SEP`] +
//! the caller's key, so callers never share keys. Clients see only their
//! own key part: [`WireEvent`] strips the namespace.

use serde::Serialize;
use tidings_core::{Event, Priority};

use super::ServiceError;

/// Separates a key's namespace from the caller's key. Client keys may not
/// contain control characters, so the last one is always the separator.
pub const KEY_SEP: char = '\u{1f}';

/// Longest idempotency key a client may send, in bytes.
pub const MAX_KEY_LEN: usize = 255;

/// The stored form of `key` in `namespace`; refuses a bad key.
pub fn namespaced_key(namespace: &str, key: &str) -> Result<String, ServiceError> {
    if key.is_empty() || key.len() > MAX_KEY_LEN || key.chars().any(char::is_control) {
        return Err(ServiceError::bad_request(
            "invalid_key",
            format!(
                "an idempotency key must be 1 to {MAX_KEY_LEN} bytes without control characters"
            ),
        ));
    }
    Ok(format!("{namespace}{KEY_SEP}{key}"))
}

/// The caller's part of a stored key.
pub fn client_key(stored: &str) -> &str {
    stored.rsplit(KEY_SEP).next().unwrap_or(stored)
}

/// An event as clients see it: the envelope, with the key's namespace
/// stripped. Same fields and order as [`Event`]'s own serialization.
#[derive(Serialize)]
pub struct WireEvent<'a> {
    seq: u64,
    id: &'a uuid::Uuid,
    name: &'a str,
    source: &'a str,
    time: &'a chrono::DateTime<chrono::Utc>,
    data: &'a serde_json::Value,
    #[serde(skip_serializing_if = "Option::is_none")]
    key: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    priority: Option<Priority>,
}

impl<'a> From<&'a Event> for WireEvent<'a> {
    fn from(e: &'a Event) -> Self {
        WireEvent {
            seq: e.seq,
            id: &e.id,
            name: &e.name,
            source: &e.source,
            time: &e.time,
            data: &e.data,
            key: e.key.as_deref().map(client_key),
            priority: e.priority,
        }
    }
}

/// Serializes `e` as clients see it.
pub fn to_json(e: &Event) -> String {
    serde_json::to_string(&WireEvent::from(e)).expect("an event always serializes")
}

/// `e` as a JSON value, as clients see it.
pub fn to_value(e: &Event) -> serde_json::Value {
    serde_json::to_value(WireEvent::from(e)).expect("an event always serializes")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_round_trip_and_bad_keys_are_refused() {
        let k = namespaced_key("sub:a\u{1f}b", "K").unwrap();
        assert_eq!(client_key(&k), "K");
        assert!(namespaced_key("n", "").is_err());
        assert!(namespaced_key("n", "a\u{1f}b").is_err());
        assert!(namespaced_key("n", &"x".repeat(256)).is_err());
        assert_eq!(client_key("plain"), "plain");
    }

    #[test]
    fn the_wire_form_matches_the_envelope_but_for_the_key() {
        let mut ev = tidings_core::NewEvent::new("a.b", serde_json::json!({"x": 1})).unwrap();
        ev.key = Some(namespaced_key("ns", "K").unwrap());
        let event = Event {
            seq: 7,
            id: ev.id,
            name: ev.name.clone(),
            source: ev.source.clone(),
            time: ev.time,
            data: ev.data.clone(),
            key: ev.key.clone(),
            priority: Some(Priority::High),
        };
        let mut expected = serde_json::to_value(&event).unwrap();
        expected["key"] = "K".into();
        assert_eq!(to_value(&event), expected);
        assert_eq!(
            serde_json::from_str::<serde_json::Value>(&to_json(&event)).unwrap(),
            expected
        );
    }
}
