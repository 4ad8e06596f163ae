//! tidings-core's backend conformance suite, run against the Redis server
//! named by `TIDINGS_TEST_REDIS`, with a fresh log under a unique key per
//! check (its keys are deleted when the check's log is dropped).

mod common;

use std::sync::Arc;

use tidings_core::conformance::LogSpec;
use tidings_core::EventLog;
use tidings_redis::RedisOptions;

async fn make(spec: LogSpec) -> Arc<dyn EventLog> {
    let url = common::redis_url().expect("checked by the test");
    let options = RedisOptions {
        retention: spec.retention,
        idempotency_window: spec.idempotency_window,
        ..RedisOptions::default()
    };
    common::fresh(&url, "conformance", options).await
}

tidings_core::conformance_tests!(make, skip_unless_env = "TIDINGS_TEST_REDIS");
