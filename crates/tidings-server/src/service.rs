//! The service layer: every command the server offers, implemented once.
//! HTTP, WebSocket and SSE handlers only parse requests, call these, and
//! write the answers.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::ws::Utf8Bytes;
use parking_lot::Mutex;
use serde::Deserialize;
use tidings_core::{
    Bus, Committed, EventLog, EventStream, MemoryLog, NewEvent, Pattern, Position, Priority,
    Retention, SharedEvent,
};
use tidings_sqlite::{Durability, SqliteLog, SqliteOptions};

use crate::auth::{Auth, Principal};
use crate::config::{Config, ConfigError, StoreUrl};
use crate::error::ApiError;
use crate::metrics::{Metrics, Transport};

/// An event as a client publishes it.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Incoming {
    /// The event name.
    pub name: String,
    /// The payload (default `null`).
    #[serde(default)]
    pub data: serde_json::Value,
    /// The emitting component (default `"http"`).
    #[serde(default)]
    pub source: Option<String>,
    /// Idempotency key.
    #[serde(default)]
    pub key: Option<String>,
    /// Priority metadata.
    #[serde(default)]
    pub priority: Option<Priority>,
    /// When it happened (default: now).
    #[serde(default)]
    pub time: Option<chrono::DateTime<chrono::Utc>>,
}

/// Most events one history request looks at (matching or not).
pub const HISTORY_SCAN_BUDGET: u64 = 100_000;

/// A page of history.
#[derive(Debug, serde::Serialize)]
pub struct HistoryPage {
    /// Matching events, oldest first.
    pub events: Vec<SharedEvent>,
    /// Pass as `after` to continue: the last seq this page looked at. A page
    /// may hold fewer than `limit` events while `next_after < last_seq`
    /// (the scan budget ran out): keep paging.
    pub next_after: u64,
    /// The log's last seq when the page was read.
    pub last_seq: u64,
}

/// Why the store could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// Bad settings.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The SQLite file could not be opened.
    #[error("cannot open the SQLite store: {0}")]
    Sqlite(#[from] tidings_sqlite::OpenError),
    /// The NATS JetStream store could not be opened.
    #[error("cannot open the NATS store: {0}")]
    Nats(#[from] tidings_nats::ConnectError),
    /// The Redis store could not be opened.
    #[error("cannot open the Redis store: {0}")]
    Redis(#[from] tidings_redis::ConnectError),
    /// The data directory could not be created.
    #[error("cannot create the data directory {path}: {source}")]
    DataDir {
        /// The directory.
        path: std::path::PathBuf,
        /// Why.
        source: std::io::Error,
    },
}

/// An opened log and how to close it.
pub struct Store {
    /// The log.
    pub log: Arc<dyn EventLog>,
    /// Other servers append to it too (NATS, Redis): the bus follows it.
    pub shared: bool,
    sqlite: Option<SqliteLog>,
}

impl Store {
    /// Opens the store the settings name.
    pub async fn open(config: &Config) -> Result<Store, StoreError> {
        let retention = Retention {
            max_count: config.retention_max_count,
            max_age: config.retention_max_age_secs.map(Duration::from_secs),
        };
        match config.store_url()? {
            StoreUrl::Memory => {
                let log = MemoryLog::with_options(
                    Retention {
                        max_count: retention
                            .max_count
                            .or(Some(tidings_core::log::DEFAULT_MAX_COUNT)),
                        ..retention
                    },
                    tidings_core::log::DEFAULT_IDEMPOTENCY_WINDOW,
                );
                Ok(Store {
                    log: Arc::new(log),
                    shared: false,
                    sqlite: None,
                })
            }
            StoreUrl::Nats(url) => {
                let options = tidings_nats::NatsOptions {
                    retention,
                    ..Default::default()
                };
                let log = tidings_nats::NatsLog::connect(&url, options).await?;
                Ok(Store {
                    log: Arc::new(log),
                    shared: true,
                    sqlite: None,
                })
            }
            StoreUrl::Redis(url) => {
                let options = tidings_redis::RedisOptions {
                    retention,
                    ..Default::default()
                };
                let log = tidings_redis::RedisLog::connect(&url, options).await?;
                Ok(Store {
                    log: Arc::new(log),
                    shared: true,
                    sqlite: None,
                })
            }
            StoreUrl::Sqlite(path) => {
                if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
                    std::fs::create_dir_all(dir).map_err(|source| StoreError::DataDir {
                        path: dir.to_owned(),
                        source,
                    })?;
                }
                let durability = match config.durability.as_str() {
                    "batch" => Durability::Batch {
                        interval: Duration::from_millis(config.batch_interval_ms.max(1)),
                    },
                    "none" => Durability::None,
                    _ => Durability::Sync,
                };
                let log = SqliteLog::open(
                    &path,
                    SqliteOptions::default()
                        .durability(durability)
                        .retention(retention),
                )?;
                Ok(Store {
                    log: Arc::new(log.clone()),
                    shared: false,
                    sqlite: Some(log),
                })
            }
        }
    }

    /// Flushes and closes the log.
    pub fn close(&self) {
        if let Some(s) = &self.sqlite {
            if let Err(e) = s.close() {
                tracing::error!(%e, "closing the SQLite store failed");
            }
        }
    }
}

/// Decrements a channel's subscriber count when dropped.
pub struct ChannelGuard {
    service: Arc<Service>,
    channel: String,
    /// Subscribers of the channel right after joining.
    pub subscribers: usize,
}

impl Drop for ChannelGuard {
    fn drop(&mut self) {
        let mut ch = self.service.channels.lock();
        if let Some(n) = ch.get_mut(&self.channel) {
            *n -= 1;
            if *n == 0 {
                ch.remove(&self.channel);
            }
        }
    }
}

/// Counts a connection while it lives.
pub struct ConnectionGuard {
    service: Arc<Service>,
    transport: Transport,
}

impl Drop for ConnectionGuard {
    fn drop(&mut self) {
        self.service.metrics.connection(self.transport, -1);
    }
}

/// Slots of the encoded-envelope cache.
const ENCODE_SLOTS: usize = 4096;

/// One slot: the seq and its envelope's JSON.
type EncodedSlot = Mutex<Option<(u64, Utf8Bytes)>>;

/// The server's commands.
pub struct Service {
    bus: Bus,
    auth: Auth,
    /// The settings the service was built with.
    pub config: Config,
    /// Counters for `/metrics`.
    pub metrics: Metrics,
    /// Channel -> current subscribers. Invariant: no zero entries.
    channels: Mutex<BTreeMap<String, usize>>,
    /// Recently encoded envelopes, slot `seq % ENCODE_SLOTS`: an event fanned
    /// out to many connections is turned into JSON once. Invariant: a slot
    /// holds the JSON of the event with exactly the seq stored beside it.
    encoded: Box<[EncodedSlot]>,
}

impl Service {
    /// A service over `log`; `shared` if other servers append to it too
    /// (then the bus follows the log to deliver their events). Call inside
    /// a tokio runtime.
    pub fn new(config: Config, log: Arc<dyn EventLog>, shared: bool) -> Arc<Service> {
        let bus = Bus::builder()
            .shared_log(log)
            .follow_log(shared)
            .stream_capacity(config.stream_queue)
            .build()
            .expect("stream_queue is validated non-zero and a runtime is running");
        Arc::new(Service {
            bus,
            auth: Auth::new(&config.auth),
            config,
            metrics: Metrics::default(),
            channels: Mutex::new(BTreeMap::new()),
            encoded: (0..ENCODE_SLOTS).map(|_| Mutex::new(None)).collect(),
        })
    }

    /// The envelope as JSON, encoded once however many connections send it.
    pub fn encode(&self, event: &SharedEvent) -> Utf8Bytes {
        let slot = &self.encoded[(event.seq % ENCODE_SLOTS as u64) as usize];
        if let Some((seq, json)) = &*slot.lock() {
            if *seq == event.seq {
                return json.clone();
            }
        }
        let json = Utf8Bytes::from(serde_json::to_string(&**event).unwrap_or_default());
        *slot.lock() = Some((event.seq, json.clone()));
        json
    }

    /// The bus (in-process subscribers of a server embedding this crate).
    pub fn bus(&self) -> &Bus {
        &self.bus
    }

    /// Who presents `token`.
    pub fn authenticate(&self, token: Option<&str>) -> Result<Principal, ApiError> {
        self.auth.authenticate(token)
    }

    /// Publishes one or more events atomically.
    pub async fn publish(
        &self,
        who: &Principal,
        events: Vec<Incoming>,
        expected_last: Option<u64>,
    ) -> Result<Vec<Committed>, ApiError> {
        if events.is_empty() {
            return Err(ApiError::bad_request(
                "empty_batch",
                "the batch is empty: send at least one event",
            ));
        }
        let mut batch = Vec::with_capacity(events.len());
        for (i, e) in events.into_iter().enumerate() {
            let mut ev = NewEvent::new(e.name, e.data).map_err(|err| {
                ApiError::bad_request("invalid_name", format!("event {i}: {err}"))
            })?;
            who.check_publish(&ev.name)?;
            ev.source = e
                .source
                .map_or(std::borrow::Cow::Borrowed("http"), std::borrow::Cow::Owned);
            ev.key = e.key;
            ev.priority = e.priority;
            if let Some(t) = e.time {
                ev.time = t;
            }
            batch.push(ev);
        }
        let start = Instant::now();
        let committed = self.bus.emit_batch_async(batch, expected_last).await?;
        self.metrics.append_latency(start.elapsed());
        Ok(committed)
    }

    /// History: events after `after` matching `pattern`, oldest first.
    pub async fn history(
        &self,
        who: &Principal,
        pattern: Option<&str>,
        after: u64,
        limit: Option<usize>,
    ) -> Result<HistoryPage, ApiError> {
        let pattern = match pattern {
            Some(p) => Pattern::parse(p)?,
            None => Pattern::all(),
        };
        who.check_subscribe(&pattern)?;
        let limit = limit.unwrap_or(100);
        if limit == 0 || limit > self.config.history_max_limit {
            return Err(ApiError::bad_request(
                "invalid_limit",
                format!(
                    "limit must be between 1 and {}",
                    self.config.history_max_limit
                ),
            ));
        }
        let log = self.bus.log();
        let mut events = Vec::new();
        let mut cursor = after;
        let mut last_seq;
        loop {
            let page = log.read(cursor, 1024).await?;
            last_seq = page.last_seq;
            // A rare pattern must not make one request scan the whole log:
            // past the scan budget the page ends early and `next_after`
            // says where to go on.
            if page.events.is_empty() || cursor - after >= HISTORY_SCAN_BUDGET {
                break;
            }
            for e in page.events {
                cursor = e.seq;
                if pattern.matches(&e.name) {
                    events.push(e);
                    if events.len() == limit {
                        return Ok(HistoryPage {
                            events,
                            next_after: cursor,
                            last_seq,
                        });
                    }
                }
            }
        }
        Ok(HistoryPage {
            events,
            next_after: cursor,
            last_seq,
        })
    }

    /// Opens a subscription on `patterns` from `after` (or from now).
    pub async fn subscribe(
        &self,
        who: &Principal,
        patterns: &[Pattern],
        after: Option<u64>,
    ) -> Result<EventStream, ApiError> {
        for p in patterns {
            who.check_subscribe(p)?;
        }
        let from = after.map_or(Position::End, Position::After);
        self.bus
            .subscribe_many(patterns.iter().cloned(), from)
            .await
            .map_err(|e| match e {
                tidings_core::SubscribeError::Pattern(p) => p.into(),
                tidings_core::SubscribeError::Read(r) => r.into(),
                other => ApiError::new(
                    http::StatusCode::INTERNAL_SERVER_ERROR,
                    "internal",
                    other.to_string(),
                ),
            })
    }

    /// Counts a new connection, refusing it past `max_connections`.
    pub fn connect(self: &Arc<Self>, transport: Transport) -> Result<ConnectionGuard, ApiError> {
        let open = self.metrics.connections(Transport::WebSocket)
            + self.metrics.connections(Transport::Sse);
        if open >= self.config.max_connections as i64 {
            return Err(ApiError::limit(format!(
                "the server has {open} connections, its limit (max_connections = {})",
                self.config.max_connections
            )));
        }
        self.metrics.connection(transport, 1);
        Ok(ConnectionGuard {
            service: self.clone(),
            transport,
        })
    }

    /// Joins a channel, refusing past `max_subscribers_per_channel`.
    pub fn join_channel(self: &Arc<Self>, channel: &str) -> Result<ChannelGuard, ApiError> {
        let mut ch = self.channels.lock();
        let n = ch.entry(channel.to_owned()).or_insert(0);
        if *n >= self.config.max_subscribers_per_channel {
            if *n == 0 {
                ch.remove(channel);
            }
            return Err(ApiError::limit(format!(
                "channel {channel:?} is full ({} subscribers, the limit)",
                self.config.max_subscribers_per_channel
            )));
        }
        *n += 1;
        let subscribers = *n;
        Ok(ChannelGuard {
            service: self.clone(),
            channel: channel.to_owned(),
            subscribers,
        })
    }

    /// Channels with subscribers, and how many.
    pub fn channels(&self) -> BTreeMap<String, usize> {
        self.channels.lock().clone()
    }

    /// The log's last seq.
    pub fn last_seq(&self) -> u64 {
        self.bus.sequence()
    }

    /// The `/metrics` text.
    pub fn render_metrics(&self) -> String {
        self.metrics.render(&self.bus.stats(), self.last_seq())
    }
}
