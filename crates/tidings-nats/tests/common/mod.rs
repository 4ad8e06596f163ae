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

/// A stream the tests never delete. nats-server 2.9 removes an account's
/// stream directory when its last stream is deleted, and a stream created
/// at that moment by a test running in parallel fails ("could not create
/// storage directory", error 10077). With this stream always there, the
/// directory never goes.
pub const KEEPER: &str = "tidings_test_keeper";

/// Creates [`KEEPER`] once per process (it then stays on the server).
async fn ensure_keeper(server: &str) {
    static DONE: tokio::sync::OnceCell<()> = tokio::sync::OnceCell::const_new();
    DONE.get_or_init(|| async {
        if let Err(e) = NatsLog::open(server, KEEPER, NatsOptions::default()).await {
            eprintln!("could not create the keeper stream: {e}");
        }
    })
    .await;
}

/// Deletes a stream and its cursor bucket, ignoring errors (after making
/// sure [`KEEPER`] exists, so the account never runs out of streams).
pub async fn delete_stream(server: &str, stream: &str) {
    ensure_keeper(server).await;
    if let Ok(log) = NatsLog::open(server, stream, NatsOptions::default()).await {
        let _ = log.destroy().await;
    }
}
