//! tidings-core's backend conformance suite, run against a fresh SQLite file
//! per check.

use std::sync::Arc;

use tidings_core::conformance::{Guarded, LogSpec};
use tidings_core::EventLog;
use tidings_sqlite::{SqliteLog, SqliteOptions};

/// Opens a new log in its own temporary directory, configured from `spec`.
async fn make(spec: LogSpec) -> Arc<dyn EventLog> {
    let dir = tempfile::tempdir().expect("temp dir");
    let options = SqliteOptions {
        retention: spec.retention,
        idempotency_window: spec.idempotency_window,
        ..SqliteOptions::default()
    };
    let log =
        SqliteLog::open(dir.path().join("conformance.db"), options).expect("open a fresh log");
    Arc::new(Guarded { log, guard: dir })
}

tidings_core::conformance_tests!(make);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn survives_reopen() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("reopen.db");
    tidings_core::conformance::survives_reopen(|| {
        let path = path.clone();
        async move {
            let log = SqliteLog::open(path, SqliteOptions::default()).expect("open the same file");
            Arc::new(log) as Arc<dyn EventLog>
        }
    })
    .await;
}
