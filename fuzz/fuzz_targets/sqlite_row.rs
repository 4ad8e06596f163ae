//! The SQLite row codec (`tidings-sqlite`'s codec, reached through its
//! hidden `fuzzing` module). Rows are real SQLite rows: the columns are
//! bound to `SELECT ?1, ..., ?8` on an in-memory connection.
//!
//! Input, line by line. First line `D` (decode) or `E` (round trip).
//!
//! `D`: eight columns `seq, id, name, source, time, key, data, priority`,
//! one per line: `n` NULL, `i<int>` INTEGER, `r<float>` REAL, `t<bytes>`
//! TEXT (any bytes, not checked as UTF-8), `x<hex>` BLOB, `y<hex>` TEXT
//! from hex. Missing lines are NULL. Both decoders must return an error or
//! the same event, never panic.
//!
//! `E`: lines `seq`, `id` (32 hex digits), `name`, `source`, `secs nanos`,
//! `key` (`-` for none, else `k<key>`), priority (`-`, `0`, `1`, `2`), then
//! the data as JSON (rest of the input). The event, encoded as the writer
//! stores it and decoded by both decoders, must come back equal.
#![no_main]

use std::cell::RefCell;

use chrono::DateTime;
use libfuzzer_sys::fuzz_target;
use rusqlite::types::{ToSqlOutput, ValueRef};
use rusqlite::{Connection, ToSql};
use tidings_core::{Event, NewEvent, Priority};

const SELECT: &str = "SELECT ?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8";

thread_local! {
    static CONN: RefCell<Connection> =
        RefCell::new(Connection::open_in_memory().expect("in-memory SQLite"));
}

enum Col {
    Null,
    Integer(i64),
    Real(f64),
    Text(Vec<u8>),
    Blob(Vec<u8>),
}

impl ToSql for Col {
    fn to_sql(&self) -> rusqlite::Result<ToSqlOutput<'_>> {
        Ok(ToSqlOutput::Borrowed(match self {
            Col::Null => ValueRef::Null,
            Col::Integer(i) => ValueRef::Integer(*i),
            Col::Real(f) => ValueRef::Real(*f),
            Col::Text(t) => ValueRef::Text(t),
            Col::Blob(b) => ValueRef::Blob(b),
        }))
    }
}

fn unhex(s: &[u8]) -> Option<Vec<u8>> {
    if s.len() % 2 != 0 {
        return None;
    }
    s.chunks(2)
        .map(|c| u8::from_str_radix(std::str::from_utf8(c).ok()?, 16).ok())
        .collect()
}

fn parse_col(line: &[u8]) -> Col {
    let (tag, rest) = match line.split_first() {
        Some((t, r)) => (*t, r),
        None => return Col::Null,
    };
    let text = std::str::from_utf8(rest).ok();
    match tag {
        b'i' => text
            .and_then(|t| t.parse().ok())
            .map_or(Col::Text(rest.to_vec()), Col::Integer),
        b'r' => text
            .and_then(|t| t.parse().ok())
            .map_or(Col::Text(rest.to_vec()), Col::Real),
        b't' => Col::Text(rest.to_vec()),
        b'x' => Col::Blob(unhex(rest).unwrap_or_else(|| rest.to_vec())),
        b'y' => Col::Text(unhex(rest).unwrap_or_else(|| rest.to_vec())),
        _ => Col::Null,
    }
}

/// Runs both decoders over one row of `cols`.
fn decode(cols: &[&dyn ToSql; 8]) -> [Result<Event, tidings_sqlite::StorageError>; 2] {
    CONN.with(|c| {
        let conn = c.borrow();
        let mut stmt = conn.prepare_cached(SELECT).expect("prepare");
        let mut rows = stmt.query(&cols[..]).expect("query");
        let row = rows.next().expect("step").expect("one row");
        tidings_sqlite::fuzzing::decode_row(row)
    })
}

fn decode_mode(lines: &[&[u8]]) {
    let cols: Vec<Col> = (0..8)
        .map(|i| lines.get(i).map_or(Col::Null, |l| parse_col(l)))
        .collect();
    let refs: [&dyn ToSql; 8] = std::array::from_fn(|i| &cols[i] as &dyn ToSql);
    let [direct, paged] = decode(&refs);
    match (&direct, &paged) {
        (Ok(a), Ok(b)) => {
            assert_eq!(a, b, "decoders disagree");
            assert!(a.seq >= 1);
        }
        (Err(_), Err(_)) => {}
        _ => panic!("one decoder accepts, one refuses: {direct:?} / {paged:?}"),
    }
}

fn roundtrip_mode(lines: &[&[u8]], rest: &[u8]) -> Option<()> {
    let line = |i: usize| lines.get(i).and_then(|l| std::str::from_utf8(l).ok());
    let seq: i64 = line(0)?.parse().ok()?;
    if seq < 1 {
        return None;
    }
    let id = uuid::Uuid::from_slice(&unhex(line(1)?.as_bytes())?).ok()?;
    let name = line(2)?;
    let source = line(3)?;
    let (secs, nanos) = line(4)?.split_once(' ')?;
    let time = DateTime::from_timestamp(secs.parse().ok()?, nanos.parse().ok()?)?;
    let key = match line(5)? {
        "-" => None,
        k => Some(k.strip_prefix('k')?.to_owned()),
    };
    let priority = match line(6)? {
        "-" => None,
        "0" => Some(Priority::Low),
        "1" => Some(Priority::Normal),
        "2" => Some(Priority::High),
        _ => return None,
    };
    let data: serde_json::Value = serde_json::from_slice(rest).ok()?;

    let mut event = NewEvent::new(name, data).ok()?;
    event.id = id;
    event.time = time;
    event.source = tidings_core::source_from_storage(source.to_owned());
    event.key = key;
    event.priority = priority;

    let (stored, values) =
        tidings_sqlite::fuzzing::encode_row(seq, event.clone()).expect("a valid event encodes");
    // Only the time may change, and only below a microsecond.
    let mut expect_same = stored.clone();
    expect_same.time = event.time;
    assert_eq!(expect_same, event, "encoding changed more than the time");
    let lost = event.time - stored.time;
    assert!(
        lost >= chrono::TimeDelta::zero() && lost < chrono::TimeDelta::microseconds(1),
        "time moved by {lost:?}"
    );
    let refs: [&dyn ToSql; 8] = std::array::from_fn(|i| &values[i] as &dyn ToSql);
    let want = stored.commit(seq as u64);
    for got in decode(&refs) {
        let got = got.unwrap_or_else(|e| panic!("an encoded event does not decode: {e}"));
        assert_eq!(got, want, "round trip changed the event");
    }
    Some(())
}

fuzz_target!(|data: &[u8]| {
    let Some((mode, body)) = data.split_first() else {
        return;
    };
    let body = body.strip_prefix(b"\n").unwrap_or(body);
    match mode {
        b'D' => {
            let lines: Vec<&[u8]> = body.split(|b| *b == b'\n').take(8).collect();
            decode_mode(&lines);
        }
        b'E' => {
            // Seven header lines, then the JSON data.
            let mut parts = body.splitn(8, |b| *b == b'\n');
            let lines: Vec<&[u8]> = parts.by_ref().take(7).collect();
            let rest = parts.next().unwrap_or(b"");
            roundtrip_mode(&lines, rest);
        }
        _ => {}
    }
});
