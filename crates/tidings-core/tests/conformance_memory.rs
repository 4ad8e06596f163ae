//! The backend conformance suite on the in-memory log. Its store is the
//! log itself: a "reopened" instance is a clone of the same `MemoryLog`
//! (clones share the log), which is what a process holding a memory log
//! can reopen. It is not shared with other processes, so the checks of
//! several appending instances pass without running, as they say.

use std::sync::Arc;

use tidings_core::conformance::{BoxedOpener, Opened};
use tidings_core::{EventLog, LogOptions, MemoryLog};

async fn make(options: LogOptions) -> Opened {
    MemoryLog::with_options(options)
        .map(|log| Arc::new(log) as Arc<dyn EventLog>)
        .map_err(|e| e.to_string())
}

/// One new memory log, and an opener of handles on it.
fn new_store() -> BoxedOpener {
    let log = MemoryLog::with_options(LogOptions::default()).expect("default options are valid");
    Box::new(move || {
        let log = log.clone();
        Box::pin(async move { Arc::new(log) as Arc<dyn EventLog> })
    })
}

tidings_core::conformance_tests!(make, store = new_store);
