//! Batch records: the unit stored in the JetStream stream.
//!
//! One JetStream message holds one record: the events of one or more
//! appends, already numbered with Tidings seqs, plus the append time. The
//! payload is JSON `{"first": F, "at": MICROS, "events": [Event, ...]}`,
//! so `nats stream view` shows which Tidings seqs a message holds at the
//! start of its body. A message carries no Tidings headers (records written
//! before 2026-12-07 also have `Tidings-First-Seq` and `Tidings-Count`,
//! which nothing reads). A record with no events is a *tail marker*: it only
//! carries the seq tail (`first` = the next Tidings seq) across a prune
//! that removed every event.

use std::sync::Arc;

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use tidings_core::{Event, SharedEvent};

#[derive(Serialize)]
struct BodyRef<'a> {
    first: u64,
    at: i64,
    events: &'a [SharedEvent],
}

#[derive(Deserialize)]
struct Body {
    first: u64,
    at: i64,
    events: Vec<Event>,
}

/// A decoded record.
#[derive(Debug)]
pub(crate) struct Record {
    /// JetStream stream sequence of the message.
    pub stream_seq: u64,
    /// Tidings seq of the first event (the next seq, for a tail marker).
    pub first: u64,
    /// Append time, microseconds since the Unix epoch (appender's clock).
    pub at: i64,
    /// The events, with consecutive seqs from `first`.
    pub events: Vec<SharedEvent>,
}

impl Record {
    /// The last Tidings seq the log had once this record was appended.
    pub fn last(&self) -> u64 {
        self.first + self.events.len() as u64 - 1
    }

    /// The newest event time in the record (the append time for a marker).
    pub fn max_time_micros(&self) -> i64 {
        self.events
            .iter()
            .map(|e| e.time.timestamp_micros())
            .max()
            .unwrap_or(self.at)
    }

    /// Decodes a stored message.
    pub fn decode(stream_seq: u64, payload: &[u8]) -> Result<Arc<Record>, String> {
        let body: Body = serde_json::from_slice(payload)
            .map_err(|e| format!("stream seq {stream_seq}: not a Tidings record: {e}"))?;
        if body.first == 0 {
            return Err(format!("stream seq {stream_seq}: record with first seq 0"));
        }
        for (i, e) in body.events.iter().enumerate() {
            if e.seq != body.first + i as u64 {
                return Err(format!(
                    "stream seq {stream_seq}: event {i} has seq {} instead of {}",
                    e.seq,
                    body.first + i as u64
                ));
            }
        }
        Ok(Arc::new(Record {
            stream_seq,
            first: body.first,
            at: body.at,
            events: body.events.into_iter().map(Arc::new).collect(),
        }))
    }
}

/// Encodes a record's payload.
pub(crate) fn encode(first: u64, at: i64, events: &[SharedEvent]) -> Result<Bytes, String> {
    serde_json::to_vec(&BodyRef { first, at, events })
        .map(Bytes::from)
        .map_err(|e| format!("cannot encode a record: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use tidings_core::NewEvent;

    #[test]
    fn roundtrip_and_checks() {
        let evs: Vec<SharedEvent> = (0..3)
            .map(|i| Arc::new(NewEvent::new("a.b", json!(i)).unwrap().commit(5 + i)))
            .collect();
        let bytes = encode(5, 42, &evs).unwrap();
        let r = Record::decode(9, &bytes).unwrap();
        assert_eq!((r.stream_seq, r.first, r.at, r.last()), (9, 5, 42, 7));
        assert_eq!(r.events, evs);
        let marker = Record::decode(10, &encode(8, 43, &[]).unwrap()).unwrap();
        assert_eq!(marker.last(), 7);
        assert_eq!(marker.max_time_micros(), 43);
        assert!(Record::decode(1, b"{}").is_err());
        assert!(Record::decode(1, &encode(6, 1, &evs).unwrap()).is_err());
    }
}
