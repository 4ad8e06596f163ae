//! Publish bodies into events: the envelope `{"name","data",...}`, a JSON
//! array of them (an atomic batch), and CloudEvents in structured mode
//! (`application/cloudevents+json`) and batch mode
//! (`application/cloudevents-batch+json`).
//!
//! Only JSON content types are taken. A form or `text/plain` body is a
//! "simple" cross-site request a browser sends without a CORS preflight,
//! so taking it would let any web page publish: it is refused.

use serde::Deserialize;
use serde_json::Value;
use tidings_core::Priority;

use super::{ErrorKind, ServiceError};

/// An event as a client publishes it.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Incoming {
    /// The event name.
    pub name: String,
    /// The payload (default `null`).
    #[serde(default)]
    pub data: Value,
    /// The emitting component (default `"http"`).
    #[serde(default)]
    pub source: Option<String>,
    /// Idempotency key, in the caller's namespace.
    #[serde(default)]
    pub key: Option<String>,
    /// Priority metadata.
    #[serde(default)]
    pub priority: Option<Priority>,
    /// When it happened (default: now; at most `max_future_secs` ahead).
    #[serde(default)]
    pub time: Option<chrono::DateTime<chrono::Utc>>,
}

/// A decoded publish body.
#[derive(Debug)]
pub struct Decoded {
    /// The events, in order.
    pub events: Vec<Incoming>,
    /// The body was a batch (answered with an array).
    pub batch: bool,
}

/// A CloudEvent (structured mode, JSON).
#[derive(Deserialize)]
struct CloudEvent {
    specversion: String,
    #[serde(rename = "type")]
    kind: String,
    source: String,
    id: String,
    #[serde(default)]
    time: Option<chrono::DateTime<chrono::Utc>>,
    #[serde(default)]
    data: Value,
}

impl CloudEvent {
    fn into_incoming(self) -> Result<Incoming, ServiceError> {
        if self.specversion != "1.0" {
            return Err(ServiceError::bad_request(
                "invalid_cloudevent",
                format!(
                    "unsupported CloudEvents specversion {:?} (expected \"1.0\")",
                    self.specversion
                ),
            ));
        }
        Ok(Incoming {
            name: self.kind,
            data: self.data,
            // CloudEvents: source + id identify an event; a repeat is a
            // duplicate (within the caller's key namespace, like any key).
            key: Some(format!("ce:{}:{}", self.source, self.id)),
            source: Some(self.source),
            priority: None,
            time: self.time,
        })
    }
}

fn parse_json<T: serde::de::DeserializeOwned>(
    bytes: &[u8],
    code: &'static str,
) -> Result<T, ServiceError> {
    serde_json::from_slice(bytes)
        .map_err(|e| ServiceError::bad_request(code, format!("malformed JSON body: {e}")))
}

/// The media type without parameters, lowercased.
fn media_type(content_type: &str) -> String {
    content_type
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase()
}

/// Decodes a publish body by its content type.
pub fn decode_publish(content_type: Option<&str>, body: &[u8]) -> Result<Decoded, ServiceError> {
    let media = content_type.map(media_type);
    match media.as_deref() {
        Some("application/cloudevents-batch+json") => {
            let batch: Vec<CloudEvent> = parse_json(body, "invalid_cloudevent")?;
            let events = batch
                .into_iter()
                .map(CloudEvent::into_incoming)
                .collect::<Result<_, _>>()?;
            Ok(Decoded {
                events,
                batch: true,
            })
        }
        Some("application/cloudevents+json") => {
            let ce: CloudEvent = parse_json(body, "invalid_cloudevent")?;
            Ok(Decoded {
                events: vec![ce.into_incoming()?],
                batch: false,
            })
        }
        Some("application/json") => decode_envelopes(body),
        other => Err(ServiceError::new(
            ErrorKind::UnsupportedMediaType,
            "unsupported_media_type",
            format!(
                "{}: publish with Content-Type application/json, application/cloudevents+json or application/cloudevents-batch+json",
                match other {
                    Some(t) => format!("content type {t:?} is not accepted"),
                    None => "the request has no Content-Type".to_owned(),
                }
            ),
        )),
    }
}

fn decode_envelopes(body: &[u8]) -> Result<Decoded, ServiceError> {
    let value: Value = parse_json(body, "malformed_json")?;
    let one = |v: Value, i: Option<usize>| -> Result<Incoming, ServiceError> {
        let at = i.map(|i| format!("event {i}: ")).unwrap_or_default();
        if !v.is_object() {
            return Err(ServiceError::bad_request(
                "invalid_event",
                format!("{at}an event must be a JSON object"),
            ));
        }
        if v.get("name").is_none() {
            return Err(ServiceError::bad_request(
                "missing_name",
                format!("{at}the event has no \"name\""),
            ));
        }
        serde_json::from_value(v)
            .map_err(|e| ServiceError::bad_request("invalid_event", format!("{at}{e}")))
    };
    match value {
        Value::Array(items) => {
            let events = items
                .into_iter()
                .enumerate()
                .map(|(i, v)| one(v, Some(i)))
                .collect::<Result<_, _>>()?;
            Ok(Decoded {
                events,
                batch: true,
            })
        }
        v => Ok(Decoded {
            events: vec![one(v, None)?],
            batch: false,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_json_content_types_are_taken() {
        let body = br#"{"name":"a.b"}"#;
        for ok in [
            "application/json",
            "application/json; charset=utf-8",
            "Application/JSON",
        ] {
            assert!(decode_publish(Some(ok), body).is_ok(), "{ok}");
        }
        for refused in [
            None,
            Some("text/plain"),
            Some("application/x-www-form-urlencoded"),
            Some("multipart/form-data; boundary=x"),
            Some("application/jsonx"),
        ] {
            let e = decode_publish(refused, body).unwrap_err();
            assert_eq!(e.kind, ErrorKind::UnsupportedMediaType, "{refused:?}");
        }
    }

    #[test]
    fn cloudevents_get_their_source_and_id_as_key() {
        let d = decode_publish(
            Some("application/cloudevents+json"),
            br#"{"specversion":"1.0","type":"a.b","source":"/s","id":"1"}"#,
        )
        .unwrap();
        assert_eq!(d.events[0].key.as_deref(), Some("ce:/s:1"));
        let e = decode_publish(
            Some("application/cloudevents+json"),
            br#"{"specversion":"0.3","type":"a.b","source":"/s","id":"1"}"#,
        )
        .unwrap_err();
        assert_eq!(e.code, "invalid_cloudevent");
    }
}
