//! Stream entry layout: how [`Event`]s are stored in Redis stream entries,
//! and read back.
//!
//! # Group entries (written since issue 10)
//!
//! One entry holds the fresh events of one call of the append script, in
//! seq order, at most [`EVENTS_PER_ENTRY`] of them (a larger call writes
//! several entries). Its id is `<seq of its last event>-0`, so `XRANGE
//! (after-0 +` starts at the entry holding `after + 1` and the stream's
//! last id is the last seq. Its fields:
//!
//! | field | value                                                        |
//! |-------|--------------------------------------------------------------|
//! | `at`  | commit time, µs by Redis' clock (read by age retention)       |
//! | `e`   | one event's record, repeated once per event, in seq order     |
//!
//! The `n` events of an entry with id `L` have the seqs `L - n + 1 ..= L`.
//! A record is JSON `{"time": µs, "id", "name", "source", "data", "key"?,
//! "priority"?}` with `time` first, so a script can read it with a pattern
//! (`seq_before`) without decoding the rest; fields a newer version adds
//! are ignored. Times are truncated to microseconds when encoded, and the
//! committed events an append returns carry the truncated time too, so they
//! equal what a later read returns.
//!
//! Why an entry holds many events: a script pays for every command it
//! calls and for every value it hands on to one (copied into Lua and
//! back); one `XADD` per up to 128 events of a group instead of one per
//! event, and one record per event instead of ten field and value
//! strings, is what brings an append close to a raw `XADD`
//! (`crates/tidings-bench/results/EARLIER.md`, "Redis: one stream entry
//! per group"). Short arguments themselves are cheap
//! (about 0.01 µs each, measured).
//!
//! # Single entries (written before)
//!
//! Entries written by earlier versions hold one event each: id `<seq>-0`,
//! fields `at` (when present), `id`, `name`, `source`, `time` (µs),
//! `data` (JSON text), `key` and `priority` when present. They are still
//! read; a stream may hold both kinds, the older ones first.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use redis::Value;
use serde::{Deserialize, Serialize};
use tidings_core::{Event, NewEvent, Priority, SharedEvent};
use uuid::Uuid;

use crate::error::StorageError;

/// Most events one stream entry holds: bounds how far a read of one event
/// can overshoot, and the `XADD`'s argument list.
pub(crate) const EVENTS_PER_ENTRY: usize = 128;

/// A new event encoded for the append script.
pub(crate) struct Encoded {
    /// The event with its time truncated to microseconds (still without seq).
    pub event: NewEvent,
    /// Its record: the value of its `e` field.
    pub record: String,
}

/// A record as written (`time` first: scripts match it).
#[derive(Serialize)]
struct RecordOut<'a> {
    time: i64,
    id: Uuid,
    name: &'a str,
    source: &'a str,
    data: &'a serde_json::Value,
    #[serde(skip_serializing_if = "Option::is_none")]
    key: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    priority: Option<Priority>,
}

/// A record as read.
#[derive(Deserialize)]
struct RecordIn {
    time: i64,
    id: Uuid,
    name: String,
    source: String,
    data: serde_json::Value,
    #[serde(default)]
    key: Option<String>,
    #[serde(default)]
    priority: Option<Priority>,
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
    let time = event.time.timestamp_micros();
    if let Some(t) = DateTime::from_timestamp_micros(time) {
        event.time = t;
    }
    let record = serde_json::to_string(&RecordOut {
        time,
        id: event.id,
        name: &event.name,
        source: &event.source,
        data: &event.data,
        key: event.key.as_deref(),
        priority: event.priority,
    })
    .map_err(|e| StorageError::decode(format!("cannot serialize the event: {e}")))?;
    Ok(Encoded { event, record })
}

/// Decodes one record as the event `seq`.
fn decode_record(seq: u64, record: &str) -> Result<Event, StorageError> {
    let r: RecordIn = serde_json::from_str(record)
        .map_err(|e| StorageError::decode(format!("event {seq}: bad record: {e}")))?;
    Ok(Event {
        seq,
        id: r.id,
        name: r.name,
        source: tidings_core::source_from_storage(r.source),
        time: DateTime::<Utc>::from_timestamp_micros(r.time).ok_or_else(|| {
            StorageError::decode(format!("event {seq}: time {} out of range", r.time))
        })?,
        data: r.data,
        key: r.key,
        priority: r.priority,
    })
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

/// Builds an event from its seq and the field/value pairs of a single
/// entry (the layout written before group entries).
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

/// Decodes the events of one `XRANGE` item (`[id, [field, value, ...]]`,
/// either layout) whose seq is at least `from`, appending them to `out`
/// until it holds `max`.
pub(crate) fn decode_entry(
    v: &Value,
    from: u64,
    max: usize,
    out: &mut Vec<SharedEvent>,
) -> Result<(), StorageError> {
    let Value::Array(parts) = v else {
        return Err(StorageError::decode(format!(
            "expected a stream entry, got {v:?}"
        )));
    };
    let [id, fields] = parts.as_slice() else {
        return Err(StorageError::decode("a stream entry is not [id, fields]"));
    };
    let last = parse_id(text(id)?.as_bytes())?;
    let Value::Array(fields) = fields else {
        return Err(StorageError::decode(format!(
            "entry {last}: fields are not an array"
        )));
    };
    if fields.len() % 2 != 0 {
        return Err(StorageError::decode(format!(
            "entry {last}: odd field list"
        )));
    }
    let mut records = Vec::new();
    for pair in fields.chunks_exact(2) {
        if text(&pair[0])? == "e" {
            records.push(text(&pair[1])?);
        }
    }
    if records.is_empty() {
        // A single entry (written before group entries).
        if last >= from && out.len() < max {
            let texts = fields.iter().map(text).collect::<Result<Vec<&str>, _>>()?;
            out.push(Arc::new(decode_fields(last, texts.into_iter())?));
        }
        return Ok(());
    }
    let first = (last + 1)
        .checked_sub(records.len() as u64)
        .ok_or_else(|| {
            StorageError::decode(format!("entry {last} holds {} events", records.len()))
        })?;
    for (seq, record) in (first..).zip(records) {
        if out.len() >= max {
            break;
        }
        if seq >= from {
            out.push(Arc::new(decode_record(seq, record)?));
        }
    }
    Ok(())
}

/// The seq at the head of an idempotency record.
fn stored_seq(seq: &str) -> Result<u64, StorageError> {
    seq.parse()
        .map_err(|_| StorageError::decode(format!("bad seq {seq:?} in idempotency record")))
}

/// Decodes what an idempotency key holds: `<seq> <record>`, or (written
/// before group entries) JSON `[seq, field, value, ...]`.
pub(crate) fn decode_stored(stored: &str) -> Result<Event, StorageError> {
    if !stored.starts_with('[') {
        let (seq, record) = stored
            .split_once(' ')
            .ok_or_else(|| StorageError::decode("bad idempotency record: no seq"))?;
        return decode_record(stored_seq(seq)?, record);
    }
    let items: Vec<String> = serde_json::from_str(stored)
        .map_err(|e| StorageError::decode(format!("bad idempotency record: {e}")))?;
    let (seq, rest) = items
        .split_first()
        .ok_or_else(|| StorageError::decode("empty idempotency record"))?;
    decode_fields(stored_seq(seq)?, rest.iter().map(String::as_str))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn bulk(s: &str) -> Value {
        Value::BulkString(s.as_bytes().to_vec())
    }

    /// A group entry with id `last` holding `records`, as the script writes it.
    fn group_entry(last: u64, records: &[&str]) -> Value {
        let mut fields = vec![bulk("at"), bulk("1764240000000000")];
        for r in records {
            fields.extend([bulk("e"), bulk(r)]);
        }
        Value::Array(vec![bulk(&format!("{last}-0")), Value::Array(fields)])
    }

    fn decode_all(v: &Value, from: u64, max: usize) -> Result<Vec<Event>, StorageError> {
        let mut out = Vec::new();
        decode_entry(v, from, max, &mut out)?;
        Ok(out.into_iter().map(|e| (*e).clone()).collect())
    }

    #[test]
    fn records_roundtrip_with_their_seqs() {
        let a = encode(
            NewEvent::new("a.b", json!({"x": [1, "two"]}))
                .unwrap()
                .source("s")
                .key("k-1")
                .priority(Priority::High),
        )
        .unwrap();
        let b = encode(NewEvent::new("c", json!(null)).unwrap()).unwrap();
        assert!(a.record.starts_with(r#"{"time":"#), "{}", a.record);
        assert!(!b.record.contains("key") && !b.record.contains("priority"));
        let entry = group_entry(9, &[&a.record, &b.record]);
        let back = decode_all(&entry, 0, usize::MAX).unwrap();
        assert_eq!(back, [a.event.clone().commit(8), b.event.clone().commit(9)]);
        assert_eq!(back[0].time.timestamp_subsec_nanos() % 1000, 0);
        // `from` skips the events before it, `max` stops at a count.
        assert_eq!(decode_all(&entry, 9, 10).unwrap(), [b.event.commit(9)]);
        assert_eq!(decode_all(&entry, 0, 1).unwrap(), [a.event.commit(8)]);
    }

    #[test]
    fn single_entries_written_before_still_decode() {
        let e = NewEvent::new("old", json!({"k": 1})).unwrap().key("kk");
        let us = e.time.timestamp_micros();
        let entry = Value::Array(vec![
            bulk("5-0"),
            Value::Array(
                [
                    "at",
                    "1",
                    "id",
                    &e.id.to_string(),
                    "name",
                    "old",
                    "source",
                    "app",
                    "time",
                    &us.to_string(),
                    "data",
                    r#"{"k":1}"#,
                    "key",
                    "kk",
                ]
                .iter()
                .map(|s| bulk(s))
                .collect(),
            ),
        ]);
        let back = decode_all(&entry, 0, 10).unwrap();
        assert_eq!(back.len(), 1);
        assert_eq!(
            (back[0].seq, back[0].id, back[0].name.as_str()),
            (5, e.id, "old")
        );
        assert_eq!(back[0].key.as_deref(), Some("kk"));
        assert!(decode_all(&entry, 6, 10).unwrap().is_empty());
    }

    #[test]
    fn stored_records_roundtrip_in_both_layouts() {
        let enc = encode(NewEvent::new("a", json!(1)).unwrap().key("k")).unwrap();
        let stored = format!("42 {}", enc.record);
        assert_eq!(
            decode_stored(&stored).unwrap(),
            enc.event.clone().commit(42)
        );
        let old = json!([
            "7",
            "id",
            enc.event.id.to_string(),
            "name",
            "a",
            "source",
            "app",
            "time",
            enc.event.time.timestamp_micros().to_string(),
            "data",
            "1",
            "key",
            "k"
        ]);
        assert_eq!(
            decode_stored(&old.to_string()).unwrap(),
            enc.event.commit(7)
        );
        assert!(decode_stored("x {}").is_err());
        assert!(decode_stored("nothing").is_err());
    }

    #[test]
    fn entry_decoding_rejects_garbage() {
        assert!(decode_all(&Value::Int(3), 0, 10).is_err());
        let odd = Value::Array(vec![bulk("5-0"), Value::Array(vec![bulk("id")])]);
        assert!(decode_all(&odd, 0, 10).is_err());
        assert!(decode_all(&group_entry(1, &["{}", "{}"]), 0, 10).is_err());
        assert!(decode_all(&group_entry(3, &[r#"{"time":1}"#]), 0, 10).is_err());
        assert_eq!(parse_id(b"17-0").unwrap(), 17);
        assert!(parse_id(b"x-0").is_err());
    }
}
