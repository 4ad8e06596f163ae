//! The backend conformance suite on the in-memory log.
//!
//! Only the checks of one log: a memory log's storage is the log itself,
//! so `close` ends it and nothing outlives a handle, and no other process
//! can share it. The store checks (surviving a close and reopen, several
//! instances over one store) are for backends whose storage outlives a
//! handle: SQLite, NATS and Redis run them.

use std::sync::Arc;

use tidings_core::conformance::Opened;
use tidings_core::{EventLog, LogOptions, MemoryLog};

async fn make(options: LogOptions) -> Opened {
    MemoryLog::with_options(options)
        .map(|log| Arc::new(log) as Arc<dyn EventLog>)
        .map_err(|e| e.to_string())
}

tidings_core::conformance_tests!(make);
