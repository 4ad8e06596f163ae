//! The conformance suite every [`EventLog`] backend runs (feature
//! `conformance`).
//!
//! A backend's integration test supplies a factory that opens a fresh, empty
//! log with the given [`LogOptions`] (or says why it refused them) and
//! expands [`conformance_tests!`](crate::conformance_tests):
//!
//! ```text
//! async fn make(options: LogOptions) -> Opened { /* open a new, empty log */ }
//! tidings_core::conformance_tests!(make);
//! ```
//!
//! A backend whose storage outlives a handle (SQLite, NATS, Redis) also
//! gives a `store` factory: each call makes a new, empty store and returns
//! an opener that opens a new handle on *that* store every time it is
//! called. The store checks ([`survives_reopen`],
//! [`instances_share_one_order`], ...) then run too
//! (`conformance_tests!(make, store = new_store)`). The memory log has
//! none: its storage is the log, which `close` ends. Every backend in this
//! workspace runs the suite through that one macro.
//!
//! Each check is also a public function, and
//! [`conformance_checks!`](crate::conformance_checks) and
//! [`conformance_store_checks!`](crate::conformance_store_checks) list them
//! once, for the macro (and for a backend outside the workspace that must
//! wrap each check itself). Every check starts from an empty log and asserts the contract
//! written at the top of [`crate::log`]. The checks live by theme:
//! `append`, `streams`, `retention`, `consumers`, `store`.
//!
//! Three checks are not in the macro: [`outage_fails_fast_and_loses_nothing`]
//! kills the engine under the log and starts it again, so an engine
//! backend runs it against an engine process of its own (an
//! [`EngineProcess`]); [`write_stats_count_each_outcome`] and
//! [`outage_shows_in_the_counters`] check the append counters only
//! group-committing backends keep.

use std::collections::HashSet;
use std::future::Future;
use std::sync::Arc;
use std::task::Poll;
use std::time::Duration;

use parking_lot::Mutex;

use futures_util::StreamExt;
use serde_json::json;

use crate::bus::{Bus, EventStream};
use crate::event::{NewEvent, SharedEvent};
use crate::log::{
    stream_from, AppendError, AppendFuture, Bounds, BoxFuture, CursorError, Delivery, EventLog,
    LogOptions, LogStream, Page, Position, PruneError, ReadError, Retention,
};

mod append;
mod consumers;
mod counters;
mod outage;
mod retention;
mod store;
mod streams;

pub use append::*;
pub use consumers::*;
pub use counters::*;
pub use outage::*;
pub use retention::*;
pub use store::*;
pub use streams::*;

/// What a factory returns: the log, or why it refused to open (the
/// message of the backend's own error).
pub type Opened = Result<Arc<dyn EventLog>, String>;

/// What a `store` factory returns: opens a new handle on one store each
/// time it is called (the store lives as long as the opener and its logs).
pub type BoxedOpener = Box<dyn Fn() -> BoxFuture<Arc<dyn EventLog>> + Send + Sync>;

/// Opens a log that must open.
async fn fresh<F, Fut>(make: &F, options: LogOptions) -> Arc<dyn EventLog>
where
    F: Fn(LogOptions) -> Fut,
    Fut: Future<Output = Opened>,
{
    match make(options).await {
        Ok(log) => log,
        Err(e) => panic!("the backend refused valid options {options:?}: {e}"),
    }
}

/// A log kept with a fixture that must outlive it and go after it (a
/// temporary directory, a guard deleting the engine's keys): what backend
/// tests hand the suite. Forwards every [`EventLog`] method, so no method
/// (like [`EventLog::shared`]) is lost by a hand-written wrapper. Fields drop
/// in order: the log first, then the guard.
pub struct Guarded<L, G> {
    /// The log under test.
    pub log: L,
    /// Kept alive until after the log is dropped.
    pub guard: G,
}

impl<L: EventLog, G: Send + Sync + 'static> EventLog for Guarded<L, G> {
    fn append(&self, batch: Vec<NewEvent>, expected_last: Option<u64>) -> AppendFuture {
        self.log.append(batch, expected_last)
    }
    fn append_one(
        &self,
        event: NewEvent,
        expected_last: Option<u64>,
    ) -> AppendFuture<crate::log::Committed> {
        self.log.append_one(event, expected_last)
    }
    fn read(&self, after: u64, limit: usize) -> BoxFuture<Result<Page, ReadError>> {
        self.log.read(after, limit)
    }
    fn bounds(&self) -> BoxFuture<Result<Bounds, ReadError>> {
        self.log.bounds()
    }
    fn seq_before(&self, time: chrono::DateTime<chrono::Utc>) -> BoxFuture<Result<u64, ReadError>> {
        self.log.seq_before(time)
    }
    fn watch(&self) -> tokio::sync::watch::Receiver<u64> {
        self.log.watch()
    }
    fn cursor(&self, consumer: &str) -> BoxFuture<Result<Option<u64>, CursorError>> {
        self.log.cursor(consumer)
    }
    fn commit_cursor(&self, consumer: &str, seq: u64) -> BoxFuture<Result<(), CursorError>> {
        self.log.commit_cursor(consumer, seq)
    }
    fn define_consumer(&self, name: &str, spec: &str) -> BoxFuture<Result<String, CursorError>> {
        self.log.define_consumer(name, spec)
    }
    fn consumers(&self) -> BoxFuture<Result<Vec<crate::log::ConsumerRecord>, CursorError>> {
        self.log.consumers()
    }
    fn delete_consumer(&self, name: &str) -> BoxFuture<Result<bool, CursorError>> {
        self.log.delete_consumer(name)
    }
    fn prune(&self) -> BoxFuture<Result<u64, PruneError>> {
        self.log.prune()
    }
    fn close(&self) -> BoxFuture<Result<(), crate::log::CloseError>> {
        self.log.close()
    }
    fn shared(&self) -> bool {
        self.log.shared()
    }
}

fn ev(name: &str, i: u64) -> NewEvent {
    NewEvent::new(name, json!({ "i": i })).expect("valid name")
}

async fn append_n(log: &dyn EventLog, n: u64) {
    for i in 0..n {
        log.append(vec![ev("conf.item", i)], None)
            .await
            .expect("append");
    }
}

async fn next_delivery(s: &mut LogStream) -> Delivery {
    tokio::time::timeout(Duration::from_secs(10), s.next())
        .await
        .expect("stream delivered nothing within 10 s")
        .expect("stream ended")
        .expect("read failed")
}

async fn next_seq(s: &mut LogStream) -> u64 {
    match next_delivery(s).await {
        Delivery::Event(e) => e.seq,
        other => panic!("expected an event, got {other:?}"),
    }
}

/// Calls `$callback!([args] check, check, ...)` with the given arguments
/// and the name of every check, for backends that wrap each check
/// themselves (setup, cleanup); the list of checks then lives only here.
#[macro_export]
macro_rules! conformance_checks {
    ($callback:path $(, $arg:expr)* $(,)?) => {
        $callback!(
            [$($arg),*]
            dense_seqs_and_roundtrip,
            append_one_is_a_batch_of_one,
            reads_page,
            reads_inside_batches,
            seq_before_finds_times,
            refusals_append_nothing,
            idempotency_keys,
            idempotency_window_expires,
            watch_rises_with_appends,
            stream_catches_up_then_live,
            stream_positions,
            cursors,
            consumer_definitions,
            retention_by_count,
            retention_by_count_inside_a_batch,
            retention_ignores_cursors_but_reports_lag,
            retention_by_age,
            retention_by_age_uses_commit_time,
            concurrent_appends_are_dense,
            concurrent_keys_and_expectations,
            commit_before_notify,
            stream_overflow_catch_up_to_live,
            closed_log_refuses_everything,
            zero_options_are_refused
        );
    };
}

/// Like [`conformance_checks!`](crate::conformance_checks), for the checks
/// that take a `store` factory (backends whose storage outlives a handle).
#[macro_export]
macro_rules! conformance_store_checks {
    ($callback:path $(, $arg:expr)* $(,)?) => {
        $callback!(
            [$($arg),*]
            survives_reopen,
            instances_share_one_order,
            instances_share_keys_expectations_and_consumers
        );
    };
}

#[doc(hidden)]
#[macro_export]
macro_rules! __conformance_each {
    ([$make:expr, $var:expr] $($check:ident),*) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $check() {
                let var: &str = $var;
                if !var.is_empty() && std::env::var(var).is_err() {
                    eprintln!("skipped: {var} not set");
                    return;
                }
                $crate::conformance::$check($make).await;
            }
        )*
    };
}

#[doc(hidden)]
#[macro_export]
macro_rules! __conformance_store_each {
    ([$store:expr, $var:expr] $($check:ident),*) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $check() {
                let var: &str = $var;
                if !var.is_empty() && std::env::var(var).is_err() {
                    eprintln!("skipped: {var} not set");
                    return;
                }
                $crate::conformance::$check(($store)()).await;
            }
        )*
    };
}

/// Expands to one `#[tokio::test]` per check, each calling `$make`; with
/// `store = $new_store`, the store checks too, each on `$new_store()`.
///
/// With `skip_unless_env = "VAR"`, each test returns early (printing
/// `skipped: VAR not set`) when the variable is unset: for backends that
/// need an external engine, which CI switches on.
#[macro_export]
macro_rules! conformance_tests {
    ($make:expr) => {
        $crate::conformance_checks!($crate::__conformance_each, $make, "");
    };
    ($make:expr, store = $store:expr) => {
        $crate::conformance_checks!($crate::__conformance_each, $make, "");
        $crate::conformance_store_checks!($crate::__conformance_store_each, $store, "");
    };
    ($make:expr, store = $store:expr, skip_unless_env = $var:literal) => {
        $crate::conformance_checks!($crate::__conformance_each, $make, $var);
        $crate::conformance_store_checks!($crate::__conformance_store_each, $store, $var);
    };
}
