//! The backend conformance suite on the in-memory log.

use std::sync::Arc;

use tidings_core::conformance::LogSpec;
use tidings_core::{EventLog, MemoryLog};

async fn make(spec: LogSpec) -> Arc<dyn EventLog> {
    Arc::new(MemoryLog::with_options(
        spec.retention,
        spec.idempotency_window,
    ))
}

tidings_core::conformance_tests!(make);
