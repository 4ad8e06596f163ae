//! The backend conformance suite on the in-memory log (it has no storage
//! beyond one handle, so no store checks).

use std::sync::Arc;

use tidings_core::conformance::Opened;
use tidings_core::{EventLog, LogOptions, MemoryLog};

async fn make(options: LogOptions) -> Opened {
    MemoryLog::with_options(options)
        .map(|log| Arc::new(log) as Arc<dyn EventLog>)
        .map_err(|e| e.to_string())
}

tidings_core::conformance_tests!(make);
