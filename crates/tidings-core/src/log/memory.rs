//! The in-memory log: the library's default, and the reference backend the
//! conformance suite is written against.

use crate::log::LogFailure;
use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;

use chrono::{DateTime, Utc};
use parking_lot::Mutex;
use tokio::sync::watch;

use super::{
    validate_consumer_name, AppendError, AppendFuture, Bounds, BoxFuture, CloseError, Committed,
    ConsumerRecord, CursorError, EventLog, KeyWindow, LogOptions, OptionsError, Page, PruneError,
    ReadError, Retention,
};
use crate::event::{NewEvent, SharedEvent};

/// Default retention of a [`MemoryLog`]: the newest 10,000 events (the
/// same as the bus's default history ring).
pub const DEFAULT_MAX_COUNT: u64 = 10_000;

struct State {
    /// Invariant: ascending, consecutive seqs; `events[i].seq == first + i`.
    events: VecDeque<SharedEvent>,
    /// When each event was committed (`committed_at[i]` for `events[i]`),
    /// what age retention measures; the events' own `time` is the
    /// client's. Invariant: as long as `events` when retention has a
    /// `max_age`, empty otherwise; non-decreasing (stamped under the lock
    /// from a monotonic clock).
    committed_at: VecDeque<Instant>,
    /// Seq of `events[0]`; `last + 1` when empty.
    first: u64,
    /// Last seq ever assigned; never decreases.
    last: u64,
    /// Idempotency keys, timed in microseconds since `Shared::epoch`.
    keys: KeyWindow,
    cursors: HashMap<String, u64>,
    /// Consumer name -> definition.
    consumers: HashMap<String, String>,
}

impl State {
    fn prune(&mut self, retention: &Retention) -> u64 {
        let mut removed = 0;
        if let Some(max) = retention.max_count {
            while self.events.len() as u64 > max {
                self.events.pop_front();
                self.committed_at.pop_front();
                self.first += 1;
                removed += 1;
            }
        }
        if let Some(age) = retention.max_age {
            let now = Instant::now();
            while self
                .committed_at
                .front()
                .is_some_and(|at| now.duration_since(*at) > age)
            {
                self.committed_at.pop_front();
                self.events.pop_front();
                self.first += 1;
                removed += 1;
            }
        }
        removed
    }
}

struct Shared {
    state: Mutex<State>,
    retention: Retention,
    /// The monotonic clock's zero for key times.
    epoch: Instant,
    /// Set once by [`EventLog::close`]; never cleared. Every operation
    /// checks it first.
    closed: AtomicBool,
    /// Invariant: while it has receivers, holds `state.last`. Sent under the
    /// state lock, and only when someone watches (notifying costs several
    /// lock round-trips); `watch()` refreshes it before subscribing.
    tx: watch::Sender<u64>,
}

/// A log kept in process memory, bounded by its [`Retention`].
///
/// Cheap to clone (clones share the log). Count retention is applied on
/// every append; age retention on append and on [`EventLog::prune`].
#[derive(Clone)]
pub struct MemoryLog {
    shared: Arc<Shared>,
}

impl Default for MemoryLog {
    fn default() -> Self {
        MemoryLog::new()
    }
}

impl MemoryLog {
    /// A log keeping the newest [`DEFAULT_MAX_COUNT`] events.
    pub fn new() -> MemoryLog {
        MemoryLog::with_options(LogOptions::retention(Retention {
            max_count: Some(DEFAULT_MAX_COUNT),
            max_age: None,
        }))
        .expect("the default options are valid")
    }

    /// A log with the given options, refused if they are invalid
    /// ([`LogOptions::validate`]). Count retention is applied on every
    /// append and age retention on append and on [`EventLog::prune`], so
    /// `prune_interval` has nothing to do here: a memory log runs no
    /// background task.
    pub fn with_options(options: LogOptions) -> Result<MemoryLog, OptionsError> {
        options.validate()?;
        let LogOptions {
            retention,
            idempotency_window,
            prune_interval: _,
        } = options;
        let (tx, _) = watch::channel(0);
        Ok(MemoryLog {
            shared: Arc::new(Shared {
                state: Mutex::new(State {
                    events: VecDeque::new(),
                    committed_at: VecDeque::new(),
                    first: 1,
                    last: 0,
                    keys: KeyWindow::new(idempotency_window),
                    cursors: HashMap::new(),
                    consumers: HashMap::new(),
                }),
                retention,
                epoch: Instant::now(),
                closed: AtomicBool::new(false),
                tx,
            }),
        })
    }

    /// Synchronous append (the bus's fast path uses this through
    /// [`EventLog::append`], which never waits for a memory log).
    pub fn append_now(
        &self,
        batch: Vec<NewEvent>,
        expected_last: Option<u64>,
    ) -> Result<Vec<Committed>, AppendError> {
        if batch.is_empty() {
            return Err(AppendError::EmptyBatch);
        }
        let mut out = Vec::with_capacity(batch.len());
        let keyed = batch.iter().any(|e| e.key.is_some());
        self.append_each(batch, keyed, expected_last, |c| out.push(c))?;
        Ok(out)
    }

    /// Appends the events in order under one lock, handing each result to
    /// `out`; nothing is appended if the expectation fails. `keyed`: some
    /// event of the batch has an idempotency key.
    fn append_each(
        &self,
        batch: impl IntoIterator<Item = NewEvent>,
        keyed: bool,
        expected_last: Option<u64>,
        mut out: impl FnMut(Committed),
    ) -> Result<(), AppendError> {
        let sh = &*self.shared;
        if self.is_closed() {
            return Err(AppendError::Failed(LogFailure::Closed));
        }
        let mut st = sh.state.lock();
        if let Some(expected) = expected_last {
            if st.last != expected {
                return Err(AppendError::Conflict {
                    expected,
                    actual: st.last,
                });
            }
        }
        let has_keys = keyed || !st.keys.is_empty();
        let now = has_keys.then(|| micros_since(sh.epoch));
        if let Some(now) = now {
            st.keys.expire(now);
        }
        let before = st.last;
        let committed_at = sh.retention.max_age.map(|_| Instant::now());
        for ev in batch {
            if let Some(k) = &ev.key {
                if let Some(orig) = st.keys.get(k) {
                    out(Committed {
                        event: orig.clone(),
                        duplicate: true,
                    });
                    continue;
                }
            }
            st.last += 1;
            let committed: SharedEvent = Arc::new(ev.commit(st.last));
            if let Some(now) = now {
                st.keys.remember(&committed, now);
            }
            st.events.push_back(committed.clone());
            if let Some(at) = committed_at {
                st.committed_at.push_back(at);
            }
            out(Committed {
                event: committed,
                duplicate: false,
            });
        }
        debug_assert_eq!(st.events.len() as u64, st.last + 1 - st.first);
        st.prune(&sh.retention);
        if st.last != before && sh.tx.receiver_count() > 0 {
            sh.tx.send_replace(st.last);
        }
        Ok(())
    }

    fn is_closed(&self) -> bool {
        self.shared.closed.load(Ordering::Acquire)
    }

    /// `Ok` while open; what every operation but append checks first.
    fn open<E: From<Closed>>(&self) -> Result<(), E> {
        if self.is_closed() {
            Err(E::from(Closed))
        } else {
            Ok(())
        }
    }

    fn read_now(&self, after: u64, limit: usize) -> Page {
        let st = self.shared.state.lock();
        let start = after.saturating_add(1).max(st.first);
        let mut events = Vec::new();
        if start <= st.last {
            let offset = (start - st.first) as usize;
            events.extend(st.events.range(offset..).take(limit).cloned());
        }
        Page {
            events,
            last_seq: st.last,
        }
    }

    fn bounds_now(&self) -> Bounds {
        let st = self.shared.state.lock();
        Bounds {
            first: st.first,
            last: st.last,
        }
    }
}

/// Microseconds on the monotonic clock since `epoch`.
fn micros_since(epoch: Instant) -> i64 {
    i64::try_from(epoch.elapsed().as_micros()).unwrap_or(i64::MAX)
}

fn ready<T: Send + 'static>(v: T) -> BoxFuture<T> {
    Box::pin(std::future::ready(v))
}

/// The log was closed; converts into each operation's `Closed`.
struct Closed;

impl From<Closed> for ReadError {
    fn from(_: Closed) -> Self {
        ReadError::Failed(LogFailure::Closed)
    }
}

impl From<Closed> for CursorError {
    fn from(_: Closed) -> Self {
        CursorError::Failed(LogFailure::Closed)
    }
}

impl From<Closed> for PruneError {
    fn from(_: Closed) -> Self {
        PruneError::Failed(LogFailure::Closed)
    }
}

impl EventLog for MemoryLog {
    fn append(&self, batch: Vec<NewEvent>, expected_last: Option<u64>) -> AppendFuture {
        AppendFuture::ready(self.append_now(batch, expected_last))
    }

    fn append_one(&self, event: NewEvent, expected_last: Option<u64>) -> AppendFuture<Committed> {
        let mut one = None;
        let keyed = event.key.is_some();
        let r = self.append_each([event], keyed, expected_last, |c| one = Some(c));
        AppendFuture::ready(r.map(|()| one.expect("one event in, one result out")))
    }

    fn read(&self, after: u64, limit: usize) -> BoxFuture<Result<Page, ReadError>> {
        ready(self.open().map(|()| self.read_now(after, limit)))
    }

    fn bounds(&self) -> BoxFuture<Result<Bounds, ReadError>> {
        ready(self.open().map(|()| self.bounds_now()))
    }

    fn seq_before(&self, time: DateTime<Utc>) -> BoxFuture<Result<u64, ReadError>> {
        if let Err(e) = self.open() {
            return ready(Err(e));
        }
        let st = self.shared.state.lock();
        // Times are non-decreasing in practice but not guaranteed (clock
        // steps), so scan for the first event at or after `time`.
        let seq = match st.events.iter().find(|e| e.time >= time) {
            Some(e) => e.seq - 1,
            None => st.last,
        };
        ready(Ok(seq))
    }

    fn watch(&self) -> watch::Receiver<u64> {
        let st = self.shared.state.lock();
        self.shared.tx.send_replace(st.last);
        self.shared.tx.subscribe()
    }

    fn cursor(&self, consumer: &str) -> BoxFuture<Result<Option<u64>, CursorError>> {
        let r = self
            .open()
            .and_then(|()| validate_consumer_name(consumer))
            .map(|_| self.shared.state.lock().cursors.get(consumer).copied());
        ready(r)
    }

    fn commit_cursor(&self, consumer: &str, seq: u64) -> BoxFuture<Result<(), CursorError>> {
        let r = self
            .open()
            .and_then(|()| validate_consumer_name(consumer))
            .and_then(|_| {
                let mut st = self.shared.state.lock();
                if seq > st.last {
                    return Err(CursorError::BeyondEnd {
                        name: consumer.to_owned(),
                        seq,
                        last: st.last,
                    });
                }
                st.cursors.insert(consumer.to_owned(), seq);
                Ok(())
            });
        ready(r)
    }

    fn define_consumer(&self, name: &str, spec: &str) -> BoxFuture<Result<String, CursorError>> {
        let r = self
            .open()
            .and_then(|()| validate_consumer_name(name))
            .map(|_| {
                let mut st = self.shared.state.lock();
                st.consumers
                    .entry(name.to_owned())
                    .or_insert_with(|| spec.to_owned())
                    .clone()
            });
        ready(r)
    }

    fn consumers(&self) -> BoxFuture<Result<Vec<ConsumerRecord>, CursorError>> {
        if let Err(e) = self.open() {
            return ready(Err(e));
        }
        let st = self.shared.state.lock();
        let mut names: Vec<&String> = st.consumers.keys().chain(st.cursors.keys()).collect();
        names.sort();
        names.dedup();
        let list = names
            .into_iter()
            .map(|n| ConsumerRecord {
                name: n.clone(),
                spec: st.consumers.get(n).cloned().unwrap_or_default(),
                cursor: st.cursors.get(n).copied(),
            })
            .collect();
        ready(Ok(list))
    }

    fn delete_consumer(&self, name: &str) -> BoxFuture<Result<bool, CursorError>> {
        let r = self
            .open()
            .and_then(|()| validate_consumer_name(name))
            .map(|_| {
                let mut st = self.shared.state.lock();
                let a = st.consumers.remove(name).is_some();
                let b = st.cursors.remove(name).is_some();
                a || b
            });
        ready(r)
    }

    fn prune(&self) -> BoxFuture<Result<u64, PruneError>> {
        if let Err(e) = self.open() {
            return ready(Err(e));
        }
        let n = self.shared.state.lock().prune(&self.shared.retention);
        ready(Ok(n))
    }

    /// Marks the log closed: every later call on any clone fails with
    /// `Closed`; the events stay in memory until the last clone drops.
    fn close(&self) -> BoxFuture<Result<(), CloseError>> {
        self.shared.closed.store(true, Ordering::Release);
        ready(Ok(()))
    }
}
