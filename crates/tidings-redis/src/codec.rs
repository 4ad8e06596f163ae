//! Stream entry layout: how an [`Event`] is stored as the fields of one
//! Redis stream entry, and read back.
//!
//! | field      | value                                                   |
//! |------------|---------------------------------------------------------|
//! | `id`       | the event id, hyphenated UUID                            |
//! | `name`     | the event name                                           |
//! | `source`   | the source                                               |
//! | `time`     | microseconds since the Unix epoch, decimal               |
//! | `data`     | the payload as JSON text                                 |
//! | `key`      | the idempotency key (only when the event has one)        |
//! | `priority` | `low`, `normal` or `high` (only when the event has one)  |
//! | `at`       | commit time, µs by Redis' clock (added by the append     |
//! |            | script; read only by age retention)                      |
//!
//! The entry id is `<seq>-0`; `at` comes first in the entry, the rest in
//! the order above. Fields are read by name. Times are truncated to microseconds when
//! encoded, and the committed events an append returns carry the truncated
//! time too, so they equal what a later read returns.

use chrono::{DateTime, Utc};
use redis::Value;
use tidings_core::{Event, NewEvent, Priority};
use uuid::Uuid;

use crate::error::StorageError;

/// A new event encoded for the append script.
pub(crate) struct Encoded {
    /// The event with its time truncated to microseconds (still without seq).
    pub event: NewEvent,
    /// Field/value items, in stream-entry order.
    pub fields: Vec<String>,
}

fn priority_str(p: Priority) -> &'static str {
    match p {
        Priority::Low => "low",
        Priority::Normal => "normal",
        Priority::High => "high",
    }
}

fn parse_priority(s: &str) -> Result<Priority, StorageError> {
    match s {
        "low" => Ok(Priority::Low),
        "normal" => Ok(Priority::Normal),
        "high" => Ok(Priority::High),
        other => Err(StorageError::decode(format!("unknown priority {other:?}"))),
    }
}

/// Encodes one event. Fails only if the payload cannot be serialized.
pub(crate) fn encode(mut event: NewEvent) -> Result<Encoded, StorageError> {
    let time_us = event.time.timestamp_micros();
    if let Some(t) = DateTime::from_timestamp_micros(time_us) {
        event.time = t;
    }
    let data = serde_json::to_string(&event.data)
        .map_err(|e| StorageError::decode(format!("cannot serialize the payload: {e}")))?;
    let mut fields = Vec::with_capacity(14);
    fields.extend([
        "id".to_owned(),
        event.id.hyphenated().to_string(),
        "name".to_owned(),
        event.name.clone(),
        "source".to_owned(),
        event.source.to_string(),
        "time".to_owned(),
        time_us.to_string(),
        "data".to_owned(),
        data,
    ]);
    if let Some(k) = &event.key {
        fields.push("key".to_owned());
        fields.push(k.clone());
    }
    if let Some(p) = event.priority {
        fields.push("priority".to_owned());
        fields.push(priority_str(p).to_owned());
    }
    Ok(Encoded { event, fields })
}

/// Parses a stream id `<seq>-0` (any sequence part is accepted) to the seq.
pub(crate) fn parse_id(id: &[u8]) -> Result<u64, StorageError> {
    let s = std::str::from_utf8(id).map_err(|_| StorageError::decode("non-UTF-8 stream id"))?;
    let ms = s.split('-').next().unwrap_or(s);
    ms.parse()
        .map_err(|_| StorageError::decode(format!("bad stream id {s:?}")))
}

/// Text of a bulk or simple string value.
pub(crate) fn text(v: &Value) -> Result<&str, StorageError> {
    match v {
        Value::BulkString(b) => {
            std::str::from_utf8(b).map_err(|_| StorageError::decode("non-UTF-8 field"))
        }
        Value::SimpleString(s) => Ok(s),
        other => Err(StorageError::decode(format!(
            "expected a string, got {other:?}"
        ))),
    }
}

/// An integer value (integer reply or decimal string).
pub(crate) fn int(v: &Value) -> Result<i64, StorageError> {
    match v {
        Value::Int(i) => Ok(*i),
        other => text(other)?
            .parse()
            .map_err(|_| StorageError::decode(format!("expected an integer, got {other:?}"))),
    }
}

/// A non-negative integer value, as a seq.
pub(crate) fn seq_of(v: &Value) -> Result<u64, StorageError> {
    u64::try_from(int(v)?).map_err(|_| StorageError::decode("negative sequence number"))
}

/// Builds an event from its seq and field/value pairs.
pub(crate) fn decode_fields<'a, I>(seq: u64, mut items: I) -> Result<Event, StorageError>
where
    I: Iterator<Item = &'a str>,
{
    let mut id = None;
    let mut name = None;
    let mut source = None;
    let mut time = None;
    let mut data = None;
    let mut key = None;
    let mut priority = None;
    while let Some(field) = items.next() {
        let value = items
            .next()
            .ok_or_else(|| StorageError::decode(format!("entry {seq}: odd field list")))?;
        match field {
            "id" => {
                id = Some(Uuid::parse_str(value).map_err(|e| {
                    StorageError::decode(format!("entry {seq}: bad id {value:?}: {e}"))
                })?)
            }
            "name" => name = Some(value.to_owned()),
            "source" => source = Some(value.to_owned()),
            "time" => {
                let us: i64 = value.parse().map_err(|_| {
                    StorageError::decode(format!("entry {seq}: bad time {value:?}"))
                })?;
                time = Some(DateTime::<Utc>::from_timestamp_micros(us).ok_or_else(|| {
                    StorageError::decode(format!("entry {seq}: time {us} out of range"))
                })?);
            }
            "data" => {
                data = Some(serde_json::from_str(value).map_err(|e| {
                    StorageError::decode(format!("entry {seq}: bad data JSON: {e}"))
                })?)
            }
            "key" => key = Some(value.to_owned()),
            "priority" => priority = Some(parse_priority(value)?),
            // Fields added by a newer version are ignored.
            _ => {}
        }
    }
    let missing = |f: &str| StorageError::decode(format!("entry {seq}: no {f} field"));
    Ok(Event {
        seq,
        id: id.ok_or_else(|| missing("id"))?,
        name: name.ok_or_else(|| missing("name"))?,
        source: tidings_core::source_from_storage(source.ok_or_else(|| missing("source"))?),
        time: time.ok_or_else(|| missing("time"))?,
        data: data.ok_or_else(|| missing("data"))?,
        key,
        priority,
    })
}

/// Decodes one `XRANGE` item: `[id, [field, value, ...]]`.
pub(crate) fn decode_entry(v: &Value) -> Result<Event, StorageError> {
    let Value::Array(parts) = v else {
        return Err(StorageError::decode(format!(
            "expected a stream entry, got {v:?}"
        )));
    };
    let [id, fields] = parts.as_slice() else {
        return Err(StorageError::decode("a stream entry is not [id, fields]"));
    };
    let seq = parse_id(text(id)?.as_bytes())?;
    let Value::Array(fields) = fields else {
        return Err(StorageError::decode(format!(
            "entry {seq}: fields are not an array"
        )));
    };
    let texts = fields.iter().map(text).collect::<Result<Vec<&str>, _>>()?;
    decode_fields(seq, texts.into_iter())
}

/// Decodes the JSON an idempotency key holds: `[seq, field, value, ...]`.
pub(crate) fn decode_stored(json: &str) -> Result<Event, StorageError> {
    let items: Vec<String> = serde_json::from_str(json)
        .map_err(|e| StorageError::decode(format!("bad idempotency record: {e}")))?;
    let (seq, rest) = items
        .split_first()
        .ok_or_else(|| StorageError::decode("empty idempotency record"))?;
    let seq: u64 = seq
        .parse()
        .map_err(|_| StorageError::decode(format!("bad seq {seq:?} in idempotency record")))?;
    decode_fields(seq, rest.iter().map(String::as_str))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn fields_roundtrip() {
        let e = NewEvent::new("a.b", json!({"x": [1, "two"]}))
            .unwrap()
            .source("s")
            .key("k-1")
            .priority(Priority::High);
        let enc = encode(e).unwrap();
        let back = decode_fields(9, enc.fields.iter().map(String::as_str)).unwrap();
        assert_eq!(back, enc.event.clone().commit(9));
        assert_eq!(back.time.timestamp_subsec_nanos() % 1000, 0);
    }

    #[test]
    fn optional_fields_are_omitted() {
        let enc = encode(NewEvent::new("a", json!(null)).unwrap()).unwrap();
        assert_eq!(enc.fields.len(), 10);
        let back = decode_fields(1, enc.fields.iter().map(String::as_str)).unwrap();
        assert_eq!(back.key, None);
        assert_eq!(back.priority, None);
    }

    #[test]
    fn stored_record_roundtrips() {
        let enc = encode(NewEvent::new("a", json!(1)).unwrap().key("k")).unwrap();
        let mut items = vec!["42".to_owned()];
        items.extend(enc.fields.iter().cloned());
        let json = serde_json::to_string(&items).unwrap();
        assert_eq!(decode_stored(&json).unwrap(), enc.event.commit(42));
    }

    #[test]
    fn entry_decoding_rejects_garbage() {
        assert!(decode_entry(&Value::Int(3)).is_err());
        let bad = Value::Array(vec![
            Value::BulkString(b"5-0".to_vec()),
            Value::Array(vec![Value::BulkString(b"id".to_vec())]),
        ]);
        assert!(decode_entry(&bad).is_err());
        assert_eq!(parse_id(b"17-0").unwrap(), 17);
        assert!(parse_id(b"x-0").is_err());
    }
}
