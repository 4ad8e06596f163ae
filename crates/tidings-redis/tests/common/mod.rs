//! Helpers shared by the integration tests: the `TIDINGS_TEST_REDIS` gate,
//! fresh logs under unique keys, and cleanup of their keys.

#![allow(dead_code)]

use std::sync::Arc;

use tidings_core::conformance::Guarded;
use tidings_redis::{KeyLayout, RedisLog, RedisOptions};

/// The environment variable naming the Redis server tests run against.
pub const ENV: &str = "TIDINGS_TEST_REDIS";

/// The Redis URL to test against, or `None` (after saying so) when the
/// variable is unset, in which case the test returns early.
pub fn redis_url() -> Option<String> {
    match std::env::var(ENV) {
        Ok(url) if !url.is_empty() => Some(url),
        _ => {
            println!("skipped: {ENV} not set");
            None
        }
    }
}

/// A key no other test uses.
pub fn unique_key(what: &str) -> String {
    format!("tidings-test:{what}:{}", uuid::Uuid::now_v7().simple())
}

/// Deletes every key of the log `key` (synchronously, so it can run in
/// `Drop`). Errors are printed, not raised: cleanup must not mask a result.
pub fn delete_keys(url: &str, key: &str) {
    let layout = KeyLayout::new(key);
    let result = (|| -> redis::RedisResult<()> {
        let client = redis::Client::open(url)?;
        let mut con = client.get_connection()?;
        let idem: Vec<String> = redis::cmd("KEYS")
            .arg(format!("{}*", layout.idempotency_prefix))
            .query(&mut con)?;
        let mut del = redis::cmd("DEL");
        del.arg(&layout.stream)
            .arg(&layout.counter)
            .arg(&layout.first)
            .arg(&layout.cursors)
            .arg(&layout.consumers);
        for k in idem {
            del.arg(k);
        }
        del.query::<()>(&mut con)
    })();
    if let Err(e) = result {
        eprintln!("cleanup of {key} failed: {e}");
    }
}

/// Deletes a test log's keys when dropped (after the log itself).
pub struct DeleteKeys {
    url: String,
    stream: String,
}

impl Drop for DeleteKeys {
    fn drop(&mut self) {
        delete_keys(&self.url, &self.stream);
    }
}

/// A guard deleting the keys of log `key` when dropped.
pub fn delete_on_drop(url: &str, key: &str) -> DeleteKeys {
    DeleteKeys {
        url: url.to_owned(),
        stream: KeyLayout::new(key).stream,
    }
}

/// A log whose keys are deleted when it is dropped.
pub type TestLog = Guarded<RedisLog, DeleteKeys>;

/// Opens a test log under `key`.
pub async fn open_log(url: &str, key: &str, options: RedisOptions) -> TestLog {
    let log = RedisLog::open(url, key, options)
        .await
        .expect("open a Redis log");
    let guard = DeleteKeys {
        url: url.to_owned(),
        stream: log.keys().stream.clone(),
    };
    Guarded { log, guard }
}

/// A fresh log as an `Arc<dyn EventLog>`.
pub async fn fresh(url: &str, what: &str, options: RedisOptions) -> Arc<TestLog> {
    Arc::new(open_log(url, &unique_key(what), options).await)
}
