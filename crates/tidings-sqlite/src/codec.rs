//! Events to rows and back.
//!
//! Row layout (see [`crate::schema`]): `id` as a 16-byte BLOB, `time` as
//! microseconds since the Unix epoch, `data` as JSON text, `priority` as a
//! small integer.
//!
//! # Contract
//!
//! * Encoding ([`Encoded::new`]) runs on the appender's thread, decoding
//!   ([`RawPage::decode`]) on the thread that awaits a read: the writer
//!   and reader threads only bind and copy bytes.
//! * Round trip: an [`Encoded`] event's `time` is truncated to whole
//!   microseconds, so the event `append` returns equals what `read`
//!   returns for it.
//! * Decoding never panics on what it finds in the file: a row that is not
//!   a valid event (wrong type, bad UTF-8, bad JSON, unknown priority) is
//!   a [`StorageError::Decode`] naming its seq.

use chrono::{DateTime, Utc};
use rusqlite::types::ValueRef;
use rusqlite::Row;
use tidings_core::{Event, NewEvent, Priority};
use uuid::Uuid;

use crate::error::StorageError;

/// The columns of an event row, in the order [`decode_at`] reads them with
/// [`STANDARD`].
pub(crate) const EVENT_COLUMNS: &str = "seq, id, name, source, time, key, data, priority";

/// An event ready for the writer: its payload already serialized (done on
/// the appender's thread, not the writer's).
pub(crate) struct Encoded {
    /// The event; its `time` already truncated to microseconds, so what
    /// `append` returns equals what `read` later returns.
    pub(crate) event: NewEvent,
    /// `event.time` in microseconds since the epoch.
    pub(crate) time_us: i64,
    /// `event.data` as JSON text.
    pub(crate) data: String,
    /// `event.priority` as stored.
    pub(crate) priority: Option<i64>,
}

impl Encoded {
    pub(crate) fn new(mut event: NewEvent) -> Result<Encoded, StorageError> {
        let data = serde_json::to_string(&event.data).map_err(|e| StorageError::Encode {
            id: event.id,
            detail: e.to_string(),
        })?;
        let time_us = event.time.timestamp_micros();
        if let Some(t) = DateTime::from_timestamp_micros(time_us) {
            event.time = t;
        }
        let priority = event.priority.map(priority_code);
        Ok(Encoded {
            event,
            time_us,
            data,
            priority,
        })
    }
}

pub(crate) fn priority_code(p: Priority) -> i64 {
    match p {
        Priority::Low => 0,
        Priority::Normal => 1,
        Priority::High => 2,
    }
}

fn priority_from(code: i64) -> Option<Priority> {
    match code {
        0 => Some(Priority::Low),
        1 => Some(Priority::Normal),
        2 => Some(Priority::High),
        _ => None,
    }
}

/// Microseconds since the epoch, rounded *up*, so that for a stored time
/// `t_us` (whole microseconds): `t_us >= micros_ceil(t)` iff `t_us >= t`.
pub(crate) fn micros_ceil(t: DateTime<Utc>) -> i64 {
    let us = t.timestamp_micros();
    if !t.timestamp_subsec_nanos().is_multiple_of(1000) {
        us.saturating_add(1)
    } else {
        us
    }
}

/// Column positions of one event inside a result row.
#[derive(Clone, Copy)]
pub(crate) struct Columns {
    pub(crate) seq: usize,
    pub(crate) id: usize,
    pub(crate) name: usize,
    pub(crate) source: usize,
    pub(crate) time: usize,
    pub(crate) key: usize,
    pub(crate) data: usize,
    pub(crate) priority: usize,
}

/// The layout of [`EVENT_COLUMNS`] at the start of a row.
pub(crate) const STANDARD: Columns = Columns {
    seq: 0,
    id: 1,
    name: 2,
    source: 3,
    time: 4,
    key: 5,
    data: 6,
    priority: 7,
};

/// Decodes an event whose columns sit at `c` in the row.
pub(crate) fn decode_at(row: &Row<'_>, c: Columns) -> Result<Event, StorageError> {
    let col = |i: usize| {
        row.get_ref(i)
            .map_err(StorageError::sqlite("reading a row"))
    };
    let seq = match col(c.seq)? {
        ValueRef::Integer(s) => s,
        other => {
            return Err(StorageError::Decode {
                seq: -1,
                detail: format!("seq is {:?}, not an integer", other.data_type()),
            })
        }
    };
    let bad = |detail: String| StorageError::Decode { seq, detail };
    if seq < 1 {
        return Err(bad("seq is not positive".into()));
    }
    let id = match col(c.id)? {
        ValueRef::Blob(b) => Uuid::from_slice(b).map_err(|e| bad(format!("id: {e}")))?,
        ValueRef::Text(t) => std::str::from_utf8(t)
            .ok()
            .and_then(|s| Uuid::parse_str(s).ok())
            .ok_or_else(|| bad("id is text but not a UUID".into()))?,
        other => return Err(bad(format!("id is {:?}", other.data_type()))),
    };
    let text = |v: ValueRef<'_>, what: &str| -> Result<String, StorageError> {
        match v {
            ValueRef::Text(t) => std::str::from_utf8(t)
                .map(str::to_owned)
                .map_err(|_| bad(format!("{what} is not UTF-8"))),
            other => Err(bad(format!("{what} is {:?}", other.data_type()))),
        }
    };
    let name = text(col(c.name)?, "name")?;
    let source = tidings_core::source_from_storage(text(col(c.source)?, "source")?);
    let time = match col(c.time)? {
        ValueRef::Integer(us) => DateTime::from_timestamp_micros(us)
            .ok_or_else(|| bad(format!("time {us} is out of range")))?,
        other => return Err(bad(format!("time is {:?}", other.data_type()))),
    };
    let key = match col(c.key)? {
        ValueRef::Null => None,
        v => Some(text(v, "key")?),
    };
    let data = match col(c.data)? {
        ValueRef::Text(t) => {
            serde_json::from_slice(t).map_err(|e| bad(format!("data is not JSON: {e}")))?
        }
        other => return Err(bad(format!("data is {:?}", other.data_type()))),
    };
    let priority = match col(c.priority)? {
        ValueRef::Null => None,
        ValueRef::Integer(p) => {
            Some(priority_from(p).ok_or_else(|| bad(format!("unknown priority {p}")))?)
        }
        other => return Err(bad(format!("priority is {:?}", other.data_type()))),
    };
    Ok(Event {
        seq: seq as u64,
        id,
        name,
        source,
        time,
        data,
        key,
        priority,
    })
}

/// A page of rows copied out of SQLite but not yet turned into events.
///
/// Reader threads only step SQLite and copy bytes into one buffer; the
/// [`RawPage::decode`] (UTF-8 checks, JSON parsing, allocating the events)
/// runs on the thread that awaits the read. So the events are allocated and
/// later freed on the same side, reader threads stay cheap, and the
/// decoding of a catch-up reader overlaps with the next page's fetch.
#[derive(Debug, Clone, Default)]
pub(crate) struct RawPage {
    /// The log's last seq in the snapshot the rows came from (or a later
    /// snapshot that holds the same rows, see the read-ahead).
    pub(crate) last_seq: u64,
    /// The read stopped at its byte budget with more events left.
    pub(crate) budget_cut: bool,
    /// Invariant: ascending seqs; every range lies inside `buf`.
    rows: Vec<RawRow>,
    buf: Vec<u8>,
}

#[derive(Debug, Clone)]
struct RawRow {
    seq: u64,
    id: Uuid,
    time_us: i64,
    priority: Option<i64>,
    name: (usize, usize),
    source: (usize, usize),
    key: Option<(usize, usize)>,
    data: (usize, usize),
}

impl RawPage {
    pub(crate) fn new(last_seq: u64, capacity: usize) -> RawPage {
        RawPage {
            last_seq,
            budget_cut: false,
            rows: Vec::with_capacity(capacity),
            buf: Vec::with_capacity(capacity.saturating_mul(96)),
        }
    }

    pub(crate) fn len(&self) -> usize {
        self.rows.len()
    }

    /// Whether more events follow this page in the snapshot it was read
    /// from: it holds `limit` events, or it stopped at its byte budget.
    pub(crate) fn is_full(&self, limit: usize) -> bool {
        self.rows.len() == limit || self.budget_cut
    }

    pub(crate) fn first_seq(&self) -> Option<u64> {
        self.rows.first().map(|r| r.seq)
    }

    pub(crate) fn last_event_seq(&self) -> Option<u64> {
        self.rows.last().map(|r| r.seq)
    }

    /// Copies a row selected with [`EVENT_COLUMNS`], checking its types.
    pub(crate) fn push(&mut self, row: &Row<'_>) -> Result<(), StorageError> {
        let c = STANDARD;
        let col = |i: usize| {
            row.get_ref(i)
                .map_err(StorageError::sqlite("reading a row"))
        };
        let seq = match col(c.seq)? {
            ValueRef::Integer(s) if s >= 1 => s,
            other => {
                return Err(StorageError::Decode {
                    seq: -1,
                    detail: format!("seq is {other:?}, not a positive integer"),
                })
            }
        };
        let bad = |detail: String| StorageError::Decode { seq, detail };
        let id = match col(c.id)? {
            ValueRef::Blob(b) => Uuid::from_slice(b).map_err(|e| bad(format!("id: {e}")))?,
            ValueRef::Text(t) => std::str::from_utf8(t)
                .ok()
                .and_then(|s| Uuid::parse_str(s).ok())
                .ok_or_else(|| bad("id is text but not a UUID".into()))?,
            other => return Err(bad(format!("id is {:?}", other.data_type()))),
        };
        let time_us = match col(c.time)? {
            ValueRef::Integer(us) => us,
            other => return Err(bad(format!("time is {:?}", other.data_type()))),
        };
        let priority = match col(c.priority)? {
            ValueRef::Null => None,
            ValueRef::Integer(p) => Some(p),
            other => return Err(bad(format!("priority is {:?}", other.data_type()))),
        };
        let buf = &mut self.buf;
        let mut text = |v: ValueRef<'_>, what: &str| -> Result<(usize, usize), StorageError> {
            match v {
                ValueRef::Text(t) => {
                    let start = buf.len();
                    buf.extend_from_slice(t);
                    Ok((start, buf.len()))
                }
                other => Err(bad(format!("{what} is {:?}", other.data_type()))),
            }
        };
        let name = text(col(c.name)?, "name")?;
        let source = text(col(c.source)?, "source")?;
        let key = match col(c.key)? {
            ValueRef::Null => None,
            v => Some(text(v, "key")?),
        };
        let data = text(col(c.data)?, "data")?;
        self.rows.push(RawRow {
            seq: seq as u64,
            id,
            time_us,
            priority,
            name,
            source,
            key,
            data,
        });
        Ok(())
    }

    /// The events.
    pub(crate) fn decode(self) -> Result<tidings_core::log::Page, StorageError> {
        let mut events = Vec::with_capacity(self.rows.len());
        for r in &self.rows {
            events.push(std::sync::Arc::new(r.decode(&self.buf)?));
        }
        Ok(tidings_core::log::Page {
            events,
            last_seq: self.last_seq,
        })
    }
}

impl RawRow {
    fn decode(&self, buf: &[u8]) -> Result<Event, StorageError> {
        let bad = |detail: String| StorageError::Decode {
            seq: self.seq as i64,
            detail,
        };
        let text = |(a, b): (usize, usize), what: &str| -> Result<String, StorageError> {
            buf.get(a..b)
                .and_then(|bytes| std::str::from_utf8(bytes).ok())
                .map(str::to_owned)
                .ok_or_else(|| bad(format!("{what} is not UTF-8")))
        };
        let data = buf
            .get(self.data.0..self.data.1)
            .ok_or_else(|| bad("data is missing".into()))
            .and_then(|d| {
                serde_json::from_slice(d).map_err(|e| bad(format!("data is not JSON: {e}")))
            })?;
        Ok(Event {
            seq: self.seq,
            id: self.id,
            name: text(self.name, "name")?,
            source: tidings_core::source_from_storage(text(self.source, "source")?),
            time: DateTime::from_timestamp_micros(self.time_us)
                .ok_or_else(|| bad(format!("time {} is out of range", self.time_us)))?,
            data,
            key: self.key.map(|k| text(k, "key")).transpose()?,
            priority: match self.priority {
                None => None,
                Some(p) => {
                    Some(priority_from(p).ok_or_else(|| bad(format!("unknown priority {p}")))?)
                }
            },
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn encoding_truncates_time_to_micros() {
        let mut ev = NewEvent::new("a.b", json!({"x": [1, 2]})).unwrap();
        ev.time = DateTime::from_timestamp(1_700_000_000, 123_456_789).unwrap();
        let enc = Encoded::new(ev.priority(Priority::High)).unwrap();
        assert_eq!(enc.time_us, 1_700_000_000_123_456);
        assert_eq!(enc.event.time.timestamp_subsec_nanos(), 123_456_000);
        assert_eq!(enc.data, r#"{"x":[1,2]}"#);
        assert_eq!(enc.priority, Some(2));
    }

    #[test]
    fn micros_ceil_rounds_up_only_fractions() {
        let exact = DateTime::from_timestamp(10, 5_000).unwrap();
        assert_eq!(micros_ceil(exact), 10_000_005);
        let frac = DateTime::from_timestamp(10, 5_001).unwrap();
        assert_eq!(micros_ceil(frac), 10_000_006);
        let neg = DateTime::from_timestamp(-1, 999_999_999).unwrap();
        assert_eq!(micros_ceil(neg), 0);
    }

    #[test]
    fn priorities_roundtrip() {
        for p in [Priority::Low, Priority::Normal, Priority::High] {
            assert_eq!(priority_from(priority_code(p)), Some(p));
        }
        assert_eq!(priority_from(7), None);
    }
}
