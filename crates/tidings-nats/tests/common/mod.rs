//! Shared helpers: the engine address gate and unique streams.
#![allow(dead_code)]

use tidings_nats::{NatsLog, NatsOptions};

/// The engine address from `TIDINGS_TEST_NATS`, or `None` after printing
/// the skip notice.
pub fn nats_url() -> Option<String> {
    match std::env::var("TIDINGS_TEST_NATS") {
        Ok(v) if !v.trim().is_empty() => Some(v.trim().to_owned()),
        _ => {
            println!("skipped: TIDINGS_TEST_NATS not set");
            None
        }
    }
}

/// A fresh, unique stream name.
pub fn unique_stream(prefix: &str) -> String {
    format!("{prefix}_{}", uuid::Uuid::now_v7().simple())
}

/// Deletes a stream and its cursor bucket, ignoring errors.
pub async fn delete_stream(server: &str, stream: &str) {
    if let Ok(log) = NatsLog::open(server, stream, NatsOptions::default()).await {
        let _ = log.destroy().await;
    }
}
