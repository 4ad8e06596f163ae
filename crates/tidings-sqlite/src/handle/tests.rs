//! Unit tests of the log through its handle, by topic, and the helpers
//! they share.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::json;
use tidings_core::log::{AppendError, CursorError, LogHealth, LogOptions, ReadError, Retention};
use tidings_core::{EventLog, NewEvent};

use super::*;

mod lifecycle;
mod persistence;
mod reads;
mod writer;

fn ev(i: u64) -> NewEvent {
    NewEvent::new("unit.test", json!({ "i": i })).expect("valid name")
}

fn path_in(dir: &tempfile::TempDir) -> PathBuf {
    dir.path().join("unit.db")
}

fn open(path: &Path, options: SqliteOptions) -> SqliteLog {
    SqliteLog::open(path, options).expect("open")
}

/// Default options without background pruning, so counters only move
/// because of what the test does.
fn quiet() -> SqliteOptions {
    SqliteOptions::default().log(LogOptions::default().with_prune_interval(None))
}

async fn append_n(log: &SqliteLog, n: u64) {
    let mut i = 0;
    while i < n {
        let batch: Vec<NewEvent> = (i..(i + 100).min(n)).map(ev).collect();
        i += batch.len() as u64;
        log.append(batch, None).await.unwrap();
    }
}

/// Waits until no read-ahead is in progress (signalled by the readers).
async fn settle(log: &SqliteLog) {
    let ahead = log.inner.read_ahead.clone();
    tokio::task::spawn_blocking(move || ahead.wait_idle())
        .await
        .unwrap();
}
