//! [`BusBuilder`]: the settings of a [`Bus`] and its construction.
//!
//! # Contract
//!
//! * Every setting has a default (the `DEFAULT_*` constants); `build`
//!   refuses a zero capacity or limit with [`ConfigError::Zero`] instead of
//!   building a bus that cannot work.
//! * A bus over a shared log dispatches the events other processes append
//!   (unless told otherwise) from its external-appends task
//!   (`external.rs`), which needs a tokio
//!   runtime: given with [`BusBuilder::runtime`] or current at `build`,
//!   else [`ConfigError::NoRuntime`]. The task holds the bus
//!   weakly and ends when the bus is dropped.
//! * Data contracts ([`BusBuilder::schema`]) are kept in registration
//!   order; an invalid pattern is reported by `build` as
//!   [`ConfigError::Pattern`].
//! * The new bus dispatches from the log's next seq: events already in the
//!   log are not dispatched (a stream from an earlier position reads them
//!   from the log).

use std::collections::VecDeque;
use std::sync::Arc;

use parking_lot::Mutex;

use super::dispatcher::Dispatcher;
use super::external::dispatch_external;
use super::registry::Registry;
use super::stats::Counters;
use super::{Bus, ConfigError, Inner};
use crate::contract::{Contracts, DataContract, SharedContract};
use crate::log::{EventLog, MemoryLog};
use crate::name::{IntoPattern, PatternError};

/// Default history ring size.
pub const DEFAULT_HISTORY: usize = 10_000;
/// Default queue size of a stream or async handler before it falls back to
/// reading the log.
pub const DEFAULT_STREAM_CAPACITY: usize = 1024;
/// Default limit of nested emits.
pub const DEFAULT_MAX_DEPTH: u32 = 32;
/// Default number of names whose matches are cached.
pub const DEFAULT_CACHE_CAPACITY: usize = 4096;

/// Settings for a [`Bus`]; every limit has a default.
#[must_use]
pub struct BusBuilder {
    /// `None`: a new [`MemoryLog`] at `build`.
    log: Option<Arc<dyn EventLog>>,
    /// `None`: no history ring. `Some(0)` is refused by `build`.
    history: Option<usize>,
    stream_capacity: usize,
    max_depth: u32,
    cache_capacity: usize,
    runtime: Option<tokio::runtime::Handle>,
    /// Whether to dispatch events other processes append; `None`: when
    /// the log says it is shared.
    external_appends: Option<bool>,
    contracts: Contracts,
    /// The first invalid contract pattern, reported by `build`.
    bad_pattern: Option<PatternError>,
}

impl Default for BusBuilder {
    fn default() -> Self {
        BusBuilder {
            log: None,
            history: Some(DEFAULT_HISTORY),
            stream_capacity: DEFAULT_STREAM_CAPACITY,
            max_depth: DEFAULT_MAX_DEPTH,
            cache_capacity: DEFAULT_CACHE_CAPACITY,
            runtime: None,
            external_appends: None,
            contracts: Contracts::default(),
            bad_pattern: None,
        }
    }
}

impl BusBuilder {
    /// The log to commit to (default: a new [`MemoryLog`]).
    pub fn log(mut self, log: impl EventLog) -> Self {
        self.log = Some(Arc::new(log));
        self
    }

    /// The log to commit to, already behind an `Arc` (the caller keeps a
    /// handle to it; this says nothing about other processes appending).
    pub fn log_arc(mut self, log: Arc<dyn EventLog>) -> Self {
        self.log = Some(log);
        self
    }

    /// Size of the in-memory history ring (default 10,000; must be ≥ 1).
    pub fn history_capacity(mut self, n: usize) -> Self {
        self.history = Some(n);
        self
    }

    /// Keeps no in-memory history ([`Bus::history`] returns nothing; the
    /// log still has every event).
    pub fn without_history(mut self) -> Self {
        self.history = None;
        self
    }

    /// Queue size per stream or async handler (default 1024; must be ≥ 1).
    pub fn stream_capacity(mut self, n: usize) -> Self {
        self.stream_capacity = n;
        self
    }

    /// Deepest allowed chain of handler-emitted events (default 32; ≥ 1).
    pub fn max_depth(mut self, n: u32) -> Self {
        self.max_depth = n;
        self
    }

    pub fn dispatch_external_appends(mut self, dispatch: bool) -> Self {
        self.external_appends = Some(dispatch);
        self
    }

    /// Names whose matched subscriptions are cached (default 4096; ≥ 1).
    pub fn cache_capacity(mut self, n: usize) -> Self {
        self.cache_capacity = n;
        self
    }

    /// The runtime async handlers run on (default: the current one at the
    /// time the handler is registered).
    pub fn runtime(mut self, handle: tokio::runtime::Handle) -> Self {
        self.runtime = Some(handle);
        self
    }

    /// A contract every emitted event whose name matches `pattern` must
    /// keep (see [`crate::contract`]): an event that breaks it is refused
    /// with [`EmitError::Contract`](crate::EmitError::Contract) before
    /// anything is appended. Several contracts may match one name; all
    /// apply. JSON Schema contracts are in the `tidings-schema` crate:
    ///
    /// ```
    /// use serde_json::{json, Value};
    /// use tidings_core::{Bus, EmitError, Violation};
    ///
    /// let bus = Bus::builder()
    ///     .schema("orders.>", |d: &Value| match d["qty"].as_u64() {
    ///         Some(n) if n > 0 => Ok(()),
    ///         _ => Err(Violation::new("/qty", "must be a positive integer")),
    ///     })
    ///     .build()
    ///     .unwrap();
    /// let err = bus.emit("orders.placed", json!({"qty": 0})).unwrap_err();
    /// assert!(matches!(err, EmitError::Contract(r) if r.violation.path == "/qty"));
    /// assert_eq!(bus.last_seq(), 0);
    /// ```
    pub fn schema(self, pattern: impl IntoPattern, contract: impl DataContract) -> Self {
        self.schema_arc(pattern, std::sync::Arc::new(contract))
    }

    /// [`BusBuilder::schema`] with a contract already behind an `Arc` (the
    /// caller keeps a handle to it).
    pub fn schema_arc(mut self, pattern: impl IntoPattern, contract: SharedContract) -> Self {
        match pattern.into_pattern() {
            Ok(p) => self.contracts.push(p, contract),
            Err(e) => {
                self.bad_pattern.get_or_insert(e);
            }
        }
        self
    }

    /// Builds the bus; refuses zero capacities and invalid contract
    /// patterns.
    pub fn build(self) -> Result<Bus, ConfigError> {
        if let Some(e) = self.bad_pattern {
            return Err(ConfigError::Pattern(e));
        }
        let zero = |setting, hint| Err(ConfigError::Zero { setting, hint });
        if self.history == Some(0) {
            return zero("history_capacity", " (use without_history() to keep none)");
        }
        if self.stream_capacity == 0 {
            return zero("stream_capacity", "");
        }
        if self.max_depth == 0 {
            return zero("max_depth", "");
        }
        if self.cache_capacity == 0 {
            return zero("cache_capacity", "");
        }
        let log = self.log.unwrap_or_else(|| Arc::new(MemoryLog::new()));
        let external = self.external_appends.unwrap_or_else(|| log.shared());
        let external_runtime = if external {
            let rt = self
                .runtime
                .clone()
                .or_else(|| tokio::runtime::Handle::try_current().ok());
            Some(rt.ok_or(ConfigError::NoRuntime)?)
        } else {
            None
        };
        let last = *log.watch().borrow();
        let bus = Bus {
            inner: Arc::new(Inner {
                registry: Registry::new(self.cache_capacity, last),
                dispatcher: Dispatcher::new(last + 1),
                history: self
                    .history
                    .map(|n| Mutex::new(VecDeque::with_capacity(n.min(1024)))),
                history_cap: self.history.unwrap_or(0),
                stats: Counters::default(),
                max_depth: self.max_depth,
                stream_capacity: self.stream_capacity,
                runtime: self.runtime,
                contracts: self.contracts,
                log,
            }),
        };
        if let Some(rt) = external_runtime {
            rt.spawn(dispatch_external(
                Arc::downgrade(&bus.inner),
                bus.inner.log.watch(),
            ));
        }
        Ok(bus)
    }
}
