//! tidings-core's backend conformance suite, run against a fresh SQLite file
//! per check (and, for the store checks, one file opened again).

use std::sync::Arc;

use tidings_core::conformance::{BoxedOpener, Guarded, Opened};
use tidings_core::{EventLog, LogOptions};
use tidings_sqlite::{SqliteLog, SqliteOptions};

/// Opens a new log in its own temporary directory.
async fn make(log: LogOptions) -> Opened {
    let dir = tempfile::tempdir().expect("temp dir");
    let options = SqliteOptions {
        log,
        ..SqliteOptions::default()
    };
    let log =
        SqliteLog::open(dir.path().join("conformance.db"), options).map_err(|e| e.to_string())?;
    Ok(Arc::new(Guarded { log, guard: dir }))
}

/// A new temporary directory, and an opener of the one file in it.
fn new_store() -> BoxedOpener {
    let dir = Arc::new(tempfile::tempdir().expect("temp dir"));
    Box::new(move || {
        let dir = dir.clone();
        Box::pin(async move {
            let log = SqliteLog::open(dir.path().join("store.db"), SqliteOptions::default())
                .expect("open the same file");
            Arc::new(Guarded { log, guard: dir }) as Arc<dyn EventLog>
        })
    })
}

tidings_core::conformance_tests!(make, store = new_store);
