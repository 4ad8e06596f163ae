//! Publish bodies into events: the envelope `{"name","data",...}`, a JSON
//! array of them (an atomic batch), and CloudEvents in structured mode
//! (`application/cloudevents+json`) and batch mode
//! (`application/cloudevents-batch+json`).
//!
//! CloudEvents binary mode (`ce-*` headers, the body is `data` in its own
//! content type) is [`decode_binary_cloudevent`]: JSON data is kept as
//! JSON, text as a string, anything else as a base64 string.
//!
//! Only JSON content types are taken for the other modes. A form or `text/plain` body is a
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
            // The source's length keeps two pairs from sharing a key
            // (`urn:a` + `1` against `urn` + `a:1`).
            key: Some(format!(
                "ce:{}:{}:{}",
                self.source.len(),
                self.source,
                self.id
            )),
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

/// Decodes an HTTP ack body, `{"seq": N}` as `application/json`, into
/// its seq.
pub fn decode_ack(content_type: Option<&str>, body: &[u8]) -> Result<u64, ServiceError> {
    #[derive(serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Ack {
        seq: u64,
    }
    if content_type.map(media_type).as_deref() != Some("application/json") {
        return Err(ServiceError::new(
            ErrorKind::UnsupportedMediaType,
            "unsupported_media_type",
            "send {\"seq\":N} as application/json",
        ));
    }
    let ack: Ack = serde_json::from_slice(body).map_err(|e| {
        ServiceError::bad_request("invalid_ack", format!("expected {{\"seq\":N}}: {e}"))
    })?;
    Ok(ack.seq)
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
    fn an_ack_is_one_seq_in_json() {
        assert_eq!(
            decode_ack(Some("application/json"), br#"{"seq":7}"#).unwrap(),
            7
        );
        let kind = |t: Option<&str>, body: &[u8]| decode_ack(t, body).unwrap_err().kind;
        for t in [None, Some("text/plain"), Some("application/jsonx")] {
            assert_eq!(
                kind(t, br#"{"seq":7}"#),
                ErrorKind::UnsupportedMediaType,
                "{t:?}"
            );
        }
        for body in [&br#"{"seq":-1}"#[..], br#"{"seq":1,"x":2}"#, b"[]", b"{"] {
            let e = decode_ack(Some("application/json"), body).unwrap_err();
            assert_eq!(e.code, "invalid_ack", "{body:?}");
        }
    }

    #[test]
    fn cloudevents_get_their_source_and_id_as_key() {
        let d = decode_publish(
            Some("application/cloudevents+json"),
            br#"{"specversion":"1.0","type":"a.b","source":"/s","id":"1"}"#,
        )
        .unwrap();
        assert_eq!(d.events[0].key.as_deref(), Some("ce:2:/s:1"));
        let key = |source: &str, id: &str| {
            let body = serde_json::json!({"specversion": "1.0", "type": "a.b", "source": source, "id": id});
            let d = decode_publish(
                Some("application/cloudevents+json"),
                body.to_string().as_bytes(),
            );
            d.unwrap().events[0].key.clone()
        };
        assert_ne!(
            key("urn:shop", "1"),
            key("urn", "shop:1"),
            "distinct pairs, distinct keys"
        );
        let e = decode_publish(
            Some("application/cloudevents+json"),
            br#"{"specversion":"0.3","type":"a.b","source":"/s","id":"1"}"#,
        )
        .unwrap_err();
        assert_eq!(e.code, "invalid_cloudevent");
    }
}

/// Decodes a CloudEvents binary-mode request: `headers` are the request's
/// `ce-*` headers (lowercase names, with the prefix), `content_type` and
/// `body` are the event's data.
pub fn decode_binary_cloudevent(
    headers: &[(String, String)],
    content_type: Option<&str>,
    body: &[u8],
) -> Result<Decoded, ServiceError> {
    let get = |name: &str| {
        headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    };
    let required = |name: &'static str| {
        get(name).map(str::to_owned).ok_or_else(|| {
            ServiceError::bad_request(
                "invalid_cloudevent",
                format!("a binary-mode CloudEvent needs the {name} header"),
            )
        })
    };
    let time = get("ce-time")
        .map(|t| {
            chrono::DateTime::parse_from_rfc3339(t)
                .map(|t| t.with_timezone(&chrono::Utc))
                .map_err(|e| {
                    ServiceError::bad_request(
                        "invalid_cloudevent",
                        format!("ce-time {t:?} is not an RFC 3339 time: {e}"),
                    )
                })
        })
        .transpose()?;
    let media = content_type.map(media_type);
    let data = match media.as_deref() {
        _ if body.is_empty() => Value::Null,
        Some(m) if m == "application/json" || m.ends_with("+json") => {
            parse_json(body, "invalid_cloudevent")?
        }
        Some(m) if m.starts_with("text/") => {
            Value::String(String::from_utf8(body.to_vec()).map_err(|_| {
                ServiceError::bad_request("invalid_cloudevent", "text data is not UTF-8")
            })?)
        }
        _ => Value::String(base64_encode(body)),
    };
    let ce = CloudEvent {
        specversion: required("ce-specversion")?,
        kind: required("ce-type")?,
        source: required("ce-source")?,
        id: required("ce-id")?,
        time,
        data,
    };
    Ok(Decoded {
        events: vec![ce.into_incoming()?],
        batch: false,
    })
}

fn base64_encode(bytes: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

#[cfg(test)]
mod binary_tests {
    use super::*;

    fn headers(extra: &[(&str, &str)]) -> Vec<(String, String)> {
        let mut h: Vec<(String, String)> = [
            ("ce-specversion", "1.0"),
            ("ce-type", "order.placed"),
            ("ce-source", "/shop"),
            ("ce-id", "A-1"),
        ]
        .iter()
        .chain(extra)
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        h.sort();
        h
    }

    #[test]
    fn binary_mode_keeps_json_text_and_bytes() {
        let d = decode_binary_cloudevent(
            &headers(&[("ce-time", "2026-01-02T03:04:05Z")]),
            Some("application/json"),
            br#"{"total":3}"#,
        )
        .unwrap();
        let e = &d.events[0];
        assert_eq!(e.name, "order.placed");
        assert_eq!(e.data, serde_json::json!({"total": 3}));
        assert_eq!(e.key.as_deref(), Some("ce:5:/shop:A-1"));
        assert_eq!(e.time.unwrap().to_rfc3339(), "2026-01-02T03:04:05+00:00");
        let d = decode_binary_cloudevent(&headers(&[]), Some("text/plain"), b"hi").unwrap();
        assert_eq!(d.events[0].data, "hi");
        let d = decode_binary_cloudevent(
            &headers(&[]),
            Some("application/octet-stream"),
            &[0, 255, 1],
        )
        .unwrap();
        assert_eq!(d.events[0].data, "AP8B");
        assert_eq!(base64_encode(b"ab"), "YWI=");
        assert_eq!(base64_encode(b"a"), "YQ==");
        let mut missing = headers(&[]);
        missing.retain(|(k, _)| k != "ce-id");
        let e = decode_binary_cloudevent(&missing, None, b"").unwrap_err();
        assert!(e.message.contains("ce-id"), "{}", e.message);
        let e =
            decode_binary_cloudevent(&headers(&[("ce-time", "yesterday")]), None, b"").unwrap_err();
        assert!(e.message.contains("ce-time"), "{}", e.message);
    }
}
