//! Opening a [`NatsLog`]: connecting, creating or updating the streams,
//! catching up, and starting the background tasks; and `destroy`.
//!
//! # Contract
//!
//! * The event stream's configuration is (re)applied on every open: the
//!   update is tried first (several servers share the stream), the create
//!   when it does not exist yet, and a create lost to another process falls
//!   back to reading the stream it created.
//! * The cursor stream `<name>_cursors` is created when missing, never
//!   updated.
//! * Before the handle is returned, the tail (and so `watch`) is the
//!   stream's newest record, and the follower is set to start at the first
//!   record of the idempotency window, so the keys appended by other
//!   processes within the window are known before they can be reused.
//! * The writer and the follower (and, with retention, the pruner) run
//!   until the last handle is dropped.

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::{self, stream};
use parking_lot::Mutex;
use tidings_core::log::GroupCommit;
use tidings_core::log::KeyWindow;
use tokio::sync::watch;
use tracing::info;

use super::follower::follower_loop;
use super::prune::pruner_loop;
use super::state::{State, Tail};
use super::{micros, now_micros, Guard, Inner, NatsLog};
use crate::error::ConnectError;
use crate::options::{validate_stream_name, NatsOptions, NatsUrl, Storage};

/// The JetStream duplicate window of the stream. It only backs the
/// `Nats-Msg-Id: tidings-<first seq>` guard (two records can never claim the
/// same first seq), not Tidings' idempotency keys.
const DUPLICATE_WINDOW: Duration = Duration::from_secs(120);

/// A setup failure on `stream`: `what` failed with `e`.
fn setup_err(stream: &str, what: &str, e: &dyn std::fmt::Display) -> ConnectError {
    ConnectError::Setup {
        stream: stream.to_owned(),
        message: format!("{what}: {e}"),
    }
}

fn storage_type(storage: Storage) -> stream::StorageType {
    match storage {
        Storage::File => stream::StorageType::File,
        Storage::Memory => stream::StorageType::Memory,
    }
}

/// The event stream's configuration: one subject, count retention, direct
/// gets for reads.
fn event_stream_config(stream_name: &str, subject: &str, options: &NatsOptions) -> stream::Config {
    stream::Config {
        name: stream_name.to_owned(),
        subjects: vec![subject.to_owned()],
        max_messages: options
            .log
            .retention
            .max_count
            .map(|n| i64::try_from(n).unwrap_or(i64::MAX))
            .unwrap_or(-1),
        duplicate_window: DUPLICATE_WINDOW,
        allow_direct: true,
        storage: storage_type(options.storage),
        ..Default::default()
    }
}

/// Updates the event stream to `config`, or creates it.
async fn ensure_event_stream(
    js: &jetstream::Context,
    config: stream::Config,
) -> Result<stream::Stream, ConnectError> {
    let name = config.name.clone();
    // Update first (the common case when several servers share the
    // stream); create when it does not exist yet.
    match js.update_stream(config.clone()).await {
        Ok(_) => js
            .get_stream(&name)
            .await
            .map_err(|e| setup_err(&name, "get", &e)),
        Err(_) => match js.create_stream(config).await {
            Ok(s) => Ok(s),
            Err(e) => {
                // Another process may have created it meanwhile.
                js.get_stream(&name)
                    .await
                    .map_err(|_| setup_err(&name, "create", &e))
            }
        },
    }
}

/// Opens the cursor stream `<stream_name>_cursors`, creating it if needed.
/// Returns it and its subject prefix.
async fn ensure_cursor_stream(
    js: &jetstream::Context,
    stream_name: &str,
    storage: Storage,
) -> Result<(stream::Stream, String), ConnectError> {
    // Cursors: a small stream keeping the last message per subject (a
    // KV bucket by hand; the KV API's replies do not parse on 2.9).
    let cursor_stream = format!("{stream_name}_cursors");
    let cursor_prefix = format!("{stream_name}_cursors.");
    let cursor_config = stream::Config {
        name: cursor_stream.clone(),
        subjects: vec![format!("{cursor_prefix}>")],
        max_messages_per_subject: 1,
        allow_direct: true,
        storage: storage_type(storage),
        ..Default::default()
    };
    let cursors = match js.get_stream(&cursor_stream).await {
        Ok(s) => s,
        Err(_) => match js.create_stream(cursor_config).await {
            Ok(s) => s,
            Err(e) => js
                .get_stream(&cursor_stream)
                .await
                .map_err(|_| setup_err(stream_name, "cursor stream", &e))?,
        },
    };
    Ok((cursors, cursor_prefix))
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
        options.validate()?;
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
        options.validate()?;
        let mut js = jetstream::new(client.clone());
        js.set_timeout(options.request_timeout);
        let subject = format!("{stream_name}.events");
        let config = event_stream_config(stream_name, &subject, &options);
        let stream = ensure_event_stream(&js, config).await?;
        let (cursors, cursor_prefix) =
            ensure_cursor_stream(&js, stream_name, options.storage).await?;
        let (watch_tx, _) = watch::channel(0);
        let (seen_tx, _) = watch::channel(0);
        let window = options.log.idempotency_window;
        let max_record_events = options.max_record_events;
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
                keys: KeyWindow::new(window),
                applied_stream_seq: 0,
                own: BTreeMap::new(),
            }),
            watch_tx,
            seen_tx,
            restart_follower: tokio::sync::Notify::new(),
            group: GroupCommit::new(1, max_record_events),
            counters: Default::default(),
        });
        let start = inner.catch_up().await?;
        Ok(NatsLog {
            guard: Arc::new(spawn_tasks(&inner, start)),
            inner,
        })
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
    /// Reads the tail and sets the state and the channels from it; returns
    /// the stream seq the follower starts at.
    async fn catch_up(&self) -> Result<u64, ConnectError> {
        let stream_name = self.stream_name.as_str();
        let st = self
            .stream_state()
            .await
            .map_err(|e| setup_err(stream_name, "stream info", &e))?;
        let tail = self
            .tail_from(st)
            .await
            .map_err(|e| setup_err(stream_name, "tail", &e))?;
        // The follower replays the idempotency window (to know its keys),
        // then follows live.
        let start = if st.is_empty() {
            st.last + 1
        } else {
            let cutoff = now_micros() - micros(self.opts.log.idempotency_window);
            self.search(st.first, st.last, |r| r.at >= cutoff)
                .await
                .map_err(|e| setup_err(stream_name, "window start", &e))?
                .map(|r| r.stream_seq)
                .unwrap_or(st.last + 1)
        };
        {
            let mut s = self.state.lock();
            s.tail = tail;
            s.applied_last = if start > st.last { tail.last } else { 0 };
        }
        self.watch_tx.send_replace(tail.last);
        self.seen_tx.send_replace(start - 1);
        info!(
            stream = stream_name,
            last = tail.last,
            stream_seq = tail.stream_seq,
            "opened NATS log"
        );
        Ok(start)
    }
}

/// Starts the follower (from stream seq `start`) and, when retention asks
/// for it, the pruner.
fn spawn_tasks(inner: &Arc<Inner>, start: u64) -> Guard {
    let mut tasks = vec![tokio::spawn(follower_loop(inner.clone(), start)).abort_handle()];
    if let Some(every) = inner.opts.effective_prune_interval() {
        tasks.push(tokio::spawn(pruner_loop(inner.clone(), every)).abort_handle());
    }
    Guard {
        tasks,
        closed: std::sync::atomic::AtomicBool::new(false),
    }
}
