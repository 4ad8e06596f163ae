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

/// Deletes a test stream when dropped (after the logs on it), on a thread
/// of its own with its own runtime, so it can run in `Drop` inside a test's
/// runtime; the drop waits for it, so nothing outlives the test.
pub struct DeleteStream {
    server: String,
    stream: String,
}

impl Drop for DeleteStream {
    fn drop(&mut self) {
        let (server, stream) = (self.server.clone(), self.stream.clone());
        let cleanup =
            std::thread::spawn(move || {
                match tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                {
                    Ok(rt) => rt.block_on(delete_stream(&server, &stream)),
                    Err(e) => eprintln!("cleanup of {stream} failed: {e}"),
                }
            });
        if cleanup.join().is_err() {
            eprintln!("cleanup of {} panicked", self.stream);
        }
    }
}

/// A guard deleting `stream` (and its cursor bucket) when dropped.
pub fn delete_on_drop(server: &str, stream: &str) -> DeleteStream {
    DeleteStream {
        server: server.to_owned(),
        stream: stream.to_owned(),
    }
}
