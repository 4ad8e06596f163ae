//! [`NatsLog`]: the [`EventLog`] over one JetStream stream.

use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::{self, consumer, stream};
use async_nats::HeaderMap;
use chrono::{DateTime, Utc};
use futures_util::StreamExt;
use parking_lot::Mutex;
use tidings_core::log::{
    AppendError, AppendFuture, Bounds, BoxFuture, Committed, ConsumerRecord, CursorError, EventLog,
    Page, PruneError, ReadError,
};
use tidings_core::{NewEvent, SharedEvent};
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::AbortHandle;
use tokio::time::Instant;
use tracing::{debug, info, warn};

use crate::error::{ConnectError, EngineError};
use crate::options::{validate_stream_name, NatsOptions, NatsUrl, Storage};
use crate::record::{encode, Record, HEADER_COUNT, HEADER_FIRST_SEQ};

mod consumers;

/// The JetStream duplicate window of the stream. It only backs the
/// `Nats-Msg-Id: tidings-<first seq>` guard (two records can never claim the
/// same first seq), not Tidings' idempotency keys.
const DUPLICATE_WINDOW: Duration = Duration::from_secs(120);

/// The newest record known: its stream seq and the Tidings seq it ends at.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
struct Tail {
    stream_seq: u64,
    last: u64,
}

/// The stream's state as JetStream reports it.
#[derive(Debug, Clone, Copy)]
struct StreamState {
    first: u64,
    last: u64,
    messages: u64,
}

impl StreamState {
    fn is_empty(&self) -> bool {
        self.messages == 0 || self.first > self.last
    }
}

struct State {
    /// Best known tail (from the follower and this process's own acks).
    tail: Tail,
    /// Last Tidings seq applied by the follower (what the cache covers).
    applied_last: u64,
    /// Records the follower saw, ascending and contiguous in stream seq.
    cache: VecDeque<Arc<Record>>,
    cache_events: usize,
    /// Idempotency key -> the event first appended with it, and when (µs).
    keys: HashMap<String, (SharedEvent, i64)>,
    key_order: VecDeque<(i64, String)>,
}

impl State {
    fn expire_keys(&mut self, window_micros: i64, now: i64) {
        while let Some((at, _)) = self.key_order.front() {
            if now - *at < window_micros {
                break;
            }
            if let Some((at, k)) = self.key_order.pop_front() {
                if self.keys.get(&k).is_some_and(|(_, a)| *a == at) {
                    self.keys.remove(&k);
                }
            }
        }
    }

    fn remember_keys(&mut self, events: &[SharedEvent], at: i64, window_micros: i64, now: i64) {
        if now - at >= window_micros {
            return;
        }
        for e in events {
            if let Some(k) = &e.key {
                if !self.keys.contains_key(k) {
                    self.keys.insert(k.clone(), (e.clone(), at));
                    self.key_order.push_back((at, k.clone()));
                }
            }
        }
    }

    fn raise_tail(&mut self, t: Tail) {
        if t.stream_seq >= self.tail.stream_seq {
            self.tail = t;
        }
    }
}

struct Inner {
    client: async_nats::Client,
    js: jetstream::Context,
    stream: stream::Stream,
    stream_name: String,
    subject: String,
    /// Stream `<name>_cursors`, one subject per consumer cursor and one per
    /// consumer definition, last value kept (see `consumers.rs`).
    cursors: stream::Stream,
    cursor_prefix: String,
    opts: NatsOptions,
    state: Mutex<State>,
    /// Last committed Tidings seq (the `EventLog::watch` channel).
    watch_tx: watch::Sender<u64>,
    /// Stream seq up to which the follower has applied every record.
    seen_tx: watch::Sender<u64>,
    /// Asks the follower to recreate its consumer (it looked stuck).
    restart_follower: tokio::sync::Notify,
}

/// Stops the background tasks when the last handle is dropped.
struct Guard {
    writer: mpsc::UnboundedSender<Request>,
    tasks: Vec<AbortHandle>,
}

impl Drop for Guard {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

struct Request {
    batch: Vec<NewEvent>,
    expected: Option<u64>,
    deadline: Instant,
    reply: oneshot::Sender<Result<Vec<Committed>, AppendError>>,
}

/// An [`EventLog`] kept in a NATS JetStream stream, shareable by several
/// processes. See the crate docs for the design. Cheap to clone; the
/// background tasks stop when the last clone is dropped.
#[derive(Clone)]
pub struct NatsLog {
    inner: Arc<Inner>,
    guard: Arc<Guard>,
}

fn now_micros() -> i64 {
    Utc::now().timestamp_micros()
}

fn micros(d: Duration) -> i64 {
    i64::try_from(d.as_micros()).unwrap_or(i64::MAX)
}

impl NatsLog {
    /// Opens the log named by `nats://HOST:PORT?stream=NAME` (stream
    /// default [`crate::DEFAULT_STREAM`]), creating the stream if needed.
    pub async fn connect(url: &str, options: NatsOptions) -> Result<NatsLog, ConnectError> {
        let u = NatsUrl::parse(url)?;
        NatsLog::open(&u.server, &u.stream, options).await
    }

    /// Connects to `server` (e.g. `nats://127.0.0.1:4222`) and opens
    /// `stream`, creating it if needed. The client reconnects forever with
    /// backoff; operations fail with `Unavailable` while it is disconnected.
    pub async fn open(
        server: &str,
        stream: &str,
        options: NatsOptions,
    ) -> Result<NatsLog, ConnectError> {
        validate_stream_name(stream)?;
        let client = async_nats::ConnectOptions::new()
            .name("tidings")
            .connection_timeout(options.request_timeout)
            .max_reconnects(None)
            .connect(server)
            .await
            .map_err(|source| ConnectError::Connect {
                addr: server.to_owned(),
                source,
            })?;
        NatsLog::with_client(client, stream, options).await
    }

    /// Opens `stream` over an existing client.
    pub async fn with_client(
        client: async_nats::Client,
        stream_name: &str,
        options: NatsOptions,
    ) -> Result<NatsLog, ConnectError> {
        validate_stream_name(stream_name)?;
        let setup = |what: &str, e: &dyn std::fmt::Display| ConnectError::Setup {
            stream: stream_name.to_owned(),
            message: format!("{what}: {e}"),
        };
        let mut js = jetstream::new(client.clone());
        js.set_timeout(options.request_timeout);
        let subject = format!("{stream_name}.events");
        let storage = match options.storage {
            Storage::File => stream::StorageType::File,
            Storage::Memory => stream::StorageType::Memory,
        };
        let config = stream::Config {
            name: stream_name.to_owned(),
            subjects: vec![subject.clone()],
            max_messages: options
                .retention
                .max_count
                .map(|n| i64::try_from(n.max(1)).unwrap_or(i64::MAX))
                .unwrap_or(-1),
            duplicate_window: DUPLICATE_WINDOW,
            allow_direct: true,
            storage,
            ..Default::default()
        };
        // Update first (the common case when several servers share the
        // stream); create when it does not exist yet.
        let stream = match js.update_stream(config.clone()).await {
            Ok(_) => js
                .get_stream(stream_name)
                .await
                .map_err(|e| setup("get", &e))?,
            Err(_) => match js.create_stream(config).await {
                Ok(s) => s,
                Err(e) => {
                    // Another process may have created it meanwhile.
                    js.get_stream(stream_name)
                        .await
                        .map_err(|_| setup("create", &e))?
                }
            },
        };
        // Cursors: a small stream keeping the last message per subject (a
        // KV bucket by hand; the KV API's replies do not parse on 2.9).
        let cursor_stream = format!("{stream_name}_cursors");
        let cursor_prefix = format!("{stream_name}_cursors.");
        let cursor_config = stream::Config {
            name: cursor_stream.clone(),
            subjects: vec![format!("{cursor_prefix}>")],
            max_messages_per_subject: 1,
            allow_direct: true,
            storage,
            ..Default::default()
        };
        let cursors = match js.get_stream(&cursor_stream).await {
            Ok(s) => s,
            Err(_) => match js.create_stream(cursor_config).await {
                Ok(s) => s,
                Err(e) => js
                    .get_stream(&cursor_stream)
                    .await
                    .map_err(|_| setup("cursor stream", &e))?,
            },
        };
        let (watch_tx, _) = watch::channel(0);
        let (seen_tx, _) = watch::channel(0);
        let inner = Arc::new(Inner {
            client,
            js,
            stream,
            stream_name: stream_name.to_owned(),
            subject,
            cursors,
            cursor_prefix,
            opts: options,
            state: Mutex::new(State {
                tail: Tail::default(),
                applied_last: 0,
                cache: VecDeque::new(),
                cache_events: 0,
                keys: HashMap::new(),
                key_order: VecDeque::new(),
            }),
            watch_tx,
            seen_tx,
            restart_follower: tokio::sync::Notify::new(),
        });
        let st = inner
            .stream_state()
            .await
            .map_err(|e| setup("stream info", &e))?;
        let tail = inner.tail_from(st).await.map_err(|e| setup("tail", &e))?;
        // The follower replays the idempotency window (to know its keys),
        // then follows live.
        let start = if st.is_empty() {
            st.last + 1
        } else {
            let cutoff = now_micros() - micros(inner.opts.idempotency_window);
            inner
                .search(st.first, st.last, |r| r.at >= cutoff)
                .await
                .map_err(|e| setup("window start", &e))?
                .map(|r| r.stream_seq)
                .unwrap_or(st.last + 1)
        };
        {
            let mut s = inner.state.lock();
            s.tail = tail;
            s.applied_last = if start > st.last { tail.last } else { 0 };
        }
        inner.watch_tx.send_replace(tail.last);
        inner.seen_tx.send_replace(start - 1);
        info!(
            stream = stream_name,
            last = tail.last,
            stream_seq = tail.stream_seq,
            "opened NATS log"
        );

        let (writer_tx, writer_rx) = mpsc::unbounded_channel();
        let mut tasks = vec![
            tokio::spawn(writer_loop(inner.clone(), writer_rx)).abort_handle(),
            tokio::spawn(follower_loop(inner.clone(), start)).abort_handle(),
        ];
        if let Some(every) = inner.opts.effective_prune_interval() {
            tasks.push(tokio::spawn(pruner_loop(inner.clone(), every)).abort_handle());
        }
        Ok(NatsLog {
            inner,
            guard: Arc::new(Guard {
                writer: writer_tx,
                tasks,
            }),
        })
    }

    /// The JetStream stream name.
    pub fn stream_name(&self) -> &str {
        &self.inner.stream_name
    }

    /// The subject records are published on (`<stream>.events`).
    pub fn subject(&self) -> &str {
        &self.inner.subject
    }

    /// The underlying client (for health checks: `connection_state()`).
    pub fn client(&self) -> &async_nats::Client {
        &self.inner.client
    }

    /// Deletes the stream and its consumer bucket, cursors and definitions
    /// (tests, tear-down). Other handles on the same stream start failing.
    pub async fn destroy(self) -> Result<(), ConnectError> {
        let name = self.inner.stream_name.clone();
        let js = self.inner.js.clone();
        drop(self);
        let err = |e: &dyn std::fmt::Display| ConnectError::Setup {
            stream: name.clone(),
            message: format!("delete: {e}"),
        };
        js.delete_stream(&name).await.map_err(|e| err(&e))?;
        js.delete_stream(format!("{name}_cursors"))
            .await
            .map_err(|e| err(&e))?;
        Ok(())
    }
}

impl Inner {
    fn window_micros(&self) -> i64 {
        micros(self.opts.idempotency_window)
    }

    /// Maps a client error: `Unavailable` while disconnected, else `Storage`.
    fn engine_err(&self, what: &str, e: impl std::fmt::Display) -> EngineError {
        if self.client.connection_state() != async_nats::connection::State::Connected {
            EngineError::Unavailable(format!("{what}: not connected to NATS ({e})"))
        } else {
            EngineError::Storage(format!("{what}: {e}"))
        }
    }

    async fn bounded<T, E: std::fmt::Display>(
        &self,
        what: &str,
        f: impl Future<Output = Result<T, E>>,
    ) -> Result<T, EngineError> {
        match tokio::time::timeout(self.opts.request_timeout, f).await {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e)) => Err(self.engine_err(what, e)),
            Err(_) => Err(EngineError::Unavailable(format!(
                "{what}: no answer from NATS within {:?}",
                self.opts.request_timeout
            ))),
        }
    }

    async fn stream_state(&self) -> Result<StreamState, EngineError> {
        let info = self.bounded("stream info", self.stream.get_info()).await?;
        Ok(StreamState {
            first: info.state.first_sequence,
            last: info.state.last_sequence,
            messages: info.state.messages,
        })
    }

    /// The record at a stream seq; `None` if it is not there (pruned).
    async fn get_record(&self, seq: u64) -> Result<Option<Arc<Record>>, EngineError> {
        if seq == 0 {
            return Ok(None);
        }
        if let Some(r) = self.cached(seq) {
            return Ok(Some(r));
        }
        let res =
            tokio::time::timeout(self.opts.request_timeout, self.stream.direct_get(seq)).await;
        match res {
            Err(_) => Err(EngineError::Unavailable(format!(
                "direct get: no answer from NATS within {:?}",
                self.opts.request_timeout
            ))),
            Ok(Err(e)) if e.kind() == stream::DirectGetErrorKind::NotFound => Ok(None),
            Ok(Err(e)) => Err(self.engine_err("direct get", e)),
            Ok(Ok(m)) => Record::decode(seq, &m.payload)
                .map(Some)
                .map_err(EngineError::Storage),
        }
    }

    fn cached(&self, seq: u64) -> Option<Arc<Record>> {
        let st = self.state.lock();
        let front = st.cache.front()?.stream_seq;
        if seq < front {
            return None;
        }
        let r = st.cache.get((seq - front) as usize)?;
        (r.stream_seq == seq).then(|| r.clone())
    }

    /// The first record in stream seqs `[lo, hi]` satisfying `pred`, which
    /// must be false then true along the stream. Missing records (pruned
    /// meanwhile) count as false.
    async fn search(
        &self,
        mut lo: u64,
        mut hi: u64,
        pred: impl Fn(&Record) -> bool,
    ) -> Result<Option<Arc<Record>>, EngineError> {
        let mut found = None;
        while lo <= hi && lo > 0 {
            let mid = lo + (hi - lo) / 2;
            match self.get_record(mid).await? {
                Some(r) if pred(&r) => {
                    found = Some(r);
                    if mid == lo {
                        break;
                    }
                    hi = mid - 1;
                }
                _ => lo = mid + 1,
            }
        }
        Ok(found)
    }

    /// The tail of a stream in the given state.
    async fn tail_from(&self, st: StreamState) -> Result<Tail, EngineError> {
        if st.last == 0 {
            return Ok(Tail::default());
        }
        match self.get_record(st.last).await? {
            Some(r) => Ok(Tail {
                stream_seq: st.last,
                last: r.last(),
            }),
            None => Err(EngineError::Storage(format!(
                "the stream's newest record (stream seq {}) is gone, so the seq tail is \
                 unknown: was the stream purged outside Tidings?",
                st.last
            ))),
        }
    }

    /// Reads the tail from the server and records it.
    async fn fetch_tail(&self) -> Result<Tail, EngineError> {
        let st = self.stream_state().await?;
        let t = self.tail_from(st).await?;
        self.state.lock().raise_tail(t);
        Ok(t)
    }

    async fn wait_seen(&self, stream_seq: u64) -> Result<(), EngineError> {
        let mut rx = self.seen_tx.subscribe();
        let res = tokio::time::timeout(self.opts.request_timeout, async {
            rx.wait_for(|s| *s >= stream_seq).await.map(|_| ())
        })
        .await;
        match res {
            Ok(Ok(())) => Ok(()),
            Ok(Err(_)) => Err(EngineError::Unavailable("the follower stopped".into())),
            Err(_) => {
                self.restart_follower.notify_one();
                Err(EngineError::Unavailable(format!(
                    "the stream follower did not reach stream seq {stream_seq} within {:?}",
                    self.opts.request_timeout
                )))
            }
        }
    }

    fn raise_watch(&self, last: u64) {
        self.watch_tx.send_if_modified(|v| {
            if last > *v {
                *v = last;
                true
            } else {
                false
            }
        });
    }

    /// The follower applies one record (every record, in stream order).
    fn apply(&self, rec: Arc<Record>) {
        let seq = rec.stream_seq;
        let last = rec.last();
        {
            let mut st = self.state.lock();
            st.remember_keys(&rec.events, rec.at, self.window_micros(), now_micros());
            st.raise_tail(Tail {
                stream_seq: seq,
                last,
            });
            st.applied_last = st.applied_last.max(last);
            if st.cache.back().is_some_and(|b| b.stream_seq + 1 != seq) {
                // A hole (records pruned before we read them): restart the
                // cache so it stays contiguous.
                st.cache.clear();
                st.cache_events = 0;
            }
            st.cache_events += rec.events.len();
            st.cache.push_back(rec);
            while st.cache_events > self.opts.cache_events && st.cache.len() > 1 {
                if let Some(old) = st.cache.pop_front() {
                    st.cache_events -= old.events.len();
                }
            }
        }
        self.raise_watch(last);
        self.seen_tx.send_replace(seq);
    }

    /// Publishes one record guarded by the expected last stream seq.
    async fn publish(
        &self,
        first: u64,
        events: &[SharedEvent],
        expected_stream_seq: u64,
    ) -> Result<jetstream::publish::PublishAck, PublishFail> {
        let payload = encode(first, now_micros(), events)
            .map_err(|e| PublishFail::Other(EngineError::Storage(e)))?;
        let mut headers = HeaderMap::new();
        headers.insert(HEADER_FIRST_SEQ, first.to_string().as_str());
        headers.insert(HEADER_COUNT, events.len().to_string().as_str());
        if !events.is_empty() {
            headers.insert("Nats-Msg-Id", format!("tidings-{first}").as_str());
        }
        if expected_stream_seq > 0 {
            headers.insert(
                "Nats-Expected-Last-Sequence",
                expected_stream_seq.to_string().as_str(),
            );
        }
        let timeout = self.opts.request_timeout;
        let classify = |e: jetstream::context::PublishError| {
            use jetstream::context::PublishErrorKind as K;
            match e.kind() {
                K::WrongLastSequence => PublishFail::Lost,
                K::MaxPayloadExceeded => PublishFail::TooLarge(e.to_string()),
                K::TimedOut | K::BrokenPipe => PublishFail::Other(EngineError::Unavailable(
                    format!("publish to NATS failed: {e}"),
                )),
                _ => PublishFail::Other(self.engine_err("publish", e)),
            }
        };
        let ack_future = match tokio::time::timeout(
            timeout,
            self.js
                .publish_with_headers(self.subject.clone(), headers, payload),
        )
        .await
        {
            Err(_) => return Err(PublishFail::timed_out(timeout)),
            Ok(Err(e)) => return Err(classify(e)),
            Ok(Ok(f)) => f,
        };
        match tokio::time::timeout(timeout, ack_future).await {
            Err(_) => Err(PublishFail::timed_out(timeout)),
            Ok(Err(e)) => Err(classify(e)),
            Ok(Ok(ack)) if ack.duplicate => Err(PublishFail::Lost),
            Ok(Ok(ack)) => Ok(ack),
        }
    }

    /// Plans one record for the requests against `tail`: per request its
    /// result, and the new events (consecutive seqs from `tail.last + 1`).
    fn plan(
        &self,
        reqs: &[Request],
        tail: Tail,
    ) -> (Vec<Result<Vec<Committed>, AppendError>>, Vec<SharedEvent>) {
        let mut st = self.state.lock();
        let now = now_micros();
        st.expire_keys(self.window_micros(), now);
        let mut running = tail.last;
        let mut local: HashMap<&str, SharedEvent> = HashMap::new();
        let mut new_events = Vec::new();
        let mut results = Vec::with_capacity(reqs.len());
        for req in reqs {
            if let Some(expected) = req.expected {
                if expected != running {
                    results.push(Err(AppendError::Conflict {
                        expected,
                        actual: running,
                    }));
                    continue;
                }
            }
            let mut out = Vec::with_capacity(req.batch.len());
            for ev in &req.batch {
                if let Some(k) = ev.key.as_deref() {
                    if let Some((orig, _)) = st.keys.get(k) {
                        out.push(Committed {
                            event: orig.clone(),
                            duplicate: true,
                        });
                        continue;
                    }
                    if let Some(orig) = local.get(k) {
                        out.push(Committed {
                            event: orig.clone(),
                            duplicate: true,
                        });
                        continue;
                    }
                }
                running += 1;
                let committed: SharedEvent = Arc::new(ev.clone().commit(running));
                if let Some(k) = ev.key.as_deref() {
                    local.insert(k, committed.clone());
                }
                new_events.push(committed.clone());
                out.push(Committed {
                    event: committed,
                    duplicate: false,
                });
            }
            results.push(Ok(out));
        }
        (results, new_events)
    }

    /// Writes the requests as one record (retrying after losing a race),
    /// and answers every one of them.
    async fn write(&self, mut reqs: Vec<Request>) {
        let mut tail = self.state.lock().tail;
        let mut fresh = false;
        loop {
            let now = Instant::now();
            let (late, keep): (Vec<_>, Vec<_>) = reqs.into_iter().partition(|r| r.deadline <= now);
            reqs = keep;
            for r in late {
                let _ = r.reply.send(Err(AppendError::Unavailable(format!(
                    "the append did not complete within {:?}",
                    self.opts.append_timeout
                ))));
            }
            if reqs.is_empty() {
                return;
            }
            if self.client.connection_state() != async_nats::connection::State::Connected {
                return fail_all(
                    reqs,
                    EngineError::Unavailable("not connected to the NATS server".into()),
                );
            }
            let has_keys = reqs.iter().any(|r| r.batch.iter().any(|e| e.key.is_some()));
            if has_keys {
                // Keys are checked against every record up to the one the
                // publish will be guarded by.
                if let Err(e) = self.wait_seen(tail.stream_seq).await {
                    return fail_all(reqs, e);
                }
            }
            let (results, new_events) = self.plan(&reqs, tail);
            let conflicted = results
                .iter()
                .any(|r| matches!(r, Err(AppendError::Conflict { .. })));
            if conflicted && !fresh {
                // Only refuse against a tail read from the server just now.
                match self.fetch_tail().await {
                    Ok(t) => {
                        tail = t;
                        fresh = true;
                        continue;
                    }
                    Err(e) => return fail_all(reqs, e),
                }
            }
            if new_events.is_empty() {
                return answer(reqs, results);
            }
            match self
                .publish(tail.last + 1, &new_events, tail.stream_seq)
                .await
            {
                Ok(ack) => {
                    let new_tail = Tail {
                        stream_seq: ack.sequence,
                        last: tail.last + new_events.len() as u64,
                    };
                    {
                        let mut st = self.state.lock();
                        st.raise_tail(new_tail);
                        st.remember_keys(
                            &new_events,
                            now_micros(),
                            self.window_micros(),
                            now_micros(),
                        );
                    }
                    self.raise_watch(new_tail.last);
                    return answer(reqs, results);
                }
                Err(PublishFail::Lost) => {
                    // Another writer appended first: re-read and re-plan.
                    debug!(stream = %self.stream_name, "lost an append race; retrying");
                    match self.fetch_tail().await {
                        Ok(t) => {
                            tail = t;
                            fresh = true;
                        }
                        Err(e) => return fail_all(reqs, e),
                    }
                }
                Err(PublishFail::TooLarge(msg)) => {
                    if reqs.len() > 1 {
                        // Group commit made it too big: one record each.
                        for r in reqs {
                            Box::pin(self.write(vec![r])).await;
                        }
                        return;
                    }
                    return fail_all(
                        reqs,
                        EngineError::Storage(format!("the batch is too large for NATS: {msg}")),
                    );
                }
                Err(PublishFail::Other(e)) => {
                    warn!(stream = %self.stream_name, error = %e, "append failed");
                    return fail_all(reqs, e);
                }
            }
        }
    }

    async fn read(&self, after: u64, limit: usize) -> Result<Page, EngineError> {
        let ss = self.stream_state().await?;
        self.wait_seen(ss.last).await?;
        let want = after.saturating_add(1);
        {
            let st = self.state.lock();
            if limit == 0 || ss.is_empty() {
                return Ok(Page {
                    events: Vec::new(),
                    last_seq: st.applied_last.max(st.tail.last.min(st.applied_last)),
                });
            }
            if let Some(front) = st.cache.front() {
                if front.stream_seq <= ss.first || front.first <= want {
                    let events = from_cache(&st.cache, ss.first, after, limit);
                    return Ok(Page {
                        events,
                        last_seq: st.applied_last,
                    });
                }
            }
        }
        // Older than the cache: find the record holding `after + 1` and
        // read forward with direct gets until the cache takes over.
        let mut events = Vec::new();
        let start = self.search(ss.first, ss.last, |r| r.last() >= want).await?;
        if let Some(start) = start {
            let mut s = start.stream_seq;
            while s <= ss.last && events.len() < limit {
                let cache_front = self.state.lock().cache.front().map(|r| r.stream_seq);
                if cache_front.is_some_and(|f| f <= s) {
                    let st = self.state.lock();
                    let after_now = events.last().map_or(after, |e: &SharedEvent| e.seq);
                    events.extend(from_cache(&st.cache, s, after_now, limit - events.len()));
                    break;
                }
                if let Some(r) = self.get_record(s).await? {
                    for e in &r.events {
                        if e.seq > after && events.len() < limit {
                            events.push(e.clone());
                        }
                    }
                }
                s += 1;
            }
        }
        let last_seq = self.state.lock().applied_last;
        Ok(Page { events, last_seq })
    }

    async fn bounds(&self) -> Result<Bounds, EngineError> {
        for _ in 0..5 {
            let ss = self.stream_state().await?;
            let tail = self.tail_from(ss).await?;
            if ss.is_empty() {
                return Ok(Bounds {
                    first: tail.last + 1,
                    last: tail.last,
                });
            }
            if let Some(r) = self.get_record(ss.first).await? {
                return Ok(Bounds {
                    first: r.first,
                    last: tail.last,
                });
            }
            // The first record was pruned meanwhile: look again.
        }
        Err(EngineError::Unavailable(
            "the stream kept changing under bounds()".into(),
        ))
    }

    async fn seq_before(&self, time: DateTime<Utc>) -> Result<u64, EngineError> {
        let ss = self.stream_state().await?;
        let tail = self.tail_from(ss).await?;
        if ss.is_empty() {
            return Ok(tail.last);
        }
        let t = time.timestamp_micros();
        let found = self
            .search(ss.first, ss.last, |r| r.max_time_micros() >= t)
            .await?;
        Ok(match found {
            None => tail.last,
            Some(r) => match r.events.iter().find(|e| e.time >= time) {
                Some(e) => e.seq - 1,
                None => r.first - 1,
            },
        })
    }

    async fn prune(&self) -> Result<u64, EngineError> {
        for _ in 0..10 {
            let ss = self.stream_state().await?;
            if ss.is_empty() {
                return Ok(0);
            }
            let Some(first_rec) = self.get_record(ss.first).await? else {
                continue;
            };
            let tail = self.tail_from(ss).await?;
            let old_first = first_rec.first;
            // Purge every record below stream seq `cut`.
            let mut cut = ss.first;
            let mut everything = false;
            let r = &self.opts.retention;
            if let Some(max) = r.max_count {
                let keep_from = tail.last.saturating_sub(max) + 1;
                if keep_from > old_first {
                    match self
                        .search(ss.first, ss.last, |r| r.last() >= keep_from)
                        .await?
                    {
                        Some(rec) => cut = cut.max(rec.stream_seq),
                        None => everything = true,
                    }
                }
            }
            if let Some(age) = r.max_age {
                let cutoff = now_micros() - micros(age);
                match self.search(ss.first, ss.last, |r| r.at >= cutoff).await? {
                    Some(rec) => cut = cut.max(rec.stream_seq),
                    None => everything = true,
                }
            }
            let mut new_first = None;
            if everything {
                // Every event goes: first append a tail marker so the seq
                // tail survives, then purge below it.
                match self.publish(tail.last + 1, &[], ss.last).await {
                    Ok(ack) => {
                        cut = ack.sequence;
                        new_first = Some(tail.last + 1);
                    }
                    Err(PublishFail::Lost) => continue,
                    Err(PublishFail::TooLarge(m)) => return Err(EngineError::Storage(m)),
                    Err(PublishFail::Other(e)) => return Err(e),
                }
            }
            if cut <= ss.first {
                return Ok(0);
            }
            let new_first = match new_first {
                Some(f) => f,
                None => match self.get_record(cut).await? {
                    Some(r) => r.first,
                    None => continue,
                },
            };
            self.bounded("purge", async { self.stream.purge().sequence(cut).await })
                .await?;
            {
                let mut st = self.state.lock();
                while st.cache.front().is_some_and(|r| r.stream_seq < cut) {
                    if let Some(old) = st.cache.pop_front() {
                        st.cache_events -= old.events.len();
                    }
                }
            }
            let removed = new_first.saturating_sub(old_first);
            debug!(stream = %self.stream_name, removed, cut, "pruned");
            return Ok(removed);
        }
        Err(EngineError::Unavailable(
            "the stream kept changing under prune()".into(),
        ))
    }
}

enum PublishFail {
    /// Another record got there first (wrong last sequence, or the
    /// first-seq message id was taken).
    Lost,
    /// Over the server's max payload.
    TooLarge(String),
    Other(EngineError),
}

impl PublishFail {
    fn timed_out(d: Duration) -> PublishFail {
        PublishFail::Other(EngineError::Unavailable(format!(
            "no publish acknowledgement from NATS within {d:?}"
        )))
    }
}

fn fail_all(reqs: Vec<Request>, e: EngineError) {
    for r in reqs {
        let _ = r.reply.send(Err(e.clone().into()));
    }
}

fn answer(reqs: Vec<Request>, results: Vec<Result<Vec<Committed>, AppendError>>) {
    for (r, res) in reqs.into_iter().zip(results) {
        let _ = r.reply.send(res);
    }
}

/// Events with seq > `after` from cached records at or after stream seq
/// `from_stream_seq`, at most `limit`.
fn from_cache(
    cache: &VecDeque<Arc<Record>>,
    from_stream_seq: u64,
    after: u64,
    limit: usize,
) -> Vec<SharedEvent> {
    let start = cache.partition_point(|r| r.last() <= after || r.stream_seq < from_stream_seq);
    cache
        .range(start..)
        .flat_map(|r| r.events.iter())
        .filter(|e| e.seq > after)
        .take(limit)
        .cloned()
        .collect()
}

async fn writer_loop(inner: Arc<Inner>, mut rx: mpsc::UnboundedReceiver<Request>) {
    while let Some(first) = rx.recv().await {
        let mut n = first.batch.len();
        let mut reqs = vec![first];
        while n < inner.opts.max_record_events {
            match rx.try_recv() {
                Ok(r) => {
                    n += r.batch.len();
                    reqs.push(r);
                }
                Err(_) => break,
            }
        }
        inner.write(reqs).await;
    }
}

async fn follower_loop(inner: Arc<Inner>, mut next: u64) {
    let mut backoff = Duration::from_millis(100);
    loop {
        let config = consumer::pull::OrderedConfig {
            deliver_policy: consumer::DeliverPolicy::ByStartSequence {
                start_sequence: next.max(1),
            },
            ..Default::default()
        };
        let messages = match inner.stream.create_consumer(config).await {
            Ok(c) => c.messages().await.map_err(|e| e.to_string()),
            Err(e) => Err(e.to_string()),
        };
        let mut messages = match messages {
            Ok(m) => m,
            Err(e) => {
                debug!(stream = %inner.stream_name, error = %e, "follower: cannot start a consumer; retrying");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(2));
                continue;
            }
        };
        backoff = Duration::from_millis(100);
        // The ordered consumer only notices a lost consumer after missing
        // two heartbeats; restart it at once after a reconnect instead.
        let mut was_connected = true;
        let mut check = tokio::time::interval(Duration::from_millis(200));
        loop {
            let item = tokio::select! {
                item = messages.next() => item,
                _ = inner.restart_follower.notified() => {
                    debug!(stream = %inner.stream_name, next, "follower: restart requested");
                    break;
                }
                _ = check.tick() => {
                    let connected = inner.client.connection_state()
                        == async_nats::connection::State::Connected;
                    let reconnected = connected && !was_connected;
                    was_connected = connected;
                    if reconnected {
                        info!(stream = %inner.stream_name, next, "follower: reconnected; resuming");
                        break;
                    }
                    continue;
                }
            };
            let Some(item) = item else { break };
            let msg = match item {
                Ok(m) => m,
                Err(e) => {
                    debug!(stream = %inner.stream_name, error = %e, "follower: consumer error");
                    continue;
                }
            };
            let seq = match msg.info() {
                Ok(i) => i.stream_sequence,
                Err(e) => {
                    warn!(stream = %inner.stream_name, error = %e, "follower: message without metadata");
                    continue;
                }
            };
            if seq < next {
                continue;
            }
            match Record::decode(seq, &msg.payload) {
                Ok(rec) => inner.apply(rec),
                Err(e) => {
                    warn!(stream = %inner.stream_name, error = %e, "follower: skipping a message that is not a Tidings record");
                    inner.seen_tx.send_replace(seq);
                }
            }
            next = seq + 1;
        }
        debug!(stream = %inner.stream_name, next, "follower: consumer ended; restarting");
    }
}

async fn pruner_loop(inner: Arc<Inner>, every: Duration) {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        match inner.prune().await {
            Ok(0) => {}
            Ok(n) => debug!(stream = %inner.stream_name, removed = n, "age retention"),
            Err(e) => debug!(stream = %inner.stream_name, error = %e, "age retention failed"),
        }
    }
}

impl EventLog for NatsLog {
    fn append(&self, batch: Vec<NewEvent>, expected_last: Option<u64>) -> AppendFuture {
        if batch.is_empty() {
            return AppendFuture::ready(Err(AppendError::EmptyBatch));
        }
        let (reply, rx) = oneshot::channel();
        let req = Request {
            batch,
            expected: expected_last,
            deadline: Instant::now() + self.inner.opts.append_timeout,
            reply,
        };
        if self.guard.writer.send(req).is_err() {
            return AppendFuture::ready(Err(AppendError::Closed));
        }
        AppendFuture::Pending(Box::pin(async move {
            rx.await.unwrap_or(Err(AppendError::Closed))
        }))
    }

    fn read(&self, after: u64, limit: usize) -> BoxFuture<Result<Page, ReadError>> {
        let inner = self.inner.clone();
        Box::pin(async move { Ok(inner.read(after, limit).await?) })
    }

    fn bounds(&self) -> BoxFuture<Result<Bounds, ReadError>> {
        let inner = self.inner.clone();
        Box::pin(async move { Ok(inner.bounds().await?) })
    }

    fn seq_before(&self, time: DateTime<Utc>) -> BoxFuture<Result<u64, ReadError>> {
        let inner = self.inner.clone();
        Box::pin(async move { Ok(inner.seq_before(time).await?) })
    }

    fn watch(&self) -> watch::Receiver<u64> {
        self.inner.watch_tx.subscribe()
    }

    fn cursor(&self, consumer: &str) -> BoxFuture<Result<Option<u64>, CursorError>> {
        let inner = self.inner.clone();
        let consumer = consumer.to_owned();
        Box::pin(async move { inner.cursor(&consumer).await })
    }

    fn commit_cursor(&self, consumer: &str, seq: u64) -> BoxFuture<Result<(), CursorError>> {
        let inner = self.inner.clone();
        let consumer = consumer.to_owned();
        Box::pin(async move { inner.commit_cursor(&consumer, seq).await })
    }

    fn define_consumer(&self, name: &str, spec: &str) -> BoxFuture<Result<String, CursorError>> {
        let inner = self.inner.clone();
        let (name, spec) = (name.to_owned(), spec.to_owned());
        Box::pin(async move { inner.define_consumer(&name, &spec).await })
    }

    fn consumers(&self) -> BoxFuture<Result<Vec<ConsumerRecord>, CursorError>> {
        let inner = self.inner.clone();
        Box::pin(async move { inner.consumers().await })
    }

    fn delete_consumer(&self, name: &str) -> BoxFuture<Result<bool, CursorError>> {
        let inner = self.inner.clone();
        let name = name.to_owned();
        Box::pin(async move { inner.delete_consumer(&name).await })
    }

    fn prune(&self) -> BoxFuture<Result<u64, PruneError>> {
        let inner = self.inner.clone();
        Box::pin(async move { Ok(inner.prune().await?) })
    }
    /// Several servers append to the same stream: a bus over this log
    /// follows it to deliver their events too.
    fn shared(&self) -> bool {
        true
    }
}
