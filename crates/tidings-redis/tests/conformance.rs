//! tidings-core's backend conformance suite, run against the Redis server
//! named by `TIDINGS_TEST_REDIS`, with a fresh log under a unique key per
//! check (its keys are deleted when the check's log is dropped).

mod common;

use std::sync::Arc;

use tidings_core::conformance::LogSpec;
use tidings_core::EventLog;
use tidings_redis::{RedisLog, RedisOptions};

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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn survives_reopen() {
    let Some(url) = common::redis_url() else {
        return;
    };
    let key = common::unique_key("reopen");
    let _cleanup = common::delete_on_drop(&url, &key);
    tidings_core::conformance::survives_reopen(|| {
        let (url, key) = (url.clone(), key.clone());
        async move {
            let log = RedisLog::open(&url, &key, RedisOptions::default())
                .await
                .expect("open the same key");
            Arc::new(log) as Arc<dyn EventLog>
        }
    })
    .await;
}
