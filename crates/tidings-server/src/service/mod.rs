//! The service: every command the server offers and every rule it keeps,
//! implemented once. HTTP, WebSocket and SSE only parse a request, call
//! the service and write its answer; none of them decides anything.
//!
//! - [`Service::publish`]: scope, names, keys in the caller's namespace,
//!   the future-time limit, then one atomic append.
//! - [`Service::history`]: scope, count and byte budgets; 410 below the
//!   retained range.
//! - [`Service::export`]: archive then log as one gap-free range of JSON
//!   lines, filtered by pattern and the caller's scope.
//! - [`Service::open`]: a [`Session`] (`/ws`, `/ws/events/{channel}`,
//!   `/sse`), with the pattern and connection limits, the channel rule,
//!   commands and their rate limit, token expiry and shutdown.
//! - [`Service::channels`], [`Service::health`], [`Service::render_metrics`].
//! - [`Service::schemas`]: the data contracts publishes are held to (the
//!   check itself is the bus's, see `schemas.rs`).
//!
//! Errors are [`ServiceError`]s: a kind and a code, no status codes.

mod consumers;
mod decode;
mod error;
mod export;
mod schemas;
mod session;
mod stats;
mod store;
pub mod wire;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use parking_lot::Mutex;
use tidings_core::{
    Bus, Committed, EventLog, EventStream, LogHealth, NewEvent, Pattern, Position, SharedEvent,
};

use crate::auth::{Auth, Principal};
use crate::config::Config;
use crate::metrics::{Metrics, Transport};

pub use decode::{decode_ack, decode_binary_cloudevent, decode_publish, Decoded, Incoming};
pub use error::{ErrorKind, ServiceError};
pub use export::{Export, ExportRequest};
pub use schemas::{SchemaLoadError, Schemas};
pub use session::{
    canonical_channel, error_json, stopped, CloseReason, Command, Open, Outgoing, Session, Target,
};
pub use store::{Store, StoreError};
pub use wire::Format;

/// Most events one history request looks at (matching or not).
pub const HISTORY_SCAN_BUDGET: u64 = 100_000;

/// The code of a refusal because a channel is full. Seed 002's clients
/// learn it from a close frame after the upgrade, not from a status.
pub const CHANNEL_FULL: &str = "channel_full";

/// Events read from the log per step of a history request.
const HISTORY_READ: usize = 1024;

/// A page of history.
#[derive(Debug, serde::Serialize)]
pub struct HistoryPage {
    /// Matching events, oldest first, as clients see them.
    pub events: Vec<serde_json::Value>,
    /// Pass as `after` to continue: the last seq this page looked at. A page
    /// may hold fewer than `limit` events while `next_after < last_seq`
    /// (a scan or byte budget ran out): keep paging.
    pub next_after: u64,
    /// The log's last seq when the page was read.
    pub last_seq: u64,
}

/// How the server is doing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Health {
    /// Publishes are expected to succeed.
    Ok,
    /// The log cannot write: publishes fail until it recovers by itself.
    Degraded {
        /// Why.
        reason: String,
    },
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

/// Holds a connection slot while it lives.
pub struct ConnectionGuard {
    service: Arc<Service>,
    transport: Transport,
}

impl Drop for ConnectionGuard {
    fn drop(&mut self) {
        self.service.open_connections.fetch_sub(1, Ordering::AcqRel);
        self.service.metrics.connection(self.transport, -1);
    }
}

/// Slots of the encoded-envelope cache.
const ENCODE_SLOTS: usize = 4096;

/// One slot: the seq, the format and the event's JSON in it.
type EncodedSlot = Mutex<Option<(u64, Format, Bytes)>>;

/// The server's commands.
pub struct Service {
    bus: Bus,
    auth: Auth,
    /// The settings the service was built with.
    pub config: Config,
    /// Counters for `/metrics`.
    pub metrics: Metrics,
    /// Channel (canonical name) -> current subscribers. Invariant: no zero
    /// entries.
    channels: Mutex<BTreeMap<String, usize>>,
    /// Open WebSocket and SSE connections. Invariant: equals the number of
    /// live [`ConnectionGuard`]s, and never exceeds `max_connections`
    /// (taken by compare-and-swap, so concurrent connects cannot overshoot).
    open_connections: AtomicUsize,
    /// Consumers held by a connection on this server, by name.
    live: Mutex<std::collections::HashMap<String, consumers::Live>>,
    /// Events filters could not evaluate (not delivered), for `/metrics`.
    filter_failures: Arc<std::sync::atomic::AtomicU64>,
    /// Becomes true when the server shuts down; every session ends then.
    shutdown: tokio::sync::watch::Sender<bool>,
    /// The `[[schemas]]`, compiled (the bus holds them as contracts).
    schemas: Schemas,
    /// Recently encoded envelopes, slot `seq % ENCODE_SLOTS`: an event fanned
    /// out to many connections is turned into JSON once per format.
    /// Invariant: a slot holds the JSON of the event with exactly the seq,
    /// in exactly the format, stored beside it.
    encoded: Box<[EncodedSlot]>,
}

impl Service {
    /// A service over `log`; `shared` if other servers append to it too
    /// (then the bus follows the log to deliver their events). Every
    /// publish is held to `schemas` (see [`Schemas::load`]); `log_metrics`
    /// (the store's own counters) joins the metrics registry. Call inside a
    /// tokio runtime.
    pub fn new(
        config: Config,
        log: Arc<dyn EventLog>,
        shared: bool,
        schemas: Schemas,
        log_metrics: Option<Box<dyn prometheus_client::collector::Collector>>,
    ) -> Arc<Service> {
        let bus = schemas
            .apply(Bus::builder())
            .log_arc(log)
            .dispatch_external_appends(shared)
            .stream_capacity(config.stream_queue)
            .build()
            .expect("stream_queue is validated non-zero, schema patterns are parsed, and a runtime is running");
        let mut metrics = Metrics::new(bus.clone());
        if let Some(collector) = log_metrics {
            metrics.register_collector(collector);
        }
        Arc::new(Service {
            metrics,
            bus,
            auth: Auth::new(&config.auth),
            config,
            channels: Mutex::new(BTreeMap::new()),
            open_connections: AtomicUsize::new(0),
            live: Mutex::new(std::collections::HashMap::new()),
            filter_failures: Arc::default(),
            shutdown: tokio::sync::watch::channel(false).0,
            schemas,
            encoded: (0..ENCODE_SLOTS).map(|_| Mutex::new(None)).collect(),
        })
    }

    /// Ends every session (close frames, end of SSE streams).
    pub fn shut_down(&self) {
        self.shutdown.send_replace(true);
    }

    /// The event as clients see it in `format`, encoded once however many
    /// connections send it.
    pub fn encode(&self, event: &SharedEvent, format: Format) -> Bytes {
        let index = (event.seq.wrapping_mul(2) + format as u64) % ENCODE_SLOTS as u64;
        let slot = &self.encoded[index as usize];
        if let Some((seq, f, json)) = &*slot.lock() {
            if *seq == event.seq && *f == format {
                return json.clone();
            }
        }
        let json = Bytes::from(wire::to_json_as(event, format));
        *slot.lock() = Some((event.seq, format, json.clone()));
        json
    }

    /// The bus (in-process subscribers of a server embedding this crate).
    pub fn bus(&self) -> &Bus {
        &self.bus
    }

    /// Who presents `token`.
    pub fn authenticate(&self, token: Option<&str>) -> Result<Principal, ServiceError> {
        self.auth.authenticate(token)
    }

    /// True if requests need a token.
    pub fn auth_enabled(&self) -> bool {
        self.auth.enabled()
    }

    /// Publishes one or more events atomically. Keys live in the caller's
    /// namespace; a repeated key answers the original only to a caller who
    /// may read it, otherwise it is a conflict that shows nothing of it.
    pub async fn publish(
        &self,
        who: &Principal,
        events: Vec<Incoming>,
        expected_last: Option<u64>,
    ) -> Result<Vec<Committed>, ServiceError> {
        if events.is_empty() {
            return Err(ServiceError::bad_request(
                "empty_batch",
                "the batch is empty: send at least one event",
            ));
        }
        // A setting too large for the clock means "no limit", not a panic.
        let horizon = i64::try_from(self.config.max_future_secs)
            .ok()
            .and_then(chrono::Duration::try_seconds)
            .and_then(|d| chrono::Utc::now().checked_add_signed(d))
            .unwrap_or(chrono::DateTime::<chrono::Utc>::MAX_UTC);
        let mut batch = Vec::with_capacity(events.len());
        for (i, e) in events.into_iter().enumerate() {
            let at = |msg: String| format!("event {i}: {msg}");
            let mut ev = NewEvent::new(e.name, e.data)
                .map_err(|err| ServiceError::bad_request("invalid_name", at(err.to_string())))?;
            who.check_publish(&ev.name)?;
            ev.source = e
                .source
                .map_or(std::borrow::Cow::Borrowed("http"), std::borrow::Cow::Owned);
            ev.key = e
                .key
                .map(|k| wire::namespaced_key(&who.namespace, &k))
                .transpose()
                .map_err(|err| ServiceError::bad_request(err.code, at(err.message)))?;
            ev.priority = e.priority;
            if let Some(t) = e.time {
                if t > horizon {
                    return Err(ServiceError::bad_request(
                        "time_in_future",
                        at(format!(
                            "its time {t} is more than {} s ahead of the server's clock (max_future_secs); send the time it happened, or none",
                            self.config.max_future_secs
                        )),
                    ));
                }
                ev.time = t;
            }
            batch.push(ev);
        }
        let start = Instant::now();
        let committed = self.bus.emit_batch_async(batch, expected_last).await?;
        self.metrics.append_latency(start.elapsed());
        if let Some((i, _)) = committed
            .iter()
            .enumerate()
            .find(|(_, c)| c.duplicate && !who.may_read(&c.event.name))
        {
            return Err(ServiceError::new(
                ErrorKind::Conflict,
                "duplicate_key",
                format!(
                    "event {i}: its key was already used for an event this token may not read{}",
                    if committed.len() > 1 {
                        "; the batch's other events were taken"
                    } else {
                        ""
                    }
                ),
            ));
        }
        Ok(committed)
    }

    /// History: events after `after` matching `pattern`, oldest first,
    /// within a count, a scan and a byte budget. `after = 0` is the
    /// beginning of what the log holds; any other `after` below the
    /// retained range is refused with [`ErrorKind::Gone`] and the first
    /// retained seq (the archived part is read with `GET /export`).
    pub async fn history(
        &self,
        who: &Principal,
        pattern: Option<&str>,
        after: u64,
        limit: Option<usize>,
        format: Format,
        filter: Option<&str>,
    ) -> Result<HistoryPage, ServiceError> {
        let filter = filter.map(|f| self.compile_filter(f)).transpose()?;
        let pattern = match pattern {
            Some(p) => Pattern::parse(p)?,
            None => Pattern::all(),
        };
        who.check_subscribe(&pattern)?;
        let limit = limit.unwrap_or(100);
        if limit == 0 || limit > self.config.history_max_limit {
            return Err(ServiceError::bad_request(
                "invalid_limit",
                format!(
                    "limit must be between 1 and {}",
                    self.config.history_max_limit
                ),
            ));
        }
        let log = self.bus.log();
        let mut events = Vec::new();
        let mut bytes = 0usize;
        let budget = self.config.history_max_bytes;
        let mut cursor = after;
        let mut last_seq;
        'pages: loop {
            let page = log
                .read_within(cursor, HISTORY_READ, budget.saturating_sub(bytes).max(1))
                .await?;
            last_seq = page.last_seq;
            if cursor == after && after > 0 {
                // Retention pruned what follows `after`: say so, and where
                // the log starts now, rather than skip it silently.
                let first = page.events.first().map_or(last_seq + 1, |e| e.seq);
                if first > after.saturating_add(1) && last_seq > after {
                    return Err(gone(after, first));
                }
            }
            // A rare pattern must not make one request scan the whole log:
            // past the scan budget the page ends early and `next_after`
            // says where to go on.
            if page.events.is_empty() || cursor - after >= HISTORY_SCAN_BUDGET {
                break;
            }
            for e in page.events {
                if pattern.matches(&e.name)
                    && filter
                        .as_ref()
                        .is_none_or(|f| tidings_core::EventFilter::accepts(&**f, &e))
                {
                    let size = e.approx_bytes();
                    if !events.is_empty() && bytes + size > budget {
                        break 'pages;
                    }
                    bytes += size;
                    events.push(wire::to_value_as(&e, format));
                }
                cursor = e.seq;
                if events.len() == limit || bytes >= budget {
                    break 'pages;
                }
            }
        }
        Ok(HistoryPage {
            events,
            next_after: cursor,
            last_seq,
        })
    }

    /// Opens a live subscription for a connection (see [`Session`]).
    pub async fn open(
        self: &Arc<Self>,
        who: Principal,
        open: Open,
    ) -> Result<Session, ServiceError> {
        Session::open(self, who, open).await
    }

    async fn subscribe(
        &self,
        patterns: &[Pattern],
        after: Option<u64>,
        filter: Option<tidings_core::SharedFilter>,
    ) -> Result<EventStream, ServiceError> {
        let from = after.map_or(Position::End, Position::After);
        Ok(self
            .bus
            .subscribe_filtered(patterns.iter().cloned(), from, filter)
            .await?)
    }

    /// Takes a connection slot, refusing past `max_connections`.
    fn connect(self: &Arc<Self>, transport: Transport) -> Result<ConnectionGuard, ServiceError> {
        let max = self.config.max_connections;
        self.open_connections
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < max).then_some(n + 1)
            })
            .map_err(|open| {
                ServiceError::limit(format!(
                    "the server has {open} connections, its limit (max_connections = {max})"
                ))
            })?;
        self.metrics.connection(transport, 1);
        Ok(ConnectionGuard {
            service: self.clone(),
            transport,
        })
    }

    /// Joins a channel (canonical name), refusing past
    /// `max_subscribers_per_channel`.
    fn join_channel(self: &Arc<Self>, channel: &str) -> Result<ChannelGuard, ServiceError> {
        let mut ch = self.channels.lock();
        let n = ch.entry(channel.to_owned()).or_insert(0);
        if *n >= self.config.max_subscribers_per_channel {
            if *n == 0 {
                ch.remove(channel);
            }
            return Err(ServiceError::new(
                ErrorKind::Limit,
                CHANNEL_FULL,
                format!(
                    "channel {channel:?} is full ({} subscribers, the limit)",
                    self.config.max_subscribers_per_channel
                ),
            ));
        }
        *n += 1;
        let subscribers = *n;
        Ok(ChannelGuard {
            service: self.clone(),
            channel: channel.to_owned(),
            subscribers,
        })
    }

    /// Channels with subscribers, and how many: only channels `who` may
    /// subscribe to.
    pub fn channels(&self, who: &Principal) -> BTreeMap<String, usize> {
        self.channels
            .lock()
            .iter()
            .filter(|(name, _)| Pattern::parse(name).is_ok_and(|p| who.may_subscribe(&p)))
            .map(|(k, v)| (k.clone(), *v))
            .collect()
    }

    /// `GET /schemas`: every configured schema. Any authenticated caller
    /// may read them (like `/channels` and `/metrics`): a contract is what
    /// publishers and subscribers both rely on.
    pub fn schemas(&self, _who: &Principal) -> serde_json::Value {
        serde_json::json!({ "schemas": self.schemas.list() })
    }

    /// The log's last seq.
    pub fn last_seq(&self) -> u64 {
        self.bus.last_seq()
    }

    /// Whether publishes can succeed now.
    pub fn health(&self) -> Health {
        match self.bus.log().health() {
            LogHealth::Ok => Health::Ok,
            LogHealth::Degraded { reason, .. } => Health::Degraded { reason },
        }
    }

    /// The `/metrics` text: server-wide counters, and the lag of each
    /// consumer `who` may use (no other per-name series).
    pub async fn render_metrics(&self, who: &Principal) -> String {
        let lags = self.consumer_lags(who).await;
        self.metrics.render(&lags, self.filter_failures())
    }
}

/// The refusal of a read that starts below the retained range: events
/// after `after` up to `first - 1` were pruned.
fn gone(after: u64, first: u64) -> ServiceError {
    ServiceError::new(
        ErrorKind::Gone,
        "gone",
        format!(
            "seqs {}..={} are no longer in the log (retention pruned them); it starts at seq {first}: \
             page from after={}, or read the archived range with `tidings export --after {after}` (GET /export)",
            after + 1,
            first - 1,
            first - 1
        ),
    )
    .with("first_retained_seq", first)
}
