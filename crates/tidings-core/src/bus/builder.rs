//! [`BusBuilder`]: the settings of a [`Bus`] and its construction.
//!
//! # Contract
//!
//! * Every setting has a default (the `DEFAULT_*` constants); `build`
//!   refuses a zero capacity or limit with [`ConfigError::Zero`] instead of
//!   building a bus that cannot work.
//! * A bus over a shared log follows it (unless told otherwise), which
//!   needs a tokio runtime: given with [`BusBuilder::runtime`] or current at
//!   `build`, else [`ConfigError::NoRuntime`]. The follower task holds the
//!   bus weakly and ends when the bus is dropped.
//! * The new bus dispatches from the log's next seq: events already in the
//!   log are not dispatched (a stream from an earlier position reads them
//!   from the log).

use std::collections::VecDeque;
use std::sync::Arc;

use parking_lot::Mutex;

use super::dispatcher::Dispatcher;
use super::follow::follow_log;
use super::registry::Registry;
use super::stats::Counters;
use super::{Bus, ConfigError, Inner};
use crate::log::{EventLog, MemoryLog};

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
    /// `None`: follow when the log says it is shared.
    follow: Option<bool>,
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
            follow: None,
        }
    }
}

impl BusBuilder {
    /// The log to commit to (default: a new [`MemoryLog`]).
    pub fn log(mut self, log: impl EventLog) -> Self {
        self.log = Some(Arc::new(log));
        self
    }

    /// The log to commit to, already shared.
    pub fn shared_log(mut self, log: Arc<dyn EventLog>) -> Self {
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

    /// Whether the bus follows its log to dispatch events appended by other
    /// processes (default: when [`EventLog::shared`] says the log is shared).
    /// Following needs a tokio runtime (given, or current at `build`).
    pub fn follow_log(mut self, follow: bool) -> Self {
        self.follow = Some(follow);
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

    /// Builds the bus; refuses zero capacities.
    pub fn build(self) -> Result<Bus, ConfigError> {
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
        let follow = self.follow.unwrap_or_else(|| log.shared());
        let follower_runtime = if follow {
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
                log,
            }),
        };
        if let Some(rt) = follower_runtime {
            rt.spawn(follow_log(
                Arc::downgrade(&bus.inner),
                bus.inner.log.watch(),
            ));
        }
        Ok(bus)
    }
}
