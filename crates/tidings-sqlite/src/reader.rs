//! Reader threads: each owns a read-only connection and serves reads from a
//! shared queue, so reads never wait for the writer (WAL readers see the
//! last commit that finished before their read transaction began) and the
//! writer never waits for them.
//!
//! # Contract
//!
//! * Readers never write: each connection is `query_only`, and the only
//!   shared state is [`ReadAhead`] (pages and counters).
//! * Every answer comes from one read transaction, one snapshot: a page's
//!   `last_seq` agrees with its rows.
//! * A page served from the read-ahead is always exactly what a fresh read
//!   would return at the time it is served (see below).
//! * Every job taken off the queue is answered (or skipped, if its
//!   requester is gone); the threads stop once the queue is closed and
//!   drained.
//!
//! # Read-ahead
//!
//! A reader catching up (core's `stream_from`, a replay) asks for page after
//! page. When a read returns a *full* page, the reader thread, right after
//! answering, decodes the next page (`after` = the last seq it returned,
//! same `limit`) into [`ReadAhead`], so decoding page k+1 overlaps with the
//! caller consuming page k. A request for a page being read ahead waits for
//! it instead of reading it twice.
//!
//! A read-ahead page is only served if it is still exactly what a fresh
//! read would return: it was full when read (seqs are dense and events
//! immutable, so the same range holds the same events later), and a fresh
//! snapshot, taken after the request arrived, shows that retention has not
//! removed any of it (`first <= the page's first seq`). `Page::last_seq`
//! then comes from that fresh snapshot. Otherwise the page is dropped and
//! read normally.
//!
//! # Byte budgets
//!
//! A read with a byte budget (`EventLog::read_within`) stops stepping SQLite
//! as soon as the next row would take the page past the budget (the row's
//! size is computed by SQLite from the column lengths, before its payload
//! is copied), keeping at least one row: the same cut as core's
//! `Page::truncate_to_bytes`, without ever copying the rows past it. A page
//! cut by its budget counts as full (more events follow), and since an
//! event's size never changes, a read-ahead page cut at the same budget is
//! still exactly what a fresh read returns. Read-ahead pages are keyed by
//! `(after, limit, budget)`.
//!
//! # Readers that went away
//!
//! A read whose requester dropped its future before a reader thread took it
//! is skipped (nothing is read). A requester that goes away while its page
//! is read is not read ahead for: if the answer cannot be delivered, the
//! read-ahead registered for it is abandoned before it starts, and a
//! read-ahead chain stops as soon as every request waiting on it is gone.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use parking_lot::{Condvar, Mutex};

use chrono::{DateTime, Utc};
use crossbeam_channel::Receiver;
use rusqlite::{Connection, OptionalExtension};
use tidings_core::log::{Bounds, ConsumerRecord, CursorError, ReadError};
use tokio::sync::oneshot;

use crate::codec::{micros_ceil, RawPage, EVENT_COLUMNS};
use crate::error::StorageError;
use crate::sql::read_last;

/// A read for the pool.
pub(crate) enum ReadJob {
    /// Answered with rows the caller decodes (see [`RawPage`]).
    Read {
        after: u64,
        limit: usize,
        /// The byte budget (`usize::MAX`: none).
        max_bytes: usize,
        reply: oneshot::Sender<Result<RawPage, ReadError>>,
    },
    /// Tests: block this reader thread until the sender is used or dropped.
    #[cfg(test)]
    Hold(std::sync::mpsc::Receiver<()>),
    Bounds {
        reply: oneshot::Sender<Result<Bounds, ReadError>>,
    },
    SeqBefore {
        time: DateTime<Utc>,
        reply: oneshot::Sender<Result<u64, ReadError>>,
    },
    Cursor {
        name: String,
        reply: oneshot::Sender<Result<Option<u64>, CursorError>>,
    },
    Consumers {
        reply: oneshot::Sender<Result<Vec<ConsumerRecord>, CursorError>>,
    },
}

type PageReply = oneshot::Sender<Result<RawPage, ReadError>>;

/// Pages smaller than this are not read ahead (not a catch-up).
const READ_AHEAD_MIN: usize = 64;
/// Pages larger than this are not read ahead (memory).
const READ_AHEAD_MAX: usize = 16_384;
/// Read-ahead pages kept at once (one per sequential reader, roughly).
const READ_AHEAD_SLOTS: usize = 4;

enum SlotState {
    /// A reader thread is reading it; these requests wait for it.
    Reading(Vec<PageReply>),
    /// Read, not yet asked for (a full page).
    Ready(RawPage),
}

/// Which page: what `read_within(after, limit, max_bytes)` would return.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Key {
    after: u64,
    limit: usize,
    max_bytes: usize,
}

/// A page being read or read.
struct Slot {
    key: Key,
    state: SlotState,
}

/// Pages read ahead for sequential readers, shared by the reader threads.
#[derive(Default)]
pub(crate) struct ReadAhead {
    /// Invariant: at most one slot per key, at most `READ_AHEAD_SLOTS`
    /// slots; oldest first.
    slots: Mutex<VecDeque<Slot>>,
    /// Signalled whenever a slot stops being `Reading`.
    idle: Condvar,
    /// Requests answered with a page read ahead.
    pub(crate) served: AtomicU64,
    /// Rows copied out of SQLite by the reader threads.
    pub(crate) rows_read: AtomicU64,
    /// Reads skipped because their requester had gone.
    pub(crate) abandoned: AtomicU64,
}

/// What a request found in the read-ahead.
enum Claim {
    /// Nothing: read it.
    Miss(PageReply),
    /// It is being read: the reply was parked with it.
    Parked,
    /// A full page read earlier, to validate and serve.
    Ready(PageReply, RawPage),
}

impl ReadAhead {
    /// Tests: blocks until no read-ahead is being read.
    #[cfg(test)]
    pub(crate) fn wait_idle(&self) {
        let mut slots = self.slots.lock();
        while slots
            .iter()
            .any(|s| matches!(s.state, SlotState::Reading(_)))
        {
            self.idle.wait(&mut slots);
        }
    }

    /// Tests: how many pages are read ahead or being read.
    #[cfg(test)]
    pub(crate) fn slots(&self) -> usize {
        self.slots.lock().len()
    }

    fn claim(&self, key: Key, reply: PageReply) -> Claim {
        let mut slots = self.slots.lock();
        let Some(i) = slots.iter().position(|s| s.key == key) else {
            return Claim::Miss(reply);
        };
        match &mut slots[i].state {
            SlotState::Reading(waiters) => {
                waiters.push(reply);
                Claim::Parked
            }
            SlotState::Ready(_) => match slots.remove(i).map(|s| s.state) {
                Some(SlotState::Ready(events)) => Claim::Ready(reply, events),
                _ => Claim::Miss(reply),
            },
        }
    }

    /// Registers a read-ahead of `key`; false if there is one.
    fn start(&self, key: Key) -> bool {
        let mut slots = self.slots.lock();
        if slots.iter().any(|s| s.key == key) {
            return false;
        }
        while slots.len() >= READ_AHEAD_SLOTS {
            // Evict the oldest slot nobody waits for.
            match slots
                .iter()
                .position(|s| matches!(s.state, SlotState::Ready(_)))
            {
                Some(i) => {
                    slots.remove(i);
                }
                None => return false,
            }
        }
        slots.push_back(Slot {
            key,
            state: SlotState::Reading(Vec::new()),
        });
        true
    }

    /// Drops a registered read-ahead of `key` before it was read, because
    /// the reader it was for went away; false (and nothing changes) if
    /// another request already waits for it.
    fn abandon(&self, key: Key) -> bool {
        let mut slots = self.slots.lock();
        let Some(i) = slots.iter().position(|s| s.key == key) else {
            return true;
        };
        match &slots[i].state {
            SlotState::Reading(waiters) if waiters.is_empty() => {
                slots.remove(i);
                self.idle.notify_all();
                true
            }
            _ => false,
        }
    }

    /// Ends a read-ahead. If requests waited for it, returns them with the
    /// page to answer them with; otherwise keeps a full page for a later
    /// request and returns nothing.
    fn finish(&self, key: Key, page: PageEvents) -> Option<(Vec<PageReply>, PageEvents)> {
        let mut slots = self.slots.lock();
        let i = slots.iter().position(|s| s.key == key)?;
        self.idle.notify_all();
        let waiters = match &mut slots[i].state {
            SlotState::Reading(w) => std::mem::take(w),
            SlotState::Ready(_) => Vec::new(),
        };
        if !waiters.is_empty() {
            slots.remove(i);
            return Some((waiters, page));
        }
        match page {
            Ok(rows) if rows.is_full(key.limit) => slots[i].state = SlotState::Ready(rows),
            _ => {
                slots.remove(i);
            }
        }
        None
    }
}

type PageEvents = Result<RawPage, StorageError>;

/// Serves jobs until the queue is closed and drained.
pub(crate) fn run(mut conn: Connection, rx: Receiver<ReadJob>, ahead: Arc<ReadAhead>) {
    while let Ok(job) = rx.recv() {
        // A dropped receiver only means the caller stopped waiting.
        match job {
            ReadJob::Read { reply, .. } if reply.is_closed() => {
                // The requester went away before we got to it.
                ahead.abandoned.fetch_add(1, Ordering::Relaxed);
            }
            ReadJob::Read {
                after,
                limit,
                max_bytes,
                reply,
            } => serve_read(
                &mut conn,
                &ahead,
                Key {
                    after,
                    limit,
                    max_bytes,
                },
                reply,
            ),
            #[cfg(test)]
            ReadJob::Hold(release) => {
                let _ = release.recv();
            }
            ReadJob::Bounds { reply } => {
                let _ = reply.send(bounds(&mut conn).map_err(Into::into));
            }
            ReadJob::SeqBefore { time, reply } => {
                let _ = reply.send(seq_before(&mut conn, time).map_err(Into::into));
            }
            ReadJob::Cursor { name, reply } => {
                let _ = reply.send(cursor(&conn, &name).map_err(Into::into));
            }
            ReadJob::Consumers { reply } => {
                let _ = reply.send(consumers(&conn).map_err(Into::into));
            }
        }
    }
}

fn worth_reading_ahead(limit: usize) -> bool {
    (READ_AHEAD_MIN..=READ_AHEAD_MAX).contains(&limit)
}

/// Answers a page request, from the read-ahead when possible, then reads
/// the next page ahead if this one was full and its requester is still
/// there.
fn serve_read(conn: &mut Connection, ahead: &ReadAhead, key: Key, reply: PageReply) {
    let (reply, ready) = match ahead.claim(key, reply) {
        Claim::Parked => return,
        Claim::Miss(reply) => (reply, None),
        Claim::Ready(reply, events) => (reply, Some(events)),
    };
    let result = match ready.map(|events| still_valid(conn, events)) {
        Some(Ok(Some(page))) => {
            ahead.served.fetch_add(1, Ordering::Relaxed);
            Ok(page)
        }
        Some(Err(e)) => Err(e),
        Some(Ok(None)) | None => read_page(conn, ahead, key),
    };
    let next = match &result {
        Ok(page) if page.is_full(key.limit) && worth_reading_ahead(key.limit) => {
            page.last_event_seq()
        }
        _ => None,
    };
    // Registered before answering, so a request for the next page that
    // arrives right after the answer finds it.
    let started = next
        .map(|after| Key { after, ..key })
        .filter(|&k| ahead.start(k));
    let delivered = reply.send(result.map_err(Into::into)).is_ok();
    let Some(mut key) = started else {
        return;
    };
    if !delivered && ahead.abandon(key) {
        // The reader went away: nobody to read ahead for.
        return;
    }
    // Read ahead while requests keep arriving for what is read.
    loop {
        let page = read_page(conn, ahead, key);
        let Some((waiters, page)) = ahead.finish(key, page) else {
            return;
        };
        let waiters: Vec<PageReply> = waiters.into_iter().filter(|w| !w.is_closed()).collect();
        if waiters.is_empty() {
            // Everyone who waited for it went away: stop here.
            return;
        }
        let answer = match page {
            Ok(events) => still_valid(conn, events).and_then(|p| match p {
                Some(p) => {
                    ahead
                        .served
                        .fetch_add(waiters.len() as u64, Ordering::Relaxed);
                    Ok(p)
                }
                None => read_page(conn, ahead, key),
            }),
            Err(e) => Err(e),
        };
        let next = match &answer {
            Ok(p) if p.is_full(key.limit) => p.last_event_seq(),
            _ => None,
        };
        let started = next
            .map(|after| Key { after, ..key })
            .filter(|&k| ahead.start(k));
        let mut delivered = false;
        for w in waiters {
            delivered |= w.send(answer.clone().map_err(Into::into)).is_ok();
        }
        match started {
            Some(k) if delivered || !ahead.abandon(k) => key = k,
            _ => return,
        }
    }
}

/// A read-ahead page (full when read) as a fresh read would return it now,
/// or `None` if retention removed part of it since.
fn still_valid(conn: &mut Connection, mut page: RawPage) -> Result<Option<RawPage>, StorageError> {
    let op = "checking a page read ahead";
    let Some(first_in_page) = page.first_seq() else {
        return Ok(None);
    };
    let tx = conn.transaction().map_err(StorageError::sqlite(op))?;
    let last = read_last(&tx)?;
    let first: Option<i64> = tx
        .prepare_cached("SELECT min(seq) FROM events")
        .and_then(|mut s| s.query_row([], |r| r.get(0)))
        .map_err(StorageError::sqlite(op))?;
    tx.commit().map_err(StorageError::sqlite(op))?;
    match first {
        Some(f) if f.max(1) as u64 <= first_in_page => {
            page.last_seq = last;
            Ok(Some(page))
        }
        _ => Ok(None),
    }
}

fn to_i64(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

/// One page of rows, and the last seq, from one read transaction (one
/// snapshot), stopping at `key.max_bytes` (see the module docs).
fn read_page(conn: &mut Connection, ahead: &ReadAhead, key: Key) -> Result<RawPage, StorageError> {
    let op = "reading events";
    let Key {
        after,
        limit,
        max_bytes,
    } = key;
    let tx = conn.transaction().map_err(StorageError::sqlite(op))?;
    let last = read_last(&tx)?;
    let want = if limit > 0 && after < last {
        usize::try_from(last - after)
            .unwrap_or(usize::MAX)
            .min(limit)
    } else {
        0
    };
    let mut page = RawPage::new(last, want.min(1 << 16));
    if want > 0 {
        let budgeted = max_bytes != usize::MAX;
        // The size column is `Event::approx_bytes` as far as the stored
        // text tells it (the JSON text's length for the payload), computed
        // by SQLite before the row's payload is copied out.
        let sql = if budgeted {
            format!(
                "SELECT {EVENT_COLUMNS}, 120 + octet_length(name) + octet_length(source)
                 + ifnull(octet_length(key) + 8, 0) + octet_length(data)
                 FROM events WHERE seq > ?1 ORDER BY seq LIMIT ?2"
            )
        } else {
            format!("SELECT {EVENT_COLUMNS} FROM events WHERE seq > ?1 ORDER BY seq LIMIT ?2")
        };
        let mut stmt = tx.prepare_cached(&sql).map_err(StorageError::sqlite(op))?;
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let mut rows = stmt
            .query([to_i64(after), limit])
            .map_err(StorageError::sqlite(op))?;
        let mut total = 0usize;
        while let Some(row) = rows.next().map_err(StorageError::sqlite(op))? {
            if budgeted {
                let size: i64 = row.get(8).map_err(StorageError::sqlite(op))?;
                total = total.saturating_add(usize::try_from(size).unwrap_or(0));
                if total > max_bytes && page.len() > 0 {
                    page.budget_cut = true;
                    break;
                }
            }
            page.push(row)?;
        }
    }
    tx.commit().map_err(StorageError::sqlite(op))?;
    ahead
        .rows_read
        .fetch_add(page.len() as u64, Ordering::Relaxed);
    Ok(page)
}

fn bounds(conn: &mut Connection) -> Result<Bounds, StorageError> {
    let op = "reading the bounds";
    let tx = conn.transaction().map_err(StorageError::sqlite(op))?;
    let last = read_last(&tx)?;
    let first: Option<i64> = tx
        .prepare_cached("SELECT min(seq) FROM events")
        .and_then(|mut s| s.query_row([], |r| r.get(0)))
        .map_err(StorageError::sqlite(op))?;
    tx.commit().map_err(StorageError::sqlite(op))?;
    Ok(Bounds {
        first: first.map_or(last + 1, |f| f.max(1) as u64),
        last,
    })
}

/// The seq just before the first event, in seq order, at or after `time`
/// (the last seq if there is none): the same answer as the memory log's
/// scan, which holds even if event times are not monotonic.
fn seq_before(conn: &mut Connection, time: DateTime<Utc>) -> Result<u64, StorageError> {
    let op = "finding an event by time";
    let tx = conn.transaction().map_err(StorageError::sqlite(op))?;
    let last = read_last(&tx)?;
    let first_at: Option<i64> = tx
        .prepare_cached("SELECT seq FROM events WHERE time >= ?1 ORDER BY seq LIMIT 1")
        .and_then(|mut s| s.query_row([micros_ceil(time)], |r| r.get(0)).optional())
        .map_err(StorageError::sqlite(op))?;
    tx.commit().map_err(StorageError::sqlite(op))?;
    Ok(match first_at {
        Some(s) => (s.max(1) - 1) as u64,
        None => last,
    })
}

fn cursor(conn: &Connection, name: &str) -> Result<Option<u64>, StorageError> {
    let v: Option<i64> = conn
        .prepare_cached("SELECT seq FROM cursors WHERE name = ?1")
        .and_then(|mut s| s.query_row([name], |r| r.get(0)).optional())
        .map_err(StorageError::sqlite("reading a cursor"))?;
    Ok(v.map(|s| s.max(0) as u64))
}

/// Every consumer with a definition or a cursor, by name (byte order, as
/// `String`s sort), from one statement and so one snapshot.
fn consumers(conn: &Connection) -> Result<Vec<ConsumerRecord>, StorageError> {
    let op = "listing consumers";
    let mut stmt = conn
        .prepare_cached(
            "SELECT n.name, ifnull(d.spec, ''), c.seq
             FROM (SELECT name FROM consumers UNION SELECT name FROM cursors) AS n
             LEFT JOIN consumers AS d ON d.name = n.name
             LEFT JOIN cursors AS c ON c.name = n.name
             ORDER BY n.name",
        )
        .map_err(StorageError::sqlite(op))?;
    let rows = stmt
        .query_map([], |r| {
            Ok(ConsumerRecord {
                name: r.get(0)?,
                spec: r.get(1)?,
                cursor: r.get::<_, Option<i64>>(2)?.map(|s| s.max(0) as u64),
            })
        })
        .and_then(|rows| rows.collect())
        .map_err(StorageError::sqlite(op))?;
    Ok(rows)
}
