//! The SQL the log runs against its file, shared by the writer and the
//! readers: reading the last seq, appending a batch (with idempotency
//! keys), storing a cursor, defining and deleting consumers, and pruning.
//!
//! # Contract
//!
//! * No function here begins or ends a transaction: the caller decides
//!   what commits together. The writing ones ([`append_batch`],
//!   [`store_cursor`], [`define_consumer`], [`delete_consumer`],
//!   [`prune`]) run inside the writer's `BEGIN IMMEDIATE`; one that fails may have written part of its work, and the
//!   caller rolls back. [`read_last`] reads within whatever snapshot the
//!   caller holds (a reader's read transaction, so a page and its
//!   `last_seq` agree).
//! * The last seq ever assigned is `max(max(events.seq), meta.last_seq)`
//!   ([`read_last`]); seqs are assigned by the writer, dense from
//!   `last + 1`, never reused. [`prune`] records `last` in `meta` before it
//!   deletes, in the same transaction, so that holds after retention too.
//! * An idempotency key recorded within the window answers with its
//!   original event, also after retention pruned it: [`prune`] copies a
//!   live key's event into `idem_keys` before deleting it.
//! * Statements go through the connection's prepared-statement cache.
//!
//! The table layout is in [`crate::schema`]; rows are encoded and decoded
//! by [`crate::codec`].

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rusqlite::types::{ToSqlOutput, ValueRef};
use rusqlite::{params, Connection, OptionalExtension};
use tidings_core::log::Retention;
use tidings_core::SharedEvent;

use crate::archive::{ArchiveWriter, CHUNK_BYTES, CHUNK_EVENTS};
use crate::codec::{decode_at, Columns, Encoded, EVENT_COLUMNS, STANDARD};
use crate::command::{Slot, Slots};
use crate::error::StorageError;
use crate::stats::{bump, Stats};

/// Wall-clock microseconds since the epoch (idempotency key times, cursor
/// update times, age retention). A clock before 1970 counts as 0.
pub(crate) fn wall_micros() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_micros()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

fn micros(d: Duration) -> i64 {
    i64::try_from(d.as_micros()).unwrap_or(i64::MAX)
}

/// The last seq ever assigned: the newest event's, or, if retention removed
/// it, the one recorded in `meta` when it did.
pub(crate) fn read_last(conn: &Connection) -> Result<u64, StorageError> {
    let v: i64 = conn
        .prepare_cached(
            "SELECT max(ifnull((SELECT max(seq) FROM events), 0),
                        ifnull((SELECT v FROM meta WHERE k = 'last_seq'), 0))",
        )
        .and_then(|mut s| s.query_row([], |r| r.get(0)))
        .map_err(StorageError::sqlite("reading the last seq"))?;
    Ok(v.max(0) as u64)
}

/// Stores (or moves) the cursor of consumer `name`.
pub(crate) fn store_cursor(
    conn: &Connection,
    name: &str,
    seq: u64,
    now_us: i64,
) -> Result<(), StorageError> {
    conn.prepare_cached(
        "INSERT INTO cursors (name, seq, updated) VALUES (?1, ?2, ?3)
         ON CONFLICT (name) DO UPDATE SET seq = excluded.seq, updated = excluded.updated",
    )
    .and_then(|mut s| s.execute(params![name, seq as i64, now_us]))
    .map(|_| ())
    .map_err(StorageError::sqlite("storing a cursor"))
}

/// Defines consumer `name` as `spec` unless it is defined; returns the
/// stored spec (the first definition wins).
pub(crate) fn define_consumer(
    conn: &Connection,
    name: &str,
    spec: &str,
) -> Result<String, StorageError> {
    let op = "defining a consumer";
    conn.prepare_cached(
        "INSERT INTO consumers (name, spec) VALUES (?1, ?2) ON CONFLICT (name) DO NOTHING",
    )
    .and_then(|mut s| s.execute(params![name, spec]))
    .map_err(StorageError::sqlite(op))?;
    conn.prepare_cached("SELECT spec FROM consumers WHERE name = ?1")
        .and_then(|mut s| s.query_row([name], |r| r.get(0)))
        .map_err(StorageError::sqlite(op))
}

/// Deletes consumer `name`'s definition and cursor; true if either existed.
pub(crate) fn delete_consumer(conn: &Connection, name: &str) -> Result<bool, StorageError> {
    let op = "deleting a consumer";
    let mut removed = 0;
    for sql in [
        "DELETE FROM consumers WHERE name = ?1",
        "DELETE FROM cursors WHERE name = ?1",
    ] {
        removed += conn
            .prepare_cached(sql)
            .and_then(|mut s| s.execute([name]))
            .map_err(StorageError::sqlite(op))?;
    }
    Ok(removed > 0)
}

/// Column layout of the key lookup: the event row first, then the copy kept
/// in `idem_keys`.
const KEY_LOOKUP: &str = "SELECT k.at, e.seq, e.id, e.name, e.source, e.time, e.key, e.data,
       e.priority, k.seq, k.id, k.name, k.source, k.time, k.key, k.data, k.priority
FROM idem_keys AS k LEFT JOIN events AS e ON e.seq = k.seq
WHERE k.key = ?1";

const FROM_EVENTS: Columns = Columns {
    seq: STANDARD.seq + 1,
    id: STANDARD.id + 1,
    name: STANDARD.name + 1,
    source: STANDARD.source + 1,
    time: STANDARD.time + 1,
    key: STANDARD.key + 1,
    data: STANDARD.data + 1,
    priority: STANDARD.priority + 1,
};
const FROM_KEY_COPY: Columns = Columns {
    seq: 9,
    id: 10,
    name: 11,
    source: 12,
    time: 13,
    key: 14,
    data: 15,
    priority: 16,
};

/// The original event of `key` if it was recorded after `window_start`.
fn lookup_key(
    conn: &Connection,
    key: &str,
    window_start: i64,
) -> Result<Option<SharedEvent>, StorageError> {
    let op = "looking up an idempotency key";
    let mut stmt = conn
        .prepare_cached(KEY_LOOKUP)
        .map_err(StorageError::sqlite(op))?;
    let mut rows = stmt.query([key]).map_err(StorageError::sqlite(op))?;
    let Some(row) = rows.next().map_err(StorageError::sqlite(op))? else {
        return Ok(None);
    };
    let at: i64 = row.get(0).map_err(StorageError::sqlite(op))?;
    if at <= window_start {
        return Ok(None); // expired, not yet swept
    }
    let present = |i: usize| !matches!(row.get_ref(i), Ok(ValueRef::Null));
    let event = if present(FROM_EVENTS.seq) {
        decode_at(row, FROM_EVENTS)?
    } else if present(FROM_KEY_COPY.id) {
        decode_at(row, FROM_KEY_COPY)?
    } else {
        // Only possible for keys written by schema v1 whose event was then
        // pruned: nothing left to answer with, so the key counts as unseen.
        tracing::warn!(key, "the original event of a live idempotency key is gone");
        return Ok(None);
    };
    Ok(Some(Arc::new(event)))
}

/// Writes one request's events at `*last + 1..`, advancing `*last`.
pub(crate) fn append_batch(
    conn: &Connection,
    batch: &[Encoded],
    last: &mut u64,
    now_us: i64,
    idempotency_window: Duration,
) -> Result<Slots, StorageError> {
    let op = "inserting an event";
    let window_start = now_us.saturating_sub(micros(idempotency_window));
    let mut insert = conn
        .prepare_cached(
            "INSERT INTO events (seq, id, name, source, time, key, data, priority, committed)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
        )
        .map_err(StorageError::sqlite(op))?;
    let first = *last + 1;
    // Filled only once a duplicate shows up.
    let mut slots: Vec<Slot> = Vec::new();
    for (i, enc) in batch.iter().enumerate() {
        let seq = *last + 1;
        if let Some(key) = &enc.event.key {
            if let Some(orig) = lookup_key(conn, key, window_start)? {
                if slots.is_empty() {
                    slots.reserve(batch.len());
                    slots.extend((first..).take(i).map(Slot::New));
                }
                slots.push(Slot::Dup(orig));
                continue;
            }
            conn.prepare_cached(
                "INSERT INTO idem_keys (key, seq, at) VALUES (?1, ?2, ?3)
                 ON CONFLICT (key) DO UPDATE SET seq = excluded.seq, at = excluded.at,
                 id = NULL, name = NULL, source = NULL, time = NULL, data = NULL,
                 priority = NULL",
            )
            .and_then(|mut s| s.execute(params![key, seq as i64, now_us]))
            .map_err(StorageError::sqlite("recording an idempotency key"))?;
        }
        insert
            .execute(params![
                seq as i64,
                enc.event.id.as_bytes(),
                enc.event.name,
                enc.event.source,
                enc.time_us,
                enc.event.key,
                enc.data,
                enc.priority,
                now_us,
            ])
            .map_err(StorageError::sqlite(op))?;
        *last = seq;
        if !slots.is_empty() {
            slots.push(Slot::New(seq));
        }
    }
    Ok(if slots.is_empty() {
        Slots::Dense(first)
    } else {
        Slots::Mixed(slots)
    })
}

/// Forgets expired keys and applies retention; returns the events removed.
///
/// Retention removes a prefix of the log (so the seqs left stay dense):
/// everything up to the larger of the count cut (`last - max_count`) and
/// the age cut (just before the first event, in seq order, whose *commit*
/// time is within `max_age`; the event's own, client-sent `time` plays no
/// part). It does not look at consumer cursors. Before deleting
/// it records `last` in `meta`, in the same transaction, so the last seq
/// survives even when no event is left.
pub(crate) fn prune(
    conn: &Connection,
    retention: &Retention,
    idempotency_window: Duration,
    last: u64,
    now_us: i64,
    stats: &Stats,
    archive: Option<ArchiveStep<'_>>,
) -> Result<u64, StorageError> {
    let op = "pruning";
    let window_start = now_us.saturating_sub(micros(idempotency_window));
    let expired = conn
        .prepare_cached("DELETE FROM idem_keys WHERE at <= ?1")
        .and_then(|mut s| s.execute([window_start]))
        .map_err(StorageError::sqlite("expiring idempotency keys"))?;
    bump(&stats.keys_expired, expired as u64);

    let mut cut = 0u64;
    if let Some(max) = retention.max_count {
        cut = cut.max(last.saturating_sub(max));
    }
    if let Some(age) = retention.max_age {
        let cutoff = now_us.saturating_sub(micros(age));
        let first_kept: Option<i64> = conn
            .prepare_cached("SELECT seq FROM events WHERE committed >= ?1 ORDER BY seq LIMIT 1")
            .and_then(|mut s| s.query_row([cutoff], |r| r.get(0)).optional())
            .map_err(StorageError::sqlite(op))?;
        let age_cut = match first_kept {
            Some(s) => (s.max(1) - 1) as u64,
            None => last,
        };
        cut = cut.max(age_cut);
    }
    if cut == 0 && archive.is_none() {
        return Ok(0);
    }
    let first: Option<i64> = conn
        .prepare_cached("SELECT min(seq) FROM events")
        .and_then(|mut s| s.query_row([], |r| r.get(0)))
        .map_err(StorageError::sqlite(op))?;
    let Some(first) = first.map(|f| f.max(1) as u64) else {
        return Ok(0);
    };
    let cut = match archive {
        Some(step) => archive_before_delete(conn, step, first, cut)?,
        None => cut,
    };
    if first > cut {
        return Ok(0);
    }
    conn.prepare_cached("UPDATE meta SET v = ?1 WHERE k = 'last_seq' AND v < ?1")
        .and_then(|mut s| s.execute([last as i64]))
        .map_err(StorageError::sqlite("recording the last seq"))?;
    preserve_keyed_events(conn, cut)?;
    let removed = conn
        .prepare_cached("DELETE FROM events WHERE seq <= ?1")
        .and_then(|mut s| s.execute([cut as i64]))
        .map_err(StorageError::sqlite(op))? as u64;
    bump(&stats.events_pruned, removed);
    Ok(removed)
}

/// What a prune does with the archive ([`ArchiveWriter`]).
pub(crate) struct ArchiveStep<'a> {
    /// The archive.
    pub(crate) writer: &'a mut ArchiveWriter,
    /// Archive everything due now (an explicit prune), not one bounded
    /// chunk once enough is due (the background step).
    pub(crate) all: bool,
    /// The background step archives fewer than a full chunk only once
    /// this long passed since the last file.
    pub(crate) delay: Duration,
}

/// Archives events `first..=cut` not archived yet, and returns the new cut:
/// the last seq that is archived (so nothing unarchived is deleted, and
/// what a crash left archived but not deleted is deleted now, whatever the
/// retention cut says). In the background, at most one chunk per step, and
/// a partial chunk only after `delay`; `writer.pending` then says whether
/// more is due.
fn archive_before_delete(
    conn: &Connection,
    step: ArchiveStep<'_>,
    first: u64,
    cut: u64,
) -> Result<u64, StorageError> {
    let op = "reading events to archive";
    let w = step.writer;
    w.pending = false;
    loop {
        let done = w.archived_upto();
        let from = first.max(done + 1);
        if from > cut {
            return Ok(done);
        }
        let due = cut - from + 1;
        if !step.all && due < CHUNK_EVENTS && !w.waited(step.delay) {
            w.pending = false;
            return Ok(done);
        }
        let upto = cut.min(from + CHUNK_EVENTS - 1);
        let mut events = Vec::new();
        let mut bytes = 0usize;
        {
            let mut select = conn
                .prepare_cached(&format!(
                    "SELECT {EVENT_COLUMNS} FROM events WHERE seq >= ?1 AND seq <= ?2 ORDER BY seq"
                ))
                .map_err(StorageError::sqlite(op))?;
            let mut rows = select
                .query([from as i64, upto as i64])
                .map_err(StorageError::sqlite(op))?;
            while let Some(row) = rows.next().map_err(StorageError::sqlite(op))? {
                let e = decode_at(row, STANDARD)?;
                bytes += e.approx_bytes();
                events.push(e);
                if bytes >= CHUNK_BYTES {
                    break;
                }
            }
        }
        let Some(last) = events.last().map(|e| e.seq) else {
            return Ok(done);
        };
        w.write(&events).map_err(StorageError::Archive)?;
        if !step.all {
            w.pending = last < cut;
            return Ok(last);
        }
    }
}

/// Before events up to `cut` are deleted, copies those whose idempotency
/// key is still live into `idem_keys`, so a duplicate append can still be
/// answered with the original event (retention does not shorten the
/// idempotency window).
fn preserve_keyed_events(conn: &Connection, cut: u64) -> Result<(), StorageError> {
    let op = "keeping the originals of live idempotency keys";
    let mut select = conn
        .prepare_cached(
            "SELECT seq, key, id, name, source, time, data, priority
             FROM events WHERE seq <= ?1 AND key IS NOT NULL",
        )
        .map_err(StorageError::sqlite(op))?;
    let mut update = conn
        .prepare_cached(
            "UPDATE idem_keys SET id = ?3, name = ?4, source = ?5, time = ?6, data = ?7,
             priority = ?8 WHERE key = ?2 AND seq = ?1 AND id IS NULL",
        )
        .map_err(StorageError::sqlite(op))?;
    let mut rows = select
        .query([cut as i64])
        .map_err(StorageError::sqlite(op))?;
    while let Some(row) = rows.next().map_err(StorageError::sqlite(op))? {
        let mut vals = Vec::with_capacity(8);
        for i in 0..8 {
            vals.push(ToSqlOutput::Borrowed(
                row.get_ref(i).map_err(StorageError::sqlite(op))?,
            ));
        }
        update
            .execute(rusqlite::params_from_iter(vals.iter()))
            .map_err(StorageError::sqlite(op))?;
    }
    Ok(())
}
